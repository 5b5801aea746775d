"""A dense mode's mask outside the pattern, and when calls= leaves it out.

The dense modes zero the entries outside the sparsity pattern (a JVP or VJP with a one-hot
seed multiplies 0 by an infinite local derivative into NaN there: sqrt at 0). With calls=,
the mask is left out where every local derivative of f is finite, so those entries are
exact zeros anyway (bpjax.modes._finite), and the calls cannot lose what it saves."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from bpjax import modes
from bpjax.modes import _auto, _cost, _finite, _plan, _sparse, examples


def _jaxpr(f, x):
    return jax.make_jaxpr(f)(x)


@pytest.mark.parametrize(
    "f, finite",
    [
        (lambda x: x[1:] * x[:-1] - jnp.sin(x[1:]), True),
        (lambda x: jnp.tanh(x @ jnp.ones((4, 4))) ** 2, True),
        (lambda x: jax.jit(lambda y: jnp.cos(y) * 2.0)(x), True),  # a jit's body is checked
        (lambda x: jnp.where(x > 0, x, -x), True),
        (lambda x: jnp.sqrt(x), False),  # infinite at 0
        (lambda x: jnp.log(x), False),
        (lambda x: x**-2, False),  # integer_pow with a negative exponent
        (lambda x: jnp.exp(x), False),  # its derivative overflows where exp does
        (lambda x: jax.nn.relu(x), False),  # a custom_jvp: its rule is not read
        (lambda x: jax.jit(lambda y: jnp.sqrt(y))(x), False),
    ],
)
def test_finite_local_derivatives(f, finite):
    assert _finite.finite_local_derivatives(_jaxpr(f, jnp.ones(4))) is finite


def _primitives(jaxpr, found=None):
    found = set() if found is None else found
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jcore.jaxprs_in_params(eqn.params):
            _primitives(sub, found)
    return found


def _banded_rev(f, x, unmasked):
    """The plan, the reverse-mode Jacobian and its program's primitives."""
    plan = _plan.plan(f, x, mode="auto")
    rev = next(c for c in plan.candidates if c.name == "rev")
    fn = plan.program(rev, sparse_output=False, unmasked=unmasked)
    return plan, jax.jit(fn)(plan.x_flat), _primitives(jax.make_jaxpr(fn)(plan.x_flat).jaxpr)


def test_unmasked_program_of_a_finite_f_has_no_mask_and_exact_zeros():
    def f(x):
        return jnp.sin(x[1:]) * x[:-1]

    x = jnp.linspace(0.1, 1.0, 32)
    plan, J, used = _banded_rev(f, x, unmasked=True)
    assert plan.finite and "scatter" not in used and "gather" not in used
    np.testing.assert_array_equal(np.asarray(J), np.asarray(jax.jit(jax.jacrev(f))(x)))
    outside = ~np.asarray(plan.pattern.csr.toarray(), bool)
    assert np.all(np.asarray(J)[outside] == 0)
    _, _, masked = _banded_rev(f, x, unmasked=False)
    assert {"gather", "scatter"} <= masked  # the default keeps the mask


def test_unmasked_is_refused_where_a_derivative_can_be_infinite():
    def g(x):
        return jnp.sqrt(x[1:] * x[:-1]) + x[1:]

    x = jnp.zeros(16).at[::2].set(1.0)  # every product is 0: sqrt' is infinite
    plan, J, _ = _banded_rev(g, x, unmasked=True)
    assert not plan.finite
    outside = ~np.asarray(plan.pattern.csr.toarray(), bool)
    assert np.all(np.asarray(J)[outside] == 0)  # still masked: exact zeros
    assert np.isnan(np.asarray(jax.jacrev(g)(x))[outside]).any()  # what the mask prevents


def test_calls_leave_the_mask_out_only_when_it_pays(monkeypatch):
    def f(x):
        return jnp.sin(x[1:]) * x[:-1]

    x = jnp.linspace(0.1, 1.0, 32)
    plan = _plan.plan(f, x, mode="auto")
    rev = next(c for c in plan.candidates if c.name == "rev")
    columns = next(c for c in plan.candidates if c.name != "rev" and c.name != "fwd")

    def leaves(c, calls):
        return plan.leaves_mask_out(c, 1e-5, calls, sparse_output=False)

    assert leaves(rev, None) is False  # steady state: always masked
    assert leaves(columns, 10) is False  # colorings have no mask
    monkeypatch.setattr(_cost, "unmasked_pays", lambda run, calls, r: True)
    assert leaves(rev, 10) is (jax.default_backend() == "cpu")
    assert plan.leaves_mask_out(rev, 1e-5, 10, sparse_output=True) is False  # BCOO: no mask
    monkeypatch.setattr(_cost, "unmasked_pays", lambda run, calls, r: False)
    assert leaves(rev, 10) is False


def test_unmasked_pays_for_a_few_calls_of_a_small_jacobian_only():
    r = {"compile": _cost._COMPILE_REFERENCE_SECONDS}
    assert _cost.unmasked_pays(1e-4, 10, r)  # 10 x 0.1 ms x 1.5 < 7 ms
    assert not _cost.unmasked_pays(1e-3, 10, r)  # 15 ms lost > 7 ms saved
    assert not _cost.unmasked_pays(1e-4, 1000, r)


def test_jacobian_fn_with_calls_gives_the_same_jacobian_either_way(monkeypatch):
    f, x, _ = examples.family("stencil", 256)
    monkeypatch.setattr(_cost, "unmasked_pays", lambda run, calls, r: True)
    jac = modes.jacobian_fn(f, x, calls=10)
    want = jax.jit(jax.jacrev(f))(x)
    np.testing.assert_allclose(np.asarray(jac(x)), np.asarray(want), rtol=1e-6, atol=1e-6)
    # Unmasked only where a dense mode was chosen, and then the reason says so.
    assert jac.choice.unmasked == (jac.method in _sparse.DENSE)
    assert ("without the mask" in jac.choice.reason) == jac.choice.unmasked


def test_a_bcoo_output_has_no_mask_to_leave_out(monkeypatch):
    def f(x):
        return jnp.sin(x[1:]) * x[:-1]

    x = jnp.linspace(0.1, 1.0, 32)
    monkeypatch.setattr(_cost, "unmasked_pays", lambda run, calls, r: True)
    plan = _plan.plan(f, x, mode="auto")
    rev = next(c for c in plan.candidates if c.name == "rev")
    plan = dataclasses.replace(plan, candidates=[rev])  # a dense mode, a sparse pattern
    assert plan.finite and plan.pattern.nnz < plan.m * plan.n
    _, dense, _ = _auto.decide(plan, sparse_output=False, calls=10)
    assert dense.unmasked is (jax.default_backend() == "cpu")
    _, bcoo, _ = _auto.decide(plan, sparse_output=True, calls=10)
    assert not bcoo.unmasked and "without the mask" not in bcoo.reason


def test_asking_whether_a_dense_pattern_is_masked_does_not_build_its_csr():
    # The CSR is built on first access: 0.4 s for a dense 4096 x 4096 pattern, which put
    # 85 ms on every jacobian_fn(calls=10) decision at mlp_square n = 4096 when the
    # question read it before the count of nonzeros.
    f, x, _ = examples.family("mlp_square", 64)
    plan = _plan.plan(f, x, mode="auto")
    rev = next(c for c in plan.candidates if c.name == "rev")
    assert plan.pattern.nnz == plan.m * plan.n
    assert not plan.masks(rev, sparse_output=False)
    assert "csr" not in vars(plan.pattern)
