"""The byte model's inputs: what one layer saves for its backward pass, read from its jaxpr.

Every strategy predicts its activation memory from three sizes of one layer
(:class:`LayerBytes`): ``s`` the state, ``r`` the residuals ``jax.vjp`` keeps (as
``jax.ad_checkpoint.print_saved_residuals`` lists them), ``g`` one layer's parameters (the size
of its gradient). Inputs kept as they are, and free views of them, are not counted: the caller
holds the stacked parameters anyway.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np
from jax.extend.core import Literal

from bpjax.remat._layer import layer_spec, spec


@dataclasses.dataclass(frozen=True)
class LayerBytes:
    """Bytes of one layer: its state (input/output), its residuals, its parameters.

    Attributes:
      state: bytes of ``x`` (what a checkpoint stores), ``s``.
      residual: bytes ``jax.vjp(layer, p, x)`` saves for the backward pass, the input state
        included, parameters (and views of them) excluded: what "none" stores per layer, ``r``.
      params: bytes of one layer's parameters (and of its gradient), ``g``.
      policy_saved: bytes one layer saves under a ``jax.checkpoint`` policy, ``p`` (``None``
        unless measured for a :class:`~bpjax.remat.Policy`).
    """

    state: int
    residual: int
    params: int
    policy_saved: int | None = None


UNIT = LayerBytes(state=1, residual=1, params=1)
"""A state, a layer's residuals and its parameters counted alike: sizes when none are known."""

_VIEWS = {"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "copy", "copy_p"}


def _views_of_args(jaxpr) -> dict:
    arg_of = {v: i for i, v in enumerate(jaxpr.invars)}
    view_of = {}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _VIEWS and len(eqn.invars) == 1:
            source = eqn.invars[0]
            if not isinstance(source, Literal):
                origin = arg_of.get(source, view_of.get(source))
                if origin is not None:
                    view_of[eqn.outvars[0]] = origin
    return view_of


def residuals(f: Callable, *args) -> list[dict]:
    """What ``jax.vjp(f, *args)`` saves, read from its jaxpr (as ``print_saved_residuals``).

    Args:
      f: the function differentiated.
      *args: its arguments, arrays or ``jax.ShapeDtypeStruct``.

    Returns:
      One dict per residual: ``shape``, ``dtype``, ``bytes`` and ``source``: ``"arg i"`` (the
      i-th flattened input kept as it is), ``"view of arg i"`` (a reshape/transpose of one, free
      in XLA) or ``"computed"``.
    """
    leaves, tree = jax.tree.flatten(args)

    def vjp_residuals(*flat):
        return jax.tree.leaves(jax.vjp(f, *jax.tree.unflatten(tree, flat))[1])

    jaxpr = jax.make_jaxpr(vjp_residuals)(*leaves).jaxpr
    arg_of = {v: i for i, v in enumerate(jaxpr.invars)}
    view_of = _views_of_args(jaxpr)
    out = []
    for v in jaxpr.outvars:
        if isinstance(v, Literal):
            continue
        if v in arg_of:
            source = f"arg {arg_of[v]}"
        elif v in view_of:
            source = f"view of arg {view_of[v]}"
        else:
            source = "computed"
        out.append(
            {
                "shape": tuple(v.aval.shape),
                "dtype": str(v.aval.dtype),
                "bytes": int(math.prod(v.aval.shape) * v.aval.dtype.itemsize),
                "source": source,
            }
        )
    return out


def nbytes(tree) -> int:
    """Bytes of every leaf of ``tree`` (arrays or specs)."""
    return sum(int(math.prod(a.shape) * np.dtype(a.dtype).itemsize) for a in jax.tree.leaves(tree))


def saved_bytes(layer: Callable, params, x) -> int:
    """Bytes ``jax.vjp(layer, p, x)`` saves for one slice ``p`` of ``params``, params excluded."""
    p0 = layer_spec(params)
    n_param_leaves = len(jax.tree.leaves(p0))
    total = 0
    for res in residuals(layer, p0, spec(x)):
        if res["source"] != "computed" and int(res["source"].split()[-1]) < n_param_leaves:
            continue  # the stacked parameters are kept by the caller anyway
        total += res["bytes"]
    return total


def layer_bytes(layer: Callable, params, x) -> LayerBytes:
    """:class:`LayerBytes` of ``layer`` for one slice of the stacked ``params`` and state ``x``.

    Args:
      layer: ``layer(p, x) -> x``.
      params: pytree stacked on a leading axis of length L (arrays or specs).
      x: the state, e.g. ``(batch, width)``.
    """
    return LayerBytes(
        state=nbytes(spec(x)),
        residual=saved_bytes(layer, params, x),
        params=nbytes(layer_spec(params)),
    )
