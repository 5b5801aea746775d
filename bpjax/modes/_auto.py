"""The automatic mode: choose among ``fwd``, ``rev`` and the colorings by run time.

Three ways to price the candidates (``basis``):

* ``"model"`` (default): the run-time model of :mod:`bpjax.modes._cost`, from the product
  counts, ``f``'s jaxpr and rates measured once per machine and kept on disk. Nothing
  is compiled, so the decision costs a trace of ``f`` plus the sparsity pass and the
  coloring.
* ``"timing"`` (``calibrate=True``): compile and time the candidates the model ranks
  within 4x of its best (at most three), and always the model's best forward-only and
  best reverse-only candidates. Exact among those, and costs their compilations.
* ``"xla"``: XLA's FLOP and byte estimates of the vmapped JVP and VJP at batch sizes 1
  and 2, extrapolated to each candidate's product counts and turned into seconds with the
  machine's GEMM rate and bandwidth (:func:`machine_rates`)::

      cost(k) = cost(1) + (k − 1) · (cost(2) − cost(1))

  Kept for comparison: it misses what XLA's estimates do not see (a scatter-add costing
  far more per FLOP than a matrix product).

With ``calls=N`` (model and timing bases) each candidate is priced per call over ``N`` calls
with its compilation shared among them: modelled as the differences between candidates
(:func:`bpjax.modes._cost.compile_seconds`) or timed. On a CPU, where ``N`` calls of the
chosen program lose less to slower code than LLVM at -O0 saves in compilation, the
choice carries ``compiler_options`` for it.
"""

from __future__ import annotations

import functools
import numbers
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bpjax import measure
from bpjax.modes import _cost, _plan, _sparse

BASES = ("model", "timing", "xla")


class ModeChoice(NamedTuple):
    """Why the automatic mode chose as it did.

    Attributes:
      mode: ``"fwd"``, ``"rev"`` or ``"sparse"``.
      n, m: input and output sizes.
      fwd, rev: the predicted cost of the dense modes (``{"seconds"}``, plus ``"flops"`` and
        ``"bytes"`` on the XLA basis); ``None`` when not a candidate (``fwd`` when ``f`` has
        a ``custom_vjp``, which has no forward mode).
      basis: ``"model"``, ``"timing"`` or ``"xla"``.
      reason: one sentence for humans.
      method: ``"fwd"``, ``"rev"``, ``"columns"``, ``"rows"`` or ``"bicoloring"``.
      candidates: method → ``{"jvps", "vjps", "seconds"}`` for every candidate priced.
      decision_seconds: wall time of the whole decision (tracing, sparsity, coloring,
        pricing).
      compiler_options: XLA options for the program (``None``: the defaults). With
        ``calls=`` on a CPU, LLVM at -O0 where a few calls of a small Jacobian lose less
        to the slower code than the faster compilation saves.
    """

    mode: str
    n: int
    m: int
    fwd: dict | None
    rev: dict | None
    basis: str
    reason: str
    method: str = ""
    candidates: dict | None = None
    decision_seconds: float = 0.0
    compiler_options: dict | None = None


def machine_rates(backend: str | None = None) -> dict:
    """The device's GEMM rate (FLOP/s) and memory bandwidth (bytes/s), measured once.

    Used to turn XLA's FLOP and byte estimates into seconds (``basis="xla"``); cached per
    ``backend`` for the life of the process.
    """
    return _machine_rates(backend or jax.default_backend())


@functools.cache
def _machine_rates(backend: str | None) -> dict:
    del backend  # part of the cache key only
    a = jnp.ones((512, 512), jnp.float32)
    gemm = measure.compare({"gemm": (lambda a: a @ a, (a,))}, rounds=5, warmup=1)["gemm"]
    v = jnp.ones((8 * 1024 * 1024,), jnp.float32)  # 32 MiB
    copy = measure.compare({"axpy": (lambda v: 2.0 * v + 1.0, (v,))}, rounds=5, warmup=1)["axpy"]
    return {"flops_per_s": 2 * 512**3 / gemm.median, "bytes_per_s": 2 * v.nbytes / copy.median}


def _model_prices(plan, sparse_output, calls=None):
    r = _cost.rates(jax.default_backend())
    closed = plan.closed if plan.closed is not None else jax.make_jaxpr(plan.f_flat)(plan.x_flat)
    work = _cost.profile(closed)
    nnz = plan.pattern.nnz if plan.pattern is not None else plan.n * plan.m
    dense_output = not sparse_output
    prices = {
        c.name: {
            "seconds": _cost.method_seconds(
                c, work, n=plan.n, m=plan.m, nnz=nnz, dense_output=dense_output, r=r
            )
        }
        for c in plan.candidates
    }
    if calls:
        eqns = _cost.equations(closed.jaxpr)
        extra = {
            c.name: _cost.compile_seconds(c, nnz=nnz, eqns=eqns, dense_output=dense_output, r=r)
            for c in plan.candidates
        }
        # Only differences count: priced over the fastest-compiling candidate.
        least = min(extra.values())
        for name, price in prices.items():
            prices[name] = _per_call(price["seconds"], extra[name] - least, calls)
    return prices


def _per_call(run, compile_seconds, calls):
    """Seconds per call over ``calls`` calls, the compilation shared among them."""
    return {
        "seconds": run + compile_seconds / calls,
        "run_seconds": run,
        "compile_seconds": compile_seconds,
    }


def _timed_prices(plan, sparse_output, calls=None):
    model = _model_prices(plan, sparse_output, calls)
    best = min(p["seconds"] for p in model.values())
    near = sorted((model[c.name]["seconds"], c.name) for c in plan.candidates)
    names = {name for seconds, name in near[:3] if seconds <= 4 * best}
    # The model can misrank the two directions by far more than 4x (XLA fuses work into
    # one mode's batched loop that it keeps out of the other's), so the best forward-only
    # and the best reverse-only candidate are always timed too.
    for one_sided in (lambda c: c.vjps == 0, lambda c: c.jvps == 0):
        sided = [c for c in plan.candidates if one_sided(c)]
        if sided:
            names.add(min(sided, key=lambda c: model[c.name]["seconds"]).name)
    programs = {}
    for c in plan.candidates:
        if c.name in names:
            programs[c.name] = (plan.program(c, sparse_output=sparse_output), (plan.x_flat,))
    timed = measure.compare(programs, rounds=3, warmup=1, min_round_seconds=0.005)
    if calls:  # each candidate's compilation was timed too: the whole of it, not a model
        return {name: _per_call(t.median, t.compile, calls) for name, t in timed.items()}
    return {name: {"seconds": t.median} for name, t in timed.items()}


def _batched(rows, f_flat, x, seeds):
    return rows(f_flat, x, seeds)


def _xla_prices(plan):
    rates = machine_rates(jax.default_backend())
    f_flat, x = plan.f_flat, plan.x_flat
    out_dtype = plan.out_dtype
    per_kind = {}
    kinds = {
        "jvp": (_sparse.jvp_rows, plan.n, x.dtype),
        "vjp": (_sparse.vjp_rows, plan.m, out_dtype),
    }
    for kind, (rows, size, dtype) in kinds.items():
        if (kind == "jvp" and not plan.forward) or (kind == "vjp" and not plan.reverse):
            continue
        # x is an argument, not a constant: XLA would otherwise fold the primal away.
        program = functools.partial(_batched, rows, f_flat)
        costs = [measure.cost(program, x, jnp.ones((k, size), dtype)) for k in (1, 2)]
        per_kind[kind] = [(c["flops"], c["bytes accessed"]) for c in costs]

    def extrapolate(kind, k):
        if k == 0:
            return 0.0, 0.0
        (f1, b1), (f2, b2) = per_kind[kind]
        return f1 + (k - 1) * max(f2 - f1, 0.0), b1 + (k - 1) * max(b2 - b1, 0.0)

    prices = {}
    for c in plan.candidates:
        (ff, bf), (fr, br) = extrapolate("jvp", c.jvps), extrapolate("vjp", c.vjps)
        flops, nbytes = ff + fr, bf + br
        seconds = flops / rates["flops_per_s"] + nbytes / rates["bytes_per_s"]
        prices[c.name] = {"flops": flops, "bytes": nbytes, "seconds": seconds}
    return prices


def _pick(candidates, prices, basis):
    """The cheapest; among those within the basis' uncertainty of it, the one that compiles
    faster (when priced with ``calls=``), then with fewer products, then fewer VJPs
    (reverse mode keeps a tape, and a JVP costs no more than a VJP in the usual
    complexity bounds of automatic differentiation)."""
    priced = [c for c in candidates if c.name in prices]
    best = min(prices[c.name]["seconds"] for c in priced)
    band = {"model": 1.25, "timing": 1.02, "xla": 1.0}[basis]
    close = [c for c in priced if prices[c.name]["seconds"] <= band * best]
    # Priced for a few calls (``calls=``), a tie goes to the program that compiles faster.
    return min(
        close, key=lambda c: (prices[c.name].get("compile_seconds", 0.0), c.products, c.vjps)
    )


def _fmt(seconds):
    return f"{seconds * 1e3:.3g} ms"


def _reason(method, runner_up, prices, basis, plan, calls=None):
    t = prices[method.name]["seconds"]
    how = {"model": "predicted", "timing": "measured", "xla": "estimated by XLA"}[basis]
    text = f"{method.describe()}: {how} {_fmt(t)}"
    if calls:
        text += f" per call over {calls} call{'s' if calls != 1 else ''}, compilation included"
    if runner_up is not None:
        t2 = prices[runner_up.name]["seconds"]
        if t2 >= 1.02 * t:
            text += f", {t2 / max(t, 1e-30):.2f}x cheaper than {runner_up.describe()}"
        else:
            text += (
                f", within the {basis} basis' uncertainty of {runner_up.describe()} "
                f"({_fmt(t2)}), and preferred for needing fewer products or fewer VJPs"
            )
    if not plan.forward:
        text += "; f contains a custom_vjp, which has no forward mode, so only VJPs were used"
    if not plan.reverse:
        text += "; f runs a while_loop, which has no reverse mode, so only JVPs were used"
    return text


def check_calls(calls):
    """``calls``: ``None`` (steady state) or a positive int; say the fix otherwise."""
    if calls is None:
        return
    if isinstance(calls, bool) or not isinstance(calls, numbers.Integral) or calls < 1:
        raise ValueError(
            f"calls={calls!r}: pass the number of times the Jacobian will be evaluated (an "
            "int >= 1), so that compilation is shared among them, or None to choose by the "
            "steady-state time per call"
        )


def decide(
    plan, *, basis: str = "model", sparse_output: bool = False, calls: int | None = None
) -> ModeChoice:
    """Price ``plan.candidates`` on ``basis`` and pick one (see the module docstring).

    ``calls``: price each candidate per call over that many calls, its compilation
    included (modelled on the ``"model"`` basis, timed on ``"timing"``).
    """
    if basis not in BASES:
        raise ValueError(f"choose_mode: unknown basis {basis!r}; choose one of {BASES}")
    check_calls(calls)
    if calls and basis == "xla":
        raise ValueError("choose_mode: calls= needs basis='model' or 'timing', not 'xla'")
    if basis == "xla":
        prices = _xla_prices(plan)
    elif basis == "timing":
        prices = _timed_prices(plan, sparse_output, calls)
    else:
        prices = _model_prices(plan, sparse_output, calls)
    method = _pick(plan.candidates, prices, basis)
    options = None
    if calls and jax.default_backend() == "cpu":
        run = prices[method.name]["run_seconds"]  # priced with calls: run and compile apart
        if _cost.fast_compile_pays(run, calls, _cost.rates("cpu")):
            options = dict(_cost.FAST_COMPILE)
    others = [c for c in plan.candidates if c.name in prices and c.name != method.name]
    runner_up = min(others, key=lambda c: prices[c.name]["seconds"], default=None)
    table = {
        c.name: {"jvps": c.jvps, "vjps": c.vjps, **prices[c.name]}
        for c in plan.candidates
        if c.name in prices
    }
    return ModeChoice(
        mode=method.mode,
        n=plan.n,
        m=plan.m,
        fwd=prices.get("fwd"),
        rev=prices.get("rev"),
        basis=basis,
        reason=_reason(method, runner_up, prices, basis, plan, calls)
        + (
            "; compiled with LLVM at -O0: over so few calls the faster compilation saves "
            "more than the slower code loses"
            if options
            else ""
        ),
        method=method.name,
        candidates=table,
        compiler_options=options,
    )


def choose_mode(
    f,
    x,
    *,
    calibrate: bool = False,
    basis: str | None = None,
    sparse_output: bool = False,
    sparse: bool = True,
    calls: int | None = None,
) -> ModeChoice:
    """Which of ``fwd``, ``rev`` and the sparse colorings computes ``J`` fastest, and why.

    Candidates: forward mode (``n`` JVPs), reverse mode (``m`` VJPs), and the column, row
    and bi-colorings of the detected pattern (:func:`bpjax.modes.sparsity`), each priced
    by ``basis`` (module docstring). ``calibrate=True`` is ``basis="timing"``.

    Args:
      f: as for :func:`bpjax.modes.jacobian`.
      x: the point (only its shapes and dtypes matter to the choice).
      calibrate: time the leading candidates instead of predicting.
      basis: ``"model"`` (default), ``"timing"`` or ``"xla"``.
      sparse_output: price a ``BCOO`` result instead of a dense one.
      sparse: consider the colorings too (``False``: only ``fwd`` and ``rev``).
      calls: how many times the Jacobian will be evaluated; the choice then minimizes the
        time per call with each candidate's compilation shared among the calls (a
        coloring's program compiles 10-50 ms slower than ``fwd``/``rev``'s, which a few
        calls of a sub-millisecond Jacobian never earn back). ``None`` (default): the
        steady-state time per call.

    Returns:
      A :class:`ModeChoice`; ``.reason`` says what was picked and by how much.

    Example:
      >>> choose_mode(lambda x: jnp.tanh(x[1:] - x[:-1]), jnp.ones(1000)).method  # 'columns'
    """
    start = time.perf_counter()
    basis = basis or ("timing" if calibrate else "model")
    # The XLA basis prices the two dense modes only, as it always did.
    sparse = sparse and basis != "xla"
    plan = _plan.plan(f, x, mode="auto", sparse_output=sparse_output, sparse=sparse)
    choice = decide(plan, basis=basis, sparse_output=sparse_output, calls=calls)
    return choice._replace(decision_seconds=time.perf_counter() - start)
