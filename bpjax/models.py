"""Models as pure functions over pytrees.

:func:`init_layers` / :func:`layers_logits` / :func:`layers_loss` describe a plain MLP as a
list of ``(W, b)`` pairs, the format :mod:`bpjax.manual` uses, so the same parameters can be
differentiated by hand (manual), by hand-written rules (``rev``/``fwd``) and by autodiff
(``ref``) and compared one to one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bpjax import rev

INITS = {
    # name: variance scale as a function of (fan_in, fan_out)
    "he": lambda fan_in, fan_out: 2.0 / fan_in,  # He et al. 2015, for ReLU
    "xavier": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),  # Glorot & Bengio 2010
    "lecun": lambda fan_in, fan_out: 1.0 / fan_in,  # LeCun 1998, for tanh/SELU
}


def init_weight(key, fan_in: int, fan_out: int, *, weight_init="he", gain=1.0, dtype=jnp.float32):
    """A ``(fan_in, fan_out)`` Gaussian weight with the named variance scaling times ``gain²``.

    ``gain > 1`` provokes exploding activations and gradients on purpose.
    """
    if weight_init not in INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {sorted(INITS)}")
    std = gain * math.sqrt(INITS[weight_init](fan_in, fan_out))
    return std * jax.random.normal(key, (fan_in, fan_out), dtype)


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

    ``ops`` is the rule namespace that differentiates it: ``bpjax.ref``, ``rev`` or ``fwd``.
    """
    act = getattr(ops, activation)
    a = x
    for W, b in params[:-1]:
        a = act(ops.linear(a, W, b))
    W, b = params[-1]
    return ops.linear(a, W, b)


def layers_loss(params, x, labels, *, ops=rev, activation="relu"):
    """Mean softmax cross-entropy of :func:`layers_logits` against ``labels``."""
    return ops.softmax_cross_entropy(
        layers_logits(params, x, ops=ops, activation=activation), labels
    )
