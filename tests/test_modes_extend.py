"""Extending the Jacobian engine from outside the package: a primitive's sparsity rule
(``modes.register_primitive``) and a cost basis (a ``modes.CostBasis``), each run through
``modes.sparsity`` and ``modes.jacobian_fn``."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_pattern
from jax.extend import core as jcore
from jax.interpreters import ad, batching, mlir

from bpjax import modes
from bpjax.modes import _primitives, examples


def _roll_impl(x, *, shift):
    return jnp.roll(x, shift, axis=-1)


# A primitive bpjax has never heard of: a cyclic shift along the last axis (linear).
roll_p = jcore.Primitive("bpjax_test_roll")
roll_p.def_impl(_roll_impl)
roll_p.def_abstract_eval(lambda x, *, shift: jax.core.ShapedArray(x.shape, x.dtype))
mlir.register_lowering(roll_p, mlir.lower_fun(_roll_impl, multiple_results=False))
ad.deflinear2(roll_p, lambda ct, x, *, shift: [roll_p.bind(ct, shift=-shift)])


def _roll_batch(args, dims, *, shift):
    (x,), (d,) = args, dims  # the batch axis moved first, so the last is still rolled
    if d is None:  # not batched (batching.not_mapped, gone in newer JAX, was None)
        return roll_p.bind(x, shift=shift), d
    return roll_p.bind(jnp.moveaxis(x, d, 0), shift=shift), 0


batching.primitive_batchers[roll_p] = _roll_batch


def f(x):
    """``x * roll(x)``: two nonzeros per row of J (the diagonal and one cyclic neighbour)."""
    return jnp.sin(x) * roll_p.bind(x, shift=1)


@pytest.fixture
def roll_rule():
    rule = modes.register_primitive(
        roll_p.name,
        move=lambda ops, params: [np.roll(ops[0], params["shift"], axis=-1)],
        pulled=True,
    )
    yield rule
    del _primitives.TABLE[roll_p.name]


def _expected_pattern(n):
    """Row ``i`` reads ``x[i]`` and ``x[i - 1]`` (cyclically)."""
    eye = np.eye(n, dtype=bool)
    return eye | np.roll(eye, -1, axis=1)


def test_an_unknown_primitive_falls_back_and_the_warning_names_it():
    x = jnp.linspace(0.1, 1.0, 8)
    with pytest.warns(modes.SparsityWarning, match="bpjax_test_roll: no sparsity rule"):
        P = modes.sparsity(f, x)
    assert P.nse == 8 * 8  # conservative: every input


def test_a_primitive_registered_from_outside_is_exact_in_sparsity_and_jacobian_fn(roll_rule):
    n = 12
    x = jnp.linspace(0.1, 1.0, n)
    assert isinstance(roll_rule, modes.PrimitiveRule) and roll_rule.sparsity is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", modes.SparsityWarning)
        P = modes.sparsity(f, x)
    np.testing.assert_array_equal(dense_pattern(P), _expected_pattern(n))
    jac = modes.jacobian_fn(f, x, mode="sparse")
    assert jac.pattern.fallbacks == () and jac.coloring.products == 2
    np.testing.assert_allclose(jac(x), jax.jit(jax.jacrev(f))(x), rtol=1e-6, atol=1e-7)


class FewestProducts(modes.CostBasis):
    """A basis from outside: the price of a method is its number of products."""

    name = "products"
    verb = "counted"

    def __init__(self):
        self.seen = []

    def prices(self, plan, *, sparse_output, calls):
        self.seen.append((plan.n, plan.m, sparse_output, calls))
        return {c.name: {"seconds": float(c.products)} for c in plan.candidates}


def test_a_cost_basis_from_outside_decides_jacobian_fn(roll_rule):
    n = 64
    x = jnp.linspace(0.1, 1.0, n)
    basis = FewestProducts()
    jac = modes.jacobian_fn(f, x, basis=basis)
    assert basis.seen == [(n, n, False, None)]
    assert jac.method == "columns" and jac.coloring.products == 2
    assert jac.choice.basis == "products" and "counted" in jac.choice.reason
    assert jac.choice.candidates["fwd"]["seconds"] == n
    np.testing.assert_allclose(jac(x), jax.jit(jax.jacrev(f))(x), rtol=1e-6, atol=1e-7)
    g, x2, _ = examples.family("tridiagonal", 100)
    assert modes.choose_mode(g, x2, basis=basis).method == "columns"


def test_a_basis_that_cannot_price_compilation_refuses_calls():
    g, x, _ = examples.family("tridiagonal", 16)
    with pytest.raises(
        ValueError, match="calls= needs basis='model' or 'probe' or 'timing', not 'products'"
    ):
        modes.jacobian_fn(g, x, basis=FewestProducts(), calls=3)
    with pytest.raises(ValueError, match="unknown basis 'fastest'"):
        modes.jacobian_fn(g, x, basis="fastest")


@pytest.mark.parametrize("entry", [modes.jacobian, modes.jacobian_fn, modes.choose_mode])
def test_calibrate_is_gone_and_the_error_names_the_basis(entry):
    g, x, _ = examples.family("tridiagonal", 16)
    with pytest.raises(TypeError, match='basis="timing"'):
        entry(g, x, calibrate=True)


def test_conservative_primitives_are_listed_and_named_when_they_fall_back():
    assert "fft" in _primitives.CONSERVATIVE
    assert all(_primitives.lookup(p).sparsity is None for p in _primitives.CONSERVATIVE)
    with pytest.warns(modes.SparsityWarning, match="fft: no sparsity rule"):
        modes.sparsity(lambda x: jnp.fft.fft(x).real, jnp.ones(8))


@pytest.mark.parametrize("entry", [modes.jacobian, modes.jacobian_fn, modes.choose_mode])
def test_sparse_has_one_meaning_and_the_old_keyword_names_colorings(entry):
    g, x, _ = examples.family("tridiagonal", 16)
    with pytest.raises(TypeError, match="sparse= is now colorings="):
        entry(g, x, sparse=False)
    choice = modes.choose_mode(g, x, colorings=False)
    assert choice.method in ("fwd", "rev") and set(choice.candidates) == {"fwd", "rev"}
