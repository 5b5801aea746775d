"""Undoing broadcasting in a backward pass: the one helper the rules and the tape share."""

from __future__ import annotations

import jax.numpy as jnp


def sum_to(g, shape):
    """Sum ``g`` down to ``shape``, the shape an operand had before it was broadcast.

    Broadcasting copies a value along the new leading axes and along its size-1 axes, so the
    cotangent of the original is the sum of the cotangents of the copies over those axes.
    """
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    return jnp.sum(g, axis=axes).reshape(shape) if axes else g
