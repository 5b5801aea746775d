"""Colorings: color counts against their bounds, and exact recovery of J from the products."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from bpjax import modes
from bpjax.modes import _coloring, examples

COLORINGS = {"columns": modes.color_columns, "rows": modes.color_rows, "bicoloring": modes.bicolor}


def _recover(pattern: sp.csr_array, coloring, rng) -> bool:
    """Compress a random J with ``pattern`` by the coloring's seeds and read it back."""
    m, n = pattern.shape
    J = pattern.toarray() * rng.normal(size=(m, n))
    S_f = (np.arange(coloring.jvps)[:, None] == coloring.column_colors[None, :]).astype(float)
    S_r = (np.arange(coloring.vjps)[:, None] == coloring.row_colors[None, :]).astype(float)
    flat = np.concatenate([(J @ S_f.T).T.ravel(), (S_r @ J).ravel()])
    rows = np.repeat(np.arange(m), np.diff(pattern.indptr))
    return np.allclose(flat[coloring.source], J[rows, pattern.indices], rtol=0, atol=1e-12)


def test_tridiagonal_needs_three_columns_or_three_rows():
    _, _, pattern = examples.family("tridiagonal", 1000)
    for kind in ("columns", "rows"):
        c = COLORINGS[kind](pattern)
        assert c.products == 3 and c.lower_bound == 3


def test_arrowhead_bicoloring_needs_three_products_where_one_sided_colorings_need_n():
    n = 500
    _, _, pattern = examples.family("arrowhead", n)
    assert modes.color_columns(pattern).products == n
    assert modes.color_rows(pattern).products == n
    bi = modes.bicolor(pattern)
    assert bi.products <= 4 and bi.jvps >= 1 and bi.vjps >= 1
    assert bi.lower_bound == 3 and bi.products >= bi.lower_bound
    assert _recover(pattern, bi, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["block_diagonal", "stencil", "elementwise"])
def test_structured_families_are_colored_near_their_bounds(name):
    _, _, pattern = examples.family(name, 256)
    for kind, color in COLORINGS.items():
        c = color(pattern)
        # The 5-point stencil's optimum is 5 colors; greedy orders find 7, j mod 6 works.
        assert c.lower_bound <= c.products <= c.lower_bound + 2, (kind, c.products)
        assert _recover(pattern, c, np.random.default_rng(1))


def test_every_coloring_recovers_random_patterns_exactly():
    rng = np.random.default_rng(2)
    for trial in range(40):
        m, n = rng.integers(1, 30, size=2)
        density = rng.uniform(0.02, 0.6)
        pattern = sp.csr_array(sp.random_array((m, n), density=density, rng=rng).astype(bool))
        pattern.sort_indices()
        for kind, color in COLORINGS.items():
            c = color(pattern)
            assert c.products >= c.lower_bound, (trial, kind)
            assert _recover(pattern, c, rng), (trial, kind)


def test_bicoloring_lower_bound_is_the_least_feasible_split():
    rng = np.random.default_rng(3)
    for _ in range(20):
        pattern = sp.csr_array(sp.random_array((12, 15), density=0.3, rng=rng).astype(bool))
        r = np.diff(pattern.indptr)
        c = np.bincount(pattern.indices, minlength=15)
        feasible = [
            p + q
            for p, q in itertools.product(range(r.max() + 1), range(c.max() + 1))
            if np.maximum(0, r - p).sum() <= np.minimum(c, q).sum()
        ]
        assert modes.bicoloring_lower_bound(r, c) == min(feasible)


@pytest.mark.parametrize("width", [1, 3, 5, 8])
def test_banded_patterns_get_the_cyclic_coloring_at_the_bound(width):
    # A band of `width` diagonals: j mod width separates the columns of every row.
    n, half = 300, width // 2
    offsets = range(-half, width - half)
    band = sp.diags_array([np.ones(n - abs(k)) for k in offsets], offsets=list(offsets))
    pattern = sp.csr_array(band.astype(bool))
    for kind in ("columns", "rows"):
        c = COLORINGS[kind](pattern)
        assert c.products == c.lower_bound == width
        assert _recover(pattern, c, np.random.default_rng(width))


@pytest.mark.parametrize("N", [256, 1024, 4096])
def test_stencil_gets_the_lattice_coloring_at_the_bound(N):
    _, _, pattern = examples.family("stencil", N)  # an s x s grid, s = sqrt(N)
    for kind in ("columns", "rows"):
        c = COLORINGS[kind](pattern)
        # greedy orders alone: 7; cyclic j mod k: 6; the lattice (c + 2r) mod 5: the bound
        assert (c.products, c.lower_bound) == (5, 5)
        assert _recover(pattern, c, np.random.default_rng(4))


def test_on_the_stencil_cyclic_and_greedy_colorings_stop_above_the_bound():
    # What the lattice coloring improves on (the findings page quotes these counts).
    _, _, pattern = examples.family("stencil", 4096)
    csr = _coloring.as_csr(pattern)
    rows, cols = _coloring.coordinates(csr)
    assert _coloring._cyclic_colors(rows, cols, 4096, 4096, 5).max() + 1 == 6
    csc = sp.csc_array(csr)
    csc.sort_indices()
    assert _coloring._greedy_distance2(csc, np.arange(4096)).max() + 1 == 7


@pytest.mark.parametrize("shape", [(20, 37), (37, 20), (9, 9)])
def test_nine_and_five_point_stencils_on_rectangular_grids_reach_the_bound(shape):
    a, b = shape
    line = [
        sp.diags_array([np.ones(s - 1), np.ones(s), np.ones(s - 1)], offsets=[-1, 0, 1])
        for s in (a, b)
    ]
    five = sp.kron(line[0], sp.eye_array(b)) + sp.kron(sp.eye_array(a), line[1])
    nine = sp.kron(line[0], line[1])
    for pattern, bound in ((five, 5), (nine, 9)):
        pattern = sp.csr_array(pattern.astype(bool))
        c = modes.color_columns(pattern)
        assert (c.products, c.lower_bound) == (bound, bound)
        assert _recover(pattern, c, np.random.default_rng(a))


def test_cyclic_coloring_is_rejected_where_two_columns_of_a_row_collide():
    # Row 0 holds columns 0 and 2: j mod 2 gives both color 0, so the bound (2 per row) is
    # not reached cyclically; the columns conflict pairwise (a triangle): 3 colors.
    pattern = sp.csr_array(np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], bool))
    c = modes.color_columns(pattern)
    assert (c.products, c.lower_bound) == (3, 2)
    assert len(set(c.column_colors.tolist())) == 3
    assert _recover(pattern, c, np.random.default_rng(5))


def test_row_coloring_of_a_symmetric_pattern_reuses_the_column_coloring():
    _, _, pattern = examples.family("stencil", 256)
    columns = modes.color_columns(pattern)
    rows = modes.color_rows(pattern, columns=columns)
    assert np.array_equal(rows.row_colors, columns.column_colors)
    assert _recover(pattern, rows, np.random.default_rng(6))
    # Not symmetric: the given column coloring is not used for the rows.
    skew = sp.csr_array(np.triu(np.ones((6, 6), bool)))
    rows = modes.color_rows(skew, columns=modes.color_columns(skew))
    assert rows.products == 6 and _recover(skew, rows, np.random.default_rng(7))


def test_a_jacobian_fns_pattern_is_colored_and_the_function_itself_is_refused():
    """color_columns(jac.pattern) read the Pattern object as a 0-d array ("expected an (m, n)
    array, got shape ()")."""
    jac = modes.jacobian_fn(lambda x: jnp.sin(x) * jnp.roll(x, 1), jnp.ones(6), mode="sparse")
    assert modes.color_columns(jac.pattern).jvps == 2  # a cyclic bidiagonal, n even
    assert modes.color_rows(jac.pattern).vjps == 2
    with pytest.raises(TypeError, match="got a JacobianFn; pass its .pattern"):
        modes.color_columns(jac)
    with pytest.raises(ValueError, match="got str"):
        modes.color_columns("tridiagonal")


def test_a_row_coloring_refuses_a_column_coloring_of_another_pattern():
    """color_rows reused `columns` whenever the pattern was symmetric: a tridiagonal pattern
    with the (1-color) coloring of a diagonal one reported 1 product instead of 3."""
    tri = sp.diags_array([1, 1, 1], offsets=[-1, 0, 1], shape=(8, 8), dtype=np.int8) != 0
    assert modes.color_rows(tri, columns=modes.color_columns(tri)).vjps == 3
    with pytest.raises(ValueError, match="two columns that share a row have the same color"):
        modes.color_rows(tri, columns=modes.color_columns(np.eye(8, dtype=bool)))
    with pytest.raises(ValueError, match=r"columns must be color_columns of this \(8, 8\)"):
        modes.color_rows(tri, columns=modes.color_columns(np.eye(6, dtype=bool)))
