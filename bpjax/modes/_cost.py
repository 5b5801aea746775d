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
a prediction of milliseconds, and ``basis="timing"`` replaces it by timings.

The rates are measured and kept by :mod:`bpjax.modes._rates`; what each primitive costs
(its ``cost`` and ``pulled``) is its record in :mod:`bpjax.modes._primitives`.
"""

from __future__ import annotations

import dataclasses
import math

from jax.extend import core as jcore

from bpjax.modes import _primitives, _sparse

SMALL, LARGE = 1 << 16, 1 << 22  # elements: 256 KiB and 16 MiB of float32


def _rate(pair, elements) -> float:
    """Per-element seconds for an operation over ``elements`` float32 values."""
    small, large = pair
    span = math.log(LARGE) - math.log(SMALL)
    t = min(max((math.log(max(elements, SMALL)) - math.log(SMALL)) / span, 0.0), 1.0)
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


def _pulled(name) -> bool:
    rule = _primitives.lookup(name)
    return rule is not None and rule.pulled


def _cost(name) -> str:
    rule = _primitives.lookup(name)
    return rule.cost if rule is not None else "elements"


def _read(jaxpr, read_out: list[float]) -> dict:
    """How many elements of each variable of ``jaxpr`` the outputs read, at most its size.

    Walks the equations backwards: a pulled equation (fused with its consumer, see
    :attr:`~bpjax.modes._primitives.PrimitiveRule.pulled`) reads from each operand as many
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
        if _cost(name) == "call":
            sub, _ = _primitives.body(eqn)
            inner = _read(sub, wanted)
            for v, w in zip(eqn.invars, sub.invars, strict=True):
                add(v, inner.get(w, 0.0))
        elif _pulled(name):
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
        total = total + _WORK[_cost(eqn.primitive.name)](
            eqn, flags, [read.get(v, 0.0) for v in eqn.outvars]
        )
    return total


def _call_work(eqn, flags, read_out) -> Work:
    return work(_primitives.body(eqn)[0], flags, read_out)


def _cond_work(eqn, flags, read_out) -> Work:
    parts = [work(b.jaxpr, flags[1:]) for b in eqn.params["branches"]]
    return max(parts, key=lambda w: w.flops + w.gathered + w.scattered + w.elements)


def _scan_work(eqn, flags, read_out) -> Work:
    return work(eqn.params["jaxpr"].jaxpr, flags).scale(eqn.params["length"])


def _while_work(eqn, flags, read_out) -> Work:
    # The trip count is unknown: priced as one pass of the body.
    skip, nb = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    return work(eqn.params["body_jaxpr"].jaxpr, flags[skip : skip + nb] + flags[skip + nb :])


def _dot_work(eqn, flags, read_out) -> Work:
    (lc, _), _ = eqn.params["dimension_numbers"]
    k = math.prod(eqn.invars[0].aval.shape[a] for a in lc)
    return Work(flops=2.0 * _size(eqn.outvars[0].aval) * k * sum(flags[:2]))


def _gather_work(eqn, flags, read_out) -> Work:
    return Work(gathered=_size(eqn.outvars[0].aval))


def _scatter_work(eqn, flags, read_out) -> Work:
    return Work(scattered=_size(eqn.invars[2].aval))


def _element_work(eqn, flags, read_out) -> Work:
    produced = sum(_size(v.aval) for v in eqn.outvars)
    pulled = min(produced, sum(read_out)) if _pulled(eqn.primitive.name) else produced
    return Work(elements=produced, pulled=pulled)


# One entry per kind of _primitives.COSTS.
_WORK = {
    "elements": _element_work,
    "gather": _gather_work,
    "scatter": _scatter_work,
    "dot": _dot_work,
    "call": _call_work,
    "cond": _cond_work,
    "scan": _scan_work,
    "while": _while_work,
}


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


def directions_alike(r: dict) -> dict:
    """``r`` with the JVP and VJP per-element rates replaced by their geometric mean: what
    the model prices from the structure alone (products, writes, transposes, gathers and
    scatters), without the one ratio that moves between calibrations (see
    ``_auto._TIE_BREAKS``)."""
    mean = tuple(math.sqrt(a * b) for a, b in zip(r["jvp"], r["vjp"], strict=True))
    return {**r, "jvp": mean, "vjp": mean}


# The compile-time model below was fitted on the 2-core Xeon of results/jacobians.json
# (8 families x N = 256, 1024, 4096, every method, both outputs, fastest of 3 compiles),
# where compiling the reference (_compile_time) took this long:
_COMPILE_REFERENCE_SECONDS = 0.072


# A dense mode's mask (gather of the pattern's entries from J, scatter into zeros) compiles
# 5-23 ms more than the plain program (median 12 ms; fwd and rev, four sparse families, n =
# 256-4096, fastest of 3) on a machine whose reference compiled in 52 ms: 16 ms at 72 ms.
_MASK_COMPILE_MS = 16.0


def compile_seconds(
    method, *, nnz: int, eqns: int, dense_output: bool, r: dict, masked: bool = False
) -> float:
    """Predicted extra seconds to compile ``method``'s program, over ``fwd``/``rev``'s.

    What all candidates share (tracing ``f``, compiling its derivative: 45-190 ms on
    XLA:CPU, and not predictable from the jaxpr to better than ~2x) cancels in a
    choice; what differs, on the machine the constants were fitted on, is:

    * a coloring's decompression: the seeds and index constants and a scatter into the
      dense ``J`` (gather for BCOO), ``6 ms + 0.45 ms`` per thousand nonzeros for dense
      output, 14 ms less for BCOO;
    * dense modes with BCOO output gather ``J``'s nonzeros: ``8 ms``; with dense output and
      ``masked`` (a sparse pattern, :meth:`~bpjax.modes._plan.Plan.masks`), they gather
      them and scatter them into zeros: ``16 ms``;
    * a bicoloring compiles a linearization and its transpose besides: about ``0.6x`` of a
      whole derivative program, ``0.6 (60 ms + 1.4 ms per equation of f)``.

    Scaled to this machine by the ratio of its reference compile (``r["compile"]``) to
    the fitting machine's. Used only when the caller says how many times the program
    will run (``calls=``); it is a rough guide (±10 ms), which is the size of the
    differences it has to rank.
    """
    ms = 0.0
    if _sparse.program_name(method) in _sparse.DENSE:
        ms += (_MASK_COMPILE_MS if masked else 0.0) if dense_output else 8.0
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


# A dense mode's mask (gather and scatter of the pattern's entries, bpjax.modes._sparse),
# measured on the fitting machine over five sparse families at n = 256-4096: it adds 7-18 ms
# of compilation (7-26 ms in a later run), and the program without it ran up to 2.45x slower
# at n = 256 (XLA evaluates only the gathered entries of the masked one). The slowdown grows
# with n (tridiagonal's VJPs at n = 1024: 7x), but there the calls run milliseconds and the
# rule below never leaves the mask out: it can only for Jacobians the model prices under
# ~0.5 ms. Left out only where a few calls cannot lose more.
_MASK_SAVES = 0.007  # seconds: the least saving measured
_UNMASKED_SLOWDOWN = 2.5  # the most slowdown measured where the rule can apply, rounded up


def unmasked_pays(run_seconds: float, calls: int, r: dict) -> bool:
    """Whether leaving out a dense mode's mask saves more compilation than ``calls`` calls
    lose by running the unmasked program (both bounds pessimistic, the saving scaled to this
    machine's compile speed)."""
    saving = _MASK_SAVES * r["compile"] / _COMPILE_REFERENCE_SECONDS
    return calls * run_seconds * (_UNMASKED_SLOWDOWN - 1) < saving


# A dense mode's BCOO program on a sparse pattern gathers J's nonzeros out of the batched
# products, and XLA either evaluates only those (the whole path from the one-hot seeds to
# the gather fuses) or writes n x n intermediates (a concatenate, a pad of the seeds, a
# reduction's operand). Which, per direction, is its fusion's choice: against the measured
# bpjax fwd/rev on the four sparse families of results/jacobians.json (n = 256-4096,
# 2026-12-05) the model's price ran 0.002-3.2x (3.2x: the arrowhead's JVPs at n = 2048 and
# 4096, through an unfused concatenate). With calls= (a first use, no probe) such a price is
# taken at its pessimistic end, as the other constants here are, so a coloring priced
# reliably is not lost to a dense mode priced too cheaply: on the seven jacobians records of
# 2026-12-04/05 it changed only the arrowhead's choices, each to a faster first use.
BCOO_DENSE_UNDERPRICE = 3.0  # where Plan.gathers_nonzeros


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
