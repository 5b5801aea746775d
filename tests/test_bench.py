"""bpjax bench: the contenders compute the same step, and the harness catches one that does not."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpjax import bench

ROOT = Path(__file__).resolve().parents[1]


def test_step_flops_counts_forward_and_both_backward_gemms():
    # 4-8-3, batch 100: forward 2·100·(4·8 + 8·3); backward twice that, minus the input's dX.
    forward = 2 * 100 * (4 * 8 + 8 * 3)
    assert bench.step_flops((4, 8, 3), 100) == 3 * forward - 2 * 100 * 4 * 8


def test_every_contender_computes_the_reference_gradient():
    params, x, y = bench.problem((6, 16, 16, 4), 32)
    contenders = bench.jax_contenders(params, x, y)
    contenders += [bench.flax_contender(params, x, y), bench.numpy_contender(params, x, y)]
    if importlib.util.find_spec("torch"):
        contenders += bench.torch_contenders(params, x, y, compile_too=False)
    errors = bench.check_agreement(contenders, params, x, y)
    assert set(errors) >= {"rev", "fwd", "manual", "flax nnx", "numpy manual", "rev, not donated"}
    assert max(errors.values()) < 1e-5


def test_a_wrong_contender_is_caught_before_timing():
    params, x, y = bench.problem((6, 16, 4), 32)
    good = bench.numpy_contender(params, x, y)
    wrong = bench.Contender(
        "halved",
        good.step,
        lambda x, y: [(w / 2, b / 2) for w, b in good.grads(x, y)],
    )
    reference = next(c for c in bench.jax_contenders(params, x, y) if c.name == bench.REFERENCE)
    with pytest.raises(AssertionError, match="halved gradients differ"):
        bench.check_agreement([reference, good, wrong], params, x, y)


def test_rows_near_a_relu_kink_are_left_out_of_the_check():
    params, x, _ = bench.problem((3, 4, 2), 8)
    w, b = params[0]
    z = x.astype(np.float64) @ w + b
    b = b.copy()
    b[0] = -z[5, 0]  # row 5's first pre-activation is now 0 (to float32 rounding)
    keep = bench.away_from_kinks([(w, b), params[1]], x)
    assert not keep[5] and keep.sum() >= 6


def test_a_jax_step_is_one_sgd_update():
    params, x, y = bench.problem((5, 7, 3), 16)
    for contender in bench.jax_contenders(params, x, y):
        g = contender.grads(x, y)
        new = contender.step()
        for (w, b), (gw, gb), (nw, nb) in zip(params, g, new, strict=True):
            np.testing.assert_allclose(nw, w - bench.LR * gw, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(nb, b - bench.LR * gb, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_quick_profile_runs_and_writes_peers_json(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bpjax",
            "bench",
            "--quick",
            "--rounds",
            "3",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    record = json.loads((tmp_path / "peers.json").read_text())
    assert record["data"]["threads"] >= 1 and record["data"]["gemm"]["flops_per_second"] > 0
    assert (tmp_path / "peers.png").exists()


def test_a_one_size_run_reports_ratios_and_roofline_fractions():
    record = bench.run([((8, 16, 4), 32)], rounds=2, compile_torch=False, progress=lambda s: None)
    rows = record["rows"]
    names = {r["contender"] for r in rows}
    assert {"rev", bench.REFERENCE, "manual", "flax nnx", "numpy manual"} <= names
    ref = next(r for r in rows if r["contender"] == bench.REFERENCE)
    assert ref["ratio_to_ref"] == 1.0
    best = min(r["median"] for r in rows if r["contender"] not in bench._OURS)
    for r in rows:
        assert r["ratio_to_best_peer"] == pytest.approx(r["median"] / best)
        assert 0 < r["fraction_of_gemm"] < 1
    table = bench.table(rows)
    assert len(table.splitlines()) == len(rows) + 1 and "numpy manual" in table
