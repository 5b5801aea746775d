"""Measurement helpers: FLOPs, compiled memory, copies, timing rounds, the environment, and a
core that imports without the tooling."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpjax
from bpjax import measure

ROOT = Path(__file__).resolve().parents[1]


def test_flops_of_a_matmul_is_2mkn():
    a, b = jnp.ones((8, 16), jnp.float32), jnp.ones((16, 4), jnp.float32)
    assert measure.flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4


def test_temp_bytes_counts_a_held_intermediate_and_is_deterministic():
    x = jnp.ones((64, 64), jnp.float32)

    def f(x):
        h = x @ x  # used twice: XLA keeps it (64 · 64 · 4 bytes) while computing h @ h
        return h @ h

    assert measure.temp_bytes(f, x) == 64 * 64 * 4
    assert measure.temp_bytes(f, x) == measure.temp_bytes(f, x)


def test_compare_reports_ordered_spread_and_carries_state():
    seen = []

    def step(s, x):
        jax.debug.callback(lambda v: seen.append(float(v)), s[0])
        return s + x

    out = measure.compare(
        {"add": (step, (jnp.zeros(3), jnp.ones(3)))}, carry=True, rounds=5, warmup=1
    )
    t = out["add"]
    assert 0 < t.p10 <= t.median <= t.p90
    assert t.rounds == 5 and t.compile > 0
    # Carried: each call starts from the previous call's output (0, 1, 2, ...).
    assert seen[:4] == [0.0, 1.0, 2.0, 3.0] and len(seen) >= 2 + 5 * t.calls_per_round


def test_compare_hands_out_the_rounds_it_summarized():
    samples = {}
    out = measure.compare(
        {"a": (jnp.sin, (jnp.ones(8),)), "b": (jnp.cos, (jnp.ones(8),))},
        rounds=7,
        warmup=1,
        min_round_seconds=0.001,
        samples_out=samples,
    )
    assert set(samples) == {"a", "b"} and all(len(s) == 7 for s in samples.values())
    for name, t in out.items():  # the Timing is these very rounds, summarized
        assert t.median == float(np.median(samples[name]))
        assert t.p10 == float(np.percentile(samples[name], 10))


def test_run_rounds_keeps_rotating_and_summarize_counts_rounds():
    order = []
    steps = {name: (lambda name=name: order.append(name)) for name in "abcd"}
    samples = measure.run_rounds(steps, dict.fromkeys("abcd", 1), rounds=12, first_round=1)
    rounds = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)  # every round runs each once
    assert [r[0] for r in rounds] == list("bcda" * 3)  # the first place rotates
    # No contender always follows the same one (a fixed rotation made it so).
    for name in "abcd":
        before = {r[r.index(name) - 1] for r in rounds if r.index(name) > 0}
        assert len(before) >= 2, (name, before)
    # The same rounds give the same orders.
    again = []
    steps = {name: (lambda name=name: again.append(name)) for name in "abcd"}
    measure.run_rounds(steps, dict.fromkeys("abcd", 1), rounds=12, first_round=1)
    assert again == order
    timings = measure.summarize(samples, dict.fromkeys("abcd", 1))
    assert {t.rounds for t in timings.values()} == {12}


def test_copies_finds_the_copy_of_a_donated_buffer_read_after_its_update():
    def f(w):
        # The sum reads w, and nothing orders it before the product that may overwrite w.
        return w * 2.0, jnp.sum(w, axis=0)

    donated = jax.jit(f, donate_argnums=0).lower(jnp.ones((8, 4), jnp.float32)).compile()
    undonated = jax.jit(f).lower(jnp.ones((8, 4), jnp.float32)).compile()
    assert measure.copies(donated) == ["f32[8,4]"]
    assert measure.copies(undonated) == []


@pytest.mark.skipif(not hasattr(mmap, "MADV_NOHUGEPAGE"), reason="needs Linux madvise")
def test_page_faults_counts_fresh_pages_per_call_and_none_for_reused_memory():
    import numpy as np

    pages = 512

    def fresh():
        m = mmap.mmap(-1, pages * mmap.PAGESIZE)
        m.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per base page, whatever the kernel's THP
        np.frombuffer(m, np.uint8)[:: mmap.PAGESIZE] = 1
        m.close()

    kept = np.zeros(pages * mmap.PAGESIZE, np.uint8)

    def reused():
        kept[:: mmap.PAGESIZE] += 1

    assert pages <= measure.page_faults(fresh) <= pages + 8
    assert measure.page_faults(reused) <= 2


def test_environment_names_device_versions_and_the_cpu():
    env = measure.environment()
    for key in ("backend", "device", "jax", "jaxlib", "cpu_count", "python", "cpu_model"):
        assert env[key]
    info = measure.cpu_info()
    assert env["cpu_isa"] == info["cpu_isa"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next(
            line.split(":", 1)[1].split()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith(("flags", "Features"))
        )
        assert set(info["cpu_isa"]) <= set(flags)
        assert ("avx2" in info["cpu_isa"]) == ("avx2" in flags)


CORE = ["rules", "ref", "rev", "fwd", "manual", "check", "modes", "remat", "models", "grads",
        "train", "data", "measure", "parallel", "steps"]  # fmt: skip


def test_the_core_imports_without_the_tooling():
    # measure records versions without importing flax or optax; no core module pulls in the
    # benchmark, the result files, matplotlib, PyTorch or Flax.
    forbidden = ["matplotlib", "torch", "flax", *(f"bpjax.{m}" for m in bpjax.TOOLING)]
    code = (
        "import sys, bpjax.measure; "
        "print([m for m in ['optax', *"
        + repr(forbidden)
        + "] if m in sys.modules]); "
        + "".join(f"import bpjax.{m}; " for m in CORE)
        + "print([m for m in "
        + repr(forbidden)
        + " if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["[]", "[]"]


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


def test_same_program_sees_through_names_and_tells_programs_apart():
    from bpjax import modes

    def f(x):
        return jnp.tanh(x[1:] * x[:-1])

    x = jnp.linspace(0.1, 1.0, 8)
    # jacobian_fn(mode="fwd") and jax.jacfwd compile to one program under other names.
    assert measure.same_program(modes.jacobian_fn(f, x, mode="fwd"), jax.jacfwd(f), x)
    assert not measure.same_program(jax.jacfwd(f), jax.jacrev(f), x)
    signature = measure.program_signature(jax.jacfwd(f), x)
    assert signature and not any("metadata" in line or "jacfwd" in line for line in signature)


def test_paired_seconds_prices_by_the_per_round_ratio_to_the_reference(monkeypatch):
    from bpjax.measure import _timing

    # Round conditions swing 2x; b is 1.5x a in 4 of 5 rounds (half in the last), c 0.5x.
    # Pairing gives b = median(a) x 1.5 = 3; b's own median would be 1.5.
    a = [1.0, 2.0, 1.0, 2.0, 2.0]
    times = {"a": a, "b": [1.5, 3.0, 1.5, 3.0, 1.5], "c": [0.5 * t for t in a]}
    monkeypatch.setattr(_timing, "compile_all", lambda fns, *a: dict.fromkeys(fns, lambda *b: 0))
    monkeypatch.setattr(_timing, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
    monkeypatch.setattr(
        _timing, "run_rounds", lambda steps, calls, *, rounds: {k: times[k] for k in steps}
    )
    got = measure.paired_seconds(dict.fromkeys("abc"), 0.0, rounds=5, min_round_seconds=0)
    assert got == pytest.approx({"a": 2.0, "b": 3.0, "c": 1.0})  # a's median is 2.0
    got = measure.paired_seconds(
        dict.fromkeys("abc"), 0.0, rounds=5, min_round_seconds=0, reference="c"
    )
    assert got == pytest.approx({"a": 2.0, "b": 3.0, "c": 1.0})


def test_paired_seconds_stops_early_only_when_one_program_leads_by_the_factor(monkeypatch):
    from bpjax.measure import _timing

    def fake(times):
        ran = []

        def run_rounds(steps, calls, *, rounds, first_round=0):
            ran.append(first_round)
            return {k: [times[k][first_round]] for k in steps}

        monkeypatch.setattr(_timing, "compile_all", lambda fns, *a: dict.fromkeys(fns, None))
        monkeypatch.setattr(_timing, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
        monkeypatch.setattr(_timing, "run_rounds", run_rounds)
        return ran

    # b leads by 2x in every round: settled after the minimum of 3 rounds.
    ran = fake({"a": [2.0] * 9, "b": [1.0] * 9})
    got = measure.paired_seconds(
        dict.fromkeys("ab"), 0.0, rounds=9, min_round_seconds=0, settle=1.1
    )
    assert ran == [0, 1, 2] and got == pytest.approx({"a": 2.0, "b": 1.0})
    # Within the factor (1.05x) in every round: a tie at 1.1, settled after 2 * 3 - 1 rounds.
    ran = fake({"a": [1.05] * 9, "b": [1.0] * 9})
    measure.paired_seconds(dict.fromkeys("ab"), 0.0, rounds=9, min_round_seconds=0, settle=1.1)
    assert ran == [0, 1, 2, 3, 4]
    # Neither: 1.05x in most rounds, 1.5x in some: every round runs.
    ran = fake({"a": [1.05, 1.5] * 4 + [1.05], "b": [1.0] * 9})
    measure.paired_seconds(dict.fromkeys("ab"), 0.0, rounds=9, min_round_seconds=0, settle=1.1)
    assert ran == list(range(9))
    # Ahead by 2x except in round 2, where a won: the lead must hold in every round so
    # far, so one lost round keeps it running to the end.
    ran = fake({"a": [2.0, 2.0, 0.5] + [2.0] * 6, "b": [1.0] * 9})
    measure.paired_seconds(dict.fromkeys("ab"), 0.0, rounds=9, min_round_seconds=0, settle=1.1)
    assert ran == list(range(9))
