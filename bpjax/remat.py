"""Rematerialization (gradient checkpointing) for a stack of L layers, measured.

The activation cache of reverse mode grows with depth: to differentiate ``x_L = f_L(...f_1(x_0))``
the backward pass needs what each layer saved in the forward pass. Rematerialization trades
memory for time: store only some states (checkpoints) and recompute the rest when the backward
pass reaches them.

Contract: ``layer(p, x) -> x`` maps a state to a state of the same shape and dtype; ``params``
is a pytree whose leaves are stacked on a leading axis of length L (``params["W"]: (L, d, d)``).
:func:`stack` runs the L layers with a strategy:

=============  ====================================  ======================  ==================
strategy       what is stored                        activation memory       layer evaluations
=============  ====================================  ======================  ==================
``"none"``     every layer's residuals               L·r                     L
``"every"``    each layer's input state              L·s + r                 2L
``"sqrt"``     √L segment inputs, one segment's      ≈ 2√L (Chen et al.)     2L
               residuals while it is reversed
``Nested(k)``  k levels of nested segments           ≈ k·L^(1/k)             k·L
``Binomial``   c states, placed by revolve           (c+1)·s + r             t(L, c) + L + 1
``"dots"``...  what a JAX policy saves (matmul       L·(saved per layer)     2L at most
               outputs, named values, host offload)
=============  ====================================  ======================  ==================

(s: bytes of one state; r: bytes one layer saves for its backward pass.)

Why scans: on XLA:CPU, ``jax.checkpoint`` around the layers of an unrolled Python loop is undone
by the compiler (the optimization barriers are dropped and CSE merges the recomputation away;
jax-ml/jax#19822). Here every strategy runs the layers inside ``lax.scan`` over the stacked
parameters, and checkpoints a scan *body*, which XLA keeps. Nested segments reshape the stacked
parameters (a free view), so no level stores copies of the weights.

Binomial checkpointing (Griewank 1992; Griewank & Walther 2000, "revolve") reverses L steps with
c stored states so that no step is advanced more than r times, where r is the least integer with
β(c, r) = C(c + r, c) ≥ L, with the fewest forward steps possible:
``t(L, c) = r·L − β(c + 1, r − 1)``. JAX has no binomial ``scan`` (jax-ml/jax#2139); this module
implements it as a ``custom_vjp`` whose backward pass interprets a revolve schedule computed in
Python (:func:`revolve`) with a ``lax.scan`` over instructions: restore a state from a slot,
advance it some layers, store it in a slot, or turn (one layer's VJP). Known inefficiencies: the
schedule is fixed for a known L (no online variant as in Equinox's checkpointed while loop), the
forward pass evaluates the last layer once more than revolve would (the ``+ 1``), and it supports
first-order reverse mode only (no ``jvp`` of the stack, no grad of grad).

:func:`plan` picks the fastest strategy whose compiled memory fits a byte budget and
:func:`measure` reports, for one strategy: predicted bytes, the jaxpr's residual bytes, XLA's
compiled temporary bytes, the runtime peak where the backend reports it, and the number of layer
evaluations per gradient (counted at run time with a callback, not derived).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Literal

from bpjax.measure import compile_fn, temp_bytes

# ---------------------------------------------------------------------------------------------
# Strategies


@dataclasses.dataclass(frozen=True)
class Store:
    """Store every layer's residuals (no rematerialization)."""

    name = "none"


@dataclasses.dataclass(frozen=True)
class Every:
    """Checkpoint every layer: store each layer's input, recompute the layer in the backward."""

    name = "every"


@dataclasses.dataclass(frozen=True)
class Nested:
    """``levels`` nested scans over segments of about L^(1/levels) layers, each level checkpointed.

    ``Nested(2)`` is Chen et al.'s √L segments (``"sqrt"``): memory ≈ 2√L states, each layer
    evaluated twice. With k levels: memory ≈ k·L^(1/k), each layer evaluated k times.
    """

    levels: int = 2

    def __post_init__(self):
        if not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"Nested: levels must be an int >= 2, got {self.levels!r}")

    @property
    def name(self):
        return "sqrt" if self.levels == 2 else f"nested{self.levels}"


@dataclasses.dataclass(frozen=True)
class Binomial:
    """Revolve's binomial schedule with ``checkpoints`` stored states (the input included).

    ``checkpoints=None`` uses ⌈log2 L⌉ (at least 2), Chen et al.'s O(log L) memory regime.
    """

    checkpoints: int | None = None

    def __post_init__(self):
        c = self.checkpoints
        if c is not None and (not isinstance(c, int) or c < 1):
            raise ValueError(f"Binomial: checkpoints must be an int >= 1 or None, got {c!r}")

    @property
    def name(self):
        return "binomial" if self.checkpoints is None else f"binomial{self.checkpoints}"

    def resolved(self, n_layers: int) -> int:
        if self.checkpoints is not None:
            return self.checkpoints
        return max(2, math.ceil(math.log2(max(n_layers, 2))))


@dataclasses.dataclass(frozen=True)
class Policy:
    """``jax.checkpoint(layer, policy=policy)`` in the scan body: the policy decides what to save.

    Use :func:`dots`, :func:`names` or :func:`offload` rather than building one by hand.
    """

    policy: Callable = dataclasses.field(compare=False)
    name: str = "policy"


def dots() -> Policy:
    """Save matmul outputs without batch dimensions (``checkpoint_policies.dots_saveable``)."""
    return Policy(jax.checkpoint_policies.dots_saveable, "dots")


def names(*saved: str) -> Policy:
    """Save only values tagged with ``jax.ad_checkpoint.checkpoint_name(x, name)`` in ``saved``."""
    if not saved:
        raise ValueError("names: give at least one checkpoint_name to save")
    return Policy(jax.checkpoint_policies.save_only_these_names(*saved), "names:" + ",".join(saved))


def offload(*saved: str) -> Policy:
    """Save the named values in host memory (``save_and_offload_only_these_names``).

    Needs a backend with a host memory space (GPU, TPU); :func:`stack` raises a clear error at
    compile time on backends without one.
    """
    if not saved:
        raise ValueError("offload: give at least one checkpoint_name to offload")
    policy = jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[],
        names_which_can_be_offloaded=list(saved),
        offload_src="device",
        offload_dst="pinned_host",
    )
    return Policy(policy, "offload:" + ",".join(saved))


STRATEGIES: dict[str, object] = {
    "none": Store(),
    "every": Every(),
    "sqrt": Nested(2),
    "nested": Nested(3),
    "binomial": Binomial(),
    "dots": dots(),
}


def resolve(strategy) -> object:
    """A strategy object from a name in :data:`STRATEGIES` or an object; clear error otherwise."""
    if isinstance(strategy, Store | Every | Nested | Binomial | Policy):
        return strategy
    if isinstance(strategy, str) and strategy in STRATEGIES:
        return STRATEGIES[strategy]
    raise ValueError(
        f"unknown remat strategy {strategy!r}: use one of {sorted(STRATEGIES)}, "
        "or Nested(levels=k), Binomial(checkpoints=c), dots(), names(...), offload(...)"
    )


# ---------------------------------------------------------------------------------------------
# Checks


def _depth(params) -> int:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("remat: params has no arrays; stack the layers' params on a leading axis")
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(lengths) != 1 or None in lengths:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(
            "remat: every params leaf must be stacked on a leading axis of the same length L, "
            f"got shapes {shapes}"
        )
    (n_layers,) = lengths
    if n_layers < 1:
        raise ValueError("remat: params are stacked on an axis of length 0; need L >= 1")
    return int(n_layers)


def _spec(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def _layer_spec(params):
    """Shape and dtype of one layer's slice of the stacked ``params``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), params)


def _check_layer(layer, params, x):
    out = jax.eval_shape(layer, _layer_spec(params), x)
    x_spec = _spec(x)
    if jax.tree.structure(out) != jax.tree.structure(x_spec) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x_spec), strict=True)
    ):
        raise ValueError(
            "remat: layer(p, x) must return a state shaped like x "
            f"({jax.tree.map(lambda a: (a.shape, str(a.dtype)), x_spec)}), got "
            f"{jax.tree.map(lambda a: (a.shape, str(a.dtype)), out)}"
        )


# ---------------------------------------------------------------------------------------------
# What one layer saves


@dataclasses.dataclass(frozen=True)
class LayerBytes:
    """Bytes of one layer: its state (input/output), its residuals, its parameters.

    Attributes:
      state: bytes of ``x`` (what a checkpoint stores).
      residual: bytes ``jax.vjp(layer, p, x)`` saves for the backward pass, the input state
        included, parameters (and views of them) excluded: what "none" stores per layer.
      params: bytes of one layer's parameters (its gradient is staged at this size).
    """

    state: int
    residual: int
    params: int


_VIEWS = {"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "copy", "copy_p"}


def residuals(f: Callable, *args) -> list[dict]:
    """What ``jax.vjp(f, *args)`` saves, read from its jaxpr (as ``print_saved_residuals``).

    Returns one dict per residual: ``shape``, ``dtype``, ``bytes`` and ``source``: ``"arg i"``
    (an input kept as it is), ``"view of arg i"`` (a reshape/transpose of one, free in XLA) or
    ``"computed"``. Args may be arrays or ``jax.ShapeDtypeStruct``.
    """
    leaves, tree = jax.tree.flatten(args)

    def vjp_residuals(*flat):
        return jax.tree.leaves(jax.vjp(f, *jax.tree.unflatten(tree, flat))[1])

    jaxpr = jax.make_jaxpr(vjp_residuals)(*leaves).jaxpr
    arg_of = {v: i for i, v in enumerate(jaxpr.invars)}
    view_of = {}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _VIEWS and len(eqn.invars) == 1:
            source = eqn.invars[0]
            if not isinstance(source, Literal):
                origin = arg_of.get(source, view_of.get(source))
                if origin is not None:
                    view_of[eqn.outvars[0]] = origin
    out = []
    for v in jaxpr.outvars:
        if isinstance(v, Literal):
            continue
        aval = v.aval
        if v in arg_of:
            source = f"arg {arg_of[v]}"
        elif v in view_of:
            source = f"view of arg {view_of[v]}"
        else:
            source = "computed"
        out.append(
            {
                "shape": tuple(aval.shape),
                "dtype": str(aval.dtype),
                "bytes": int(math.prod(aval.shape) * aval.dtype.itemsize),
                "source": source,
            }
        )
    return out


def _nbytes(tree) -> int:
    return sum(int(math.prod(a.shape) * np.dtype(a.dtype).itemsize) for a in jax.tree.leaves(tree))


def _saved_bytes(layer, p0, x) -> int:
    n_param_leaves = len(jax.tree.leaves(p0))
    total = 0
    for res in residuals(layer, p0, x):
        if res["source"] != "computed" and int(res["source"].split()[-1]) < n_param_leaves:
            continue  # the stacked parameters are kept by the caller anyway
        total += res["bytes"]
    return total


def layer_bytes(layer: Callable, params, x) -> LayerBytes:
    """:class:`LayerBytes` of ``layer`` for one slice of the stacked ``params`` and state ``x``."""
    p0, x = _layer_spec(params), _spec(x)
    return LayerBytes(state=_nbytes(x), residual=_saved_bytes(layer, p0, x), params=_nbytes(p0))


# ---------------------------------------------------------------------------------------------
# Scans


def _plain(layer, params, x):
    return lax.scan(lambda h, p: (layer(p, h), None), x, params)[0]


def _every(layer, params, x):
    body = jax.checkpoint(lambda h, p: (layer(p, h), None))
    return lax.scan(body, x, params)[0]


def _policy(layer, params, x, policy):
    body = jax.checkpoint(lambda h, p: (layer(p, h), None), policy=policy)
    return lax.scan(body, x, params)[0]


def segment_sizes(n_layers: int, levels: int, sizes: LayerBytes | None = None) -> list[int]:
    """Segment lengths of :class:`Nested`, outermost level first: the layers one body covers.

    Chosen to minimize the predicted bytes (:func:`predict_bytes`) given one layer's
    :class:`LayerBytes`; without them, a state, a layer's residuals and its parameters count
    alike. Candidates are the divisors of the length (segments tile exactly) and ⌈n/q⌉ for
    powers of two q (a shorter tail segment then runs after the full ones).
    """
    sizes = sizes or LayerBytes(state=1, residual=1, params=1)
    return list(_best_segments(n_layers, levels, sizes)[1])


@functools.lru_cache(maxsize=4096)
def _best_segments(n: int, levels: int, sizes: LayerBytes) -> tuple[int, tuple[int, ...]]:
    """(bytes, segment lengths) minimizing the nested model for n layers and `levels` levels."""
    if levels == 1:
        return n * sizes.residual, ()
    # Every level is kept, even one segment wide, so Nested(k) evaluates each layer k times.
    candidates = {d for d in range(1, n + 1) if n % d == 0}
    candidates |= {math.ceil(n / 2**j) for j in range(1, n.bit_length())}
    best = None
    for chunk in sorted(candidates):
        inner_bytes, inner = _best_segments(chunk, levels - 1, sizes)
        # Segment inputs stored at this level, the gradient of one segment's parameters (XLA
        # stages it before copying it into the stacked gradient), and what the inner levels hold.
        total = math.ceil(n / chunk) * sizes.state + chunk * sizes.params + inner_bytes
        if best is None or total < best[0]:
            best = (total, (chunk, *inner))
    return best


def _nested(layer, params, x, sizes: Sequence[int]):
    if not sizes:
        return _plain(layer, params, x)
    chunk, inner = sizes[0], sizes[1:]
    n = _depth(params)
    full = n // chunk

    @jax.checkpoint
    def segment(h, p):
        return _nested(layer, p, h, inner), None

    if full:
        head = jax.tree.map(lambda a: a[: full * chunk].reshape(full, chunk, *a.shape[1:]), params)
        x = lax.scan(segment, x, head)[0]
    if n - full * chunk:
        tail = jax.tree.map(lambda a: a[full * chunk :], params)
        x = segment(x, tail)[0]
    return x


# ---------------------------------------------------------------------------------------------
# Binomial checkpointing (revolve)


def beta(c: int, r: int) -> int:
    """β(c, r) = C(c + r, c): steps reversible with c checkpoints, each advanced at most r times."""
    return math.comb(c + r, c) if r >= 0 else 0


def repetitions(n_steps: int, checkpoints: int) -> int:
    """The least r with β(c, r) ≥ L: how often the most-advanced step is advanced."""
    r = 0
    while beta(checkpoints, r) < n_steps:
        r += 1
    return r


def optimal_advances(n_steps: int, checkpoints: int) -> int:
    """Griewank's minimum number of forward steps to reverse L steps with c checkpoints.

    ``t(L, c) = r·L − β(c + 1, r − 1)`` with r = :func:`repetitions`; the forward step inside each
    turn (one layer's VJP) is not counted. ``t(L, 1) = L(L − 1)/2``.
    """
    if n_steps <= 1:
        return 0
    r = repetitions(n_steps, checkpoints)
    return r * n_steps - beta(checkpoints + 1, r - 1)


def revolve(n_steps: int, checkpoints: int) -> list[tuple]:
    """Revolve's schedule for L steps and c slots (slot 0 holds the input), as a list of events.

    Events: ``("restore", slot)``, ``("advance", from, to)``, ``("store", slot)``, ``("turn", i)``
    (the VJP of step i from its input state). The split of a segment of n steps with c slots puts
    the next checkpoint m steps in, with ``max(β(c, r−2), n − β(c−1, r)) ≤ m ≤ min(β(c, r−1),
    n − β(c−1, r−1))`` (the least such m is taken): the head is then reversible with c slots and
    r−1 further advances, the tail with c−1 slots and r, and the total equals t(n, c).
    """
    if checkpoints < 1:
        raise ValueError(f"revolve: need at least 1 checkpoint slot, got {checkpoints}")
    events: list[tuple] = []
    state = {"pos": 0}  # the position of the live state, or None after a turn consumed it

    def restore(slot, start):
        if state["pos"] != start:
            events.append(("restore", slot))
            state["pos"] = start

    def advance(to):
        if to > state["pos"]:
            events.append(("advance", state["pos"], to))
            state["pos"] = to

    def turn(i):
        events.append(("turn", i))
        state["pos"] = None

    # Iterative, so deep schedules do not hit Python's recursion limit.
    stack = [(0, n_steps, checkpoints, 0)]
    while stack:
        start, n, c, slot = stack.pop()
        if n == 1:
            restore(slot, start)
            turn(start)
        elif c == 1:
            for i in reversed(range(n)):
                restore(slot, start)
                advance(start + i)
                turn(start + i)
        else:
            r = repetitions(n, c)
            m = max(1, beta(c, r - 2), n - beta(c - 1, r))
            restore(slot, start)
            advance(start + m)
            events.append(("store", slot + 1))
            # Reverse the tail first (c - 1 slots above this one), then the head with all c.
            stack.append((start, m, c, slot))
            stack.append((start + m, n - m, c - 1, slot + 1))
    return events


def schedule_advances(events) -> int:
    """Forward steps a schedule advances (turns not counted), to compare with ``t(L, c)``."""
    return sum(e[2] - e[1] for e in events if e[0] == "advance")


def _program(events):
    """Events as int32 rows ``(restore_slot, advance_to, store_slot, turn)``, -1 for "none".

    Consecutive events fold into one row in that order, so each row does at most one of each.
    """
    rows = []
    row = [-1, -1, -1, 0]
    order = {"restore": 0, "advance": 1, "store": 2, "turn": 3}
    last = -1
    for event in events:
        kind = order[event[0]]
        if kind <= last:
            rows.append(row)
            row = [-1, -1, -1, 0]
        if kind == 0:
            row[0] = event[1]
        elif kind == 1:
            row[1] = event[2]
        elif kind == 2:
            row[2] = event[1]
        else:
            row[3] = 1
        last = kind
        if kind == 3:
            rows.append(row)
            row = [-1, -1, -1, 0]
            last = -1
    if row != [-1, -1, -1, 0]:
        rows.append(row)
    return np.asarray(rows, dtype=np.int32).reshape(-1, 4)


def _binomial(layer, params, x, checkpoints: int):
    n_layers = _depth(params)
    if n_layers == 1:
        return _plain(layer, params, x)
    c = min(checkpoints, n_layers)
    events = revolve(n_layers, c)
    first_turn = next(i for i, e in enumerate(events) if e[0] == "turn")
    # The forward pass runs the schedule up to its first turn (one sweep to the last state,
    # storing checkpoints on the way), then evaluates the last layer for the output.
    prefix, suffix = _program(events[:first_turn]), _program(events[first_turn:])
    return _revolve_call(layer, c, prefix.tobytes(), suffix.tobytes(), params, x)


def _index(tree, i):
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), tree)


def _run(layer, params, program, carry, *, ct=None, grads=None):
    """Interpret a revolve program: carry = (state, position, slots, slot positions)."""

    def step(loop, row):
        (h, pos, slots, slot_pos), ct, grads = loop
        restore_slot, advance_to, store_slot, turn = row[0], row[1], row[2], row[3]
        restoring = restore_slot >= 0
        at = jnp.maximum(restore_slot, 0)
        h = jax.tree.map(lambda s, v: jnp.where(restoring, s[at], v), slots, h)
        pos = jnp.where(restoring, slot_pos[at], pos)
        h = lax.fori_loop(
            pos, jnp.maximum(pos, advance_to), lambda i, v: layer(_index(params, i), v), h
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
        if ct is not None:

            def do_turn(h, ct):
                _, vjp = jax.vjp(layer, _index(params, pos), h)
                return vjp(ct)

            def skip(h, ct):
                return jax.tree.map(jnp.zeros_like, _index(params, pos)), ct

            dp, ct = lax.cond(turn > 0, do_turn, skip, h, ct)
            # Each layer turns once, so adding into its (zero) slot writes its gradient.
            grads = jax.tree.map(
                lambda g, d: lax.dynamic_update_index_in_dim(
                    g, lax.dynamic_index_in_dim(g, pos, keepdims=False) + d, pos, 0
                ),
                grads,
                dp,
            )
        return ((h, pos, slots, slot_pos), ct, grads), None

    return lax.scan(step, (carry, ct, grads), jnp.asarray(program))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _revolve_call(layer, c, prefix, suffix, params, x):
    return _revolve_fwd(layer, c, prefix, suffix, params, x)[0]


def _revolve_fwd(layer, c, prefix, suffix, params, x):
    n_layers = _depth(params)
    slots = jax.tree.map(lambda v: jnp.zeros((c, *v.shape), v.dtype).at[0].set(v), x)
    slot_pos = jnp.zeros((c,), jnp.int32)
    carry = (x, jnp.int32(0), slots, slot_pos)
    program = np.frombuffer(prefix, np.int32).reshape(-1, 4)
    if len(program):
        carry = _run(layer, params, program, carry)[0]
    h, pos, slots, slot_pos = carry
    out = layer(_index(params, n_layers - 1), h)
    return out, (params, carry)


def _revolve_bwd(layer, c, prefix, suffix, residuals, ct):
    params, carry = residuals
    grads = jax.tree.map(jnp.zeros_like, params)
    program = np.frombuffer(suffix, np.int32).reshape(-1, 4)
    _, ct, grads = _run(layer, params, program, carry, ct=ct, grads=grads)
    return grads, ct


_revolve_call.defvjp(_revolve_fwd, _revolve_bwd)


# ---------------------------------------------------------------------------------------------
# The entry point


def stack(layer: Callable, params, x, *, strategy="sqrt"):
    """Run L layers ``x ← layer(params[i], x)`` for i = 0..L-1, rematerialized by ``strategy``.

    Args:
      layer: ``layer(p, x) -> x``, a pure function; ``p`` is one layer's slice of ``params``,
        the output has x's shape and dtype.
      params: pytree whose leaves are stacked on a leading axis of length L.
      x: the input state, e.g. ``(batch, width)``.
      strategy: a name in :data:`STRATEGIES` (``"none"``, ``"every"``, ``"sqrt"``, ``"nested"``,
        ``"binomial"``, ``"dots"``) or an object: ``Nested(levels=k)``,
        ``Binomial(checkpoints=c)``, :func:`dots`, :func:`names`, :func:`offload`.

    Returns:
      The final state, shaped like ``x``. Gradients are the same whichever strategy (up to
      floating-point reassociation); only memory and time differ.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = lambda p, x: jnp.tanh(x @ p["W"])
      >>> params = {"W": jnp.ones((16, 4, 4)) * 0.1}
      >>> y = stack(layer, params, jnp.ones((2, 4)), strategy="sqrt")
      >>> y.shape
      (2, 4)
    """
    strategy = resolve(strategy)
    n_layers = _depth(params)
    _check_layer(layer, params, x)
    if isinstance(strategy, Store):
        return _plain(layer, params, x)
    if isinstance(strategy, Every):
        return _every(layer, params, x)
    if isinstance(strategy, Nested):
        sizes = segment_sizes(n_layers, strategy.levels, layer_bytes(layer, params, x))
        return _nested(layer, params, x, sizes)
    if isinstance(strategy, Binomial):
        return _binomial(layer, params, x, strategy.resolved(n_layers))
    return _policy(layer, params, x, strategy.policy)


# ---------------------------------------------------------------------------------------------
# Prediction, measurement, planning


def evaluations(strategy, n_layers: int) -> int:
    """Layer evaluations per gradient (forward pass plus recomputation) from theory.

    ``"none"``: L; ``"every"``, ``"sqrt"``: 2L; ``Nested(k)``: k·L; ``Binomial(c)``:
    t(L, c) + L + 1 (the L − 1 advances of the first sweep are part of t; each of the L turns
    evaluates its layer; the forward pass evaluates the last layer once for the output);
    policies: 2L (the layer is re-run, though only the ops the policy did not save do work).
    """
    strategy = resolve(strategy)
    if isinstance(strategy, Store):
        return n_layers
    if isinstance(strategy, Every | Policy):
        return 2 * n_layers
    if isinstance(strategy, Nested):
        return strategy.levels * n_layers
    c = min(strategy.resolved(n_layers), n_layers)
    if n_layers == 1:
        return 1
    return optimal_advances(n_layers, c) + n_layers + 1


def predict_bytes(strategy, n_layers: int, sizes: LayerBytes, *, policy_bytes: int | None = None):
    """Predicted activation memory of a gradient through ``stack``, in bytes.

    The model (s = state, r = a layer's residuals, g = a layer's parameters, all from
    :class:`LayerBytes`): ``"none"`` L·r; ``"every"`` L·s + r + g; ``Nested`` Σ (segments stored at
    each level)·s + (innermost length)·r + Σ (segment length)·g, the last term because XLA stages
    a segment's parameter gradient before copying it into the stacked one; ``Binomial(c)``
    (c + 1)·s + r + g (c slots, the live state and one layer's VJP; the gradient is written in
    place); a policy L·p + r + g with p what the checkpointed layer saves (``policy_bytes``).
    """
    strategy = resolve(strategy)
    s, r, g = sizes.state, sizes.residual, sizes.params
    if isinstance(strategy, Store):
        return n_layers * r
    if isinstance(strategy, Every):
        return n_layers * s + r + g
    if isinstance(strategy, Nested):
        return _best_segments(n_layers, strategy.levels, sizes)[0]
    if isinstance(strategy, Binomial):
        return (min(strategy.resolved(n_layers), n_layers) + 1) * s + r + g
    if policy_bytes is None:
        raise ValueError("predict_bytes: a policy strategy needs policy_bytes (see measure)")
    return n_layers * policy_bytes + r + g


def _policy_bytes(layer, params, x, policy) -> int:
    return _saved_bytes(jax.checkpoint(layer, policy=policy), _layer_spec(params), _spec(x))


def predict(layer: Callable, params, x, *, strategy="sqrt", sizes=None) -> int:
    """:func:`predict_bytes` for this layer and these params (policies included)."""
    strategy = resolve(strategy)
    sizes = sizes or layer_bytes(layer, params, x)
    extra = None
    if isinstance(strategy, Policy):
        extra = _policy_bytes(layer, params, x, strategy.policy)
    return predict_bytes(strategy, _depth(params), sizes, policy_bytes=extra)


def _loss(layer, strategy):
    def loss(params, x):
        out = stack(layer, params, x, strategy=strategy)
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))

    return loss


def gradient(layer: Callable, params, x, *, strategy="sqrt"):
    """``(d params, d x)`` of ``sum(stack(layer, params, x))``: what :func:`measure` compiles."""
    return jax.grad(_loss(layer, strategy), argnums=(0, 1))(params, x)


def count_evaluations(layer: Callable, params, x, *, strategy="sqrt") -> int:
    """Layer evaluations in one gradient, counted at run time by a host callback in the layer.

    The callback takes a value of the state, so JAX cannot hoist it out of a loop as invariant,
    and XLA does not merge side effects, so each recomputation is counted.
    """
    calls = [0]

    def tick(_):
        calls[0] += 1

    def counting(p, h):
        jax.debug.callback(tick, jnp.ravel(jax.tree.leaves(h)[0])[0])
        return layer(p, h)

    grads = jax.jit(functools.partial(gradient, counting, strategy=strategy))(params, x)
    jax.block_until_ready(grads)
    return calls[0]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Memory figures of one strategy's gradient, in bytes.

    Attributes:
      strategy: its name.
      n_layers: L.
      predicted: :func:`predict_bytes`.
      jaxpr_residuals: bytes of what the gradient's jaxpr saves between its forward and backward
        passes (computed values only; inputs and free views of them are not counted).
      compiled_temp: ``memory_analysis().temp_size_in_bytes`` of the compiled gradient.
      runtime_peak: bytes the run added above what was in use before it, from the device's
        ``peak_bytes_in_use`` (GPU, TPU; ``None`` on CPU, and ``None`` when an earlier, larger
        run in the same process hides it: measure strategies from least memory to most).
      evaluations: theory (:func:`evaluations`).
    """

    strategy: str
    n_layers: int
    predicted: int
    jaxpr_residuals: int
    compiled_temp: int
    runtime_peak: int | None
    evaluations: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(layer: Callable, params, x, *, strategy="sqrt", run: bool = True) -> Measurement:
    """Predicted, jaxpr, compiled and (where reported) runtime memory of one strategy."""
    strategy = resolve(strategy)
    loss = _loss(layer, strategy)
    saved = sum(r["bytes"] for r in residuals(loss, params, x) if r["source"] == "computed")
    compiled, _ = compile_fn(jax.grad(loss, argnums=(0, 1)), params, x)
    temp = int(compiled.memory_analysis().temp_size_in_bytes)
    peak = None
    if run:
        device = jax.devices()[0]
        before = device.memory_stats() or {}
        jax.block_until_ready(compiled(params, x))
        after = device.memory_stats() or {}
        # The backend keeps one process-wide high-water mark: a run shows its own peak only
        # if it raises the mark; then peak − (bytes in use before) is what this run added.
        if "peak_bytes_in_use" in after and after["peak_bytes_in_use"] > before.get(
            "peak_bytes_in_use", 0
        ):
            peak = int(after["peak_bytes_in_use"] - before.get("bytes_in_use", 0))
    return Measurement(
        strategy=strategy.name,
        n_layers=_depth(params),
        predicted=predict(layer, params, x, strategy=strategy),
        jaxpr_residuals=saved,
        compiled_temp=temp,
        runtime_peak=peak,
        evaluations=evaluations(strategy, _depth(params)),
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`plan` chose and why.

    Attributes:
      strategy: the strategy object to pass to :func:`stack`.
      predicted_bytes: its predicted activation memory.
      compiled_bytes: its compiled temp memory (checked against the budget), or ``None`` when
        ``verify=False``.
      evaluations: layer evaluations per gradient (the time cost the choice minimizes).
      considered: ``(name, predicted bytes, evaluations)`` of every candidate, fastest first.
    """

    strategy: object
    predicted_bytes: int
    compiled_bytes: int | None
    evaluations: int
    considered: tuple

    def __str__(self):
        fits = "" if self.compiled_bytes is None else f", compiled {self.compiled_bytes:,} B"
        return (
            f"plan: {self.strategy.name} (predicted {self.predicted_bytes:,} B{fits}, "
            f"{self.evaluations} layer evaluations per gradient)"
        )


def candidates(n_layers: int) -> list:
    """Strategies :func:`plan` considers, roughly fastest first."""
    out = [Store(), Every(), Nested(2), Nested(3), Nested(4)]
    c_max = max(2, 2 * math.ceil(math.log2(max(n_layers, 2))))
    out += [Binomial(c) for c in range(min(c_max, n_layers), 0, -1)]
    return out


def plan(layer: Callable, params, x, *, budget_bytes: int, verify: bool = True) -> Plan:
    """The fastest strategy whose memory fits ``budget_bytes`` (activation/temporary memory).

    Candidates (:func:`candidates`) are ranked by layer evaluations per gradient, then by
    predicted bytes; the first whose prediction fits is compiled and its ``temp_size_in_bytes``
    checked against the budget (``verify=True``); if the compiler needs more than predicted,
    the next candidate is tried. Raises ``ValueError`` when nothing fits, naming the smallest
    figure seen.
    """
    if not isinstance(budget_bytes, int | np.integer) or budget_bytes <= 0:
        raise ValueError(f"plan: budget_bytes must be a positive int, got {budget_bytes!r}")
    n_layers = _depth(params)
    _check_layer(layer, params, x)
    sizes = layer_bytes(layer, params, x)
    ranked = sorted(
        (
            (evaluations(s, n_layers), predict(layer, params, x, strategy=s, sizes=sizes), i, s)
            for i, s in enumerate(candidates(n_layers))
        ),
        key=lambda t: (t[0], t[1], t[2]),
    )
    considered = tuple((s.name, b, e) for e, b, _, s in ranked)
    smallest = None
    for evals, predicted, _, strategy in ranked:
        if predicted > budget_bytes:
            smallest = predicted if smallest is None else min(smallest, predicted)
            continue
        compiled = None
        if verify:
            compiled = temp_bytes(jax.grad(_loss(layer, strategy), argnums=(0, 1)), params, x)
            smallest = compiled if smallest is None else min(smallest, compiled)
            if compiled > budget_bytes:
                continue
        return Plan(strategy, predicted, compiled, evals, considered)
    raise ValueError(
        f"plan: no strategy fits budget_bytes={budget_bytes:,}; the least memory any candidate "
        f"needs is about {smallest:,} bytes (Binomial(checkpoints=1) stores only the input, at "
        "L(L-1)/2 extra layer evaluations)"
    )
