"""NumPy versions of the primitives that move data without computing on it.

Sparsity detection (:mod:`bpjax.modes._sparsity`) needs, for each output element of a
reshape, slice, pad, gather…, *which* input element it is a copy of. Applying the primitive
to an array of element ids answers that exactly: ``out_ids = prim(arange(size))``. The same
functions evaluate the primitive on constant values (index arrays computed inside ``f``), so
one implementation serves both. Gathers and scatters, whose semantics are too rich to
rewrite, are evaluated by JAX itself on the ids.

Each function takes NumPy arrays and the primitive's params; the table of primitives
(:mod:`bpjax.modes._primitives`) wraps them as ``(operands, params) -> list of outputs``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def pad(a, value, config):
    """``lax.pad``: per dimension ``(low, high, interior)``; negative low/high crop."""
    out = a
    for axis, (lo, hi, interior) in enumerate(config):
        lo, hi, interior = int(lo), int(hi), int(interior)
        length = out.shape[axis]
        if interior and length > 1:
            shape = list(out.shape)
            shape[axis] = length + (length - 1) * interior
            dilated = np.full(shape, value, dtype=out.dtype)
            index = [slice(None)] * out.ndim
            index[axis] = slice(None, None, interior + 1)
            dilated[tuple(index)] = out
            out = dilated
        for edge, amount in ((0, lo), (1, hi)):
            if amount > 0:
                shape = list(out.shape)
                shape[axis] = amount
                block = np.full(shape, value, dtype=out.dtype)
                out = np.concatenate([block, out] if edge == 0 else [out, block], axis=axis)
            elif amount < 0:
                index = [slice(None)] * out.ndim
                index[axis] = slice(-amount, None) if edge == 0 else slice(None, amount)
                out = out[tuple(index)]
    return out


def broadcast_in_dim(a, shape, broadcast_dimensions):
    expanded = [1] * len(shape)
    for src, dst in enumerate(broadcast_dimensions):
        expanded[dst] = a.shape[src]
    return np.broadcast_to(a.reshape(expanded), shape)


def _clamped_starts(operand_shape, sizes, starts):
    # lax.dynamic_slice clamps each start so that the slice stays inside the operand.
    return [
        int(min(max(int(s), 0), d - z))
        for s, d, z in zip(starts, operand_shape, sizes, strict=True)
    ]


def dynamic_slice(a, *starts, slice_sizes):
    begin = _clamped_starts(a.shape, slice_sizes, starts)
    return a[tuple(slice(b, b + z) for b, z in zip(begin, slice_sizes, strict=True))]


def dynamic_update_slice(a, update, *starts):
    begin = _clamped_starts(a.shape, update.shape, starts)
    out = a.copy()
    out[tuple(slice(b, b + z) for b, z in zip(begin, update.shape, strict=True))] = update
    return out


def slice_(a, start_indices, limit_indices, strides):
    strides = strides or (1,) * a.ndim
    return a[
        tuple(
            slice(s, e, st) for s, e, st in zip(start_indices, limit_indices, strides, strict=True)
        )
    ]


def split(a, sizes, axis):
    return np.split(a, np.cumsum(sizes)[:-1], axis=axis)


def reshape(a, new_sizes, dimensions):
    if dimensions is not None:
        a = np.transpose(a, dimensions)
    return a.reshape(new_sizes)


def _iota(dtype, shape, dimension):
    index = [1] * len(shape)
    index[dimension] = shape[dimension]
    return np.broadcast_to(np.arange(shape[dimension], dtype=dtype).reshape(index), shape)


def gather(operand, indices, params, fill):
    """``lax.gather`` in NumPy (no batching dims; the index vector is the last axis).

    Returns ``None`` for the forms not handled here (operand batching dims). Out-of-bounds
    windows are clamped (``CLIP``, ``PROMISE_IN_BOUNDS``, as XLA does) or filled with
    ``fill`` (``FILL_OR_DROP``).
    """
    dn = params["dimension_numbers"]
    if dn.operand_batching_dims:
        return None
    sizes = params["slice_sizes"]
    batch_shape = indices.shape[:-1]
    starts = np.zeros(batch_shape + (operand.ndim,), np.int64)
    for k, d in enumerate(dn.start_index_map):
        starts[..., d] = indices[..., k]
    limit = np.asarray(operand.shape) - np.asarray(sizes)
    in_bounds = np.all((starts >= 0) & (starts <= limit), axis=-1)
    starts = np.clip(starts, 0, limit)
    nb = len(batch_shape)
    grids = []
    for d, size in enumerate(sizes):
        offset = np.arange(size).reshape(
            (1,) * nb + tuple(-1 if e == d else 1 for e in range(operand.ndim))
        )
        grids.append(starts[..., d].reshape(batch_shape + (1,) * operand.ndim) + offset)
    window = operand[tuple(grids)]  # batch_shape + slice_sizes
    if "FILL" in str(params["mode"]):
        window = np.where(in_bounds.reshape(batch_shape + (1,) * operand.ndim), window, fill)
    window = window.reshape(
        batch_shape + tuple(s for d, s in enumerate(sizes) if d not in dn.collapsed_slice_dims)
    )
    # Offset axes go to the positions offset_dims names; batch axes fill the rest in order.
    rank = window.ndim
    batch_positions = [i for i in range(rank) if i not in dn.offset_dims]
    order = [0] * rank
    for src, dst in enumerate(batch_positions):
        order[dst] = src
    for src, dst in enumerate(dn.offset_dims):
        order[dst] = nb + src
    return np.transpose(window, order)


# Cheap NumPy evaluation of the integer arithmetic that computes indices inside ``f``
# (``x[i - 1]``, negative-index wrapping); anything else is evaluated by JAX.
_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "neg": np.negative,
    "max": np.maximum,
    "min": np.minimum,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "and": np.logical_and,
    "or": np.logical_or,
    "not": np.logical_not,
    "abs": np.abs,
}


def evaluate_constant(name, operands, params, dtypes, move=None):
    """Evaluate one primitive on constant NumPy operands, or return None if not handled here.

    ``dtypes`` are the output dtypes; results are cast to them (NumPy promotes differently).
    ``move``: the primitive's NumPy data-movement function, if it has one
    (:attr:`bpjax.modes._primitives.PrimitiveRule.move`).
    """
    if move is not None:
        outs = move(operands, params)
    elif name == "iota":
        outs = [_iota(params["dtype"], params["shape"], params["dimension"])]
    elif name == "convert_element_type":
        outs = [operands[0]]
    elif name == "select_n":
        which = operands[0].astype(np.int64)
        cases = np.broadcast_arrays(*operands[1:])
        outs = [np.choose(np.broadcast_to(which, cases[0].shape), cases)]
    elif name in _UFUNCS and all(o.dtype.kind in "biu" for o in operands):
        outs = [_UFUNCS[name](*operands)]
    else:
        return None
    return [np.asarray(o).astype(d, copy=False) for o, d in zip(outs, dtypes, strict=True)]


def gather_ids(ids, indices, params):
    """Which element of ``ids`` each gathered element copies (-1: filled)."""
    out = gather(ids, np.asarray(indices), params, fill=-1)
    if out is not None:
        return out
    params = dict(params)
    if params["mode"] == jax.lax.GatherScatterMode.FILL_OR_DROP:
        params["fill_value"] = -1
    ids = jnp.asarray(ids.astype(np.int32))
    return np.asarray(jax.lax.gather_p.bind(ids, jnp.asarray(indices), **params)).astype(np.int64)


def scatter_positions(params, operand, indices, updates):
    """For each update element, the flat operand position it lands on (-1: dropped)."""
    size = math.prod(operand.shape)
    if size >= 1 << 24:  # positions travel as float32 through the transpose
        return None

    def scatter(u):
        return jax.lax.scatter_add(
            jnp.zeros(operand.shape, jnp.float32),
            jnp.asarray(indices),
            u,
            params["dimension_numbers"],
            indices_are_sorted=params["indices_are_sorted"],
            unique_indices=params["unique_indices"],
            mode=params["mode"],
        )

    ids = jnp.arange(1, size + 1, dtype=jnp.float32).reshape(operand.shape)
    (pos,) = jax.linear_transpose(scatter, jax.ShapeDtypeStruct(updates.shape, jnp.float32))(ids)
    return np.asarray(pos).astype(np.int64).ravel() - 1
