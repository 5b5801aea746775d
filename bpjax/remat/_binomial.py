"""Binomial checkpointing: revolve's schedule run by a ``custom_vjp`` interpreter.

JAX has no binomial ``scan``, so the backward pass interprets the schedule of
:func:`~bpjax.remat.revolve` with one ``lax.scan`` over its instructions: restore a state from
a slot, advance it some layers, store it in a slot, or turn (one layer's VJP, whose parameter
gradient is written in place into the stacked gradient). Memory ``(c + 1)·s + r + g``; layer
evaluations ``t(L, c) + L + 1``.

Known inefficiencies: the schedule is fixed for a known L (no online variant, as in Equinox's
checkpointed while loop), the forward pass evaluates the last layer once more than revolve
would (the ``+ 1``), and it is first-order reverse mode only: no ``jvp`` of the stack, and no
grad of grad (the advance loops have traced bounds).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bpjax import _validate
from bpjax.remat._layer import carried, close_over, depth, index, released
from bpjax.remat._residuals import LayerBytes
from bpjax.remat._revolve import optimal_advances, split_program
from bpjax.remat._scan import plain
from bpjax.remat._strategy import Strategy


@dataclasses.dataclass(frozen=True)
class Binomial(Strategy):
    """Revolve's binomial schedule with ``checkpoints`` stored states (the input included).

    ``checkpoints=None`` uses ⌈log2 L⌉ (at least 2), Chen et al.'s (2016) O(log L) regime.
    """

    reverse_only = True  # a custom_vjp: its own backward pass, no forward mode

    checkpoints: int | None = None

    def __post_init__(self):
        c = self.checkpoints
        if c is not None and (not _validate.is_int(c) or c < 1):
            raise ValueError(f"Binomial: checkpoints must be an int >= 1 or None, got {c!r}")

    @property
    def name(self) -> str:
        return "binomial" if self.checkpoints is None else f"binomial{self.checkpoints}"

    def resolved(self, n_layers: int) -> int:
        """The number of slots used for L layers (never more than L)."""
        if self.checkpoints is not None:
            return min(self.checkpoints, n_layers)
        return min(max(2, math.ceil(math.log2(max(n_layers, 2)))), n_layers)

    def decide(self, n_layers: int, layer) -> tuple | None:
        del layer
        if n_layers == 1:
            return None
        c = self.resolved(n_layers)
        return (c, *split_program(n_layers, c))

    def run(self, decision, layer, params, x):
        if decision is None:
            return plain(layer, params, x)
        c, prefix, suffix = decision
        fn, consts = close_over(layer, params, x)
        return _revolve_call(fn, c, prefix, suffix, params, x, consts)

    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        """``t(L, c) + L + 1``: the L − 1 advances of the first sweep are part of t(L, c), each
        of the L turns evaluates its layer, the forward pass the last layer for the output."""
        del sizes
        if n_layers == 1:
            return 1
        return optimal_advances(n_layers, self.resolved(n_layers)) + n_layers + 1

    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        """``(c + 1)·s + r + g``: c slots, the live state, one layer's VJP and its gradient."""
        return (self.resolved(n_layers) + 1) * sizes.state + sizes.residual + sizes.params


def _restore_advance_store(fn, params, consts, row, carry):
    h, pos, slots, slot_pos = carry
    restore_slot, advance_to, store_slot = row[0], row[1], row[2]
    restoring = restore_slot >= 0
    at = jnp.maximum(restore_slot, 0)
    h = jax.tree.map(lambda s, v: jnp.where(restoring, s[at], v), slots, h)
    pos = jnp.where(restoring, slot_pos[at], pos)
    h = lax.fori_loop(
        pos, jnp.maximum(pos, advance_to), lambda i, v: fn(index(params, i), v, *consts), h
    )
    pos = jnp.maximum(pos, advance_to)
    storing = store_slot >= 0
    to = jnp.maximum(store_slot, 0)
    slots = jax.tree.map(
        lambda s, v: lax.dynamic_update_index_in_dim(s, jnp.where(storing, v, s[to]), to, 0),
        slots,
        h,
    )
    slot_pos = slot_pos.at[to].set(jnp.where(storing, pos, slot_pos[to]))
    return h, pos, slots, slot_pos


def _turn(fn, params, consts, turn, pos, h, ct, grads, dconsts):
    def do_turn(h, ct):
        p = index(params, pos)
        _, vjp = jax.vjp(lambda p, v, cs: fn(p, v, *cs), p, h, consts)
        dp, ct, dc = vjp(ct)
        return carried(dp, p), ct, carried(dc, consts)

    def skip(h, ct):
        zeros = jax.tree.map(jnp.zeros_like, (index(params, pos), consts))
        return zeros[0], ct, zeros[1]

    dp, ct, dc = lax.cond(turn > 0, do_turn, skip, h, ct)
    # Each layer turns once, so adding into its (zero) slice writes its gradient in place.
    grads = jax.tree.map(
        lambda g, d: lax.dynamic_update_index_in_dim(
            g, lax.dynamic_index_in_dim(g, pos, keepdims=False) + d, pos, 0
        ),
        grads,
        dp,
    )
    return ct, grads, jax.tree.map(jnp.add, dconsts, dc)


def _interpret(fn, params, consts, rows, carry, adjoint=None):
    """Run program rows from carry = (state, position, slots, slot positions).

    ``adjoint`` = (cotangent, parameter gradient, closure gradient) makes turns take VJPs.
    """

    def step(loop, row):
        carry, adjoint = loop
        carry = _restore_advance_store(fn, params, consts, row, carry)
        if adjoint is not None:
            adjoint = _turn(fn, params, consts, row[3], carry[1], carry[0], *adjoint)
        return (carry, adjoint), None

    return lax.scan(step, (carry, adjoint), jnp.asarray(rows))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _revolve_call(fn, c, prefix, suffix, params, x, consts):
    return _revolve_fwd(fn, c, prefix, suffix, params, x, consts)[0]


def _revolve_fwd(fn, c, prefix, suffix, params, x, consts):
    slots = jax.tree.map(lambda v: jnp.zeros((c, *v.shape), v.dtype).at[0].set(v), x)
    carry = (x, jnp.int32(0), slots, jnp.zeros((c,), jnp.int32))
    rows = np.frombuffer(prefix, np.int32).reshape(-1, 4)
    if len(rows):
        carry = _interpret(fn, params, consts, rows, carry)[0]
    out = fn(index(params, depth(params) - 1), carry[0], *consts)
    return out, (params, consts, carry)


def _revolve_bwd(fn, c, prefix, suffix, residuals, ct):
    del c, prefix
    params, consts, carry = residuals
    adjoint = (ct, jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, consts))
    rows = np.frombuffer(suffix, np.int32).reshape(-1, 4)
    _, (ct, grads, dconsts) = _interpret(fn, params, consts, rows, carry, adjoint)
    return released(grads), ct, released(dconsts)


_revolve_call.defvjp(_revolve_fwd, _revolve_bwd)
