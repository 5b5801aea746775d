"""The automatic mode: choose among ``fwd``, ``rev`` and the colorings by run time.

The candidates of a :class:`~bpjax.modes._plan.Plan` are priced by a cost basis
(:class:`~bpjax.modes._basis.CostBasis`: one contract, one file per basis) and the cheapest
is picked, ties going to the faster compilation, then fewer products, then the cheaper by
the model's structural costs, then fewer VJPs:

* ``"model"`` (default, :mod:`bpjax.modes._basis_model`): the run-time model, nothing
  compiled;
* ``"timing"`` (:mod:`bpjax.modes._basis_timing`): the model's leading candidates compiled
  and timed;
* ``"xla"`` (:mod:`bpjax.modes._basis_xla`): XLA's FLOP and byte estimates, dense modes only;
* any :class:`~bpjax.modes._basis.CostBasis` object.

With ``calls=N`` (bases with ``prices_calls``) each candidate is priced per call over ``N``
calls with its compilation shared among them. On a CPU, where ``N`` calls of the chosen
program lose less to slower code than LLVM at -O0 saves in compilation, the choice carries
``compiler_options`` for it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax

from bpjax.modes import _checks, _cost, _plan, _rates
from bpjax.modes._basis import COMPILED, CostBasis, close_to_best
from bpjax.modes._basis_model import ModelBasis
from bpjax.modes._basis_probe import ProbeBasis
from bpjax.modes._basis_timing import TimingBasis
from bpjax.modes._basis_xla import XlaBasis

# The built-in bases by name; a CostBasis object may be passed instead.
_BASES = {b.name: b for b in (ModelBasis(), ProbeBasis(), TimingBasis(), XlaBasis())}
BASES = tuple(_BASES)


class ModeChoice(NamedTuple):
    """Why the automatic mode chose as it did.

    Attributes:
      mode: ``"fwd"``, ``"rev"`` or ``"sparse"``.
      n, m: input and output sizes.
      fwd, rev: the predicted cost of the dense modes (``{"seconds"}``, plus ``"flops"`` and
        ``"bytes"`` on the XLA basis); ``None`` when not a candidate (``fwd`` when ``f`` has
        a ``custom_vjp``, which has no forward mode).
      basis: the name of the basis that priced the candidates (one of :data:`BASES`, or a
        :class:`~bpjax.modes.CostBasis`'s ``name``).
      reason: one sentence for humans.
      method: ``"fwd"``, ``"rev"``, ``"columns"``, ``"rows"`` or ``"bicoloring"``.
      candidates: method → ``{"jvps", "vjps", "seconds"}`` for every candidate priced.
      decision_seconds: wall time of the whole decision (tracing, sparsity, coloring,
        pricing).
      compiler_options: XLA options for the program (``None``: the defaults). With
        ``calls=`` on a CPU, LLVM at -O0 where a few calls of a small Jacobian lose less
        to the slower code than the faster compilation saves.
      unmasked: with ``calls=``, a dense mode's output is left without the mask that zeroes
        the entries outside the pattern: they are exact zeros already (every local
        derivative of ``f`` is finite where its inputs are, :mod:`bpjax.modes._finite`),
        and the mask's compilation costs more than a few calls gain from it.
    """

    mode: str
    n: int
    m: int
    fwd: dict | None
    rev: dict | None
    basis: str
    reason: str
    method: str = ""
    candidates: dict | None = None
    decision_seconds: float = 0.0
    compiler_options: dict | None = None
    unmasked: bool = False


def resolve_basis(basis) -> CostBasis:
    """The :class:`CostBasis` named by ``basis`` (or ``basis`` itself); say the fix otherwise."""
    if isinstance(basis, CostBasis):
        return basis
    if basis is None:
        basis = "model"
    if isinstance(basis, str) and basis in _BASES:
        return _BASES[basis]
    raise ValueError(
        f"choose_mode: unknown basis {basis!r}; choose one of {BASES} or pass a "
        "bpjax.modes.CostBasis"
    )


# What breaks a tie within a basis' band, in order, and how the reason says it. The model's
# order counts only in what it prices from the structure (its "structural" price: JVPs and
# VJPs per element alike), where at least STRUCTURAL_GAP apart: its JVP/VJP rates come from
# one short calibration, and on one idle machine the same JVP and VJP programs ran up to
# 1.3x apart the other way round from one process to the next (per element at 256 KiB, 15
# paired rounds each; one-call rates 0.59-1.22), so inside the 25% band the model's full
# order followed the calibration. Over four records of results/jacobians.json (2026-12-04),
# 92 near-ties of equal products each: steady, the full order picked a program >10% slower
# 14 times (worst 1.69x: rows for the block-diagonal in two records, columns in the
# others), fewer VJPs and the structural order once (1.10x); with calls=10, 11, 13 and 9
# times (the structural order keeps rev where fwd pays the transpose of a dense J).
_STRUCTURAL = "is the cheaper by the model's structural costs"
_TIE_BREAKS = (
    ("compiles faster", lambda c, p: p.get("compile_seconds", 0.0)),
    ("needs fewer products", lambda c, p: c.products),
    (_STRUCTURAL, lambda c, p: p.get("structural", 0.0)),
    ("needs fewer VJPs", lambda c, p: c.vjps),
)
STRUCTURAL_GAP = 1.05


def _break_ties(close, prices):
    """``(winner, why)``: the first of ``close`` by :data:`_TIE_BREAKS`, and for every other
    candidate of ``close`` the words of the rule that put it behind."""
    left, why = list(close), {}
    for words, rank in _TIE_BREAKS:
        value = {c.name: rank(c, prices[c.name]) for c in left}
        least = min(value.values())
        if words == _STRUCTURAL:  # closer than STRUCTURAL_GAP: equal
            value = {k: least if v < STRUCTURAL_GAP * least else v for k, v in value.items()}
        why |= {c.name: words for c in left if value[c.name] != least}
        left = [c for c in left if value[c.name] == least]
    why |= {c.name: "comes first among equals" for c in left[1:]}
    return left[0], why


def _pick(candidates, prices, basis):
    """``(method, why)``: the cheapest; among those within the basis' uncertainty of it, the
    one that compiles faster (when priced with ``calls=``), then with fewer products, then
    the cheaper by the model's structural costs (``"structural"``, where the basis keeps
    it; at least :data:`STRUCTURAL_GAP` apart), then fewer VJPs. ``why``: for each other
    candidate within that uncertainty, the rule that put it behind (see
    :func:`_break_ties`); a candidate missing from it was beyond the band."""
    return _break_ties(close_to_best(candidates, prices, basis.band), prices)


def _fmt(seconds):
    return f"{seconds * 1e3:.3g} ms"


def _reason(method, runner_up, prices, basis, plan, why, calls=None):
    t = prices[method.name]["seconds"]
    verb = "measured" if prices[method.name].get("measured") else basis.verb
    text = f"{method.describe()}: {verb} {_fmt(t)}"
    if calls:
        text += f" per call over {calls} call{'s' if calls != 1 else ''}, compilation included"
    if runner_up is not None:
        t2 = prices[runner_up.name]["seconds"]
        by = why.get(runner_up.name)
        if by is None:  # beyond the band
            text += f", {t2 / max(t, 1e-30):.2f}x cheaper than {runner_up.describe()}"
        else:
            text += (
                f", within the {basis.name} basis' uncertainty of {runner_up.describe()} "
                f"({_fmt(t2)}), and preferred as it {by}"
            )
        if prices[method.name].get("measured") and prices[runner_up.name].get("measured"):
            if prices[method.name].get("kept"):
                text += (
                    " (both were timed by an earlier probe on this machine, kept in "
                    "probes.json: the model could not rank them)"
                )
            else:
                text += " (both compiled and timed: the model could not rank them)"
    risky = [prices[c.name].get("pessimistic") for c in (method, runner_up) if c is not None]
    if any(risky):
        text += (
            f"; fwd and rev priced at {max(filter(None, risky)):g}x the model's run time, "
            "as a BCOO of a sparse pattern makes theirs unpredictable (XLA may compute "
            "only the nonzeros, or write n x n intermediates)"
        )
    if not plan.forward:
        text += "; f contains a custom_vjp, which has no forward mode, so only VJPs were used"
    if not plan.reverse:
        text += "; f runs a while_loop, which has no reverse mode, so only JVPs were used"
    return text


def _compiler_options(run_seconds, calls):
    """LLVM at -O0 where ``calls`` calls on a CPU lose less to it than it saves, else None."""
    on_cpu = calls and jax.default_backend() == "cpu"
    if on_cpu and _cost.fast_compile_pays(run_seconds, calls, _rates.rates("cpu")):
        return dict(_cost.FAST_COMPILE)
    return None


def decide(plan, *, basis="model", sparse_output: bool = False, calls: int | None = None):
    """Price ``plan.candidates`` on ``basis`` and pick one (see the module docstring).

    Args:
      plan: a :class:`~bpjax.modes._plan.Plan` with at least one candidate.
      basis: a name of :data:`BASES` or a :class:`~bpjax.modes._basis.CostBasis`.
      sparse_output: price a ``BCOO`` result instead of a dense one.
      calls: price each candidate per call over that many calls, its compilation included.

    Returns:
      ``(method, choice, compiled)``: the chosen candidate of ``plan`` itself, the
      :class:`ModeChoice` that explains it, and the chosen program compiled for ``plan.x``
      if the basis compiled it while pricing (else ``None``).
    """
    basis = resolve_basis(basis)
    _checks.check_calls(calls)
    if calls and not basis.prices_calls:
        able = " or ".join(repr(b.name) for b in _BASES.values() if b.prices_calls)
        raise ValueError(f"choose_mode: calls= needs basis={able}, not {basis.name!r}")
    prices = basis.prices(plan, sparse_output=sparse_output, calls=calls)
    executables = {k: p.pop(COMPILED) for k, p in prices.items() if COMPILED in p}
    method, why = _pick(plan.candidates, prices, basis)
    others = [c for c in plan.candidates if c.name in prices and c.name != method.name]
    runner_up = min(others, key=lambda c: prices[c.name]["seconds"], default=None)
    table = {
        c.name: {"jvps": c.jvps, "vjps": c.vjps, **prices[c.name]}
        for c in plan.candidates
        if c.name in prices
    }
    reason = _reason(method, runner_up, prices, basis, plan, why, calls)
    # Priced with calls: run and compile apart.
    options = _compiler_options(prices[method.name].get("run_seconds"), calls)
    if options:
        reason += (
            "; compiled with LLVM at -O0: over so few calls the faster compilation saves "
            "more than the slower code loses"
        )
    run_seconds = prices[method.name].get("run_seconds")
    unmasked = plan.leaves_mask_out(method, run_seconds, calls, sparse_output=sparse_output)
    if unmasked:
        reason += (
            "; without the mask outside the pattern: every local derivative of f is finite, "
            "so those entries are exact zeros already, and its compilation costs more than "
            "so few calls gain"
        )
    choice = ModeChoice(
        mode=method.mode,
        n=plan.n,
        m=plan.m,
        fwd=prices.get("fwd"),
        rev=prices.get("rev"),
        basis=basis.name,
        reason=reason,
        method=method.name,
        candidates=table,
        compiler_options=options,
        unmasked=unmasked,
    )
    return method, choice, executables.get(method.name)


@_checks.refuse_removed_keywords
def choose_mode(
    f,
    x,
    *,
    basis="model",
    sparse_output: bool = False,
    colorings: bool = True,
    calls: int | None = None,
) -> ModeChoice:
    """Which of ``fwd``, ``rev`` and the sparse colorings computes ``J`` fastest, and why.

    Candidates: forward mode (``n`` JVPs), reverse mode (``m`` VJPs), and the column, row
    and bi-colorings of the detected pattern (:func:`bpjax.modes.sparsity`), each priced
    by ``basis`` (module docstring).

    Args:
      f: as for :func:`bpjax.modes.jacobian`.
      x: the point (only its shapes and dtypes matter to the choice).
      basis: a name of :data:`BASES` (``model``, the default: predicted; ``timing``: the
        leading candidates compiled and timed; ``xla``: XLA's estimates) or a
        :class:`~bpjax.modes.CostBasis`.
      sparse_output: price a ``BCOO`` result instead of a dense one.
      colorings: consider the colorings too (``False``: only ``fwd`` and ``rev``, and no
        sparsity detection).
      calls: how many times the Jacobian will be evaluated; the choice then minimizes the
        time per call with each candidate's compilation shared among the calls (a
        coloring's program compiles 10-50 ms slower than ``fwd``/``rev``'s, which a few
        calls of a sub-millisecond Jacobian never earn back). ``None`` (default): the
        steady-state time per call.

    Returns:
      A :class:`ModeChoice`; ``.reason`` says what was picked and by how much.

    Example:
      >>> choose_mode(lambda x: jnp.tanh(x[1:] - x[:-1]), jnp.ones(1000)).method  # 'columns'
    """
    start = time.perf_counter()
    _checks.check_flag("colorings", colorings, "choose_mode")
    basis = resolve_basis(basis)
    colorings = colorings and basis.colorings
    plan = _plan.plan(f, x, mode="auto", sparse_output=sparse_output, colorings=colorings)
    _, choice, _ = decide(plan, basis=basis, sparse_output=sparse_output, calls=calls)
    return choice._replace(decision_seconds=time.perf_counter() - start)
