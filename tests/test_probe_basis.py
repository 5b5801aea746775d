"""basis="probe" (jacobian_fn's default): the model decides where it can; where candidates
are within its uncertainty, a paired timing of those few ranks them.

The model's prices and the timings are replaced by fixed ones here, so each test states
the situation it checks (the real ones depend on the machine's measured rates)."""

import numpy as np
import pytest

from bpjax import modes
from bpjax.measure import _timing
from bpjax.modes import _basis_probe, examples
from bpjax.modes._basis import per_call
from bpjax.modes._basis_model import ModelBasis


@pytest.fixture
def fake(monkeypatch):
    """``fake(model={...}, measured={...})``: the model's seconds per candidate and the
    probe's measured seconds per call; returns the list of programs the probe compiled."""
    compiled = []

    def setup(model, measured=None):
        def prices(self, plan, *, sparse_output, calls):
            seconds = {c.name: model.get(c.name, 1.0) for c in plan.candidates}
            if calls:  # priced per call over `calls`, no compilation difference
                return {k: per_call(v, 0.0, calls) for k, v in seconds.items()}
            return {k: {"seconds": v} for k, v in seconds.items()}

        def compile_all(fns, *args):
            compiled.extend(fns)
            return {name: (lambda *a: None) for name in fns}

        def run_rounds(steps, calls, *, rounds, **_):
            return {name: [(measured or {}).get(name, 1.0)] * rounds for name in steps}

        monkeypatch.setattr(ModelBasis, "prices", prices)
        # Under measure.paired_seconds, which the probe calls: its pairing runs for real.
        monkeypatch.setattr(_timing, "compile_all", compile_all)
        monkeypatch.setattr(_timing, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
        monkeypatch.setattr(_timing, "run_rounds", run_rounds)
        return compiled

    return setup


def _band():
    f, x, _ = examples.structure("band k=2", dtype=np.float32)
    return f, x


def test_a_near_tie_is_timed_and_the_faster_orientation_wins(fake):
    # The model: rows 10% dearer than columns, within its 25% band: a tie it breaks by
    # "fewer VJPs" (columns). Measured, rows run twice as fast.
    compiled = fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    assert modes.choose_mode(f, x, sparse_output=True).method == "columns"
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert jac.method == "rows" and sorted(compiled) == ["columns", "rows"]
    assert "measured 1 ms, 2.00x cheaper" in jac.choice.reason
    assert "both compiled and timed" in jac.choice.reason
    assert jac.choice.candidates["rows"]["measured"] and jac.choice.basis == "probe"


def test_within_its_band_the_model_preference_stands(fake):
    # Rows measured 5% faster: inside the probe's 10% band, so noise cannot flip the choice.
    fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 1.05e-3, "rows": 1e-3})
    assert _basis_probe.ProbeBasis.band == 1.10
    f, x = _band()
    assert modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).method == "columns"


def test_a_clear_model_choice_compiles_nothing(fake):
    compiled = fake({"columns": 1e-3, "rows": 2e-3})  # rows 2x dearer: outside the band
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert compiled == [] and jac.method == "columns"


def test_with_calls_the_probe_is_the_model(fake):
    compiled = fake({"columns": 1.1e-3, "rows": 1e-3})
    f, x = _band()
    probe = modes.choose_mode(f, x, basis="probe", calls=3, sparse_output=True)
    model = modes.choose_mode(f, x, basis="model", calls=3, sparse_output=True)
    assert compiled == [] and probe.method == model.method == "columns"


def test_a_jacobian_too_quick_to_repay_the_probe_is_left_to_the_model(fake):
    tiny = _basis_probe.PROBE_MIN_SECONDS / 10
    compiled = fake({"columns": tiny, "rows": 1.1 * tiny}, {"columns": 2.0, "rows": 1.0})
    f, x = _band()
    assert modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).method == "columns"
    assert compiled == []
