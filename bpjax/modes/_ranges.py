"""Integer value ranges: bounds on traced indices, so an index computed from ``x`` still
narrows the pattern of what it indexes.

``i = argmax(x)`` is not known at trace time, but it lies in ``[0, n)``; JAX's index
normalisation ``where(i < 0, i + n, i)`` then folds to ``i`` (the comparison is decided by the
bounds), and ``dynamic_slice(y, (i + 1,), (k,))`` reads a band of the starts ``i + 1`` may take
instead of every start. The same bounds decide comparisons ``lt``/``le``/``gt``/``ge``/``eq``/
``ne`` against constants (asdex resolves these too).

One interval ``(lo, hi)`` per integer variable (all its elements lie in it), inclusive. Every
rule is a sound over-approximation: an output's interval contains every value any ``x`` can
produce; a rule that cannot say (a float converted to an integer, a division by an interval
containing 0, a bound past the dtype's range) gives ``None``, and ``None`` means unknown.
"""

from __future__ import annotations

import itertools

import numpy as np

# (lo, hi) inclusive, or None (unknown).
Bound = tuple[int, int] | None


def of_value(value) -> Bound:
    """The interval of a known integer array (its min and max)."""
    a = np.asarray(value)
    if a.dtype.kind not in "biu" or a.size == 0:
        return None
    return int(a.min()), int(a.max())


def _fits(bound: Bound, dtype) -> Bound:
    # Outside the dtype's range the arithmetic wraps around: the interval would be a lie.
    if bound is None or np.dtype(dtype).kind == "b":
        return bound
    info = np.iinfo(dtype)
    return bound if info.min <= bound[0] and bound[1] <= info.max else None


def _corners(op, a: Bound, b: Bound) -> Bound:
    if a is None or b is None:
        return None
    values = [op(x, y) for x, y in itertools.product(a, b)]
    return min(values), max(values)


def _trunc_div(x, y):
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y > 0) else -q


def _div(a: Bound, b: Bound) -> Bound:
    if b is None or b[0] <= 0 <= b[1]:
        return None  # a divisor that may be 0 (or of either sign): no bound
    return _corners(_trunc_div, a, b)


def _rem(a: Bound, b: Bound) -> Bound:
    # lax.rem takes the dividend's sign; |a rem b| < |b|.
    if a is None or b is None or b[0] <= 0 <= b[1]:
        return None
    m = max(abs(b[0]), abs(b[1])) - 1
    lo = 0 if a[0] >= 0 else -min(m, abs(a[0]))
    hi = 0 if a[1] <= 0 else min(m, a[1])
    return lo, hi


def _integer_pow(a: Bound, y: int) -> Bound:
    if a is None or y < 0:
        return None
    ends = [a[0] ** y, a[1] ** y]
    lo, hi = min(ends), max(ends)
    if y % 2 == 0 and a[0] <= 0 <= a[1]:
        lo = 0
    return (lo, hi) if y else (1, 1)


def _union(bounds) -> Bound:
    if not bounds or any(b is None for b in bounds):
        return None
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


# Whether a comparison holds for every pair of values; it never holds exactly when its
# negation always does.
_ALWAYS = {
    "lt": lambda a, b: a[1] < b[0],
    "le": lambda a, b: a[1] <= b[0],
    "gt": lambda a, b: a[0] > b[1],
    "ge": lambda a, b: a[0] >= b[1],
    "eq": lambda a, b: a[0] == a[1] == b[0] == b[1],
    "ne": lambda a, b: a[1] < b[0] or b[1] < a[0],
}
_NEGATION = {"lt": "ge", "le": "gt", "gt": "le", "ge": "lt", "eq": "ne", "ne": "eq"}


def _compare(name: str, a: Bound, b: Bound):
    """True or False if every pair of values compares so, else None (undecided)."""
    if a is None or b is None:
        return None
    if _ALWAYS[name](a, b):
        return True
    if _ALWAYS[_NEGATION[name]](a, b):
        return False
    return None


def _select(eqn, bounds, values):
    # select_n(which, *cases): the chosen case's bound when `which` is decided, else the union.
    which = values[0]
    if which is not None:
        picked = np.unique(np.asarray(which).astype(int))
        return [_union([bounds[1 + int(k)] for k in picked])]
    return [_union(bounds[1:])]


def _index_of_reduction(eqn, bounds, values):
    axis = eqn.params["axes"][0]
    return [(0, eqn.invars[0].aval.shape[axis] - 1)]


def _iota(eqn, bounds, values):
    size = eqn.outvars[0].aval.shape[eqn.params["dimension"]]
    return [(0, max(size - 1, 0))]


def _convert(eqn, bounds, values):
    # Integer to integer keeps the values (if they fit); a float converted gives no bound;
    # to bool, every nonzero value becomes 1.
    a = bounds[0] if eqn.invars[0].aval.dtype.kind in "biu" else None
    if a is None or eqn.outvars[0].aval.dtype.kind != "b":
        return [a]
    zero, nonzero = a[0] <= 0 <= a[1], a != (0, 0)
    return [(0 if zero else 1, 1 if nonzero else 0)]


def _clamp(eqn, bounds, values):
    # clamp(lo, x, hi) = min(max(x, lo), hi) is nondecreasing in each operand, so its bounds
    # are its values at the operands' lower and at their upper ends; an unknown operand
    # spans everything.
    inf = float("inf")
    lo, x, hi = ((-inf, inf) if b is None else b for b in bounds)
    ends = (min(max(x[k], lo[k]), hi[k]) for k in (0, 1))
    low, high = ends
    if abs(low) == inf or abs(high) == inf:
        return [None]
    return [(int(low), int(high))]


def same(eqn, bounds, values):
    """An output that holds some of the first operand's values (a sort, a running max)."""
    return [bounds[0]]


def moved(index_operands: slice | None):
    """Bounds of a data movement: every output element is a copy of an element of a data
    operand (not of a position operand), so the union of the data operands' intervals."""

    def rule(eqn, bounds, values):
        positions = set(range(len(bounds))[index_operands or slice(0)])
        data = [b for k, b in enumerate(bounds) if k not in positions]
        return [_union(data)] * len(eqn.outvars)

    return rule


def gathered(eqn, bounds, values):
    """Bounds of a gather: copies of the operand's elements, and in ``"fill"`` mode the fill
    value for out-of-bounds indices (unbounded when JAX's default fill is used: the dtype's
    extreme value)."""
    data = bounds[0]
    if "FILL" in str(eqn.params.get("mode")).upper():
        fill = eqn.params.get("fill_value")
        data = None if fill is None else _union([data, (int(fill), int(fill))])
    return [data]


def _binary(op):
    return lambda eqn, bounds, values: [op(bounds[0], bounds[1])]


def _neg(eqn, bounds, values):
    a = bounds[0]
    return [None if a is None else (-a[1], -a[0])]


def _abs(eqn, bounds, values):
    a = bounds[0]
    if a is None:
        return [None]
    lo = 0 if a[0] <= 0 <= a[1] else min(abs(a[0]), abs(a[1]))
    return [(lo, max(abs(a[0]), abs(a[1])))]


# Primitive name -> (eqn, operand bounds, operand values) -> [output bounds], for the
# primitives that compute on integers (data movements get `moved`; comparisons decide values
# instead, see `decide`). Read into the primitive table by bpjax.modes._primitives.
ARITHMETIC = {
    "add": _binary(lambda a, b: _corners(int.__add__, a, b)),
    "sub": _binary(lambda a, b: _corners(int.__sub__, a, b)),
    "mul": _binary(lambda a, b: _corners(int.__mul__, a, b)),
    "max": _binary(lambda a, b: _corners(max, a, b)),
    "min": _binary(lambda a, b: _corners(min, a, b)),
    "div": _binary(_div),
    "rem": _binary(_rem),
    "neg": _neg,
    "abs": _abs,
    "integer_pow": lambda eqn, bounds, values: [_integer_pow(bounds[0], eqn.params["y"])],
    "clamp": _clamp,
    "select_n": _select,
    "argmax": _index_of_reduction,
    "argmin": _index_of_reduction,
    "iota": _iota,
    "convert_element_type": _convert,
    "reduce_max": same,
    "reduce_min": same,
    "cummax": same,
    "cummin": same,
    "sort": same,
}

COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")


def propagate(rule, eqn, bounds, values) -> list[Bound]:
    """The output bounds of an equation by its ``rule`` (a primitive record's ``bounds``),
    ``None`` where unknown."""
    n = len(eqn.outvars)
    if rule is None:
        return [None] * n
    try:
        outs = rule(eqn, bounds, values)
    except (KeyError, IndexError, TypeError, ValueError):  # an odd equation: stay unknown
        return [None] * n
    if len(outs) != n:  # e.g. a sort of several operands: no claim on the others
        return [None] * n
    return [
        _fits(b, v.aval.dtype) if v.aval.dtype.kind in "biu" else None
        for b, v in zip(outs, eqn.outvars, strict=True)
    ]


def decide(eqn, bounds):
    """The value of a comparison the operands' bounds decide (a constant boolean array, the
    output's shape), or ``None``."""
    if eqn.primitive.name not in COMPARISONS:
        return None
    verdict = _compare(eqn.primitive.name, bounds[0], bounds[1])
    if verdict is None:
        return None
    return np.full(eqn.outvars[0].aval.shape, verdict)
