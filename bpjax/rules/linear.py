"""Affine maps: ``linear(x, W, b)`` and ``matmul(a, b)``, primal, JVP and VJP side by side."""

from __future__ import annotations

from bpjax import _validate as v
from bpjax.rules._rule import Rule

# ---------------------------------------------------------------------------------------
# linear: z = x W + b, batch-major (the seed writes W x + b with column vectors; same map).


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
        v.require_float("linear", name, a)
    v.require_ndim("linear", "W", W, 2, "(d_in, d_out)")
    v.require_ndim("linear", "b", b, 1, "(d_out,)")
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
# matmul: C = A B


def matmul(a, b):
    """Matrix product ``C = a @ b``.

    Args:
      a: ``(m, k)``.
      b: ``(k, n)``.

    Returns:
      ``(m, n)``. Gradients: ``da = g b^T``, ``db = a^T g``.
    """
    return a @ b


def _matmul_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    return a @ b, ta @ b + a @ tb


def _matmul_fwd(a, b):
    # Each operand's gradient needs the other operand, so both are saved.
    return a @ b, (a, b)


def _matmul_bwd(residuals, g):
    a, b = residuals
    return g @ b.T, a.T @ g


def _matmul_validate(a, b):
    v.require_float("matmul", "a", a)
    v.require_float("matmul", "b", b)
    v.require_ndim("matmul", "a", a, 2, "(m, k)")
    v.require_ndim("matmul", "b", b, 2, "(k, n)")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul: inner dimensions differ: a.shape={tuple(a.shape)} has k={a.shape[1]} "
            f"but b.shape={tuple(b.shape)} has k={b.shape[0]}"
        )


MATMUL = Rule(
    name="matmul",
    primal=matmul,
    jvp=_matmul_jvp,
    vjp_fwd=_matmul_fwd,
    vjp_bwd=_matmul_bwd,
    validate=_matmul_validate,
    forward_formula="C = A B",
    jvp_formula="Ċ = Ȧ B + A Ḃ",
    vjp_formula="Ā = C̄ Bᵀ, B̄ = Aᵀ C̄",
    saves="A, B",
)
