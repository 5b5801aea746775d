"""Sparsity rules for primitives whose dependency structure is fixed by their shapes.

* ``top_k``: each of the ``k`` largest of a line (the last axis) may be any element of it.
* ``dynamic_slice`` / ``dynamic_update_slice`` at starts not known at trace time: along an
  axis of length ``L`` sliced to ``s``, JAX clamps the start to ``[0, L - s]``, so output
  element ``i`` reads one of the operand elements ``i .. i + L - s`` (a band, not the whole
  operand); an updated array's element ``j`` is the operand's or one of the update's
  elements ``j - (L - s) .. j``.
* ``conv_general_dilated`` (one batch group): output ``(n, o, s)`` reads the input window of
  position ``s`` (strides, padding and dilations applied, by JAX's own
  ``conv_general_dilated_patches`` on element ids) over the input channels of ``o``'s
  feature group, skipping the taps where a constant kernel is zero, and the kernel
  elements of feature ``o``.
* ``qr`` (no pivoting): Gram-Schmidt order: column ``j`` of ``Q`` and of ``R`` depend on the
  columns ``0 .. j`` of ``A`` (the extra columns of a complete ``Q``, on all of them); the
  strict lower triangle of ``R`` is zero.
* ``cholesky``: ``L = chol(A)``, ``L[i, j]`` (``j <= i``) depends on the leading
  ``(i+1) x (i+1)`` block of ``A`` (both triangles: a superset of what the factorization
  reads, which is conservative); the strict upper triangle is zero.

Each rule builds the 0/1 matrix ``R`` of which operand elements an output element combines
and hands it to :func:`bpjax.modes._deps.aggregate`. Every rule is
``(interp, eqn, ins, ivals) -> [output deps]``, or ``None`` where it does not apply (too
large); :mod:`bpjax.modes._primitives` says which primitive uses which.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from bpjax.modes import _deps


def _csr(rows, cols, shape):
    return sp.csr_array((np.ones(len(rows), bool), (rows, cols)), shape=shape)


def top_k(interp, eqn, ins, ivals):
    shape = eqn.invars[0].aval.shape
    length, k = shape[-1], eqn.outvars[0].aval.shape[-1]
    lines = math.prod(shape[:-1])
    rows = np.repeat(np.arange(lines * k), length)
    cols = np.arange(lines)[:, None, None] * length + np.arange(length)[None, None, :]
    cols = np.broadcast_to(cols, (lines, k, length)).ravel()
    R = _csr(rows, cols, (lines * k, lines * length))
    return [_deps.aggregate(R, ins[0], interp.budget, interp.notes, "top_k"), None]


def cholesky(interp, eqn, ins, ivals):
    shape = eqn.invars[0].aval.shape
    size = shape[-1]
    batch = math.prod(shape[:-2])
    rows, cols = [], []
    for i, j in zip(*np.tril_indices(size), strict=True):
        p, q = np.meshgrid(np.arange(i + 1), np.arange(i + 1), indexing="ij")
        rows.append(np.full(p.size, i * size + j))
        cols.append((p * size + q).ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    block = size * size
    offsets = (np.arange(batch) * block)[:, None]
    R = _csr((offsets + rows).ravel(), (offsets + cols).ravel(), (batch * block, batch * block))
    return [_deps.aggregate(R, ins[0], interp.budget, interp.notes, "cholesky")]


def conv(interp, eqn, ins, ivals):
    p = eqn.params
    lhs, rhs, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    size_in = math.prod(lhs.shape)
    if p["batch_group_count"] != 1 or size_in >= 1 << 24:  # ids travel as float32
        return None
    window = [rhs.shape[d] for d in rhs_spec[2:]]
    N, C = lhs.shape[lhs_spec[0]], lhs.shape[lhs_spec[1]]
    O, G = out.shape[out_spec[1]], p["feature_group_count"]
    Cg, Og, W = C // G, O // G, math.prod(window)
    S = math.prod(out.shape[d] for d in out_spec[2:])
    if N * O * S * Cg * W > interp.budget:
        return None
    ids = jnp.arange(1, size_in + 1, dtype=jnp.float32).reshape(lhs.shape)
    patches = jax.lax.conv_general_dilated_patches(
        ids,
        window,
        p["window_strides"],
        p["padding"],
        p["lhs_dilation"],
        p["rhs_dilation"],
        p["dimension_numbers"],
    )
    # (N, C*W, spatial…) in the output's layout -> (N, G, Cg, W, S); 0 marks padding.
    P = np.asarray(patches).transpose(out_spec).reshape(N, G, Cg, W, S).astype(np.int64) - 1
    out_ids = np.arange(math.prod(out.shape)).reshape(out.shape).transpose(out_spec)
    out_ids = out_ids.reshape(N, O, 1, 1, S)
    taps = P[:, np.arange(O) // Og]  # (N, O, Cg, W, S): what output (n, o, s) may read
    kernel = np.ones((O, Cg, W), bool)
    if ivals[1] is not None:  # a constant kernel's zeros read nothing
        kernel = np.asarray(ivals[1]).transpose(rhs_spec).reshape(O, Cg, W) != 0
    shape = (N, O, Cg, W, S)
    read = (taps >= 0) & kernel[None, :, :, :, None]
    rows = np.broadcast_to(out_ids, shape)[read]
    R_in = _csr(rows, taps[read], (math.prod(out.shape), size_in))
    parts = [_deps.aggregate(R_in, ins[0], interp.budget, interp.notes, "conv")]
    if ins[1] is not None:
        k_ids = np.arange(math.prod(rhs.shape)).reshape(rhs.shape).transpose(rhs_spec)
        k_ids = np.broadcast_to(k_ids.reshape(1, O, Cg, W, 1), shape)
        hit = taps >= 0  # a tap on padding or a dilation hole multiplies nothing
        rows = np.broadcast_to(out_ids, shape)[hit]
        R_k = _csr(rows, k_ids[hit], (R_in.shape[0], math.prod(rhs.shape)))
        parts.append(_deps.aggregate(R_k, ins[1], interp.budget, interp.notes, "conv"))
    parts = [d for d in parts if d is not None]
    return [_deps.union(parts) if parts else None]


def _columns_upto(out_shape, a_shape, upto, batch):
    """0/1 matrix: output ``(…, i, j)`` reads column ``0 .. upto(i, j)`` of ``A`` (``-1``:
    nothing), per batch element."""
    (r, c), (m, n) = out_shape, a_shape
    i, j = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
    last = np.minimum(upto(i, j), n - 1).ravel()
    out_pos = (i * c + j).ravel()
    cols_per = last + 1
    rows = np.repeat(out_pos, m * cols_per)
    cols = (
        np.concatenate(
            [(np.arange(m)[:, None] * n + np.arange(k + 1)[None, :]).ravel() for k in last]
        )
        if rows.size
        else np.zeros(0, np.int64)
    )
    out_size, in_size = r * c, m * n
    off_out = (np.arange(batch) * out_size)[:, None]
    off_in = (np.arange(batch) * in_size)[:, None]
    return _csr(
        (off_out + rows).ravel(), (off_in + cols).ravel(), (batch * out_size, batch * in_size)
    )


def qr(interp, eqn, ins, ivals):
    if eqn.params.get("pivoting"):
        return None
    a = eqn.invars[0].aval
    batch = math.prod(a.shape[:-2])
    q_shape, r_shape = (v.aval.shape[-2:] for v in eqn.outvars)
    k = min(a.shape[-2:])
    Rq = _columns_upto(q_shape, a.shape[-2:], lambda i, j: np.where(j < k, j, k - 1), batch)
    Rr = _columns_upto(r_shape, a.shape[-2:], lambda i, j: np.where(i <= j, j, -1), batch)
    return [_deps.aggregate(R, ins[0], interp.budget, interp.notes, "qr") for R in (Rq, Rr)]


def _offsets(length, size, start):
    """The starts a dynamic slice of ``size`` out of ``length`` may take (JAX clamps):
    ``start`` is a known value, an interval ``(lo, hi)`` (a traced index's bounds,
    :mod:`bpjax.modes._ranges`) or ``None`` (any)."""
    if start is None:
        return np.arange(length - size + 1)
    lo, hi = start if isinstance(start, tuple) else (int(start), int(start))
    return np.arange(min(max(lo, 0), length - size), min(max(hi, 0), length - size) + 1)


def _band(rows, cols, offsets, transpose):
    """``(rows, cols)`` 0/1 matrix with ``M[i, i + o] = 1`` for each offset ``o`` (or its
    transpose's pattern, ``M[j, j - o]``, with ``transpose``)."""
    i = np.repeat(np.arange(rows), offsets.size)
    j = i + np.tile(offsets, rows) if not transpose else i - np.tile(offsets, rows)
    keep = (j >= 0) & (j < cols)
    return _csr(i[keep], j[keep], (rows, cols))


def _kron(factors):
    out = factors[0]
    for factor in factors[1:]:
        out = sp.kron(out, factor, format="csr")
    return sp.csr_array(out)


def _starts(interp, ivals, first):
    """Each start operand's value, else its interval, else ``None`` (see ``_offsets``)."""
    bounds = interp.operand_bounds[first:] or [None] * len(ivals[first:])
    return [
        np.asarray(v).item() if v is not None else b
        for v, b in zip(ivals[first:], bounds, strict=True)
    ]


def _banded(interp, shape, sizes, offsets, transpose):
    """``R`` of a dynamic slice (``transpose=False``: slice element ``i`` reads operand
    elements ``i + o``) or of its update (``True``: operand element ``j`` may receive update
    element ``j - o``), ``o`` over the ``offsets`` each axis may take (``_offsets``);
    ``None`` past the budget."""
    factors = [
        _band(length, s, o, transpose=True) if transpose else _band(s, length, o, transpose=False)
        for length, s, o in zip(shape, sizes, offsets, strict=True)
    ]
    if math.prod(f.nnz for f in factors) > interp.budget:
        return None
    return _kron(factors)


def _all_offsets(interp, ivals, first, shape, sizes):
    """Per axis, the starts a dynamic slice or update may take (``_offsets``)."""
    starts = _starts(interp, ivals, first)
    return [_offsets(n, s, st) for n, s, st in zip(shape, sizes, starts, strict=True)]


def dynamic_slice(interp, eqn, ins, ivals):
    shape, sizes = eqn.invars[0].aval.shape, eqn.params["slice_sizes"]
    offsets = _all_offsets(interp, ivals, 1, shape, sizes)
    R = _banded(interp, shape, sizes, offsets, transpose=False)
    if R is None:
        return None
    return [_deps.aggregate(R, ins[0], interp.budget, interp.notes, eqn.primitive.name)]


def dynamic_update_slice(interp, eqn, ins, ivals):
    shape, sizes = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    offsets = _all_offsets(interp, ivals, 2, shape, sizes)
    R = _banded(interp, shape, sizes, offsets, transpose=True)
    if R is None:
        return None
    update = _deps.aggregate(R, ins[1], interp.budget, interp.notes, "dynamic_update_slice")
    # The operand's element stays wherever the update may not land: everywhere but the
    # positions every start the update may take covers.
    operand = ins[0]
    if operand is not None:
        covered = np.ones((), bool)
        for length, size, o in zip(shape, sizes, offsets, strict=True):
            j = np.arange(length)
            covered = np.multiply.outer(covered, (j >= o.max()) & (j < o.min() + size))
        kept = np.flatnonzero(~covered.reshape(-1))
        if kept.size < covered.size:
            keep = _csr(kept, kept, (covered.size, covered.size))
            operand = _deps.aggregate(
                keep, operand, interp.budget, interp.notes, "dynamic_update_slice"
            )
    return [_deps.union([d for d in (operand, update) if d is not None])]
