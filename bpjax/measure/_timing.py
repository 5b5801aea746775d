"""Timing: compile apart, warm up, ``block_until_ready``, interleaved rounds, median and
spread."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-call wall time of a compiled function, in seconds.

    Attributes:
      median: median over rounds of the mean call time within a round.
      p10: the 10th percentile over rounds (the spread's lower end).
      p90: the 90th percentile over rounds (the spread's upper end).
      rounds: how many rounds; ``calls_per_round`` calls each.
      compile: seconds spent lowering and compiling (not included above).
    """

    median: float
    p10: float
    p90: float
    rounds: int
    calls_per_round: int
    compile: float

    def as_dict(self) -> dict:
        """The fields as a plain dict (for a JSON record)."""
        return dataclasses.asdict(self)


def _block(tree):
    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def compile_fn(fn: Callable, *args, donate_argnums=()) -> tuple[Callable, float]:
    """``jax.jit(fn)`` lowered and compiled for ``args``; returns ``(compiled, seconds)``.

    A ``fn`` with a ``compiler_options`` attribute (a :class:`bpjax.modes.JacobianFn`) is
    compiled with those options, as it compiles itself when called.
    """
    start = time.perf_counter()
    options = getattr(fn, "compiler_options", None)
    jitted = jax.jit(fn, donate_argnums=donate_argnums, compiler_options=options)
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def compile_all(fns: dict[str, Callable], *args) -> dict[str, Callable]:
    """name → ``jax.jit(fn)`` compiled for ``args``, for several functions at once.

    Lowered one by one (tracing holds Python's lock), compiled side by side on a thread
    per core (XLA's compiler releases the lock), so deciding among a few candidate programs
    costs about as much wall time as compiling the slowest of them.
    """
    import concurrent.futures
    import os

    lowered = {k: jax.jit(fn).lower(*args) for k, fn in fns.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {k: pool.submit(low.compile) for k, low in lowered.items()}
        return {k: f.result() for k, f in futures.items()}


def paired_seconds(
    programs: dict[str, Callable],
    *args,
    rounds: int,
    min_round_seconds: float,
    reference: str | None = None,
    compiled_out: dict | None = None,
    settle: float | None = None,
    min_rounds: int = 3,
) -> dict[str, float]:
    """Seconds per call of each program, for choosing among a few candidates.

    Compiled side by side (:func:`compile_all`), then timed in interleaved rounds; each
    program's time is ``reference``'s median (default: the first program) times the median
    of its per-round ratio to ``reference``, so what a round's conditions (a busy
    neighbour) did to all of them cancels. ``compiled_out``: a dict that receives name →
    compiled program, so the chosen one need not be compiled again.

    ``settle``: stop before ``rounds`` once the comparison is settled at that factor: after
    at least ``min_rounds`` rounds, one program beat every other by more than the factor
    in every round so far; or, after ``2 * min_rounds - 1`` rounds, every program stayed
    within the factor of ``reference`` in every round (a tie at that factor, which more
    rounds would only confirm). Anything in between gets every round.
    """
    compiled = compile_all(programs, *args)
    if compiled_out is not None:
        compiled_out.update(compiled)
    steps = {k: (lambda c=c: c(*args)) for k, c in compiled.items()}
    calls = calibrate(steps, min_round_seconds=min_round_seconds, warmup=2)
    if settle is None:
        samples = run_rounds(steps, calls, rounds=rounds)
    else:
        samples = {k: [] for k in steps}
        for r in range(rounds):
            for k, s in run_rounds(steps, calls, rounds=1, first_round=r).items():
                samples[k] += s
            if _settled(samples, settle, reference or next(iter(samples)), min_rounds):
                break
    ref = np.asarray(samples[reference or next(iter(samples))])
    base = float(np.median(ref))
    return {k: base * float(np.median(np.asarray(v) / ref)) for k, v in samples.items()}


def _settled(samples: dict[str, list[float]], factor: float, reference: str, least: int) -> bool:
    """Whether one program led every other by more than ``factor`` in each of at least
    ``least`` rounds, or all stayed within ``factor`` of ``reference`` in each of at least
    ``2 * least - 1`` rounds (see :func:`paired_seconds`)."""
    names = list(samples)
    rounds = np.asarray([samples[k] for k in names])  # programs x rounds
    done = rounds.shape[1]
    leader = int(np.argmin(np.median(rounds, axis=1)))
    others = np.delete(rounds, leader, axis=0)
    if done >= least and np.all(others > factor * rounds[leader]):
        return True
    ratios = rounds / rounds[names.index(reference)]
    return bool(done >= 2 * least - 1 and np.all((ratios < factor) & (ratios > 1 / factor)))


def _percentile(samples, q):
    return float(np.percentile(np.asarray(samples), q))


def compare(
    contenders: dict[str, tuple[Callable, tuple]],
    *,
    carry: bool = False,
    rounds: int = 21,
    min_round_seconds: float = 0.02,
    warmup: int = 3,
    donate: bool = False,
    cold: bool = False,
    compiles: int = 1,
    samples_out: dict | None = None,
) -> dict[str, Timing]:
    """Time several functions fairly, interleaved round by round.

    Args:
      contenders: name → ``(fn, args)``. Each ``fn`` is jit-compiled for its ``args``.
      carry: if True, ``fn`` is a step ``state = fn(state, *rest)`` (a training step); its
        output is fed back as the next call's first argument, as in a training loop.
      rounds: number of rounds; the median is over rounds.
      min_round_seconds: each round repeats calls until at least this long, so short calls
        are timed in bulk rather than at timer resolution.
      warmup: untimed calls after compilation.
      donate: donate the carried state's buffers (only with ``carry``), as a real training
        loop would, so XLA may update parameters in place.
      cold: clear JAX's in-process caches (``jax.clear_caches()``) before each compilation,
        so every contender's compile time counts the one-off tracing and lowering work a
        first call in a fresh process pays, not only the first contender's.
      compiles: compile each contender this many times and report the fastest (a single
        compile time of a small program varies by ±10 ms on a shared CPU).
      samples_out: a dict to receive name → per-call seconds of each round, in round
        order (round ``r`` of every name ran together): for a paired comparison
        (:func:`bpjax.bench._stability.ranking`), which cancels what a round's conditions
        did to both contenders, where a ratio of two medians does not.

    Returns:
      name → :class:`Timing`.
    """
    steps, compile_seconds = {}, {}
    for name, (fn, args) in contenders.items():
        args = tuple(args)
        if donate and carry:
            # Donation consumes the input buffers: give each contender its own copy.
            args = (jax.tree.map(lambda x: x.copy(), args[0]), *args[1:])
        seconds = math.inf
        donate_argnums = (0,) if donate and carry else ()
        for _ in range(compiles):
            if cold:
                jax.clear_caches()
            compiled, once = compile_fn(fn, *args, donate_argnums=donate_argnums)
            seconds = min(seconds, once)
        steps[name] = _stepper(compiled, list(args), carry)
        compile_seconds[name] = seconds
    timings = time_steps(
        steps,
        rounds=rounds,
        min_round_seconds=min_round_seconds,
        warmup=warmup,
        samples_out=samples_out,
    )
    return {
        name: dataclasses.replace(t, compile=compile_seconds[name]) for name, t in timings.items()
    }


def _stepper(compiled, state, carry):
    def step():
        out = compiled(*state)
        if carry:
            state[0] = out
        return out

    return step


def time_steps(
    steps: dict[str, Callable[[], object]],
    *,
    rounds: int = 21,
    min_round_seconds: float = 0.02,
    warmup: int = 3,
    groups: dict[str, str] | None = None,
    settle_seconds: float = 0.3,
    rewarm_seconds: float = 0.0,
    samples_out: dict | None = None,
) -> dict[str, Timing]:
    """Time zero-argument step functions (any framework), interleaved round by round.

    Each ``step()`` does one unit of work (one training step) and returns its output; JAX
    outputs are blocked on at the end of each round, as a training loop would (the next step
    depends on the previous one anyway), so asynchronous dispatch is neither hidden nor
    penalized. Synchronous frameworks (NumPy, PyTorch on CPU) return when done.

    ``groups`` maps names to a runtime (``"jax"``, ``"torch"``, ``"numpy"``): within a round,
    steps of one runtime run back to back, and the loop sleeps ``settle_seconds`` before
    switching runtime. Thread pools busy-wait after their work (OpenBLAS and OpenMP for a
    while); without the pause they steal the cores from whoever runs next.

    ``rewarm_seconds``: before each timed block, run untimed steps for this long. XLA:CPU's
    thread pool parks its threads when idle and the first steps after a pause are slow, so
    without re-warming, interleaving measures wake-ups rather than the steady state a
    training loop runs in.

    This is :func:`calibrate`, then :func:`run_rounds`, then :func:`summarize`; call those
    directly to add rounds until a ranking is resolved. ``samples_out``: as for
    :func:`compare`.

    Returns:
      name → :class:`Timing` (``compile`` is 0: compile before handing the step over).
    """
    calls = calibrate(steps, min_round_seconds=min_round_seconds, warmup=warmup)
    samples = run_rounds(
        steps,
        calls,
        rounds=rounds,
        groups=groups,
        settle_seconds=settle_seconds,
        rewarm_seconds=rewarm_seconds,
    )
    if samples_out is not None:
        samples_out.update(samples)
    return summarize(samples, calls)


def calibrate(
    steps: dict[str, Callable[[], object]], *, min_round_seconds: float = 0.02, warmup: int = 3
) -> dict[str, int]:
    """Warm each step up and choose its calls per round (at least ``min_round_seconds``)."""
    calls = {}
    for name, step in steps.items():
        for _ in range(warmup):
            _block(step())
        start = time.perf_counter()
        _block(step())
        once = max(time.perf_counter() - start, 1e-7)
        calls[name] = max(1, int(min_round_seconds / once))
    return calls


def run_rounds(
    steps: dict[str, Callable[[], object]],
    calls: dict[str, int],
    *,
    rounds: int,
    groups: dict[str, str] | None = None,
    settle_seconds: float = 0.3,
    rewarm_seconds: float = 0.0,
    first_round: int = 0,
) -> dict[str, list[float]]:
    """Per-call seconds of each step in each of ``rounds`` interleaved rounds.

    See :func:`time_steps` for ``groups``, ``settle_seconds`` and ``rewarm_seconds``.
    Within a group, round ``r`` puts contender ``r mod k`` first (no contender always goes
    first) and the rest in an order shuffled by ``r`` (:func:`_round_order`), so no
    contender always runs right after the same other one: one that follows its twin (the
    same program, compiled twice) finds its buffers warm, and under a fixed rotation it
    did so in every round (measured 2-6% faster than the twin it followed, up to 20% in a
    process's first rounds). ``first_round`` continues the sequence of a previous call.

    Returns:
      name → one sample per round, in round order (round ``r`` of every name ran together).
    """
    group_of = groups or {name: "" for name in steps}
    blocks = [[n for n in steps if group_of[n] == g] for g in dict.fromkeys(group_of.values())]
    samples: dict[str, list[float]] = {name: [] for name in steps}
    previous = None
    for r in range(first_round, first_round + rounds):
        order = [name for block in blocks for name in _round_order(block, r)]
        for name in order:
            if previous is not None and group_of[name] != previous:
                time.sleep(settle_seconds)
            previous = group_of[name]
            samples[name].append(_timed_block(steps[name], calls[name], rewarm_seconds))
    return samples


def _round_order(block: list[str], r: int) -> list[str]:
    """The order of ``block`` in round ``r``: ``block[r mod k]`` first, the others shuffled
    by a generator seeded with ``r`` (the same rounds give the same orders)."""
    import random

    k = len(block)
    first = block[r % k]
    rest = [name for name in block if name != first]
    random.Random(r).shuffle(rest)
    return [first, *rest]


def _timed_block(step: Callable[[], object], calls: int, rewarm_seconds: float) -> float:
    if rewarm_seconds > 0:
        until = time.perf_counter() + rewarm_seconds
        while time.perf_counter() < until:
            _block(step())
    start = time.perf_counter()
    for _ in range(calls):
        out = step()
    _block(out)
    return (time.perf_counter() - start) / calls


def summarize(samples: dict[str, list[float]], calls: dict[str, int]) -> dict[str, Timing]:
    """:class:`Timing` (median, 10th-90th percentile) of per-round samples."""
    return {
        name: Timing(
            median=statistics.median(s),
            p10=_percentile(s, 10),
            p90=_percentile(s, 90),
            rounds=len(s),
            calls_per_round=calls[name],
            compile=0.0,
        )
        for name, s in samples.items()
    }


def page_faults(step: Callable[[], object], *, calls: int = 3) -> float | None:
    """Minor page faults per call of a warmed-up ``step()`` (``None`` where not measurable).

    A program that maps fresh memory on every call (for instance a temporary buffer too large
    for the C allocator to keep) pays one fault per 4 KiB page it first touches; this counts
    them for the whole process (``getrusage``), so run nothing else meanwhile.
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    _block(step())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        _block(step())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
