"""Nested segments: k levels of checkpoints, √L segments (Chen et al. 2016) when k = 2.

The L layers are cut into segments of ``c₁`` layers, each segment into sub-segments of ``c₂``,
and so on for ``k − 1`` levels (:func:`segment_sizes`). The forward pass stores the input of
each top-level segment. The backward pass reverses the segments last to first; to reverse a
segment it runs it forward once more storing its sub-segments' inputs, and so on down to the
innermost level, whose ``c_{k−1}`` layers are differentiated with their residuals stored.

It is a ``custom_vjp`` whose backward pass writes each layer's parameter gradient straight into
the stacked gradient (``dynamic_update_index_in_dim``), so no segment's gradient is ever held
apart from it, and whose innermost residuals leave out the parameters (they are the stacked
parameters at a known index). With n₀ = L and n_j = c_j the layers a level-j segment covers,

    M = Σ_{j=1}^{k−1} ⌈n_{j−1} / c_j⌉·s  +  c_{k−1}·r  +  2s + g      (≈ k·L^(1/k) states),

the last term being one layer's VJP: the state, its cotangent and the layer's gradient.
Layer evaluations: L in the forward pass, then per level the forward sweep of every segment
but the last of each parent (whose output nobody needs), and L in the innermost VJPs: at most
k·L, exactly 2L for k = 2. Reverse mode only: grad and grad of grad work, ``jax.jvp`` does not
(a ``custom_vjp`` has no forward-mode rule).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from bpjax import _validate
from bpjax.remat._layer import carried, close_over, depth, index, released
from bpjax.remat._residuals import UNIT, LayerBytes
from bpjax.remat._scan import run_layers
from bpjax.remat._strategy import Strategy


@dataclasses.dataclass(frozen=True)
class Nested(Strategy):
    """``levels`` nested levels of segments of about L^(1/levels) layers.

    ``Nested(2)`` is Chen et al.'s √L segments (``"sqrt"``): memory ≈ 2√L states, each layer
    evaluated twice. With k levels: memory ≈ k·L^(1/k) states, each layer evaluated at most k
    times. Segment lengths minimize :meth:`predict_bytes` for the layer's sizes.
    """

    reverse_only = True  # a custom_vjp: its own backward pass, no forward mode

    levels: int = 2

    def __post_init__(self):
        if not _validate.is_int(self.levels) or self.levels < 2:
            raise ValueError(f"Nested: levels must be an int >= 2, got {self.levels!r}")

    @property
    def name(self) -> str:
        return "sqrt" if self.levels == 2 else f"nested{self.levels}"

    def decide(self, n_layers: int, layer) -> tuple[int, ...]:
        return tuple(segment_sizes(n_layers, self.levels, self.layer_bytes(*_args(layer))))

    def run(self, decision, layer, params, x):
        fn, consts = close_over(layer, params, x)
        return _nested_call(fn, decision, params, x, consts)

    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        chunks = _best_segments(n_layers, self.levels, sizes)[1]
        return n_layers + _reversal_evaluations(n_layers, chunks, stored=True)

    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        """Stored segment inputs and innermost residuals, plus one layer's VJP working set:
        the state and its cotangent (``2s``) and the layer's parameter gradient (``g``)."""
        segments = _best_segments(n_layers, self.levels, sizes)[0]
        return segments + 2 * sizes.state + sizes.params


def _args(layer):
    return layer.layer, layer.params, layer.x


def segment_sizes(n_layers: int, levels: int, sizes: LayerBytes | None = None) -> list[int]:
    """Segment lengths of :class:`Nested`, outermost level first: the layers one segment covers.

    Chosen to minimize the predicted bytes given one layer's :class:`LayerBytes` (without them,
    a state, a layer's residuals and its parameters count alike). Candidates are the divisors
    of the length (segments tile exactly) and ⌈n/q⌉ for powers of two q (a shorter last segment
    then follows the full ones).
    """
    for name, value in (("n_layers", n_layers), ("levels", levels)):
        if not _validate.is_int(value) or value < 1:
            raise ValueError(f"segment_sizes: {name} must be an int >= 1, got {value!r}")
    return list(_best_segments(n_layers, levels, sizes or UNIT)[1])


@functools.lru_cache(maxsize=4096)
def _best_segments(n: int, levels: int, sizes: LayerBytes) -> tuple[int, tuple[int, ...]]:
    """(bytes, segment lengths) minimizing the nested model for n layers and `levels` levels."""
    if levels == 1:
        return n * sizes.residual, ()
    # Every level is kept, even one segment wide, so the schedule has `levels` levels.
    candidates = {d for d in range(1, n + 1) if n % d == 0}
    # With a tail, at least two full segments: the reversal loop then has two iterations or
    # more (see _reverse).
    candidates |= {c for j in range(1, n.bit_length()) if n // (c := math.ceil(n / 2**j)) >= 2}
    best = None
    for chunk in sorted(candidates):
        inner_bytes, inner = _best_segments(chunk, levels - 1, sizes)
        total = math.ceil(n / chunk) * sizes.state + inner_bytes
        if best is None or total < best[0]:
            best = (total, (chunk, *inner))
    return best


def _split(n: int, chunk: int) -> tuple[int, int]:
    """(segments run in a level's forward sweep, length of the last segment, never run)."""
    full, tail = divmod(n, chunk)
    runs = full if tail else full - 1
    return runs, n - runs * chunk


def _reversal_evaluations(n: int, chunks: tuple[int, ...], *, stored: bool) -> int:
    """Layer evaluations to reverse n layers; ``stored``: this level's inputs are already kept."""
    if not chunks:
        return n
    runs, last = _split(n, chunks[0])
    sweep = 0 if stored else runs * chunks[0]
    inner = chunks[1:]
    return (
        sweep
        + runs * _reversal_evaluations(chunks[0], inner, stored=False)
        + _reversal_evaluations(last, inner, stored=False)
    )


def _sweep(fn, params, consts, start, n: int, chunk: int, h):
    """Inputs of the level's full segments (one buffer), and the input of its tail or ``None``.

    The last segment is never run: the backward pass needs only its input.
    """
    full, tail = divmod(n, chunk)
    runs, _ = _split(n, chunk)
    buffer = jax.tree.map(lambda v: jnp.zeros((full, *v.shape), v.dtype), h)

    def body(carry, j):
        h, buffer = carry
        buffer = jax.tree.map(lambda b, v: lax.dynamic_update_index_in_dim(b, v, j, 0), buffer, h)
        return (run_layers(fn, params, consts, start + j * chunk, chunk, h), buffer), None

    if runs:
        h, buffer = lax.scan(body, (h, buffer), jnp.arange(runs))[0]
    if tail:
        return buffer, h
    # One buffer for every full segment, so one loop body reverses them all (see _reverse).
    buffer = jax.tree.map(lambda b, v: b.at[full - 1].set(v), buffer, h)
    return buffer, None


def _layer_vjp(fn, params, consts, i, h):
    """One layer's VJP, split into the residuals to store and where to find the rest.

    ``jax.vjp`` keeps the layer's parameters among its residuals (the x-gradient needs W).
    Storing them would copy every parameter slice; they are the stacked parameters at index i
    and the closure's values, so only the other residuals are returned for storing.
    """
    p = index(params, i)
    out, vjp = jax.vjp(lambda p, v, cs: fn(p, v, *cs), p, h, consts)
    leaves, treedef = jax.tree.flatten(vjp)
    inputs = jax.tree.leaves((p, consts))
    sources = tuple(next((k for k, a in enumerate(inputs) if a is leaf), None) for leaf in leaves)
    stored = [leaf for leaf, k in zip(leaves, sources, strict=True) if k is None]
    return out, stored, (treedef, sources)


def _apply_vjp(params, consts, i, stored, how, ct):
    treedef, sources = how
    inputs = jax.tree.leaves((index(params, i), consts))
    kept = iter(stored)
    leaves = [next(kept) if k is None else inputs[k] for k in sources]
    dp, ct, dc = jax.tree.unflatten(treedef, leaves)(ct)
    return carried(dp, index(params, i)), ct, carried(dc, consts)


def _reverse_innermost(fn, params, consts, start, n: int, h, adjoint):
    how = []

    def forward(h, i):
        out, stored, structure = _layer_vjp(fn, params, consts, start + i, h)
        how.append(structure)
        return out, stored

    _, stored = lax.scan(forward, h, jnp.arange(n))

    def backward(adjoint, item):
        i, stored_i = item
        ct, grads, dconsts = adjoint
        dp, ct, dc = _apply_vjp(params, consts, start + i, stored_i, how[0], ct)
        # Written in place: each layer's slice of the stacked gradient is written once.
        grads = jax.tree.map(
            lambda g, d: lax.dynamic_update_index_in_dim(g, d, start + i, 0), grads, dp
        )
        return (ct, grads, jax.tree.map(jnp.add, dconsts, dc)), None

    return lax.scan(backward, adjoint, (jnp.arange(n), stored), reverse=True)[0]


def _reverse(fn, chunks, params, consts, start, n: int, h, adjoint, stored=None):
    """Reverse layers start..start+n-1 from input h; ``stored``: the level's sweep, done."""
    if h is not None:
        # Recompute this segment only once its cotangent exists: otherwise XLA may schedule the
        # recomputation of two segments together and hold both segments' residuals at once.
        h, adjoint = lax.optimization_barrier((h, adjoint))
    if not chunks:
        return _reverse_innermost(fn, params, consts, start, n, h, adjoint)
    chunk, inner = chunks[0], chunks[1:]
    inputs, h_tail = (
        stored if stored is not None else _sweep(fn, params, consts, start, n, chunk, h)
    )
    full, tail = divmod(n, chunk)
    if tail:
        adjoint = _reverse(fn, inner, params, consts, start + full * chunk, tail, h_tail, adjoint)
    if not full:
        return adjoint

    def body(adjoint, j):
        h_j = index(inputs, j)
        return _reverse(fn, inner, params, consts, start + j * chunk, chunk, h_j, adjoint), None

    # A loop of one iteration would be inlined by XLA beside the tail's reversal, and the two
    # would not share buffers; segment_sizes never picks that split.
    return lax.scan(body, adjoint, jnp.arange(full), reverse=True)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _nested_call(fn, chunks, params, x, consts):
    return _nested_fwd(fn, chunks, params, x, consts)[0]


def _nested_fwd(fn, chunks, params, x, consts):
    n = depth(params)
    inputs, h_tail = _sweep(fn, params, consts, 0, n, chunks[0], x)
    runs, last = _split(n, chunks[0])
    h_last = index(inputs, runs) if h_tail is None else h_tail
    out = run_layers(fn, params, consts, runs * chunks[0], last, h_last)
    return out, (params, consts, inputs, h_tail)


def _nested_bwd(fn, chunks, residuals, ct):
    params, consts, inputs, h_tail = residuals
    zeros = jax.tree.map(jnp.zeros_like, (params, consts))
    n = depth(params)
    ct, grads, dconsts = _reverse(
        fn, chunks, params, consts, 0, n, None, (ct, *zeros), stored=(inputs, h_tail)
    )
    return released(grads), ct, released(dconsts)


_nested_call.defvjp(_nested_fwd, _nested_bwd)
