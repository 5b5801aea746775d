"""remat.while_loop: gradients of loops of unknown length, against lax.scan and the schedule."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import brute_force_advances
from jax import lax

from bpjax import remat
from bpjax.remat import _online, _while_forward, _while_step
from bpjax.remat._linear import ReverseOverReverseError
from bpjax.remat._revolve import beta, optimal_advances, repetitions, revolve

WIDTH = 4


def _weights(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (WIDTH, WIDTH)) / np.sqrt(WIDTH), jax.random.normal(k2, (WIDTH,))


def _step(w, a, state):
    """One step of a pytree state: a tanh map on x, a decaying scalar, an int counter."""
    return {
        "x": jnp.tanh(state["x"] @ w * a + 0.1 * state["y"]),
        "y": 0.9 * state["y"] + 0.01 * jnp.sum(state["x"]),
        "i": state["i"] + 1,
    }


def _init(x0, y0=0.5):
    return {"x": x0, "y": jnp.asarray(y0), "i": jnp.int32(0)}


def _loss(state):
    return jnp.sum(jnp.sin(state["x"])) + state["y"] ** 2


def _online_loss(w, a, x0, n_steps, checkpoints):
    # The trip count comes from the state (i < n), so the loop does not know it in advance;
    # w and a are closed over (traced when differentiated).
    out = remat.while_loop(
        lambda s: s["i"] < n_steps,
        functools.partial(_step, w, a),
        _init(x0),
        checkpoints=checkpoints,
    )
    return _loss(out)


def _scan_loss(w, a, x0, n_steps):
    out = lax.scan(lambda s, _: (_step(w, a, s), None), _init(x0), None, length=n_steps)[0]
    return _loss(out)


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# --- The schedule, apart from JAX -------------------------------------------------------------


@pytest.mark.parametrize("c", range(1, 7))
def test_optimal_up_to_beta_c_2(c):
    """Every L ≤ (c+1)(c+2)/2: forward steps equal t(L, c), the brute-force optimum."""
    for n in range(beta(c, 2) + 1):
        assert _online.online_advances(n, c) == optimal_advances(n, c) == brute_force_advances(n, c)
        assert remat.online_evaluations(n, c) == _online.offline_evaluations(n, c)


@pytest.mark.parametrize("c", range(1, 7))
def test_repetition_number_optimal_beyond(c):
    """Every L to β(c, 4): no step evaluated more than r(L, c) times, hence ≤ r·(L−1) steps."""
    for n in range(2, beta(c, 4) + 1):
        r = repetitions(n, c)
        assert _online.repetition_number(n, c) == r
        assert optimal_advances(n, c) <= _online.online_advances(n, c) <= r * (n - 1)
    # Past β(c, 2) the placement is not optimal at every L (no online one can be).
    assert (
        any(
            _online.online_advances(n, c) > optimal_advances(n, c)
            for n in range(beta(c, 2) + 1, beta(c, 3) + 1)
        )
        or c == 1
    )


@pytest.mark.parametrize("c", [2, 3, 5])
def test_phases_end_at_the_tight_revolve_cut(c):
    """At L = β(c, λ+1) the segments are exactly β(c − i, λ): revolve's own first sweep."""
    for lam in (1, 2, 3):
        n = beta(c, lam + 1)
        cuts = [*remat.online_checkpoints(n, c), n - 1]
        assert [b - a for a, b in zip(cuts, cuts[1:], strict=False)] == [
            beta(c - i, lam) for i in range(c)
        ]


def test_checkpoints_examples():
    assert remat.online_checkpoints(0, 3) == remat.online_checkpoints(1, 3) == ()
    assert remat.online_checkpoints(4, 3) == (0, 1, 2)  # L ≤ c + 1: every state kept
    assert remat.online_checkpoints(10, 3) == (0, 4, 7)
    assert remat.online_checkpoints(100, 1) == (0,)


def test_split_matches_revolve():
    """The jnp split equals the first checkpoint revolve places for n steps and c slots."""
    split = jax.jit(jax.vmap(_online.split))
    cases = [(n, c) for c in (2, 3, 4, 7) for n in range(2, 80)]
    got = split(*(jnp.asarray(v, jnp.int32) for v in zip(*cases, strict=True)))
    for (n, c), m in zip(cases, got.tolist(), strict=True):
        events = revolve(n, c)
        stores = [i for i, e in enumerate(events) if e[0] == "store"]
        if stores:
            assert m == events[stores[0] - 1][2], (n, c)


def _reference_trajectory(c, n_steps):
    """The stored steps after each step, by the plain rule (_place_py, O(c) per step)."""
    positions, bounds, out = [], _online._first_bounds(c), []
    for q in range(n_steps):
        store, j, bounds = _online._place_py(q, positions, bounds, c)
        if store:
            positions = positions[:j] + positions[j + 1 :] + [q]
        out.append(tuple(positions))
    return out


@pytest.mark.parametrize("c", [*range(1, 11), 40])
def test_incremental_placer_equals_the_plain_rule(c):
    """_Placer (a resumed search over a linked list, what the loop runs) stores exactly what
    the plain rule stores, after every step: to β(c, 4) steps (3,000 at most), every phase
    change of c ≤ 8 included."""
    n_steps = min(beta(c, 4) + 5, 3000)
    placer = _online._Placer(c)
    for q, want in enumerate(_reference_trajectory(c, n_steps)):
        slot = placer.offer(q)
        assert placer.positions() == want, (c, q)
        assert (slot >= 0) == (q in want) and (slot < 0 or placer.steps[slot] == q), (c, q)


# Table only (4096 steps: every loop here shorter) is the path of every other loop in this
# file, and the table is the incremental placer's (test above): `make test-slow`.
@pytest.mark.parametrize(
    "table_steps", [0, 5, pytest.param(_while_forward.TABLE_STEPS, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("lanes", [False, True])
def test_jax_placement_equals_reference(table_steps, lanes, monkeypatch):
    """The forward loop's buffer holds exactly the steps of online_checkpoints, whether its
    decisions come from the precomputed table, the traced rule, or the table then the rule;
    and under vmap (lanes of different lengths, masked once they stop) in every lane."""
    monkeypatch.setattr(_while_forward, "table_steps", lambda c: table_steps)
    for c in (1, 2, 3, 6, 40):
        lengths = [0, 1, 2, 3, 7, 11, 28, 29, 56, 57, 100, 211]
        # c = 40: filling, phase 2 (β(40, 2) = 861) and into phase 3.
        lengths = lengths if c < 40 else [39, 41, 42, 300, 861, 862, 1500]
        _assert_forward_stores_online_checkpoints(c, lengths, lanes)


def test_placement_table_holds_every_slot_on_both_sides_of_its_int8_limit():
    """Below SMALL_C slots the table is int8; a slot number past 127 in it would wrap or
    overflow. c = 127 (the largest int8 table) and 256 (an int32 one, slots up to 255),
    filled and into evictions, from the real table."""
    for c in (_while_forward.SMALL_C - 1, 2 * _while_forward.SMALL_C):
        _assert_forward_stores_online_checkpoints(c, [c + 2, 3 * c], lanes=False)


def _assert_forward_stores_online_checkpoints(c, lengths, lanes):
    """The forward loop of a counter run ``n`` steps, for each ``n`` of ``lengths`` (as
    lanes of one vmap, or one loop each), stores exactly online_checkpoints(n, c)."""
    spec = _while_step.Spec(
        body=lambda s: s + 1,
        cond=lambda s, n: s < n,
        tree=jax.tree.structure(0),
        checkpoints=c,
        max_steps=None,
        inexact=(False,),
    )
    run = jax.jit(lambda n: _while_forward.forward(spec, (1, 0), [n, jnp.int32(0)]))
    if lanes:
        _, _, _, slot_steps, steps = jax.jit(jax.vmap(run))(jnp.asarray(lengths, jnp.int32))
    else:
        outs = [run(jnp.int32(n)) for n in lengths]
        slot_steps, steps = [o[3] for o in outs], [o[4] for o in outs]
    for n, lane_steps, lane_slots in zip(lengths, steps, slot_steps, strict=True):
        assert int(lane_steps) == n
        stored = tuple(sorted(int(s) for s in lane_slots if s >= 0))
        assert stored == remat.online_checkpoints(n, c), (n, c)


# --- Gradients against lax.scan run for the realized trip count --------------------------------


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_gradients_equal_scan_random_trip_counts(seed):
    """Trip counts 0, 1, 2 and two drawn from [3, 5000], w.r.t. weights, scale and state."""
    w, x0 = _weights(seed)
    rng = np.random.default_rng(seed)
    trips = [0, 1, 2, *rng.integers(3, 5001, size=2).tolist()]
    grad = jax.jit(jax.grad(_online_loss, argnums=(0, 1, 2)), static_argnums=(4,))
    for n in trips:
        want = jax.jit(jax.grad(_scan_loss, argnums=(0, 1, 2)), static_argnums=(3,))(w, 1.1, x0, n)
        for c in (1, 3) if n < 200 else (4,):
            got = grad(w, 1.1, x0, n, c)
            for g, r in zip(got, want, strict=True):
                assert _rel_err(g, r) <= 1e-12, (n, c)


def test_gradients_across_the_end_of_the_placement_table(monkeypatch):
    """Loops longer than the forward's precomputed table continue with the traced rule."""
    monkeypatch.setattr(_while_forward, "table_steps", lambda c: 7)
    w, x0 = _weights()
    # The trip count is traced (the loop reads it from the state, as a data-dependent bound),
    # so each c compiles once for all five lengths.
    grad = jax.jit(jax.grad(_online_loss, argnums=(0, 1, 2)), static_argnums=(4,))
    for n in (6, 7, 8, 9, 40):
        want = jax.jit(jax.grad(_scan_loss, argnums=(0, 1, 2)), static_argnums=(3,))(w, 1.1, x0, n)
        for c in (1, 3):
            for g, r in zip(grad(w, 1.1, x0, n, c), want, strict=True):
                assert _rel_err(g, r) <= 1e-12, (n, c)


# By default the weights alone and the weights with the state (each leaves an argument
# undifferentiated; the random-trip-count test differentiates all three); the scale alone
# and the state alone with `make test-slow`.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "argnums", [(0,), pytest.param((1,), marks=_SLOW), pytest.param((2,), marks=_SLOW), (0, 2)]
)
def test_gradients_wrt_some_arguments_equal_scan(argnums):
    """Only the differentiated closed-over arrays get cotangents (the others are not
    perturbed, so the reverse sweep skips their products); the values stay exact."""
    w, x0 = _weights()
    grad = jax.jit(jax.grad(_online_loss, argnums=argnums), static_argnums=(3, 4))
    want = jax.jit(jax.grad(_scan_loss, argnums=argnums), static_argnums=(3,))(w, 1.1, x0, 37)
    for g, r in zip(grad(w, 1.1, x0, 37, 3), want, strict=True):
        assert _rel_err(g, r) <= 1e-12
    # Forward mode with only the state perturbed, then only the weights.
    cases = [
        (x0, jnp.linspace(-1, 1, WIDTH), lambda loss, x: loss(w, 1.1, x)),
        (w, jnp.ones_like(w), lambda loss, v: loss(v, 1.1, x0)),
    ]
    online = functools.partial(_online_loss, n_steps=37, checkpoints=3)
    scan = functools.partial(_scan_loss, n_steps=37)
    for primal, tangent, call in cases:
        # One compilation per case instead of one per primitive of the traced loop.
        got = jax.jit(lambda p, t, call=call: jax.jvp(lambda q: call(online, q), (p,), (t,))[1])
        want = jax.jvp(lambda p, call=call: call(scan, p), (primal,), (tangent,))[1]
        assert _rel_err(got(primal, tangent), want) <= 1e-12


def test_jvp_equals_scan_jvp():
    w, x0 = _weights()
    tangents = (jnp.ones_like(w), jnp.float64(0.3), jnp.linspace(-1, 1, WIDTH))
    for n in (0, 1, 37):
        got = jax.jvp(lambda *p, n=n: _online_loss(*p, n, 3), (w, 1.1, x0), tangents)
        want = jax.jvp(lambda *p, n=n: _scan_loss(*p, n), (w, 1.1, x0), tangents)
        assert _rel_err(got[0], want[0]) <= 1e-12
        assert _rel_err(got[1], want[1]) <= 1e-12


def test_forward_semantics_equal_lax_while_loop():
    w, x0 = _weights()
    body = functools.partial(_step, w, 1.1)
    cond = lambda s: jnp.sum(s["x"] ** 2) > 0.05 * s["i"]  # noqa: E731  (data-dependent)
    want = lax.while_loop(cond, body, _init(x0))
    got = remat.while_loop(cond, body, _init(x0), checkpoints=2)
    assert int(got["i"]) == int(want["i"]) > 0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vmap_batch_of_trip_counts():
    """vmap over trip counts: each lane's gradient is the scan's for its own L."""
    w, x0 = _weights()
    trips = jnp.array([0, 5, 23])
    scan_grad = jax.jit(jax.grad(_scan_loss, argnums=(1, 2)), static_argnums=(3,))
    wants = [scan_grad(w, 1.1, x0, n) for n in trips.tolist()]
    # jit: one compilation each instead of an eager dispatch per primitive of the loops.
    online = functools.partial(_online_loss, checkpoints=3)
    got = jax.jit(jax.vmap(jax.grad(online, argnums=(1, 2)), in_axes=(None, None, None, 0)))(
        w, 1.1, x0, trips
    )
    for lane, want in enumerate(wants):
        assert _rel_err(got[0][lane], want[0]) <= 1e-12
        assert _rel_err(got[1][lane], want[1]) <= 1e-12
    # grad of a vmapped loop: the batched tangent is still transposed by the reverse sweep.
    total = lambda a: jnp.sum(  # noqa: E731
        jax.vmap(online, in_axes=(None, None, None, 0))(w, a, x0, trips)
    )
    want = sum(want[0] for want in wants)
    assert _rel_err(jax.jit(jax.grad(total))(1.1), want) <= 1e-12


def test_nested_in_scan_and_remat_stack():
    w, x0 = _weights()

    def outer(a, nest):
        def layer(p, h):
            out = remat.while_loop(
                lambda s: s["i"] < 4 + p.astype(jnp.int32),
                functools.partial(_step, w, a),
                _init(h),
                checkpoints=2,
            )
            return out["x"]

        params = jnp.arange(3.0)  # float: Binomial's skipped turn cannot zero an int slice
        if nest == "scan":
            return jnp.sum(lax.scan(lambda h, p: (layer(p, h), None), x0, params)[0])
        return jnp.sum(remat.stack(layer, params, x0, strategy=remat.Binomial(2)))

    def reference(a):
        h = x0
        for p in range(3):
            h = lax.scan(lambda s, _: (_step(w, a, s), None), _init(h), None, length=4 + p)[0]["x"]
        return jnp.sum(h)

    want = jax.grad(reference)(1.1)
    for nest in ("scan", "stack"):
        assert _rel_err(jax.grad(outer)(1.1, nest), want) <= 1e-12


@pytest.mark.slow
def test_hessian_works():
    """Forward-over-reverse: jax.hessian through the loop equals the scan's."""
    w, x0 = _weights()
    got = jax.hessian(_online_loss, argnums=2)(w, 1.1, x0, 5, 2)
    want = jax.hessian(_scan_loss, argnums=2)(w, 1.1, x0, 5)
    assert _rel_err(got, want) <= 1e-10


def test_hessian_of_a_state_with_a_counter():
    """jax.hessian (jacfwd of grad: a vmap of jvp) through a loop whose state carries an
    int counter; the loops' vmap rules must not batch a jvp's tangents (custom_vmap alone
    gave tangents of shape (3, 3) for a (3,) primal here)."""

    def online(x):
        out = remat.while_loop(
            lambda s: s[1] < 4, lambda s: (jnp.sin(s[0]) * 1.1, s[1] + 1), (x, 0), checkpoints=3
        )
        return jnp.sum(out[0] ** 2)

    def unrolled(x):
        for _ in range(4):
            x = jnp.sin(x) * 1.1
        return jnp.sum(x**2)

    x = jnp.linspace(0.1, 0.9, 3)
    assert _rel_err(jax.jit(jax.hessian(online))(x), jax.hessian(unrolled)(x)) <= 1e-12


@pytest.mark.slow
def test_vmap_of_hessian_over_trip_counts():
    """Forward-over-reverse under vmap (jax.jacfwd is itself a vmap of jvp): the loops' vmap
    rules must not batch the tangents of a jvp (custom_vmap alone gave tangents of shape
    (3, 3) for a (3,) primal, and failed jax.hessian even without vmap)."""
    w, x0 = _weights()
    trips = jnp.array([3, 8])
    online = functools.partial(_online_loss, checkpoints=2)
    hess = jax.jit(jax.vmap(jax.hessian(online, argnums=2), in_axes=(None, None, None, 0)))
    got = hess(w, 1.1, x0, trips)
    scan_hessian = jax.jit(jax.hessian(_scan_loss, argnums=2), static_argnums=(3,))
    for lane, n in enumerate(trips.tolist()):
        assert _rel_err(got[lane], scan_hessian(w, 1.1, x0, n)) <= 1e-10


def test_grad_of_grad_refuses_with_the_fix():
    w, x0 = _weights()
    with pytest.raises(ReverseOverReverseError, match="jax.hessian"):
        jax.grad(lambda a: jax.grad(_online_loss, argnums=1)(w, a, x0, 9, 2))(1.1)


def test_max_steps_stops_the_loop():
    w, x0 = _weights()

    def loss(a, x0):
        out = remat.while_loop(
            lambda s: s["i"] < 50, functools.partial(_step, w, a), _init(x0), checkpoints=3,
            max_steps=7,
        )  # fmt: skip
        return _loss(out)

    got = jax.grad(loss, argnums=(0, 1))(1.1, x0)
    want = jax.grad(lambda a, x: _scan_loss(w, a, x, 7), argnums=(0, 1))(1.1, x0)
    for g, r in zip(got, want, strict=True):
        assert _rel_err(g, r) <= 1e-12


def test_counted_evaluations_equal_the_model():
    """A host callback in the body counts forward and recomputed evaluations at run time."""
    w, x0 = _weights()
    calls = [0]

    def tick(_):
        calls[0] += 1

    def counting(state):
        jax.debug.callback(tick, state["x"][0])
        return _step(w, 1.1, state)

    def loss(x0, n, c):
        out = remat.while_loop(lambda s: s["i"] < n, counting, _init(x0), checkpoints=c)
        return _loss(out)

    grad = jax.jit(jax.grad(loss), static_argnums=(2,))
    for c, trips in [(3, (0, 1, 4, 10, 11, 40)), (5, (33,)), (1, (12,))]:
        for n in trips:
            grad(x0, n, c).block_until_ready()  # the first call compiles; warm calls count
            calls[0] = 0
            jax.block_until_ready(grad(x0, n, c))
            assert calls[0] == remat.online_evaluations(n, c), (n, c)


# --- Memory: bounded by c, whatever L ---------------------------------------------------------


def _temp_bytes(n_steps, c):
    state = jax.ShapeDtypeStruct((64, 64), jnp.float64)

    def loss(x0):
        out = remat.while_loop(
            lambda s: s[1] < n_steps,
            lambda s: (jnp.tanh(s[0] * 1.01), s[1] + 1),
            (x0, jnp.int32(0)),
            checkpoints=c,
        )
        return jnp.sum(out[0])

    compiled = jax.jit(jax.grad(loss)).lower(state).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_independent_of_trip_count_and_grows_with_c():
    """Differentiated w.r.t. the state (the tape would show there): L = 100 vs 10 000."""
    small, large = _temp_bytes(100, 4), _temp_bytes(10_000, 4)
    assert abs(large - small) <= 0.1 * small
    state_bytes = 64 * 64 * 8
    more = _temp_bytes(10_000, 12)
    assert more - large >= 8 * state_bytes * 0.9  # eight more slots
    assert large < 12 * state_bytes  # c + O(1) states, nothing per step


# --- Bad input: named argument, clear fix, before JAX's own errors -----------------------------


def _good():
    return dict(
        cond_fun=lambda s: s[1] < 3,
        body_fun=lambda s: (s[0] * 2.0, s[1] + 1),
        init_val=(jnp.ones(2), jnp.int32(0)),
        checkpoints=2,
    )


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"cond_fun": lambda s: s[0] > 0}, TypeError, "cond_fun"),  # not a scalar
        ({"cond_fun": lambda s: jnp.float32(s[1])}, TypeError, "cond_fun"),  # not boolean
        ({"body_fun": lambda s: (s[0] * 2.0,)}, TypeError, "body_fun"),  # structure
        ({"body_fun": lambda s: (s[0][:1], s[1] + 1)}, ValueError, "body_fun"),  # shape
        ({"body_fun": lambda s: (s[0].astype(jnp.float32), s[1] + 1)}, TypeError, "body_fun"),
        ({"checkpoints": 0}, ValueError, "checkpoints"),
        ({"checkpoints": 2.0}, TypeError, "checkpoints"),
        ({"checkpoints": True}, TypeError, "checkpoints"),
        ({"checkpoints": "3"}, TypeError, "checkpoints"),
        ({"max_steps": -1}, ValueError, "max_steps"),
        # Python control flow on the state: JAX's bare TracerBoolConversionError before.
        ({"cond_fun": lambda s: bool(s[1] < 3)}, TypeError, "cond_fun could not be traced"),
        (
            {"body_fun": lambda s: (s[0], s[1] + 1) if s[1] > 0 else s},
            TypeError,
            "body_fun could not be traced",
        ),
        ({"init_val": (jnp.ones(2), jnp.int32(0), "tag")}, TypeError, r"init_val\[2\] is a str"),
    ],
)
def test_bad_input_names_the_argument(change, error, name):
    with pytest.raises(error, match=name):
        remat.while_loop(**{**_good(), **change})
