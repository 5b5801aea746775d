"""Weight initializers: Gaussian weights with a named variance scaling, one definition that the
pure-function models and the NNX modules both draw from."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def kernel_init(weight_init: str = "he", gain: float = 1.0):
    """:func:`init_weight` as an initializer ``init(key, (fan_in, fan_out), dtype)``.

    The form ``nnx.Linear(kernel_init=...)`` takes, so the NNX modules draw their weights
    with exactly the function the pure-function models use.
    """
    if weight_init not in INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {sorted(INITS)}")

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape
        return init_weight(key, fan_in, fan_out, weight_init=weight_init, gain=gain, dtype=dtype)

    return init
