"""bpjax.check must catch wrong rules, not only bless right ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import check, ref, rev


def _wrong_vjp_tanh():
    @jax.custom_vjp
    def f(z):
        return jnp.tanh(z)

    def f_fwd(z):
        a = jnp.tanh(z)
        return a, a

    def f_bwd(a, g):
        return (g * (1 - a),)  # the classic slip: 1 − a instead of 1 − a²

    f.defvjp(f_fwd, f_bwd)
    return f


def _wrong_jvp_sigmoid():
    @jax.custom_jvp
    def f(z):
        return jax.nn.sigmoid(z)

    @f.defjvp
    def f_jvp(primals, tangents):
        (z,), (t,) = primals, tangents
        a = jax.nn.sigmoid(z)
        return a, a * t  # forgot the (1 − a)

    return f


def test_wrong_vjp_is_reported_against_autodiff_and_finite_differences():
    z = jnp.linspace(-2.0, 2.0, 7)
    report = check.gradients(_wrong_vjp_tanh(), z, reference=ref.tanh)
    assert not report.ok()
    assert report.errors["vjp vs autodiff"] > 1e-2
    assert report.errors["vjp vs finite differences"] > 1e-2
    assert "jvp" in report.skipped
    assert "vjp vs autodiff" in str(report)


def test_wrong_jvp_is_reported_without_a_reference_by_finite_differences():
    z = jnp.linspace(-2.0, 2.0, 7)
    report = check.gradients(_wrong_jvp_sigmoid(), z)
    assert not report.ok()
    assert report.errors["jvp vs finite differences"] > 1e-2
    assert "jvp vs autodiff" not in report.errors


def test_correct_rules_pass_on_pytrees_with_integer_leaves():
    def loss(params, x, labels):
        W, b = params["W"], params["b"]
        return rev.softmax_cross_entropy(rev.linear(x, W, b), labels)

    def loss_ref(params, x, labels):
        return ref.softmax_cross_entropy(ref.linear(x, params["W"], params["b"]), labels)

    rng = np.random.default_rng(0)
    params = {"W": jnp.asarray(rng.standard_normal((3, 4))), "b": jnp.zeros(4)}
    x = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)  # cast up to float64 inside
    report = check.gradients(loss, params, x, jnp.array([0, 1, 2, 3, 0]), reference=loss_ref)
    assert report.ok(), str(report)
    assert report.errors["vjp vs autodiff"] <= 1e-12


def test_check_rejects_what_it_cannot_differentiate():
    with pytest.raises(TypeError, match="no floating-point argument"):
        check.gradients(lambda i: i * 2.0, jnp.arange(3))
    with pytest.raises(TypeError, match="returned a int"):
        check.gradients(lambda x: jnp.argmax(x), jnp.ones(3))
    with pytest.raises(ValueError, match="unknown op 'gelu'"):
        check.op("gelu", jnp.ones(3))


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_a_nan_derivative_along_any_direction_fails_the_check(seed):
    """A VJP that returns NaN for some cotangents (here: those with a negative sum) must fail
    whichever direction comes first; Python's max() dropped a NaN unless it came first."""

    @jax.custom_vjp
    def g(x):
        return jnp.tanh(x)

    def g_fwd(x):
        return jnp.tanh(x), x

    def g_bwd(x, u):
        return (jnp.where(jnp.sum(u) > 0, u * (1 - jnp.tanh(x) ** 2), jnp.nan),)

    g.defvjp(g_fwd, g_bwd)
    report = check.gradients(g, jnp.ones(3) * 0.3, reference=jnp.tanh, directions=5, seed=seed)
    assert not report.ok()
    assert np.isnan(report.errors["vjp vs autodiff"])
    assert np.isnan(report.max_error())
    # The same rule without the NaN passes: the failure is the NaN, not the setup.
    assert check.gradients(jnp.tanh, jnp.ones(3) * 0.3, reference=jnp.tanh, seed=seed).ok()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": "1e-6"}, ValueError, "eps must be a positive number"),  # bare '>' TypeError
        ({"eps": None}, ValueError, "eps must be a positive number"),
        ({"reference": jnp.ones(3)}, TypeError, "reference must be a function"),
        ({"f": lambda x: None}, TypeError, "returned None, no array to differentiate"),
        ({"f": 3}, TypeError, "f must be a function"),
    ],
)
def test_arguments_that_cannot_be_checked_are_named(kwargs, error, match):
    f = kwargs.pop("f", jnp.tanh)
    with pytest.raises(error, match=match):
        check.gradients(f, jnp.ones(3), **kwargs)


def test_a_float32_computation_inside_f_is_noted_and_float64_is_not():
    x = jnp.linspace(-1.0, 1.0, 4)
    w32 = jnp.full((4, 4), 0.3, jnp.float32)
    # A cast inside a scan body: the check fails on finite differences, and says why.
    inside = check.gradients(
        lambda x: jax.lax.scan(
            lambda c, _: (jnp.sin(c.astype(jnp.float32)).astype(c.dtype), None), x, None, length=2
        )[0],
        x,
    )
    assert not inside.ok() and len(inside.notes) == 1 and "float32" in inside.notes[0]
    assert "note: f computes in float32" in str(inside)
    # float32 weights promoted by float64 inputs, and a float32 caller's x (cast to float64
    # by the check): nothing computes in float32, nothing is noted.
    for f, arg in ((lambda x: jnp.tanh(w32 @ x), x), (jnp.tanh, x.astype(jnp.float32))):
        report = check.gradients(f, arg)
        assert report.ok() and report.notes == ()
