"""MLP architectures: gradients through every namespace, semantics of each skip, errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import fwd, grads, models, ref, rev
from bpjax.models import _blocks


def _setup(model, seed=0, batch=6, d_in=5, d_out=3):
    key = jax.random.key(seed)
    params = model.init(key, d_in, d_out)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, d_in), model.dtype)
    y = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, d_out)
    return params, x, y


def _max_rel(got, want):
    return max(
        float(jnp.max(jnp.abs(g - w)) / (jnp.max(jnp.abs(w)) + 1e-300))
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    )


@pytest.mark.parametrize("arch", models.ARCHS)
@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_every_arch_rev_and_fwd_gradients_equal_ref(arch, activation):
    model = models.MLP(arch=arch, depth=4, width=7, activation=activation, dtype=jnp.float64)
    params, x, y = _setup(model)

    def grad(ops):
        return jax.jit(jax.grad(lambda p, x, y: model.loss(p, x, y, ops=ops)))(params, x, y)

    want = grad(ref)
    for ops in (rev, fwd):
        assert _max_rel(grad(ops), want) <= 1e-10


def test_shapes_and_depth_one_has_no_blocks():
    for depth in (1, 2, 9):
        model = models.MLP(arch="highway", depth=depth, width=8)
        params, x, _ = _setup(model)
        assert params["blocks"]["W"].shape == (depth - 1, 8, 8)
        assert model.apply(params, x).shape == (6, 3)
    assert len(grads.layer_names(9)) == 10


def test_residual_with_zero_branch_scale_is_the_depth_one_network():
    deep = models.MLP(arch="residual", depth=6, width=8, branch_scale=0.0, dtype=jnp.float64)
    params, x, _ = _setup(deep)
    shallow = dataclasses.replace(deep, depth=1)
    shallow_params = {**params, "blocks": jax.tree.map(lambda a: a[:0], params["blocks"])}
    np.testing.assert_allclose(deep.apply(params, x), shallow.apply(shallow_params, x), rtol=1e-14)
    assert models.MLP(arch="residual", depth=16).alpha == 0.25


def test_highway_with_a_closed_gate_carries_its_input_through():
    closed = models.MLP(arch="highway", depth=5, width=8, gate_bias=-60.0, dtype=jnp.float64)
    params, x, _ = _setup(closed)
    shallow = dataclasses.replace(closed, depth=1)
    shallow_params = {**params, "blocks": jax.tree.map(lambda a: a[:0], params["blocks"])}
    np.testing.assert_allclose(
        closed.apply(params, x), shallow.apply(shallow_params, x), rtol=1e-12
    )


def test_dense_with_a_full_window_equals_an_explicit_densenet():
    model = models.MLP(arch="dense", depth=4, width=3, dense_cap=10, dtype=jnp.float64)
    assert model.window == 4
    params, x, _ = _setup(model)
    act = jax.nn.relu
    hs = [act(x @ params["stem"]["W"] + params["stem"]["b"])]
    for i in range(3):
        W, b = params["blocks"]["W"][i], params["blocks"]["b"][i]
        seen = jnp.concatenate(hs[::-1], axis=-1)  # newest first, as the model orders them
        hs.append(act(seen @ W[: seen.shape[-1]] + b))
    want = jnp.concatenate(hs[::-1], axis=-1) @ params["out"]["W"] + params["out"]["b"]
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-12)


def test_dense_weights_on_padding_slots_get_no_gradient():
    model = models.MLP(arch="dense", depth=4, width=3, dense_cap=4, dtype=jnp.float64)
    params, x, y = _setup(model)
    g = jax.grad(model.loss)(params, x, y)["blocks"]["W"]
    # Block 1 sees [h1, 0, 0, 0]: rows 3: of its weight multiply zeros.
    assert float(jnp.max(jnp.abs(g[0, 3:]))) == 0.0
    assert float(jnp.max(jnp.abs(g[0, :3]))) > 0.0


def test_sigmoid_plain_gradients_vanish_at_depth_16_and_residual_ones_do_not():
    x_key, y_key = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(x_key, (128, 64))
    y = jax.random.randint(y_key, (128,), 0, 10)
    ratios = {}
    for arch in ("plain", "residual"):
        model = models.MLP(
            arch=arch, depth=16, width=64, activation="sigmoid", weight_init="xavier"
        )
        params = model.init(jax.random.key(1), 64, 10)
        norms = grads.layer_norms(jax.jit(jax.grad(model.loss))(params, x, y))
        ratios[arch] = float(norms[0] / norms[-2])  # first vs last hidden layer
    assert ratios["plain"] < 1e-4
    assert ratios["residual"] > 1e-3


def test_bad_config_gives_clear_errors():
    with pytest.raises(ValueError, match=r"unknown arch 'resnet'.*plain"):
        models.MLP(arch="resnet")
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'"):
        models.MLP(activation="gelu")
    with pytest.raises(ValueError, match=r"unknown weight_init 'orthogonal'"):
        models.MLP(weight_init="orthogonal")
    with pytest.raises(ValueError, match=r"depth must be an integer >= 1, got 0"):
        models.MLP(depth=0)
    model = models.MLP(depth=3, width=4)
    params = model.init(jax.random.key(0), 5, 2)
    with pytest.raises(
        ValueError, match=r"x has 6 features but the model was initialised for d_in=5"
    ):
        model.apply(params, jnp.ones((2, 6)))
    with pytest.raises(ValueError, match=r"\['W'\].shape=\(2, 4, 4\) but depth=5"):
        dataclasses.replace(model, depth=5).apply(params, jnp.ones((2, 5)))


def _gated_residual(state, *, affine, act, gate, alpha):
    return state + alpha * gate(state) * act(affine(state))


@pytest.fixture
def gated_residual(monkeypatch):
    """A fifth block, registered from outside the package for one test."""
    monkeypatch.setattr(_blocks, "BLOCKS", dict(_blocks.BLOCKS))  # the registry, restored after
    models.register_block("gated_residual", models.Block(_gated_residual, gated=True))
    return "gated_residual"


def test_a_registered_block_runs_its_formula_with_its_gate(gated_residual):
    model = models.MLP(arch=gated_residual, depth=4, width=5, dtype=jnp.float64)
    params, x, y = _setup(model)
    assert sorted(params["blocks"]) == ["W", "W_T", "b", "b_T"]
    np.testing.assert_array_equal(params["blocks"]["b_T"], model.gate_bias)
    p = params["blocks"]
    h = jax.nn.relu(x @ params["stem"]["W"] + params["stem"]["b"])
    for i in range(3):
        t = jax.nn.sigmoid(h @ p["W_T"][i] + p["b_T"][i])
        h = h + model.alpha * t * jax.nn.relu(h @ p["W"][i] + p["b"][i])
    want = h @ params["out"]["W"] + params["out"]["b"]
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-12)

    @jax.jit  # one compilation for the three gradients instead of op-by-op dispatch
    def grads(params):
        return [
            jax.grad(lambda p, ops=ops: model.loss(p, x, y, ops=ops))(params)
            for ops in (ref, rev, fwd)
        ]

    want, *got = grads(params)
    for g in got:
        assert _max_rel(g, want) <= 1e-10


def test_registry_errors_say_what_is_registered_and_how_to_register(gated_residual):
    with pytest.raises(
        ValueError, match=r"unknown arch 'resnet'.*'gated_residual'.*register_block"
    ):
        models.MLP(arch="resnet")
    with pytest.raises(ValueError, match="registered already; pass replace=True"):
        models.register_block("plain", models.Block(_gated_residual))
    with pytest.raises(TypeError, match="must be a bpjax.models.Block"):
        models.register_block("mine", _gated_residual)
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        models.block("resnet", jnp.ones(3), affine=jnp.sin, act=jnp.sin)


def test_check_params_wants_what_init_makes():
    plain, highway = models.MLP(depth=3, width=4), models.MLP(arch="highway", depth=3, width=4)
    for model in (plain, highway, models.MLP(arch="dense", depth=3, width=4, dense_cap=2)):
        model.check_params(model.init(jax.random.key(0), 5, 2))
    with pytest.raises(ValueError, match=r"has keys \['W', 'b'\] but arch='highway' needs"):
        highway.check_params(plain.init(jax.random.key(0), 5, 2))
    dense = models.MLP(arch="dense", depth=3, width=4, dense_cap=2)
    with pytest.raises(ValueError, match=r"\['W'\].shape=\(2, 4, 4\) but .* need \(2, 8, 4\)"):
        dense.check_params(plain.init(jax.random.key(0), 5, 2))


def test_a_bool_is_not_an_integer_option():
    for field in ("depth", "width", "dense_cap"):
        with pytest.raises(ValueError, match=rf"MLP: {field} must be an integer >= 1, got True"):
            models.MLP(**{field: True})
    with pytest.raises(ValueError, match="gain must be a positive finite number, got True"):
        models.MLP(gain=True)
    with pytest.raises(ValueError, match="MLP.init: d_out must be an integer >= 1, got False"):
        models.MLP().init(jax.random.key(0), 3, False)
    assert models.MLP(depth=np.int64(3), width=np.int32(4)).init(jax.random.key(0), 2, 2)
