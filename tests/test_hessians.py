"""Sparse Hessians: pattern, symmetric colorings, and every mode against ``jax.hessian``."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import dense_pattern
from hypothesis import given
from hypothesis import strategies as st

from bpjax import measure, modes
from bpjax.modes import hessian_examples as hx

SIZES = {"banded": 40, "stencil": 49, "arrowhead": 32, "block_diagonal": 48, "mlp": 27}


@functools.cache
def _family(name):
    """``(f, x, pattern, jax.hessian(f)(x))``, computed once per family for all the tests."""
    f, x, pattern = hx.family(name, SIZES[name])
    return f, x, pattern, jax.jit(jax.hessian(f))(x)


def _matrix(H, x):
    """``jax.hessian``'s pytree layout as one ``(n, n)`` array (leaves in ravel order)."""
    leaves, tree = jax.tree.flatten(x)
    sizes = [np.size(a) for a in leaves]
    blocks = jax.tree.leaves(H) if tree.num_leaves > 1 else [H]
    rows = [
        np.concatenate(
            [
                np.reshape(blocks[i * len(sizes) + j], (sizes[i], sizes[j]))
                for j in range(len(sizes))
            ],
            axis=1,
        )
        for i in range(len(sizes))
    ]
    return np.concatenate(rows, axis=0)


def _max_error(a, b):
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("name", hx.FAMILIES)
def test_hessian_sparsity_is_the_true_pattern_of_each_family(name):
    f, x, pattern, H = _family(name)
    got = dense_pattern(modes.hessian_sparsity(f, x))
    np.testing.assert_array_equal(got, pattern.toarray())
    np.testing.assert_array_equal(_matrix(H, x) != 0, pattern.toarray())  # all attained


@pytest.mark.parametrize("name", hx.FAMILIES)
@pytest.mark.parametrize(
    ("coloring", "order"),
    [("star", "fwd-over-rev"), ("acyclic", "rev-over-rev")],
)
def test_sparse_hessian_equals_jax_hessian_on_every_family(name, coloring, order):
    f, x, _, want = _family(name)
    got = modes.hessian(f, x, mode="sparse", coloring=coloring, order=order)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert _max_error(got, want) <= 1e-10


def test_rev_over_fwd_order_on_a_pytree_family():
    f, w, _, want = _family("mlp")
    got = modes.hessian(f, w, mode="sparse", order="rev-over-fwd")
    assert _max_error(got, want) <= 1e-10


@pytest.mark.parametrize(("name", "coloring"), [("stencil", "star"), ("banded", "acyclic")])
def test_bcoo_output_holds_exactly_the_pattern(name, coloring):
    f, x, pattern, want = _family(name)
    H = modes.hessian_fn(f, x, mode="sparse", coloring=coloring, sparse_output=True)(x)
    assert H.nse == pattern.nnz
    assert float(jnp.max(jnp.abs(H.todense() - want))) <= 1e-10


def test_hessian_fn_auto_decides_once_and_explains():
    f, x, _ = hx.family("banded", 60)
    hess = modes.hessian_fn(f, x, order="fwd-over-rev")  # times star and acyclic
    assert hess.method in ("star", "acyclic") and hess.order in modes.HVP_ORDERS
    assert "HVPs" in hess.reason and "measured" in hess.reason
    y = x + 0.3
    want = jax.jit(jax.hessian(f))(y)
    assert _max_error(hess(y), want) <= 1e-10
    assert _max_error(jax.jit(hess)(y), want) <= 1e-10
    # The timed decision compiled the winner for x: calls run that executable (its
    # answer above), not a second compilation; other shapes are still refused by name.
    assert hess._compiled is not None
    with pytest.raises(ValueError, match="planned for inputs"):
        hess(jnp.ones(61))
    # The pattern it colored, as hessian_sparsity gives it (JacobianFn has .pattern too).
    want_pattern = dense_pattern(modes.hessian_sparsity(f, x))
    assert (hess.pattern.toarray() != want_pattern).sum() == 0
    assert hess.coloring.count == hess.products


def test_the_timed_decision_is_kept_and_a_later_process_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    f, x, _ = hx.family("banded", 60)
    first = modes.hessian_fn(f, x, order="fwd-over-rev")
    assert first._compiled is not None and (tmp_path / "probes.json").exists()

    def untimed(*args, **kwargs):
        raise AssertionError("timed again: the kept probe was not read")

    monkeypatch.setattr(measure, "paired_seconds", untimed)
    # Another process deciding the same Hessian (a new function object): the kept times
    # decide, nothing is compiled while deciding, and the calls compile the winner.
    again = modes.hessian_fn(lambda v: f(v), x, order="fwd-over-rev")
    assert (again.method, again.order) == (first.method, first.order)
    assert again._compiled is None and "earlier probe" in again.reason
    assert _max_error(again(x), jax.jit(jax.hessian(f))(x)) <= 1e-10
    # Other output, other candidates: not the same probe.
    with pytest.raises(AssertionError, match="timed again"):
        modes.hessian_fn(f, x, order="fwd-over-rev", sparse_output=True)
    with pytest.raises(AssertionError, match="timed again"):
        modes.hessian_fn(f, x)


def test_auto_falls_back_to_dense_hvps_on_a_dense_hessian():
    f, w, _, want = _family("mlp")
    hess = modes.hessian_fn(f, w, mode="auto")
    assert hess.method == "dense" and "too many" in hess.reason and hess.pattern is None
    assert _max_error(hess(w), want) <= 1e-10


def test_pytree_input_gives_jax_hessian_layout():
    def f(p):
        return jnp.sum(p["a"] ** 2 * p["b"][0]) + jnp.sum(jnp.sin(p["b"]) * p["c"].ravel()[:3])

    p = {"a": jnp.linspace(0.1, 1.0, 4), "b": jnp.array([0.3, -0.2, 0.5]), "c": jnp.ones((2, 2))}
    want = jax.jit(jax.hessian(f))(p)
    got = modes.hessian(f, p, mode="sparse", coloring="acyclic", order="fwd-over-rev")
    assert got["a"]["c"].shape == (4, 2, 2)
    assert _max_error(got, want) <= 1e-10


@pytest.mark.parametrize("coloring", ["star", "acyclic"])
def test_diagonal_and_zero_hessians_and_a_python_float(coloring):
    for f in (jnp.sum, lambda x: jnp.sum(x**3)):
        got = modes.hessian(f, jnp.ones(5), mode="sparse", coloring=coloring)
        np.testing.assert_allclose(got, jax.hessian(f)(jnp.ones(5)))
    assert float(modes.hessian(lambda x: x**3, 2.0, mode="sparse", coloring=coloring)) == 12.0


def test_default_mode_is_dense_and_unchanged():
    f, x, _, want = _family("arrowhead")
    assert _max_error(modes.hessian(f, x), want) <= 1e-14


@pytest.mark.parametrize("name", hx.FAMILIES)
def test_acyclic_needs_no_more_colors_than_star(name):
    f, x, _, _ = _family(name)
    P = modes.hessian_sparsity(f, x)
    star = modes.color_symmetric(P, kind="star")
    acyclic = modes.color_symmetric(P, kind="acyclic")
    assert acyclic.count <= star.count


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_banded_star_coloring_within_2k_plus_1(k):
    n = 80
    P = sp.diags_array([np.ones(n - abs(d)) for d in range(-k, k + 1)], offsets=range(-k, k + 1))
    assert modes.color_symmetric(P, kind="star").count <= 2 * k + 1
    assert modes.color_symmetric(P, kind="acyclic").count <= k + 1


def test_arrowhead_needs_two_colors_below_the_row_count():
    f, x, _ = hx.family("arrowhead", 64)
    c = modes.color_symmetric(modes.hessian_sparsity(f, x), kind="star")
    assert c.count == 2 and c.row_bound == 64


def _recover(coloring, H):
    """Recover a random symmetric matrix of the pattern from ``H S`` in NumPy."""
    n = H.shape[0]
    S = (np.arange(coloring.count)[None, :] == coloring.colors[:, None]).astype(float)
    b = (H @ S).T.ravel()
    if coloring.substitution is None:
        values = b[coloring.source]
    else:
        sub = coloring.substitution
        h, acc = np.zeros(sub.edge.max(initial=-1) + 1), np.zeros(sub.slots)
        for r in range(sub.rounds):
            lo, hi = sub.starts[r], sub.starts[r + 1]
            h[sub.edge[lo:hi]] = b[sub.b_index[lo:hi]] - acc[sub.src_slot[lo:hi]]
            np.add.at(acc, sub.dst_slot[lo:hi], h[sub.edge[lo:hi]])
        values = np.concatenate([h, b])[coloring.source]
    P = coloring.pattern
    return sp.csr_array((values, P.indices, P.indptr), shape=(n, n)).toarray()


@given(st.integers(0, 10_000), st.floats(0.01, 0.2))
def test_random_symmetric_patterns_are_recovered_exactly(seed, density):
    n = 40
    A = sp.random(n, n, density=density, random_state=seed)
    P = ((A + A.T + sp.eye(n)) != 0).astype(float)
    rng = np.random.default_rng(seed)
    U = sp.triu(P).tocoo()
    U.data = rng.normal(size=U.nnz)
    H = (U + sp.triu(U, 1).T).toarray()
    for kind in ("star", "acyclic"):
        c = modes.color_symmetric(P, kind=kind)
        np.testing.assert_allclose(_recover(c, H), H, atol=1e-12)
        assert c.count <= n


def test_colors_match_or_beat_asdex():
    asdex = pytest.importorskip("asdex")
    for name in ("banded", "stencil", "arrowhead", "block_diagonal"):
        f, x, pattern, _ = _family(name)
        P = modes.hessian_sparsity(f, x)
        theirs = asdex.hessian_coloring_from_sparsity(pattern.toarray()).num_colors
        assert modes.color_symmetric(P, kind="star").count <= theirs
        ours = modes.color_symmetric(P, kind="acyclic").count
        assert ours < theirs if name in ("banded", "stencil") else ours <= theirs


# Building blocks of random scalar programs: (n,) vectors to (n,) vectors.
N = 6
IDX = jnp.array([3, 0, 5, 5, 1, 2])
OPS = [
    lambda a, b: a * b,
    lambda a, b: a / (1.0 + b * b),
    lambda a, b: jnp.where(a > b, a * b, jnp.sin(b)),
    lambda a, b: a + jnp.sum(b) * b[0],
    lambda a, b: a[IDX] * jnp.roll(b, 1),
    lambda a, b: jnp.exp(-a) + b[::-1],
    lambda a, b: jnp.cumsum(a) * b,
    lambda a, b: a + jnp.prod(b[:2]),
    lambda a, b: jnp.maximum(a, b) ** 2,
    lambda a, b: a[jnp.argsort(b)] * b,
]


@given(st.lists(st.integers(0, len(OPS) - 1), min_size=1, max_size=4), st.integers(0, 99))
def test_hessian_sparsity_never_misses_a_nonzero(ops, seed):
    def f(x):
        a, b = x, jnp.tanh(x)
        for op in ops:
            a, b = OPS[op](a, b), a
        return jnp.sum(a * b) + jnp.sum(a**2)

    x0 = jnp.zeros(N)
    hessian = jax.jit(jax.hessian(f))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modes.SparsityWarning)
        P = dense_pattern(modes.hessian_sparsity(f, x0))
    np.testing.assert_array_equal(P, P.T)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        x = jnp.asarray(rng.normal(size=N))
        H = np.asarray(hessian(x))
        assert not np.any((H != 0) & ~P), np.argwhere((H != 0) & ~P)


def test_non_scalar_f_is_named():
    with pytest.raises(TypeError, match="f must return a scalar"):
        modes.hessian_sparsity(jnp.sin, jnp.ones(3))
    with pytest.raises(TypeError, match="f must return a scalar"):
        modes.hessian(jnp.sin, jnp.ones(3))
    with pytest.raises(TypeError, match="hessian_fn: f must return a scalar"):
        modes.hessian_fn(jnp.sin, jnp.ones(3), mode="sparse")


@pytest.mark.parametrize("x", [jnp.arange(3), jnp.ones(3, jnp.complex64)])
def test_integer_or_complex_x_is_named(x):
    for mode in ("dense", "sparse"):
        with pytest.raises(TypeError, match=r"^x has dtype"):
            modes.hessian(jnp.sum, x, mode=mode)


def test_unsupported_sparse_output_is_named():
    with pytest.raises(ValueError, match="sparse_output=True needs mode='sparse'"):
        modes.hessian(jnp.sum, jnp.ones(3), mode="dense", sparse_output=True)
    with pytest.raises(ValueError, match="sparse_output=True needs x to be a single array"):
        modes.hessian_fn(
            lambda p: jnp.sum(p[0] * p[1]), (jnp.ones(2), jnp.ones(2)), sparse_output=True
        )
    with pytest.raises(TypeError, match="sparse_output must be True or False"):
        modes.hessian(jnp.sum, jnp.ones(3), mode="sparse", sparse_output="bcoo")
    with pytest.raises(ValueError, match="mode must be one of"):
        modes.hessian(jnp.sum, jnp.ones(3), mode="fwd")
    with pytest.raises(ValueError, match="coloring must be None or one of"):
        modes.hessian(jnp.sum, jnp.ones(3), mode="sparse", coloring="distance2")


def test_a_hessian_fn_refuses_other_shapes():
    hess = modes.hessian_fn(hx.banded(1), jnp.ones(8), mode="sparse", order="fwd-over-rev")
    with pytest.raises(ValueError, match="planned for inputs"):
        hess(jnp.ones(9))


def test_newton_with_a_sparse_hessian_converges_quadratically():
    s = 12
    f = hx.stencil(s)
    x, history = hx.newton(f, jnp.zeros(s * s), tol=1e-12, mode="sparse", order="fwd-over-rev")
    g = [h["grad_norm"] for h in history]
    assert g[-1] <= 1e-12 and len(g) <= 12
    # Quadratic: once below 1, each gradient norm is at most a small multiple of the last
    # one squared (linear convergence would give g_{k+1} ≈ ρ g_k instead).
    tail = [(a, b) for a, b in zip(g, g[1:], strict=False) if a < 1.0 and b > 1e-14]
    assert tail and all(b <= 10 * a * a for a, b in tail), g
    assert float(jnp.linalg.norm(jax.grad(f)(x))) <= 1e-12


def test_a_conservative_pattern_names_its_fallback_and_misses_nothing():
    def f(x):
        A = jnp.eye(4) + jnp.outer(x[:4], x[:4])
        return jnp.sum(jnp.linalg.solve(A, x[4:])) + jnp.sum(x[4:] ** 3)

    x = jnp.linspace(0.1, 0.8, 8)
    with pytest.warns(modes.SparsityWarning, match="hessian_sparsity: .*custom_linear_solve"):
        P = dense_pattern(modes.hessian_sparsity(f, x))
    want = jax.jit(jax.hessian(f))(x)
    assert not np.any((np.asarray(want) != 0) & ~P)
    assert _max_error(modes.hessian(f, x, mode="sparse"), want) <= 1e-10
