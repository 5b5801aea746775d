"""The loops every strategy is built from: layers always run inside ``lax`` loops.

On XLA:CPU, ``jax.checkpoint`` around the layers of an unrolled Python loop is undone by the
compiler (its optimization barriers are dropped and common-subexpression elimination merges
the recomputation away), while a checkpointed ``lax.scan`` *body* is kept. So the stored
strategies scan over the stacked parameters, and the custom-VJP strategies loop with a dynamic
layer index into them; neither ever copies the weights.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax

from bpjax.remat._layer import index


def plain(layer: Callable, params, x):
    """``lax.scan`` of the layers: reverse mode stores every layer's residuals."""
    return lax.scan(lambda h, p: (layer(p, h), None), x, params)[0]


def checkpointed(layer: Callable, params, x, policy: Callable | None = None):
    """``lax.scan`` over a ``jax.checkpoint``-ed body: what is saved is up to ``policy``."""
    body = jax.checkpoint(lambda h, p: (layer(p, h), None), policy=policy)
    return lax.scan(body, x, params)[0]


def run_layers(fn: Callable, params, consts: tuple, start, n: int, h):
    """Layers ``start .. start + n - 1`` of ``fn(p, h, *consts)``; ``start`` may be traced."""
    if n == 0:
        return h
    return lax.fori_loop(0, n, lambda i, v: fn(index(params, start + i), v, *consts), h)
