"""A plain MLP as a list of ``(W, b)`` pairs, the format :mod:`bpjax.manual` uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bpjax import rev
from bpjax.models._inits import init_weight
from bpjax.models._ops import namespace


def init_layers(key, sizes, *, weight_init="he", dtype=jnp.float32):
    """Parameters of a plain MLP with layer widths ``sizes = (d_in, h_1, …, d_out)``.

    Returns:
      A list of ``(W, b)`` with ``W: (sizes[l], sizes[l+1])`` and zero biases.
    """
    if len(sizes) < 2:
        raise ValueError(f"init_layers: sizes needs at least (d_in, d_out), got {sizes}")
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (init_weight(k, a, b, weight_init=weight_init, dtype=dtype), jnp.zeros(b, dtype))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def layers_logits(params, x, *, ops=rev, activation="relu"):
    """Logits ``(batch, d_out)`` of the MLP ``params`` (see :func:`init_layers`) at ``x``.

    ``ops`` is the rule namespace that differentiates it: ``bpjax.ref``, ``rev`` or ``fwd``
    (the module or its name).
    """
    ops = namespace(ops)
    act = getattr(ops, activation)
    a = x
    for W, b in params[:-1]:
        a = act(ops.linear(a, W, b))
    W, b = params[-1]
    return ops.linear(a, W, b)


def layers_loss(params, x, labels, *, ops=rev, activation="relu"):
    """Mean softmax cross-entropy of :func:`layers_logits` against ``labels``."""
    return namespace(ops).softmax_cross_entropy(
        layers_logits(params, x, ops=ops, activation=activation), labels
    )
