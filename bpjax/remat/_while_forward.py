"""The forward loop of :func:`~bpjax.remat.while_loop`: run the body, store checkpoints online.

``x ← body(x)`` while ``cond(x)``; the state x_{i−1} is kept one step (``prev``) and stored
by the placement rule (:mod:`~bpjax.remat._online`) once x_i shows it was not the last input.
The first :func:`table_steps` decisions (4,096; 65,536 for c < 128) are looked up in a table
precomputed by the same rule (:func:`~bpjax.remat._online.placement_table`), so a step costs
the body, one lookup and the buffer write; the traced rule
(:class:`~bpjax.remat._online._Placer` in jnp: a resumed search over a linked list of slots,
O(1) amortized whatever c) takes over after them.

The loop runs over lanes (:class:`Lanes`): one, or under ``jax.vmap`` a batch whose lanes stop
at different steps (a ``custom_vmap`` rule). JAX's own batching of a while loop whose
condition is batched selects the whole carry, the c stored states included, between its old
and new value at every step: O(c) per step, 2 s instead of 0.1 s for c = 10^4 and 2·10^4
steps. Here the loop runs while any lane goes on, and a lane that has stopped writes its
slot's old value back and keeps its scalars, so a step costs O(1) per lane.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from bpjax.remat._online import next_bounds, placement_table
from bpjax.remat._while_step import Spec, going_on, step

# The forward loop looks its first placement decisions up in a table (one gather per step
# instead of the search's scalar bookkeeping); from this step on it runs the traced rule
# (:func:`_commit`). Same decisions either way.
TABLE_STEPS = 4096
# Below SMALL_C slots a decision fits an int8, and the table runs SMALL_C_TABLE_STEPS steps
# in 64 KiB. The traced rule's loops cost about 100 ns a step more than a lookup, most of a
# step when the body is small. Gradient of a width-2 tanh loop, 2·10^4 steps (2026-12-05,
# 2-core Xeon): c = 4 took 10.7 ms with the 4,096-step table, 3.8 ms with this one; c = 100,
# 19 -> 1.5 ms; at 10^5 steps (past it), 61 -> 39 and 102 -> 43 ms. The longer table takes
# about 40 ms to build, once per c and process; the first call took 0.03-0.1 s longer.
SMALL_C, SMALL_C_TABLE_STEPS = 128, 65536


def table_steps(c: int) -> int:
    """How many steps the forward loop's placement table covers for ``c`` checkpoints."""
    return SMALL_C_TABLE_STEPS if c < SMALL_C else TABLE_STEPS


@dataclasses.dataclass(frozen=True)
class Lanes:
    """How per-lane functions run: directly (``size=None``: one loop) or ``vmap``-ped."""

    size: int | None

    def map(self, fn, in_axes, *args):
        return fn(*args) if self.size is None else jax.vmap(fn, in_axes=in_axes)(*args)

    def any(self, flags):
        return flags if self.size is None else jnp.any(flags)

    def own(self, values, axes):
        """Every lane its own copy of ``values``: those not batched (axis None) broadcast."""
        if self.size is None:
            return list(values)
        return [
            v if a == 0 else jnp.broadcast_to(v, (self.size, *jnp.shape(v)))
            for v, a in zip(values, axes, strict=True)
        ]

    def loop(self, going, body, carry):
        """``while going(carry): carry = body(carry, active)``, ``active`` the lanes still
        going (``True`` for one loop, folded away by XLA)."""
        if self.size is None:
            return lax.while_loop(going, lambda c: body(c, jnp.bool_(True)), carry)
        return lax.while_loop(lambda c: jnp.any(going(c)), lambda c: body(c, going(c)), carry)


def forward(spec: Spec, sizes: tuple[int, int], args):
    """The loop, storing checkpoints online. ``args = cond_consts + consts + xs`` (flat lists
    of ``sizes`` = (len(cond_consts), len(consts)) and the state's leaves).

    Returns ``(x_L, x_{L-1}, buffer, slot_steps, L)``: buffer leaves ``(c, *leaf.shape)``,
    ``slot_steps`` int32 ``(c,)`` the step stored in each physical slot (-1: free).
    """

    c = spec.checkpoints
    steps = table_steps(c)
    table, nxt, tail, count, bounds = placement_table(c, steps)
    # Indexed by j: at step j the loop may store x_{j-1}; nothing at j = 0.
    tables = (np.asarray((-1, *table), np.int8 if c < SMALL_C else np.int32),)
    tables += (np.asarray(nxt, np.int32),)
    tables += (np.asarray(bounds, np.int32),)
    start = (tail, count)
    n = len(args)

    def impl(args, lanes, axes):
        # A batched table is a constant broadcast by an enclosing vmap: every row is the same.
        own = [t if a is None else t[0] for t, a in zip(args[n:], axes[n:], strict=True)]
        return _forward(spec, sizes, args[:n], own, start, steps, lanes, axes[:n])

    # The tables are arguments, not constants the function closes over: custom_vmap refuses
    # closed-over values that an enclosing vmap has batched (a loop inside a loop's body).
    return over_lanes(impl)(*args, *tables)


def over_lanes(impl):
    """``f(*args)`` computing ``impl(args, Lanes(None), axes)``; under ``jax.vmap`` the
    batched ``impl(args, Lanes(size), axes)`` instead of JAX's batching of its loops.

    ``axes``: per argument, 0 where batched (leading axis) and None where not. Differentiated
    (forward-over-reverse: ``jax.hessian``), the derivative is JAX's own through ``impl`` for
    one lane: ``custom_vmap`` alone gives wrongly batched tangents under ``vmap`` of ``jvp``
    (which ``jax.jacfwd`` is).
    """

    def plain(*args):
        return impl(list(args), Lanes(None), [None] * len(args))

    batched = custom_vmap(plain)

    @batched.def_vmap
    def _rule(axis_size, in_batched, *args):
        axes = [0 if b else None for b in in_batched]
        out = impl(list(args), Lanes(axis_size), axes)
        return out, jax.tree.map(lambda _: True, out)

    run = jax.custom_jvp(batched)
    run.defjvp(lambda primals, tangents: jax.jvp(plain, primals, tangents))
    return run


def _forward(spec: Spec, sizes, args, tables, start, steps, lanes: Lanes, axes):
    n_cond, n_consts = sizes
    split = (n_cond, n_cond + n_consts)
    cond_consts, consts, xs = args[: split[0]], args[split[0] : split[1]], args[split[1] :]
    cond_axes, const_axes, x_axes = axes[: split[0]], axes[split[0] : split[1]], axes[split[1] :]
    xs = lanes.own(xs, x_axes)  # every lane carries its own state
    c = spec.checkpoints
    table, nxt, bounds = (jnp.asarray(t) for t in tables)
    tail, count = start

    def lane_init(x):
        return {
            "j": jnp.int32(0),
            "x": list(x),
            "prev": list(x),
            "buffer": [jnp.zeros((c, *np.shape(v)), v.dtype) for v in x],
            "slot_steps": jnp.full((c,), -1, jnp.int32),
        }

    def going(carry):
        def lane(cc, carry):
            return going_on(spec, cc, carry["x"], carry["j"])

        return lanes.map(lane, (cond_axes, 0), cond_consts, carry)

    store = functools.partial(_store, spec)

    def looked_up(carry, active):
        def lane(k, carry, active):
            slot = table[carry["j"]].astype(jnp.int32)
            return store(k, carry, slot >= 0, jnp.maximum(slot, 0), active)

        return lanes.map(lane, (const_axes, 0, 0), consts, carry, active)

    carry = lanes.map(lane_init, (0,), xs)
    carry = lanes.loop(lambda cy: going(cy) & (cy["j"] <= steps), looked_up, carry)

    def traced(carry, active):
        ptr, stuck = lanes.map(functools.partial(_search, c), (0,), carry)
        stuck = stuck & active

        # The phase advances (a (c + 1,) cumsum) and the search restarts from logical 1 only
        # in lanes that are stuck, and only when one is: a loop run once or not at all, not
        # a select computed every step.
        def advance(s):
            _, bounds, ptr = s
            bounds = lanes.map(_advance, (0, 0), stuck, bounds)
            ptr = lanes.map(functools.partial(_restart, c), (0, 0, 0, 0), carry, bounds, ptr, stuck)
            return False, bounds, ptr

        _, bounds, ptr = lax.while_loop(
            lambda s: s[0], advance, (lanes.any(stuck), carry["bounds"], ptr)
        )
        carry = {**carry, "bounds": bounds}
        commit = functools.partial(_commit, c, store)
        return lanes.map(commit, (const_axes, 0, 0, 0), consts, carry, ptr, active)

    def lane_bookkeeping(carry):
        return {
            **carry,
            "nxt": nxt,
            "tail": jnp.int32(tail),
            "count": jnp.int32(count),
            "bounds": bounds,
            # The search restarts at logical index 1 (slot 1 while filling).
            "ptr": (jnp.int32(0), jnp.where(count == c, nxt[0], 1), jnp.int32(1)),
        }

    carry = lanes.loop(going, traced, lanes.map(lane_bookkeeping, (0,), carry))
    return carry["x"], carry["prev"], carry["buffer"], carry["slot_steps"], carry["j"]


def _store(spec: Spec, consts, carry, store, slot, active):
    """One lane's step: store x_{j-1} in ``slot`` if ``store``, advance x; all masked by
    ``active`` (a stopped lane writes its slot's old value back and keeps its values)."""
    q = carry["j"] - 1
    write = store & active
    buffer = [
        lax.dynamic_update_index_in_dim(b, jnp.where(write, p, b[slot]), slot, 0)
        for b, p in zip(carry["buffer"], carry["prev"], strict=True)
    ]
    steps = carry["slot_steps"]
    steps = lax.dynamic_update_index_in_dim(steps, jnp.where(write, q, steps[slot]), slot, 0)
    new = step(spec, consts, carry["x"])
    return {
        **carry,
        "j": carry["j"] + active.astype(jnp.int32),
        "x": [jnp.where(active, n, x) for n, x in zip(new, carry["x"], strict=True)],
        "prev": [jnp.where(active, x, p) for x, p in zip(carry["x"], carry["prev"], strict=True)],
        "buffer": buffer,
        "slot_steps": steps,
    }


def _scan(c, q, tail, searching, nxt, steps, bounds, ptr):
    """From ``ptr`` = (slot at logical i − 1, slot at i, i), the earliest i whose eviction
    fits (segments i − 1 and i merged within segment i − 1's bound); ``i == c`` if none."""

    def fails(s):
        prev, node, i = s
        after = jnp.where(node == tail, q, steps[nxt[jnp.maximum(node, 0)]])
        merged = after - steps[prev]
        return searching & (i < c) & (merged > bounds[jnp.minimum(c - i + 1, c)])

    def onward(s):
        _, node, i = s
        return node, nxt[jnp.maximum(node, 0)], i + 1

    return lax.while_loop(fails, onward, ptr)


def _search(c: int, carry):
    """One lane's search in the current phase: ``(ptr, stuck)``, stuck when nothing fits and
    the last segment would overflow (the phase must advance)."""
    if c == 1:  # one slot holds x_0 for good
        return carry["ptr"], jnp.bool_(False)
    q = carry["j"] - 1  # x_{j-1} is not the last input (x_j satisfied cond): it may be stored
    nxt, steps, bounds, tail = carry["nxt"], carry["slot_steps"], carry["bounds"], carry["tail"]
    filling = carry["count"] < c
    ptr = _scan(c, q, tail, ~filling, nxt, steps, bounds, carry["ptr"])
    must = q + 1 - steps[tail] > bounds[1]
    return ptr, ~filling & (ptr[2] >= c) & must


def _advance(stuck, bounds):
    return jnp.where(stuck, next_bounds(bounds), bounds)


def _restart(c: int, carry, bounds, ptr, stuck):
    """One lane's search from logical 1 in the next phase, if it was ``stuck``."""
    if c == 1:
        return ptr
    restart = (jnp.int32(0), carry["nxt"][0], jnp.int32(1))
    start = tuple(jnp.where(stuck, r, p) for r, p in zip(restart, ptr, strict=True))
    steps, nxt = carry["slot_steps"], carry["nxt"]
    return _scan(c, carry["j"] - 1, carry["tail"], stuck, nxt, steps, bounds, start)


def _commit(c: int, store, consts, carry, ptr, active):
    """One lane's decision (``ptr``: the eviction its search found, ``i == c`` if none), the
    list's relinking, and the step; all masked by ``active``."""
    count, tail, nxt = carry["count"], carry["tail"], carry["nxt"]
    filling = count < c
    if c == 1:
        done = store(consts, carry, filling, jnp.int32(0), active)
        return {**done, "count": count + (filling & active).astype(jnp.int32)}
    prev, node, i = ptr
    evict = ~filling & (i < c)
    keep = filling | evict
    slot = jnp.where(filling, count, jnp.maximum(node, 0))
    # Filling appends slot `count` after the tail; evicting a checkpoint before the tail
    # unlinks it and appends it; evicting the tail reuses its place.
    relink = evict & (node != tail) & active
    after = nxt[slot]
    nxt = _set(nxt, prev, after, relink)
    nxt = _set(nxt, tail, slot, relink | (filling & (tail >= 0) & active))
    nxt = _set(nxt, slot, jnp.int32(-1), relink)
    moved = (prev, jnp.where(relink, after, node), i)
    done = store(consts, carry, keep, slot, active)
    return {
        **done,
        "nxt": nxt,
        "tail": jnp.where(keep & active, slot, tail),
        "count": count + (filling & active).astype(jnp.int32),
        "ptr": tuple(jnp.where(active, m, p) for m, p in zip(moved, carry["ptr"], strict=True)),
    }


def _set(values, index, value, where):
    """``values.at[index].set(value)`` where ``where`` holds, else unchanged (one entry)."""
    index = jnp.maximum(index, 0)
    return lax.dynamic_update_index_in_dim(values, jnp.where(where, value, values[index]), index, 0)
