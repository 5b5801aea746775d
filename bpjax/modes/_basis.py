"""The one contract every cost basis meets: how the automatic mode prices its candidates.

A basis is an object that prices every candidate method of a :class:`~bpjax.modes._plan.Plan`
(``fwd``, ``rev``, the colorings) in seconds, and says how far to trust those prices:

* :meth:`CostBasis.prices`: method name → ``{"seconds": ...}`` (per call); with ``calls=``,
  also ``"run_seconds"`` and ``"compile_seconds"`` (the price is then
  ``run + compile / calls``, see :func:`per_call`). A method left out is not a candidate.
  A basis that compiled a candidate for ``plan.x`` (``plan.user_program``, the program
  ``jacobian_fn`` runs) may add its executable under :data:`COMPILED`; if that candidate is
  chosen, ``jacobian_fn`` calls it instead of compiling the program again.
* :attr:`CostBasis.band`: prices within ``band`` times the cheapest are a tie, broken by the
  faster compilation, then fewer products, then the model's structural price (a price's
  ``"structural"``, where the basis keeps it), then fewer VJPs.
* :attr:`CostBasis.verb`: how the price was found, for the reason (``"predicted"``).
* :attr:`CostBasis.prices_calls`: whether it can price compilation over ``calls=``;
  :attr:`CostBasis.colorings`: whether it prices the colorings too (else ``fwd``/``rev``).

The three built in are ``"model"`` (:mod:`bpjax.modes._basis_model`), ``"timing"``
(:mod:`bpjax.modes._basis_timing`) and ``"xla"`` (:mod:`bpjax.modes._basis_xla`); a new one
is one subclass, passed as ``basis=`` to :func:`~bpjax.modes.jacobian_fn`,
:func:`~bpjax.modes.jacobian` or :func:`~bpjax.modes.choose_mode`.
"""

from __future__ import annotations

import abc

# The key under which a price may carry the candidate's compiled program (not shown in a
# ModeChoice: jacobian_fn takes it out).
COMPILED = "compiled_program"


class CostBasis(abc.ABC):
    """Base class of every cost basis: see the module docstring for the contract.

    Example:
      >>> class FewestProducts(CostBasis):
      ...     name, verb = "products", "counted"
      ...     def prices(self, plan, *, sparse_output, calls):
      ...         return {c.name: {"seconds": float(c.products)} for c in plan.candidates}
      >>> jacobian_fn(f, x, basis=FewestProducts())
    """

    name: str = ""
    band: float = 1.0
    verb: str = "priced"
    prices_calls: bool = False
    colorings: bool = True

    @abc.abstractmethod
    def prices(self, plan, *, sparse_output: bool, calls: int | None) -> dict[str, dict]:
        """Method name → ``{"seconds", ...}`` for the candidates of ``plan`` it prices.

        Args:
          plan: the :class:`~bpjax.modes._plan.Plan` (``plan.candidates``: the methods, each
            with ``.name``, ``.jvps``, ``.vjps``, ``.products``; ``plan.n``, ``plan.m``;
            ``plan.program(method, sparse_output=...)`` builds one on the flat ``x``,
            ``plan.user_program`` the one ``jacobian_fn`` runs on ``plan.x``).
          sparse_output: a ``BCOO`` result is wanted, not a dense ``(m, n)`` one.
          calls: ``None`` (steady state) or how many calls share one compilation (only
            when :attr:`prices_calls`).
        """

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def close_to_best(candidates, prices: dict, band: float) -> list:
    """The candidates priced within ``band`` times the cheapest: by ``"seconds"``, or, where
    every price is the model's (none ``"measured"``), by its ``"structural"`` price (with
    JVPs and VJPs per element alike).

    The JVP/VJP rates come from one short calibration and moved 0.6-1.3x between processes
    on one idle machine, which alone can push two programs that differ only in their
    direction (a coloring's columns and rows) apart past any band: band 8 of
    results/jacobian_structures.json priced its columns 1.29x cheaper in one calibration,
    and its rows ran 1.4x faster.
    """
    priced = [c for c in candidates if c.name in prices]
    best = min(prices[c.name]["seconds"] for c in priced)
    close = [c for c in priced if prices[c.name]["seconds"] <= band * best]
    if all("structural" in prices[c.name] and not prices[c.name].get("measured") for c in priced):
        least = min(prices[c.name]["structural"] for c in priced)
        close += [
            c for c in priced if c not in close and prices[c.name]["structural"] <= band * least
        ]
    return close


def per_call(run: float, compile_seconds: float, calls: int) -> dict:
    """Seconds per call over ``calls`` calls, the compilation shared among them."""
    return {
        "seconds": run + compile_seconds / calls,
        "run_seconds": run,
        "compile_seconds": compile_seconds,
    }
