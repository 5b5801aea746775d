"""Sparsity rules for primitives whose dependency structure is fixed by their shapes.

* ``top_k``: each of the ``k`` largest of a line (the last axis) may be any element of it.
* ``cholesky``: ``L = chol(A)``, ``L[i, j]`` (``j <= i``) depends on the leading
  ``(i+1) x (i+1)`` block of ``A`` (both triangles: a superset of what the factorization
  reads, which is conservative); the strict upper triangle is zero.

Each rule builds the 0/1 matrix ``R`` of which operand elements an output element combines
and hands it to :func:`bpjax.modes._deps.aggregate`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from bpjax.modes import _deps


def _csr(rows, cols, shape):
    return sp.csr_array((np.ones(len(rows), bool), (rows, cols)), shape=shape)


def top_k(interp, eqn, ins):
    shape = eqn.invars[0].aval.shape
    length, k = shape[-1], eqn.outvars[0].aval.shape[-1]
    lines = math.prod(shape[:-1])
    rows = np.repeat(np.arange(lines * k), length)
    cols = np.arange(lines)[:, None, None] * length + np.arange(length)[None, None, :]
    cols = np.broadcast_to(cols, (lines, k, length)).ravel()
    R = _csr(rows, cols, (lines * k, lines * length))
    return [_deps.aggregate(R, ins[0], interp.budget, interp.notes, "top_k"), None]


def cholesky(interp, eqn, ins):
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


# primitive name -> (interpreter, eqn, operand deps) -> output deps
RULES = {"top_k": top_k, "cholesky": cholesky}
