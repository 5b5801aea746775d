"""``basis="probe"``: the model, and a short timed probe where the model cannot decide.

The run-time model (:mod:`bpjax.modes._basis_model`) prices every candidate. Where others
are within its uncertainty (``ModelBasis.band``) of its cheapest, it cannot say which runs
faster; those few are compiled and timed, and the measurement ranks them. The orientation
of a coloring is the usual such race: the model prices 17 JVPs and 17 VJPs of a band
within a few percent, while XLA:CPU runs one of them 2-3x faster than the other, in either
direction depending on the structure. So is the direction itself where a gather sits in a
chain of transcendental steps: the model priced reverse mode half of forward mode's time
where it ran 1.2-4.8x longer, so when it picks ``fwd`` or ``rev``, the other is timed too
while priced within ``DIRECTIONS`` (3x) of it. Candidates the model prices clearly
worse are not compiled. With ``calls=`` (a few calls, compilation counted), or where the
model prices the best under ``min_seconds`` (``PROBE_MIN_SECONDS``, 0.1 ms, for
``choose_mode(basis="probe")``), the model alone decides: the probe's compilations would
cost more than the calls can gain.

This is the default of :func:`~bpjax.modes.jacobian_fn`, which decides once for many
calls and defers the probe (``defer=True``, no floor): it decides as the model does, and
its calls run the probe once they have cost, by the model's prices, what the probe will
(:func:`probe_cost`). :func:`~bpjax.modes.jacobian` and :func:`~bpjax.modes.choose_mode`
default to the model alone.
"""

from __future__ import annotations

from bpjax import measure
from bpjax.modes import _probes
from bpjax.modes._basis import COMPILED, CostBasis, close_to_best
from bpjax.modes._basis_model import ModelBasis

# Below this predicted time per call the probe is not worth its compilations (~0.1 s): a
# 2x faster 0.1 ms Jacobian earns them back only after thousands of calls.
PROBE_MIN_SECONDS = 1e-4
ROUNDS = 11  # interleaved rounds of the probe, each at least 10 ms per candidate
# The model's price of the other direction is trusted only beyond this factor. Its ratio of
# reverse to forward mode was off by 2.4-8x on chains of transcendental steps around a
# gather (n = 256-4096 inputs, m = 4-1024 outputs: priced 0.45-0.66, run 1.2-4.8 on this
# 2-core Xeon; 1.4 priced, 9.7 run at 1024 x 1024): XLA:CPU fuses the forward chain's
# derivatives into the batched VJP and evaluates them once per VJP, where the JVPs read them
# once. On the softplus/tanh MLPs it was within 0.5-1.6x wherever the choice was close.
DIRECTIONS = 3.0


def _other_direction(plan, model, best) -> list:
    """Reverse mode when the model picks forward mode, and forward mode when it picks
    reverse, if priced within :data:`DIRECTIONS` of ``best``: where the model misranks the
    two, it does so by more than its band."""
    pick = min(plan.candidates, key=lambda c: model[c.name]["seconds"])
    other = {"fwd": "rev", "rev": "fwd"}.get(pick.name)
    if other is None or other not in model or model[other]["seconds"] > DIRECTIONS * best:
        return []
    return [c for c in plan.candidates if c.name == other]


def _as_model_decides(model, close, best):
    """The model's prices with its near-ties made exact ties, so this basis' narrower band
    breaks them as the model does (fewer products, then its structural price, then fewer
    VJPs); ``"predicted"`` keeps the model's own price for the candidates table."""
    prices = dict(model)
    for c in close:
        prices[c.name] = {**model[c.name], "seconds": best, "predicted": model[c.name]["seconds"]}
    return prices


def probe_cost(timed: int, per_call: float, r: dict) -> float:
    """Predicted seconds of a probe of ``timed`` candidates priced about ``per_call`` seconds
    each: compiling each (a Jacobian program compiled in 1-3x the rates' reference
    compilation ``r["compile"]`` on the 2-core Xeon of results/jacobians.json:
    :data:`COMPILE_FACTOR`) and :data:`ROUNDS` rounds of at least 10 ms of calls."""
    return timed * (COMPILE_FACTOR * r["compile"] + ROUNDS * max(0.01, per_call))


COMPILE_FACTOR = 1.5


class ProbeBasis(CostBasis):
    """``basis="probe"``: predicted, then measured among the model's near-ties.

    ``band`` is the margin a measured time must win by to beat the model's preference
    among ties (fewer products, then its structural price, then fewer VJPs), so run-to-run
    noise does not flip a choice between programs that run equally fast.

    Args:
      min_seconds: below this predicted time per call the model alone decides
        (:data:`PROBE_MIN_SECONDS` by default).
      defer: where a probe is wanted and none is kept on this machine, decide as the
        model does and leave the names of the candidates to time in :attr:`pending`
        (``jacobian_fn``'s default: its calls run the probe once they have paid for it).
    """

    name = "probe"
    band = 1.10
    verb = "predicted"
    prices_calls = True

    def __init__(self, *, min_seconds: float = PROBE_MIN_SECONDS, defer: bool = False):
        self.min_seconds = min_seconds
        self.defer = defer
        self.pending: list[str] | None = None

    def prices(self, plan, *, sparse_output, calls):
        model_basis = ModelBasis()
        model = model_basis.prices(plan, sparse_output=sparse_output, calls=calls)
        best = min(p["seconds"] for p in model.values())
        close = close_to_best(plan.candidates, model, model_basis.band)
        timed = close + [c for c in _other_direction(plan, model, best) if c not in close]
        if calls or len(timed) < 2 or best < self.min_seconds:
            return _as_model_decides(model, close, best)
        pick = min(close, key=lambda c: model[c.name]["seconds"]).name
        names = [c.name for c in timed]
        digest = _probes.jacobian_key(plan, names, sparse_output=sparse_output)
        measured, executables = _probes.kept(digest, names), {}
        if measured is None and self.defer:
            self.pending = names
            return _as_model_decides(model, close, best)
        if measured is None:
            # The programs jacobian_fn runs (input pytree, output layout), so the executable
            # of the one chosen serves its calls without a second compilation.
            programs = {c.name: plan.user_program(c, sparse_output=sparse_output) for c in timed}
            measured = measure.paired_seconds(
                programs,
                plan.x,
                rounds=ROUNDS,
                min_round_seconds=0.01,
                # Paired rounds, each time relative to the model's own pick in the same round.
                reference=pick,
                compiled_out=executables,
                # A candidate ahead by more than the band in each of the first rounds is the
                # choice whatever the later rounds say: stop there (near-ties get all rounds).
                settle=self.band,
            )
            _probes.keep(digest, measured)
        # One scale for all: the model's prices scaled so its pick costs what was measured
        # (the order among unmeasured candidates, priced above the band, is kept).
        scale = measured[pick] / model[pick]["seconds"]
        prices = {
            name: {**p, "seconds": p["seconds"] * scale, "predicted": p["seconds"]}
            for name, p in model.items()
        }
        for name, seconds in measured.items():
            prices[name] = {**prices[name], "seconds": seconds, "measured": True}
            if executables:
                prices[name][COMPILED] = executables[name]
            else:  # read from an earlier process's probe: nothing compiled here
                prices[name]["kept"] = True
        return prices
