"""Shared test set-up: float64 everywhere unless a test asks for float32, and op samplers."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

settings.register_profile("bpjax", max_examples=4, deadline=None, derandomize=True)
settings.load_profile("bpjax")


def sample_op_args(name: str, seed: int, batch: int, d_in: int, d_out: int, *, soft: bool):
    """Random float64 arguments for the table op ``name``.

    Returns ``(args, options)``. ``soft`` picks probability labels instead of class ids for
    the losses. Inputs are kept away from kinks and clip thresholds, where finite differences
    and the rules legitimately disagree (those points have tests of their own).
    """
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape)

    def labels(classes):
        if soft:
            p = rng.random((batch, classes)) + 0.1
            return p / p.sum(axis=1, keepdims=True)
        return rng.integers(0, classes, size=batch)

    if name == "linear":
        return (normal(batch, d_in), normal(d_in, d_out), normal(d_out)), {}
    if name == "matmul":
        return (normal(batch, d_in), normal(d_in, d_out)), {}
    if name in ("sigmoid", "tanh", "relu"):
        z = normal(batch, d_in) * 3
        z[np.abs(z) < 1e-3] = 0.5
        return (z,), {}
    if name in ("softmax", "log_softmax"):
        return (normal(batch, d_in) * 3,), {"axis": int(rng.choice([0, -1]))}
    if name == "softmax_cross_entropy":
        return (normal(batch, d_out) * 2, labels(d_out)), {}
    if name == "cross_entropy":
        p = rng.random((batch, d_out)) + 0.05
        return (p / p.sum(axis=1, keepdims=True), labels(d_out)), {}
    if name == "mse":
        return (normal(batch, d_out), normal(batch, d_out)), {}
    raise KeyError(name)
