"""Measurement helpers every benchmark uses: timing, XLA FLOPs, compiled memory, environment.

Timing follows the usual rules for JAX: compile once and report that time apart, warm up,
``block_until_ready`` on every result, many repeats, and report the median with the spread
(10th-90th percentile). :func:`compare` interleaves contenders round by round, so drift on a
shared machine (another process, frequency scaling) hits all of them alike.

Two pitfalls the helpers document rather than hide:

* ``compiled.cost_analysis()["flops"]`` counts the body of a ``scan``/``while`` loop once,
  not once per iteration: count FLOPs on an unrolled program or analytically.
* ``memory_analysis().temp_size_in_bytes`` is what XLA plans for temporaries: deterministic
  and available on CPU, unlike ``device.memory_stats()`` (``None`` on CPU).
"""

from __future__ import annotations

import dataclasses
import os
import platform
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
      p10, p90: the spread over rounds.
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
        return dataclasses.asdict(self)


def _block(tree):
    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def compile_fn(fn: Callable, *args, donate_argnums=()) -> tuple[Callable, float]:
    """``jax.jit(fn)`` lowered and compiled for ``args``; returns ``(compiled, seconds)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    return compiled, time.perf_counter() - start


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

    Returns:
      name → :class:`Timing`.
    """
    steps, compile_seconds = {}, {}
    for name, (fn, args) in contenders.items():
        args = tuple(args)
        if donate and carry:
            # Donation consumes the input buffers: give each contender its own copy.
            args = (jax.tree.map(lambda x: x.copy(), args[0]), *args[1:])
        compiled, seconds = compile_fn(fn, *args, donate_argnums=(0,) if donate and carry else ())
        steps[name] = _stepper(compiled, list(args), carry)
        compile_seconds[name] = seconds
    timings = time_steps(steps, rounds=rounds, min_round_seconds=min_round_seconds, warmup=warmup)
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
) -> dict[str, Timing]:
    """Time zero-argument step functions (any framework), interleaved round by round.

    Each ``step()`` does one unit of work (one training step) and returns its output; JAX
    outputs are blocked on at the end of each round, as a training loop would (the next step
    depends on the previous one anyway), so asynchronous dispatch is neither hidden nor
    penalized. Synchronous frameworks (NumPy, PyTorch on CPU) return when done.

    ``groups`` maps names to a runtime (``"jax"``, ``"torch"``, ``"numpy"``): within a round,
    steps of one runtime run back to back, and the loop sleeps ``settle_seconds`` before
    switching runtime. Thread pools busy-wait after their work (OpenBLAS for ~0.1 s, OpenMP
    for a while too); without the pause they steal the cores from whoever runs next. Measured
    on 2 cores: a JAX step of 0.77 ms took 1.26 ms when interleaved with a NumPy step.

    ``rewarm_seconds``: before each timed block, run untimed steps for this long. XLA:CPU's
    thread pool parks its threads when idle and the first steps after a pause are slow
    (measured: a 0.81 ms step read 1.22 ms when each block of 25 followed a 0.3 s pause), so
    without re-warming, interleaving measures wake-ups rather than the steady state a
    training loop runs in.

    Returns:
      name → :class:`Timing` (``compile`` is 0: compile before handing the step over).
    """
    calls = {}
    for name, step in steps.items():
        for _ in range(warmup):
            _block(step())
        start = time.perf_counter()
        _block(step())
        once = max(time.perf_counter() - start, 1e-7)
        calls[name] = max(1, int(min_round_seconds / once))

    group_of = groups or {name: "" for name in steps}
    blocks = [[n for n in steps if group_of[n] == g] for g in dict.fromkeys(group_of.values())]
    samples: dict[str, list[float]] = {name: [] for name in steps}
    previous = None
    for r in range(rounds):
        # Each round rotates the order within a group, so no contender always goes first.
        order = [
            name for block in blocks for name in block[r % len(block) :] + block[: r % len(block)]
        ]
        for name in order:
            step = steps[name]
            if previous is not None and group_of[name] != previous:
                time.sleep(settle_seconds)
            previous = group_of[name]
            if rewarm_seconds > 0:
                until = time.perf_counter() + rewarm_seconds
                while time.perf_counter() < until:
                    _block(step())
            start = time.perf_counter()
            for _ in range(calls[name]):
                out = step()
            _block(out)
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {
        name: Timing(
            median=statistics.median(samples[name]),
            p10=_percentile(samples[name], 10),
            p90=_percentile(samples[name], 90),
            rounds=rounds,
            calls_per_round=calls[name],
            compile=0.0,
        )
        for name in steps
    }


def cost(fn: Callable, *args, missing: float = 0.0) -> dict[str, float]:
    """XLA's cost estimates for ``jit(fn)(*args)``: ``{"flops", "bytes accessed"}``.

    Loop bodies are counted once (see above). An estimate XLA does not give is ``missing``.
    """
    compiled, _ = compile_fn(fn, *args)
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jaxlib returned one dict per device
        analysis = analysis[0]
    return {key: float(analysis.get(key, missing)) for key in ("flops", "bytes accessed")}


def flops(fn: Callable, *args) -> float:
    """XLA's FLOP estimate for ``jit(fn)(*args)``. Loop bodies are counted once (see above)."""
    return cost(fn, *args, missing=float("nan"))["flops"]


def temp_bytes(fn: Callable, *args) -> int:
    """Compiled temporary memory of ``jit(fn)(*args)`` in bytes (deterministic, works on CPU)."""
    compiled, _ = compile_fn(fn, *args)
    return int(compiled.memory_analysis().temp_size_in_bytes)


def environment() -> dict:
    """Device, versions and machine: recorded beside every published number."""
    import flax
    import jaxlib
    import optax

    device = jax.devices()[0]
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu_model,
            )
    except OSError:
        pass
    return {
        "backend": jax.default_backend(),
        "device": str(getattr(device, "device_kind", device.platform)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
