"""Symmetric colorings of a Hessian's pattern: star (direct recovery), acyclic (substitution).

A symmetric ``n x n`` pattern is the adjacency graph ``G`` (vertex ``i`` per variable, an
edge ``{i, j}`` per off-diagonal nonzero). ``k`` colors give ``k`` Hessian-vector products
``B = H S`` (``S[j, c] = 1`` when ``color(j) = c``); ``H`` is read back from ``B``:

* **star coloring**: a distance-1 coloring in which every path on four vertices uses three
  colors, so every two-colored subgraph is a union of stars. An edge ``{i, j}`` of a star
  with hub ``j`` is read directly: ``H[i, j] = B[i, color(j)]`` (``i`` has one neighbor of
  ``j``'s color). Greedy, in largest-first order, with the hub bookkeeping of Gebremedhin,
  Tarafdar, Manne & Pothen (2007), Algorithm 4.1 (as SparseMatrixColorings.jl writes it).
* **acyclic coloring**: a distance-1 coloring in which every cycle uses three colors, so
  every two-colored subgraph is a forest; usually fewer colors than star (a path: 2, not
  3). Recovery substitutes along each tree from its leaves: a leaf ``i`` with parent ``j``
  has ``H[i, j] = B[i, color(j)] − Σ_children H[i, child]``. Greedy first fit in
  largest-first order, a candidate color refused when it would close a two-colored cycle
  (two neighbors of one color already in one two-colored tree: a disjoint-set forest per
  color pair, as in Gebremedhin et al. 2007, §3, tested per candidate rather than kept per
  edge). The substitution is sequential in the trees' depth: :class:`Substitution` holds
  its rounds (leaves first), each one vectorized.

Diagonal entries need no care: neighbors differ in color, so ``H[i, i] = B[i, color(i)]``.

References: A. Gebremedhin, A. Tarafdar, F. Manne & A. Pothen, "New acyclic and star
coloring algorithms with application to computing Hessians", SIAM J. Sci. Comput. 29
(2007); A. Gebremedhin, F. Manne & A. Pothen, "What color is your Jacobian?", SIAM Review
47 (2005); G. Dalle & A. Montoison, arXiv:2505.07308 (2025).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from bpjax.modes._coloring import as_csr

KINDS = ("star", "acyclic")
# Past this density a greedy coloring costs O(n·d²) Python steps for almost no saving:
# every vertex gets its own color (a valid star and acyclic coloring, dense recovery).
DENSE_FRACTION = 0.25
_NUMPY_DEGREE = 32  # neighbor lists longer than this are scanned with numpy, not Python


@dataclasses.dataclass(frozen=True)
class Substitution:
    """The acyclic recovery's rounds, flat: round ``r`` is ``starts[r]:starts[r + 1]``.

    Round ``r`` computes, for each of its edges ``e`` (from the leaf ``src`` towards
    ``dst``), ``h[e] = B_flat[b_index] − acc[src_slot]``, then ``acc[dst_slot] += h[e]``;
    a slot is one vertex in one two-colored tree (``slots`` of them). Each array is
    ``(edges,)``; ``starts`` is ``(rounds + 1,)``.
    """

    edge: np.ndarray
    b_index: np.ndarray
    src_slot: np.ndarray
    dst_slot: np.ndarray
    starts: np.ndarray
    slots: int

    @property
    def rounds(self) -> int:
        """How many sequential rounds the recovery takes (the trees' depth, from leaves)."""
        return len(self.starts) - 1


@dataclasses.dataclass(frozen=True)
class SymmetricColoring:
    """How ``H`` is computed from ``colors`` HVPs and read back.

    Attributes:
      kind: ``"star"`` or ``"acyclic"``.
      colors: ``(n,)`` the seed of each variable (``-1``: a variable with no nonzero).
      count: number of colors, i.e. HVPs.
      row_bound: the largest row count of the pattern, a lower bound for a distance-2
        (column) coloring; a symmetric coloring can beat it (an arrowhead: 2 colors).
      pattern: the ``(n, n)`` symmetric CSR pattern (sorted indices, diagonal included
        where structural).
      source: ``(nnz,)`` for star: the index into ``B_flat = B.T.ravel()`` (``B`` is
        ``(n, count)``; ``B_flat[c * n + i] = (H s_c)_i``) of each nonzero in row-major
        order; for acyclic: the index into ``concatenate([h, diagonal])`` (edge values,
        then ``B_flat`` entries ``c(i)·n + i`` for the diagonal).
      substitution: the acyclic recovery's rounds (``None`` for star).
    """

    kind: str
    colors: np.ndarray
    count: int
    row_bound: int
    pattern: sp.csr_array
    source: np.ndarray
    substitution: Substitution | None = None

    @property
    def products(self) -> int:
        """Hessian-vector products this coloring costs (one per color)."""
        return self.count


def symmetric_pattern(pattern) -> sp.csr_array:
    """``P ∪ Pᵀ`` as a sorted 0/1 CSR (``pattern`` in any form :func:`as_csr` takes)."""
    csr = as_csr(pattern)
    if csr.shape[0] != csr.shape[1]:
        raise ValueError(f"pattern: a Hessian pattern is square, got shape {csr.shape}")
    sym = sp.csr_array(((csr + csr.T) != 0).astype(np.int8))
    sym.sort_indices()
    return sym


def _graph(sym: sp.csr_array):
    """Adjacency without the diagonal: ``(indptr, neighbors, edge_of_position)``; the
    undirected edge ``{i, j}``, ``i < j``, gets one id at both of its positions."""
    upper = sp.triu(sym, k=1, format="coo")
    ids = np.arange(upper.nnz) + 1
    edge = sp.csr_array(
        (np.concatenate([ids, ids]), (np.r_[upper.row, upper.col], np.r_[upper.col, upper.row])),
        shape=sym.shape,
    )
    edge.sort_indices()
    return edge.indptr, edge.indices, edge.data - 1


def _largest_first(indptr) -> np.ndarray:
    return np.argsort(-np.diff(indptr), kind="stable")


def _star_colors(indptr, nbr, edge_of) -> np.ndarray:
    # Python lists for the short neighbor lists (most of them); NumPy arrays mirror
    # colors, stars and hubs for the long ones, where a hub's n neighbors would otherwise
    # cost n Python steps per leaf.
    n = len(indptr) - 1
    ip, nb, eo = indptr.tolist(), nbr.tolist(), edge_of.tolist()
    colors, colors_np = [-1] * n, np.full(n, -1, np.int64)
    forbidden, treated = [-1] * (n + 1), [-1] * n
    first_p, first_q, first_e = [-1] * (n + 1), [-1] * (n + 1), [-1] * (n + 1)
    edges = max(int(edge_of.max(initial=-1)) + 1, 1)
    star, star_np = [-1] * edges, np.full(edges, -1, np.int64)
    hub, hub_np = [-1] * edges, np.full(edges, -1, np.int64)  # per star (-1: two vertices)
    stars = 0

    def forbid_all(v, values):
        for c in np.unique(values).tolist():
            forbidden[c] = v

    def treat(v, w):  # forbid, for v, the colors of all of w's colored neighbors
        lo, hi = ip[w], ip[w + 1]
        if hi - lo > _NUMPY_DEGREE:
            cx = colors_np[nbr[lo:hi]]
            forbid_all(v, cx[cx >= 0])
        else:
            for x in nb[lo:hi]:
                if colors[x] >= 0:
                    forbidden[colors[x]] = v
        treated[w] = v

    def set_star(e, s, h=None):
        star[e] = s
        star_np[e] = s
        if h is not None:
            hub[s] = h
            hub_np[s] = h

    for v in _largest_first(indptr).tolist():
        for pos in range(ip[v], ip[v + 1]):
            w = nb[pos]
            cw = colors[w]
            if cw < 0:
                continue
            forbidden[cw] = v
            if first_p[cw] == v:  # a second neighbor of color cw: no 2-colored P4 via either
                if treated[first_q[cw]] != v:
                    treat(v, first_q[cw])
                treat(v, w)
                continue
            first_p[cw], first_q[cw], first_e[cw] = v, w, eo[pos]
            lo, hi = ip[w], ip[w + 1]
            if hi - lo > _NUMPY_DEGREE:  # forbid the colors of the hubs next to w
                xs, s = nbr[lo:hi], star_np[edge_of[lo:hi]]
                cx = colors_np[xs]
                forbid_all(v, cx[(xs != v) & (cx >= 0) & (s >= 0) & (hub_np[s] == xs)])
            else:
                for p in range(lo, hi):
                    x, s = nb[p], star[eo[p]]
                    if x != v and colors[x] >= 0 and s >= 0 and hub[s] == x:
                        forbidden[colors[x]] = v
        c = 0
        while forbidden[c] == v:
            c += 1
        colors[v] = c
        colors_np[v] = c
        # The stars through v's edges (a hub absorbs them, or a new two-vertex star).
        for pos in range(ip[v], ip[v + 1]):
            w = nb[pos]
            cw = colors[w]
            if cw < 0:
                continue
            lo, hi = ip[w], ip[w + 1]
            if hi - lo > _NUMPY_DEGREE:
                xs = nbr[lo:hi]
                hits = np.flatnonzero((xs != v) & (colors_np[xs] == c))
                found = lo + int(hits[0]) if hits.size else -1
            else:
                found = next((p for p in range(lo, hi) if nb[p] != v and colors[nb[p]] == c), -1)
            if found >= 0:
                set_star(eo[pos], star[eo[found]], w)
            elif first_p[cw] == v and first_q[cw] != w:
                set_star(eo[pos], star[first_e[cw]], v)
            else:
                set_star(eo[pos], stars)
                stars += 1
    return colors_np


def _star_source(sym, colors, indptr, nbr) -> np.ndarray:
    """Where each nonzero is read: ``B[i, c(j)]`` if ``i`` has one neighbor of color
    ``c(j)`` (then ``j`` is a hub or the edge a lone star), else ``B[j, c(i)]``."""
    n = sym.shape[0]
    rows = np.repeat(np.arange(n), np.diff(sym.indptr))
    cols = sym.indices
    adj_rows = np.repeat(np.arange(n), np.diff(indptr))
    k = int(colors.max(initial=-1)) + 1
    seen = np.bincount(adj_rows * k + colors[nbr], minlength=n * k) if k else np.zeros(0)
    direct = (rows == cols) | (seen[rows * k + colors[cols]] == 1)
    return np.where(direct, colors[cols] * n + rows, colors[rows] * n + cols)


def _find(parent, a):
    root = a
    while parent.get(root, root) != root:
        root = parent[root]
    while parent.get(a, a) != root:
        parent[a], a = root, parent[a]
    return root


def _acyclic_colors(indptr, nbr) -> np.ndarray:
    n = len(indptr) - 1
    colors = [-1] * n
    forests: dict[tuple[int, int], dict[int, int]] = {}
    for v in _largest_first(indptr).tolist():
        ws = [w for w in nbr[indptr[v] : indptr[v + 1]].tolist() if colors[w] >= 0]
        taken = {colors[w] for w in ws}
        c = 0
        while True:
            while c in taken:
                c += 1
            roots = set()
            for w in ws:  # two same-colored neighbors in one (c, c(w)) tree close a cycle
                pair = (min(c, colors[w]), max(c, colors[w]))
                root = (pair, _find(forests.get(pair, {}), w))
                if root in roots:
                    break
                roots.add(root)
            else:
                break
            c += 1
        colors[v] = c
        for w in ws:
            pair = (min(c, colors[w]), max(c, colors[w]))
            parent = forests.setdefault(pair, {})
            parent[_find(parent, w)] = _find(parent, v)
    return np.asarray(colors, np.int64)


def _substitution(colors, indptr, nbr, edge_of, n) -> tuple[Substitution, np.ndarray]:
    """Peel every two-colored tree from its leaves: ``(rounds, edge_ends)``."""
    upper = np.flatnonzero(np.repeat(np.arange(n), np.diff(indptr)) < nbr)
    a = np.repeat(np.arange(n), np.diff(indptr))[upper]
    b = nbr[upper]
    ids = edge_of[upper]
    ends = np.zeros((ids.size, 2), np.int64)
    ends[ids] = np.stack([a, b], 1)
    k = int(colors.max(initial=-1)) + 1
    pair = np.minimum(colors[ends[:, 0]], colors[ends[:, 1]]) * k + np.maximum(
        colors[ends[:, 0]], colors[ends[:, 1]]
    )
    # A slot is (pair, vertex): vertex i in the two-colored tree of its edge's color pair.
    keys = np.concatenate([pair * n + ends[:, 0], pair * n + ends[:, 1]])
    uniq, slot = np.unique(keys, return_inverse=True)
    slot = slot.reshape(2, -1).T
    edges_of_slot = [[] for _ in range(uniq.size)]
    for e, (s0, s1) in enumerate(slot.tolist()):
        edges_of_slot[s0].append(e)
        edges_of_slot[s1].append(e)
    degree = np.array([len(es) for es in edges_of_slot], np.int64)
    done = np.zeros(ids.size, bool)
    rounds = []
    leaves = np.flatnonzero(degree == 1).tolist()
    while leaves:
        this, nxt = [], []
        for s in leaves:
            if degree[s] != 1:
                continue
            e = next((e for e in edges_of_slot[s] if not done[e]), None)
            if e is None:  # a lone edge, taken this round from its other end
                continue
            done[e] = True
            side = 0 if slot[e, 0] == s else 1
            this.append((e, side))
        for e, _side in this:
            for s in slot[e]:
                degree[s] -= 1
                if degree[s] == 1:
                    nxt.append(int(s))
        rounds.append(this)
        leaves = nxt
    order = np.array([e for r in rounds for e, _ in r], np.int64)
    side = np.array([sd for r in rounds for _, sd in r], np.int64)
    starts = np.cumsum([0] + [len(r) for r in rounds]).astype(np.int64)
    i, j = ends[order, side], ends[order, 1 - side]
    edge, b_index = order, colors[j] * n + i
    src, dst = slot[order, side], slot[order, 1 - side]
    return Substitution(edge, b_index, src, dst, starts, int(uniq.size)), ends


def _row_bound(sym) -> int:
    return int(np.diff(sym.indptr).max(initial=0))


def _trivial(sym) -> np.ndarray:
    """One color per variable that has a nonzero (a dense pattern: no HVP to save)."""
    active = np.diff(sym.indptr) > 0
    colors = np.full(sym.shape[0], -1, np.int64)
    colors[active] = np.arange(int(active.sum()))
    return colors


def color_symmetric(pattern, *, kind: str = "star") -> SymmetricColoring:
    """Color a Hessian pattern for ``kind`` recovery (``"star"`` or ``"acyclic"``).

    Args:
      pattern: ``(n, n)``: what :func:`~bpjax.modes.hessian_sparsity` returns, or any form
        :func:`~bpjax.modes.as_csr` takes; it is symmetrised (``P ∪ Pᵀ``) first.
      kind: ``"star"`` (direct recovery) or ``"acyclic"`` (fewer colors, recovery by
        substitution in rounds).

    Returns:
      A :class:`SymmetricColoring`.

    Example:
      >>> P = np.eye(5) + np.eye(5, k=1) + np.eye(5, k=-1)   # tridiagonal
      >>> color_symmetric(P, kind="star").count, color_symmetric(P, kind="acyclic").count
      (3, 2)
    """
    if kind not in KINDS:
        raise ValueError(f"color_symmetric: kind must be one of {KINDS}, got {kind!r}")
    sym = symmetric_pattern(pattern)
    n = sym.shape[0]
    indptr, nbr, edge_of = _graph(sym)
    dense = sym.nnz > DENSE_FRACTION * n * n and n > 64
    if kind == "star":
        colors = _trivial(sym) if dense else _star_colors(indptr, nbr, edge_of)
        colors = np.where(np.diff(sym.indptr) > 0, colors, -1)
        source = _star_source(sym, np.maximum(colors, 0), indptr, nbr)
        return SymmetricColoring(
            kind, colors, int(colors.max(initial=-1)) + 1, _row_bound(sym), sym, source
        )
    colors = _trivial(sym) if dense else _acyclic_colors(indptr, nbr)
    colors = np.where(np.diff(sym.indptr) > 0, colors, -1)
    sub, ends = _substitution(np.maximum(colors, 0), indptr, nbr, edge_of, n)
    rows = np.repeat(np.arange(n), np.diff(sym.indptr))
    cols = sym.indices
    edge_id = np.zeros(sym.nnz, np.int64)
    off = rows != cols
    edge_id[off] = edge_of[np.searchsorted(_positions(indptr, nbr, n), rows[off] * n + cols[off])]
    n_edges = ends.shape[0]
    source = np.where(off, edge_id, n_edges + np.maximum(colors[rows], 0) * n + rows)
    return SymmetricColoring(
        kind, colors, int(colors.max(initial=-1)) + 1, _row_bound(sym), sym, source, sub
    )


def _positions(indptr, nbr, n) -> np.ndarray:
    """Flat keys ``i·n + j`` of the adjacency's positions, sorted (CSR order)."""
    return np.repeat(np.arange(n), np.diff(indptr)).astype(np.int64) * n + nbr
