"""Gradients by forward mode, Hessian-vector products in three orders (Hessians: ``_hessian``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from bpjax.modes import _checks, _sparse

HVP_ORDERS = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")


def grad_fwd(f):
    """``jax.grad`` computed by forward mode: ``n`` JVPs, one per input direction.

    For a scalar loss of ``n`` parameters reverse mode needs one backward pass, forward mode
    ``n`` (vmapped here into one batched program): ``∇f(x)_k = J(x) e_k``.

    Example:
      >>> grad_fwd(lambda x: jnp.sum(x**2))(jnp.arange(3.0))   # [0., 2., 4.]
    """

    def grad(x):
        f_flat, x_flat, _, m = _checks.flatten(f, x)
        if m != 1:
            raise TypeError(f"grad_fwd: f must return a scalar, got {m} outputs")
        if not _checks.has_forward_mode(f_flat, x_flat):
            raise TypeError(f"grad_fwd: {_checks.CUSTOM_VJP_HINT}")
        _, unravel = ravel_pytree(x)
        rows = _sparse.jvp_rows(f_flat, x_flat, jnp.eye(x_flat.size, dtype=x_flat.dtype))
        return unravel(rows[:, 0])

    return grad


def _tree_vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def hvp(f, x, v, *, order: str = "fwd-over-rev"):
    """Hessian-vector product ``H(x) v`` of a scalar ``f``, in one of three orders.

    * ``"fwd-over-rev"``: ``jvp(∇f)(x; v)``: one forward sweep over the gradient program
      (the order JAX's autodiff cookbook recommends);
    * ``"rev-over-rev"``: ``∇_x ⟨∇f(x), v⟩``: differentiates the backward pass again;
    * ``"rev-over-fwd"``: ``∇_x (∂f(x)[v])``: reverse mode over a JVP (needs ``f`` to have
      a forward mode that reverse mode can differentiate: not ``bpjax.rev`` ops).

    All three equal ``jax.hessian(f)(x) @ v``.

    Args:
      f: scalar function of a pytree of float arrays.
      x: the point.
      v: a direction with ``x``'s structure and leaf shapes.
      order: one of :data:`HVP_ORDERS`.

    Returns:
      ``H v`` with ``x``'s structure.

    Example:
      >>> hvp(lambda x: jnp.sum(x**3), jnp.ones(2), jnp.array([1.0, 0.0]))   # [6., 0.]
    """
    if order not in HVP_ORDERS:
        raise ValueError(f"hvp: unknown order {order!r}; choose one of {HVP_ORDERS}")
    _checks.check_scalar(f, x, "hvp")
    _checks.check_tangent(v, x)
    if order == "fwd-over-rev":
        return jax.jvp(jax.grad(f), (x,), (v,))[1]
    if order == "rev-over-rev":
        return jax.grad(lambda y: _tree_vdot(jax.grad(f)(y), v))(x)
    try:
        return jax.grad(lambda y: jax.jvp(f, (y,), (v,))[1])(x)
    except (NotImplementedError, TypeError) as err:
        if "custom_lin" not in str(err) and "custom_vjp" not in str(err):
            raise
        raise TypeError(
            "hvp(order='rev-over-fwd'): f has a custom_vjp (e.g. a bpjax.rev op), whose "
            "forward derivative reverse mode cannot differentiate; use order='fwd-over-rev' "
            "or 'rev-over-rev', or build f from bpjax.fwd or bpjax.ref ops"
        ) from err
