"""Sparsity rules for loops and custom derivative rules (used by ``_propagate.Interpreter``).

* ``custom_jvp_call``: differentiation runs the JVP rule, not the primal, so the pattern is
  read from the rule: the jaxpr of ``jax.jvp`` of the call, with each tangent input carrying
  its primal's dependencies and the primals carrying none (the tangent outputs are linear in
  the tangents; the coefficients are values, not dependencies). A rule that reads other
  elements than the primal (a primal ``x[:2]`` with a rule on ``x[1:3]``), or a primal with
  a zero derivative and a nonzero rule (a bit-cast ``1/sqrt(x)``), is then seen as it is.
* ``custom_vjp_call``: the pattern of the backward rule: the jaxpr of ``jax.vjp`` of the
  call, read with the output cotangents as the inputs (a ``(size_out, size_in)`` local
  pattern, transposed and composed with the operands' dependencies).
* ``while``: simulated step by step while its predicate folds to a constant (a trip count
  fixed at trace time: exact); otherwise the carry's dependencies are iterated to a fixed
  point (``D ← D ∪ body(D)``), which covers every trip count. Past ``FIXED_POINT_STEPS``
  rounds every carried element depends on everything the loop reads (conservative, noted).
* ``scan``: unrolled over its length (exact, the ``xs`` slice of each step and the
  ``ys`` row it writes kept apart) up to ``SCAN_UNROLL``; longer scans iterate the carry to a
  fixed point with every step reading the union of the ``xs`` slices (conservative, noted).

A rule that cannot be traced falls back to the conservative spread, with its name noted.
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp
from jax.extend import core as jcore

from bpjax.modes import _deps

# JAX's record of where a jaxpr came from (every jaxpr carries one); taken from a trace
# since its class is not public.
_DebugInfo = type(jax.make_jaxpr(lambda: 0.0)().jaxpr.debug_info)

SIMULATE_STEPS = 512
FIXED_POINT_STEPS = 64
SCAN_UNROLL = 512
# custom_jvp rules read inside custom_jvp rules, at most (then the primal is read).
RULE_DEPTH = 4


_size = _deps.aval_size
_is_float = _deps.is_float


def _struct(aval):
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype)


def _one_eqn(eqn):
    """``(call, operands)``: ``eqn`` as a function of its distinct variable operands (literals
    stay inside), and for each of those operands its first position in ``eqn.invars``."""
    positions = {}
    for k, v in enumerate(eqn.invars):
        if isinstance(v, jcore.Var) and v not in positions:
            positions[v] = k
    info = _DebugInfo(
        "bpjax.modes.sparsity", None, ("",) * len(positions), ("",) * len(eqn.outvars)
    )
    jaxpr = jcore.Jaxpr([], list(positions), list(eqn.outvars), [eqn], debug_info=info)
    return jcore.jaxpr_as_fun(jcore.ClosedJaxpr(jaxpr, [])), list(positions.values())


def _rule_jaxpr(eqn, kind):
    """The jaxpr of ``jax.jvp`` (``kind="jvp"``: primals, tangents -> primal outs, tangent
    outs) or ``jax.vjp`` (``"vjp"``: primals, output cotangents -> input cotangents) of
    ``eqn``, over its distinct variable operands; tangents and cotangents only for the float
    ones. Returns ``(closed, operand positions, float operand indices)``."""
    call, pos = _one_eqn(eqn)
    avals = [_struct(eqn.invars[k].aval) for k in pos]
    floats = [i for i, k in enumerate(pos) if _is_float(eqn.invars[k].aval)]

    def with_floats(primals, fl):
        args = list(primals)
        for i, a in zip(floats, fl, strict=True):
            args[i] = a
        return call(*args)

    if kind == "jvp":

        def rule(primals, tangents):
            fl = [primals[i] for i in floats]
            return jax.jvp(lambda *f: with_floats(primals, f), fl, tangents)

        second = [avals[i] for i in floats]
    else:

        def rule(primals, cotangents):
            fl = [primals[i] for i in floats]
            _, pull = jax.vjp(lambda *f: with_floats(primals, f), *fl)
            return pull(cotangents)

        second = [_struct(v.aval) for v in eqn.outvars]
    return jax.make_jaxpr(rule)(avals, second), pos, floats


def _cached_rule(interp, eqn, kind):
    key = (id(eqn), kind)
    if key not in interp.rules:
        interp.rules[key] = (eqn, _rule_jaxpr(eqn, kind))  # eqn kept: its id stays unique
    return interp.rules[key][1]


def custom_jvp(interp, eqn, ins, ivals):
    """Dependencies of a ``custom_jvp_call``'s outputs, read from its JVP rule."""
    if interp.rule_depth >= RULE_DEPTH:
        # A rule that applies the function itself to the tangents (``permute(t)`` in the JVP
        # of a linear ``permute``) says the function is its own linear map: read its primal
        # rather than its rule again, which would recurse without end.
        return interp.primal(eqn, ins, ivals)
    try:
        closed, pos, floats = _cached_rule(interp, eqn, "jvp")
    except Exception as err:  # noqa: BLE001 - any failure to trace the rule: be conservative
        return interp.fallback(eqn, ins, f"custom_jvp (its JVP rule could not be traced: {err})")
    primal_vals = [ivals[k] for k in pos]
    tangent_deps = [ins[pos[i]] for i in floats]
    interp.rule_depth += 1
    try:
        outs, _ = interp.run(
            closed.jaxpr,
            closed.consts,
            [None] * len(pos) + tangent_deps,
            primal_vals + [None] * len(floats),
        )
    finally:
        interp.rule_depth -= 1
    return outs[len(eqn.outvars) :], [None] * len(eqn.outvars)


def custom_vjp(interp, eqn, ins, ivals):
    """Dependencies of a ``custom_vjp_call``'s outputs, read from its backward rule."""
    interp.custom_vjp = True
    none = [None] * len(eqn.outvars)
    if not all(_is_float(v.aval) for v in eqn.outvars):
        return interp.fallback(eqn, ins, "custom_vjp with integer outputs")
    try:
        closed, pos, floats = _cached_rule(interp, eqn, "vjp")
    except Exception as err:  # noqa: BLE001 - any failure to trace the rule: be conservative
        return interp.fallback(eqn, ins, f"custom_vjp (its backward rule failed to trace: {err})")
    out_sizes = [_size(v.aval) for v in eqn.outvars]
    total_out = sum(out_sizes)
    # Seed each output element with itself: the cotangent of input element k then says
    # which output elements reach it, row k of the local pattern's transpose.
    seeds, offset = [], 0
    for size in out_sizes:
        eye = sp.eye_array(size, total_out, k=offset, format="csr", dtype=bool)
        seeds.append(_deps.Deps(eye, np.zeros(size, bool)))
        offset += size
    local = type(interp)(total_out, interp.budget)
    cts, _ = local.run(
        closed.jaxpr,
        closed.consts,
        [None] * len(pos) + seeds,
        [ivals[k] for k in pos] + [None] * len(seeds),
    )
    interp.notes.extend(local.notes)
    in_sizes = [_size(eqn.invars[pos[i]].aval) for i in floats]
    local_t = sp.vstack(
        [_deps.to_csr(d, s, total_out) for d, s in zip(cts, in_sizes, strict=True)], format="csr"
    )
    stacked = _deps.take(
        [ins[pos[i]] for i in floats], in_sizes, np.arange(sum(in_sizes)), interp.n
    )
    out = _deps.aggregate(
        sp.csr_array(local_t.T), stacked, interp.budget, interp.notes, "custom_vjp"
    )
    return _split(out, out_sizes, interp.n), none


def _split(deps, sizes, n):
    if deps is None:
        return [None] * len(sizes)
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(cuts[-1])
    return [
        _deps.take([deps], [total], np.arange(a, b), n)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]


def _count(d):
    return -1 if d is None else int(d.counts().sum())


def _merge(old, new):
    """Elementwise union of two lists of dependency sets (``None``: no dependencies)."""
    return [
        b if a is None else a if b is None else _deps.union([a, b])
        for a, b in zip(old, new, strict=True)
    ]


def _fixed_point(step, carry):
    """The least ``D ⊇ carry`` with ``step(D) ⊆ D`` (the dependencies after any number of
    iterations), or everything the loop reads past ``FIXED_POINT_STEPS`` rounds."""
    for _ in range(FIXED_POINT_STEPS):
        grown = _merge(carry, step(carry))
        if [_count(d) for d in grown] == [_count(d) for d in carry]:
            return grown  # monotone: equal counts mean equal sets
        carry = grown
    return None


def while_loop(interp, eqn, ins, ivals):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    c_deps, c_vals = list(ins[:cn]), list(ivals[:cn])
    b_deps, b_vals = list(ins[cn : cn + bn]), list(ivals[cn : cn + bn])
    carry, vals = list(ins[cn + bn :]), list(ivals[cn + bn :])
    if any(d is not None for d in ins):
        interp.while_loops += 1  # on the differentiation path: no reverse mode
    for _ in range(SIMULATE_STEPS):
        _, (pred,) = interp.run(cond.jaxpr, cond.consts, c_deps + carry, c_vals + vals)
        if pred is None:
            break
        if not bool(pred):
            return carry, vals
        carry, vals = interp.run(body.jaxpr, body.consts, b_deps + carry, b_vals + vals)
    # The trip count is not known here: any number of further steps may run.
    n_carry = len(carry)

    def step(c):
        outs, _ = interp.run(body.jaxpr, body.consts, b_deps + c, b_vals + [None] * n_carry)
        return outs

    out = _fixed_point(step, carry)
    if out is None:
        where = f"while (dependencies still growing after {FIXED_POINT_STEPS} rounds)"
        return _spread_all(interp, eqn, ins, where), [None] * n_carry
    return out, [None] * n_carry


def _spread_all(interp, eqn, ins, where):
    """Every float output element depends on every dependency of every operand."""
    interp.notes.append(f"{where}: every output element treated as depending on every input")
    return [
        _deps.spread(ins, _size(v.aval), interp.n, interp.budget, interp.notes, where)
        if _is_float(v.aval)
        else None
        for v in eqn.outvars
    ]


def scan(interp, eqn, ins, ivals):
    p = eqn.params
    body, length = p["jaxpr"], p["length"]
    nc, ncar = _scan_groups(p)
    consts, cvals = list(ins[:nc]), list(ivals[:nc])
    carry, vals = list(ins[nc : nc + ncar]), list(ivals[nc : nc + ncar])
    xs, xvals = list(ins[nc + ncar :]), list(ivals[nc + ncar :])
    x_avals = [v.aval for v in eqn.invars[nc + ncar :]]
    y_avals = [v.aval for v in eqn.outvars[ncar:]]
    none = [None] * len(eqn.outvars)
    if length <= SCAN_UNROLL:
        ys = [[None] * length for _ in y_avals]
        for t in range(length - 1, -1, -1) if p["reverse"] else range(length):
            x_t = [_row(d, a, t, interp.n) for d, a in zip(xs, x_avals, strict=True)]
            xv_t = [None if v is None else np.asarray(v)[t] for v in xvals]
            outs, ovals = interp.run(
                body.jaxpr, body.consts, consts + carry + x_t, cvals + vals + xv_t
            )
            carry, vals = outs[:ncar], ovals[:ncar]
            for k, y in enumerate(outs[ncar:]):
                ys[k][t] = y
        stacked = [_stack(col, a, interp.n) for col, a in zip(ys, y_avals, strict=True)]
        return carry + stacked, vals + [None] * len(y_avals)
    # Long scans: every step reads the union of the xs rows; the carry to a fixed point.
    x_any = [_any_row(interp, d, a) for d, a in zip(xs, x_avals, strict=True)]
    interp.notes.append(
        f"scan (length {length} > {SCAN_UNROLL}: every step treated as reading any xs row and "
        "writing any ys row; conservative)"
    )

    def step(c):
        outs, _ = interp.run(
            body.jaxpr, body.consts, consts + c + x_any, cvals + [None] * (ncar + len(xs))
        )
        return outs[:ncar]

    final = _fixed_point(step, carry)
    if final is None:
        return _spread_all(interp, eqn, ins, "scan (carry dependencies still growing)"), none
    outs, _ = interp.run(
        body.jaxpr, body.consts, consts + final + x_any, cvals + [None] * (ncar + len(xs))
    )
    ys = [
        _broadcast_rows(y, a, length, interp.n) for y, a in zip(outs[ncar:], y_avals, strict=True)
    ]
    return final + ys, none


def _scan_groups(params):
    """``(number of consts, number of carried values)`` of a scan equation: explicit params
    up to jax 0.10, the sizes of the operand groups in ``ft_in`` from 0.12."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carry, _ = params["ft_in"].elts
    return len(list(consts.vals)), len(list(carry.vals))


def _row(d, aval, t, n):
    """Dependencies of row ``t`` (along the leading axis) of an array ``aval``."""
    if d is None:
        return None
    width = _size(aval) // aval.shape[0]
    return _deps.take([d], [_size(aval)], np.arange(t * width, (t + 1) * width), n)


def _any_row(interp, d, aval):
    """Dependencies of any row of ``aval``: element ``w`` of the result is the union of
    element ``w`` of every row."""
    if d is None:
        return None
    size = _size(aval)
    width = size // aval.shape[0]
    cols = np.arange(size)
    R = sp.csr_array((np.ones(size, bool), (cols % width, cols)), shape=(width, size))
    return _deps.aggregate(R, d, interp.budget, interp.notes, "scan")


def _stack(column, aval, n):
    """The ``ys`` output of a scan: step ``t``'s ``y`` as row ``t``."""
    if all(d is None for d in column):
        return None
    width = _size(aval) // aval.shape[0]
    return _deps.take(column, [width] * len(column), np.arange(_size(aval)), n)


def _broadcast_rows(y, aval, length, n):
    if y is None:
        return None
    width = _size(aval) // length
    return _deps.take([y], [width], np.tile(np.arange(width), length), n)
