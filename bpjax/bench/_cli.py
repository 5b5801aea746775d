"""The command line: ``bpjax bench [--quick|--full] [--threads N[,N...]] [--compile]
[--malloc glibc|tuned] [--devices N] [--rounds R] [--budget S] [--out DIR]``.

Every option is checked when it is parsed (an argparse error, exit status 2, before JAX runs
anything), and the output folder is checked to be writable before anything is measured.

Threads: ``--threads N`` restricts the process to N cores (``sched_setaffinity``, which XLA's
thread pool follows) and sets ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``
(PyTorch sizes its pool from them) to N before those libraries load: the command re-executes
itself once to do so. It also unsets ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for
itself, so OpenBLAS picks the kernel for the CPU it runs on. Several counts (``--threads 1,2``)
run one pass per count in a child process each; the table then has one column per count.

Allocator: ``--malloc tuned`` sets :data:`TUNED_MALLOC` for the process (every contender
alike). Under glibc's defaults a block above 32 MiB is ``mmap``ed and unmapped on every
call, so a step whose XLA temporaries exceed that takes a page fault per 4 KiB touched, on
every step (16 000 per step at 4 × 2048); keeping freed memory in one arena removes them.
The default, ``glibc``, leaves the allocator as users have it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpjax.bench._problem import GRIDS, HEADLINE, LR, OURS

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Set on some machines to a generic kernel or a wrong cache size; both slow NumPy's GEMMs.
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PINNED = "BPJAX_BENCH_THREADS"
# glibc malloc tuned for large, short-lived blocks: one arena (a thread arena cannot hold a
# block over 64 MiB), no mmap (served from the heap instead), freed memory kept (no trim),
# and the heap grown 256 MiB at a time.
TUNED_MALLOC = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 32),
    "MALLOC_TOP_PAD_": str(1 << 28),
}
DEFAULTS = {"quick": {"rounds": 11, "budget": 20.0}, "full": {"rounds": 15, "budget": 60.0}}


def cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _thread_counts(available: int):
    def parse(text: str) -> list[int]:
        counts = [_positive_int(part) for part in text.split(",")]
        too_many = [n for n in counts if n > available]
        if too_many:
            raise argparse.ArgumentTypeError(
                f"{too_many[0]} threads but only {available} cores are available to this "
                f"process; choose 1 to {available}"
            )
        return sorted(set(counts))

    return parse


def parser(available: int) -> argparse.ArgumentParser:
    """The ``bpjax bench`` parser for a process allowed ``available`` cores."""
    p = argparse.ArgumentParser(
        prog="bpjax bench",
        description="One MLP training step: bpjax against PyTorch, NumPy, Flax NNX and the "
        "GEMM roofline.",
    )
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="the quick grid (default)")
    profile.add_argument("--full", action="store_true", help="the full grid")
    p.add_argument(
        "--threads",
        type=_thread_counts(available),
        default=None,
        help=f"cores to pin, or a list (1,{available}) for one column each (default: all "
        f"{available}; --full: 1 and all)",
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument(
        "--malloc",
        choices=("glibc", "tuned"),
        default="glibc",
        help="glibc's defaults (as users run), or tuned for large blocks (no page faults per "
        "step; applies to every contender)",
    )
    p.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="bpjax contenders data parallel over N devices (CPU: simulated); N must divide "
        "every batch of the grid",
    )
    p.add_argument(
        "--rounds", type=_positive_int, default=None, help="timing rounds per size, at least"
    )
    p.add_argument(
        "--budget",
        type=_positive_float,
        default=None,
        help="seconds per size to keep adding rounds while rev's ranking is unresolved",
    )
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    # Internal, for the child processes of a thread sweep: where to write the pass's record,
    # and whether it is a scaling pass (rev and the peers only).
    p.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--scaling-pass", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv) -> argparse.Namespace:
    """Parse and check every option; exits with status 2 and a message on a bad one."""
    available = len(cores())
    p = parser(available)
    args = p.parse_args(argv)
    args.profile = "full" if args.full else "quick"
    defaults = DEFAULTS[args.profile]
    args.rounds = args.rounds or defaults["rounds"]
    args.budget = args.budget or defaults["budget"]
    if args.threads is None:
        args.threads = sorted({1, available}) if args.full else [available]
    if args.devices is not None:
        batches = sorted({batch for _, batch in GRIDS[args.profile]})
        if any(batch % args.devices for batch in batches):
            fits = [n for n in range(1, max(batches) + 1) if all(b % n == 0 for b in batches)]
            p.error(
                f"--devices {args.devices}: every batch of the {args.profile} grid "
                f"({', '.join(map(str, batches))}) must split evenly over the devices; "
                f"choose one of {', '.join(map(str, fits))}"
            )
    if args.part is None:
        from bpjax import results

        problem = results.writable_folder_problem(args.out)
        if problem:
            p.error(f"--out {args.out}: {problem}")
    return args


def _without_threads(argv) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--threads":
            skip = True
        elif not a.startswith("--threads="):
            out.append(a)
    return out


def pinned_env(threads: int, malloc: str = "glibc") -> dict:
    """This process's environment for a pass pinned to ``threads`` cores.

    TorchInductor gets an empty cache folder of its own, so ``torch.compile``'s first call
    is a cold compile, as JAX's is (its persistent compilation cache is off by default).
    ``malloc="tuned"`` adds :data:`TUNED_MALLOC`; ``"glibc"`` removes any of its variables.
    """
    env = {k: v for k, v in os.environ.items() if k not in (*BLAS_OVERRIDES, *TUNED_MALLOC)}
    env.update({var: str(threads) for var in THREAD_VARS}, **{PINNED: str(threads)})
    if malloc == "tuned":
        env.update(TUNED_MALLOC)
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bpjax-bench-inductor-")
    return env


def environment_ready(environ, threads: int, malloc: str) -> bool:
    """Whether ``environ`` is already :func:`pinned_env`'s for ``threads`` and ``malloc``
    (then the process runs as it is; otherwise it re-executes itself once)."""
    if environ.get(PINNED) != str(threads):
        return False
    if malloc == "tuned":
        return all(environ.get(k) == v for k, v in TUNED_MALLOC.items())
    return not any(k in environ for k in TUNED_MALLOC)


def reexec_pinned(threads: int, argv, malloc: str = "glibc") -> None:
    """Restrict this process to ``threads`` cores and re-execute it with the variables set.

    Library thread pools size themselves when they load, so the variables must be set before
    NumPy, JAX or PyTorch start; the re-executed process sees them (and the affinity).
    """
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere only the thread variables apply
        os.sched_setaffinity(0, cores()[:threads])
    argv = [*_without_threads(argv), "--threads", str(threads)]
    env = pinned_env(threads, malloc)
    os.execve(sys.executable, [sys.executable, "-m", "bpjax", "bench", *argv], env)


def main(argv=None) -> int:
    """Run ``bpjax bench``; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if len(args.threads) > 1:
        return _sweep(args, argv)
    threads = args.threads[0]
    if not environment_ready(os.environ, threads, args.malloc):
        reexec_pinned(threads, argv, args.malloc)
    start = time.perf_counter()
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    if Path(cache).name.startswith("bpjax-bench-inductor-"):
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    record = run_pass(args, threads, main_pass=not args.scaling_pass)
    if args.part is not None:
        from bpjax import results

        # Read back by the parent process: all or nothing, as every result file.
        results.write_atomic(args.part, json.dumps(record))
        return 0
    finish(args, record, {}, time.perf_counter() - start)
    return 0


def run_pass(args, threads: int, *, main_pass: bool) -> dict:
    """One pass over the grid in this (pinned) process; the record :func:`finish` saves.

    A scaling pass (``main_pass=False``) times only ``rev`` and the peers, with half the
    rounds and half the budget: it answers "who scales", not "who wins".
    """
    import jax

    if args.devices is not None:
        jax.config.update("jax_num_cpu_devices", args.devices)
        if len(jax.devices()) < args.devices:
            print(
                f"bpjax bench: error: --devices {args.devices}: JAX sees only "
                f"{len(jax.devices())} {jax.default_backend()} devices",
                file=sys.stderr,
            )
            sys.exit(2)
    from bpjax.bench import _harness
    from bpjax.bench._compile import first_call_vs_depth

    rounds = args.rounds if main_pass else max(7, args.rounds // 2)
    budget = args.budget if main_pass else args.budget / 2
    print(
        f"bpjax bench --{args.profile}: {threads} threads, at least {rounds} rounds and up to "
        f"{budget:.0f} s per size" + ("" if main_pass else " (rev and the peers)"),
        flush=True,
    )
    record = _harness.run(
        GRIDS[args.profile],
        rounds=rounds,
        budget=budget,
        compile_torch=args.compile,
        devices=args.devices,
        names=None if main_pass else _scaling_set(args),
    )
    record.update(threads=threads, affinity=cores(), blas=_blas_info())
    record["thread_env"] = {v: os.environ.get(v) for v in (*THREAD_VARS, *BLAS_OVERRIDES)}
    record["malloc"] = {"setting": args.malloc} | {v: os.environ.get(v) for v in TUNED_MALLOC}
    if main_pass and args.full:
        record["first_call_vs_depth"] = first_call_vs_depth(compile_torch=args.compile)
    return record


def _scaling_set(args) -> set[str]:
    peers = {"flax nnx", "torch eager", "numpy manual"} | (
        {"torch.compile"} if args.compile else set()
    )
    return {HEADLINE} | peers


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def _sweep(args, argv) -> int:
    """One child process per thread count; the largest count is the main pass."""
    start = time.perf_counter()
    passes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.threads:
            part = Path(tmp) / f"threads-{n}.json"
            child = [*_without_threads(argv), "--threads", str(n), "--part", str(part)]
            if n != max(args.threads):
                child.append("--scaling-pass")
            subprocess.run([sys.executable, "-m", "bpjax", "bench", *child], check=True)
            passes[n] = json.loads(part.read_text())
    finish(args, passes[max(args.threads)], passes, time.perf_counter() - start)
    return 0


def finish(args, record: dict, passes: dict, seconds: float) -> None:
    """Print the table, draw ``peers.png`` and write ``peers.json`` (atomically)."""
    from bpjax import measure, results
    from bpjax.bench import _figures, _records

    threads = record["threads"]
    if passes:
        _records.add_thread_columns(record, passes)
    print(_records.table(record["rows"], record["rankings"], threads=sorted(passes)))
    device = measure.environment()["device"]
    _figures.figure(record, args.out / "peers.png", device)
    summary = _records.summary(record, threads=threads, devices=args.devices or 1)
    summary.append(results.entry("seconds", seconds, unit="s", text="seconds"))
    allocator = record.get("malloc", {}).get("setting", "glibc")
    summary.append(results.entry("allocator", allocator, unit="text", text="allocator (--malloc)"))
    results.save(
        "peers",
        out=args.out,
        profile=args.profile,
        seed=0,
        title="MLP training step vs peers and the GEMM roofline (bpjax bench)",
        summary=summary,
        data={**record, "lr": LR, "ours": list(OURS)},
        figures=["peers.png"],
        notes=" ".join(record["notes"])
        + " Medians of interleaved rounds in the same run; error bars 10th-90th percentile; "
        "first call = trace + compile + one step; verdicts from a paired bootstrap over rounds.",
    )
    print(f"done in {seconds:.0f} s")
