"""Rematerialization: same gradients whichever strategy, counted recomputation, real savings."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import brute_force_advances
from jax.ad_checkpoint import checkpoint_name

from bpjax import models, remat
from bpjax.remat import _policy

STRATEGIES = [
    "none",
    "every",
    "sqrt",
    "nested",
    remat.Nested(4),
    "binomial",
    remat.Binomial(1),
    "dots",
    remat.names("pre"),
    remat.offload("pre"),
]


def _layer(p, x):
    return jnp.tanh(checkpoint_name(x @ p["W"] + p["b"], "pre"))


def _problem(n_layers, batch=4, width=6, dtype=jnp.float64, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = {
        "W": (jax.random.normal(k1, (n_layers, width, width)) / math.sqrt(width)).astype(dtype),
        "b": (0.1 * jax.random.normal(k2, (n_layers, width))).astype(dtype),
    }
    return params, jax.random.normal(k3, (batch, width)).astype(dtype)


def _unrolled_loss(params, x):
    for i in range(params["W"].shape[0]):
        x = _layer(jax.tree.map(lambda a, i=i: a[i], params), x)
    return jnp.sum(x)


def _name(strategy):
    return remat.resolve(strategy).name


def _assert_trees_close(got, want, rtol=1e-12, atol=1e-14, msg=""):
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=msg)


# --- The revolve schedule -----------------------------------------------------------------


@pytest.mark.parametrize("checkpoints", [1, 2, 3, 4, 6])
def test_revolve_schedule_is_optimal_and_reverses_every_step_once(checkpoints):
    for n in range(1, 41):
        events = remat.revolve(n, checkpoints)
        advances = remat.schedule_advances(events)
        best = remat.optimal_advances(n, checkpoints)
        assert advances == brute_force_advances(n, checkpoints) == best
        assert [e[1] for e in events if e[0] == "turn"] == list(reversed(range(n)))
        assert all(e[1] < checkpoints for e in events if e[0] in ("store", "restore"))
        # No step is advanced more often than revolve's repetition number allows.
        advanced = np.zeros(n, int)
        for e in events:
            if e[0] == "advance":
                advanced[e[1] : e[2]] += 1
        assert advanced.max(initial=0) <= remat.repetitions(n, checkpoints)


def test_binomial_counts_follow_griewanks_formula():
    # β(c, r) = C(c + r, c); t(L, 1) = L(L - 1)/2; L = β(c, r) exactly uses r repetitions.
    assert remat.beta(3, 2) == 10
    assert remat.optimal_advances(10, 1) == 45
    assert remat.repetitions(remat.beta(5, 3), 5) == 3
    assert remat.repetitions(remat.beta(5, 3) + 1, 5) == 4
    assert remat.optimal_advances(1024, 10) == 5 * 1024 - math.comb(15, 4)


# --- Gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_layers, strategies", [(13, STRATEGIES), (1, ["sqrt", "nested", "binomial"])]
)
def test_every_strategy_gives_the_unrolled_gradient_in_float64(n_layers, strategies):
    params, x = _problem(n_layers)
    want = jax.grad(_unrolled_loss, argnums=(0, 1))(params, x)
    for strategy in strategies:
        got = jax.jit(functools.partial(remat.gradient, _layer, strategy=strategy))(params, x)
        _assert_trees_close(got, want, msg=_name(strategy))


@pytest.mark.parametrize(
    "n_layers, chunks",
    [(7, (3,)), (7, (9,)), (13, (4, 3)), (16, (8, 4, 2))],
)
def test_nested_gives_the_gradient_of_none_for_any_segments(n_layers, chunks):
    """Tails, one segment, segments longer than L, and inner tails: all the same gradient."""
    params, x = _problem(n_layers, seed=n_layers)
    want = remat.gradient(_layer, params, x, strategy="none")
    strategy = remat.Nested(len(chunks) + 1)
    loss = lambda p, h: jnp.sum(strategy.run(chunks, _layer, p, h))  # noqa: E731
    _assert_trees_close(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x), want, msg=str(chunks))


def test_integer_layer_params_and_closures_get_no_gradient_under_every_strategy():
    """Integer leaves (an index per layer, a closed-over integer table) ride along: their
    cotangent is float0 as jax.vjp gives it, and the float gradients equal the unrolled ones.
    Nested and binomial carried JAX's float0 cotangents through scan/cond and failed."""
    params, x = _problem(9)
    params = {**params, "shift": jnp.arange(9, dtype=jnp.int32)}
    table = jnp.arange(3, dtype=jnp.int32)

    def layer(p, h):
        return _layer({k: v for k, v in p.items() if k != "shift"}, h) + 1e-3 * (
            p["shift"] + table[p["shift"] % 3]
        ).astype(h.dtype)

    def unrolled(p, h):
        for i in range(9):
            h = layer(jax.tree.map(lambda a, i=i: a[i], p), h)
        return jnp.sum(h**2)

    want = jax.grad(unrolled, argnums=(0, 1), allow_int=True)(params, x)
    for strategy in STRATEGIES:
        loss = lambda p, h, s=strategy: jnp.sum(remat.stack(layer, p, h, strategy=s) ** 2)  # noqa: E731
        got = jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))(params, x)
        assert got[0]["shift"].dtype == jax.dtypes.float0, _name(strategy)
        drop = lambda g: ({k: v for k, v in g[0].items() if k != "shift"}, g[1])  # noqa: E731
        _assert_trees_close(drop(got), drop(want), msg=_name(strategy))


def test_every_strategy_agrees_in_float32():
    params, x = _problem(37, batch=8, width=16, dtype=jnp.float32)
    want = jax.jit(functools.partial(remat.gradient, _layer, strategy="none"))(params, x)
    for strategy in ["nested", "binomial"]:
        got = jax.jit(functools.partial(remat.gradient, _layer, strategy=strategy))(params, x)
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            assert float(jnp.max(jnp.abs(b - a)) / jnp.max(jnp.abs(a))) <= 1e-6, _name(strategy)


def test_the_gradient_matches_central_differences_in_float64():
    params, x = _problem(9)
    _, dx = jax.jit(functools.partial(remat.gradient, _layer, strategy="binomial"))(params, x)
    direction = jax.random.normal(jax.random.key(7), x.shape, jnp.float64)
    eps = 1e-6
    loss = jax.jit(functools.partial(_unrolled_loss, params))
    fd = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(dx, direction), fd, rtol=1e-8)


def _scaled_loss(scale, params, x, strategy):
    layer = lambda p, h: jnp.tanh(scale * h @ p["W"] + p["b"])  # noqa: E731
    return jnp.sum(remat.stack(layer, params, x, strategy=strategy))


def test_a_layer_that_closes_over_a_traced_value_gets_its_gradient_too():
    """The scale is differentiated through a closure: custom-VJP strategies must return it."""
    params, x = _problem(9)
    grad = jax.jit(jax.grad(_scaled_loss, argnums=(0, 1, 2)), static_argnums=3)
    want = grad(0.7, params, x, "none")
    for strategy in ["nested", remat.Nested(4), "binomial", remat.Binomial(1)]:
        _assert_trees_close(grad(0.7, params, x, strategy), want, msg=_name(strategy))
    # Eagerly too (no jit around the closure), as in the report.
    eager = jax.grad(_scaled_loss)(0.7, params, x, "binomial")
    np.testing.assert_allclose(eager, want[0], rtol=1e-12)


def test_nested_supports_grad_of_grad():
    params, x = _problem(4)
    second = jax.jit(jax.grad(jax.grad(_scaled_loss)), static_argnums=3)
    np.testing.assert_allclose(
        second(0.7, params, x, "nested"), second(0.7, params, x, "none"), rtol=1e-12
    )


# --- Recomputation, counted ---------------------------------------------------------------


def test_counted_layer_evaluations_match_theory_exactly():
    n_layers = 13  # prime: every nested level has a tail
    params, x = _problem(n_layers)
    sizes = remat.layer_bytes(_layer, params, x)
    counted = {}
    for strategy in ["none", "every", "sqrt", "nested", remat.Nested(4), "binomial", "dots"]:
        counted[_name(strategy)] = remat.count_evaluations(_layer, params, x, strategy=strategy)
        assert counted[_name(strategy)] == remat.evaluations(strategy, n_layers, sizes), counted
    for c in (1, 3):
        count = remat.count_evaluations(_layer, params, x, strategy=remat.Binomial(c))
        assert count == remat.optimal_advances(n_layers, c) + n_layers + 1
    assert counted["none"] == n_layers
    assert counted["every"] == counted["sqrt"] == counted["dots"] == 2 * n_layers
    # Each level adds at most one evaluation per layer; the last segment of each parent is
    # never swept forward, so three levels cost less than 3L.
    assert 2 * n_layers < counted["nested3"] < 3 * n_layers
    assert counted["nested3"] < counted["nested4"] <= 4 * n_layers


def test_nested_evaluations_follow_the_segments():
    """L = 16 in segments of 4, then 2: 16 evaluations forward, then per top segment 4 − 2 to
    sweep its sub-segments (the last one never runs forward) and 4 in the innermost VJPs."""
    params, x = _problem(16)
    calls = []

    def counting(p, h):
        jax.debug.callback(lambda _: calls.append(1), h[0, 0])
        return _layer(p, h)

    strategy = remat.Nested(3)
    run = jax.jit(jax.grad(lambda p: jnp.sum(strategy.run((4, 2), counting, p, x))))
    jax.block_until_ready(run(params))
    assert len(calls) == 16 + 4 * ((4 - 2) + 4)
    sizes = remat.LayerBytes(state=4, residual=4, params=1)
    assert remat.segment_sizes(16, 3, sizes) == [4, 2]
    assert remat.evaluations(strategy, 16, sizes) == len(calls)


# --- Memory -------------------------------------------------------------------------------


def _specs(n_layers, batch, width):
    params = {
        "W": jax.ShapeDtypeStruct((n_layers, width, width), jnp.float32),
        "b": jax.ShapeDtypeStruct((n_layers, width), jnp.float32),
    }
    return params, jax.ShapeDtypeStruct((batch, width), jnp.float32)


@functools.cache
def _temp(strategy, n_layers, batch=256, width=128):
    return remat.measure_memory(
        _layer, *_specs(n_layers, batch, width), strategy=strategy, run=False
    )


# State bytes each strategy adds per layer for tanh(x W + b): "none" keeps what JAX's own
# linearization of the layer keeps (the input and tanh's derivative factors: 1 - t and
# 1 + t up to jax 0.10, one_minus_square(t) from 0.11 on), read from its jaxpr below;
# "every" only the input; the policies also the matmul output.
PER_LAYER_STATES = {
    "none": None,
    "every": 1,
    "dots": 2,
    remat.names("pre"): 2,
    remat.offload("pre"): 2,
}


@pytest.mark.parametrize("strategy", list(PER_LAYER_STATES), ids=_name)
def test_compiled_memory_per_layer_is_what_the_strategy_saves(strategy):
    """Deterministic compiled bytes: a policy that saved more (or less) than it says fails."""
    state = 8 * 16 * 4
    # 16 and 32 layers: XLA keeps a few state-sized buffers besides the per-layer ones
    # (about 4 states for "none", on jax 0.10 and 0.12 alike), which at 8 layers is over a
    # fifth of the total where JAX saves one residual fewer per layer.
    small, large = _temp(strategy, 16, 8, 16), _temp(strategy, 32, 8, 16)
    per_layer = (large.compiled_temp - small.compiled_temp) / 16
    states = PER_LAYER_STATES[strategy]
    if states is None:
        states = remat.layer_bytes(_layer, *_specs(4, 8, 16)).residual / state
    assert per_layer == states * state, (_name(strategy), per_layer)
    for m in (small, large):
        assert 0.9 <= m.compiled_temp / m.predicted <= 1.25, (_name(strategy), m)


def test_offload_on_cpu_keeps_the_values_like_names():
    """XLA:CPU has a pinned_host memory space, but it is the device's memory: nothing moves."""
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU behaviour of offload")
    offloaded, kept = _temp(remat.offload("pre"), 8, 8, 16), _temp(remat.names("pre"), 8, 8, 16)
    assert offloaded.compiled_temp == kept.compiled_temp
    assert offloaded.predicted == kept.predicted


def test_offload_refuses_a_backend_without_host_memory(monkeypatch):
    params, x = _problem(4)
    monkeypatch.setattr(_policy, "host_memory_kinds", lambda: {"device"})
    with pytest.raises(ValueError, match="no 'pinned_host' memory to offload to"):
        remat.stack(_layer, params, x, strategy=remat.offload("pre"))


def test_compiled_memory_really_falls_at_depth_1024():
    """L=1024, batch 256, width 128, tanh, float32, on this backend."""
    m = {name: _temp(s, 1024) for name, s in [("none", "none"), ("sqrt", "sqrt")]}
    m["binomial"] = _temp(remat.Binomial(10), 1024)
    assert m["sqrt"].compiled_temp * 20 <= m["none"].compiled_temp
    assert m["binomial"].compiled_temp < m["sqrt"].compiled_temp
    # Binomial with c = 10 <= 2 log2(L) stores c slots and the live state (the jaxpr says so).
    state = 256 * 128 * 4
    assert m["binomial"].jaxpr_residuals <= (10 + 2) * state
    for name, meas in m.items():
        ratio = meas.compiled_temp / meas.predicted
        assert 0.9 <= ratio <= 1.3, (name, ratio)


def test_no_strategy_saves_copies_of_the_weights():
    params, x = _specs(64, 64, 128)
    for strategy in ["none", "every", "sqrt", "nested", remat.Nested(4), "binomial", "dots"]:
        saved = remat.residuals(remat.stack_loss(_layer, strategy=strategy), params, x)
        weights = [r for r in saved if r["shape"][-2:] == (128, 128)]
        # The stacked weights may be kept as they are or as a free reshape, never computed.
        assert all(r["source"] != "computed" for r in weights), (_name(strategy), weights)


def _slope(strategy, depths, batch, width):
    temps = [_temp(strategy, n, batch, width).compiled_temp for n in depths]
    return np.polyfit(np.log(depths), np.log(temps), 1)[0]


def test_memory_scales_linearly_without_remat_and_as_sqrt_with_it():
    depths = [16, 128, 1024]
    slopes = {s: _slope(s, depths, 256, 128) for s in ["none", "sqrt"]}
    assert 0.9 <= slopes["none"] <= 1.1, slopes
    assert 0.4 <= slopes["sqrt"] <= 0.6, slopes


def test_nested_levels_beat_sqrt_at_depth_1024():
    """Without a staged gradient per segment, each level really saves: 3 levels < sqrt / 2."""
    sqrt, nested3, nested4 = (_temp(s, 1024) for s in ["sqrt", "nested", remat.Nested(4)])
    assert nested3.compiled_temp * 2 <= sqrt.compiled_temp
    assert nested4.compiled_temp < nested3.compiled_temp
    for m in (nested3, nested4):
        assert 1.0 <= m.compiled_temp / m.predicted <= 1.3, m


@pytest.mark.slow
def test_nested_memory_scales_as_the_kth_root_of_depth():
    """Nested(k) keeps ≈ k·L^(1/k) states: log-log slope 1/k over L = 16…1024 (no √L floor)."""
    depths = [16, 64, 256, 1024]
    for levels in (3, 4):
        got = _slope(remat.Nested(levels), depths, 256, 128)
        assert abs(got - 1 / levels) <= 0.05, (levels, got)
    for n in depths:
        for levels in (3, 4):
            m = _temp(remat.Nested(levels), n)
            assert 0.75 <= m.compiled_temp / m.predicted <= 1.3, m


# --- Planning once ------------------------------------------------------------------------


def test_the_decision_is_made_once_per_layer_and_shapes(monkeypatch):
    calls = []
    decide = remat.Nested.decide

    def counting(self, n_layers, layer):
        calls.append(n_layers)
        return decide(self, n_layers, layer)

    monkeypatch.setattr(remat.Nested, "decide", counting)
    params, x = _problem(11, batch=3, width=5)
    grad = functools.partial(remat.gradient, _layer, strategy=remat.Nested(3))
    jax.make_jaxpr(grad)(params, x)
    jax.make_jaxpr(grad)(params, x)  # a second trace at the same shapes
    assert calls == [11]
    jax.make_jaxpr(grad)(params, x[:2])  # new shapes, new decision
    assert calls == [11, 11]
    # A model builds its layer anew on every trace; the decision still holds.
    model = models.MLP(arch="residual", depth=7, width=9, checkpoint=remat.Nested(3))
    p = jax.eval_shape(lambda: model.init(jax.random.key(0), 4, 3))
    for _ in range(2):
        jax.make_jaxpr(jax.grad(model.loss))(p, jnp.ones((5, 4)), jnp.zeros(5, int))
    assert calls == [11, 11, 6]


def test_a_prepared_runner_is_reusable_and_checks_its_shapes():
    params, x = _problem(16)
    runner = remat.prepare(_layer, params, x, strategy="nested")
    assert runner.decision == tuple(
        remat.segment_sizes(16, 3, remat.layer_bytes(_layer, params, x))
    )
    np.testing.assert_allclose(runner(params, x), remat.stack(_layer, params, x, strategy="none"))
    with pytest.raises(ValueError, match="call remat.prepare again"):
        runner(params, x[:2])


class _Pairs(remat.Strategy):
    """A strategy defined outside the package: checkpoint every pair of layers (L even)."""

    name = "pairs"

    def run(self, decision, layer, params, x):
        del decision
        pairs = jax.tree.map(lambda a: a.reshape(-1, 2, *a.shape[1:]), params)

        def body(h, p):
            h = layer(jax.tree.map(lambda a: a[0], p), h)
            return layer(jax.tree.map(lambda a: a[1], p), h), None

        return jax.lax.scan(jax.checkpoint(body), x, pairs)[0]

    def evaluations(self, n_layers, sizes):
        return 2 * n_layers

    def predict_bytes(self, n_layers, sizes):
        return n_layers // 2 * sizes.state + 2 * sizes.residual + sizes.params


def test_a_new_strategy_is_one_class_and_everything_else_works_with_it():
    params, x = _problem(8)
    want = remat.gradient(_layer, params, x, strategy="none")
    _assert_trees_close(
        jax.jit(functools.partial(remat.gradient, _layer, strategy=_Pairs()))(params, x), want
    )
    assert remat.count_evaluations(_layer, params, x, strategy=_Pairs()) == 16
    small, large = _temp(_Pairs(), 16, 8, 16), _temp(_Pairs(), 32, 8, 16)
    assert small.strategy == "pairs"
    # One checkpoint per pair: half a state per layer, exactly.
    assert (large.compiled_temp - small.compiled_temp) / 16 == 8 * 16 * 4 / 2


# --- Planning -----------------------------------------------------------------------------


def test_plan_never_exceeds_the_budget_and_prefers_speed():
    params, x = _specs(64, 64, 128)
    full = _temp("none", 64, 64, 128).compiled_temp
    generous = remat.plan(_layer, params, x, budget_bytes=2 * full)
    assert generous.strategy == remat.StoreAll()
    chosen = set()
    for fraction in [0.5, 0.25, 0.1, 0.075]:
        budget = int(full * fraction)
        result = remat.plan(_layer, params, x, budget_bytes=budget)
        assert result.compiled_bytes == _temp(result.strategy, 64, 64, 128).compiled_temp
        assert result.compiled_bytes <= budget, (fraction, str(result))
        chosen.add(result.strategy.name)
    assert len(chosen) >= 3, chosen  # the sweep really moves through strategies
    with pytest.raises(ValueError, match="no strategy fits budget_bytes"):
        remat.plan(_layer, params, x, budget_bytes=1000)


# --- Errors -------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    params, x = _problem(4)
    with pytest.raises(ValueError, match="unknown remat strategy 'sqr'"):
        remat.stack(_layer, params, x, strategy="sqr")
    ragged = {"W": params["W"], "b": params["b"][:3]}
    with pytest.raises(ValueError, match="same length L"):
        remat.stack(_layer, ragged, x)
    with pytest.raises(ValueError, match="shaped like x"):
        remat.stack(lambda p, h: h[:, :2], params, x)
    with pytest.raises(ValueError, match="levels must be an int >= 2"):
        remat.Nested(1)
    with pytest.raises(ValueError, match="checkpoints must be"):
        remat.Binomial(0)
    with pytest.raises(ValueError, match="budget_bytes must be a positive int"):
        remat.plan(_layer, params, x, budget_bytes=-5)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: remat.repetitions(10, 0), ValueError, "checkpoints must be an int >= 1"),
        (lambda: remat.optimal_advances(10, 0), ValueError, "checkpoints must be an int >= 1"),
        (lambda: remat.repetitions(10, -1), ValueError, "checkpoints must be an int >= 1"),
        (lambda: remat.revolve(-3, 2), ValueError, "n_steps must be an int >= 0"),
        # Not an int at all: a TypeError, as online_evaluations and while_loop say it.
        (lambda: remat.revolve(10, True), TypeError, "checkpoints must be an int >= 1"),
        (lambda: remat.online_evaluations(10, 0), ValueError, "checkpoints must be an int >= 1"),
        (lambda: remat.optimal_advances(2.5, 2), ValueError, "n_steps must be an int >= 0"),
        (lambda: remat.segment_sizes(0, 2), ValueError, "n_layers must be an int >= 1"),
        (lambda: remat.segment_sizes(-3, 2), ValueError, "n_layers must be an int >= 1"),
        (lambda: remat.segment_sizes(8, 0), ValueError, "levels must be an int >= 1"),
        (lambda: remat.evaluations("sqrt", -4), ValueError, "n_layers must be an int >= 1"),
    ],
)
def test_the_counting_helpers_refuse_counts_they_cannot_mean(call, error, match):
    # repetitions(10, 0) looped forever (beta(0, r) = 1 for every r).
    with pytest.raises(error, match=match):
        call()


def test_per_layer_params_integer_states_and_lists_get_the_fix():
    """A list of per-layer dicts failed inside the user's layer ("list indices must be
    integers"); an integer x blamed the layer; a Python list x raised AttributeError."""
    params, x = _problem(3)
    layers = [jax.tree.map(lambda a, i=i: a[i], params) for i in range(3)]
    with pytest.raises(TypeError, match=r"list of 3 per-layer pytrees: .*jnp.stack"):
        remat.stack(_layer, layers, x)
    with pytest.raises(ValueError, match="x is int32: cast it to a float dtype"):
        remat.stack(_layer, params, x.astype(jnp.int32))
    with pytest.raises(TypeError, match=r"pass jnp.asarray\(x\)"):
        remat.stack(_layer, params, x.tolist())


def test_a_bool_budget_is_not_one_byte():
    params, x = _problem(4)
    with pytest.raises(ValueError, match="budget_bytes must be a positive int, got True"):
        remat.plan(_layer, params, x, budget_bytes=True)


def test_a_misspelt_checkpoint_name_is_refused_with_the_layers_names():
    params, x = _problem(4)
    for strategy in (remat.names("typo"), remat.names("pre", "typo"), remat.offload("typo")):
        with pytest.raises(ValueError, match=r"checkpoint_name \['typo'\].*are \['pre'\]"):
            remat.stack(_layer, params, x, strategy=strategy)
    with pytest.raises(ValueError, match="its checkpoint_names are none"):
        remat.stack(lambda p, h: jnp.tanh(h @ p["W"]), params, x, strategy=remat.names("pre"))


@pytest.mark.parametrize("arch", ["residual", "dense"])  # a plain and a tuple-valued state
def test_mlp_blocks_run_under_any_strategy_with_the_same_gradient(arch):
    import dataclasses

    model = models.MLP(arch=arch, depth=10, width=8, activation="tanh", dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (6, 5), jnp.float64)
    y = jnp.arange(6) % 3
    params = model.init(jax.random.key(2), 5, 3)
    want = jax.jit(jax.grad(model.loss))(params, x, y)
    for strategy in ["nested", "binomial"]:
        got = jax.jit(jax.grad(dataclasses.replace(model, checkpoint=strategy).loss))(params, x, y)
        _assert_trees_close(got, want, msg=strategy)
    with pytest.raises(ValueError, match="unknown remat strategy"):
        models.MLP(checkpoint="all")


def test_forward_mode_through_a_custom_vjp_strategy_names_the_ones_that_have_it():
    """jax.jvp through "binomial" or "sqrt" raised JAX's bare "can't apply forward-mode
    autodiff (jvp) to a custom_vjp function", naming neither the strategy nor the fix."""
    params, x = _problem(4)
    for name in ("binomial", "sqrt"):
        with pytest.raises(TypeError, match=rf"strategy '{name}' .*\['none', 'every', 'dots'\]"):
            jax.jvp(lambda x, name=name: remat.stack(_layer, params, x, strategy=name), (x,), (x,))
    # A strategy with forward mode, and a layer with a custom_vjp of its own under it: JAX's
    # error, not one blaming the strategy.
    out, _ = jax.jvp(lambda x: remat.stack(_layer, params, x, strategy="every"), (x,), (x,))
    assert out.shape == x.shape

    @jax.custom_vjp
    def ident(v):
        return v

    ident.defvjp(lambda v: (v, None), lambda _, g: (g,))
    with pytest.raises(TypeError, match="^can't apply forward-mode"):
        jax.jvp(
            lambda x: remat.stack(lambda p, v: ident(_layer(p, v)), params, x, strategy="every"),
            (x,),
            (x,),
        )
