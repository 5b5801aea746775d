"""What :func:`~bpjax.remat.stack` asks of a layer, checked once per call, and its traced form.

A layer is ``layer(p, x) -> x``: ``p`` one layer's slice of parameters stacked on a leading
axis of length L, ``x`` a state (a pytree) that the layer maps to a state of the same shapes
and dtypes. :func:`trace` checks that contract on shapes alone and returns a
:class:`TracedLayer` whose ``key`` (the layer's jaxpr as text) identifies everything a
strategy's decision may depend on, so decisions are cached across traces of the same layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def depth(params) -> int:
    """L, the length of the leading axis every leaf of ``params`` is stacked on."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("remat: params has no arrays; stack the layers' params on a leading axis")
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(lengths) != 1 or None in lengths:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(
            "remat: every params leaf must be stacked on a leading axis of the same length L, "
            f"got shapes {shapes}"
        )
    (n_layers,) = lengths
    if n_layers < 1:
        raise ValueError("remat: params are stacked on an axis of length 0; need L >= 1")
    return int(n_layers)


def spec(tree):
    """``jax.ShapeDtypeStruct`` of every leaf (arrays or specs alike)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def layer_spec(params):
    """Shape and dtype of one layer's slice of the stacked ``params``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), params)


def index(tree, i):
    """Slice ``i`` (a traced int is fine) of every leaf's leading axis."""
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), tree)


def carried(cotangents, primals):
    """``cotangents`` with every ``float0`` leaf (what ``jax.vjp`` gives an integer or boolean
    primal) replaced by zeros of its primal's dtype, so the gradients can be carried through
    ``scan``/``cond`` and added like the floating ones (:func:`released` undoes it)."""
    return jax.tree.map(
        lambda d, p: jnp.zeros(np.shape(p), p.dtype) if d.dtype == jax.dtypes.float0 else d,
        cotangents,
        primals,
    )


def released(grads):
    """Gradients as a ``custom_vjp`` backward pass must return them: ``float0`` zeros for
    integer and boolean leaves (which have no gradient), the others unchanged."""
    return jax.tree.map(
        lambda g: (
            g if jnp.issubdtype(g.dtype, jnp.inexact) else np.zeros(np.shape(g), jax.dtypes.float0)
        ),
        grads,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class TracedLayer:
    """A layer traced once at one slice's shapes.

    Attributes:
      key: the layer's jaxpr as text (primitives, shapes, dtypes, literals; closed-over arrays
        appear by shape only). Two layers with equal keys save the same bytes, so a decision
        made from one (segment lengths, say) holds for the other.
      names: every ``checkpoint_name`` the layer tags a value with.
      layer, params, x: the layer, the stacked params and the state it was traced with (specs
        or arrays), for strategies whose decision needs more (:func:`layer_bytes`).
    """

    key: str
    names: frozenset
    layer: Callable
    params: object
    x: object


def _checkpoint_names(jaxpr) -> set[str]:
    found = {eqn.params["name"] for eqn in jaxpr.eqns if eqn.primitive.name == "name"}
    for sub in jax.extend.core.subjaxprs(jaxpr):
        found |= _checkpoint_names(sub)
    return found


def _describe(tree):
    return jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), tree)


def _per_layer_list(params) -> bool:
    """``params`` is a list of per-layer pytrees (the same structure and shapes each)."""
    if not isinstance(params, list | tuple) or len(params) < 2:
        return False
    first = jax.tree.structure(params[0])
    return (
        first.num_leaves > 0
        and not jax.tree_util.treedef_is_leaf(first)
        and all(
            jax.tree.structure(p) == first
            and [np.shape(a) for a in jax.tree.leaves(p)]
            == [np.shape(a) for a in jax.tree.leaves(params[0])]
            for p in params
        )
    )


_STACK_FIX = (
    "params must be one pytree whose leaves are stacked on a leading layer axis; from a list "
    "of per-layer params: jax.tree.map(lambda *a: jnp.stack(a), *layers)"
)


def trace(layer: Callable, params, x) -> TracedLayer:
    """Check ``layer(p, x) -> x`` on shapes and trace it once (see :class:`TracedLayer`)."""
    for leaf in jax.tree.leaves(x):
        if not hasattr(leaf, "dtype"):
            raise TypeError(
                f"remat: x must be an array or a pytree of arrays, got a leaf of type "
                f"{type(leaf).__name__}; pass jnp.asarray(x)"
            )
    x_spec = spec(x)
    try:
        closed, out = jax.make_jaxpr(layer, return_shape=True)(layer_spec(params), x_spec)
    except (TypeError, KeyError, IndexError, AttributeError) as err:
        if _per_layer_list(params):
            raise TypeError(
                f"remat: layer(p, x) failed on one slice of params ({err}); params is a "
                f"{type(params).__name__} of {len(params)} per-layer pytrees: {_STACK_FIX}"
            ) from err
        raise
    if jax.tree.structure(out) != jax.tree.structure(x_spec) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x_spec), strict=True)
    ):
        integer = [a for a in jax.tree.leaves(x_spec) if not jnp.issubdtype(a.dtype, jnp.inexact)]
        hint = f"; x is {integer[0].dtype}: cast it to a float dtype" if integer else ""
        raise ValueError(
            f"remat: layer(p, x) must return a state shaped like x ({_describe(x_spec)}), "
            f"got {_describe(out)}{hint}"
        )
    return TracedLayer(
        key=str(closed.jaxpr),
        names=frozenset(_checkpoint_names(closed.jaxpr)),
        layer=layer,
        params=params,
        x=x,
    )


def close_over(layer: Callable, params, x) -> tuple[Callable, tuple]:
    """``(fn, consts)`` with ``fn(p, x, *consts) == layer(p, x)`` and ``consts`` explicit.

    ``consts`` are the traced values the layer closes over (a scale being differentiated, say):
    a ``custom_vjp`` must receive them as arguments and return their cotangents, or JAX raises
    ``UnexpectedTracerError`` (``jax.closure_convert``).
    """
    fn, consts = jax.closure_convert(layer, layer_spec(params), spec(x))
    return fn, tuple(consts)
