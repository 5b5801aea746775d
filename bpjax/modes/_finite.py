"""Whether a function's dense derivative products give exact zeros outside its pattern.

A JVP or VJP with a one-hot seed computes each entry of ``J`` as a sum of products of local
partial derivatives; an entry outside the sparsity pattern is a sum of terms each with a
zero factor. It is an exact zero when every local derivative it multiplies is finite, and
NaN when one is infinite (``0 · ∞``): ``sqrt`` at 0, ``log`` at 0, a ``where`` whose untaken
branch has an infinite derivative. So the dense modes mask the entries outside the pattern
(:func:`bpjax.modes._sparse.program`), which costs their compilation a gather and a scatter.

:func:`finite_local_derivatives` says when the mask is not needed: every primitive of ``f``
is one whose partial derivatives are finite wherever its inputs are (sums, products, slicing
and reshaping, ``sin``/``cos``/``tanh``/``logistic``, comparisons and selects, ``max``/``min``,
nonnegative integer powers), and control flow other than ``jit`` (whose bodies are checked)
counts as unknown. The promise holds where every intermediate value of ``f`` at ``x`` is
finite; an overflow to ``inf`` inside ``f`` can still put NaN outside the pattern.
"""

from __future__ import annotations

from jax.extend import core as jcore

# Primitives whose local partial derivatives are finite wherever their inputs are finite.
FINITE = frozenset(
    {
        "add", "add_any", "sub", "mul", "neg", "dot_general", "reduce_sum", "reduce_max",
        "reduce_min", "argmax", "argmin", "broadcast_in_dim", "reshape", "squeeze",
        "expand_dims", "slice", "dynamic_slice", "dynamic_update_slice", "pad", "concatenate",
        "transpose", "rev", "convert_element_type", "copy", "copy_p", "select_n", "gather",
        "scatter-add", "scatter_add", "iota", "sin", "cos", "tanh", "logistic", "max", "min",
        "abs", "sign", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "stop_gradient",
        "cumsum", "square", "floor", "ceil", "round", "clamp", "split",
    }
)  # fmt: skip
# Calls whose body is what runs: checked recursively.
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call"})


def finite_local_derivatives(closed_jaxpr) -> bool:
    """Whether every primitive of ``closed_jaxpr`` (and of the ``jit`` calls in it) has
    finite partial derivatives wherever its inputs are finite (see the module docstring)."""
    return _finite(closed_jaxpr.jaxpr)


def _finite(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _CALLS:
            if not all(_finite(sub) for sub in jcore.jaxprs_in_params(eqn.params)):
                return False
        elif name == "integer_pow":
            if eqn.params["y"] < 0:  # x^-k: infinite derivative at 0
                return False
        elif name not in FINITE:
            return False
    return True
