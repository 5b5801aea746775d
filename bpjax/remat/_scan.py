"""The loops every strategy is built from: the layers always run inside ``lax`` loops.

The stored strategies scan over the stacked parameters (:func:`plain`, :func:`checkpointed`);
the custom-VJP strategies loop with a dynamic layer index into them (:func:`run_layers`).
Neither copies the weights.
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
    # The checkpoint wraps a scan body, never layers of an unrolled Python loop: XLA:CPU drops
    # the optimization barriers of the latter and CSE merges the recomputation away
    # (jax-ml/jax#19822), while a checkpointed scan body is kept.
    body = jax.checkpoint(lambda h, p: (layer(p, h), None), policy=policy)
    return lax.scan(body, x, params)[0]


def run_layers(fn: Callable, params, consts: tuple, start, n: int, h):
    """Layers ``start .. start + n - 1`` of ``fn(p, h, *consts)``; ``start`` may be traced."""
    if n == 0:
        return h
    return lax.fori_loop(0, n, lambda i, v: fn(index(params, start + i), v, *consts), h)
