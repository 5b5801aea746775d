"""The sparsity rule of elementwise primitives (the table, :mod:`_primitives`, lists them).

``D_out[e] = ∪_operands D[e]``, operands broadcast over size-1 axes as in NumPy, except where
the derivative is zero whatever ``x`` is:

* piecewise constant primitives (``floor``, ``ceil``, ``round``, ``sign``) and ``x ** 0``:
  JAX differentiates them to zero everywhere;
* a constant zero factor: ``x * mask`` where ``mask`` is 0, ``0 / x``;
* ``select_n`` with a constant predicate: each element depends on its chosen case only.
"""

from __future__ import annotations

import numpy as np

from bpjax.modes import _deps

# Piecewise constant: JAX differentiates them to zero everywhere.
ZERO_DERIVATIVE = frozenset(["floor", "ceil", "round", "sign"])


def _mask(d, zero, n):
    """``d`` with the elements where ``zero`` holds depending on nothing."""
    if d is None:
        return None
    src = np.where(zero, d.size, np.arange(d.size))  # out of range: an empty row
    return _deps.take([d], [d.size], src, n)


def rule(interp, eqn, ins, out_aval, ivals):
    name = eqn.primitive.name
    if name in ZERO_DERIVATIVE or (name == "integer_pow" and eqn.params["y"] == 0):
        return None
    if name == "select_n" and ivals[0] is not None:  # a known predicate picks one case
        which = np.broadcast_to(np.asarray(ivals[0]).astype(np.int64), out_aval.shape)
        pairs = zip(eqn.invars[1:], ins[1:], strict=True)
        cases = [_broadcast(interp, v, d, out_aval) for v, d in pairs]
        parts = [_mask(c, which.ravel() != k, interp.n) for k, c in enumerate(cases)]
        parts = [c for c in parts if c is not None]
        return _deps.union(parts) if parts else None
    parts = [
        _broadcast(interp, v, d, out_aval)
        for v, d in zip(eqn.invars, ins, strict=True)
        if d is not None
    ]
    out = _deps.union(parts)
    # A constant zero factor (x * mask, 0 / x) makes the element's derivative zero.
    factors = {"mul": range(len(ivals)), "div": [0]}.get(name, [])
    zero = np.zeros(out_aval.shape, bool)
    for k in factors:
        if ivals[k] is not None:
            zero |= np.broadcast_to(np.asarray(ivals[k]) == 0, out_aval.shape)
    return _mask(out, zero.ravel(), interp.n) if zero.any() else out


def _broadcast(interp, v, d, out_aval):
    if d is None or v.aval.shape == out_aval.shape:
        return d
    ids = np.arange(d.size).reshape(v.aval.shape)  # size-1 axes broadcast, as in NumPy
    return _deps.take([d], [d.size], np.broadcast_to(ids, out_aval.shape), interp.n)
