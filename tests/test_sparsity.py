"""Sparsity detection: exact on the structured families, never missing a nonzero anywhere."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_pattern
from hypothesis import given, settings
from hypothesis import strategies as st

from bpjax import modes, rev
from bpjax.modes import examples


def _pattern(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error", modes.SparsityWarning)
        return dense_pattern(modes.sparsity(f, x))


def _nonzeros(f, x, *, eager=False):
    """The numerical nonzeros of J at x. Compiled where a pattern must equal them (jit can
    only fail such a check); eager, op by op, where the check is one-sided (the pattern must
    cover them), so no compiler simplification can hide a nonzero the pattern misses."""
    jac = jax.jacrev(f) if eager else jax.jit(jax.jacrev(f))
    return np.abs(np.asarray(jac(x))) > 0


@pytest.mark.parametrize(
    "name", ["elementwise", "tridiagonal", "block_diagonal", "arrowhead", "stencil"]
)
def test_sparsity_is_exact_on_the_structured_families(name):
    f, x, truth = examples.family(name, 64, dtype=jnp.float64)
    got = _pattern(f, x)
    np.testing.assert_array_equal(got, truth.toarray())
    # At a random point every structural nonzero is a numerical one here.
    np.testing.assert_array_equal(_nonzeros(f, x), truth.toarray())


def test_dense_families_give_dense_patterns_without_materializing_rows_per_input():
    f, x, _ = examples.family("mlp_square", 256, dtype=jnp.float64)
    pattern = modes.sparsity(f, x)
    assert pattern.shape == (256, 256) and pattern.nse == 256 * 256


def test_rules_are_exact_for_indexing_reductions_products_and_calls():
    W = jnp.array([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    index = jnp.array([3, 0, 0, 5])

    def f(x):
        a = jnp.tanh(x[index])  # gather with constant indices
        b = jax.lax.dynamic_slice(x, (2,), (2,)) * x[:2]
        c = W @ jnp.sin(x[2:])  # a constant operand's zeros are structural
        d = jnp.sum(x[:3] ** 2, keepdims=True)
        e = jax.nn.relu(x[::-1][:2])  # custom_jvp inside a jit
        g = jax.lax.cond(x[0] > 0, jnp.sin, jnp.cos, x[4:])
        h = x[1:3].at[0].set(x[5])  # scatter: the overwritten element loses x[1]
        k = jnp.cumsum(x[:3]) + rev.tanh(x[None, 3:])[0, :3]
        return jnp.concatenate([a, b, c, d, e, g, h, k, jnp.outer(x[:2], x[4:5]).ravel()])

    x = jnp.linspace(0.3, 1.1, 6)
    np.testing.assert_array_equal(_pattern(f, x), _nonzeros(f, x))


def test_pytrees_are_flattened_like_ravel_pytree():
    def f(p):
        return {"s": jnp.sum(p["a"]) * p["b"][0], "t": p["a"][1:] * p["b"][1:]}

    p = {"a": jnp.array([0.5, 1.0, 2.0]), "b": jnp.array([0.1, 0.2, 0.3])}
    flat_x, unravel = jax.flatten_util.ravel_pytree(p)

    def g(v):
        return jax.flatten_util.ravel_pytree(f(unravel(v)))[0]

    np.testing.assert_array_equal(_pattern(f, p), _nonzeros(g, flat_x))


def test_unknown_primitives_fall_back_conservatively_and_say_which():
    def f(x):
        return jnp.fft.fft(x).real + x

    x = jnp.linspace(0.1, 1.0, 5)
    with pytest.warns(modes.SparsityWarning, match=r"fft: no sparsity rule.*conservative"):
        got = dense_pattern(modes.sparsity(f, x))
    assert got.all()  # every output of the FFT depends on every input: dense, not exact
    assert not (_nonzeros(f, x, eager=True) & ~got).any()
    with pytest.warns(modes.SparsityWarning, match=r"fft"):
        modes.jacobian(f, x, mode="sparse")


def test_data_dependent_indices_fall_back_and_say_so():
    def f(x):
        return x[jnp.argsort(x)] * x  # a gather at positions computed from x

    with pytest.warns(modes.SparsityWarning, match=r"indices are not known at trace time"):
        got = dense_pattern(modes.sparsity(f, jnp.arange(4.0)))
    assert got.all()


def test_too_dense_patterns_are_refused_with_the_reason():
    f, x, _ = examples.family("mlp_square", 64, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"4,096 nonzeros.*more than max_nonzeros=1,000"):
        modes.sparsity(f, x, max_nonzeros=1000)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda f, x: modes.sparsity(f, x, max_nonzeros=None), ValueError, "max_nonzeros must"),
        (lambda f, x: modes.sparsity(f, x, max_nonzeros=0), ValueError, "max_nonzeros must"),
        (
            lambda f, x: modes.hessian_sparsity(lambda y: jnp.sum(f(y)), x, max_nonzeros=2.5),
            ValueError,
            "hessian_sparsity: max_nonzeros must",
        ),
        # Strings were taken as True: sparse_output="bcoo" returned a BCOO by luck.
        (lambda f, x: modes.jacobian(f, x, sparse_output="bcoo"), TypeError, "sparse_output"),
        (lambda f, x: modes.choose_mode(f, x, colorings="no"), TypeError, "colorings must be"),
        (lambda f, x: modes.jacobian(f, [1.0, 2.0, 3.0]), TypeError, r"pass jnp.asarray\(x\)"),
        (lambda f, x: modes.hvp(f, x, x), TypeError, "hvp: f must return a scalar"),
    ],
)
def test_options_and_points_that_cannot_mean_anything_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call(lambda y: jnp.sin(y[1:]) - y[:-1], jnp.ones(3))


# A random program over x in R^8: each step combines the current value with x.
STEPS = {
    "sin": lambda y, x, r: jnp.sin(y),
    "shift": lambda y, x, r: y * jnp.roll(x, int(r.integers(1, 7))),
    "gather": lambda y, x, r: y[r.integers(0, 8, size=8)],
    "pad": lambda y, x, r: jnp.pad(y[2:], (1, 1)) + x,
    "reshape": lambda y, x, r: (y.reshape(2, 4).T @ jnp.asarray(r.normal(size=(2, 2)))).ravel(),
    "sparse_matmul": lambda y, x, r: (
        jnp.asarray(r.normal(size=(8, 8)) * (r.random((8, 8)) < 0.3)) @ y
    ),
    "where": lambda y, x, r: jnp.where(x > 0, y, x**2),
    "cumsum": lambda y, x, r: jnp.cumsum(y),
    "reduce": lambda y, x, r: y + jnp.max(y[:3]),
    "sort": lambda y, x, r: jnp.sort(y) * x,
    "dynamic_update": lambda y, x, r: jax.lax.dynamic_update_slice(y, x[:3] ** 2, (4,)),
}


@settings(max_examples=max(6, settings.default.max_examples))  # 60 under bpjax-slow
@given(
    steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_sparsity_never_misses_a_nonzero(steps, seed):
    def f(x):
        r = np.random.default_rng(seed)
        y = x
        for step in steps:
            y = STEPS[step](y, x, r)
        return y

    x = jnp.asarray(np.random.default_rng(seed + 1).normal(size=8))
    got = _pattern(f, x)
    missed = _nonzeros(f, x, eager=True) & ~got
    assert not missed.any(), f"missed nonzeros at {np.argwhere(missed)[:4]}"
