"""Elementwise activations: sigmoid, tanh, relu; primal, JVP and VJP side by side.

Each derivative is written in terms of what is cheapest to keep: all three save their *output*
(σ' = a(1 − a), tanh' = 1 − a², relu' = 1[a > 0]), so the pre-activation need not be
stored, and the output is what the next layer keeps for its own gradient anyway.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bpjax import _validate
from bpjax.rules._rule import Rule


def _float_only(op):
    def validate(z):
        _validate.require_float(op, "z", z)

    return validate


# --- sigmoid ---------------------------------------------------------------------------


def sigmoid(z):
    """Logistic sigmoid ``σ(z) = 1 / (1 + exp(-z))``, elementwise, any shape.

    Computed by ``lax.logistic``, which never overflows: ``σ(-1000) = 0``, ``σ(1000) = 1``.
    Derivative ``σ'(z) = σ(z)(1 − σ(z)) ≤ 1/4`` (the vanishing-gradient bound).
    """
    return jax.nn.sigmoid(z)


def _sigmoid_jvp(primals, tangents):
    (z,), (tz,) = primals, tangents
    a = sigmoid(z)
    return a, a * (1 - a) * tz


def _sigmoid_fwd(z):
    a = sigmoid(z)
    return a, a  # σ' is a function of the output alone: keep a, not z.


def _sigmoid_bwd(a, g):
    return (g * a * (1 - a),)


SIGMOID = Rule(
    name="sigmoid",
    primal=sigmoid,
    jvp=_sigmoid_jvp,
    vjp_fwd=_sigmoid_fwd,
    vjp_bwd=_sigmoid_bwd,
    validate=_float_only("sigmoid"),
    forward_formula="a = 1 / (1 + e^(−z))",
    jvp_formula="ȧ = a(1 − a) ż",
    vjp_formula="z̄ = ā a(1 − a)",
    saves="a (the output)",
)


# --- tanh ------------------------------------------------------------------------------


def tanh(z):
    """Hyperbolic tangent, elementwise, any shape. Derivative ``1 − tanh²(z) ≤ 1``."""
    return jnp.tanh(z)


def _tanh_jvp(primals, tangents):
    (z,), (tz,) = primals, tangents
    a = jnp.tanh(z)
    return a, (1 - a * a) * tz


def _tanh_fwd(z):
    a = jnp.tanh(z)
    return a, a  # tanh' = 1 − a²: the output suffices.


def _tanh_bwd(a, g):
    return (g * (1 - a * a),)


TANH = Rule(
    name="tanh",
    primal=tanh,
    jvp=_tanh_jvp,
    vjp_fwd=_tanh_fwd,
    vjp_bwd=_tanh_bwd,
    validate=_float_only("tanh"),
    forward_formula="a = tanh z",
    jvp_formula="ȧ = (1 − a²) ż",
    vjp_formula="z̄ = ā (1 − a²)",
    saves="a (the output)",
)


# --- relu ------------------------------------------------------------------------------


def relu(z):
    """Rectified linear unit ``max(z, 0)``, elementwise, any shape.

    The derivative is 1 for ``z > 0`` and 0 for ``z < 0``; at the kink ``z = 0`` we choose
    0, as ``jax.nn.relu`` and PyTorch do, so a unit that sits exactly at zero gets no update.
    NaN propagates (``relu(nan) = nan``) rather than being hidden as 0.
    """
    return jnp.where(_passes(z), z, jnp.zeros_like(z))


def _passes(z):
    # "not z <= 0" rather than "z > 0": identical on numbers, but NaN passes through, so a
    # NaN upstream stays visible in the output and in the gradient.
    return jnp.logical_not(z <= 0)


def _relu_jvp(primals, tangents):
    (z,), (tz,) = primals, tangents
    passes = _passes(z)
    return jnp.where(passes, z, jnp.zeros_like(z)), jnp.where(passes, tz, jnp.zeros_like(tz))


def _relu_fwd(z):
    a = jnp.where(_passes(z), z, jnp.zeros_like(z))
    # Keep the output a, not z or a separate mask: passes(a) == passes(z) for every z (NaN and
    # ±0 included), and in a network a is the next layer's input, which that layer's dW = aᵀ δ
    # keeps anyway, so the rule adds nothing to the activation cache. (A boolean mask would
    # add a byte per element, and XLA:CPU turned it back into a float pre-activation z.)
    return a, a


def _relu_bwd(a, g):
    return (jnp.where(_passes(a), g, jnp.zeros_like(g)),)


RELU = Rule(
    name="relu",
    primal=relu,
    jvp=_relu_jvp,
    vjp_fwd=_relu_fwd,
    vjp_bwd=_relu_bwd,
    validate=_float_only("relu"),
    forward_formula="a = max(z, 0)",
    jvp_formula="ȧ = 1[z > 0] ż",
    vjp_formula="z̄ = ā 1[z > 0]  (0 at z = 0)",
    saves="a (the output; the next layer keeps it anyway)",
)
