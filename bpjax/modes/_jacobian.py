"""The public Jacobian entry points: :func:`jacobian` and :func:`jacobian_fn`."""

from __future__ import annotations

import math
import threading
import time
import warnings

import jax

from bpjax.modes import _auto, _basis_probe, _checks, _plan, _rates


class JacobianFn:
    """``x ↦ J(x)`` for inputs shaped like the example, with the mode decided once.

    Calling it runs one jit-compiled program (compiled on the first call). Attributes:

    * ``mode``: ``"fwd"``, ``"rev"`` or ``"sparse"``; ``method``: ``"fwd"``, ``"rev"``,
      ``"columns"``, ``"rows"`` or ``"bicoloring"``;
    * ``choice``: the :class:`~bpjax.modes.ModeChoice` with the reason (``None`` when the
      mode was given and nothing had to be chosen);
    * ``pattern``: the detected sparsity (:class:`~bpjax.modes.Pattern`, or ``None`` for
      the dense modes); ``coloring``: the :class:`~bpjax.modes.Coloring` used, if any;
    * ``decision_seconds``: wall time spent deciding in :func:`jacobian_fn` (tracing,
      sparsity, coloring, any timing), not counting the compilation of the Jacobian
      program itself;
    * ``compiler_options``: the XLA options the program is compiled with (``None``: the
      defaults; see ``calls=`` in :func:`jacobian_fn`);
    * ``probe_pending``: the default basis left a probe for the calls to run (see
      :func:`jacobian_fn`), ``probe_due_in`` calls from now; ``probe_seconds``: how long it
      took once run (``None`` before).

    :meth:`settle` runs a pending probe now.
    """

    def __init__(
        self, fn, *, method, choice, pattern, decision_seconds, compiled=None, pending=None
    ):
        self.pattern = pattern
        self.decision_seconds = decision_seconds
        self.probe_seconds = None
        self._pending = pending
        self._adopt(fn, method, choice, compiled)

    def _adopt(self, fn, method, choice, compiled):
        self.compiler_options = choice.compiler_options if choice is not None else None
        self._fn = jax.jit(fn, compiler_options=self.compiler_options)
        # The probe compiled the chosen program for x_example while deciding: calls with
        # those shapes and dtypes run that executable rather than compiling it again.
        self._compiled = compiled
        # JAX takes compiler options on a top-level jit only: inside the caller's jit the
        # program is traced into theirs and compiled with their options.
        self._traced = jax.jit(fn) if self.compiler_options else self._fn
        self.method = method.name
        self.mode = method.mode
        self.coloring = method.coloring
        self.choice = choice

    @property
    def probe_pending(self) -> bool:
        """Whether a probe is left for the calls to run (see :meth:`settle`)."""
        return self._pending is not None

    @property
    def probe_due_in(self) -> int | None:
        """Calls left before the pending probe runs (``None``: none is pending)."""
        p = self._pending
        return None if p is None else max(1, math.ceil(p.budget / p.per_call) - p.calls)

    def settle(self) -> JacobianFn:
        """Run the pending probe now (compile and time the candidates the model could not
        rank, and switch to the fastest); nothing to do if none is pending. Returns self.

        A probe runs once: if it raises, the error propagates here (from a call it becomes
        a ``RuntimeWarning``) and the program chosen before it stays."""
        pending, self._pending = self._pending, None
        if pending is None:
            return self
        start = time.perf_counter()
        plan, sparse_output = pending.plan, pending.sparse_output
        basis = _basis_probe.ProbeBasis(min_seconds=0.0)
        method, choice, compiled = _auto.decide(plan, basis=basis, sparse_output=sparse_output)
        fn = plan.user_program(method, sparse_output=sparse_output)
        self.probe_seconds = time.perf_counter() - start
        self._adopt(fn, method, choice._replace(decision_seconds=self.decision_seconds), compiled)
        return self

    def __call__(self, x):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)):
            return self._traced(x)
        if self._pending is not None and self._pending.due():
            try:
                self.settle()
            except Exception as error:  # noqa: BLE001 - a failed probe must not fail a call
                warnings.warn(
                    f"jacobian_fn: the probe its calls ran failed ({type(error).__name__}: "
                    f"{error}); the calls keep {self.method!r}. JacobianFn.settle() raises it.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except TypeError:
                pass  # other shapes or dtypes: the jitted path says what was planned for
        return self._fn(x)

    def __repr__(self):
        due = f", probe_due_in={self.probe_due_in}" if self.probe_pending else ""
        return (
            f"JacobianFn(method={self.method!r}, decision_seconds={self.decision_seconds:.3g}{due})"
        )


def _build(f, x, mode, coloring, sparse_output, basis, calls=None, *, defer=False):
    """Plan, decide, and build the program: ``(run, method, choice, pattern, compiled,
    pending)``, ``compiled`` the program's executable for ``x`` if deciding compiled it,
    else None; ``pending``: with ``defer`` and the default probe basis, the probe left for
    the calls to run (:class:`_Pending`), else None."""
    _checks.check_calls(calls)
    plan = _plan.plan(f, x, mode=mode, coloring=coloring, sparse_output=sparse_output)
    choice = compiled = pending = None
    if len(plan.candidates) == 1:
        method = plan.candidates[0]
    else:
        if defer and calls is None and isinstance(basis, str) and basis == "probe":
            # jacobian_fn's default: no floor below which the probe is not worth it, as the
            # calls decide when it is (see _Pending).
            basis = _basis_probe.ProbeBasis(min_seconds=0.0, defer=True)
        method, choice, compiled = _auto.decide(
            plan, basis=basis, sparse_output=sparse_output, calls=calls
        )
        names = getattr(basis, "pending", None)
        if names:
            priced = choice.candidates[method.name]
            per_call = priced.get("predicted", priced["seconds"])
            r = _rates.rates(jax.default_backend())
            budget = _basis_probe.probe_cost(len(names), per_call, r)
            pending = _Pending(plan, sparse_output, per_call, budget)
            choice = choice._replace(
                reason=choice.reason
                + f"; the model cannot rank {' and '.join(names)} surely: a probe will time them "
                f"once the calls have run about {budget:.2g} s by its prices "
                "(JacobianFn.settle() times them now)"
            )
    unmasked = choice is not None and choice.unmasked
    run = plan.user_program(method, sparse_output=sparse_output, unmasked=unmasked)
    return run, method, choice, plan.pattern, compiled, pending


class _Pending:
    """A probe left for later: the model could not rank the leading candidates, and no probe
    of this Jacobian is kept on the machine. Timing them costs about ``budget`` seconds
    (:func:`~bpjax.modes._basis_probe.probe_cost`), which only many calls earn back, so the
    calls run it once the model's price of theirs (``per_call`` each) adds up to ``budget``:
    as in the ski-rental problem, the probe then at most doubles what the calls have cost
    so far, and Jacobians called a few times never pay for it."""

    def __init__(self, plan, sparse_output, per_call, budget):
        self.plan, self.sparse_output = plan, sparse_output
        self.per_call, self.budget = max(per_call, 1e-12), budget
        self.calls = 0
        self._fired = False
        self._lock = threading.Lock()  # calls from several threads: one of them runs it

    def due(self) -> bool:
        """Count a call; True for exactly one call, the one that brings the count to the
        budget."""
        with self._lock:
            if self._fired:
                return False
            self.calls += 1
            self._fired = self.calls * self.per_call >= self.budget
            return self._fired


@_checks.refuse_removed_keywords
def jacobian_fn(
    f,
    x_example,
    *,
    mode: str = "auto",
    sparse_output: bool = False,
    coloring: str | None = None,
    basis="probe",
    calls: int | None = None,
) -> JacobianFn:
    """Decide once how to compute the Jacobian of ``f``; return a compiled ``x ↦ J``.

    For a Newton loop or an implicit ODE solver, where the Jacobian of the same ``f`` is
    needed at many points of the same shapes: sparsity, coloring and the choice of mode are
    computed here, once, and the returned :class:`JacobianFn` only runs the chosen program.

    Args:
      f: a function of one pytree of float arrays, returning a pytree of float arrays.
      x_example: a point with the shapes and dtypes of the later inputs (``n`` scalars).
      mode: ``"fwd"``, ``"rev"``, ``"sparse"`` (detect the pattern, color it, compress and
        decompress: column, row or bicoloring, whichever needs the fewest products, then
        the cheapest) or ``"auto"`` (any of these, by :func:`choose_mode`).
      sparse_output: return a ``jax.experimental.sparse.BCOO`` of shape ``(m, n)`` instead
        of a dense Jacobian; needs ``x`` and ``f(x)`` to be single arrays (flattened in
        row-major order).
      coloring: with ``mode="sparse"``, force ``"columns"``, ``"rows"`` or ``"bicoloring"``.
      basis: with ``mode="auto"`` (or ``"sparse"`` with several colorings), how the
        candidates are priced: ``"probe"`` (``jacobian_fn``'s default: predicted, and the
        few the model cannot separate compiled and timed, by a probe the calls run once
        the model's price of them adds up to the probe's own cost (0.2-1 s on a 2-core
        CPU), so a Jacobian called a few times never pays for it and one called many
        times pays at most as much again as its calls took; :meth:`JacobianFn.settle`
        runs it at once, a probe kept on this machine by an earlier process is read at
        once; the probe's executable of the winner serves the calls, not compiled again),
        ``"model"`` (``jacobian``'s default: predicted, nothing compiled),
        ``"timing"`` (the leading candidates compiled and timed), ``"xla"`` (XLA's
        estimates) or a :class:`~bpjax.modes.CostBasis` of your own.
      calls: with ``mode="auto"`` or ``"sparse"``, how many times you will call the result:
        the choice then counts each candidate's compilation, shared among the calls, so a
        few calls of a small Jacobian get the program that compiles fastest rather than
        the one that runs fastest, and on a CPU, where that pays, LLVM at -O0 (compiles
        15-20% faster, runs up to 3x slower) and, for ``fwd``/``rev`` on a sparse pattern
        of an ``f`` whose local derivatives are all finite, no mask outside the pattern
        (those entries are exact zeros anyway; the mask costs 7-18 ms of compilation).
        ``None`` (default): choose by the time per call, for many calls.

    Returns:
      A :class:`JacobianFn`; its output has ``jax.jacrev``'s layout unless ``sparse_output``.

    Example:
      >>> f = lambda x: x[1:] * x[:-1]          # R^5 -> R^4, bidiagonal Jacobian
      >>> jac = jacobian_fn(f, jnp.ones(5), mode="sparse")
      >>> jac.method, jac.coloring.products     # ('columns', 2)
    """
    start = time.perf_counter()
    fn, method, choice, pattern, compiled, pending = _build(
        f, x_example, mode, coloring, sparse_output, basis, calls, defer=True
    )
    seconds = time.perf_counter() - start
    if choice is not None:
        choice = choice._replace(decision_seconds=seconds)
    return JacobianFn(
        fn,
        method=method,
        choice=choice,
        pattern=pattern,
        decision_seconds=seconds,
        compiled=compiled,
        pending=pending,
    )


@_checks.refuse_removed_keywords
def jacobian(
    f,
    x,
    *,
    mode: str = "auto",
    sparse_output: bool = False,
    coloring: str | None = None,
    basis="model",
):
    """The Jacobian of ``f`` at ``x`` by forward, reverse, sparse or automatic mode.

    The same as ``jacobian_fn(f, x, mode=..., ...)(x)``, run op by op instead of compiled as
    one program; see :func:`jacobian_fn` for the arguments. As with ``jax.jacfwd``, each
    primitive compiles once per new shape and is cached: on shapes seen before a call
    compiles nothing, on new shapes it compiles many small programs (on a 2-core Xeon,
    sparse, n = 64-4096: 0.4-0.9 s the first time, 10-45 ms after, where ``jacobian_fn``
    took 0.07-0.75 s each time). Works under ``jax.jit`` too (then only the shapes of ``x``
    are used to plan).

    Returns:
      ``jax.jacrev``'s layout: the output's pytree structure, each leaf holding the input's
      structure with arrays of shape ``out_leaf.shape + in_leaf.shape``; or a ``BCOO``
      ``(m, n)`` with ``sparse_output=True``.
    """
    fn, *_ = _build(f, x, mode, coloring, sparse_output, basis)
    # Not jit-compiled here: a one-off call runs op by op (as jax.jacfwd does), and inside
    # a user's jit it is traced into the caller's program. For repeated calls on the same
    # shapes, jacobian_fn compiles once.
    return fn(x)
