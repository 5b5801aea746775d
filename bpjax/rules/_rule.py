"""The record every op in the table is written as."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    """One differentiable op, written once.

    Conventions (every op follows them, so the namespace builders need no special cases):

    * ``primal(*arrays, **options)``: arrays are positional parameters, options (``axis``,
      ``eps``) keyword-only and hashable.
    * ``jvp(primals, tangents, **options) -> (out, tangent_out)``: linear in ``tangents``
      and written with differentiable ``jax.numpy`` so JAX can transpose it (``grad`` through
      ``bpjax.fwd``) and differentiate it again (higher order).
    * ``vjp_fwd(*arrays, **options) -> (out, residuals)`` and
      ``vjp_bwd(residuals, cotangent, **options) -> tuple`` with one cotangent per array
      (``None`` for integer inputs such as class ids). ``residuals`` is what the op keeps
      alive between the forward and the backward pass: its memory cost.
    * ``validate(*arrays, **options)`` raises ``TypeError``/``ValueError`` with a fix.
    """

    name: str
    primal: Callable
    jvp: Callable
    vjp_fwd: Callable
    vjp_bwd: Callable
    validate: Callable
    forward_formula: str
    jvp_formula: str
    vjp_formula: str
    saves: str
    signature: inspect.Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "signature", inspect.signature(self.primal))

    @property
    def array_params(self) -> tuple[str, ...]:
        """Names of the primal's array arguments (positional), in order."""
        return tuple(
            p.name
            for p in self.signature.parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )

    @property
    def option_params(self) -> tuple[str, ...]:
        """Names of the primal's keyword-only options (``axis``, ``eps``)."""
        return tuple(
            p.name
            for p in self.signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        )
