"""Affine maps: ``linear(x, W, b)`` and ``matmul(a, b)``, primal, JVP and VJP side by side."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bpjax import _validate
from bpjax.rules._broadcast import sum_to
from bpjax.rules._rule import Rule

# ---------------------------------------------------------------------------------------
# linear: z = x W + b, batch-major (textbooks often write W x + b for column vectors; same map).


def linear(x, W, b):
    """Affine layer ``z = x @ W + b``.

    Args:
      x: ``(..., d_in)`` inputs, batch-major (any number of leading axes).
      W: ``(d_in, d_out)`` weights.
      b: ``(d_out,)`` bias.

    Returns:
      ``(..., d_out)``.

    Gradients: ``dx = g W^T``, ``dW = x^T g`` (summed over leading axes), ``db = sum g``.

    >>> import jax.numpy as jnp
    >>> from bpjax import ref
    >>> ref.linear(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4)).shape
    (2, 4)
    """
    return x @ W + b


def _linear_jvp(primals, tangents):
    x, W, b = primals
    tx, tW, tb = tangents
    # Product rule; each term is linear in one tangent, so JAX can transpose it.
    return x @ W + b, tx @ W + x @ tW + tb


def _linear_fwd(x, W, b):
    # dW needs x and dx needs W: both stay alive until the backward pass. The bias is not
    # needed (db is a sum of g), so it is not saved.
    return x @ W + b, (x, W)


def _linear_bwd(residuals, g):
    x, W = residuals
    d_in, d_out = W.shape
    x2, g2 = x.reshape(-1, d_in), g.reshape(-1, d_out)
    return g @ W.T, x2.T @ g2, g2.sum(axis=0)


def _linear_validate(x, W, b):
    for name, a in (("x", x), ("W", W), ("b", b)):
        _validate.require_float("linear", name, a)
    _validate.require_ndim("linear", "W", W, 2, "(d_in, d_out)")
    _validate.require_ndim("linear", "b", b, 1, "(d_out,)")
    if x.ndim < 1:
        raise ValueError("linear: x must be at least 1-D (..., d_in), got a scalar")
    if x.shape[-1] != W.shape[0]:
        raise ValueError(
            f"linear: x has {x.shape[-1]} features but W expects {W.shape[0]} "
            f"(x.shape={tuple(x.shape)}, W.shape={tuple(W.shape)}); W must be (d_in, d_out) "
            f"with d_in = x.shape[-1]"
        )
    if b.shape[0] != W.shape[1]:
        raise ValueError(
            f"linear: b has {b.shape[0]} entries but W has {W.shape[1]} outputs "
            f"(b.shape={tuple(b.shape)}, W.shape={tuple(W.shape)})"
        )


LINEAR = Rule(
    name="linear",
    primal=linear,
    jvp=_linear_jvp,
    vjp_fwd=_linear_fwd,
    vjp_bwd=_linear_bwd,
    validate=_linear_validate,
    forward_formula="z = x W + b",
    jvp_formula="ż = ẋ W + x Ẇ + ḃ",
    vjp_formula="x̄ = z̄ Wᵀ, W̄ = xᵀ z̄, b̄ = Σ_rows z̄",
    saves="x, W",
)

# ---------------------------------------------------------------------------------------
# matmul: C = A B with NumPy's matmul semantics


def matmul(a, b):
    """Matrix product ``C = a @ b`` with ``numpy.matmul`` semantics.

    Args:
      a: ``(..., m, k)``, or ``(k,)`` (promoted to ``(1, k)``, the 1 dropped from the result).
      b: ``(..., k, n)``, or ``(k,)`` (promoted to ``(k, 1)``, the 1 dropped from the result).
        Leading (batch) axes broadcast against each other, as in NumPy.

    Returns:
      ``(..., m, n)`` over the broadcast batch axes. Gradients: ``da = g bᵀ`` and
      ``db = aᵀ g``, each summed over the batch axes its operand was broadcast along.

    >>> import jax.numpy as jnp
    >>> from bpjax import ref
    >>> ref.matmul(jnp.ones((5, 2, 3)), jnp.ones((3, 4))).shape
    (5, 2, 4)
    """
    return jnp.matmul(a, b)


def _matmul_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    return jnp.matmul(a, b), jnp.matmul(ta, b) + jnp.matmul(a, tb)


def _matmul_fwd(a, b):
    # Each operand's gradient needs the other operand, so both are saved.
    return jnp.matmul(a, b), (a, b)


def _matmul_bwd(residuals, g):
    a, b = residuals
    # Promote 1-D operands to matrices (and the cotangent with them), as matmul did.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None] if b.ndim == 1 else g  # restore n = 1 first, then m = 1 before it
    g2 = jnp.expand_dims(g2, -2) if a.ndim == 1 else g2
    da = jnp.matmul(g2, jnp.swapaxes(b2, -1, -2))
    db = jnp.matmul(jnp.swapaxes(a2, -1, -2), g2)
    return sum_to(da, a2.shape).reshape(a.shape), sum_to(db, b2.shape).reshape(b.shape)


def _matmul_validate(a, b):
    _validate.require_float("matmul", "a", a)
    _validate.require_float("matmul", "b", b)
    for name, x, layout in (("a", a, "(..., m, k) or (k,)"), ("b", b, "(..., k, n) or (k,)")):
        if x.ndim == 0:
            raise ValueError(f"matmul: {name} must be at least 1-D {layout}, got a scalar")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: inner dimensions differ: a.shape={tuple(a.shape)} has k={k_a} but "
            f"b.shape={tuple(b.shape)} has k={k_b}"
        )
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise ValueError(
            f"matmul: batch axes do not broadcast: a.shape={tuple(a.shape)} has batch "
            f"{tuple(batch_a)}, b.shape={tuple(b.shape)} has batch {tuple(batch_b)}; each axis "
            "must match or be 1"
        ) from None


MATMUL = Rule(
    name="matmul",
    primal=matmul,
    jvp=_matmul_jvp,
    vjp_fwd=_matmul_fwd,
    vjp_bwd=_matmul_bwd,
    validate=_matmul_validate,
    forward_formula="C = A B (NumPy matmul: 1-D promoted, batch axes broadcast)",
    jvp_formula="Ċ = Ȧ B + A Ḃ",
    vjp_formula="Ā = Σ_bcast C̄ Bᵀ, B̄ = Σ_bcast Aᵀ C̄",
    saves="A, B",
)
