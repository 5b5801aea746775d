"""The table of JAX primitives: one :class:`PrimitiveRule` per primitive, read by both the
sparsity interpreter (:mod:`bpjax.modes._propagate`) and the run-time model
(:mod:`bpjax.modes._cost`).

A record says, for one primitive:

* how dependencies flow through it (``sparsity``, or ``control`` for calls and loops, whose
  bodies the interpreter reads), or that it is handled conservatively (neither given);
* how to apply it to NumPy arrays when it only moves data (``move``): applied to element
  ids it says which input element each output element copies, and the same function folds
  index arithmetic on constants;
* what its derivative costs (``cost`` and ``pulled``).

Adding a primitive is one :func:`register_primitive` call (here, or from outside the
package through :func:`bpjax.modes.register_primitive`). A primitive with no record, or
whose rule does not apply at this equation, gets the conservative rule (every output element
depends on everything its operands depend on), named in :attr:`Pattern.fallbacks` and in a
:class:`~bpjax.modes.SparsityWarning`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from bpjax.modes import _elementwise, _flow, _index_maps, _ranges, _rules, _structured

# What the run-time model counts for one equation's derivative (see _cost.work).
COSTS = ("elements", "gather", "scatter", "dot", "call", "cond", "scan", "while")


@dataclasses.dataclass(frozen=True)
class PrimitiveRule:
    """What the Jacobian engine knows of one primitive.

    Attributes:
      name: the primitive's name (``eqn.primitive.name``).
      sparsity: ``(interp, eqn, ins, ivals) -> [output deps]`` for an equation with some
        operand depending on ``x``; ``ins``: the operands' dependency sets (``None``: none),
        ``ivals``: their values where known at trace time. ``None`` when the rule does not
        apply; then the conservative rule runs, noted with ``why_not``.
      control: ``(interp, eqn, ins, ivals) -> ([output deps], [output values])``, run for
        every equation of this primitive, even one that depends on nothing (calls, loops,
        ``cond``: their bodies carry values that later index arithmetic needs).
      move: ``(operands, params) -> [outputs]`` on NumPy arrays, for primitives that move
        data without computing on it.
      index_operands: the operands of ``move`` that are positions (their values must be
        known at trace time), as a slice of the operand list; ``None``: none.
      body: the param holding the jaxpr a call runs (``"jaxpr"``, ``"call_jaxpr"``).
      cost: what the derivative's work is, one of :data:`COSTS`: ``"elements"`` (each
        output element produced), ``"gather"``/``"scatter"`` (elements moved; they swap
        roles between JVP and VJP), ``"dot"`` (FLOPs), or a body (``"call"``, ``"cond"``,
        ``"scan"``, ``"while"``).
      pulled: every output element reads one element of each operand (or a window), so
        fused with its consumer it runs only where the consumer reads.
      why_not: why the conservative rule ran when ``sparsity`` gave ``None``.
      bounds: ``(eqn, operand bounds, operand values) -> [output bounds]``: how an interval
        on integer values (a traced index) flows through it (:mod:`bpjax.modes._ranges`);
        data movements get one from ``move``. ``None``: outputs unbounded.
    """

    name: str
    sparsity: Callable | None = None
    control: Callable | None = None
    move: Callable | None = None
    index_operands: slice | None = None
    body: str | None = None
    cost: str = "elements"
    pulled: bool = False
    why_not: str = "no sparsity rule"
    bounds: Callable | None = None

    def __post_init__(self):
        if self.cost not in COSTS:
            raise ValueError(f"primitive {self.name!r}: cost={self.cost!r}; choose one of {COSTS}")
        if self.body is not None and self.control is None:
            raise ValueError(f"primitive {self.name!r}: a body needs a control rule")


TABLE: dict[str, PrimitiveRule] = {}


def register_primitive(
    name: str,
    *,
    sparsity: Callable | str | None = None,
    control: Callable | None = None,
    move: Callable | None = None,
    index_operands: slice | None = None,
    body: str | None = None,
    cost: str = "elements",
    pulled: bool = False,
    why_not: str = "no sparsity rule",
    bounds: Callable | None = None,
) -> PrimitiveRule:
    """Add or replace the record of primitive ``name`` (the fields of :class:`PrimitiveRule`).

    ``sparsity="elementwise"`` gives the elementwise rule (``D_out[e] = ∪ D[e]`` over the
    broadcast operands); a ``move`` without ``sparsity`` gives the data-movement rule (the
    move applied to element ids). Neither, nor ``control``: handled conservatively.

    Example:
      >>> register_primitive("my_roll", move=lambda ops, p: [np.roll(ops[0], p["shift"])],
      ...                    pulled=True)
    """
    if sparsity == "elementwise":
        sparsity = _elementwise_rule
    elif isinstance(sparsity, str):
        raise ValueError(
            f"primitive {name!r}: sparsity={sparsity!r}; pass 'elementwise' or a rule "
            "(interp, eqn, ins, ivals) -> [output deps]"
        )
    if move is not None and sparsity is None:
        sparsity = _rules.moved_by(move, index_operands or slice(0))
    if move is not None and bounds is None:
        bounds = _ranges.moved(index_operands)
    record = PrimitiveRule(
        name, sparsity, control, move, index_operands, body, cost, pulled, why_not, bounds
    )
    TABLE[name] = record
    return record


def lookup(name: str) -> PrimitiveRule | None:
    return TABLE.get(name)


def body(eqn):
    """``(jaxpr, consts)`` of the jaxpr a call equation runs (the one place it is unwrapped)."""
    sub = eqn.params[TABLE[eqn.primitive.name].body]
    return (sub.jaxpr, sub.consts) if hasattr(sub, "jaxpr") else (sub, ())


def _elementwise_rule(interp, eqn, ins, ivals):
    return [_elementwise.rule(interp, eqn, ins, eqn.outvars[0].aval, ivals)]


def plain_call(interp, eqn, ins, ivals):
    """Read a call's body, passing the operands' integer intervals in and out of it."""
    return interp.call(eqn, ins, ivals, bounds=interp.operand_bounds)


def _cond(interp, eqn, ins, ivals):
    return interp.cond(eqn, ins, ivals)


def _differentiated(rule):
    """``rule`` where some operand depends on ``x``; the call's body or a constant fold
    elsewhere (a custom rule only matters on the differentiation path)."""

    def control(interp, eqn, ins, ivals):
        if any(d is not None for d in ins):
            return rule(interp, eqn, ins, ivals)
        if TABLE[eqn.primitive.name].body is not None:
            return interp.call(eqn, ins, ivals)
        return interp.constants(eqn, ivals)

    return control


# --- the table ---------------------------------------------------------------------------

_INDICES_UNKNOWN = "its indices are not known at trace time"

ELEMENTWISE = (
    "abs",
    "acos",
    "acosh",
    "add",
    "add_any",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "cbrt",
    "ceil",
    "clamp",
    "conj",
    "convert_element_type",
    "copy",
    "copy_p",
    "cos",
    "cosh",
    "digamma",
    "div",
    "erf",
    "erf_inv",
    "erfc",
    "exp",
    "exp2",
    "expm1",
    "floor",
    "igamma",
    "igammac",
    "imag",
    "integer_pow",
    "is_finite",
    "lgamma",
    "log",
    "log1p",
    "logistic",
    "max",
    "min",
    "mul",
    "neg",
    "nextafter",
    "one_minus_square",
    "polygamma",
    "pow",
    "real",
    "reduce_precision",
    "rem",
    "round",
    "rsqrt",
    "select_n",
    "sign",
    "sin",
    "sinh",
    "sqrt",
    "square",
    "sub",
    "tan",
    "tanh",
    "zeta",
    "bessel_i0e",
    "bessel_i1e",
    "regularized_incomplete_beta",
    "igamma_grad_a",
    "random_gamma_grad",
    "select_if_vmap",  # Equinox's vmapped-cond select: an elementwise select
)
for _name in ELEMENTWISE:
    register_primitive(_name, sparsity="elementwise", pulled=True)
for _name in ("copy", "copy_p"):  # elementwise for dependencies, a move for constant folding
    register_primitive(_name, sparsity="elementwise", move=lambda ops, p: [ops[0]], pulled=True)

# Data movement: ``move`` on NumPy arrays; ``pulled`` where an output element reads one
# element (or a window) of each operand, so XLA evaluates it only where its consumer reads.
_MOVES = {
    "reshape": (lambda ops, p: [_index_maps.reshape(ops[0], p["new_sizes"], p.get("dimensions"))]),
    "squeeze": lambda ops, p: [np.squeeze(ops[0], axis=tuple(p["dimensions"]))],
    "expand_dims": lambda ops, p: [np.expand_dims(ops[0], tuple(p["dimensions"]))],
    "transpose": lambda ops, p: [np.transpose(ops[0], p["permutation"])],
    "broadcast_in_dim": lambda ops, p: [
        _index_maps.broadcast_in_dim(ops[0], p["shape"], p["broadcast_dimensions"])
    ],
    "slice": lambda ops, p: [
        _index_maps.slice_(ops[0], p["start_indices"], p["limit_indices"], p.get("strides"))
    ],
    "rev": lambda ops, p: [np.flip(ops[0], tuple(p["dimensions"]))],
    "concatenate": lambda ops, p: [np.concatenate(ops, axis=p["dimension"])],
    "pad": lambda ops, p: [_index_maps.pad(ops[0], ops[1], p["padding_config"])],
    "split": lambda ops, p: _index_maps.split(ops[0], p["sizes"], p["axis"]),
}
for _name, _move in _MOVES.items():
    register_primitive(_name, move=_move, pulled=True)
for _name, _move in {
    "tile": lambda ops, p: [np.tile(ops[0], p["reps"])],
    "stack": lambda ops, p: [np.stack(ops, axis=p["axis"])],
    "unstack": lambda ops, p: list(np.moveaxis(ops[0], p["axis"], 0)),
}.items():
    register_primitive(_name, move=_move)
# Positions as operands: exact at known starts, a band at traced ones (JAX clamps them).


def _dynamic_slice(ops, p):
    return [_index_maps.dynamic_slice(*ops, slice_sizes=p["slice_sizes"])]


def _dynamic_update_slice(ops, p):
    return [_index_maps.dynamic_update_slice(*ops)]


register_primitive(
    "dynamic_slice",
    move=_dynamic_slice,
    index_operands=slice(1, None),
    sparsity=_rules.first(
        _rules.moved_by(_dynamic_slice, slice(1, None)), _structured.dynamic_slice
    ),
    pulled=True,
    why_not=_INDICES_UNKNOWN,
)
register_primitive(
    "dynamic_update_slice",
    move=_dynamic_update_slice,
    index_operands=slice(2, None),
    sparsity=_rules.first(
        _rules.moved_by(_dynamic_update_slice, slice(2, None)), _structured.dynamic_update_slice
    ),
    why_not=_INDICES_UNKNOWN,
)
register_primitive(
    "gather",
    sparsity=_rules.gather,
    cost="gather",
    pulled=True,
    why_not=_INDICES_UNKNOWN,
    bounds=_ranges.gathered,
)
for _name in ("scatter", "scatter-add", "scatter-mul", "scatter-min", "scatter-max", "scatter-sub"):
    register_primitive(_name, sparsity=_rules.scatter, cost="scatter", why_not=_INDICES_UNKNOWN)

# Reductions: the union over the reduced elements; along lines for the cumulative ones
# (prefixes) and sort (whole lines).
for _name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"):
    register_primitive(_name, sparsity=_rules.reduce)
for _name in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort"):
    register_primitive(_name, sparsity=_rules.lines)
register_primitive("dot_general", sparsity=_rules.dot, cost="dot")
register_primitive("stop_gradient", sparsity=_rules.stop_gradient)
# Fixed by their shapes (see _structured).
register_primitive("top_k", sparsity=_structured.top_k)
register_primitive("cholesky", sparsity=_structured.cholesky)
register_primitive("conv_general_dilated", sparsity=_structured.conv)
register_primitive("qr", sparsity=_structured.qr)

# Calls, branches and loops: their bodies are read (see _flow for the custom rules).
for _name, _param in {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}.items():
    register_primitive(_name, control=plain_call, body=_param, cost="call")
# On the differentiation path a custom rule is read through the derivative JAX runs.
register_primitive(
    "custom_jvp_call", control=_differentiated(_flow.custom_jvp), body="call_jaxpr", cost="call"
)
register_primitive(
    "custom_vjp_call", control=_differentiated(_flow.custom_vjp), body="call_jaxpr", cost="call"
)
register_primitive("scan", control=_differentiated(_flow.scan), cost="scan")
register_primitive("while", control=_flow.while_loop, cost="while")
register_primitive("cond", control=_cond, cost="cond")

# Handled conservatively on purpose: every output element depends on every dependency of
# every operand (dense factorizations and transforms mix all their elements, or nearly).
CONSERVATIVE = (
    "fft",
    "triangular_solve",
    "lu",
    "lu_pivots_to_permutation",
    "eig",
    "eigh",
    "svd",
    "schur",
    "hessenberg",
    "tridiagonal",
    "tridiagonal_solve",
    "custom_linear_solve",
    "reduce_window",
    "reduce_window_sum",
    "reduce_window_max",
    "reduce_window_min",
    "select_and_scatter_add",
    "select_and_gather_add",
)
for _name in CONSERVATIVE:
    register_primitive(_name)

# How integer intervals (traced indices) flow through arithmetic (data movements have theirs).
for _name, _bounds in _ranges.ARITHMETIC.items():
    TABLE[_name] = dataclasses.replace(TABLE.get(_name) or PrimitiveRule(_name), bounds=_bounds)
