"""Jacobian sparsity patterns by abstract interpretation of the jaxpr.

``f`` is traced once to a jaxpr; each equation maps the dependency sets of its operands
(:mod:`bpjax.modes._deps`) to those of its outputs. The result, for the flattened
``f: R^n → R^m``, is the set of ``(i, k)`` such that output ``i`` may depend on input ``k``:
a superset of the nonzeros of ``J(x)`` at every ``x``. Which rule each primitive gets is its
record in :mod:`bpjax.modes._primitives`; in short:

* elementwise ops (with scalar broadcasting): ``D_out[e] = ∪_operands D[e]``; comparisons and
  other integer/boolean results, ``stop_gradient`` and ``iota`` depend on nothing (their
  derivative is zero, as in ``jax.jacrev``);
* data movement (reshape, transpose, broadcast, slice, pad, concatenate, rev, split,
  ``dynamic_slice``/``dynamic_update_slice`` and ``gather``/``scatter`` with indices known at
  trace time): the primitive applied to element ids says which element each output copies;
* reductions, cumulative reductions, sort: the union over the reduced elements;
* ``dot_general``: the union over the contracted elements, skipping exact zeros of a
  constant operand (``A @ x`` with a constant banded ``A`` gives ``A``'s pattern);
* ``jit``/``closed_call``/``remat``: their bodies; ``cond``: the union over branches (the
  taken branch if its index is a constant);
* ``custom_jvp_call``/``custom_vjp_call``: the rule differentiation runs (the JVP rule; the
  backward rule), not the primal; ``while``: simulated while its trip count is a constant,
  else the carry's dependencies to a fixed point; ``scan``: unrolled (see
  :mod:`bpjax.modes._flow`);
* ``conv_general_dilated``, ``top_k``, ``cholesky``, ``dynamic_slice`` at traced starts: by
  their structure (:mod:`bpjax.modes._structured`);
* anything else (``_primitives.CONSERVATIVE``: FFTs, most linear algebra…; and primitives
  with no record): every output element depends on every dependency of every operand.
  This is conservative, never exact, and is reported in :attr:`Pattern.fallbacks` (and
  by :func:`bpjax.modes.sparsity` as a :class:`SparsityWarning`) with the primitive's name.

Index arrays computed inside ``f`` (``x[i - 1]``) are folded to constants on the way.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

from bpjax._validate import to_device
from bpjax.modes import _checks, _coloring, _deps
from bpjax.modes._propagate import Interpreter

DEFAULT_MAX_NONZEROS = 1 << 24


class SparsityWarning(UserWarning):
    """The pattern is conservative: some primitive was not traced precisely."""


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The Jacobian's nonzero pattern of the flattened ``f: R^n → R^m``.

    Attributes:
      shape: ``(m, n)``.
      nnz: number of structural nonzeros.
      fallbacks: one line per primitive handled conservatively (name and why).
      custom_vjp: whether ``f`` calls a ``custom_vjp`` function (no forward mode).
      while_loop: whether a ``lax.while_loop`` is on the differentiation path (JAX has no
        reverse mode for it).
      csr: ``(m, n)`` boolean SciPy CSR matrix with sorted indices, built on first use;
        ``None`` when it would hold more than ``max_nonzeros`` entries.
      row_counts, col_counts: nonzeros per row ``(m,)`` and per column ``(n,)``.
    """

    shape: tuple[int, int]
    nnz: int
    fallbacks: tuple[str, ...]
    custom_vjp: bool
    while_loop: bool = False
    deps: _deps.Deps | None = dataclasses.field(repr=False, default=None)
    max_nonzeros: int = DEFAULT_MAX_NONZEROS

    @functools.cached_property
    def csr(self) -> sp.csr_array | None:
        if self.nnz > self.max_nonzeros:
            return None
        csr = _deps.to_csr(self.deps, *self.shape)
        csr.sort_indices()
        return csr

    @functools.cached_property
    def row_counts(self) -> np.ndarray:
        if self.deps is None:
            return np.zeros(self.shape[0], np.int64)
        return self.deps.counts()

    @functools.cached_property
    def col_counts(self) -> np.ndarray:
        m, n = self.shape
        if self.deps is None:
            return np.zeros(n, np.int64)
        explicit = np.bincount(self.deps.rows.indices, minlength=n)
        return explicit + int(self.deps.full.sum())


def detect(f_flat, x_flat, *, max_nonzeros: int = DEFAULT_MAX_NONZEROS, closed=None) -> Pattern:
    """The pattern of ``f_flat: (n,) → (m,)`` at the shapes of ``x_flat`` (see module doc).

    ``closed``: ``jax.make_jaxpr(f_flat)(x_flat)`` if the caller already has it.
    """
    if closed is None:
        closed = jax.make_jaxpr(f_flat)(x_flat)
    n = x_flat.size
    m = int(np.prod(closed.out_avals[0].shape))
    interp = Interpreter(n, max_nonzeros)
    (out,), _ = interp.run(closed.jaxpr, closed.consts, [_deps.identity(n)], [None])
    nnz = 0 if out is None else int(out.counts().sum())
    notes = tuple(dict.fromkeys(interp.notes))
    return Pattern((m, n), nnz, notes, interp.custom_vjp, interp.while_loops > 0, out, max_nonzeros)


def warn(pattern: Pattern) -> None:
    """Say, once per call, which primitives made the pattern conservative."""
    warnings.warn(
        "sparsity: the pattern is conservative (it may hold entries that are always zero, "
        "never misses one) because of: " + "; ".join(pattern.fallbacks),
        SparsityWarning,
        stacklevel=3,
    )


def too_dense_message(pattern: Pattern) -> str:
    m, n = pattern.shape
    return (
        f"the Jacobian's pattern has {pattern.nnz:,} nonzeros ({m} x {n}), more than "
        f"max_nonzeros={pattern.max_nonzeros:,}; a pattern this dense gains nothing from "
        "coloring: use mode='fwd', 'rev' or 'auto' and a dense Jacobian"
    )


def sparsity(f, x, *, max_nonzeros: int = DEFAULT_MAX_NONZEROS):
    """The nonzero pattern of ``J = ∂f/∂x``, from ``f``'s jaxpr (no derivative evaluated).

    ``x`` and ``f(x)`` may be pytrees; they are flattened as ``jax.flatten_util.ravel_pytree``
    does (leaves in order, each row-major), giving ``J`` the shape ``(m, n)``. The pattern
    holds for every ``x`` of these shapes: exact for the primitives listed in the module
    docstring, a superset otherwise, never missing a nonzero. Where it is conservative, a
    :class:`SparsityWarning` names the primitives.

    Args:
      f: a function of one pytree of float arrays, returning a pytree of float arrays.
      x: a point (only shapes and dtypes are used).
      max_nonzeros: refuse patterns with more nonzeros than this (a dense ``10^5 x 10^5``
        pattern would need 10^10 entries); intermediate arrays are widened to dense rows
        past the same budget.

    Returns:
      A ``jax.experimental.sparse.BCOO`` of shape ``(m, n)`` whose stored entries are the
      structural nonzeros (``.indices``, sorted row-major), each stored as ``1`` (``uint8``:
      JAX cannot densify boolean BCOOs); ``.todense().astype(bool)`` is the dense pattern.

    Example:
      >>> P = sparsity(lambda x: x[1:] - x[:-1], jnp.ones(4))
      >>> P.todense()   # [[1 1 0 0] [0 1 1 0] [0 0 1 1]]
    """
    _checks.check_max_nonzeros(max_nonzeros, "sparsity")
    f_flat, x_flat, _, _, closed = _checks.flatten_traced(f, x)
    pattern = detect(f_flat, x_flat, max_nonzeros=max_nonzeros, closed=closed)
    if pattern.fallbacks:
        warn(pattern)
    if pattern.csr is None:
        raise ValueError("sparsity: " + too_dense_message(pattern))
    indices = np.stack(_coloring.coordinates(pattern.csr), axis=1).astype(np.int32)
    # Built on the host: jnp.ones and jnp.asarray compile for every new count of nonzeros.
    return jsparse.BCOO(
        (to_device(np.ones(indices.shape[0], np.uint8)), to_device(indices)),
        shape=pattern.shape,
        indices_sorted=True,
        unique_indices=True,
    )
