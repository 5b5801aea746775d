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
    prepared = {}
    for name, (fn, args) in contenders.items():
        args = tuple(args)
        if donate and carry:
            # Donation consumes the input buffers: give each contender its own copy.
            args = (jax.tree.map(lambda x: x.copy(), args[0]), *args[1:])
        compiled, seconds = compile_fn(fn, *args, donate_argnums=(0,) if donate and carry else ())
        state = list(args)
        for _ in range(warmup):
            out = _block(compiled(*state))
            if carry:
                state[0] = out
        # Calls per round, from the warm-up speed.
        start = time.perf_counter()
        out = _block(compiled(*state))
        if carry:
            state[0] = out
        once = max(time.perf_counter() - start, 1e-7)
        calls = max(1, int(min_round_seconds / once))
        prepared[name] = (compiled, state, calls, seconds)

    samples: dict[str, list[float]] = {name: [] for name in prepared}
    for _ in range(rounds):
        for name, (compiled, state, calls, _) in prepared.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = compiled(*state)
                if carry:
                    state[0] = out
            _block(out)
            samples[name].append((time.perf_counter() - start) / calls)
    return {
        name: Timing(
            median=statistics.median(samples[name]),
            p10=_percentile(samples[name], 10),
            p90=_percentile(samples[name], 90),
            rounds=rounds,
            calls_per_round=prepared[name][2],
            compile=prepared[name][3],
        )
        for name in prepared
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
