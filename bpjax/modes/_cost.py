"""A run-time model of Jacobian programs, with per-machine rates measured once.

The automatic mode ranks candidate methods (``fwd``, ``rev``, colorings) without compiling
them. A method with ``k_f`` JVPs and ``k_r`` VJPs on ``f: R^n → R^m`` is priced as

    T = k_f · c_jvp + k_r · c_vjp          (the batched products)
      + (k_f · m + k_r · n) · w            (writing their results)
      + T_out                              (assembling the Jacobian)

* ``c_jvp``/``c_vjp``: work per direction, from ``f``'s jaxpr: the FLOPs of every matrix
  product on an input-dependent operand (the same in both modes); gathers and scatters,
  which swap roles (a gather's JVP is a gather, its VJP a scatter-add, several times
  slower per element on a CPU); and the elements produced by every other input-dependent
  equation, at a per-element rate measured on the batched JVPs and VJPs of a reference
  function (so the fusion XLA achieves in each mode is in the rate, not modelled).
* ``w``: seconds per element written.
* ``T_out``: dense output: ``fwd`` writes ``J`` transposed (its batch runs over columns),
  so it pays a transpose of ``m·n`` elements; a coloring fills ``m·n`` zeros and scatters
  its ``nnz`` entries. Sparse output: a gather of ``nnz`` entries.

Rates depend on the working set (an operation on 16 MiB runs several times slower per
element than on 256 KiB, out of cache), so each rate is measured at both sizes and
interpolated in ``log(bytes)``. The model only has to order methods whose costs differ by
the things that matter (how many products, of which kind, for which output); it is not
a prediction of milliseconds, and ``calibrate=True`` replaces it by timings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from bpjax import measure
from bpjax.modes import _propagate, _sparse

_SMALL, _LARGE = 1 << 16, 1 << 22  # elements: 256 KiB and 16 MiB of float32


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
    w = profile(jax.make_jaxpr(_reference)(x))
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


def cache_path() -> str | None:
    """The file the rates are kept in, or ``None`` when ``BPJAX_CACHE_DIR=off``."""
    root = os.environ.get("BPJAX_CACHE_DIR")
    if root == "off":
        return None
    if not root:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(home, "bpjax")
    return os.path.join(root, "rates.json")


def _read_cache(path) -> dict:
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return {}  # missing or unreadable: measure again
    return kept if isinstance(kept, dict) else {}


def _load(key: str) -> dict | None:
    path = cache_path()
    entry = _read_cache(path).get(key) if path else None
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
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kept = _read_cache(path)
        kept[key] = value
        # Written whole and renamed, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(kept, f, indent=1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only home: the rates stay in memory for this process


_RATE_NAMES = ("flop", "write", "gather", "scatter", "transpose", "jvp", "vjp", "compile")
_SCALARS = ("flop", "compile")  # the others are (at 256 KiB, at 16 MiB) pairs


def _measure_rates() -> dict:
    a = jnp.ones((512, 512), jnp.float32)
    out = {"flop": _time(lambda a: a @ a, a) / (2 * 512**3)}
    makers = {
        "write": lambda s: lambda u: u + 1.0,
        "gather": _gather,
        "scatter": _scatter,
        "transpose": lambda s: lambda u: u.T + 1.0,
    }
    for name, make in makers.items():
        out[name] = tuple(_per_element(make, size) for size in (_SMALL, _LARGE))
    for kind in ("jvp", "vjp"):
        out[kind] = tuple(_derivative_rate(kind, size) for size in (_SMALL, _LARGE))
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


def _rate(pair, elements) -> float:
    """Per-element seconds for an operation over ``elements`` float32 values."""
    small, large = pair
    span = math.log(_LARGE) - math.log(_SMALL)
    t = min(max((math.log(max(elements, _SMALL)) - math.log(_SMALL)) / span, 0.0), 1.0)
    return math.exp((1 - t) * math.log(max(small, 1e-15)) + t * math.log(max(large, 1e-15)))


@dataclasses.dataclass(frozen=True)
class Work:
    """Per-direction work of ``f``'s derivative, from its jaxpr.

    Attributes:
      flops: FLOPs of matrix products with an input-dependent operand, per direction.
      gathered, scattered: elements moved by gathers and by scatters, per direction.
      elements: elements produced by every other input-dependent equation (elementwise,
        data movement, reductions), per direction: what a VJP computes.
      pulled: the part of ``elements`` a JVP computes. XLA fuses elementwise equations
        into the gather or slice that consumes them and evaluates them only at the
        elements read, so in forward mode a chain of ``n``-element steps feeding a gather
        of ``m`` elements costs ``m`` per step (reverse mode's scatter-add needs all ``n``).
    """

    flops: float = 0.0
    gathered: float = 0.0
    scattered: float = 0.0
    elements: float = 0.0
    pulled: float = 0.0

    def __add__(self, other: Work) -> Work:
        # Field by field, not dataclasses.astuple: this runs once per equation.
        return Work(*(getattr(self, f) + getattr(other, f) for f in _WORK_FIELDS))

    def scale(self, k: float) -> Work:
        return Work(*(k * getattr(self, f) for f in _WORK_FIELDS))


_WORK_FIELDS = tuple(f.name for f in dataclasses.fields(Work))


def _size(aval) -> int:
    return math.prod(getattr(aval, "shape", ()))


# Equations whose every output element reads one element of each operand (or a window of
# an operand for the slices): fused with their consumer, they run only where it reads.
_PULLED = _propagate.ELEMENTWISE | {
    "broadcast_in_dim",
    "reshape",
    "squeeze",
    "expand_dims",
    "transpose",
    "slice",
    "dynamic_slice",
    "gather",
    "pad",
    "rev",
    "split",
    "concatenate",
}


def _read(jaxpr, read_out: list[float]) -> dict:
    """How many elements of each variable of ``jaxpr`` the outputs read, at most its size.

    Walks the equations backwards: a pulled equation reads from each operand as many
    elements as its outputs are read; anything else reads its operands whole.
    """
    read: dict = {}

    def add(v, k):
        if isinstance(v, jcore.Var):
            # Consumers of one value mostly read the same elements (an elementwise chain),
            # so the largest read stands for their union.
            read[v] = min(max(read.get(v, 0.0), k), float(_size(v.aval)))

    for v, k in zip(jaxpr.outvars, read_out, strict=True):
        add(v, k)
    for eqn in reversed(jaxpr.eqns):
        name = eqn.primitive.name
        wanted = [read.get(v, 0.0) for v in eqn.outvars]
        if name in _propagate.CALLS:
            sub = eqn.params[_propagate.CALLS[name]]
            sub = getattr(sub, "jaxpr", sub)
            inner = _read(sub, wanted)
            for v, w in zip(eqn.invars, sub.invars, strict=True):
                add(v, inner.get(w, 0.0))
        elif name in _PULLED:
            for v in eqn.invars:
                add(v, sum(wanted))
        else:
            for v in eqn.invars:
                add(v, float(_size(getattr(v, "aval", None))))
    return read


def work(jaxpr, varying: list[bool], read_out: list[float] | None = None) -> Work:
    """The per-direction :class:`Work` of ``jaxpr``; ``varying[i]``: invar ``i`` depends on x.

    ``read_out``: how many elements of each output are read (default: all).
    """
    if read_out is None:
        read_out = [float(_size(v.aval)) for v in jaxpr.outvars]
    read = _read(jaxpr, read_out)
    vary = {v for v, flag in zip(jaxpr.invars, varying, strict=True) if flag}
    total = Work()
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jcore.Var) and v in vary for v in eqn.invars]
        if not any(flags):
            continue
        vary.update(eqn.outvars)
        total = total + _eqn_work(eqn, flags, [read.get(v, 0.0) for v in eqn.outvars])
    return total


def _eqn_work(eqn, flags, read_out) -> Work:
    name = eqn.primitive.name
    if name in _propagate.CALLS:
        sub = eqn.params[_propagate.CALLS[name]]
        return work(getattr(sub, "jaxpr", sub), flags, read_out)
    if name == "cond":
        parts = [work(b.jaxpr, flags[1:]) for b in eqn.params["branches"]]
        return max(parts, key=lambda w: w.flops + w.gathered + w.scattered + w.elements)
    if name == "scan":
        return work(eqn.params["jaxpr"].jaxpr, flags).scale(eqn.params["length"])
    if name == "while":  # the trip count is unknown: priced as one pass of the body
        skip, nb = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
        return work(eqn.params["body_jaxpr"].jaxpr, flags[skip : skip + nb] + flags[skip + nb :])
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        k = math.prod(eqn.invars[0].aval.shape[a] for a in lc)
        return Work(flops=2.0 * _size(eqn.outvars[0].aval) * k * sum(flags[:2]))
    if name == "gather":
        return Work(gathered=_size(eqn.outvars[0].aval))
    if name in _propagate.SCATTERS:
        return Work(scattered=_size(eqn.invars[2].aval))
    produced = sum(_size(v.aval) for v in eqn.outvars)
    pulled = min(produced, sum(read_out)) if name in _PULLED else produced
    return Work(elements=produced, pulled=pulled)


def method_seconds(method, w: Work, *, n: int, m: int, nnz: int, dense_output: bool, r: dict):
    """Predicted seconds of ``method`` (see the module docstring for the formula)."""
    k_f, k_r = method.jvps, method.vjps
    name = _sparse.program_name(method)
    t = 0.0
    for k, kind, gathered, scattered in (
        (k_f, "jvp", w.gathered, w.scattered),
        (k_r, "vjp", w.scattered, w.gathered),
    ):
        if k:
            t += k * w.flops * r["flop"]
            t += k * gathered * _rate(r["gather"], k * gathered)
            t += k * scattered * _rate(r["scatter"], k * scattered)
            elements = w.pulled if kind == "jvp" else w.elements
            t += k * elements * _rate(r[kind], k * elements)
    written = k_f * m + k_r * n
    t += written * _rate(r["write"], written)
    if dense_output:
        if name == "fwd":
            t += m * n * _rate(r["transpose"], m * n)
        elif name != "rev":
            t += m * n * _rate(r["write"], m * n) + nnz * _rate(r["scatter"], nnz)
    if name not in ("fwd", "rev") or not dense_output:
        t += nnz * _rate(r["gather"], max(written, nnz))
    return t


# The compile-time model below was fitted on the 2-core Xeon of results/jacobians.json
# (8 families x N = 256, 1024, 4096, every method, both outputs, fastest of 3 compiles),
# where compiling the reference (_compile_time) took this long:
_COMPILE_REFERENCE_SECONDS = 0.072


def compile_seconds(method, *, nnz: int, eqns: int, dense_output: bool, r: dict) -> float:
    """Predicted extra seconds to compile ``method``'s program, over ``fwd``/``rev``'s.

    What all candidates share (tracing ``f``, compiling its derivative: 45-190 ms on
    XLA:CPU, and not predictable from the jaxpr to better than ~2x) cancels in a
    choice; what differs, on the machine the constants were fitted on, is:

    * a coloring's decompression: the seeds and index constants and a scatter into the
      dense ``J`` (gather for BCOO), ``6 ms + 0.45 ms`` per thousand nonzeros for dense
      output, 14 ms less for BCOO;
    * dense modes with BCOO output gather ``J``'s nonzeros: ``8 ms``;
    * a bicoloring compiles a linearization and its transpose besides: about ``0.6x`` of a
      whole derivative program, ``0.6 (60 ms + 1.4 ms per equation of f)``.

    Scaled to this machine by the ratio of its reference compile (``r["compile"]``) to
    the fitting machine's. Used only when the caller says how many times the program
    will run (``calls=``); it is a rough guide (±10 ms), which is the size of the
    differences it has to rank.
    """
    ms = 0.0
    if _sparse.program_name(method) in _sparse.DENSE:
        ms += 0.0 if dense_output else 8.0
    else:
        ms += 6.0 + 0.45 * nnz / 1000 - (0.0 if dense_output else 14.0)
    if method.jvps and method.vjps:
        ms += 0.6 * (60.0 + 1.4 * eqns)
    return ms * 1e-3 * r["compile"] / _COMPILE_REFERENCE_SECONDS


# LLVM at -O0 on XLA:CPU, measured on the fitting machine over six Jacobian programs:
# compiles 9-33 ms (15-20%) faster, runs 1.1-2.9x slower (elementwise work slowest, matrix
# products least). Worth it only for a few calls of a small Jacobian.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_FAST_COMPILE_SAVES = 0.009  # seconds: the least saving measured
_FAST_COMPILE_SLOWDOWN = 3.0  # the most slowdown measured, rounded up


def fast_compile_pays(run_seconds: float, calls: int, r: dict) -> bool:
    """Whether compiling at -O0 saves more than ``calls`` calls lose by running slower
    (both bounds pessimistic; the saving scaled to this machine's compile speed)."""
    saving = _FAST_COMPILE_SAVES * r["compile"] / _COMPILE_REFERENCE_SECONDS
    return calls * run_seconds * (_FAST_COMPILE_SLOWDOWN - 1) < saving


def equations(jaxpr) -> int:
    """Equations in ``jaxpr``, counting those of nested jaxprs (``pjit``, ``custom_jvp``...)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for sub in jcore.jaxprs_in_params(eqn.params):
            total += equations(sub)
    return total


def profile(closed_jaxpr) -> Work:
    """The per-direction :class:`Work` of a one-input function's derivative."""
    return work(closed_jaxpr.jaxpr, [True])
