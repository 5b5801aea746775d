"""The abstract interpreter behind :func:`bpjax.modes.sparsity`: one rule per primitive.

Each rule maps the dependency sets (:mod:`bpjax.modes._deps`) of an equation's operands to
those of its outputs; which rule a primitive gets is its record in the table,
:mod:`bpjax.modes._primitives`, and a primitive without one gets :meth:`Interpreter.fallback`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from bpjax.modes import _deps, _index_maps, _primitives, _ranges

_FOLD_MAX_SIZE = 1 << 22

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
        # Integer intervals of the current equation's operands (bpjax.modes._ranges), for
        # rules that index at traced positions; and those a call's body returned.
        self.operand_bounds: list = []
        self.returned_bounds: list = []

    # --- environment ---------------------------------------------------------------

    def run(self, jaxpr, consts, in_deps, in_vals, in_bounds=None):
        deps, vals, bounds = {}, {}, {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            vals[v] = np.asarray(c)
        for v, d, x in zip(jaxpr.invars, in_deps, in_vals, strict=True):
            deps[v] = d
            if x is not None:
                vals[v] = x
        for v, b in zip(jaxpr.invars, in_bounds or (), strict=False):
            if b is not None:
                bounds[v] = b
        last_use = {}
        for k, eqn in enumerate(jaxpr.eqns):
            for v in eqn.invars:
                if isinstance(v, jcore.Var):
                    last_use[v] = k
        for k, eqn in enumerate(jaxpr.eqns):
            ins = [self._read(deps, v) for v in eqn.invars]
            ivals = [self._read_val(vals, v) for v in eqn.invars]
            ibounds = [
                _ranges.of_value(x) if x is not None else self._read(bounds, v)
                for v, x in zip(eqn.invars, ivals, strict=True)
            ]
            self.operand_bounds, self.returned_bounds = ibounds, []
            outs, ovals = self._eqn(eqn, ins, ivals)
            decided = _ranges.decide(eqn, ibounds)
            if decided is not None and ovals[0] is None:
                ovals = [decided]  # a comparison the bounds decide is a constant
            obounds = self._out_bounds(eqn, ibounds, ivals, ovals)
            for v, d, x, b in zip(eqn.outvars, outs, ovals, obounds, strict=True):
                deps[v] = d if _is_float(v.aval) else None
                if x is not None:
                    vals[v] = x
                elif b is not None:
                    bounds[v] = b
            for v in eqn.invars:
                if isinstance(v, jcore.Var) and last_use.get(v) == k and v not in jaxpr.outvars:
                    deps.pop(v, None)
        outs = [self._read(deps, v) for v in jaxpr.outvars]
        self.returned_bounds = [self._read(bounds, v) for v in jaxpr.outvars]
        return outs, [self._read_val(vals, v) for v in jaxpr.outvars]

    def _out_bounds(self, eqn, ibounds, ivals, ovals):
        """The outputs' integer intervals: a call's from its body, others by their rule."""
        n = len(eqn.outvars)
        rule = _primitives.lookup(eqn.primitive.name)
        if rule is not None and rule.control is _primitives.plain_call:
            returned = self.returned_bounds
            return returned if len(returned) == n else [None] * n
        if all(x is not None for x in ovals) or rule is None:
            return [None] * n
        return _ranges.propagate(rule.bounds, eqn, ibounds, ivals)

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
        rule = _primitives.lookup(name)
        if rule is not None and rule.control is not None:
            return rule.control(self, eqn, ins, ivals)
        if not any(d is not None for d in ins) or not any(_is_float(v.aval) for v in eqn.outvars):
            return self.constants(eqn, ivals)
        if rule is not None and rule.sparsity is not None:
            outs = rule.sparsity(self, eqn, ins, ivals)
            if outs is not None:
                return outs, [None] * len(outs)
        why = rule.why_not if rule is not None else "no sparsity rule"
        return self.fallback(eqn, ins, f"{name}: {why}")

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
        return self.call(eqn, ins, ivals)

    def call(self, eqn, ins, ivals, bounds=None):
        """Read the body of a call (``jit``, ``custom_jvp_call``...); ``bounds``: the
        operands' integer intervals, given only by a plain call (whose body the outputs'
        intervals then come from)."""
        if eqn.primitive.name == "custom_vjp_call":
            self.custom_vjp = True
        jaxpr, consts = _primitives.body(eqn)
        return self.run(jaxpr, consts, ins, ivals, in_bounds=bounds)

    def cond(self, eqn, ins, ivals):
        """The union over the branches; the taken branch if its index is a constant."""
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

    def constants(self, eqn, ivals):
        """An equation nothing of ``x`` reaches: no dependencies, its values folded."""
        out_avals = [v.aval for v in eqn.outvars]
        return [None] * len(out_avals), self._fold(eqn, ivals, out_avals)

    def _fold(self, eqn, ivals, out_avals):
        """Values of outputs computed only from constants (index arithmetic), if cheap."""
        none = [None] * len(out_avals)
        if any(v is None for v in ivals) or any(_size(a) > _FOLD_MAX_SIZE for a in out_avals):
            return none
        dtypes = [a.dtype for a in out_avals]
        name = eqn.primitive.name
        try:
            rule = _primitives.lookup(name)
            move = rule.move if rule is not None else None
            outs = _index_maps.evaluate_constant(name, ivals, eqn.params, dtypes, move)
            if outs is None and all(a.dtype.kind in "biu" for a in out_avals):
                outs = eqn.primitive.bind(*map(jnp.asarray, ivals), **eqn.params)
                outs = [np.asarray(o) for o in (outs if eqn.primitive.multiple_results else [outs])]
        except Exception:  # noqa: BLE001 - folding is an optimisation; unknown stays unknown
            return none
        return none if outs is None else outs
