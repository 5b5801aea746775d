"""The public Jacobian entry points: :func:`jacobian` and :func:`jacobian_fn`."""

from __future__ import annotations

import time

import jax

from bpjax.modes import _auto, _checks, _plan


class JacobianFn:
    """``x ↦ J(x)`` for inputs shaped like the example, with the mode decided once.

    Calling it runs one jit-compiled program (compiled on the first call). Attributes:

    * ``mode``: ``"fwd"``, ``"rev"`` or ``"sparse"``; ``method``: ``"fwd"``, ``"rev"``,
      ``"columns"``, ``"rows"`` or ``"bicoloring"``;
    * ``choice``: the :class:`~bpjax.modes.ModeChoice` with the reason (``None`` when the
      mode was given and nothing had to be chosen);
    * ``pattern``: the detected sparsity (:class:`~bpjax.modes.Pattern`, or ``None`` for
      the dense modes); ``coloring``: the :class:`~bpjax.modes.Coloring` used, if any;
    * ``decision_seconds``: wall time spent deciding (tracing, sparsity, coloring, any
      timing), not counting the compilation of the Jacobian program itself;
    * ``compiler_options``: the XLA options the program is compiled with (``None``: the
      defaults; see ``calls=`` in :func:`jacobian_fn`).
    """

    def __init__(self, fn, *, method, choice, pattern, decision_seconds, compiled=None):
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
        self.pattern = pattern
        self.decision_seconds = decision_seconds

    def __call__(self, x):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)):
            return self._traced(x)
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except TypeError:
                pass  # other shapes or dtypes: the jitted path says what was planned for
        return self._fn(x)

    def __repr__(self):
        return f"JacobianFn(method={self.method!r}, decision_seconds={self.decision_seconds:.3g})"


def _build(f, x, mode, coloring, sparse_output, basis, calls=None):
    """Plan, decide, and build the program: ``(run, method, choice, pattern, compiled)``,
    ``compiled`` the program's executable for ``x`` if deciding compiled it, else None."""
    _checks.check_calls(calls)
    plan = _plan.plan(f, x, mode=mode, coloring=coloring, sparse_output=sparse_output)
    choice = compiled = None
    if len(plan.candidates) == 1:
        method = plan.candidates[0]
    else:
        method, choice, compiled = _auto.decide(
            plan, basis=basis, sparse_output=sparse_output, calls=calls
        )
    unmasked = choice is not None and choice.unmasked
    run = plan.user_program(method, sparse_output=sparse_output, unmasked=unmasked)
    return run, method, choice, plan.pattern, compiled


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
        few the model cannot separate compiled and timed; the winner's executable is the
        one the returned function calls, not compiled again), ``"model"`` (``jacobian``'s
        default: predicted, nothing compiled),
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
    fn, method, choice, pattern, compiled = _build(
        f, x_example, mode, coloring, sparse_output, basis, calls
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
