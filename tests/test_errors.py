"""Bad input raises a ValueError/TypeError naming the argument, its shape and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from bpjax import fwd, manual, ref, rev

ALL = [ref, rev, fwd]


@pytest.mark.parametrize("ns", ALL)
def test_linear_shape_mismatch_names_both_shapes(ns):
    with pytest.raises(ValueError, match=r"x has 3 features but W expects 5.*\(2, 3\).*\(5, 4\)"):
        ns.linear(jnp.ones((2, 3)), jnp.ones((5, 4)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"b has 3 entries but W has 4 outputs"):
        ns.linear(jnp.ones((2, 5)), jnp.ones((5, 4)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"W must be 2-D \(d_in, d_out\)"):
        ns.linear(jnp.ones((2, 5)), jnp.ones(5), jnp.zeros(3))


@pytest.mark.parametrize("ns", ALL)
def test_matmul_inner_dimension_mismatch(ns):
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(2, 3\).*\(4, 5\)"):
        ns.matmul(jnp.ones((2, 3)), jnp.ones((4, 5)))


@pytest.mark.parametrize("ns", ALL)
def test_integer_input_is_a_type_error_with_the_fix(ns):
    with pytest.raises(TypeError, match=r"z must have a floating dtype.*astype"):
        ns.sigmoid(jnp.arange(3))
    with pytest.raises(TypeError, match=r"must be an array, got str"):
        ns.tanh("1.0")


@pytest.mark.parametrize("ns", ALL)
def test_labels_out_of_range_or_wrong_class_count(ns):
    logits = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[0, 3\]"):
        ns.softmax_cross_entropy(logits, jnp.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels have 4 classes but logits has 3"):
        ns.softmax_cross_entropy(logits, jnp.ones((2, 4)) / 4)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(2,\)"):
        ns.cross_entropy(logits + 1 / 3, jnp.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"labels must be integer class ids or floating"):
        ns.softmax_cross_entropy(logits, jnp.array([True, False]))


def test_out_of_range_labels_under_jit_are_not_checked_but_do_not_crash_tracing():
    # Traced labels have no values to check; the call still traces and runs.
    f = jax.jit(rev.softmax_cross_entropy)
    assert jnp.isfinite(f(jnp.zeros((2, 3)), jnp.array([0, 2])))


@pytest.mark.parametrize("ns", ALL)
def test_softmax_axis_and_mse_shapes(ns):
    with pytest.raises(ValueError, match=r"axis=2 is out of range for z.shape=\(2, 3\)"):
        ns.softmax(jnp.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"pred.shape=\(4, 1\) differs from target.shape=\(4,\)"):
        ns.mse(jnp.ones((4, 1)), jnp.ones(4))


@pytest.mark.parametrize("ns", ALL)
def test_unknown_keyword_is_rejected_not_swallowed(ns):
    with pytest.raises(TypeError, match=r"softmax\(z, \*, axis=-1\).*axes"):
        ns.softmax(jnp.ones((2, 3)), axes=0)


def test_manual_rejects_bad_config():
    params = [(jnp.ones((4, 8)), jnp.zeros(8)), (jnp.ones((8, 3)), jnp.zeros(3))]
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'"):
        manual.backprop(params, jnp.ones((2, 4)), jnp.array([0, 1]), activation="gelu")
    with pytest.raises(ValueError, match=r"layer 0: linear: x has 5 features but W expects 4"):
        manual.backprop(params, jnp.ones((2, 5)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        manual.backprop(params, jnp.ones((2, 4)), jnp.array([0, 7]))


def test_manual_backward_names_a_wrong_cache():
    """The whole (probs, cache) tuple gave "'tuple' object has no attribute 'inputs'"; a cache
    from other params gave "IndexError: tuple index out of range"."""
    from bpjax import models

    params = models.init_layers(jax.random.key(0), [4, 8, 3])
    other = models.init_layers(jax.random.key(0), [4, 6, 5, 3])
    x, labels = jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1])
    out = manual.forward(params, x)
    with pytest.raises(TypeError, match="forward returns \\(probs, cache\\): pass its second"):
        manual.backward(params, out, labels)
    with pytest.raises(ValueError, match="the cache was made by forward with other params"):
        manual.backward(other, out[1], labels)
    assert len(manual.backward(params, out[1], labels)) == 2
