"""Softmax and log-softmax over one axis; primal, JVP and VJP side by side.

Both subtract the running maximum before exponentiating (so ``exp`` never overflows) and
keep that shift out of the gradient with ``stop_gradient``: softmax is invariant to it, so
its true derivative is zero, and differentiating through ``max`` would only add ties.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bpjax import _validate
from bpjax.rules._rule import Rule


def _shifted(z, axis):
    if z.shape[axis] == 0:
        return z  # nothing to normalise: an empty axis gives an empty result, as in NumPy
    return z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))


def _validator(op):
    def validate(z, *, axis=-1):
        _validate.require_float(op, "z", z)
        if z.ndim == 0:
            raise ValueError(f"{op}: z must have at least one axis to normalise, got a scalar")
        if not _validate.is_int(axis):
            raise TypeError(
                f"{op}: axis must be one int (the axis normalised to sum to one), got "
                f"{axis!r} ({type(axis).__name__}); for several axes, reshape them into one"
            )
        if not -z.ndim <= axis < z.ndim:
            raise ValueError(
                f"{op}: axis={axis} is out of range for z.shape={tuple(z.shape)} "
                f"(valid: {-z.ndim} .. {z.ndim - 1})"
            )

    return validate


# --- softmax ---------------------------------------------------------------------------


def softmax(z, *, axis=-1):
    """Softmax ``a_i = exp(z_i) / Σ_j exp(z_j)`` along ``axis``.

    Args:
      z: any shape with at least one axis, e.g. ``(batch, classes)``.
      axis: the axis normalised to sum to one (keyword-only).

    Returns:
      ``a`` with ``z``'s shape (empty if the axis is). Jacobian
      ``∂a_i/∂z_j = a_i(δ_ij − a_j)``; the VJP never forms it: ``z̄ = a ⊙ (ā − Σ_j ā_j a_j)``.
    """
    e = jnp.exp(_shifted(z, axis))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _softmax_jvp(primals, tangents, *, axis=-1):
    (z,), (tz,) = primals, tangents
    a = softmax(z, axis=axis)
    return a, a * (tz - jnp.sum(a * tz, axis=axis, keepdims=True))


def _softmax_fwd(z, *, axis=-1):
    a = softmax(z, axis=axis)
    return a, a  # The Jacobian a_i(δ_ij − a_j) needs only the output.


def _softmax_bwd(a, g, *, axis=-1):
    return (a * (g - jnp.sum(g * a, axis=axis, keepdims=True)),)


SOFTMAX = Rule(
    name="softmax",
    primal=softmax,
    jvp=_softmax_jvp,
    vjp_fwd=_softmax_fwd,
    vjp_bwd=_softmax_bwd,
    validate=_validator("softmax"),
    forward_formula="a = e^z / Σ e^z",
    jvp_formula="ȧ = a ⊙ (ż − ⟨a, ż⟩)",
    vjp_formula="z̄ = a ⊙ (ā − ⟨ā, a⟩)",
    saves="a (the output)",
)


# --- log_softmax -----------------------------------------------------------------------


def log_softmax(z, *, axis=-1):
    """Log-softmax ``z_i − log Σ_j exp(z_j)`` along ``axis``, computed without overflow.

    Args:
      z: any shape with at least one axis.
      axis: keyword-only.

    Returns:
      ``z``'s shape. VJP ``z̄ = ḡ − softmax(z) Σ_j ḡ_j``.
    """
    s = _shifted(z, axis)
    return s - jnp.log(jnp.sum(jnp.exp(s), axis=axis, keepdims=True))


def _log_softmax_jvp(primals, tangents, *, axis=-1):
    (z,), (tz,) = primals, tangents
    out = log_softmax(z, axis=axis)
    return out, tz - jnp.sum(jnp.exp(out) * tz, axis=axis, keepdims=True)


def _log_softmax_fwd(z, *, axis=-1):
    out = log_softmax(z, axis=axis)
    return out, out  # softmax = exp(output): no need to keep z as well.


def _log_softmax_bwd(out, g, *, axis=-1):
    return (g - jnp.exp(out) * jnp.sum(g, axis=axis, keepdims=True),)


LOG_SOFTMAX = Rule(
    name="log_softmax",
    primal=log_softmax,
    jvp=_log_softmax_jvp,
    vjp_fwd=_log_softmax_fwd,
    vjp_bwd=_log_softmax_bwd,
    validate=_validator("log_softmax"),
    forward_formula="o = z − log Σ e^z",
    jvp_formula="ȯ = ż − ⟨softmax z, ż⟩",
    vjp_formula="z̄ = ō − softmax(z) Σ ō",
    saves="o (the output; softmax = e^o)",
)
