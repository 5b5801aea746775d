"""Measurement helpers and the results/report pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from bpjax import measure

ROOT = Path(__file__).resolve().parents[1]


def test_flops_of_a_matmul_is_2mkn():
    a, b = jnp.ones((8, 16), jnp.float32), jnp.ones((16, 4), jnp.float32)
    assert measure.flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4


def test_temp_bytes_is_deterministic_and_nonnegative():
    x = jnp.ones((64, 64), jnp.float32)

    def f(x):
        return jnp.sum(jnp.tanh(x @ x) @ x)

    first = measure.temp_bytes(f, x)
    assert first >= 0
    assert measure.temp_bytes(f, x) == first


def test_compare_reports_ordered_spread_and_carries_state():
    def step(s, x):
        return s + x

    out = measure.compare(
        {"add": (step, (jnp.zeros(3), jnp.ones(3)))}, carry=True, rounds=5, warmup=1
    )
    t = out["add"]
    assert 0 < t.p10 <= t.median <= t.p90
    assert t.rounds == 5 and t.calls_per_round >= 1 and t.compile > 0


def test_environment_names_device_and_versions():
    env = measure.environment()
    for key in ("backend", "device", "jax", "jaxlib", "cpu_count", "python"):
        assert env[key]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "experiments").glob("*.py")))
def test_experiment_quick_profile_runs(script, tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
    )
    assert list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_accelerator_script_runs_its_cpu_profile(tmp_path):
    subprocess.run(
        ["bash", str(ROOT / "experiments" / "accelerator_run.sh"), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PY": sys.executable},
    )
    for name in ("mode_cost", "remat_memory", "peers"):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["environment"]["backend"] == jax.default_backend()
    assert (tmp_path / "REPORT.md").exists()
