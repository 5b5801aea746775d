"""Forward vs reverse mode: Jacobians that pick their mode from measured cost, HVPs.

For ``f: R^n → R^m``, forward mode builds the Jacobian one column per JVP (``n`` tangents),
reverse mode one row per VJP (``m`` cotangents). Which is cheaper is not decided by the
shapes alone: a JVP and a VJP of the same function can cost very different amounts (a VJP
must first run the forward pass and keep its residuals; XLA may drop work the other mode
needs). So :func:`choose_mode` asks XLA. It compiles the vmapped JVP with 1 and with 2
tangents and the vmapped VJP with 1 and 2 cotangents; the difference is the *marginal*
cost of one more tangent/cotangent, and the prediction for the full Jacobian is::

    cost_fwd(n) = cost_jvp(1) + (n − 1) · (cost_jvp(2) − cost_jvp(1))
    cost_rev(m) = cost_vjp(1) + (m − 1) · (cost_vjp(2) − cost_vjp(1))

for FLOPs and for bytes accessed; the two are combined into seconds with the device's GEMM
rate and memory bandwidth, measured once per process (:func:`machine_rates`). With
``calibrate=True`` the programs are timed instead, at batches of ``min(k, 32)`` and
``min(k, 256)`` directions (exact when ``k ≤ 256``, extrapolated linearly beyond), because
XLA's estimates can be far from the run time: on an elementwise-heavy map we measured
reverse mode 10-18x slower than its FLOP estimate implied relative to forward mode.
This is the automatic mode JAX users have asked for since 2020 (jax-ml/jax#2344).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpjax import measure

MODES = ("fwd", "rev", "auto")
HVP_ORDERS = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")


# --- input and output checks -----------------------------------------------------------


def _check_inputs(x, what="x") -> None:
    leaves = jax.tree_util.tree_leaves_with_path(x)
    if not leaves:
        raise TypeError(f"{what} has no array leaves to differentiate")
    for path, leaf in leaves:
        name = f"{what}{jax.tree_util.keystr(path)}"
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | float):
            raise TypeError(
                f"{name} is a {type(leaf).__name__}, not an array; every leaf of {what} must be "
                "a floating jax/numpy array"
            )
        if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            raise TypeError(
                f"{name} has dtype {jnp.asarray(leaf).dtype}: integer inputs are not "
                f"differentiable; cast with .astype(jnp.float32) or close over it in f"
            )


def _check_outputs(f, x):
    try:
        out = jax.eval_shape(f, x)
    except TypeError as err:
        raise TypeError(f"f could not be traced at x: {err}") from err
    for path, leaf in jax.tree_util.tree_leaves_with_path(out):
        if not isinstance(leaf, jax.ShapeDtypeStruct) or not jnp.issubdtype(
            leaf.dtype, jnp.floating
        ):
            kind = getattr(leaf, "dtype", type(leaf).__name__)
            raise TypeError(
                f"f must return floating arrays (a pytree of them); output"
                f"{jax.tree_util.keystr(path)} is {kind}"
            )
    if not jax.tree.leaves(out):
        raise TypeError("f returned no arrays")
    return out


def _flat(f, x):
    """``f`` as a map between flat vectors, plus what is needed to rebuild pytrees."""
    _check_inputs(x)
    out = _check_outputs(f, x)
    x_flat, unravel = ravel_pytree(x)

    def f_flat(v):
        return ravel_pytree(f(unravel(v)))[0]

    m = sum(int(np.prod(o.shape)) for o in jax.tree.leaves(out))
    return f_flat, x_flat, out, m


# --- Jacobians -------------------------------------------------------------------------


def _jac_fwd(f_flat, x_flat, basis):
    push = lambda t: jax.jvp(f_flat, (x_flat,), (t,))[1]  # noqa: E731
    return jax.vmap(push, out_axes=1)(basis)  # (m, n): one column per tangent


def _jac_rev(f_flat, x_flat, basis):
    _, pull = jax.vjp(f_flat, x_flat)
    return jax.vmap(lambda u: pull(u)[0])(basis)  # (m, n): one row per cotangent


def _unflatten_jacobian(J, x, out):
    """Arrange a flat ``(m, n)`` Jacobian the way ``jax.jacrev`` does for pytrees."""
    in_leaves, in_tree = jax.tree.flatten(x)
    out_leaves, out_tree = jax.tree.flatten(out)
    in_shapes = [jnp.shape(a) for a in in_leaves]
    out_shapes = [o.shape for o in out_leaves]
    in_cuts = np.cumsum([int(np.prod(s)) for s in in_shapes])[:-1]
    out_cuts = np.cumsum([int(np.prod(s)) for s in out_shapes])[:-1]
    blocks = []
    for row, o_shape in zip(jnp.split(J, out_cuts, axis=0), out_shapes, strict=True):
        cols = jnp.split(row, in_cuts, axis=1)
        blocks.append(
            jax.tree.unflatten(
                in_tree,
                [
                    c.reshape(tuple(o_shape) + tuple(s))
                    for c, s in zip(cols, in_shapes, strict=True)
                ],
            )
        )
    return jax.tree.unflatten(out_tree, blocks)


def jacobian(f, x, *, mode: str = "auto", calibrate: bool = False):
    """The Jacobian of ``f`` at ``x``, by forward mode, reverse mode, or whichever is cheaper.

    Args:
      f: a function of one pytree of floating arrays, returning a pytree of floating arrays.
      x: the point, a pytree with ``n`` scalars in all.
      mode: ``"fwd"`` (vmapped JVPs over the ``n`` input basis vectors), ``"rev"`` (vmapped
        VJPs over the ``m`` output basis vectors) or ``"auto"`` (:func:`choose_mode`).
      calibrate: with ``"auto"``, decide from short timings rather than XLA's estimates.

    Returns:
      The Jacobian with ``jax.jacrev``'s layout: the output's pytree structure, each leaf
      holding the input's structure with arrays of shape ``out_leaf.shape + in_leaf.shape``.
    """
    if mode not in MODES:
        raise ValueError(f"jacobian: unknown mode {mode!r}; choose one of {MODES}")
    f_flat, x_flat, out, m = _flat(f, x)
    if mode == "auto":
        mode = choose_mode(f, x, calibrate=calibrate).mode
    n = x_flat.size
    if mode == "fwd":
        J = _jac_fwd(f_flat, x_flat, jnp.eye(n, dtype=x_flat.dtype))
    else:
        out_dtype = jax.eval_shape(f_flat, x_flat).dtype
        J = _jac_rev(f_flat, x_flat, jnp.eye(m, dtype=out_dtype))
    return _unflatten_jacobian(J, x, out)


class ModeChoice(NamedTuple):
    """Why :func:`choose_mode` chose as it did.

    Attributes:
      mode: ``"fwd"`` or ``"rev"``.
      n, m: input and output sizes.
      fwd, rev: predicted cost of the full Jacobian in each mode: ``{"flops", "bytes",
        "seconds"}`` (XLA basis) or ``{"seconds"}`` (timing basis); ``fwd`` is ``None`` when
        ``f`` has no forward mode (a ``custom_vjp`` inside).
      basis: ``"xla"`` or ``"timing"``.
      reason: one sentence for humans.
    """

    mode: str
    n: int
    m: int
    fwd: dict | None
    rev: dict
    basis: str
    reason: str


@functools.cache
def machine_rates(backend: str | None = None) -> dict:
    """The device's GEMM rate (FLOP/s) and memory bandwidth (bytes/s), measured once.

    Used to turn XLA's FLOP and byte estimates into seconds. About half a second on a CPU.
    """
    del backend  # part of the cache key only
    a = jnp.ones((512, 512), jnp.float32)
    gemm = measure.compare({"gemm": (lambda a: a @ a, (a,))}, rounds=5, warmup=1)["gemm"]
    v = jnp.ones((8 * 1024 * 1024,), jnp.float32)  # 32 MiB
    copy = measure.compare({"axpy": (lambda v: 2.0 * v + 1.0, (v,))}, rounds=5, warmup=1)["axpy"]
    return {
        "flops_per_s": 2 * 512**3 / gemm.median,
        "bytes_per_s": 2 * v.nbytes / copy.median,
    }


def _xla_cost(fn, *args):
    cost = measure.cost(fn, *args)
    return cost["flops"], cost["bytes accessed"]


def _timed(fn, *args):
    return measure.compare({"f": (fn, args)}, rounds=5, warmup=1, min_round_seconds=0.005)[
        "f"
    ].median


def _extrapolate(cost_a, cost_b, a, b, count):
    """Cost of ``count`` directions, linear through the costs at batch sizes ``a < b``."""
    if a == b:
        return cost_b
    return cost_b + (count - b) * max(cost_b - cost_a, 0.0) / (b - a)


def choose_mode(f, x, *, calibrate: bool = False) -> ModeChoice:
    """Predict the cost of ``jacobian(f, x)`` in both modes and pick the cheaper.

    See the module docstring for the cost model. ``calibrate=True`` times the four small
    programs instead of reading XLA's estimates (slower, but sees what XLA's estimates miss,
    e.g. that a wide matrix product runs far faster per FLOP than a vector product).
    """
    f_flat, x_flat, _, m = _flat(f, x)
    n = x_flat.size
    out_dtype = jax.eval_shape(f_flat, x_flat).dtype
    # XLA's estimates are exactly linear in the batch, so 1 and 2 suffice; timings are noisy
    # and carry a fixed overhead, so the marginal cost is taken over a wider batch.
    if calibrate:
        # Timings: the marginal cost per direction falls as the batch widens (vectorisation),
        # so take it between the two widest batches we can afford, up to 256 directions.
        pair = {mode: (min(c, 32), min(c, 256)) for mode, c in (("fwd", n), ("rev", m))}
    else:
        pair = {"fwd": (1, 2), "rev": (1, 2)}
    # x is an argument, not a closed-over constant: XLA would otherwise fold the primal
    # computation away at compile time and the estimates would miss it.
    progs = {
        ("fwd", k): (
            lambda x, b: _jac_fwd(f_flat, x, b),
            x_flat,
            jnp.ones((k, n), x_flat.dtype),
        )
        for k in set(pair["fwd"])
    } | {
        ("rev", k): (
            lambda x, b: _jac_rev(f_flat, x, b),
            x_flat,
            jnp.ones((k, m), out_dtype),
        )
        for k in set(pair["rev"])
    }
    rates = None if calibrate else machine_rates(jax.default_backend())
    predicted: dict[str, dict | None] = {}
    for mode, count in (("fwd", n), ("rev", m)):
        try:
            a, b = pair[mode]
            if calibrate:
                ta, tb = (_timed(*progs[(mode, j)]) for j in (a, b))
                predicted[mode] = {"seconds": _extrapolate(ta, tb, a, b, count)}
            else:
                (fa, ba), (fb, bb) = (_xla_cost(*progs[(mode, j)]) for j in (a, b))
                flops = _extrapolate(fa, fb, a, b, count)
                nbytes = _extrapolate(ba, bb, a, b, count)
                predicted[mode] = {
                    "flops": flops,
                    "bytes": nbytes,
                    "seconds": flops / rates["flops_per_s"] + nbytes / rates["bytes_per_s"],
                }
        except TypeError as err:
            if mode == "fwd" and "custom_vjp" in str(err):
                predicted[mode] = None
            else:
                raise
    if predicted["fwd"] is None:
        return ModeChoice(
            "rev",
            n,
            m,
            None,
            predicted["rev"],
            "timing" if calibrate else "xla",
            "f contains a custom_vjp, which has no forward mode",
        )
    t_fwd, t_rev = predicted["fwd"]["seconds"], predicted["rev"]["seconds"]
    mode = "fwd" if t_fwd < t_rev else "rev"
    reason = (
        f"{'forward' if mode == 'fwd' else 'reverse'} mode predicted "
        f"{max(t_fwd, t_rev) / max(min(t_fwd, t_rev), 1e-30):.2f}x cheaper "
        f"({n} JVP columns vs {m} VJP rows)"
    )
    return ModeChoice(
        mode, n, m, predicted["fwd"], predicted["rev"], "timing" if calibrate else "xla", reason
    )


# --- gradient by forward mode, Hessian-vector products ---------------------------------


def grad_fwd(f):
    """``jax.grad`` computed by forward mode: ``n`` JVPs, one per input direction.

    The seed's point made executable: for a scalar loss of ``n`` parameters reverse mode
    needs one backward pass, forward mode ``n`` (vmapped here into one batched program).
    """

    def grad(x):
        f_flat, x_flat, _, m = _flat(f, x)
        if m != 1:
            raise TypeError(f"grad_fwd: f must return a scalar, got {m} outputs")
        _, unravel = ravel_pytree(x)
        J = _jac_fwd(f_flat, x_flat, jnp.eye(x_flat.size, dtype=x_flat.dtype))
        return unravel(J[0])

    return grad


def _tree_vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def hvp(f, x, v, *, order: str = "fwd-over-rev"):
    """Hessian-vector product ``H(x) v`` of a scalar ``f``, in one of three orders.

    * ``"fwd-over-rev"``: ``jvp(grad f)(x; v)``: one forward sweep over the gradient program
      (JAX's autodiff cookbook recommends it);
    * ``"rev-over-rev"``: ``grad(x ↦ ⟨∇f(x), v⟩)``: differentiates the backward pass again;
    * ``"rev-over-fwd"``: ``grad(x ↦ ∂f(x)[v])``: reverse mode over a JVP.

    All three equal ``jax.hessian(f)(x) @ v``; which is fastest is measured in
    ``experiments/mode_cost.py``. ``x`` and ``v`` are pytrees of the same structure.
    """
    if order not in HVP_ORDERS:
        raise ValueError(f"hvp: unknown order {order!r}; choose one of {HVP_ORDERS}")
    _check_inputs(x)
    _check_inputs(v, "v")
    if order == "fwd-over-rev":
        return jax.jvp(jax.grad(f), (x,), (v,))[1]
    if order == "rev-over-rev":
        return jax.grad(lambda y: _tree_vdot(jax.grad(f)(y), v))(x)
    return jax.grad(lambda y: jax.jvp(f, (y,), (v,))[1])(x)


def hessian(f, x):
    """The full Hessian of a scalar ``f`` (forward-over-reverse, as ``jax.hessian``)."""
    _check_inputs(x)
    return jax.jacfwd(jax.jacrev(f))(x)
