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
import functools
import math

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
    """Seconds per element of ``Work.elements`` in a batch of 64 JVPs or VJPs."""
    k = 64
    x = jnp.linspace(-1.0, 1.0, size // k, dtype=jnp.float32)
    seeds = jnp.ones((k, size // k), jnp.float32)
    rows = _sparse.jvp_rows if kind == "jvp" else _sparse.vjp_rows
    elements = profile(jax.make_jaxpr(_reference)(x)).elements
    return _time(lambda x, s: rows(_reference, x, s), x, seeds) / (k * elements)


def rates(backend: str | None = None) -> dict:
    """Seconds per unit of work on this machine, measured once per process (1-2 s).

    ``flop`` (in a 512² matrix product); per float32 element, each as a pair ``(at 256 KiB,
    at 16 MiB)`` of working set: ``write``, ``gather``, ``scatter``, ``transpose``, and
    ``jvp``/``vjp`` (per element of :attr:`Work.elements` in a batch of derivatives of a
    reference function of shifts, products and transcendentals). Cached per ``backend``.
    """
    return _rates(backend or jax.default_backend())


@functools.cache
def _rates(backend: str | None) -> dict:
    del backend  # part of the cache key only
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
    return out


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
        data movement, reductions), per direction.
    """

    flops: float = 0.0
    gathered: float = 0.0
    scattered: float = 0.0
    elements: float = 0.0

    def __add__(self, other: Work) -> Work:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Work(*(a + b for a, b in pairs))

    def scale(self, k: float) -> Work:
        return Work(*(k * a for a in dataclasses.astuple(self)))


def _size(aval) -> int:
    return math.prod(getattr(aval, "shape", ()))


def work(jaxpr, varying: list[bool]) -> Work:
    """The per-direction :class:`Work` of ``jaxpr``; ``varying[i]``: invar ``i`` depends on x."""
    vary = {v for v, flag in zip(jaxpr.invars, varying, strict=True) if flag}
    total = Work()
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jcore.Var) and v in vary for v in eqn.invars]
        if not any(flags):
            continue
        vary.update(eqn.outvars)
        total = total + _eqn_work(eqn, flags)
    return total


def _eqn_work(eqn, flags) -> Work:
    name = eqn.primitive.name
    if name in _propagate.CALLS:
        sub = eqn.params[_propagate.CALLS[name]]
        return work(getattr(sub, "jaxpr", sub), flags)
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
    return Work(elements=sum(_size(v.aval) for v in eqn.outvars))


def method_seconds(method, w: Work, *, n: int, m: int, nnz: int, dense_output: bool, r: dict):
    """Predicted seconds of ``method`` (see the module docstring for the formula)."""
    k_f, k_r = method.jvps, method.vjps
    if method.coloring is not None and method.coloring.kind == "columns" and k_f == n:
        name = "fwd"
    elif method.coloring is not None and method.coloring.kind == "rows" and k_r == m:
        name = "rev"
    else:
        name = method.name
    t = 0.0
    for k, kind, gathered, scattered in (
        (k_f, "jvp", w.gathered, w.scattered),
        (k_r, "vjp", w.scattered, w.gathered),
    ):
        if k:
            t += k * w.flops * r["flop"]
            t += k * gathered * _rate(r["gather"], k * gathered)
            t += k * scattered * _rate(r["scatter"], k * scattered)
            t += k * w.elements * _rate(r[kind], k * w.elements)
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


def profile(closed_jaxpr) -> Work:
    """The per-direction :class:`Work` of a one-input function's derivative."""
    return work(closed_jaxpr.jaxpr, [True])
