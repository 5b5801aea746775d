"""Hand-written clipping against optax, and the properties clipping must have."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bpjax import grads, models


def _tree(seed=0, scale=10.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "a": scale * jax.random.normal(k1, (4, 3), jnp.float32),
        "b": [scale * jax.random.normal(k2, (5,), jnp.float32), jax.random.normal(k3, (2, 2))],
    }


def _flat(tree):
    return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


def _cos(a, b):
    va, vb = _flat(a), _flat(b)
    return float(jnp.vdot(va, vb) / (jnp.linalg.norm(va) * jnp.linalg.norm(vb)))


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 5.0, 1e3])
def test_clip_tree_by_global_norm_matches_optax(max_norm):
    tree = _tree()
    ours, norm = grads.clip_tree_by_global_norm(tree, max_norm)
    theirs, _ = optax.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    np.testing.assert_allclose(norm, optax.tree.norm(tree), rtol=1e-6)
    np.testing.assert_allclose(_flat(ours), _flat(theirs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_value", [0.01, 0.5, 3.0])
def test_clip_tree_by_value_matches_optax(max_value):
    tree = _tree()
    theirs, _ = optax.clip(max_value).update(tree, optax.EmptyState())
    np.testing.assert_allclose(
        _flat(grads.clip_tree_by_value(tree, max_value)), _flat(theirs), atol=0
    )


def test_global_norm_clipping_keeps_direction_bounds_norm_and_is_idempotent():
    tree = _tree()
    norm = float(grads.global_norm(tree))
    clipped, _ = grads.clip_tree_by_global_norm(tree, norm / 10)
    np.testing.assert_allclose(grads.global_norm(clipped), norm / 10, rtol=1e-6)
    assert _cos(clipped, tree) == pytest.approx(1.0, abs=1e-6)
    twice, _ = grads.clip_tree_by_global_norm(clipped, norm / 10)
    np.testing.assert_allclose(_flat(twice), _flat(clipped), rtol=1e-6)
    untouched, _ = grads.clip_tree_by_global_norm(tree, 2 * norm)
    np.testing.assert_array_equal(_flat(untouched), _flat(tree))


def test_value_clipping_turns_the_direction():
    tree = {"big": jnp.array([100.0, -50.0]), "small": jnp.array([0.1, 0.2])}
    clipped = grads.clip_tree_by_value(tree, 1.0)
    assert float(jnp.max(jnp.abs(_flat(clipped)))) == 1.0
    assert _cos(clipped, tree) < 0.99
    np.testing.assert_array_equal(clipped["small"], tree["small"])


def test_clipping_transform_chains_with_optax():
    tree = _tree()
    tx = grads.clipping(max_norm=1.0, max_value=2.0)
    out, state = tx.update(tree, tx.init(tree))
    want, _ = grads.clip_tree_by_global_norm(grads.clip_tree_by_value(tree, 2.0), 1.0)
    np.testing.assert_allclose(_flat(out), _flat(want), rtol=1e-7)
    with pytest.raises(ValueError, match="max_norm must be positive"):
        grads.clip_tree_by_global_norm(tree, 0.0)
    with pytest.raises(ValueError, match="max_value must be positive"):
        grads.clip_tree_by_value(tree, -1.0)


def test_layer_norms_follow_the_layer_order():
    model = models.MLP(arch="highway", depth=4, width=3)
    params = model.init(jax.random.key(0), 5, 2)
    norms = grads.layer_norms(params)
    want = [jnp.linalg.norm(params["stem"]["W"])]
    want += [jnp.linalg.norm(params["blocks"]["W"][i]) for i in range(3)]
    want += [jnp.linalg.norm(params["out"]["W"])]
    np.testing.assert_allclose(norms, want, rtol=1e-6)
    gates = grads.layer_norms(params, param="W_T")  # only the blocks have gates
    assert bool(jnp.isnan(gates[0])) and bool(jnp.isnan(gates[-1]))
    assert bool(jnp.all(jnp.isfinite(gates[1:-1])))
    ratios = grads.update_ratios(jax.tree.map(lambda p: 1e-3 * p, params), params)
    np.testing.assert_allclose(ratios, 1e-3, rtol=1e-5)


def test_check_finite_names_the_first_bad_layer():
    model = models.MLP(depth=5, width=3)
    g = jax.tree.map(jnp.ones_like, model.init(jax.random.key(0), 4, 2))
    grads.check_finite(g)
    bad = jax.tree.map(lambda a: a, g)
    bad["blocks"]["W"] = bad["blocks"]["W"].at[2, 0, 0].set(jnp.nan)
    bad["out"]["b"] = bad["out"]["b"].at[0].set(jnp.inf)
    assert grads.first_nonfinite_layer(bad) == "layer 4"
    with pytest.raises(FloatingPointError, match=r"non-finite gradient in layer 4"):
        grads.check_finite(bad)
    bad["stem"]["b"] = bad["stem"]["b"].at[1].set(-jnp.inf)
    assert grads.first_nonfinite_layer(bad) == "layer 1 (stem)"
