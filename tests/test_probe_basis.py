"""basis="probe" (jacobian_fn's default): the model decides where it can; where candidates
are within its uncertainty, a paired timing of those few ranks them."""

import jax
import numpy as np
import pytest

from bpjax import measure, modes
from bpjax.modes import _basis_probe, _rates, examples
from bpjax.modes._basis_model import ModelBasis


def _fake_rounds(times):
    """run_rounds that reports ``times[name]`` seconds per call for every round."""

    def run_rounds(steps, calls, *, rounds, **_):
        return {name: [times.get(name, 1.0)] * rounds for name in steps}

    return run_rounds


@pytest.fixture
def no_compile(monkeypatch):
    """The probe's compilations replaced by a cheap stand-in (the timing is faked too)."""
    _rates.rates(jax.default_backend())  # the model's rates, measured (and kept) first
    compiled = []

    def compile_fn(fn, *args, **kwargs):
        compiled.append(fn)
        return (lambda *a: None), 0.0

    monkeypatch.setattr(measure, "compile_fn", compile_fn)
    monkeypatch.setattr(measure, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
    return compiled


def test_a_near_tie_is_timed_and_the_faster_orientation_wins(monkeypatch, no_compile):
    f, x, _ = examples.structure("band k=2", dtype=np.float32)
    model = modes.choose_mode(f, x, sparse_output=True)
    # The model prices both orientations within its uncertainty, and picks columns.
    priced = {k: v["seconds"] for k, v in model.candidates.items()}
    assert model.method == "columns" and priced["rows"] <= ModelBasis.band * priced["columns"]
    monkeypatch.setattr(measure, "run_rounds", _fake_rounds({"columns": 2e-3, "rows": 1e-3}))
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert jac.method == "rows" and len(no_compile) == 2
    assert "measured 1 ms, 2.00x cheaper" in jac.choice.reason
    assert "both compiled and timed" in jac.choice.reason
    assert jac.choice.candidates["rows"]["measured"] and jac.choice.basis == "probe"


def test_within_its_band_the_model_preference_stands(monkeypatch, no_compile):
    f, x, _ = examples.structure("band k=2", dtype=np.float32)
    # rows measured 5% faster: inside the probe's 10% band, so noise cannot flip the choice.
    monkeypatch.setattr(measure, "run_rounds", _fake_rounds({"columns": 1.05e-3, "rows": 1e-3}))
    assert _basis_probe.ProbeBasis.band == 1.10
    assert modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).method == "columns"


def test_a_clear_model_choice_compiles_nothing(no_compile):
    f, x, _ = examples.family("arrowhead", 256)
    jac = modes.jacobian_fn(f, x)
    assert no_compile == [] and jac.method == modes.choose_mode(f, x).method


def test_with_calls_the_probe_is_the_model(no_compile):
    f, x, _ = examples.structure("band k=2", dtype=np.float32)
    probe = modes.choose_mode(f, x, basis="probe", calls=3, sparse_output=True)
    model = modes.choose_mode(f, x, basis="model", calls=3, sparse_output=True)
    assert no_compile == [] and probe.method == model.method
