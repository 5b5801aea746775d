"""The run: the GEMM roofline, then per size: build every contender (timing its first call),
check its gradients, and time the steady state in interleaved rounds until the ranking of
``rev`` against the best peer is resolved or the size's time budget is spent."""

from __future__ import annotations

import importlib.util

from bpjax.bench import _records
from bpjax.bench._agreement import check_agreement
from bpjax.bench._bpjax import jax_contenders
from bpjax.bench._peers import flax_contender, numpy_contender, torch_contenders
from bpjax.bench._problem import HEADLINE, OURS, REFERENCE, host_peers, problem, size_label
from bpjax.bench._stability import ranking, rounds_until_resolved

# Interleaving settings (see bpjax.measure.time_steps): a pause between runtimes so spinning
# thread pools go quiet, and 50 ms of untimed steps before each timed block.
SETTLE_SECONDS = 0.1
REWARM_SECONDS = 0.05
MIN_ROUND_SECONDS = 0.02


def gemm_rate(n: int | None = None, rounds: int = 11) -> dict:
    """FLOP/s of one ``n × n`` float32 matmul under ``jax.jit`` on the default device
    (the package's one GEMM timing, :func:`bpjax.modes._rates.gemm_timing`)."""
    import jax

    from bpjax.modes._rates import gemm_timing

    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    t = gemm_timing(n, rounds=rounds, warmup=2)
    return {"n": n, "seconds": t.median, "flops_per_second": 2 * n**3 / t.median}


def have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def warm_runtimes(*, compile_torch: bool = False) -> None:
    """Build and step every kind of contender once on a toy problem, so that a contender's
    first call measures its own tracing and compiling rather than a library's start-up
    (imports, thread pools, JAX's and TorchDynamo's machinery), which a user pays once per
    process, not once per model."""
    for c in build(*problem((4, 8, 3), 16), compile_torch=compile_torch):
        c.step()


def build(params, x, y, *, compile_torch: bool, devices=None, names=None) -> list:
    """Every contender for one problem (``names``: keep only those, plus the reference)."""
    keep = None if names is None else {*names, REFERENCE}
    out = jax_contenders(params, x, y, devices=devices, names=keep)
    if keep is None or "flax nnx" in keep:
        out.append(flax_contender(params, x, y))
    if have_torch() and (keep is None or {"torch eager", "torch.compile"} & keep):
        out += torch_contenders(params, x, y, compile_too=compile_torch)
    if keep is None or "numpy manual" in keep:
        out.append(numpy_contender(params, x, y))
    return out


def time_until_resolved(contenders, *, rounds: int, budget: float, max_rounds: int = 101):
    """Interleaved rounds: ``rounds`` first, then more while :func:`ranking` says
    ``"unresolved"`` and fewer than ``budget`` seconds have passed.

    Returns:
      ``(samples, calls, verdict)``: per-round seconds by name, calls per round by name, and
      the last :func:`ranking` (``None`` without ``rev`` or without a peer).
    """
    from bpjax import measure

    steps = {c.name: c.step for c in contenders}
    groups = {c.name: c.runtime for c in contenders}
    import jax

    host = host_peers(contenders, jax.default_backend())
    peers = [c.name for c in contenders if c.name not in OURS and c.name not in host]
    calls = measure.calibrate(steps, min_round_seconds=MIN_ROUND_SECONDS)
    for c in contenders:
        c.faults_per_step = measure.page_faults(c.step)

    def judge(samples):
        if HEADLINE not in steps or not peers:
            return None, True
        verdict = ranking(samples, HEADLINE, peers)
        return verdict, verdict["verdict"] != "unresolved"

    samples, verdict = rounds_until_resolved(
        steps,
        calls,
        judge,
        rounds=rounds,
        budget=budget,
        max_rounds=max_rounds,
        groups=groups,
        settle_seconds=SETTLE_SECONDS,
        rewarm_seconds=REWARM_SECONDS,
    )
    return samples, calls, verdict


def run(
    grid,
    *,
    rounds: int,
    budget: float,
    compile_torch: bool,
    devices: int | None = None,
    names=None,
    progress=print,
) -> dict:
    """Time every contender at every size; returns the record written to ``peers.json``.

    Args:
      grid: ``[(sizes, batch), ...]``.
      rounds: rounds per size before the ranking is first checked.
      budget: seconds per size after which no rounds are added for an unresolved ranking.
      compile_torch: also build ``torch.compile``.
      devices: bpjax's contenders data parallel over this many devices.
      names: time only these contenders (the reference is always built, for the check).
      progress: called with each size's table.
    """
    import jax

    from bpjax import measure

    roof = gemm_rate()
    progress(f"GEMM roofline: {roof['flops_per_second'] / 1e9:.1f} GFLOP/s ({roof['n']}² float32)")
    warm_runtimes(compile_torch=compile_torch)
    rows, rankings = [], {}
    for sizes, batch in grid:
        label = size_label(sizes, batch)
        params, x, y = problem(sizes, batch)
        contenders = build(params, x, y, compile_torch=compile_torch, devices=devices, names=names)
        errors = check_agreement(contenders, params, x, y)
        if names is not None:
            contenders = [c for c in contenders if c.name in names]
        samples, calls, verdict = time_until_resolved(contenders, rounds=rounds, budget=budget)
        timings = measure.summarize(samples, calls)
        size_rows = _records.size_rows(
            label, sizes, batch, contenders, timings, errors, roof, platform=jax.default_backend()
        )
        rows += size_rows
        rankings[label] = verdict
        progress(_records.table(size_rows, {label: verdict}))
    # The roofline is the better of two measurements, before and after the grid, so a slow
    # moment on a shared machine does not inflate every fraction.
    again = gemm_rate()
    roof = {**max(roof, again, key=lambda g: g["flops_per_second"]), "before": roof, "after": again}
    _records.refit_roofline(rows, roof)
    notes = [] if have_torch() else ["PyTorch not installed: torch contenders skipped"]
    host = sorted({r["contender"] for r in rows if r.get("host")})
    if host:
        notes.append(
            f"{', '.join(host)} ran on the host CPU while JAX ran on {jax.default_backend()}: "
            "shown, not ranked as peers"
        )
    return {"gemm": roof, "rows": rows, "rankings": rankings, "notes": notes}
