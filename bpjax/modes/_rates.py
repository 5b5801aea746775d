"""Per-machine rates for the run-time model (:mod:`bpjax.modes._cost`), measured once and kept.

What a unit of work costs on this machine: a FLOP in a matrix product, a float32 element
written, gathered, scattered, transposed, and an element of a batched JVP or VJP of a
reference function. Measured in 1-2 s, kept in memory and in ``rates.json`` under
``$BPJAX_CACHE_DIR`` (default ``~/.cache/bpjax``), keyed by what they depend on
(:func:`machine_key`). Also the GEMM rate and memory bandwidth that turn XLA's estimates
into seconds (:func:`machine_rates`), and the one GEMM timing both use.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp

from bpjax import measure
from bpjax._files import write_atomic
from bpjax.modes import _cost, _sparse


def gemm_timing(n: int = 512, *, rounds: int, warmup: int = 1, min_round_seconds: float = 0.02):
    """A :class:`bpjax.measure.Timing` of one ``(n, n) @ (n, n)`` float32 matrix product
    (``2 n³`` FLOPs): the GEMM rate of this machine, for the model, for XLA's estimates and
    for the benchmark's roofline."""
    a = jnp.ones((n, n), jnp.float32)
    timings = measure.compare(
        {"gemm": (lambda a: a @ a, (a,))},
        rounds=rounds,
        warmup=warmup,
        min_round_seconds=min_round_seconds,
    )
    return timings["gemm"]


def machine_rates(backend: str | None = None) -> dict:
    """The device's GEMM rate (FLOP/s) and memory bandwidth (bytes/s), measured once.

    Used to turn XLA's FLOP and byte estimates into seconds (``basis="xla"``); cached per
    ``backend`` for the life of the process.
    """
    return _machine_rates(backend or jax.default_backend())


@functools.cache
def _machine_rates(backend: str | None) -> dict:
    del backend  # part of the cache key only
    with jax.ensure_compile_time_eval():  # eager, even under the user's jit
        return _measure_machine_rates()


def _measure_machine_rates() -> dict:
    gemm = gemm_timing(rounds=5, warmup=1)
    v = jnp.ones((8 * 1024 * 1024,), jnp.float32)  # 32 MiB
    copy = measure.compare({"axpy": (lambda v: 2.0 * v + 1.0, (v,))}, rounds=5, warmup=1)["axpy"]
    return {"flops_per_s": 2 * 512**3 / gemm.median, "bytes_per_s": 2 * v.nbytes / copy.median}


def _time(fn, *args) -> float:
    timing = measure.compare({"f": (fn, args)}, rounds=3, warmup=1, min_round_seconds=0.0)
    return timing["f"].median


def _per_element(make, size):
    k = 64
    u = jnp.ones((k, size // k), jnp.float32)
    return _time(make(size // k), u) / size


def _gather(s):
    perm = (jnp.arange(s) * 4099) % s
    return lambda u: u[:, perm]


def _scatter(s):
    perm = (jnp.arange(s) * 4099) % s
    return lambda u: jax.vmap(lambda r: jnp.zeros(s, r.dtype).at[perm].add(r))(u)


def _reference(x):
    """A typical derivative workload for calibration: shifts, products, transcendentals."""
    p = jnp.pad(x, 1)
    return jnp.sin(x) * p[:-2] + jnp.exp(-x * x) * p[2:] - 2.0 * x


def _derivative_rate(kind, size):
    """Seconds per element of ``Work.pulled`` (JVPs) or ``Work.elements`` (VJPs) in a batch
    of 64."""
    k = 64
    x = jnp.linspace(-1.0, 1.0, size // k, dtype=jnp.float32)
    seeds = jnp.ones((k, size // k), jnp.float32)
    rows = _sparse.jvp_rows if kind == "jvp" else _sparse.vjp_rows
    w = _cost.profile(jax.make_jaxpr(_reference)(x))
    elements = w.pulled if kind == "jvp" else w.elements
    return _time(lambda x, s: rows(_reference, x, s), x, seeds) / (k * elements)


def rates(backend: str | None = None, *, refresh: bool = False) -> dict:
    """Seconds per unit of work on this machine, measured once and kept (1-2 s to measure).

    ``flop`` (in a 512² matrix product); per float32 element, each as a pair ``(at 256 KiB,
    at 16 MiB)`` of working set: ``write``, ``gather``, ``scatter``, ``transpose``, and
    ``jvp``/``vjp`` (per element of :attr:`Work.elements` in a batch of derivatives of a
    reference function of shifts, products and transcendentals).

    The rates are kept in memory for the process and in ``rates.json`` under
    ``$BPJAX_CACHE_DIR`` (default ``~/.cache/bpjax``), keyed by everything they depend on
    (:func:`machine_key`: backend, device, CPU model, usable cores, JAX version,
    ``XLA_FLAGS``), so a later process on the same machine does not measure them again.
    ``BPJAX_CACHE_DIR=off`` keeps them in memory only; ``refresh=True`` measures again and
    replaces what was kept.
    """
    backend = backend or jax.default_backend()
    key = machine_key(backend)
    if refresh:
        _MEMORY.pop(key, None)
    if key not in _MEMORY:
        kept = None if refresh else _load(key)
        if kept is None:
            # Measured eagerly even when the first decision is traced (a jacobian inside
            # the user's jit): its arrays would be tracers there, which no executable takes.
            with jax.ensure_compile_time_eval():
                kept = _measure_rates()
            _store(key, kept)
        _MEMORY[key] = kept
    return _MEMORY[key]


_MEMORY: dict[str, dict] = {}
_RATES_SCHEMA = 2  # bump when what _measure_rates measures changes


def machine_key(backend: str) -> str:
    """What the rates depend on, as one string: a different machine gets new rates."""
    device = jax.devices(backend)[0]
    cpu = measure.cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = (
        f"schema {_RATES_SCHEMA}",
        backend,
        str(getattr(device, "device_kind", device.platform)),
        cpu["cpu_model"],
        cpu["cpu_id"],
        f"{cores} cores",
        f"jax {jax.__version__}",
        os.environ.get("XLA_FLAGS", ""),
    )
    return " | ".join(parts)


def cache_path(name: str = "rates.json") -> str | None:
    """The file ``name`` (the rates by default) is kept in under ``$BPJAX_CACHE_DIR``, or
    ``None`` when ``BPJAX_CACHE_DIR=off``."""
    root = os.environ.get("BPJAX_CACHE_DIR")
    if root == "off":
        return None
    if not root:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(home, "bpjax")
    return os.path.join(root, name)


def read_cache(path) -> dict:
    """The JSON object in ``path``; ``{}`` if missing, unreadable or not an object."""
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return {}  # missing or unreadable: measure again
    return kept if isinstance(kept, dict) else {}


def _load(key: str) -> dict | None:
    path = cache_path()
    entry = read_cache(path).get(key) if path else None
    if not isinstance(entry, dict) or set(entry) != set(_RATE_NAMES):
        return None
    try:
        return {
            k: float(v) if k in _SCALARS else (float(v[0]), float(v[1])) for k, v in entry.items()
        }
    except (TypeError, ValueError, IndexError):
        return None


def _store(key: str, value: dict) -> None:
    path = cache_path()
    if path is not None:
        update_cache(path, lambda kept: {**kept, key: value})


def update_cache(path, change) -> None:
    """Rewrite the JSON object in ``path`` as ``change(kept)``; nothing if it cannot be
    written (a read-only home: what was measured stays with this process)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Other processes may read it meanwhile: written whole, then renamed.
        write_atomic(path, json.dumps(change(read_cache(path)), indent=1))
    except OSError:
        pass


_RATE_NAMES = ("flop", "write", "gather", "scatter", "transpose", "jvp", "vjp", "compile")
_SCALARS = ("flop", "compile")  # the others are (at 256 KiB, at 16 MiB) pairs


def _measure_rates() -> dict:
    gemm = gemm_timing(rounds=3, warmup=1, min_round_seconds=0.0)
    out = {"flop": gemm.median / (2 * 512**3)}
    makers = {
        "write": lambda s: lambda u: u + 1.0,
        "gather": _gather,
        "scatter": _scatter,
        "transpose": lambda s: lambda u: u.T + 1.0,
    }
    for name, make in makers.items():
        out[name] = tuple(_per_element(make, size) for size in (_cost.SMALL, _cost.LARGE))
    for kind in ("jvp", "vjp"):
        out[kind] = tuple(_derivative_rate(kind, size) for size in (_cost.SMALL, _cost.LARGE))
    out["compile"] = _compile_time()
    return out


def _compile_time() -> float:
    """Seconds to trace, lower and compile ``jax.jacrev`` of the reference function
    (``n = 64``): the fastest of three, each of a new function object (no cache hit)."""
    x = jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32)
    best = math.inf
    for _ in range(3):
        fn = jax.jacrev(lambda x: _reference(x))  # a new object: compiled afresh
        best = min(best, measure.compile_fn(fn, x)[1])
    return best
