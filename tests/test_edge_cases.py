"""Edge cases: kinks, saturation, ±inf and NaN, clipping regions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import fwd, ref, rev

HAND = {"rev": rev, "fwd": fwd}


def _grad(ns, name, x, **options):
    return jax.grad(lambda z: jnp.sum(getattr(ns, name)(z, **options)))(x)


@pytest.mark.parametrize("ns", ["ref", "rev", "fwd"])
def test_relu_gradient_is_zero_at_the_kink_and_nan_propagates(ns):
    mod = {"ref": ref, **HAND}[ns]
    z = jnp.array([-1.0, 0.0, 2.0, jnp.inf, -jnp.inf])
    np.testing.assert_array_equal(_grad(mod, "relu", z), [0.0, 0.0, 1.0, 1.0, 0.0])
    out = mod.relu(jnp.array([jnp.nan, -0.0]))
    assert jnp.isnan(out[0]) and out[1] == 0.0
    # A NaN unit counts as passing: its upstream gradient flows on (in a network, that
    # gradient is itself NaN-tainted downstream, so the failure stays visible).
    np.testing.assert_array_equal(_grad(mod, "relu", jnp.array([jnp.nan])), [1.0])


@pytest.mark.parametrize("ns", ["rev", "fwd"])
def test_sigmoid_and_tanh_saturate_without_overflow(ns):
    mod = HAND[ns]
    z = jnp.array([-1000.0, -40.0, 0.0, 40.0, 1000.0, -jnp.inf, jnp.inf])
    s = mod.sigmoid(z)
    assert bool(jnp.all(jnp.isfinite(s)))
    np.testing.assert_allclose(s[jnp.array([0, 2, 4, 5, 6])], [0.0, 0.5, 1.0, 0.0, 1.0])
    assert float(s[1]) > 0  # σ(−40) ≈ 4e-18 is representable and kept
    g = _grad(mod, "sigmoid", z)
    np.testing.assert_allclose(g, _grad(ref, "sigmoid", z), rtol=1e-12, atol=0)
    assert float(g[2]) == 0.25  # the maximum of σ', the vanishing-gradient bound
    np.testing.assert_allclose(_grad(mod, "tanh", z), _grad(ref, "tanh", z), atol=0)


@pytest.mark.parametrize("ns", ["rev", "fwd"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_is_shift_invariant_and_stable_at_large_logits(ns, name):
    mod = HAND[ns]
    z = jnp.array([[1000.0, 1001.0, 999.0], [-1000.0, 0.0, 1000.0]])
    out = getattr(mod, name)(z)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[0], getattr(ref, name)(z[0] - 1000.0), rtol=1e-12)
    cot = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.5, -0.5]])
    for z_ in (z, z + 123.0):
        _, vjp = jax.vjp(lambda t: getattr(ref, name)(t), z_)
        np.testing.assert_allclose(
            jax.grad(lambda t: jnp.sum(cot * getattr(mod, name)(t)))(z_),
            vjp(cot)[0],
            rtol=1e-12,
            atol=1e-15,
        )


@pytest.mark.parametrize("ns", ["rev", "fwd"])
def test_softmax_gradient_with_an_infinitely_negative_logit_is_finite(ns):
    z = jnp.array([[0.0, 1.0, -jnp.inf]])
    g = jax.grad(lambda t: HAND[ns].softmax_cross_entropy(t, jnp.array([1])))(z)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(g[0, 2], 0.0)


@pytest.mark.parametrize("ns", ["ref", "rev", "fwd"])
def test_cross_entropy_clip_region_has_zero_gradient(ns):
    mod = {"ref": ref, **HAND}[ns]
    probs = jnp.array([[0.0, 1.0], [1e-20, 1.0 - 1e-20], [0.25, 0.75]])
    labels = jnp.array([0, 0, 1])
    loss = mod.cross_entropy(probs, labels)
    np.testing.assert_allclose(loss, -(2 * np.log(1e-15) + np.log(0.75)) / 3, rtol=1e-12)
    g = jax.grad(lambda p: mod.cross_entropy(p, labels))(probs)
    np.testing.assert_allclose(g[:2, 0], 0.0)  # clipped: no gradient flows
    np.testing.assert_allclose(g[2, 1], -1 / (3 * 0.75), rtol=1e-12)
    # The upper end is not clipped: p = 1 still gets the true slope −1/(m p).
    g1 = jax.grad(lambda p: mod.cross_entropy(p, jnp.array([1])))(jnp.array([[0.0, 1.0]]))
    np.testing.assert_allclose(g1[0, 1], -1.0)


@pytest.mark.parametrize("ns", ["rev", "fwd"])
def test_softmax_cross_entropy_vjp_is_the_fused_error_signal(ns):
    z = jnp.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    labels = jnp.array([2, 0])
    a = ref.softmax(z)
    y = jax.nn.one_hot(labels, 3, dtype=z.dtype)
    g = jax.grad(lambda t: HAND[ns].softmax_cross_entropy(t, labels))(z)
    np.testing.assert_allclose(g, (a - y) / 2, rtol=1e-14, atol=1e-16)
    # One-hot floats give the same loss and logits gradient as class ids.
    g_onehot = jax.grad(lambda t: HAND[ns].softmax_cross_entropy(t, y))(z)
    np.testing.assert_allclose(g_onehot, g, rtol=1e-14, atol=1e-16)


def test_single_example_and_vmap_over_examples_agree_with_batch():
    z = jnp.array([[2.0, -1.0, 0.5], [0.3, 0.1, -2.0]])
    labels = jnp.array([2, 0])
    batch = rev.softmax_cross_entropy(z, labels)
    per_example = jax.vmap(rev.softmax_cross_entropy)(z, labels)
    np.testing.assert_allclose(jnp.mean(per_example), batch, rtol=1e-14)
    g_batch = jax.grad(rev.softmax_cross_entropy)(z, labels)
    g_each = jax.vmap(jax.grad(rev.softmax_cross_entropy))(z, labels)
    np.testing.assert_allclose(g_each / 2, g_batch, rtol=1e-14)
