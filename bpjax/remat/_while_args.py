"""The arguments of :func:`~bpjax.remat.while_loop`: checks that name the argument and say the
fix before JAX traces the loop, and the closure conversion of its functions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bpjax import _validate


def check_int(name, value, *, minimum):
    if not _validate.is_int(value):
        raise TypeError(
            f"while_loop: {name} must be an int >= {minimum}, got {value!r} "
            f"({type(value).__name__}); pass e.g. {name}=10"
        )
    if value < minimum:
        raise ValueError(f"while_loop: {name} must be an int >= {minimum}, got {value}")


def strong_array(x, path=()):
    if isinstance(x, str | bytes) or (
        not hasattr(x, "dtype") and not isinstance(x, int | float | complex)
    ):
        where = jax.tree_util.keystr(path) or "init_val"
        raise TypeError(
            f"while_loop: init_val{'' if where == 'init_val' else where} is a "
            f"{type(x).__name__} ({x!r:.40}); the state must be a pytree of arrays or numbers"
        )
    x = jnp.asarray(x)
    # A weakly typed leaf (a Python float) would change type when the body returns it.
    return x.astype(x.dtype) if getattr(x, "weak_type", False) else x


def _describe(tree):
    return jax.tree.map(lambda a: f"{a.dtype}{list(a.shape)}", tree)


def _traced(name, fun, init_val):
    """``jax.eval_shape(fun, init_val)``, naming ``fun`` when it cannot be traced."""
    try:
        return jax.eval_shape(fun, init_val)
    except jax.errors.ConcretizationTypeError as err:
        raise TypeError(
            f"while_loop: {name} could not be traced: it uses the state's value in Python "
            "(an `if`, `while`, `bool()` or `int()` on an array); write it with jnp.where, "
            f"lax.cond or jnp comparisons. JAX said: {str(err).splitlines()[0]}"
        ) from err


def check_cond(cond_fun, init_val):
    out = _traced("cond_fun", cond_fun, init_val)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == () and out.dtype == jnp.bool_):
        raise TypeError(
            "while_loop: cond_fun must return a boolean scalar (shape (), dtype bool), got "
            f"{_describe(out)}; reduce it with jnp.all/jnp.any or compare a scalar"
        )


def check_body(body_fun, init_val):
    out = _traced("body_fun", body_fun, init_val)
    want = _describe(init_val)
    if jax.tree.structure(out) != jax.tree.structure(init_val):
        raise TypeError(
            f"while_loop: body_fun must return a state with init_val's structure {want}, got "
            f"{_describe(out)}; return every field, in the same containers"
        )
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(init_val), strict=True):
        if a.dtype != b.dtype:
            raise TypeError(
                f"while_loop: body_fun changes a dtype: state {want}, body returns "
                f"{_describe(out)}; cast with .astype in body_fun"
            )
        if a.shape != b.shape:
            raise ValueError(
                f"while_loop: body_fun changes a shape: state {want}, body returns "
                f"{_describe(out)}; a loop state keeps its shapes (pad to a maximum)"
            )


def inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def close_over(fun: Callable, example) -> tuple[Callable, list]:
    """``(converted, consts)`` with ``converted(x, *consts) == fun(x)`` and every array ``fun``
    closes over in ``consts``.

    As ``jax.closure_convert``, except that integer tracers are hoisted too: that one keeps them
    in the closure (they carry no tangent), and a loop bound from an enclosing ``scan`` would
    then leak into the traces of the custom derivative rules.
    """
    closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(example)
    out_tree = jax.tree.structure(out_shape)

    def converted(x, *consts):
        flat = jax.extend.core.jaxpr_as_fun(
            jax.extend.core.ClosedJaxpr(closed.jaxpr, list(consts))
        )(*jax.tree.leaves(x))
        return jax.tree.unflatten(out_tree, flat)

    return converted, list(closed.consts)
