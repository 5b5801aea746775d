"""``remat.while_loop``: a ``lax.while_loop`` that reverse mode can differentiate, in c states.

JAX cannot reverse-differentiate ``lax.while_loop`` (jax-ml/jax#2469): the backward pass would
need every step's residuals, and the number of steps is only known at run time. This loop keeps
a fixed buffer of c states instead, placed online while the loop runs (``_online.py``: optimal
in recomputations for L ≤ β(c, 2), optimal in repetition number for every L), and reverses
each segment between them with revolve once the trip count L is known.

Three passes, each a ``lax.while_loop``:

* **forward** (``_forward``): ``x ← body(x)`` while ``cond(x)``; the state x_{i−1} is kept one
  step (``prev``) and stored by :func:`~bpjax.remat._online.place` once x_i shows it was not
  the last input. Carry: the state, ``prev``, the buffer (c states) and int32 bookkeeping.
  The first ``_TABLE_STEPS`` decisions are looked up in a table precomputed by the same rule
  (:func:`~bpjax.remat._online.placement_table`), so a step costs the body, one lookup and
  the buffer write; the traced rule takes over after them.
* **reverse sweep** (``_reverse``): each iteration restores the latest checkpoint ≤ t when no
  state is live, advances in a tight inner loop to where revolve's split
  (:func:`~bpjax.remat._online.split`) stores next or to t, stores there, and turns at t (the
  ``jax.vjp`` of step t at x_t moves the cotangent to x_t). Each segment is reversed with
  t(n, free slots + 1) advances; the bookkeeping (the checkpoints as a stack: they are used
  last in, first out) is paid per store and turn, not per step. Only the closed-over arrays
  JAX differentiates get cotangents (symbolic zeros in the ``custom_jvp`` rule).
* **tangent** (``_tangent``): forward mode, the state and its tangent carried together for L
  steps (what ``jax.jvp`` runs).

How JAX sees it: a ``custom_jvp`` whose primal is a plain ``lax.while_loop`` (no buffer when no
derivative is taken) and whose tangent is a linear map (``_linear.apply``) evaluated by the
tangent loop and transposed by the reverse sweep. So ``jax.jvp``, ``jax.grad``, ``jax.vmap``
(a batch of loops with different trip counts), ``jax.jit`` and forward-over-reverse
(``jax.hessian``) all work; reverse-over-reverse raises
:class:`~bpjax.remat._linear.ReverseOverReverseError` with the fix.

Memory: the c slots, the live and previous states and the cotangent, whatever L turns out to
be. Body evaluations per gradient: :func:`~bpjax.remat.online_evaluations`.

Known inefficiencies:

* A turn evaluates the body again inside ``jax.vjp``, as every checkpointing scheme that
  stores states (not residuals) does.
* Under ``vmap`` the lanes' schedules differ, so the reverse sweep's turn/advance branch
  becomes a select that computes both, and every lane runs as many iterations as the longest.
* ``jax.jvp`` runs the forward pass twice: the checkpointed one (the primal of the rule; XLA
  drops its buffer when nothing reads it) and the tangent loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bpjax.remat import _linear
from bpjax.remat._online import place, placement_table, split
from bpjax.remat._while_args import (
    check_body,
    check_cond,
    check_int,
    close_over,
    inexact,
    strong_array,
)

__all__ = ["while_loop"]


def while_loop(
    cond_fun: Callable,
    body_fun: Callable,
    init_val,
    *,
    checkpoints: int,
    max_steps: int | None = None,
):
    """``lax.while_loop`` that ``jax.grad`` can differentiate, keeping ``checkpoints`` states.

    Runs ``val = body_fun(val)`` while ``cond_fun(val)`` is true, exactly as
    ``lax.while_loop(cond_fun, body_fun, init_val)``. Reverse mode (``grad``, ``vjp``) keeps
    ``checkpoints`` copies of the state however many steps the loop takes, and recomputes the
    rest; ``jax.jvp``, ``jit``, ``vmap`` and forward-over-reverse (``jax.hessian``) work too.

    Args:
      cond_fun: ``cond_fun(val) -> bool[]``, a boolean scalar.
      body_fun: ``body_fun(val) -> val``, returning the same pytree structure, shapes and
        dtypes. It may close over arrays, traced ones included (a parameter being
        differentiated): their gradients are returned.
      init_val: the initial state, a pytree of arrays (``{"x": (d,), "t": ()}``, say).
      checkpoints: c ≥ 1, how many states the backward pass may keep (x_0 included).
        Body evaluations per gradient are ``2L + Σ t(n_i, c − i)`` (see
        :func:`~bpjax.remat.online_evaluations`): the offline optimum ``t(L, c) + L + 1``
        while L ≤ (c + 1)(c + 2)/2, and never more than ``r(L, c)`` evaluations of any step.
      max_steps: if given, stop after this many steps even if ``cond_fun`` still holds.

    Returns:
      The final state, shaped like ``init_val``.

    Raises:
      TypeError: ``cond_fun`` does not return a boolean scalar, ``body_fun`` changes the
        state's structure or dtypes, or ``checkpoints`` / ``max_steps`` is not an int.
      ValueError: ``body_fun`` changes a shape, ``checkpoints < 1`` or ``max_steps < 0``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from bpjax import remat
      >>> def halve(a):  # halve x until it is below 1: the trip count depends on a
      ...     return remat.while_loop(
      ...         lambda s: s[0] >= 1.0, lambda s: (s[0] * a, s[1] + 1), (jnp.float32(100.0), 0),
      ...         checkpoints=4)
      >>> x, steps = halve(0.5)
      >>> int(steps), float(x)
      (7, 0.78125)
      >>> round(float(jax.grad(lambda a: halve(a)[0])(0.5)), 4)  # d(100 a^7)/da at a = 0.5
      10.9375
    """
    check_int("checkpoints", checkpoints, minimum=1)
    if max_steps is not None:
        check_int("max_steps", max_steps, minimum=0)
    init_val = jax.tree.map(strong_array, init_val)
    leaves, tree = jax.tree.flatten(init_val)
    check_cond(cond_fun, init_val)
    check_body(body_fun, init_val)
    body, body_consts = close_over(body_fun, init_val)
    cond, cond_consts = close_over(cond_fun, init_val)
    spec = _Spec(
        body=body,
        cond=cond,
        tree=tree,
        checkpoints=int(checkpoints),
        max_steps=None if max_steps is None else int(max_steps),
        inexact=tuple(inexact(x) for x in leaves),
    )
    out = _loop(spec, list(cond_consts), list(body_consts), leaves)
    return jax.tree.unflatten(tree, out)


@dataclasses.dataclass(frozen=True, eq=False)
class _Spec:
    """What the loops need besides arrays; hashed by identity (a ``custom_jvp`` static arg)."""

    body: Callable  # body(val, *consts) -> val, from _close_over
    cond: Callable  # cond(val, *consts) -> bool[]
    tree: object  # the state's treedef
    checkpoints: int
    max_steps: int | None
    inexact: tuple  # per state leaf: does it carry a tangent


# ---------------------------------------------------------------------------------------------
# The body and condition on flat leaves, and the body as a function of its inexact leaves.


def _step(spec: _Spec, consts, xs):
    out = spec.body(jax.tree.unflatten(spec.tree, xs), *consts)
    return [o.astype(x.dtype) for o, x in zip(jax.tree.leaves(out), xs, strict=True)]


def _going(spec: _Spec, cond_consts, xs, steps):
    going = spec.cond(jax.tree.unflatten(spec.tree, xs), *cond_consts)
    return going if spec.max_steps is None else going & (steps < spec.max_steps)


def _pick(values, mask):
    return [v for v, m in zip(values, mask, strict=True) if m]


def _put(values, mask, new):
    new, out = iter(new), list(values)
    for i, m in enumerate(mask):
        if m:
            out[i] = next(new)
    return out


def _differentiable_step(spec: _Spec, consts, xs, const_mask):
    """``g(x_inexact, consts_masked) -> (out_inexact, out)``, for ``jvp``/``vjp`` with aux.

    Integer and boolean leaves (a step counter) take no tangent; they ride along in ``out``,
    as do the consts outside ``const_mask`` (integer ones and those nothing differentiates).
    """

    def g(x_diff, c_diff):
        out = _step(spec, _put(consts, const_mask, c_diff), _put(xs, spec.inexact, x_diff))
        return _pick(out, spec.inexact), out

    return g


# ---------------------------------------------------------------------------------------------
# The three loops.


def _plain(spec: _Spec, cond_consts, consts, xs):
    """The primal when nothing is differentiated: ``lax.while_loop`` with a step count."""

    def going(carry):
        return _going(spec, cond_consts, carry[1], carry[0])

    def advance(carry):
        return carry[0] + 1, _step(spec, consts, carry[1])

    return lax.while_loop(going, advance, (jnp.int32(0), list(xs)))[1]


# The forward loop looks its first placement decisions up in a table (one gather per step
# instead of ~20 small integer kernels, which cost more than a small body); from this step
# on it runs the traced rule (:func:`~bpjax.remat._online.place`). Same decisions either way.
_TABLE_STEPS = 4096


def _forward(spec: _Spec, sizes: tuple[int, int], args):
    """The loop, storing checkpoints online. ``args = cond_consts + consts + xs`` (flat lists
    of ``sizes`` = (len(cond_consts), len(consts)) and the state's leaves).

    Returns ``(x_L, x_{L-1}, buffer, slot_steps, L)``: buffer leaves ``(c, *leaf.shape)``,
    ``slot_steps`` int32 ``(c,)`` the step stored in each physical slot (-1: free).
    """
    n_cond, n_consts = sizes
    cond_consts, consts = args[:n_cond], args[n_cond : n_cond + n_consts]
    xs = args[n_cond + n_consts :]
    c = spec.checkpoints
    n_table = _TABLE_STEPS
    table, positions, order, count, bounds = placement_table(c, n_table)
    # Indexed by j: at step j the loop may store x_{j-1}; nothing at j = 0.
    table = np.asarray((-1, *table), np.int32)

    def going(carry):
        return _going(spec, cond_consts, carry["x"], carry["j"])

    def store_at(carry, store, slot):
        q = carry["j"] - 1
        buffer = [
            lax.dynamic_update_index_in_dim(b, jnp.where(store, p, b[slot]), slot, 0)
            for b, p in zip(carry["buffer"], carry["prev"], strict=True)
        ]
        steps = carry["slot_steps"]
        steps = lax.dynamic_update_index_in_dim(steps, jnp.where(store, q, steps[slot]), slot, 0)
        return {
            "j": carry["j"] + 1,
            "x": _step(spec, consts, carry["x"]),
            "prev": carry["x"],
            "buffer": buffer,
            "slot_steps": steps,
        }

    def looked_up(carry):
        slot = jnp.asarray(table)[carry["j"]]
        return store_at(carry, slot >= 0, jnp.maximum(slot, 0))

    first = lax.while_loop(
        lambda carry: going(carry) & (carry["j"] <= n_table),
        looked_up,
        {
            "j": jnp.int32(0),
            "x": list(xs),
            "prev": list(xs),
            "buffer": [jnp.zeros((c, *x.shape), x.dtype) for x in xs],
            "slot_steps": jnp.full((c,), -1, jnp.int32),
        },
    )
    lanes = jnp.arange(c)

    def traced(carry):
        # x_{j-1} is not the last input (x_j satisfied cond): it may be stored.
        q, positions, order, count = (
            carry["j"] - 1,
            carry["positions"],
            carry["order"],
            carry["count"],
        )
        store, k, bounds = place(q, positions, count, carry["bounds"])
        slot = order[k]  # while filling, order[count] == count
        # Logical order: evicting index k shifts the later checkpoints down and appends q.
        later = jnp.minimum(lanes + 1, c - 1)
        filling = count < c
        evicted_pos = jnp.where(lanes < k, positions, positions[later]).at[c - 1].set(q)
        evicted_ord = jnp.where(lanes < k, order, order[later]).at[c - 1].set(slot)
        filled_pos = positions.at[jnp.minimum(count, c - 1)].set(q)
        return {
            **store_at(carry, store, slot),
            "positions": jnp.where(store, jnp.where(filling, filled_pos, evicted_pos), positions),
            "order": jnp.where(store & ~filling, evicted_ord, order),
            "count": count + (store & filling).astype(jnp.int32),
            "bounds": bounds,
        }

    out = lax.while_loop(
        going,
        traced,
        {
            **first,
            "positions": jnp.asarray(positions, jnp.int32),
            "order": jnp.asarray(order, jnp.int32),
            "count": jnp.int32(count),
            "bounds": jnp.asarray(bounds, jnp.int32),
        },
    )
    return out["x"], out["prev"], out["buffer"], out["slot_steps"], out["j"]


def _reverse(spec: _Spec, const_mask, res, ct):
    """Cotangents of (inexact consts, inexact x_0) from the cotangent of x_L's inexact leaves."""
    consts, _, prev, buffer, slot_steps, n_steps = res
    zeros_c = [jnp.zeros_like(c) for c in _pick(consts, const_mask)]

    def turn(x, ct, d_consts):
        g_x = _differentiable_step(spec, consts, x, const_mask)
        primals = (_pick(x, spec.inexact), _pick(consts, const_mask))
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
        x = lax.fori_loop(pos, stop, lambda _, v: _step(spec, consts, v), x)
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


def _tangent(spec: _Spec, const_mask, res, tangents):
    """Forward mode: the tangent of x_L's inexact leaves, carried beside the state for L steps."""
    consts, xs, _, _, _, n_steps = res
    d_consts, d_x = tangents

    def advance(carry):
        i, x, dx = carry
        g = _differentiable_step(spec, consts, x, const_mask)
        primals = (_pick(x, spec.inexact), _pick(consts, const_mask))
        _, dx, x = jax.jvp(g, primals, (dx, list(d_consts)), has_aux=True)
        return i + 1, x, dx

    carry = (jnp.int32(0), list(xs), list(d_x))
    return lax.while_loop(lambda carry: carry[0] < n_steps, advance, carry)[2]


# ---------------------------------------------------------------------------------------------
# How JAX sees the loop: a custom_jvp whose tangent is a linear map with a custom transpose.


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _loop(spec: _Spec, cond_consts, consts, xs):
    return _plain(spec, cond_consts, consts, xs)


@functools.partial(_loop.defjvp, symbolic_zeros=True)
def _loop_jvp(spec: _Spec, primals, tangents):
    cond_consts, consts, xs = primals
    _, d_consts, d_xs = tangents
    # Cotangents only for the consts JAX differentiates: a weight held fixed (the gradient
    # taken w.r.t. the state) costs no weight-gradient product per turn of the reverse sweep.
    const_mask = tuple(
        inexact(c) and not _is_zero(d) for c, d in zip(consts, d_consts, strict=True)
    )
    d_xs = [
        jnp.zeros(np.shape(x), x.dtype) if _is_zero(d) else d for x, d in zip(xs, d_xs, strict=True)
    ]
    sizes = (len(cond_consts), len(consts))
    forward = _linear.forward_only(functools.partial(_forward, spec, sizes))
    x_last, prev, buffer, slot_steps, n_steps = forward([*cond_consts, *consts, *xs])
    res = (list(consts), list(xs), prev, buffer, slot_steps, n_steps)
    lin = (_pick(d_consts, const_mask), _pick(d_xs, spec.inexact))
    d_out = _linear.apply(
        functools.partial(_tangent, spec, const_mask),
        functools.partial(_reverse, spec, const_mask),
        res,
        lin,
    )
    d_full = _put([_float0(x) for x in x_last], spec.inexact, d_out)
    return x_last, d_full


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _float0(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)
