"""Argument checks, flattening to ``f: R^n → R^m``, and the ``jax.jacrev`` output layout."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpjax._validate import is_int, to_device

CUSTOM_VJP_HINT = (
    "f has a custom_vjp (e.g. a bpjax.rev op), which has no forward mode; use "
    "mode='rev' or mode='auto', or build f from bpjax.fwd or bpjax.ref ops"
)


def check_inputs(x, what: str = "x") -> None:
    """Every leaf of ``x`` must be a real floating array."""
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
        dtype = jnp.result_type(leaf)  # no jnp.asarray: it compiles per new shape
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{name} has dtype {dtype}: complex inputs are not supported (these Jacobians "
                "are real); pass the real and imaginary parts as separate float arrays"
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} has dtype {dtype}: integer inputs are not differentiable; cast with "
                f".astype(jnp.float32) or close over it in f"
            )


def untraceable(err, x, op: str | None = None) -> TypeError:
    """The error for an ``f`` that could not be traced at ``x``, with the likely fix when ``x``
    is a Python list or tuple of numbers (``f`` then receives a list, not an array)."""
    hint = ""
    if isinstance(x, list | tuple) and x and all(isinstance(v, int | float) for v in x):
        hint = f"; x is a Python {type(x).__name__} of numbers: pass jnp.asarray(x)"
    return TypeError(f"{op + ': ' if op else ''}f could not be traced at x: {err}{hint}")


def check_outputs(f, x, out=None):
    """``f(x)``'s shapes, after checking it returns a non-empty pytree of float arrays.

    ``out``: the shapes if the caller already traced ``f``."""
    if out is None:
        try:
            out = jax.eval_shape(f, x)
        except TypeError as err:
            raise untraceable(err, x) from err
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


def check_tangent(v, x, what: str = "v") -> None:
    """``v`` must have ``x``'s pytree structure and leaf shapes (a direction at ``x``)."""
    check_inputs(v, what)
    if jax.tree.structure(v) != jax.tree.structure(x):
        raise ValueError(
            f"{what} must have the same pytree structure as x: got {jax.tree.structure(v)}, "
            f"x has {jax.tree.structure(x)}"
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(v), jax.tree.leaves(x), strict=True
    ):
        if jnp.shape(a) != jnp.shape(b):
            key = jax.tree_util.keystr(path)
            raise ValueError(
                f"{what}{key} has shape {jnp.shape(a)} but x{key} has shape {jnp.shape(b)}; "
                f"{what} is a direction at x and must match it leaf by leaf"
            )


def ravel(x):
    """``ravel_pytree(x)``, NumPy leaves moved to the device first: ``jnp.ravel`` of a NumPy
    array compiles a program for every new shape, ``jax.device_put`` none."""
    return ravel_pytree(jax.tree.map(to_device, x))


def _flat_function(f, x):
    """``(f_flat, x_flat, seen)``: ``f`` between flat vectors; its first trace appends the
    shapes of ``f``'s output pytree to ``seen``."""
    x_flat, unravel = ravel(x)
    seen = []

    def f_flat(v):
        y = f(unravel(v))
        if not seen:
            seen.append(
                jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), y)
            )
        return ravel_pytree(y)[0]

    return f_flat, x_flat, seen


def _total_size(out) -> int:
    return sum(int(np.prod(o.shape)) for o in jax.tree.leaves(out))


def flatten(f, x):
    """``f`` as a map between flat vectors: ``(f_flat, x_flat, out_shapes, m)``."""
    check_inputs(x)
    out = check_outputs(f, x)
    f_flat, x_flat, _ = _flat_function(f, x)
    return f_flat, x_flat, out, _total_size(out)


def flatten_traced(f, x):
    """:func:`flatten` plus ``f_flat``'s closed jaxpr, tracing ``f`` once instead of twice:
    ``(f_flat, x_flat, out_shapes, m, closed)``."""
    check_inputs(x)
    f_flat, x_flat, seen = _flat_function(f, x)
    try:
        closed = jax.make_jaxpr(f_flat)(x_flat)
    except TypeError as err:
        check_outputs(f, x)  # a clearer message when the outputs are what is wrong
        raise untraceable(err, x) from err
    out = check_outputs(f, x, seen[0])
    return f_flat, x_flat, out, _total_size(out), closed


def has_forward_mode(f_flat, x_flat) -> bool:
    """False when tracing a JVP of ``f_flat`` fails because of a ``custom_vjp``."""

    # Under a trace, a custom_vjp's JVP is deferred (a custom_lin) until it is evaluated or
    # batched; batching one tangent makes the failure happen here, at trace time.
    def batched_jvp(x):
        return jax.vmap(lambda t: jax.jvp(f_flat, (x,), (t,))[1])(x[None])

    return _traces(batched_jvp, x_flat, TypeError, "custom_vjp")


def _traces(fn, x, error, why) -> bool:
    """Whether ``fn`` traces at ``x``: False for an ``error`` that names ``why``."""
    try:
        jax.eval_shape(fn, x)
    except error as err:
        if why in str(err):
            return False
        raise
    return True


WHILE_HINT = (
    "f runs a lax.while_loop (or a fori_loop with traced bounds) on x, which JAX cannot "
    "differentiate in reverse mode; use mode='fwd', 'sparse' or 'auto' (forward-mode "
    "products), a lax.scan or fori_loop with static bounds, or bpjax.remat.while_loop"
)


def has_reverse_mode(f_flat, x_flat) -> bool:
    """False when tracing a VJP of ``f_flat`` fails because of a ``lax.while_loop``."""

    def pulled(x):
        y, pull = jax.vjp(f_flat, x)
        return pull(y)

    return _traces(pulled, x_flat, ValueError, "while_loop")


def planned_for(fn, x, out, sparse_output, what: str, again: str):
    """Wrap ``fn(x_flat)`` to take the pytree ``x`` it was planned for (refusing other shapes
    or dtypes, naming ``again`` to call) and give ``jax.jacrev``'s layout unless
    ``sparse_output`` (``out``: the outputs' layout, as :func:`unflatten_jacobian` takes it)."""
    shapes = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), x)

    def run(x_tree):
        got = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), x_tree)
        if got != shapes:
            raise ValueError(
                f"this {what} was planned for inputs {shapes}; got {got}. Call {again} "
                "again for inputs of another shape or dtype"
            )
        result = fn(ravel(x_tree)[0])
        return result if sparse_output else unflatten_jacobian(result, x, out)

    return run


def unflatten_jacobian(J, x, out):
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


def check_single_arrays(x, out) -> None:
    """``sparse_output=True`` returns one ``(m, n)`` matrix: x and f(x) must be single arrays."""
    for what, tree in (("x", x), ("f(x)", out)):
        leaves = jax.tree.leaves(tree)
        if len(leaves) != 1 or jax.tree.structure(tree).num_nodes != 1:
            raise ValueError(
                f"sparse_output=True needs x and f(x) to be single arrays; {what} is a pytree "
                f"with {len(leaves)} leaves ({jax.tree.structure(tree)}). Flatten it (e.g. with "
                "jax.flatten_util.ravel_pytree) or use sparse_output=False for jax.jacrev's "
                "pytree layout"
            )


def check_calls(calls) -> None:
    """``calls``: ``None`` (steady state) or a positive int; say the fix otherwise."""
    if calls is None:
        return
    if not is_int(calls) or calls < 1:
        raise ValueError(
            f"calls={calls!r}: pass the number of times the Jacobian will be evaluated (an "
            "int >= 1), so that compilation is shared among them, or None to choose by the "
            "steady-state time per call"
        )


# Keywords renamed or removed, with the fix each error names.
_REMOVED = {
    "calibrate": (
        'calibrate= was removed; pass basis="timing" to compile and time the leading '
        'candidates (what calibrate=True did), or leave the default basis="model"'
    ),
    "sparse": (
        "sparse= is now colorings= (True: the colorings are candidates too; False: only "
        'fwd and rev); "sparse" means only mode="sparse", and a BCOO result is sparse_output='
    ),
}


def refuse_removed_keywords(fn):
    """``fn`` that refuses the removed ``calibrate=`` and the renamed ``sparse=`` with the
    fix (``basis="timing"``, ``colorings=``)."""

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        for key, fix in _REMOVED.items():
            if key in kwargs:
                raise TypeError(f"{fn.__name__}: {fix}")
        return fn(*args, **kwargs)

    return checked


def check_scalar(f, x, op: str):
    """``f(x)`` must be one real float: say so, with the fix, otherwise."""
    check_inputs(x)
    try:
        out = jax.eval_shape(f, x)
    except TypeError as err:
        raise untraceable(err, x, op) from err
    leaves = jax.tree.leaves(out)
    if (
        len(leaves) != 1
        or leaves[0].shape != ()
        or not jnp.issubdtype(leaves[0].dtype, jnp.floating)
    ):
        got = [(tuple(a.shape), str(a.dtype)) for a in leaves]
        raise TypeError(
            f"{op}: f must return a scalar float (shape ()), got {got}; a Hessian is of a "
            "scalar function: sum or select the output (e.g. lambda x: jnp.sum(g(x)))"
        )


def check_flag(name: str, value, op: str) -> None:
    """``value`` must be True or False (a string such as "bcoo" was taken as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def check_max_nonzeros(value, op: str) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(
            f"{op}: max_nonzeros must be an int >= 1 (the most pattern entries to keep), "
            f"got {value!r}"
        )
