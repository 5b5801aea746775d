"""``basis="timing"``: compile and time the candidates the model ranks highest.

The candidates the model (:mod:`bpjax.modes._basis_model`) ranks within 4x of its best (at
most three), and always its best forward-only and best reverse-only candidates. Exact among
those, and costs their compilations; with ``calls=`` each compilation is timed too.
"""

from __future__ import annotations

from bpjax import measure
from bpjax.modes._basis import CostBasis, per_call
from bpjax.modes._basis_model import ModelBasis


class TimingBasis(CostBasis):
    """``basis="timing"``: measured (ties within 2%)."""

    name = "timing"
    band = 1.02
    verb = "measured"
    prices_calls = True

    def prices(self, plan, *, sparse_output, calls):
        model = ModelBasis().prices(plan, sparse_output=sparse_output, calls=calls)
        best = min(p["seconds"] for p in model.values())
        near = sorted((model[c.name]["seconds"], c.name) for c in plan.candidates)
        names = {name for seconds, name in near[:3] if seconds <= 4 * best}
        # The model can misrank the two directions by far more than 4x (XLA fuses work into
        # one mode's batched loop that it keeps out of the other's), so the best forward-only
        # and the best reverse-only candidate are always timed too.
        for one_sided in (lambda c: c.vjps == 0, lambda c: c.jvps == 0):
            sided = [c for c in plan.candidates if one_sided(c)]
            if sided:
                names.add(min(sided, key=lambda c: model[c.name]["seconds"]).name)
        programs = {}
        for c in plan.candidates:
            if c.name in names:
                programs[c.name] = (plan.program(c, sparse_output=sparse_output), (plan.x_flat,))
        timed = measure.compare(programs, rounds=3, warmup=1, min_round_seconds=0.005)
        if calls:  # each candidate's compilation was timed too: the whole of it, not a model
            return {name: per_call(t.median, t.compile, calls) for name, t in timed.items()}
        return {name: {"seconds": t.median} for name, t in timed.items()}
