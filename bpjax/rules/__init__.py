"""The rule table: every op's primal, hand-written JVP and hand-written VJP.

``TABLE`` maps an op name to its :class:`Rule`. :mod:`bpjax.ref`, :mod:`bpjax.rev` and
:mod:`bpjax.fwd` are built from it, so an op is written in exactly one place: find the VJP of
softmax in ``bpjax/rules/softmax.py``.
"""

from bpjax.rules._rule import Rule
from bpjax.rules.activations import RELU, SIGMOID, TANH
from bpjax.rules.linear import LINEAR, MATMUL
from bpjax.rules.losses import CROSS_ENTROPY, MSE, SOFTMAX_CROSS_ENTROPY
from bpjax.rules.softmax import LOG_SOFTMAX, SOFTMAX

TABLE: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        LINEAR,
        MATMUL,
        SIGMOID,
        TANH,
        RELU,
        SOFTMAX,
        LOG_SOFTMAX,
        SOFTMAX_CROSS_ENTROPY,
        CROSS_ENTROPY,
        MSE,
    )
}


def markdown_table() -> str:
    """The table as Markdown (op, forward, JVP, VJP, what the VJP saves), as in the README."""
    rows = [
        "| op | forward | JVP (tangent rule) | VJP (backward rule) | VJP saves |",
        "|---|---|---|---|---|",
    ]
    rows += [
        f"| `{r.name}` | {r.forward_formula} | {r.jvp_formula} | {r.vjp_formula} | {r.saves} |"
        for r in TABLE.values()
    ]
    return "\n".join(rows)


__all__ = ["TABLE", "Rule", "markdown_table"]
