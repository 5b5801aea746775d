"""Flax NNX modules (bpjax.nnx) on bpjax rules: parity with nnx.Linear, transforms, training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bpjax import data, models, rev, train
from bpjax import nnx as bnnx
from bpjax.models import _blocks


def _rel(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _loss(model, x, y):
    return rev.softmax_cross_entropy(model(x), y)


@pytest.mark.parametrize("ops", ["rev", "fwd", "ref"])
def test_linear_matches_nnx_linear_in_value_and_gradient(ops):
    ours = bnnx.Linear(5, 3, ops=ops, rngs=nnx.Rngs(0))
    theirs = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 5), jnp.float32)
    np.testing.assert_array_equal(ours.kernel[...], theirs.kernel[...])  # same init, same keys
    assert _rel(ours(x), theirs(x)) <= 1e-6

    def loss(m):
        return jnp.sum(jnp.tanh(m(x)))

    assert _rel(nnx.grad(loss)(ours), nnx.grad(loss)(theirs)) <= 1e-6


def test_fwd_linear_runs_under_forward_mode_and_rev_does_not():
    x = jnp.ones((2, 3), jnp.float32)
    for ops, works in (("fwd", True), ("rev", False)):
        graphdef, state = nnx.split(bnnx.Linear(3, 2, ops=ops, rngs=nnx.Rngs(0)))

        def f(state, graphdef=graphdef):
            return nnx.merge(graphdef, state)(x)

        tangent = jax.tree.map(jnp.ones_like, state)
        if works:
            _, out = jax.jvp(f, (state,), (tangent,))
            assert out.shape == (2, 2)
        else:
            with pytest.raises(TypeError, match="custom_vjp"):
                jax.jvp(f, (state,), (tangent,))


@pytest.mark.parametrize("arch", ["plain", "residual", "highway", "dense"])
def test_mlp_on_rules_matches_the_nnx_linear_network_and_the_pure_model(arch):
    kwargs = dict(arch=arch, depth=5, width=8, activation="tanh")
    x = jax.random.normal(jax.random.key(2), (6, 12), jnp.float32)
    y = jnp.arange(6) % 3
    ours = bnnx.MLP(12, 3, ops="rev", rngs=nnx.Rngs(0), **kwargs)
    theirs = bnnx.MLP(12, 3, ops="nnx", rngs=nnx.Rngs(0), **kwargs)
    assert _rel(ours(x), theirs(x)) <= 1e-6
    assert _rel(nnx.grad(_loss)(ours, x, y), nnx.grad(_loss)(theirs, x, y)) <= 1e-6
    # The same numbers through bpjax.models.MLP's pure functions.
    pure = models.MLP(**kwargs)
    assert _rel(pure.apply(bnnx.to_params(ours), x), ours(x)) <= 1e-6


@pytest.mark.parametrize("remat", ["nnx", "sqrt", "binomial"])
def test_remat_under_nnx_scan_keeps_the_gradient(remat):
    x = jax.random.normal(jax.random.key(3), (6, 12), jnp.float32)
    y = jnp.arange(6) % 3
    plain = bnnx.MLP(12, 3, arch="residual", depth=9, width=8, rngs=nnx.Rngs(0))
    again = bnnx.MLP(12, 3, arch="residual", depth=9, width=8, checkpoint=remat, rngs=nnx.Rngs(0))
    assert _rel(nnx.grad(_loss)(again, x, y), nnx.grad(_loss)(plain, x, y)) <= 1e-6


def test_nnx_jit_and_optimizer_train_to_the_accuracy_of_the_pure_model():
    ds = data.digits()
    model = bnnx.MLP(64, 10, arch="residual", depth=4, width=64, ops="rev", rngs=nnx.Rngs(0))
    nnx_acc = bnnx.train(model, ds, steps=300, eval_every=300, seed=0)[-1]
    pure = train.train(
        models.MLP(arch="residual", depth=4, width=64), ds, steps=300, eval_every=300, seed=0
    )
    assert nnx_acc >= 0.9
    assert abs(nnx_acc - pure.test_acc[-1]) <= 0.02


def test_bad_options_and_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="Linear: ops must be one of"):
        bnnx.Linear(2, 2, ops="jvp", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MLP: ops must be one of"):
        bnnx.MLP(2, 2, ops="torch", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown arch"):
        bnnx.MLP(2, 2, arch="resnet", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MLP: depth must be an integer >= 1, got True"):
        bnnx.MLP(2, 2, depth=True, rngs=nnx.Rngs(0))  # the pure model's validation, shared
    with pytest.raises(ValueError, match="x has 4 features but the kernel expects 3"):
        bnnx.Linear(3, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 4)))


def test_a_block_registered_from_outside_trains_through_both_mlps(monkeypatch):
    def gated_residual(state, *, affine, act, gate, alpha):
        return state + alpha * gate(state) * act(affine(state))

    monkeypatch.setattr(_blocks, "BLOCKS", dict(_blocks.BLOCKS))  # the registry, restored after
    models.register_block("gated_residual", models.Block(gated_residual, gated=True))
    kwargs = dict(arch="gated_residual", depth=4, width=32)
    ds = data.digits()
    module = bnnx.MLP(64, 10, ops="rev", rngs=nnx.Rngs(0), **kwargs)
    assert sorted(bnnx.to_params(module)["blocks"]) == ["W", "W_T", "b", "b_T"]
    x = jnp.asarray(ds.x_test[:8])
    assert _rel(models.MLP(**kwargs).apply(bnnx.to_params(module), x), module(x)) <= 1e-6
    nnx_acc = bnnx.train(module, ds, steps=150, eval_every=150, seed=0)[-1]
    pure = train.train(models.MLP(**kwargs), ds, steps=150, eval_every=150, seed=0)
    assert nnx_acc >= 0.85 and pure.test_acc[-1] >= 0.85


def test_mlp_takes_exactly_the_config_fields():
    model = bnnx.MLP(3, 2, arch="dense", depth=3, width=4, dense_cap=2, rngs=nnx.Rngs(0))
    assert model.config == models.MLP(arch="dense", depth=3, width=4, dense_cap=2)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['widht'\].*arch, depth, width"):
        bnnx.MLP(3, 2, widht=4, rngs=nnx.Rngs(0))
