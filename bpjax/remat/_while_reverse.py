"""The reverse sweep of :func:`~bpjax.remat.while_loop`: the transpose of its tangent map.

Each iteration restores the latest checkpoint ≤ t when no state is live, advances in a tight
inner loop to where revolve's split (:func:`~bpjax.remat._online.split`) stores next or to t,
stores there, and turns at t (the ``jax.vjp`` of step t at x_t moves the cotangent to x_t).
Each segment is reversed with t(n, free slots + 1) advances; the bookkeeping (the checkpoints
as a stack: they are used last in, first out) is paid per store and turn, not per step. Only
the closed-over arrays JAX differentiates get cotangents (``const_mask``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from bpjax.remat._online import split
from bpjax.remat._while_step import Spec, differentiable_step, pick, step


def reverse(spec: Spec, const_mask, res, ct):
    """Cotangents of (inexact consts, inexact x_0) from the cotangent of x_L's inexact leaves."""
    consts, _, prev, buffer, slot_steps, n_steps = res
    zeros_c = [jnp.zeros_like(c) for c in pick(consts, const_mask)]

    def turn(x, ct, d_consts):
        g_x = differentiable_step(spec, consts, x, const_mask)
        primals = (pick(x, spec.inexact), pick(consts, const_mask))
        _, pullback, _ = jax.vjp(g_x, *primals, has_aux=True)
        ct, d = pullback(ct)
        return ct, [a + b for a, b in zip(d_consts, d, strict=True)]

    def plan(pos, target, free):
        return jnp.where(free > 0, pos + split(target - pos + 1, free + 1), -1)

    # The checkpoints are used last in, first out: a restore takes the latest one at or
    # before the target, stores go above it, and a turn frees at most the one at the old
    # target. So they are kept as a stack in step order: ``steps[k]`` the k-th stored step,
    # ``top`` the index of the latest, and ``stack[k]`` its physical slot. Slots above
    # ``top`` are free; a pop leaves its slot in place for the next push, so ``stack`` (a
    # permutation of the slots, used slots first in step order) never changes.
    c = spec.checkpoints
    key = jnp.where(slot_steps < 0, jnp.iinfo(jnp.int32).max, slot_steps)
    stack = jnp.argsort(key).astype(jnp.int32)
    lanes = jnp.arange(c, dtype=jnp.int32)
    used = jnp.sum(slot_steps >= 0).astype(jnp.int32)
    steps_init = jnp.where(lanes < used, slot_steps[stack], -1)

    def iteration(carry):
        target, pos, x = carry["target"], carry["pos"], carry["x"]
        top, steps, buf, next_store = (
            carry["top"],
            carry["steps"],
            carry["buffer"],
            carry["next_store"],
        )
        # After a turn the checkpoint at the old target (if any) is done: pop it.
        top = top - ((top >= 0) & (steps[jnp.maximum(top, 0)] > target)).astype(jnp.int32)
        # Restore (after a turn): the latest checkpoint at or before the target.
        restore = pos < 0
        src = stack[jnp.maximum(top, 0)]
        x = [jnp.where(restore, b[src], v) for b, v in zip(buf, x, strict=True)]
        pos = jnp.where(restore, steps[jnp.maximum(top, 0)], pos)
        free = c - 1 - top
        # Revolve's next store, planned after a restore or a store (one cond per iteration;
        # none needed when the state at the target is already live).
        replan = (restore | carry["replan"]) & (pos < target)
        next_store = lax.cond(replan, plan, lambda *_: next_store, pos, target, free)
        # Advance, without bookkeeping, to where revolve stores next or to the target.
        stop = jnp.where((next_store > pos) & (next_store <= target), next_store, target)
        x = lax.fori_loop(pos, stop, lambda _, v: step(spec, consts, v), x)
        pos = stop
        store = (pos == next_store) & (pos < target) & (free > 0)
        top = top + store.astype(jnp.int32)
        dst = stack[jnp.clip(top, 0, c - 1)]
        buf = [
            lax.dynamic_update_index_in_dim(b, jnp.where(store, v, b[dst]), dst, 0)
            for b, v in zip(buf, x, strict=True)
        ]
        steps = steps.at[jnp.clip(top, 0, c - 1)].set(
            jnp.where(store, pos, steps[jnp.clip(top, 0, c - 1)])
        )
        # Turn at the target: the cotangent moves from x_{target+1} to x_target.
        at_target = pos == target
        ct, d_consts = lax.cond(at_target, turn, lambda _, *a: a, x, carry["ct"], carry["d_consts"])
        return {
            "target": jnp.where(at_target, target - 1, target),
            "pos": jnp.where(at_target, -1, pos),
            "x": x,
            "top": top,
            "steps": steps,
            "buffer": buf,
            "next_store": next_store,
            "replan": store,
            "ct": ct,
            "d_consts": d_consts,
        }

    init = {
        "target": n_steps - 1,
        "pos": n_steps - 1,
        "x": list(prev),
        "top": used - 1,
        "steps": steps_init,
        "buffer": list(buffer),
        "next_store": jnp.int32(-1),
        "replan": jnp.bool_(True),
        "ct": list(ct),
        "d_consts": zeros_c,
    }
    out = lax.while_loop(lambda carry: carry["target"] >= 0, iteration, init)
    return out["d_consts"], out["ct"]
