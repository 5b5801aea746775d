"""Colorings: color counts against their bounds, and exact recovery of J from the products."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from bpjax import modes
from bpjax.modes import examples

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
        # The 5-point stencil's optimum is 5 colors; greedy orders find 7.
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
