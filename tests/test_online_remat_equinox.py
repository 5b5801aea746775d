"""Equinox's checkpointed-while-loop tests, replayed against :func:`bpjax.remat.while_loop`.

The cases of ``tests/test_while_loop.py`` in patrick-kidger/equinox (kind="checkpointed"),
rewritten for this API and in float64: their problem (a rotation by an MLP's angle, through
complex numbers, with an integer step counter and an indexed write into a second array),
the forward pass without and under ``jax.linearize``, gradients against ``lax.scan`` for
their seventeen (checkpoints, steps) pairs with and without ``max_steps``, ``vmap`` with a
shared and a batched trip count, ``jacrev``, and nested loops in the pattern diffrax uses.
What does not carry over: Equinox's ``buffers=`` (no such argument here) and its exact order
of body evaluations (a different schedule; the count is checked against the model instead).
Run on 2026-12-04 the replay found one class of failure, speed at large c: the forward
loop's bookkeeping was O(c) per step (2 s for c = 10^4, 2·10^4 steps, against Equinox's
0.14 s); experiments/online_remat.py now times that case beside Equinox.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bpjax import remat

STEPS = 16  # the scan reference's length: the longest loop below


def _mlp(key):
    """Equinox's ``MLP(2, 1, width 2, depth 2)``: two ReLU layers of width 2, then 1 output."""
    keys = jax.random.split(key, 3)
    shapes = [(2, 2), (2, 2), (2, 1)]
    return [
        (jax.random.normal(k, s, jnp.float64) / np.sqrt(2), jnp.full(s[1:], 0.1))
        for k, s in zip(keys, shapes, strict=True)
    ]


def _apply(mlp, x):
    for w, b in mlp[:-1]:
        x = jax.nn.relu(x @ w + b)
    return x @ mlp[-1][0] + mlp[-1][1]


def _body(mlp):
    """Rotate (re, im) by the MLP's angle of it; write re into slot step % 8 of a 2nd array.
    (A plain x ← mlp(x) converges to a fixed point, whose gradient says little.)"""

    def body(carry):
        step, val1, val2 = carry
        (theta,) = _apply(mlp, val1)
        z = (val1[0] + 1j * val1[1]) * jnp.exp(1j * theta)
        return step + 1, jnp.stack([jnp.real(z), jnp.imag(z)]), val2.at[step % 8].set(jnp.real(z))

    return body


def _cond(n_steps):
    return lambda carry: carry[0] < n_steps


def _always(carry):
    return True


def _problem(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    val1 = jax.random.normal(k1, (2,), jnp.float64)
    val2 = jax.random.normal(k2, (20,), jnp.float64)
    return val1, val2, _mlp(k3)


def _as_scan(cond, body, init):
    """The reference: a scan of STEPS steps that stops changing the state once cond fails."""

    def f(val, _):
        return lax.cond(cond(val), body, lambda x: x, val), None

    return lax.scan(f, init, None, length=STEPS)[0]


def _loss(out):
    _, val1, val2 = out
    return jnp.sum(val1) + jnp.sum(val2)


def _close(got, want, tol=1e-10):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def test_forward_without_and_under_linearize():
    val1, val2, mlp = _problem()
    body, cond = _body(mlp), _cond(5)
    want = lax.while_loop(cond, body, (0, val1, val2))
    _close(remat.while_loop(cond, body, (0, val1, val2), checkpoints=1), want)

    @jax.jit
    def run(a, b):
        return remat.while_loop(cond, body, (0, a, b), checkpoints=9)

    out, _ = jax.linearize(run, val1, val2)
    _close(out, want)


# Equinox's (checkpoints, steps) pairs: Stumm-Walther, the Wang-Moin cases, fewer steps than
# checkpoints, and Stumm-Walther's Fig. 2.2 at c = 4. The trip count is traced (compared in
# cond), so one compilation per c serves every pair of that c.
PAIRS = {1: [3, 5], 2: [8, 5], 3: [11], 9: [5], 4: list(range(4, 15))}
SLOW_C = (2, 3, 9)  # in `make test-slow`; c = 1 and 4 cover 13 of the 17 pairs by default


@pytest.mark.parametrize(
    "checkpoints",
    [c if c not in SLOW_C else pytest.param(c, marks=pytest.mark.slow) for c in PAIRS],
)
def test_gradients_equal_scan_at_equinox_pairs(checkpoints):
    val1, val2, mlp = _problem()

    def value_and_grad(loop):
        @jax.jit
        @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
        def run(a, b, m, n):
            return _loss(loop(_cond(n), _body(m), (0, a, b)))

        return run

    want = value_and_grad(_as_scan)
    got = value_and_grad(functools.partial(remat.while_loop, checkpoints=checkpoints))
    for n in PAIRS[checkpoints]:
        _close(got(val1, val2, mlp, n), want(val1, val2, mlp, n))


@pytest.mark.parametrize("checkpoints, n_steps", [(1, 5), (4, 11)])
def test_max_steps_stops_a_loop_whose_condition_always_holds(checkpoints, n_steps):
    """Equinox's with_max_steps variant: cond is always true, max_steps ends the loop."""
    val1, val2, mlp = _problem()

    @jax.jit
    @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
    def got(a, b, m):
        loop = remat.while_loop(
            _always, _body(m), (0, a, b), checkpoints=checkpoints, max_steps=n_steps
        )
        return _loss(loop)

    @jax.jit
    @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
    def want(a, b, m):
        return _loss(_as_scan(_cond(n_steps), _body(m), (0, a, b)))

    _close(got(val1, val2, mlp), want(val1, val2, mlp))


# A shared start (lanes in step) is the simpler case of a batched one, and
# test_online_remat's vmap tests run it too: `make test-slow`.
@pytest.mark.parametrize("batched_start", [pytest.param(False, marks=pytest.mark.slow), True])
def test_vmap_of_value_and_grad(batched_start):
    """A batch of loops sharing the MLP: one trip count for all (the step starts at 0), or
    a trip count per lane (the step starts at 0, 1, 2, 3, 5, 10)."""
    _, _, mlp = _problem()
    starts = jnp.array([0, 1, 2, 3, 5, 10])
    keys = jax.random.split(jax.random.key(1), 2)
    val1 = jax.random.normal(keys[0], (6, 2), jnp.float64)
    val2 = jax.random.normal(keys[1], (6, 20), jnp.float64)

    def batched(loop):
        @jax.jit
        @functools.partial(jax.vmap, in_axes=(0, 0, None, 0 if batched_start else None))
        @functools.partial(jax.value_and_grad, argnums=(0, 1, 2))
        def run(a, b, m, start):
            return _loss(loop(_cond(14), _body(m), (start, a, b)))

        return run

    start = starts if batched_start else jnp.int32(0)
    got = batched(functools.partial(remat.while_loop, checkpoints=4))(val1, val2, mlp, start)
    _close(got, batched(_as_scan)(val1, val2, mlp, start))


def test_jacrev_through_the_loop():
    """Equinox's vmap-of-cotangents case: the whole Jacobian of both arrays, by jacrev."""
    val1, val2, mlp = _problem()

    def jac(loop):
        return jax.jit(jax.jacrev(lambda a, b: loop(_cond(14), _body(mlp), (0, a, b))[1:]))

    got = jac(functools.partial(remat.while_loop, checkpoints=4))(val1, val2)
    _close(got, jac(_as_scan)(val1, val2))


def test_a_debug_print_in_the_body_runs_once_per_evaluation(capfd):
    """Equinox checks its evaluation order with jax.debug.print in the body; here the order
    differs (another schedule), so the printed steps are counted against the model."""
    val1, val2, mlp = _problem()
    n_steps, checkpoints = 11, 3
    body = _body(mlp)

    def printing(carry):
        jax.debug.print("step {}", carry[0])
        return body(carry)

    grad = jax.jit(
        jax.grad(
            lambda a: _loss(
                remat.while_loop(_cond(n_steps), printing, (0, a, val2), checkpoints=checkpoints)
            )
        )
    )
    capfd.readouterr()
    jax.block_until_ready(grad(val1))
    jax.effects_barrier()
    printed = [line for line in capfd.readouterr().out.splitlines() if line.startswith("step")]
    assert printed[:n_steps] == [f"step {i}" for i in range(n_steps)]  # the forward pass
    assert len(printed) == remat.online_evaluations(n_steps, checkpoints)


def test_nested_loops_in_the_diffrax_pattern():
    """An outer loop whose body runs an inner loop of data-dependent length that writes into
    three arrays, under vmap and vjp (as diffrax's diffeqsolve saves at given times)."""

    def outer(step, vals, ts, final_step, loop):
        def body(carry):
            step, (v1, v2, v3, v4) = carry
            v1 = v1 * (1 + 0.05 * jnp.sin(105 * v1 + 1))
            return inner(step, (v1, v2, v3, v4), ts, loop)

        return loop(lambda carry: carry[0] < final_step, body, (step, vals), 8, 50)[1]

    def inner(step, vals, ts, loop):
        done = jnp.floor(ts[step] + 1)

        def body(carry):
            step, (v1, v2, v3, v4) = carry
            v1 = v1 * (1 + 0.05 * jnp.sin(100 * v1 + 3))
            return step + 1, (v1, v2.at[step].set(v1), v3.at[step].set(v1), v4.at[step].set(v1))

        return loop(lambda carry: ts[carry[0]] < done, body, (step, vals), 4, 10)

    def online(cond, body, init, checkpoints, max_steps):
        return remat.while_loop(cond, body, init, checkpoints=checkpoints, max_steps=max_steps)

    def scan(cond, body, init, checkpoints, max_steps):
        def f(val, _):
            return lax.cond(cond(val), body, lambda x: x, val), None

        return lax.scan(f, init, None, length=max_steps)[0]

    def run(loop):
        @jax.jit
        @functools.partial(jax.vmap, in_axes=(0, 0, 0, 0, 0))
        def go(step, vals, ts, final_step, cotangent):
            value, vjp = jax.vjp(lambda *v: outer(step, v, ts, final_step, loop), *vals)
            return value, vjp(cotangent)

        return go

    keys = jax.random.split(jax.random.key(7), 5)
    step = jnp.array([0, 5])
    v1 = jax.random.uniform(keys[0], (2,), jnp.float64, minval=0.1, maxval=0.7)
    zeros = jnp.zeros((2, 47))
    ts = jnp.stack([jnp.linspace(0, 19, 47), jnp.linspace(0, 13, 47)])
    final_step = jnp.array([46, 43])
    cotangent = (
        jax.random.normal(keys[1], (2,), jnp.float64),
        *(jax.random.normal(k, (2, 47), jnp.float64) for k in keys[2:]),
    )
    args = (step, (v1, zeros, zeros, zeros), ts, final_step, cotangent)
    _close(run(online)(*args), run(scan)(*args))
