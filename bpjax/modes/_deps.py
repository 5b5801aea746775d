"""Dependency sets of array elements: the abstract values of sparsity detection.

For ``f: R^n → R^m`` traced to a jaxpr, every array variable ``v`` of size ``s`` gets a
boolean ``(s, n)`` matrix ``D_v`` with ``D_v[e, k]`` true when element ``e`` of ``v`` may
depend on input ``k``. It is held sparsely (a SciPy CSR matrix) plus a mask of *full* rows
(elements that depend on every input), so a dense layer costs one bit per element instead
of ``n``. Every operation below is monotone (it only ever adds dependencies), which is what
makes the final pattern conservative.

Operations:

* :func:`take`: output element ``e`` is a copy of stacked operand element ``src[e]``
  (reshape, slice, gather…): ``D_out = D_stack[src]``.
* :func:`union`: elementwise ops: ``D_out = D_a ∨ D_b``.
* :func:`aggregate`: output element ``e`` combines the operand elements in row ``e`` of a 0/1
  matrix ``R`` (reductions, matrix products): ``D_out = R · D`` over the Boolean semiring.
* :func:`spread`: the conservative fallback: every output element depends on the union of
  all operand dependencies.

A budget caps the explicit nonzeros of one variable; past it, the rows with the most
dependencies are widened to full rows (still conservative) and a note says where.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def aval_size(aval) -> int:
    """Number of elements of an abstract value (one jaxpr variable)."""
    return math.prod(aval.shape)


def is_float(aval) -> bool:
    """Whether a variable can carry dependencies: a real or complex floating array."""
    return jnp.issubdtype(aval.dtype, jnp.inexact)  # bfloat16 too, which NumPy's misses


@dataclasses.dataclass(frozen=True)
class Deps:
    """Dependencies of one array's elements on the ``n`` inputs.

    Attributes:
      rows: ``(size, n)`` boolean CSR matrix of explicit dependencies; empty on full rows.
      full: ``(size,)`` boolean mask of elements that depend on all ``n`` inputs.
    """

    rows: sp.csr_array
    full: np.ndarray

    @property
    def size(self) -> int:
        return self.rows.shape[0]

    @property
    def n(self) -> int:
        return self.rows.shape[1]

    def counts(self) -> np.ndarray:
        """Number of inputs each element depends on, ``(size,)``."""
        return np.where(self.full, self.n, np.diff(self.rows.indptr))


def identity(n: int) -> Deps:
    return Deps(sp.eye_array(n, format="csr", dtype=bool), np.zeros(n, bool))


def empty(size: int, n: int) -> Deps:
    return Deps(sp.csr_array((size, n), dtype=bool), np.zeros(size, bool))


def _keep_rows(rows: sp.csr_array, keep: np.ndarray) -> sp.csr_array:
    lengths = np.diff(rows.indptr)
    mask = np.repeat(keep, lengths)
    indptr = np.concatenate([[0], np.cumsum(np.where(keep, lengths, 0))])
    return sp.csr_array((rows.data[mask], rows.indices[mask], indptr), shape=rows.shape, dtype=bool)


def normalize(deps: Deps) -> Deps:
    """Mark rows that depend on every input as full and drop their explicit entries."""
    now_full = deps.full | (np.diff(deps.rows.indptr) >= deps.n)
    if not now_full.any():
        return deps
    return Deps(_keep_rows(deps.rows, ~now_full), now_full)


def take(operands: list[Deps | None], sizes: list[int], src: np.ndarray, n: int) -> Deps | None:
    """Output element ``e`` copies element ``src[e]`` of the stacked operands (or nothing
    where ``src[e]`` is outside ``[0, sum(sizes))``)."""
    if all(d is None for d in operands):
        return None
    total = int(sum(sizes))
    src = np.asarray(src, dtype=np.int64).ravel()
    if len(operands) == 1 and src.size == total and np.array_equal(src, np.arange(total)):
        return operands[0]  # a reshape or a full slice: the same elements in the same order
    blocks = [d if d is not None else empty(s, n) for d, s in zip(operands, sizes, strict=True)]
    rows = sp.vstack([b.rows for b in blocks] + [sp.csr_array((1, n), dtype=bool)], format="csr")
    full = np.concatenate([b.full for b in blocks] + [np.zeros(1, bool)])
    index = np.where((src >= 0) & (src < total), src, total)
    return Deps(rows[index], full[index])


def union(parts: list[Deps]) -> Deps:
    """Elementwise OR of same-size dependency sets."""
    # An elementwise chain on one input passes the same set along (sin(x) * x): OR-ing a
    # set with itself is that set, with no sparse-matrix work.
    parts = list({id(p): p for p in parts}.values())
    if len(parts) == 1:
        return parts[0]
    rows = parts[0].rows
    full = parts[0].full.copy()
    for p in parts[1:]:
        rows = rows + p.rows
        full |= p.full
    return normalize(Deps(sp.csr_array(rows, dtype=bool), full))


def _widen(upper: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
    """Rows to mark full so that the other candidate rows hold at most ``budget`` entries."""
    widened = np.zeros(upper.shape, bool)
    cand = np.flatnonzero(candidates)
    total = int(upper[cand].sum())
    if total <= budget:
        return widened
    order = cand[np.argsort(-upper[cand], kind="stable")]
    left = total - np.cumsum(upper[order])
    widened[order[: int(np.argmax(left <= budget)) + 1]] = True
    return widened


def aggregate(R: sp.csr_array, deps: Deps | None, budget: int, notes: list, where: str):
    """``D_out = R · D``: output element ``e`` depends on everything operand elements in row
    ``e`` of the 0/1 matrix ``R`` (``(size_out, size_in)``) depend on."""
    if deps is None:
        return None
    R = sp.csr_array(R, dtype=bool)
    full_out = (
        (R @ deps.full.astype(np.int64)) > 0 if deps.full.any() else np.zeros(R.shape[0], bool)
    )
    upper = R.astype(np.int64) @ np.diff(deps.rows.indptr).astype(np.int64)
    widened = _widen(upper, ~full_out, budget)
    if widened.any():
        notes.append(
            f"{where}: more than {budget} dependencies in one array; {int(widened.sum())} "
            "elements were widened to depend on every input (conservative)"
        )
    full_out = full_out | widened
    rows = sp.csr_array(_keep_rows(R, ~full_out) @ deps.rows, dtype=bool)
    return normalize(Deps(rows, full_out))


def spread(operands: list[Deps | None], size: int, n: int, budget: int, notes: list, where: str):
    """Every one of ``size`` output elements depends on every operand dependency."""
    present = [d for d in operands if d is not None]
    if not present:
        return None
    if any(d.full.any() for d in present):
        return Deps(sp.csr_array((size, n), dtype=bool), np.ones(size, bool))
    cols = np.unique(np.concatenate([d.rows.indices for d in present]))
    if cols.size >= n or cols.size * size > budget:
        if cols.size < n:
            notes.append(
                f"{where}: {size} elements × {cols.size} dependencies exceed the budget of "
                f"{budget}; widened to depend on every input (conservative)"
            )
        return Deps(sp.csr_array((size, n), dtype=bool), np.ones(size, bool))
    indptr = np.arange(size + 1, dtype=np.int64) * cols.size
    rows = sp.csr_array(
        (np.ones(size * cols.size, bool), np.tile(cols, size), indptr), shape=(size, n)
    )
    return Deps(rows, np.zeros(size, bool))


def to_csr(deps: Deps | None, size: int, n: int) -> sp.csr_array:
    """The explicit ``(size, n)`` pattern, full rows written out."""
    if deps is None:
        return sp.csr_array((size, n), dtype=bool)
    if not deps.full.any():
        return deps.rows
    k = int(deps.full.sum())
    indptr = np.concatenate([[0], np.cumsum(np.where(deps.full, n, 0))])
    full = sp.csr_array((np.ones(k * n, bool), np.tile(np.arange(n), k), indptr), shape=(size, n))
    return sp.csr_array(deps.rows + full, dtype=bool)
