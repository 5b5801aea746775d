"""bpjax bench: the contenders compute the same step, the harness catches one that does not,
every option is checked before anything runs, and the verdicts follow from the samples."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpjax import bench, measure
from bpjax.bench import _harness, _records, _stability

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_step_flops_counts_forward_and_both_backward_gemms():
    # 4-8-3, batch 100: forward 2·100·(4·8 + 8·3); backward twice that, minus the input's dX.
    forward = 2 * 100 * (4 * 8 + 8 * 3)
    assert bench.step_flops((4, 8, 3), 100) == 3 * forward - 2 * 100 * 4 * 8


def test_sizes_are_named_as_the_readme_names_them():
    assert bench.size_label((1024,) * 9 + (10,), 512) == "8 × 1024 b512"
    assert bench.size_label((2048,) * 5 + (10,), 1024) == "4 × 2048 b1024"
    assert bench.size_label((784, 512, 512, 10), 256) == "784-512-512-10 b256"
    assert bench.size_label((784, 256, 10), 128) == "784-256-10 b128"


@pytest.fixture(scope="module")
def small():
    return bench.problem((6, 16, 16, 4), 32)


def test_every_bpjax_flax_and_numpy_contender_computes_the_reference_gradient(small):
    params, x, y = small
    contenders = bench.jax_contenders(params, x, y)
    contenders += [bench.flax_contender(params, x, y), bench.numpy_contender(params, x, y)]
    errors = bench.check_agreement(contenders, params, x, y)
    assert set(errors) == {*bench.OURS, "flax nnx", "numpy manual"}
    assert max(errors.values()) < 1e-5


def test_torch_contenders_compute_the_reference_gradient(small):
    pytest.importorskip("torch", reason="PyTorch not installed: torch contenders not checked")
    params, x, y = small
    reference = bench.jax_contenders(params, x, y, names={bench.REFERENCE})
    torch_ones = bench.torch_contenders(params, x, y, compile_too=False)
    errors = bench.check_agreement(reference + torch_ones, params, x, y)
    assert set(errors) == {bench.REFERENCE, "torch eager"} and max(errors.values()) < 1e-5


def test_torch_runs_where_jax_runs_and_host_peers_are_not_ranked(small, monkeypatch):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: torch device not checked")

    # On this CPU-only machine both run on the CPU, and every peer is ranked.
    assert bench.torch_device() == "cpu"
    params, x, y = small
    ours = bench.jax_contenders(params, x, y, names={bench.HEADLINE})
    peers = bench.torch_contenders(params, x, y, compile_too=False)
    peers.append(bench.numpy_contender(params, x, y))
    assert [c.device for c in peers] == ["cpu", "cpu"]
    assert bench.host_peers(ours + peers, "cpu") == set()
    # Where JAX runs on a GPU, PyTorch follows it when it has CUDA...
    monkeypatch.setattr("jax.default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.torch_device() == "cuda"
    # ... and a peer left on the host is shown, but the best peer is one on the same chip.
    for c in ours:
        c.device = "gpu"
    peers[0].device = "cuda"
    assert bench.host_peers(ours + peers, "gpu") == {"numpy manual"}
    contenders = ours + peers
    medians = dict(zip([c.name for c in contenders], (2e-3, 3e-3, 1e-3), strict=True))
    timings = measure.summarize(
        {name: [t] * 5 for name, t in medians.items()}, dict.fromkeys(medians, 1)
    )
    errors = dict.fromkeys(medians, 0.0)
    roof = {"flops_per_second": 1e12}
    rows = _records.size_rows("s", (6, 16, 16, 4), 32, contenders, timings, errors, roof)
    assert {r["best_peer"] for r in rows} == {"numpy manual"}  # a CPU run ranks everyone
    rows = _records.size_rows(
        "s", (6, 16, 16, 4), 32, contenders, timings, errors, roof, platform="gpu"
    )
    by_name = {r["contender"]: r for r in rows}
    assert {r["best_peer"] for r in rows} == {"torch eager"}
    assert by_name["numpy manual"]["host"] and "host" not in by_name["torch eager"]
    assert by_name[bench.HEADLINE]["ratio_to_best_peer"] == pytest.approx(2 / 3)
    assert "numpy manual (host)" in _records.table(rows)


def test_a_wrong_contender_is_caught_before_timing(small):
    params, x, y = small
    good = bench.numpy_contender(params, x, y)
    wrong = bench.Contender(
        "halved", good.step, lambda x, y: [(w / 2, b / 2) for w, b in good.grads(x, y)]
    )
    reference = bench.jax_contenders(params, x, y, names={bench.REFERENCE})
    with pytest.raises(AssertionError, match="halved gradients differ"):
        bench.check_agreement([*reference, good, wrong], params, x, y)


def test_on_an_accelerator_a_failed_check_names_the_matmul_precision(small, monkeypatch):
    import jax

    from bpjax.bench import _agreement

    params, x, y = small
    good = bench.numpy_contender(params, x, y)
    wrong = bench.Contender(
        "halved", good.step, lambda x, y: [(w / 2, b / 2) for w, b in good.grads(x, y)]
    )
    reference = bench.jax_contenders(params, x, y, names={bench.REFERENCE})
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(AssertionError, match="JAX_DEFAULT_MATMUL_PRECISION=highest"):
        bench.check_agreement([*reference, wrong], params, x, y)
    # Where the precision is set already, the hint would not help: not given.
    with jax.default_matmul_precision("highest"), pytest.raises(AssertionError) as err:
        bench.check_agreement([*reference, wrong], params, x, y)
    assert "JAX_DEFAULT_MATMUL_PRECISION" not in str(err.value)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert _agreement._precision_hint() == ""  # on the CPU: never


def test_rows_near_a_relu_kink_are_left_out_of_the_check():
    params, x, _ = bench.problem((3, 4, 2), 8)
    w, b = params[0]
    z = x.astype(np.float64) @ w + b
    b = b.copy()
    b[0] = -z[5, 0]  # row 5's first pre-activation is now 0 (to float32 rounding)
    keep = bench.away_from_kinks([(w, b), params[1]], x)
    assert keep.tolist() == [True] * 5 + [False] + [True] * 2


def test_a_jax_step_is_one_sgd_update_from_the_initial_parameters(small):
    params, x, y = small
    for contender in bench.jax_contenders(params, x, y):
        g = contender.grads(x, y)
        new = contender.step()
        for (w, b), (gw, gb), (nw, nb) in zip(params, g, new, strict=True):
            np.testing.assert_allclose(nw, w - bench.LR * gw, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(nb, b - bench.LR * gb, rtol=1e-5, atol=1e-6)
        assert contender.first_call >= contender.compile > 0


# --- the verdicts --------------------------------------------------------------------------


def test_break_even_is_the_first_step_from_which_ours_stays_ahead():
    # ours: 2 s first call, then 1 ms; peer: 0 s, then 2 ms. Totals meet at n = 2001.
    n = bench.break_even(2.0, 1e-3, 0.0, 2e-3)
    assert n == 2001
    assert 2.0 + (n - 1) * 1e-3 <= (n - 1) * 2e-3
    assert 2.0 + (n - 2) * 1e-3 > (n - 2) * 2e-3
    assert bench.break_even(0.1, 1e-3, 0.5, 2e-3) == 1  # ahead from the first step
    assert bench.break_even(0.1, 3e-3, 0.5, 2e-3) is None  # slower per step: never


def samples(rng, **medians):
    # Paired rounds: every contender shares each round's slowdown, plus its own 1% noise.
    shared = 1 + rng.exponential(0.2, size=41)
    return {k: list(m * shared * (1 + 0.01 * rng.standard_normal(41))) for k, m in medians.items()}


def test_ranking_resolves_clear_leads_and_calls_close_runs_a_tie():
    rng = np.random.default_rng(0)
    ahead = bench.ranking(samples(rng, rev=0.9, a=1.0, b=1.2), "rev", ["a", "b"])
    assert ahead["verdict"] == "ahead" and ahead["best_peer"] == "a"
    assert ahead["ci"][1] < 1 and ahead["win_fraction"] > 0.9
    behind = bench.ranking(samples(rng, rev=1.1, a=1.0), "rev", ["a"])
    assert behind["verdict"] == "behind" and behind["ci"][0] > 1
    few = {k: v[:4] for k, v in samples(rng, rev=0.5, a=1.0).items()}
    assert bench.ranking(few, "rev", ["a"])["verdict"] == "unresolved"  # too few rounds
    # Per-round ratios alternate 0.99 and 1.01: the interval straddles 1, well within ±3%.
    peer = samples(rng, a=1.0)["a"]
    rev = [t * (0.99 if i % 2 else 1.01) for i, t in enumerate(peer)]
    tie = bench.ranking({"rev": rev, "a": peer}, "rev", ["a"])
    assert tie["verdict"] == "tie" and 0.97 <= tie["ci"][0] <= 1 <= tie["ci"][1] <= 1.03
    unsure = bench.ranking({"rev": [t * (0.9 if i % 2 else 1.1) for i, t in enumerate(peer)],
                            "a": peer}, "rev", ["a"])  # fmt: skip
    assert unsure["verdict"] == "unresolved"  # ±10% each round: more rounds needed


def test_a_ranking_in_words_names_its_rounds_interval_and_verdict():
    v = {"ratio": 0.99, "ci": [0.987, 1.004], "rounds": 21, "verdict": "tie"}
    assert _stability.per_round(v) == "per round (paired, 21 rounds, 95% bootstrap 0.99-1.00): tie"


def test_unresolved_rankings_get_more_rounds_until_resolved(monkeypatch):
    rng = np.random.default_rng(1)
    calls = []

    def fake_rounds(steps, calls_per_round, *, rounds, first_round, **_):
        calls.append(rounds)
        # rev 5% ahead: hidden by 30% noise in the first rounds, clear in the later ones.
        noise = 0.3 if first_round == 0 else 0.002
        return {
            n: list((0.95 if n == "rev" else 1.0) * (1 + noise * rng.standard_normal(rounds)))
            for n in steps
        }

    monkeypatch.setattr(measure, "run_rounds", fake_rounds)
    monkeypatch.setattr(measure, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
    contenders = [bench.Contender(n, lambda: None, None) for n in ("rev", "torch eager")]
    got, _, verdict = bench.time_until_resolved(contenders, rounds=6, budget=60)
    assert calls[0] == 6 and len(calls) > 1 and verdict["verdict"] == "ahead"
    assert len(got["rev"]) == sum(calls) == verdict["rounds"]
    calls.clear()
    monkeypatch.setattr(_stability.time, "perf_counter", iter(range(0, 10**6, 100)).__next__)
    _, _, verdict = bench.time_until_resolved(contenders, rounds=6, budget=60)
    assert calls == [6] and verdict["rounds"] == 6  # budget spent: no rounds added


def test_on_an_accelerator_the_verdict_is_against_peers_on_the_same_chip(monkeypatch):
    # NumPy on the host CPU runs fastest here, PyTorch on the GPU slowest: the verdict on a
    # GPU run must be rev against PyTorch, not against the host.
    speed = {"rev": 0.95, "torch eager": 1.0, "numpy manual": 0.5}
    monkeypatch.setattr(
        measure,
        "run_rounds",
        lambda steps, calls_per_round, *, rounds, **_: {n: [speed[n]] * rounds for n in steps},
    )
    monkeypatch.setattr(measure, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
    monkeypatch.setattr("jax.default_backend", lambda: "gpu")
    contenders = [
        bench.Contender("rev", lambda: None, None, device="gpu"),
        bench.Contender("torch eager", lambda: None, None, device="cuda"),
        bench.Contender("numpy manual", lambda: None, None),
    ]
    _, _, verdict = bench.time_until_resolved(contenders, rounds=6, budget=60)
    assert verdict["best_peer"] == "torch eager" and verdict["verdict"] == "ahead"


def test_a_one_size_run_reports_ratios_first_calls_and_roofline_fractions(monkeypatch):
    # The roofline's own size does not matter here, only that every row is measured against
    # it: a 256² GEMM instead of the 2048² one saves seconds.
    small = functools.partial(_harness.gemm_rate, 256, rounds=3)
    monkeypatch.setattr(_harness, "gemm_rate", small)
    record = bench.run(
        [((8, 16, 4), 32)], rounds=2, budget=0.1, compile_torch=False, progress=lambda s: None
    )
    rows = record["rows"]
    names = {r["contender"] for r in rows}
    assert {*bench.OURS, "flax nnx", "numpy manual"} <= names
    by = {r["contender"]: r for r in rows}
    assert by[bench.REFERENCE]["ratio_to_ref"] == 1.0
    best = min((r for r in rows if r["contender"] not in bench.OURS), key=lambda r: r["median"])
    for r in rows:
        assert r["ratio_to_best_peer"] == pytest.approx(r["median"] / best["median"])
        assert r["best_peer"] == best["contender"]
        assert r["fraction_of_gemm"] == pytest.approx(
            r["achieved_flops_per_second"] / record["gemm"]["flops_per_second"]
        )
        assert r["first_call"] > 0
    for r in rows:
        if r["contender"] not in bench.OURS:
            assert r["rev_ahead_after_steps"] == bench.break_even(
                by["rev"]["first_call"], by["rev"]["median"], r["first_call"], r["median"]
            )
    verdict = record["rankings"]["8-16-4 b32"]
    assert verdict["best_peer"] == best["contender"] and verdict["rounds"] >= 2
    table = bench.table(rows, record["rankings"])
    assert len(table.splitlines()) == len(rows) + 2 and "numpy manual" in table
    readme = bench.readme_table(record).splitlines()
    assert len(readme) == 3 and readme[2].startswith(
        f"| 8-16-4 b32 | {by['rev']['median'] * 1e3:.3g} |"
    )
    assert f"({best['contender']})" in readme[2] and verdict["verdict"] in readme[2]


def test_thread_passes_become_columns():
    rows = [{"size": "s", "contender": "rev", "median": 2.0}]
    passes = {1: {"rows": [{"size": "s", "contender": "rev", "median": 3.0}], "gemm": {},
                  "rankings": {}},
              2: {"rows": rows, "gemm": {}, "rankings": {}}}  # fmt: skip
    record = {"rows": [dict(rows[0])], "rankings": {}}
    _records.add_thread_columns(record, passes)
    assert record["rows"][0]["median_at_threads"] == {"1": 3.0, "2": 2.0}


def test_figure_labels_do_not_overlap():
    import matplotlib.pyplot as plt

    sizes = [bench.size_label(s, b) for s, b in bench.GRIDS["full"]]
    rows, rankings = [], {}
    for s in sizes:
        for name, m in (("rev", 1.0), ("torch eager", 1.1), ("numpy manual", 1.2)):
            row = {"size": s, "contender": name, "median": m, "p10": m, "p90": m}
            rows.append({**row, "ratio_to_best_peer": m / 1.1, "rev_ahead_after_steps": 12345})
        rankings[s] = {"verdict": "unresolved", "ci": [0.95, 1.04], "best_peer": "torch eager"}
    fig = bench.draw({"rows": rows, "rankings": rankings}, "cpu")
    fig.canvas.draw()
    labels = fig.axes[0].get_xticklabels()
    assert [t.get_text().splitlines()[0] for t in labels] == sizes
    assert "8 × 1024 b512" in sizes and "ahead from step 12345" in labels[0].get_text()
    boxes = [t.get_window_extent() for t in labels]
    for left, right in zip(boxes[:-1], boxes[1:], strict=True):
        assert left.x1 < right.x0, "x-axis labels run into each other"
    plt.close(fig)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "-1"], "--threads: must be at least 1"),
        (["--threads", "0"], "--threads: must be at least 1"),
        (["--threads", str(CORES + 97)], f"only {CORES} cores are available"),
        (["--threads", "two"], "--threads: expected a whole number"),
        (["--rounds", "0"], "--rounds: must be at least 1"),
        (["--rounds", "-1"], "--rounds: must be at least 1"),
        (["--devices", "0"], "--devices: must be at least 1"),
        (["--devices", "3"], "--devices 3: every batch of the quick grid"),
        (["--full", "--devices", "8"], "choose one of 1, 2, 4"),
        (["--budget", "-5"], "--budget: must be a positive number"),
        (["--malloc", "jemalloc"], "--malloc: invalid choice: 'jemalloc'"),
    ],
)
def test_bad_options_are_refused_at_parse_time(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_out_is_refused_before_anything_is_measured(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--out", str(blocker / "results")])
    assert exit_.value.code == 2
    assert f"--out {blocker / 'results'}: cannot write there" in capsys.readouterr().err


def test_good_options_parse_to_the_profile_defaults(tmp_path):
    quick = bench.parse_args(["--out", str(tmp_path)])
    assert (quick.profile, quick.threads, quick.rounds) == ("quick", [CORES], 11)
    full = bench.parse_args(["--full", "--threads", f"{CORES},1", "--out", str(tmp_path)])
    assert full.threads == sorted({1, CORES}) and full.devices is None


def test_malloc_tuned_sets_the_allocator_for_every_contender_and_glibc_clears_it(monkeypatch):
    from bpjax.bench import _cli

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user's own setting
    tuned = _cli.pinned_env(1, "tuned")
    assert {k: tuned[k] for k in _cli.TUNED_MALLOC} == _cli.TUNED_MALLOC
    assert tuned["MALLOC_MMAP_MAX_"] == "0" and tuned[_cli.PINNED] == "1"
    plain = _cli.pinned_env(1, "glibc")
    assert not any(k in plain for k in _cli.TUNED_MALLOC)
    assert bench.parse_args(["--malloc", "tuned"]).malloc == "tuned"
    assert bench.parse_args([]).malloc == "glibc"
    # The re-executed process sees its own environment as ready, and runs; anything else
    # (another core count, the other allocator setting, a partial one) re-executes.
    assert _cli.environment_ready(tuned, 1, "tuned") and _cli.environment_ready(plain, 1, "glibc")
    assert not _cli.environment_ready(tuned, 1, "glibc")
    assert not _cli.environment_ready(plain, 1, "tuned")
    assert not _cli.environment_ready(plain, 2, "glibc")
    partial = {**plain, "MALLOC_ARENA_MAX": "1"}
    assert not _cli.environment_ready(partial, 1, "tuned")
    assert not _cli.environment_ready(partial, 1, "glibc")


def test_the_command_exits_with_status_2_on_a_bad_option():
    # On the code before the checks, --threads 0 meant "all cores" and ran the whole bench.
    done = subprocess.run(
        [sys.executable, "-m", "bpjax", "bench", "--threads", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--threads: must be at least 1" in done.stderr


@pytest.mark.slow
def test_quick_profile_runs_and_writes_peers_json(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "bpjax", "bench", "--rounds", "3", "--budget", "1",
         "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    record = json.loads((tmp_path / "peers.json").read_text())
    data = record["data"]
    assert data["threads"] == CORES and data["thread_env"]["OMP_NUM_THREADS"] == str(CORES)
    sizes = {bench.size_label(s, b) for s, b in bench.GRIDS["quick"]}
    assert {r["size"] for r in data["rows"]} == sizes == set(data["rankings"])
    expected = {*bench.OURS, "flax nnx", "numpy manual"}
    if importlib.util.find_spec("torch"):
        expected.add("torch eager")
    for s in sizes:
        assert {r["contender"] for r in data["rows"] if r["size"] == s} == expected
    assert record["environment"]["cpu_isa"] == measure.cpu_info()["cpu_isa"]
    assert (tmp_path / "peers.png").exists()


def test_thread_pass_part_files_are_written_atomically(monkeypatch, tmp_path):
    from bpjax import results
    from bpjax.bench import _cli

    written = []
    monkeypatch.setattr(results, "write_atomic", lambda path, text: written.append((path, text)))
    monkeypatch.setattr(_cli, "environment_ready", lambda *a: True)
    monkeypatch.setattr(_cli, "run_pass", lambda args, threads, main_pass: {"threads": threads})
    part = tmp_path / "threads-1.json"
    assert _cli.main(["--threads", "1", "--part", str(part)]) == 0
    assert written == [(part, '{"threads": 1}')]


def _weight_gradient_experiment():
    path = Path(__file__).resolve().parents[1] / "experiments" / "weight_gradient.py"
    spec = importlib.util.spec_from_file_location("weight_gradient", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weight_gradient_gemm_routing_is_what_the_bench_page_shows():
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "cpu":
        pytest.skip("XLA:CPU's kernel routing")
    # The bench page's HLO: on XLA:CPU the forward and input-gradient GEMMs are YNNPACK
    # dots, x^T g is XLA's dot emitter, and a materialised x^T makes it a YNNPACK dot. A
    # JAX release that routes them differently fails here, so the page gets re-measured.
    wg = _weight_gradient_experiment()
    x, W, g = jnp.ones((128, 784)), jnp.ones((784, 256)), jnp.ones((128, 256))
    kernels = {
        name: wg.kernel(jax.jit(fn).lower(x, W, g).compile().as_text())
        for name, fn in wg.gemm_programs().items()
    }
    assert kernels == {
        "z = x W": "YNNPACK",
        "dx = δ Wᵀ": "YNNPACK",
        "dW = xᵀ δ": "XLA dot emitter",
        "dW via xᵀ copy": "YNNPACK",
    }
    assert wg.layer_shapes(wg.GRID) == [
        (128, 784, 256),
        (256, 784, 512),
        (256, 512, 512),
        (512, 1024, 1024),
    ]
