"""A linear map with a custom transpose that survives ``jvp``, ``vmap`` and transposition.

:func:`~bpjax.remat.while_loop` must give JAX both directions of one loop: forward mode (a
tangent carried step by step beside the state) and reverse mode (a checkpointed reverse
sweep). A ``custom_vjp`` function refuses ``jax.jvp``; a ``custom_jvp`` function is reversed
by transposing its tangent computation, and a ``lax.while_loop`` of unknown length cannot be
transposed. So the loop is a ``custom_jvp`` whose tangent is :func:`apply`: a primitive that
evaluates ``fn(res, lin)`` (the forward-mode loop) and, when JAX transposes it, calls
``transpose(res, ct)`` (the reverse sweep) instead of transposing ``fn``.

``jax.custom_derivatives.linear_call`` has the same idea but no batching rule and no JVP rule
for residuals that carry tangents (``vmap(grad(f))`` and ``jacfwd(grad(f))`` fail on it). This
primitive adds both:

* batching: ``fn`` and ``transpose`` are ``vmap``-ped and the primitive bound again, so a
  batched tangent can still be transposed (``grad(vmap(f))``);
* JVP: ``d fn(res, lin) = fn(res, d lin) + ∂_res fn(res, lin)·d res``; the second term is
  forward mode through ``fn`` and is itself an :func:`apply` whose transpose raises
  :class:`ReverseOverReverseError`: it is what reverse-over-reverse (``grad(grad(f))``) would
  need, and a while loop cannot provide it. Forward-over-reverse (``jax.jacfwd(jax.grad(f))``,
  ``jax.hessian``) never transposes it and works.

The transpose of ``apply(fn, transpose)`` is ``apply(transpose, fn)``: transposing twice
gives ``fn`` back.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["ReverseOverReverseError", "apply", "forward_only"]


class ReverseOverReverseError(TypeError):
    """Raised when reverse mode is asked to differentiate a reverse sweep of a while loop."""


def _refuse(*_):
    raise ReverseOverReverseError(
        "remat.while_loop: reverse mode through the gradient of a while loop (grad of grad) "
        "is not supported: the reverse sweep is itself a loop of unknown length. Use "
        "forward-over-reverse instead: jax.jacfwd(jax.grad(f)), jax.hessian(f), or "
        "jax.jvp(jax.grad(f), (x,), (v,)) for a Hessian-vector product"
    )


_linear_p = Primitive("bpjax_linear")
_linear_p.multiple_results = True


def _bind(fn: Callable, transpose: Callable, res: list, lin: list) -> list:
    """Bind the primitive on flat lists: ``fn(*res, *lin)`` and ``transpose(*res, *cts)``."""
    lin_avals = tuple(jax.core.ShapedArray(np.shape(x), jnp.result_type(x)) for x in lin)
    specs = [jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in (*res, *lin)]
    out = jax.eval_shape(fn, *specs)
    out_avals = tuple(jax.core.ShapedArray(o.shape, o.dtype) for o in out)
    return _linear_p.bind(
        *res,
        *lin,
        fn=fn,
        transpose=transpose,
        n_res=len(res),
        lin_avals=lin_avals,
        out_avals=out_avals,
    )


def apply(fn: Callable, transpose: Callable, res, lin):
    """``fn(res, lin)``, linear in ``lin``, whose transpose is ``transpose(res, ct)``.

    Args:
      fn: ``fn(res, lin) -> out``; linear in the pytree ``lin`` (inexact arrays).
      transpose: ``transpose(res, ct) -> lin_ct``, with ``ct`` shaped like ``out`` and the
        result shaped like ``lin``: the transpose of ``lin ↦ fn(res, lin)``.
      res: pytree of arrays ``fn`` is not linear in (residuals).
      lin: pytree of inexact arrays.

    Returns:
      ``fn(res, lin)``.
    """
    res_flat, res_tree = jax.tree.flatten(res)
    lin_flat, lin_tree = jax.tree.flatten(lin)
    n_res = len(res_flat)
    out_tree = jax.tree.structure(jax.eval_shape(fn, res, lin))

    def flat_fn(*args):
        r = jax.tree.unflatten(res_tree, args[:n_res])
        return jax.tree.leaves(fn(r, jax.tree.unflatten(lin_tree, args[n_res:])))

    def flat_transpose(*args):
        r = jax.tree.unflatten(res_tree, args[:n_res])
        cts = transpose(r, jax.tree.unflatten(out_tree, args[n_res:]))
        if jax.tree.structure(cts) != lin_tree:
            raise TypeError(
                f"linear transpose returned structure {jax.tree.structure(cts)}, "
                f"expected the structure of lin {lin_tree}"
            )
        return jax.tree.leaves(cts)

    out = _bind(flat_fn, flat_transpose, res_flat, lin_flat)
    return jax.tree.unflatten(out_tree, out)


def _impl(*args, fn, transpose, n_res, lin_avals, out_avals):
    del transpose, n_res, lin_avals, out_avals
    return fn(*args)


def _abstract_eval(*args, fn, transpose, n_res, lin_avals, out_avals):
    del args, fn, transpose, n_res, lin_avals
    return list(out_avals)


def _jvp(primals, tangents, *, fn, transpose, n_res, lin_avals, out_avals):
    del lin_avals, out_avals
    res, lin = list(primals[:n_res]), list(primals[n_res:])
    d_res, d_lin = tangents[:n_res], tangents[n_res:]
    out = _bind(fn, transpose, res, lin)
    d_lin = [ad.instantiate_zeros(t) for t in d_lin]
    d_out = _bind(fn, transpose, res, d_lin)
    moving = [i for i, t in enumerate(d_res) if type(t) is not ad.Zero and _inexact(res[i])]
    if moving:
        # ∂_res fn(res, lin)·d res: forward mode through fn, with a transpose that refuses.
        def along_res(*args):
            base, d = list(args[: len(primals)]), args[len(primals) :]

            def of_moving(*vals):
                full = list(base)
                for i, v in zip(moving, vals, strict=True):
                    full[i] = v
                return fn(*full)

            return jax.jvp(of_moving, [base[i] for i in moving], list(d))[1]

        extra = _bind(along_res, _refuse, [*res, *lin], [d_res[i] for i in moving])
        d_out = [a + b for a, b in zip(d_out, extra, strict=True)]
    return out, d_out


def _transpose(cts, *args, fn, transpose, n_res, lin_avals, out_avals):
    res = list(args[:n_res])
    if any(ad.is_undefined_primal(x) for x in res):
        # Only reverse-over-reverse transposes with respect to the residuals.
        _refuse()
    cts = [
        jnp.zeros(a.shape, a.dtype) if type(ct) is ad.Zero else ct
        for ct, a in zip(cts, out_avals, strict=True)
    ]
    lin_cts = _bind(transpose, fn, res, cts)
    return [None] * n_res + list(lin_cts)


def _batch(args, dims, *, fn, transpose, n_res, lin_avals, out_avals):
    del lin_avals
    size = next(np.shape(a)[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)]
    res, lin = moved[:n_res], moved[n_res:]
    res_axes = [None if d is None else 0 for d in dims[:n_res]]
    # Every linear input gets the batch axis, so the transpose returns batched cotangents
    # for all of them (an unbatched input's cotangent would otherwise need a sum).
    lin = [
        a if d is not None else jnp.broadcast_to(a, (size, *np.shape(a)))
        for a, d in zip(lin, dims[n_res:], strict=True)
    ]
    n_out = len(out_avals)
    batched_fn = jax.vmap(fn, in_axes=(*res_axes, *[0] * len(lin)))
    batched_transpose = jax.vmap(transpose, in_axes=(*res_axes, *[0] * n_out))
    out = _bind(batched_fn, batched_transpose, res, lin)
    return out, [0] * len(out)


_linear_p.def_impl(_impl)
_linear_p.def_abstract_eval(_abstract_eval)
ad.primitive_jvps[_linear_p] = _jvp
ad.primitive_transposes[_linear_p] = _transpose
batching.primitive_batchers[_linear_p] = _batch
mlir.register_lowering(_linear_p, mlir.lower_fun(_impl, multiple_results=True))


def forward_only(fn: Callable) -> Callable:
    """``fn`` on a list of arrays, differentiable in forward mode only.

    ``jax.jvp`` goes through ``fn``; reverse mode through it raises
    :class:`ReverseOverReverseError` with the fix, instead of JAX's error about while loops.
    Used for the loops that only a second-order reverse pass would differentiate.
    """

    @jax.custom_jvp
    def guarded(args):
        return fn(args)

    @guarded.defjvp
    def guarded_jvp(primals, tangents):
        (args,), (d_args,) = primals, tangents
        out = fn(args)
        out_leaves, out_tree = jax.tree.flatten(out)
        inexact_out = [i for i, o in enumerate(out_leaves) if _inexact(o)]
        moving = [i for i, a in enumerate(args) if _inexact(a)]

        def along(res, d):
            def of_moving(*vals):
                full = list(res)
                for i, v in zip(moving, vals, strict=True):
                    full[i] = v
                return jax.tree.leaves(fn(full))

            tangent = jax.jvp(of_moving, [res[i] for i in moving], list(d))[1]
            return [tangent[i] for i in inexact_out]

        if moving:
            d_inexact = apply(along, _refuse, list(args), [d_args[i] for i in moving])
        else:
            d_inexact = [jnp.zeros_like(out_leaves[i]) for i in inexact_out]
        d_leaves = [_float0(o) for o in out_leaves]
        for i, d in zip(inexact_out, d_inexact, strict=True):
            d_leaves[i] = d
        return out, jax.tree.unflatten(out_tree, d_leaves)

    return guarded


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _float0(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)
