"""Colorings that compress a sparse Jacobian into few JVPs and VJPs.

A **column coloring** gives columns that share no row the same color; one JVP per color,
with seed vector ``s_c = Σ_{color(j)=c} e_j``, returns ``B[c] = J s_c``, and every nonzero is
read back directly: ``J[i, j] = B[color(j), i]``. A **row coloring** is the same on ``Jᵀ``
with VJPs: ``J[i, j] = C[color(i), j]``. Both are greedy partial distance-2 colorings of
the bipartite graph of ``J`` (Gebremedhin, Manne & Pothen, "What color is your Jacobian?",
SIAM Review 47, 2005, §3), in largest-first order (and natural order, keeping the better),
after a vectorized try of the cyclic colorings ``j mod k`` (optimal for banded and
block-diagonal patterns; used alone when it is within one color of the lower bound).
No column coloring uses fewer colors than the most nonzeros in a row, nor a row coloring
fewer than the most in a column: these are the lower bounds reported.

A **bicoloring** (mixed mode) uses both. Following Coleman & Verma (SIAM J. Sci. Comput.
19, 1998) and Hill & Dalle (arXiv:2501.17737, 2025), it is a star coloring of the bipartite
graph of ``H = [[0, Jᵀ], [J, 0]]``: adjacent vertices differ and every path on four
vertices uses at least three colors, so every two-colored subgraph is a union of stars.
In a star, each leaf has exactly one neighbor of the hub's color, so an edge ``(i, j)``
whose hub is column ``j`` is read from the JVP of color ``color(j)`` at row ``i``, and one
whose hub is row ``i`` from the VJP of color ``color(i)`` at column ``j``. Vertices never
used as a hub get the neutral color (they are in no seed); single-edge stars may use
either end, chosen greedily to reuse products already needed. Products: one JVP per color
of a column hub plus one VJP per color of a row hub. An arrowhead matrix (one dense row,
one dense column, a diagonal) needs ``n`` colors on either side alone and 3 products here.

The star coloring is the restricted greedy of Gebremedhin, Manne & Pothen (2005, §4.3):
a vertex may not take the color of a vertex two steps away through a middle vertex that
is uncolored or has a larger color, so the middle of every two-colored three-vertex path
has the smaller color and no two-colored four-vertex path can exist.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse


@dataclasses.dataclass(frozen=True)
class Coloring:
    """How ``J`` is computed from ``jvps`` JVPs and ``vjps`` VJPs and read back.

    Attributes:
      kind: ``"columns"`` (JVPs only), ``"rows"`` (VJPs only) or ``"bicoloring"`` (both).
      column_colors: ``(n,)`` the JVP seed each column belongs to, ``-1`` for none.
      row_colors: ``(m,)`` the VJP seed each row belongs to, ``-1`` for none.
      jvps, vjps: number of products of each kind.
      lower_bound: no coloring of this kind uses fewer products.
      source: ``(nnz,)`` where each nonzero (in row-major order of the pattern) is read, as
        an index into ``concatenate([B.ravel(), C.ravel()])``: ``B[c] = J s_c`` for the
        ``jvps`` column seeds (shape ``(jvps, m)``), ``C[c] = s_cᵀ J`` for the ``vjps`` row
        seeds (shape ``(vjps, n)``).
    """

    kind: str
    column_colors: np.ndarray
    row_colors: np.ndarray
    jvps: int
    vjps: int
    lower_bound: int
    source: np.ndarray

    @property
    def products(self) -> int:
        """JVPs plus VJPs: the number of products this coloring costs."""
        return self.jvps + self.vjps


def coordinates(csr: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)``, each ``(nnz,)`` int64: the stored entries of ``csr`` in its order
    (row-major when its indices are sorted)."""
    return np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)), csr.indices.astype(np.int64)


def _greedy_distance2(csc: sp.csc_array, order) -> np.ndarray:
    """Color the columns of ``csc`` so that columns sharing a row differ (first fit)."""
    indptr, indices = csc.indptr.tolist(), csc.indices.tolist()
    used_in_row = [0] * csc.shape[0]
    colors = [0] * csc.shape[1]
    for j in order:
        rows = indices[indptr[j] : indptr[j + 1]]
        used = 0
        for i in rows:
            used |= used_in_row[i]
        bit = ~used & (used + 1)  # the lowest color not in the mask, as a bit
        for i in rows:
            used_in_row[i] |= bit
        colors[j] = bit.bit_length() - 1
    return np.asarray(colors, dtype=np.int64)


def _largest_first(degree: np.ndarray) -> np.ndarray:
    return np.argsort(-degree, kind="stable")


def _cyclic_colors(rows, cols, m: int, n: int, bound: int, tries: int = 8) -> np.ndarray | None:
    """The first ``k`` in ``bound, bound + 1, …`` (``tries`` of them) for which coloring
    column ``j`` with ``j mod k`` is valid, as colors; ``None`` if none is. ``rows, cols``:
    the nonzeros' coordinates (:func:`coordinates`).

    Banded and block-diagonal patterns in their natural order are colored optimally this
    way (a band of width ``w`` by ``j mod w``), in a few vectorized passes over the nonzeros
    instead of a greedy loop over the columns.
    """
    for k in range(max(bound, 1), min(bound + tries, n) + 1):
        if _is_valid(rows, cols % k, m, k):
            return np.arange(n, dtype=np.int64) % k
    return None


def _lattice_colors(
    rows, cols, m: int, n: int, k: int, widths: int = 2, tries: int = 32
) -> np.ndarray | None:
    """A valid ``k``-coloring ``color(j) = (j mod w + b · (j div w)) mod k``, or ``None``
    (``rows, cols``: the nonzeros' coordinates, in row-major order).

    A stencil on a row-major ``s``-wide grid conflicts column ``(r, c)`` with its
    neighbours at fixed grid offsets, which no ``j mod k`` separates with the fewest
    colors; a lattice in the grid's coordinates does: the 5-point stencil's columns by
    ``(c + 2r) mod 5``, the 9-point stencil's by ``(c + 3r) mod 9`` (both optimal). The
    grid width ``w`` is not known, so the most frequent gaps ``g`` between neighbouring
    nonzeros of a row are tried, ``widths`` of them, as ``w = g + 1, g, g + 2``, with
    ``b = 1, 2, …, k - 1``: at most ``tries`` vectorized checks over the nonzeros.
    """
    same_row = rows[1:] == rows[:-1]
    gaps = (cols[1:] - cols[:-1])[same_row]
    gaps = gaps[gaps > 1]
    if gaps.size == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    candidates = []
    for g in values[np.argsort(-counts, kind="stable")][:widths]:
        candidates += [w for w in (g + 1, g, g + 2) if 1 < w < n and w not in candidates]
    pairs = [(int(w), b) for w in candidates for b in range(1, k)][:tries]
    for w, b in pairs:
        if _is_valid(rows, (cols % w + b * (cols // w)) % k, m, k):
            j = np.arange(n, dtype=np.int64)
            return (j % w + b * (j // w)) % k
    return None


def _is_valid(rows: np.ndarray, colors_of_nonzeros: np.ndarray, m: int, k: int) -> bool:
    """Whether no row holds two nonzeros of the same color."""
    key = rows * k + colors_of_nonzeros
    if m * k <= 1 << 24:
        return int(np.bincount(key, minlength=m * k).max(initial=0)) <= 1
    key.sort()
    return not (key[1:] == key[:-1]).any()


def _column_colors(csr: sp.csr_array) -> tuple[np.ndarray, int]:
    m, n = csr.shape
    row_counts = np.diff(csr.indptr)
    bound = int(row_counts.max(initial=0))
    if bound >= n:  # a full row: every pair of columns conflicts
        return np.arange(n), bound
    if csr.nnz == 0:
        return np.zeros(n, np.int64), bound
    rows, cols = coordinates(csr)
    cyclic = _cyclic_colors(rows, cols, m, n, bound)
    # A pattern that j mod k colors within a few colors of the bound, but not at it, is
    # often a grid stencil: a lattice coloring may reach the bound.
    if cyclic is not None and cyclic.max(initial=-1) + 1 > bound:
        lattice = _lattice_colors(rows, cols, m, n, bound)
        if lattice is not None:  # meets the lower bound: optimal
            return lattice, bound
    if cyclic is not None and cyclic.max(initial=-1) + 1 <= bound + 1:
        # Optimal, or one color above the bound: a greedy pass (a Python loop over the
        # columns, milliseconds at n = 4096) could save at most that one color.
        return cyclic, bound
    csc = sp.csc_array(csr)
    csc.sort_indices()
    # Upper bound on the distance-2 degree of each column: the sizes of its rows.
    degree = sp.csr_array(csc.T, dtype=np.int64) @ row_counts
    best = None
    for order in (_largest_first(degree), np.arange(n)):
        colors = _greedy_distance2(csc, order)
        if best is None or colors.max(initial=-1) < best.max(initial=-1):
            best = colors
        if best.max(initial=-1) + 1 <= bound:  # optimal: no other order can do better
            break
    if cyclic is not None and cyclic.max() < best.max(initial=-1):
        best = cyclic
    return best, bound


def as_csr(pattern) -> sp.csr_array:
    """A pattern as a SciPy CSR array: a ``jacobian_fn``'s ``.pattern``, the BCOO
    :func:`~bpjax.modes.sparsity` returns, a SciPy sparse array or matrix, or a dense
    ``(m, n)`` array (nonzero = structural)."""
    if hasattr(pattern, "csr") and hasattr(pattern, "max_nonzeros"):  # a Pattern
        if pattern.csr is None:
            raise ValueError(
                f"pattern: this Pattern has {pattern.nnz:,} nonzeros, more than its "
                f"max_nonzeros={pattern.max_nonzeros:,}, so it keeps no matrix to color; "
                "build it again with a larger max_nonzeros"
            )
        pattern = pattern.csr
    if isinstance(pattern, jsparse.BCOO):
        if pattern.n_batch or pattern.n_dense or pattern.ndim != 2:
            raise ValueError(f"pattern: a 2-D BCOO without batch or dense axes, got {pattern}")
        rows, cols = np.asarray(pattern.indices).T
        data = np.ones(len(rows), np.int8)
        csr = sp.csr_array((data, (rows, cols)), shape=pattern.shape)
    elif sp.issparse(pattern):
        csr = sp.csr_array(pattern)
    else:
        if hasattr(pattern, "pattern"):  # a JacobianFn
            raise TypeError(
                f"pattern: got a {type(pattern).__name__}; pass its .pattern (the Pattern "
                "it computed) instead"
            )
        dense = np.asarray(pattern) if not isinstance(pattern, str | bytes) else None
        if dense is None or dense.dtype == object or dense.ndim != 2:
            what = type(pattern).__name__ if dense is None or dense.ndim == 0 else dense.shape
            raise ValueError(
                "pattern: expected a Pattern, the BCOO modes.sparsity returns, a SciPy sparse "
                f"matrix or a dense (m, n) array, got {what}"
            )
        csr = sp.csr_array(dense != 0)
    csr = sp.csr_array((np.ones(csr.nnz, np.int8), csr.indices, csr.indptr), shape=csr.shape)
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


def color_columns(pattern) -> Coloring:
    """Column coloring of the ``(m, n)`` pattern: one JVP per color.

    ``pattern``: what :func:`~bpjax.modes.sparsity` returns, or any form :func:`as_csr`
    takes.
    """
    csr = as_csr(pattern)
    colors, bound = _column_colors(csr)
    k = int(colors.max(initial=-1)) + 1
    i, j = coordinates(csr)
    m = csr.shape[0]
    return Coloring("columns", colors, np.full(m, -1), k, 0, bound, colors[j] * m + i)


def is_symmetric(csr: sp.csr_array) -> bool:
    """Whether the pattern equals its transpose (then row and column colorings agree)."""
    if csr.shape[0] != csr.shape[1]:
        return False
    t = sp.csr_array(csr.T)
    t.sort_indices()
    return np.array_equal(csr.indptr, t.indptr) and np.array_equal(csr.indices, t.indices)


def color_rows(pattern, *, columns: Coloring | None = None) -> Coloring:
    """Row coloring of the ``(m, n)`` pattern: one VJP per color (``pattern`` as for
    :func:`color_columns`). ``columns``: the column coloring of the same pattern, reused
    when the pattern is symmetric (rows sharing a column are then columns sharing a row)."""
    csr = as_csr(pattern)
    if columns is not None:
        _check_column_coloring(csr, columns)
    return rows_of(csr, columns)


def rows_of(csr: sp.csr_array, columns: Coloring | None = None) -> Coloring:
    """:func:`color_rows` of a CSR pattern, ``columns`` (if given) trusted to be its column
    coloring (the planner's path: it colored the columns of the same pattern just before)."""
    m, n = csr.shape
    if columns is not None and is_symmetric(csr):
        colors, bound = columns.column_colors, columns.lower_bound
    else:
        colors, bound = _column_colors(sp.csr_array(csr.T))
    k = int(colors.max(initial=-1)) + 1
    i, j = coordinates(csr)
    return Coloring("rows", np.full(n, -1), colors, 0, k, bound, colors[i] * n + j)


def _check_column_coloring(csr: sp.csr_array, columns) -> None:
    """``columns`` must be a column coloring of this pattern: reused from another pattern,
    its colors would silently merge columns that share a row."""
    colors = getattr(columns, "column_colors", None)
    if getattr(columns, "kind", None) != "columns" or np.shape(colors) != (csr.shape[1],):
        raise ValueError(
            f"color_rows: columns must be color_columns of this ({csr.shape[0]}, "
            f"{csr.shape[1]}) pattern, got {columns!r:.80}"
        )
    i, j = coordinates(csr)
    pairs = np.unique(np.stack([i, colors[j]]), axis=1)
    if pairs.shape[1] != len(i):
        raise ValueError(
            "color_rows: columns is not a column coloring of this pattern (two columns that "
            "share a row have the same color); pass color_columns(pattern) of the same pattern"
        )


def _bipartite(csr: sp.csr_array) -> sp.csr_array:
    """The graph of ``[[0, Jᵀ], [J, 0]]``: vertices ``0..n-1`` columns, ``n..n+m-1`` rows."""
    graph = sp.csr_array(sp.block_array([[None, csr.T], [csr, None]], format="csr"))
    graph.sort_indices()
    return graph


def _star_colors(graph: sp.csr_array, order) -> np.ndarray:
    """Restricted greedy star coloring of ``graph`` in ``order``; ``(vertices,)`` colors."""
    indptr, indices = graph.indptr.tolist(), graph.indices.tolist()
    vertices = graph.shape[0]
    neighbor_colors = [0] * vertices  # bitmask of the colors of each vertex's colored neighbors
    color = [-1] * vertices
    for v in order.tolist():
        forbidden = 0
        neighbors = indices[indptr[v] : indptr[v + 1]]
        for w in neighbors:
            cw = color[w]
            if cw >= 0:
                forbidden |= (1 << cw) | (neighbor_colors[w] & ((1 << cw) - 1))
            else:
                forbidden |= neighbor_colors[w]
        bit = ~forbidden & (forbidden + 1)  # the lowest color not in the mask, as a bit
        color[v] = bit.bit_length() - 1
        for w in neighbors:
            neighbor_colors[w] |= bit
    return np.asarray(color, dtype=np.int64)


def _degree_into(vertex: np.ndarray, other_color: np.ndarray, k: int) -> np.ndarray:
    """For each edge, how many neighbors of ``vertex`` have the other end's color."""
    key = vertex * k + other_color
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse]


def _choose_hubs(a, b, col_hub, row_hub):
    """Assign single-edge stars to a side, reusing products already needed (greedy cover)."""
    use_col, use_row = col_hub.copy(), row_hub.copy()
    need_f, need_r = set(a[col_hub].tolist()), set(b[row_hub].tolist())
    pending = ~col_hub & ~row_hub
    while pending.any():
        pending_col = pending & np.isin(a, list(need_f))
        use_col |= pending_col
        pending &= ~pending_col
        pending_row = pending & np.isin(b, list(need_r))
        use_row |= pending_row
        pending &= ~pending_row
        if not pending.any():
            break
        fa, fc = np.unique(a[pending], return_counts=True)
        ra, rc = np.unique(b[pending], return_counts=True)
        if fc.max() >= rc.max():
            need_f.add(int(fa[np.argmax(fc)]))
        else:
            need_r.add(int(ra[np.argmax(rc)]))
    return use_col, use_row, sorted(need_f), sorted(need_r)


def bicoloring_lower_bound(row_counts: np.ndarray, col_counts: np.ndarray) -> int:
    """No direct bicoloring of a pattern uses fewer than this many products.

    With ``p`` JVPs, a row can have at most ``p`` nonzeros read from JVPs (each alone in its
    color); the other ``Σ_i max(0, r_i − p)`` must come from VJPs, and with ``q`` VJPs a
    column yields at most ``min(c_j, q)`` of them. The bound is the least ``p + q`` with
    ``Σ_i max(0, r_i − p) ≤ Σ_j min(c_j, q)`` (``r_i``, ``c_j``: nonzeros per row, column).
    """
    r, c = np.asarray(row_counts), np.asarray(col_counts)
    if r.size == 0 or c.size == 0 or r.sum() == 0:
        return 0
    p = np.arange(int(r.max()) + 1)
    r_hist = np.bincount(r, minlength=p.size + 1)
    # need[p] = Σ_i max(0, r_i - p), from the histogram of row counts.
    above = np.cumsum(r_hist[::-1])[::-1]  # above[k] = #rows with r_i >= k
    need = np.concatenate([np.cumsum(above[1:][::-1])[::-1], [0]])[: p.size]
    q = np.arange(int(c.max()) + 1)
    c_hist = np.bincount(c, minlength=q.size + 1)
    at_least = np.cumsum(c_hist[::-1])[::-1]  # #columns with c_j >= k
    give = np.concatenate([[0], np.cumsum(at_least[1 : q.size])])  # Σ_j min(c_j, q)
    q_needed = np.searchsorted(give, need, side="left")
    return int((p + q_needed).min())


def _bicoloring_from_star(csr, colors, bound) -> Coloring:
    m, n = csr.shape
    k = int(colors.max(initial=0)) + 1
    i, j = coordinates(csr)
    a, b = colors[j], colors[n + i]  # column color, row color of each nonzero
    col_hub = _degree_into(j, b, k) >= 2
    row_hub = _degree_into(i, a, k) >= 2
    if (col_hub & row_hub).any():
        raise AssertionError("bicolor: the star coloring has a two-colored path on 4 vertices")
    use_col, use_row, fwd, rev = _choose_hubs(a, b, col_hub, row_hub)
    slot_f = np.full(k, -1)
    slot_f[fwd] = np.arange(len(fwd))
    slot_r = np.full(k, -1)
    slot_r[rev] = np.arange(len(rev))
    column_colors = np.full(n, -1)
    column_colors[j[use_col]] = slot_f[a[use_col]]
    row_colors = np.full(m, -1)
    row_colors[i[use_row]] = slot_r[b[use_row]]
    p, q = len(fwd), len(rev)
    source = np.where(use_col, slot_f[a] * m + i, m * p + slot_r[b] * n + j)
    return Coloring("bicoloring", column_colors, row_colors, p, q, bound, source)


def bicolor(pattern) -> Coloring:
    """Star bicoloring of the ``(m, n)`` pattern: some columns by JVPs, some rows by VJPs.

    ``pattern`` as for :func:`color_columns`. Vertex orders tried: largest degree first
    (dense rows and columns become hubs), then columns before rows in their natural order
    (banded matrices); the one with fewer products is kept.
    """
    csr = as_csr(pattern)
    m, n = csr.shape
    bound = bicoloring_lower_bound(np.diff(csr.indptr), np.bincount(csr.indices, minlength=n))
    graph = _bipartite(csr)
    best = None
    for order in (_largest_first(np.diff(graph.indptr)), np.arange(n + m)):
        c = _bicoloring_from_star(csr, _star_colors(graph, order), bound)
        if best is None or c.products < best.products:
            best = c
        if best.products <= bound:
            break
    return best
