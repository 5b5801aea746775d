"""Sparsity rules of data movement, reductions and matrix products (see :mod:`_primitives`).

Each rule maps the dependency sets (:mod:`bpjax.modes._deps`) of an equation's operands to
those of its outputs: ``(interp, eqn, ins, ivals) -> [output deps]``, or ``None`` when it
does not apply (then the interpreter falls back to the conservative rule). ``ins`` are the
operands' dependency sets (``None``: depends on nothing), ``ivals`` their values where known
at trace time.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from bpjax.modes import _deps, _index_maps

_size = _deps.aval_size
_is_float = _deps.is_float


def stop_gradient(interp, eqn, ins, ivals):
    """``stop_gradient``: depends on nothing."""
    return [None] * len(eqn.outvars)


def _ids(interp, eqn, ins, ivals, index_ops):
    """Element ids for data operands (offset per operand), values for index operands."""
    ops, data, sizes, offset = [], [], [], 0
    for k, (v, d) in enumerate(zip(eqn.invars, ins, strict=True)):
        if k in index_ops or not _is_float(v.aval):
            if ivals[k] is None:
                return None
            ops.append(ivals[k])
            continue
        size = _size(v.aval)
        ops.append(np.arange(offset, offset + size, dtype=np.int64).reshape(v.aval.shape))
        data.append(d)
        sizes.append(size)
        offset += size
    return ops, data, sizes


def moved_by(move, index_operands=slice(0)):
    """The rule of a data-movement primitive: ``move`` (NumPy, ``(operands, params) ->
    outputs``) applied to element ids says which input element each output element copies.
    ``index_operands``: the operands that are positions (their values must be known)."""

    def rule(interp, eqn, ins, ivals):
        index_ops = set(range(len(eqn.invars))[index_operands])
        got = _ids(interp, eqn, ins, ivals, index_ops)
        if got is None:
            return None
        ops, data, sizes = got
        return [_deps.take(data, sizes, o, interp.n) for o in move(ops, eqn.params)]

    return rule


def gather(interp, eqn, ins, ivals):
    """``lax.gather`` at indices known at trace time (evaluated on element ids)."""
    got = _ids(interp, eqn, ins, ivals, {1})
    if got is None:
        return None
    ops, data, sizes = got
    return [_deps.take(data, sizes, _index_maps.gather_ids(ops[0], ops[1], eqn.params), interp.n)]


def first(*rules):
    """The first of ``rules`` that applies (returns something other than ``None``)."""

    def rule(interp, eqn, ins, ivals):
        for r in rules:
            out = r(interp, eqn, ins, ivals)
            if out is not None:
                return out
        return None

    return rule


def scatter(interp, eqn, ins, ivals):
    """``scatter``, ``scatter-add``...: at indices known at trace time."""
    if ivals[1] is None:
        return None
    operand, updates = eqn.invars[0].aval, eqn.invars[2].aval
    where = _index_maps.scatter_positions(eqn.params, operand, ivals[1], updates)
    if where is None:
        return None
    s_op, s_up = _size(operand), _size(updates)
    keep = np.ones(s_op, bool)
    if eqn.primitive.name == "scatter":  # overwritten elements lose the operand
        keep[where[where >= 0]] = False
    hit = where >= 0
    rows = np.concatenate([np.flatnonzero(keep), where[hit]])
    cols = np.concatenate([np.flatnonzero(keep), s_op + np.flatnonzero(hit)])
    R = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(s_op, s_op + s_up))
    stacked = _deps.take([ins[0], ins[2]], [s_op, s_up], np.arange(s_op + s_up), interp.n)
    out = _deps.aggregate(R, stacked, interp.budget, interp.notes, "scatter")
    return None if out is None else [out]


def reduce(interp, eqn, ins, ivals):
    """Reductions over ``axes``: the union over the reduced elements."""
    d = ins[0]
    in_shape = eqn.invars[0].aval.shape
    axes = tuple(eqn.params["axes"])
    out_index = np.arange(math.prod(eqn.outvars[0].aval.shape)).reshape(
        [s for a, s in enumerate(in_shape) if a not in axes]
    )
    target = np.broadcast_to(np.expand_dims(out_index, axes), in_shape).ravel()
    size_in = target.size
    R = sp.csr_array(
        (np.ones(size_in, bool), (target, np.arange(size_in))),
        shape=(out_index.size, size_in),
    )
    return [_deps.aggregate(R, d, interp.budget, interp.notes, eqn.primitive.name)]


def lines(interp, eqn, ins, ivals):
    """Cumulative reductions (prefixes along an axis) and sort (whole lines)."""
    name = eqn.primitive.name
    shape = eqn.invars[0].aval.shape
    axis = eqn.params["dimension" if name == "sort" else "axis"]
    length = shape[axis]
    ids = np.moveaxis(np.arange(math.prod(shape)).reshape(shape), axis, -1).reshape(-1, length)
    if name == "sort":
        i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
        i, j = i.ravel(), j.ravel()
    else:
        i, j = np.tril_indices(length) if not eqn.params["reverse"] else np.triu_indices(length)
    if ids.shape[0] * i.size > interp.budget:
        where = f"{name} (lines of {length})"
        return [
            _deps.spread(ins, _size(v.aval), interp.n, interp.budget, interp.notes, where)
            for v in eqn.outvars
        ]
    rows, cols = ids[:, i].ravel(), ids[:, j].ravel()
    size = ids.size
    present = [d for d in ins if d is not None]
    merged = _deps.union(present) if len(present) > 1 else present[0]
    R = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(size, size))
    out = _deps.aggregate(R, merged, interp.budget, interp.notes, name)
    return [out] * len(eqn.outvars)


def dot(interp, eqn, ins, ivals):
    """``dot_general``: the union over the contracted elements, skipping exact zeros of a
    constant operand."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
    lfree = [a for a in range(lhs.ndim) if a not in lc and a not in lb]
    rfree = [a for a in range(rhs.ndim) if a not in rc and a not in rb]
    lids = np.arange(_size(lhs)).reshape(lhs.shape).transpose([*lb, *lfree, *lc])
    rids = np.arange(_size(rhs)).reshape(rhs.shape).transpose([*rb, *rc, *rfree])
    B = math.prod(lhs.shape[a] for a in lb)
    K = math.prod(lhs.shape[a] for a in lc)
    I, J = math.prod(lhs.shape[a] for a in lfree), math.prod(rhs.shape[a] for a in rfree)
    lids, rids = lids.reshape(B, I, K), rids.reshape(B, K, J)
    lval = None if ivals[0] is None else ivals[0].transpose([*lb, *lfree, *lc]).reshape(B, I, K)
    rval = None if ivals[1] is None else ivals[1].transpose([*rb, *rc, *rfree]).reshape(B, K, J)
    parts = []
    if ins[0] is not None:
        parts.append(_dot_side(interp, ins[0], lids, rval, B, I, J, K, lhs_side=True))
    if ins[1] is not None:
        parts.append(_dot_side(interp, ins[1], rids.transpose(0, 2, 1), lval, B, J, I, K, False))
    parts = [p for p in parts if p is not None]
    return [_deps.union(parts) if parts else None]


def _dot_side(interp, d, ids, other, B, I, J, K, lhs_side):
    """Dependencies that reach out[b, i, j] through one operand, ``ids: (B, I, K)``.

    ``other`` is the other operand's value ``(B, K, J)`` (lhs side) or ``(B, I, K)``
    (rhs side; then I and J are swapped by the caller), when it is a constant.
    """
    out_index = (
        np.arange(B * I * J).reshape(B, I, J)
        if lhs_side
        else (np.arange(B * I * J).reshape(B, J, I).transpose(0, 2, 1))
    )
    if other is not None and (np.asarray(other) == 0).any():
        nz = np.asarray(other) != 0
        nz = nz if lhs_side else nz.transpose(0, 2, 1)  # -> (B, K, J)
        b, k, j = np.nonzero(nz)
        if b.size * I > interp.budget:
            return _deps.spread(
                [d], B * I * J, interp.n, interp.budget, interp.notes, "dot_general"
            )
        rows = out_index[b[:, None], np.arange(I)[None, :], j[:, None]].ravel()
        cols = ids[b[:, None], np.arange(I)[None, :], k[:, None]].ravel()
        R = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(B * I * J, d.size))
        return _deps.aggregate(R, d, interp.budget, interp.notes, "dot_general")
    # Dense contraction: every (b, i) row of the operand reaches all j alike.
    rows = np.repeat(np.arange(B * I), K)
    G = sp.csr_array((np.ones(rows.size, bool), (rows, ids.reshape(-1))), shape=(B * I, d.size))
    grouped = _deps.aggregate(G, d, interp.budget, interp.notes, "dot_general")
    src = np.empty(B * I * J, np.int64)
    src[out_index.ravel()] = np.repeat(np.arange(B * I), J)
    return _deps.take([grouped], [B * I], src, interp.n)
