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
from bpjax.remat._while_forward import Lanes, over_lanes
from bpjax.remat._while_step import Spec, differentiable_step, pick, step


def reverse(spec: Spec, const_mask, res, ct):
    """Cotangents of (inexact consts, inexact x_0) from the cotangent of x_L's inexact leaves.

    Under ``jax.vmap`` (a ``custom_vmap`` rule) the sweep runs over lanes that finish at
    different iterations, as the forward loop does (:class:`~bpjax.remat._while_forward.Lanes`):
    a finished lane's writes are masked, instead of JAX selecting the whole carry, the c
    stored states included, at every iteration.
    """
    consts, _, prev, buffer, slot_steps, n_steps = res
    parts = (list(consts), list(prev), list(buffer), [slot_steps, n_steps], list(ct))
    sizes = [len(p) for p in parts]
    flat = [a for p in parts for a in p]

    def unflat(args):
        out, i = [], 0
        for k in sizes:
            out.append(list(args[i : i + k]))
            i += k
        return out

    def impl(args, lanes, axes):
        return _reverse(spec, const_mask, unflat(args), lanes, unflat(axes))

    return over_lanes(impl)(*flat)


def _reverse(spec: Spec, const_mask, parts, lanes: Lanes, axes):
    # Every lane carries its own sweep; the consts stay as they are (``k_axes``).
    consts, k_axes = parts[0], axes[0]
    prev, buffer, (slot_steps, n_steps), ct = map(lanes.own, parts[1:], axes[1:])
    c = spec.checkpoints

    def plan(pos, target, free):
        return jnp.where(free > 0, pos + split(target - pos + 1, free + 1), -1)

    def lane_init(consts, prev, buffer, slot_steps, n_steps, ct):
        # The checkpoints are used last in, first out: a restore takes the latest one at or
        # before the target, stores go above it, and a turn frees at most the one at the old
        # target. So they are kept as a stack in step order: ``steps[k]`` the k-th stored
        # step, ``top`` the index of the latest, and ``stack[k]`` its physical slot. Slots
        # above ``top`` are free; a pop leaves its slot in place for the next push, so
        # ``stack`` (a permutation of the slots, used slots first in step order) never
        # changes.
        key = jnp.where(slot_steps < 0, jnp.iinfo(jnp.int32).max, slot_steps)
        stack = jnp.argsort(key).astype(jnp.int32)
        lanes_c = jnp.arange(c, dtype=jnp.int32)
        used = jnp.sum(slot_steps >= 0).astype(jnp.int32)
        return {
            "target": n_steps - 1,
            "pos": n_steps - 1,
            "x": list(prev),
            "top": used - 1,
            "stack": stack,
            "steps": jnp.where(lanes_c < used, slot_steps[stack], -1),
            "buffer": list(buffer),
            "next_store": jnp.int32(-1),
            "replan": jnp.bool_(True),
            "ct": list(ct),
            "d_consts": [jnp.zeros_like(k) for k in pick(consts, const_mask)],
        }

    def iteration(consts, carry, active):
        def turn(x, ct, d_consts):
            g_x = differentiable_step(spec, consts, x, const_mask)
            primals = (pick(x, spec.inexact), pick(consts, const_mask))
            _, pullback, _ = jax.vjp(g_x, *primals, has_aux=True)
            ct, d = pullback(ct)
            return ct, [a + b for a, b in zip(d_consts, d, strict=True)]

        target, pos, x, stack = carry["target"], carry["pos"], carry["x"], carry["stack"]
        top, steps, buf = carry["top"], carry["steps"], carry["buffer"]
        next_store = carry["next_store"]
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
        at = jnp.clip(top, 0, c - 1)
        dst = stack[at]
        write = store & active  # a finished lane writes its slot's old value back
        buf = [
            lax.dynamic_update_index_in_dim(b, jnp.where(write, v, b[dst]), dst, 0)
            for b, v in zip(buf, x, strict=True)
        ]
        steps = steps.at[at].set(jnp.where(write, pos, steps[at]))
        # Turn at the target: the cotangent moves from x_{target+1} to x_target.
        at_target = pos == target
        ct, d_consts = lax.cond(at_target, turn, lambda _, *a: a, x, carry["ct"], carry["d_consts"])
        new = {
            "target": jnp.where(at_target, target - 1, target),
            "pos": jnp.where(at_target, -1, pos),
            "x": x,
            "top": top,
            "next_store": next_store,
            "replan": store,
            "ct": ct,
            "d_consts": d_consts,
        }
        kept = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, {k: carry[k] for k in new})
        return {**carry, **kept, "buffer": buf, "steps": steps}

    def going(carry):
        return carry["target"] >= 0

    args = (consts, prev, buffer, slot_steps, n_steps, ct)
    init = lanes.map(lane_init, (k_axes, 0, 0, 0, 0, 0), *args)
    out = lanes.loop(
        going,
        lambda carry, active: lanes.map(iteration, (k_axes, 0, 0), consts, carry, active),
        init,
    )
    return out["d_consts"], out["ct"]
