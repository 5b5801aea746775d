"""The abstract interpreter behind :func:`bpjax.modes.sparsity`: one rule per primitive.

Each rule maps the dependency sets (:mod:`bpjax.modes._deps`) of an equation's operands to
those of its outputs; the rules are listed in :mod:`bpjax.modes._sparsity`'s docstring.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.extend import core as jcore

from bpjax.modes import _deps, _elementwise, _flow, _index_maps, _structured

_FOLD_MAX_SIZE = 1 << 22

ELEMENTWISE = _elementwise.ELEMENTWISE
REDUCTIONS = frozenset(
    ["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"]
)
CUMULATIVE = frozenset(["cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"])
CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}
# Loops and custom derivative rules, on the differentiation path (see _flow.py).
_FLOW = {
    "custom_jvp_call": _flow.custom_jvp,
    "custom_vjp_call": _flow.custom_vjp,
    "scan": _flow.scan,
}
_INDEXED = frozenset(["gather", "dynamic_slice", "dynamic_update_slice"])
SCATTERS = frozenset(
    ["scatter", "scatter-add", "scatter-mul", "scatter-min", "scatter-max", "scatter-sub"]
)


_size = _deps.aval_size
_is_float = _deps.is_float


class Interpreter:
    """Walks a jaxpr, mapping every variable to its :class:`~bpjax.modes._deps.Deps`."""

    def __init__(self, n: int, budget: int):
        self.n, self.budget = n, budget
        self.notes: list[str] = []
        self.custom_vjp = False
        self.while_loops = 0  # while loops on the differentiation path (no reverse mode)
        self.rules = {}  # traced custom derivative rules, by equation
        self.rule_depth = 0  # custom_jvp rules being read, one inside another

    # --- environment ---------------------------------------------------------------

    def run(self, jaxpr, consts, in_deps, in_vals):
        deps, vals = {}, {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            vals[v] = np.asarray(c)
        for v, d, x in zip(jaxpr.invars, in_deps, in_vals, strict=True):
            deps[v] = d
            if x is not None:
                vals[v] = x
        last_use = {}
        for k, eqn in enumerate(jaxpr.eqns):
            for v in eqn.invars:
                if isinstance(v, jcore.Var):
                    last_use[v] = k
        for k, eqn in enumerate(jaxpr.eqns):
            ins = [self._read(deps, v) for v in eqn.invars]
            ivals = [self._read_val(vals, v) for v in eqn.invars]
            outs, ovals = self._eqn(eqn, ins, ivals)
            for v, d, x in zip(eqn.outvars, outs, ovals, strict=True):
                deps[v] = d if _is_float(v.aval) else None
                if x is not None:
                    vals[v] = x
            for v in eqn.invars:
                if isinstance(v, jcore.Var) and last_use.get(v) == k and v not in jaxpr.outvars:
                    deps.pop(v, None)
        outs = [self._read(deps, v) for v in jaxpr.outvars]
        return outs, [self._read_val(vals, v) for v in jaxpr.outvars]

    @staticmethod
    def _read(deps, v):
        return None if isinstance(v, jcore.Literal) else deps.get(v)

    @staticmethod
    def _read_val(vals, v):
        if isinstance(v, jcore.Literal):
            return np.asarray(v.val)
        return vals.get(v)

    # --- one equation ---------------------------------------------------------------

    def _eqn(self, eqn, ins, ivals):
        name = eqn.primitive.name
        out_avals = [v.aval for v in eqn.outvars]
        differentiated = any(d is not None for d in ins)
        if name == "while":
            return _flow.while_loop(self, eqn, ins, ivals)
        if differentiated and name in _FLOW:
            return _FLOW[name](self, eqn, ins, ivals)
        if name in CALLS:
            return self._call(eqn, ins, ivals)
        if name == "cond":
            return self._cond(eqn, ins, ivals)
        none = [None] * len(out_avals)
        if not differentiated or not any(_is_float(a) for a in out_avals):
            return none, self._fold(eqn, ivals, out_avals)
        where = f"{name}"
        if name == "stop_gradient":
            return none, none
        if name in ELEMENTWISE:
            return [_elementwise.rule(self, eqn, ins, out_avals[0], ivals)], none
        if name in _index_maps.MOVES or name == "gather":
            moved = self._move(eqn, ins, ivals)
            if moved is None and name in _structured.TRACED_STARTS:
                moved = _structured.TRACED_STARTS[name](self, eqn, ins, ivals)
            if moved is not None:
                return moved, none
        elif name in SCATTERS:
            out = self._scatter(eqn, ins, ivals)
            if out is not None:
                return [out], none
        elif name in REDUCTIONS:
            return [self._reduce(eqn, ins[0])], none
        elif name in CUMULATIVE or name == "sort":
            return self._lines(eqn, ins), none
        elif name in _structured.RULES:
            return _structured.RULES[name](self, eqn, ins), none
        elif name in _structured.VALUED_RULES:
            out = _structured.VALUED_RULES[name](self, eqn, ins, ivals)
            if out is not None:
                return out, none
        elif name == "dot_general":
            return [self._dot(eqn, ins, ivals)], none
        reason = (
            "its indices are not known at trace time"
            if name in _INDEXED or name in SCATTERS
            else "no sparsity rule"
        )
        return self.fallback(eqn, ins, f"{where}: {reason}")

    def fallback(self, eqn, ins, why):
        """The conservative rule, noted: every output element depends on every input."""
        self.notes.append(
            f"{why}; every output element treated as depending on every input of the "
            "primitive (conservative)"
        )
        outs = [
            _deps.spread(ins, _size(v.aval), self.n, self.budget, self.notes, why)
            if _is_float(v.aval)
            else None
            for v in eqn.outvars
        ]
        return outs, [None] * len(outs)

    def primal(self, eqn, ins, ivals):
        """Read a call's body (a custom rule's primal function)."""
        return self._call(eqn, ins, ivals)

    def _call(self, eqn, ins, ivals):
        name = eqn.primitive.name
        if name == "custom_vjp_call":
            self.custom_vjp = True
        sub = eqn.params[CALLS[name]]
        jaxpr, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "jaxpr") else (sub, ())
        return self.run(jaxpr, consts, ins, ivals)

    def _cond(self, eqn, ins, ivals):
        branches = eqn.params["branches"]
        if ivals[0] is not None:
            index = int(np.clip(int(ivals[0]), 0, len(branches) - 1))
            branches = [branches[index]]
        results = [self.run(b.jaxpr, b.consts, ins[1:], ivals[1:]) for b in branches]
        outs = []
        for k in range(len(eqn.outvars)):
            parts = [r[0][k] for r in results if r[0][k] is not None]
            outs.append(_deps.union(parts) if parts else None)
        vals = results[0][1] if len(results) == 1 else [None] * len(outs)
        return outs, vals

    def _fold(self, eqn, ivals, out_avals):
        """Values of outputs computed only from constants (index arithmetic), if cheap."""
        none = [None] * len(out_avals)
        if any(v is None for v in ivals) or any(_size(a) > _FOLD_MAX_SIZE for a in out_avals):
            return none
        dtypes = [a.dtype for a in out_avals]
        name = eqn.primitive.name
        try:
            outs = _index_maps.evaluate_constant(name, ivals, eqn.params, dtypes)
            if outs is None and all(a.dtype.kind in "biu" for a in out_avals):
                outs = eqn.primitive.bind(*map(jnp.asarray, ivals), **eqn.params)
                outs = [np.asarray(o) for o in (outs if eqn.primitive.multiple_results else [outs])]
        except Exception:  # noqa: BLE001 - folding is an optimisation; unknown stays unknown
            return none
        return none if outs is None else outs

    # --- rules -----------------------------------------------------------------------

    def _ids(self, eqn, ins, ivals, index_ops):
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

    def _move(self, eqn, ins, ivals):
        name = eqn.primitive.name
        index_ops = set(range(len(eqn.invars))[_index_maps.INDEX_OPERANDS.get(name, slice(0))])
        if name == "gather":
            index_ops = {1}
        got = self._ids(eqn, ins, ivals, index_ops)
        if got is None:
            return None
        ops, data, sizes = got
        if name == "gather":
            outs = [_index_maps.gather_ids(ops[0], ops[1], eqn.params)]
        else:
            outs = _index_maps.MOVES[name](ops, eqn.params)
        return [_deps.take(data, sizes, o, self.n) for o in outs]

    def _scatter(self, eqn, ins, ivals):
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
        stacked = _deps.take([ins[0], ins[2]], [s_op, s_up], np.arange(s_op + s_up), self.n)
        return _deps.aggregate(R, stacked, self.budget, self.notes, "scatter")

    def _reduce(self, eqn, d):
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
        return _deps.aggregate(R, d, self.budget, self.notes, eqn.primitive.name)

    def _lines(self, eqn, ins):
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
        if ids.shape[0] * i.size > self.budget:
            where = f"{name} (lines of {length})"
            return [
                _deps.spread(ins, _size(v.aval), self.n, self.budget, self.notes, where)
                for v in eqn.outvars
            ]
        rows, cols = ids[:, i].ravel(), ids[:, j].ravel()
        size = ids.size
        present = [d for d in ins if d is not None]
        merged = _deps.union(present) if len(present) > 1 else present[0]
        R = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(size, size))
        out = _deps.aggregate(R, merged, self.budget, self.notes, name)
        return [out] * len(eqn.outvars)

    def _dot(self, eqn, ins, ivals):
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
            parts.append(self._dot_side(ins[0], lids, rval, B, I, J, K, lhs_side=True))
        if ins[1] is not None:
            parts.append(self._dot_side(ins[1], rids.transpose(0, 2, 1), lval, B, J, I, K, False))
        parts = [p for p in parts if p is not None]
        return _deps.union(parts) if parts else None

    def _dot_side(self, d, ids, other, B, I, J, K, lhs_side):
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
            if b.size * I > self.budget:
                return _deps.spread([d], B * I * J, self.n, self.budget, self.notes, "dot_general")
            rows = out_index[b[:, None], np.arange(I)[None, :], j[:, None]].ravel()
            cols = ids[b[:, None], np.arange(I)[None, :], k[:, None]].ravel()
            R = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(B * I * J, d.size))
            return _deps.aggregate(R, d, self.budget, self.notes, "dot_general")
        # Dense contraction: every (b, i) row of the operand reaches all j alike.
        rows = np.repeat(np.arange(B * I), K)
        G = sp.csr_array((np.ones(rows.size, bool), (rows, ids.reshape(-1))), shape=(B * I, d.size))
        grouped = _deps.aggregate(G, d, self.budget, self.notes, "dot_general")
        src = np.empty(B * I * J, np.int64)
        src[out_index.ravel()] = np.repeat(np.arange(B * I), J)
        return _deps.take([grouped], [B * I], src, self.n)
