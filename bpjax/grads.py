"""Gradient tools: global norm, clipping by global norm and by value, per-layer probes.

Clipping is written by hand on purpose (its parity with ``optax.clip_by_global_norm`` and
``optax.clip`` is tested). The two clip differently:

* by global norm, ``g ← g · min(1, c / ‖g‖)`` with ``‖g‖`` over *all* leaves together: one
  scale for the whole tree, so the update keeps its direction (cosine 1 with the original);
* by value, ``g_i ← clip(g_i, −c, c)`` elementwise: large components are cut, small ones
  kept, so the direction turns toward the diagonal.

Per-layer probes assume :class:`bpjax.models.MLP`'s parameter layout: ``stem`` (first hidden
layer), ``blocks`` (the other hidden layers, stacked on a leading axis) and ``out``. Layer
index 0 is the stem (nearest the input), the last is the output layer.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "global_norm",
    "clip_tree_by_global_norm",
    "clip_tree_by_value",
    "clipping",
    "ClipState",
    "layer_norms",
    "update_ratios",
    "layer_names",
    "first_nonfinite_layer",
    "check_finite",
]


def global_norm(tree) -> jax.Array:
    """``sqrt(Σ_leaves Σ_i g_i²)``: the norm of all leaves concatenated into one vector."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("global_norm: the tree has no leaves")
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))


def clip_tree_by_global_norm(tree, max_norm: float):
    """Rescale ``tree`` so its global norm is at most ``max_norm``; keeps the direction.

    A function of a tree (``optax.clip_by_global_norm`` is a transformation; :func:`clipping`
    wraps this one as a transformation).

    Returns:
      ``(clipped_tree, norm_before)``. Trees already within the bound are returned unchanged.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_tree_by_global_norm: max_norm must be positive, got {max_norm}")
    norm = global_norm(tree)
    scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), tree), norm


def clip_tree_by_value(tree, max_value: float):
    """Clamp every element to ``[-max_value, max_value]``; changes the direction."""
    if not max_value > 0:
        raise ValueError(f"clip_tree_by_value: max_value must be positive, got {max_value}")
    return jax.tree.map(lambda g: jnp.clip(g, -max_value, max_value), tree)


class ClipState(NamedTuple):
    """Clipping keeps no state."""


def clipping(*, max_norm: float | None = None, max_value: float | None = None):
    """The hand-written clips as an ``optax.GradientTransformation`` for ``optax.chain``.

    Value clipping (if any) is applied before norm clipping.
    """

    def init(params):
        del params
        return ClipState()

    def update(updates, state, params=None):
        del params
        if max_value is not None:
            updates = clip_tree_by_value(updates, max_value)
        if max_norm is not None:
            updates, _ = clip_tree_by_global_norm(updates, max_norm)
        return updates, state

    return optax.GradientTransformation(init, update)


def _per_layer(tree, fn):
    """Apply ``fn`` to each layer's array of ``name`` in the MLP layout; returns (layers,)."""
    stem, blocks, out = tree["stem"], tree["blocks"], tree["out"]
    per_block = jax.vmap(fn)(blocks) if jax.tree.leaves(blocks) and blocks["W"].shape[0] else None
    parts = [jnp.atleast_1d(fn(stem))]
    if per_block is not None:
        parts.append(per_block)
    parts.append(jnp.atleast_1d(fn(out)))
    return jnp.concatenate(parts)


def layer_norms(grads, *, param: str = "W") -> jax.Array:
    """Norm of each layer's ``param`` gradient, input layer first: shape ``(depth + 1,)``.

    The vanishing-gradient probe: with sigmoid and no skips these fall geometrically toward
    index 0. Layers without ``param`` (the stem and output layer have no gate ``W_T``) give
    NaN. Works under ``jit``.
    """

    def norm(layer):
        return jnp.linalg.norm(layer[param].ravel()) if param in layer else jnp.float32(jnp.nan)

    return _per_layer(grads, norm)


def update_ratios(updates, params, *, param: str = "W") -> jax.Array:
    """Per layer ``‖update‖ / ‖weight‖``; a healthy step is around 1e-3 (Karpathy's rule)."""
    u = layer_norms(updates, param=param)
    w = layer_norms(params, param=param)
    return u / jnp.maximum(w, jnp.finfo(w.dtype).tiny)


def layer_names(depth: int) -> list[str]:
    """Names for the entries of :func:`layer_norms` of a depth-``depth`` MLP."""
    return ["layer 1 (stem)"] + [f"layer {i}" for i in range(2, depth + 1)] + ["output layer"]


def _all_finite(layer):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(layer)]))


def first_nonfinite_layer(grads) -> str | None:
    """Name of the first layer (from the input) whose gradient has a NaN or Inf, else None."""
    bad = np.asarray(_per_layer(grads, lambda layer: ~_all_finite(layer)))
    if not bad.any():
        return None
    return layer_names(len(bad) - 1)[int(np.argmax(bad))]


def check_finite(grads) -> None:
    """Raise ``FloatingPointError`` naming the first layer whose gradient is NaN/Inf."""
    layer = first_nonfinite_layer(grads)
    if layer is not None:
        raise FloatingPointError(
            f"non-finite gradient in {layer} (counting from the input); the loss diverged: "
            "lower the learning rate, clip by global norm, or scale residual branches"
        )
