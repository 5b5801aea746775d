"""Sparse Hessians: :func:`hessian_sparsity`, :func:`hessian_fn`, and :func:`hessian`'s modes.

For a scalar ``f`` of ``n`` variables (pytrees flattened as ``ravel_pytree`` does), the
Hessian ``H = ∇²f`` is ``n x n`` and symmetric. Dense, it costs ``n`` Hessian-vector
products; with a symmetric coloring of its pattern (:mod:`bpjax.modes._symmetric`) it costs
one per color, ``B = H S``, batched with ``vmap`` into one program, and is read back
directly (star coloring) or by substitution (acyclic coloring).

The pattern is the Jacobian pattern of ``∇f`` (:func:`~bpjax.modes.sparsity` on
``jax.grad(f)``'s jaxpr), symmetrised: a superset of ``H``'s nonzeros at every ``x``,
because ``∇f``'s program is an ordinary differentiable program whose first-order rules are
sound.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from bpjax import measure
from bpjax._validate import to_device
from bpjax.modes import _checks, _probes, _sparsity, _symmetric
from bpjax.modes import _hessian_program as _program
from bpjax.modes._hvp import HVP_ORDERS

HESSIAN_MODES = ("dense", "sparse", "auto")
# The acyclic coloring's disjoint-set forests are Python dicts: past this many variables
# (10^6 took over 15 GB) the automatic choice tries the star coloring only.
ACYCLIC_MAX_N = 1 << 18


def _flat(f, x):
    x_flat, unravel = _checks.ravel(x)
    return (lambda v: f(unravel(v))), x_flat


def _pattern(f, x, max_nonzeros=_sparsity.DEFAULT_MAX_NONZEROS, op="hessian_sparsity", refuse=True):
    """``(symmetric CSR, fallbacks)`` of ``H`` of ``f`` at ``x``'s shapes; ``(None, ())``
    past ``max_nonzeros`` unless ``refuse``."""
    _checks.check_max_nonzeros(max_nonzeros, op)
    _checks.check_scalar(f, x, op)
    f_flat, x_flat = _flat(f, x)
    pattern = _sparsity.detect(jax.grad(f_flat), x_flat, max_nonzeros=max_nonzeros)
    if pattern.csr is None:
        if not refuse:
            return None, ()
        raise ValueError(f"{op}: " + _sparsity.too_dense_message(pattern))
    return _symmetric.symmetric_pattern(pattern.csr), pattern.fallbacks


def hessian_sparsity(f, x, *, max_nonzeros: int = _sparsity.DEFAULT_MAX_NONZEROS):
    """The symmetric nonzero pattern of ``H = ∇²f(x)``, from ``f``'s jaxpr.

    The Jacobian pattern of ``∇f`` (so the second-order couplings come from the gradient
    program: a product ``u·v`` couples ``u``'s and ``v``'s inputs, a nonlinear elementwise
    op couples its inputs among themselves, a linear op couples nothing), united with its
    transpose. It holds for every ``x`` of these shapes and never misses a nonzero; where a
    primitive of the gradient is read conservatively a :class:`~bpjax.modes.SparsityWarning`
    names it.

    Args:
      f: a scalar function of one pytree of float arrays.
      x: a point (only shapes and dtypes are used); ``n`` scalars in all.
      max_nonzeros: refuse patterns with more nonzeros than this.

    Returns:
      A ``BCOO`` ``(n, n)`` of ``uint8`` ones at the structural nonzeros (sorted row-major).

    Example:
      >>> P = hessian_sparsity(lambda x: jnp.sum(x[1:] * x[:-1]), jnp.ones(4))
      >>> P.todense()   # [[0 1 0 0] [1 0 1 0] [0 1 0 1] [0 0 1 0]]
    """
    sym, fallbacks = _pattern(f, x, max_nonzeros)
    if fallbacks:
        warnings.warn(
            "hessian_sparsity: the pattern is conservative (never misses a nonzero) because "
            "of: " + "; ".join(fallbacks),
            _sparsity.SparsityWarning,
            stacklevel=2,
        )
    # Built on the host: jnp.ones would compile a fill for every new count of nonzeros.
    return _program.bcoo(sym, to_device(np.ones(sym.nnz, np.uint8)))


class HessianFn:
    """``x ↦ H(x)`` for inputs shaped like the example, with the method decided once.

    Attributes: ``method`` (``"dense"``, ``"star"`` or ``"acyclic"``), ``order`` (one of
    :data:`~bpjax.modes.HVP_ORDERS`), ``products`` (HVPs per call), ``coloring`` (the
    :class:`~bpjax.modes.SymmetricColoring`, ``None`` for dense), ``pattern`` (the
    symmetric ``(n, n)`` boolean SciPy CSR of H's structural nonzeros, as
    :func:`hessian_sparsity` finds it; ``None`` for ``mode="dense"``, or when ``"auto"``
    stopped building it as too dense to compress), ``reason`` (why, in words),
    ``candidates`` (name → measured seconds per call, when timed) and
    ``decision_seconds``.
    """

    def __init__(
        self, fn, *, method, order, coloring, reason, candidates, seconds, pattern=None,
        compiled=None,
    ):  # fmt: skip
        self._fn = jax.jit(fn)
        # The timed decision compiled the chosen program for x_example: calls with those
        # shapes and dtypes run that executable rather than compiling it again.
        self._compiled = compiled
        self.method, self.order, self.coloring = method, order, coloring
        self.pattern = pattern
        self.products = coloring.count if coloring is not None else None
        self.reason, self.candidates, self.decision_seconds = reason, candidates, seconds

    def __call__(self, x):
        if self._compiled is not None and not any(
            isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)
        ):
            try:
                return self._compiled(x)
            except TypeError:
                pass  # other shapes or dtypes: the jitted path says what was planned for
        return self._fn(x)

    def __repr__(self):
        return f"HessianFn(method={self.method!r}, order={self.order!r}, products={self.products})"


def _check_options(op, mode, order, coloring, sparse_output, x):
    if mode not in HESSIAN_MODES:
        raise ValueError(f"{op}: mode must be one of {HESSIAN_MODES}, got {mode!r}")
    if order is not None and order not in HVP_ORDERS:
        raise ValueError(f"{op}: order must be None or one of {HVP_ORDERS}, got {order!r}")
    if coloring is not None and coloring not in _symmetric.KINDS:
        raise ValueError(
            f"{op}: coloring must be None or one of {_symmetric.KINDS}, got {coloring!r}"
        )
    _checks.check_flag("sparse_output", sparse_output, op)
    if sparse_output and mode == "dense":
        raise ValueError(
            f"{op}: sparse_output=True needs mode='sparse' or 'auto' (a dense Hessian has "
            "no pattern to store); use mode='sparse', or densify with jsparse.BCOO.fromdense"
        )
    if sparse_output and len(jax.tree.leaves(x)) != 1:
        raise ValueError(
            f"{op}: sparse_output=True needs x to be a single array (the BCOO is (n, n) in "
            f"its row-major order); x has {len(jax.tree.leaves(x))} leaves. Flatten it with "
            "jax.flatten_util.ravel_pytree, or use sparse_output=False for jax.hessian's layout"
        )


DECISION_ROUNDS = 7  # interleaved rounds of the timed decision, each at least 5 ms


def _orders(f_flat, x_flat):
    """The orders that trace for ``f`` (rev-over-fwd fails on a ``custom_vjp``)."""
    ok = []
    for order in HVP_ORDERS:
        try:
            jax.eval_shape(lambda x, o=order: _program.hvp_rows(f_flat, x, x[None], o), x_flat)
        except (NotImplementedError, TypeError, ValueError):
            continue
        ok.append(order)
    return ok


def _fmt(seconds):
    return f"{seconds * 1e3:.3g} ms"


def _decide(f_flat, x_flat, sym, mode, coloring, order, sparse_output, x, compiled_out):
    """``(method, order, coloring, reason, candidates)`` by a short timed probe; the timed
    programs (as ``hessian_fn`` runs them, on ``x``) compiled into ``compiled_out``."""
    n = x_flat.size
    kinds = [coloring] if coloring else list(_symmetric.KINDS)
    if coloring is None and n > ACYCLIC_MAX_N:
        kinds = ["star"]
    colorings = {k: _symmetric.color_symmetric(sym, kind=k) for k in kinds}
    if len(colorings) == 2 and colorings["acyclic"].count >= colorings["star"].count:
        del colorings["acyclic"]  # same products, and a sequential substitution on top
    best = min(colorings.values(), key=lambda c: c.count)
    if mode == "auto" and best.count >= n // 2:
        o = order or "fwd-over-rev"
        why = (
            f"dense ({n} HVPs, {o}): the best symmetric coloring needs {best.count} colors "
            f"for n = {n}, too many to gain from compression"
        )
        return "dense", o, None, why, None
    orders = [order] if order else _orders(f_flat, x_flat)
    pairs = [(k, o) for k in colorings for o in orders]
    if len(pairs) == 1:
        (k, o) = pairs[0]
        c = colorings[k]
        return k, o, c, f"{k} coloring, {c.count} HVPs by {o} (given)", None
    # Timed in the output asked for: the dense layout is not the same work for every
    # candidate (on the 2-D stencil at n = 4096 the star coloring's took 40 ms against the
    # acyclic one's 25 ms, their BCOO programs 0.2-0.3 ms).
    programs = {
        f"{k} {o}": _layout(
            _program.program(f_flat, colorings[k], o, sparse_output=sparse_output),
            x,
            sparse_output,
        )
        for k, o in pairs
    }
    # What an earlier process measured for the same Hessian on this machine, if kept.
    digest = _probes.key(
        f_flat,
        x_flat,
        "hessian",
        str(jax.tree.structure(x)),  # the layout of H the programs write
        f"sparse_output {sparse_output}",
        *sorted(programs),
        arrays=[colorings[k].colors for k in sorted(colorings)],
    )
    seconds = _probes.kept(digest, list(programs))
    timed = "timed by an earlier probe on this machine (kept)" if seconds else "timed"
    if seconds is None:
        seconds = measure.paired_seconds(
            programs,
            x,
            rounds=DECISION_ROUNDS,
            min_round_seconds=0.005,
            compiled_out=compiled_out,
        )
        _probes.keep(digest, seconds)
    name = min(seconds, key=seconds.get)
    k, o = name.split(" ")
    c = colorings[k]
    others = ", ".join(
        f"{m} {_fmt(s)}" for m, s in sorted(seconds.items(), key=lambda t: t[1]) if m != name
    )
    rounds = f" + {c.substitution.rounds} substitution rounds" if c.substitution else ""
    why = (
        f"{k} coloring, {c.count} HVPs{rounds} by {o}: measured {_fmt(seconds[name])} per "
        f"call, fastest of {len(seconds)} {timed} ({others}); row-count bound {c.row_bound}"
    )
    if name in compiled_out:
        compiled_out["chosen"] = compiled_out[name]
    return k, o, c, why, seconds


def _layout(fn, x, sparse_output):
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)
    return _checks.planned_for(fn, x, like, sparse_output, "Hessian", "hessian_fn")


def _build(op, f, x, mode, sparse_output, coloring, order):
    """``(run, decision, compiled, pattern)``: ``compiled`` is the chosen program's
    executable for ``x`` where the decision compiled it (timed candidates), else ``None``;
    ``pattern`` the symmetric CSR pattern, ``None`` where none was built."""
    _check_options(op, mode, order, coloring, sparse_output, x)
    if mode == "dense":
        _checks.check_scalar(f, x, op)
        f_flat, x_flat = _flat(f, x)
        o = order or "fwd-over-rev"
        fn = _program.program(f_flat, None, o, sparse_output=False)
        decision = ("dense", o, None, f"dense ({x_flat.size} HVPs, {o}): mode='dense'", None)
        return _layout(fn, x, False), decision, None, None
    f_flat, x_flat = _flat(f, x)
    n = x_flat.size
    # In auto mode a pattern denser than a coloring can use is not built in full: the
    # interpreter stops at the budget (a dense 4096-variable pattern takes a minute).
    budget = int(_symmetric.DENSE_FRACTION * n * n) + n if mode == "auto" else None
    timed = {}  # the timed candidates' executables, if the decision timed any
    sym, _ = _pattern(f, x, budget or _sparsity.DEFAULT_MAX_NONZEROS, op, refuse=mode != "auto")
    if mode == "sparse" and coloring is None:
        coloring = "star"
    if sym is None:
        o = order or "fwd-over-rev"
        why = (
            f"dense ({n} HVPs, {o}): the Hessian's pattern has more than "
            f"{_symmetric.DENSE_FRACTION:.0%} nonzeros, too many to gain from compression"
        )
        decision = ("dense", o, None, why, None)
    else:
        decision = _decide(f_flat, x_flat, sym, mode, coloring, order, sparse_output, x, timed)
    method, o, c, _, _ = decision
    if method == "dense" and sparse_output:
        dense = _program.program(f_flat, None, o, sparse_output=False)
        full = _symmetric.symmetric_pattern(np.ones((x_flat.size,) * 2))
        rows, cols = _program.coords(full).T
        fn = lambda v: _program.bcoo(full, dense(v)[rows, cols])  # noqa: E731
    else:
        fn = _program.program(f_flat, c, o, sparse_output=sparse_output)
    return _layout(fn, x, sparse_output), decision, timed.get("chosen"), sym


def hessian_fn(
    f,
    x_example,
    *,
    mode: str = "auto",
    sparse_output: bool = False,
    coloring: str | None = None,
    order: str | None = None,
) -> HessianFn:
    """Decide once how to compute the Hessian of a scalar ``f``; return a compiled ``x ↦ H``.

    For a Newton or trust-region loop: the pattern (:func:`hessian_sparsity`), the symmetric
    colorings and the HVP order are settled here, and the returned :class:`HessianFn` runs
    one jit-compiled program of ``products`` batched HVPs plus the recovery.

    Args:
      f: a scalar function of one pytree of float arrays (``n`` scalars in all).
      x_example: a point with the shapes and dtypes of the later inputs.
      mode: ``"auto"`` (time star and acyclic colorings in each HVP order, a few calls each,
        keep the fastest; dense HVPs when no coloring needs fewer than ``n/2`` colors;
        the times are kept on the machine, so a later process reads them instead of
        timing again: see :func:`~bpjax.modes.forget_probes`),
        ``"sparse"`` (star, or ``coloring``) or ``"dense"`` (``n`` HVPs).
      sparse_output: return a ``jax.experimental.sparse.BCOO`` ``(n, n)`` (needs ``x`` a
        single array) instead of ``jax.hessian``'s layout.
      coloring: ``"star"`` or ``"acyclic"`` to force one.
      order: one of :data:`~bpjax.modes.HVP_ORDERS` to force it (else timed).

    Returns:
      A :class:`HessianFn`: ``H`` in ``jax.hessian``'s layout (``H[i][j]`` of shape
      ``x_i.shape + x_j.shape``), or a BCOO.

    Example:
      >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)       # tridiagonal Hessian
      >>> hess = hessian_fn(f, jnp.ones(1000))
      >>> hess.method, hess.products   # ('star', 3) or ('acyclic', 2): whichever ran faster
      >>> hess.reason                  # the measured times of every candidate, in words
    """
    start = time.perf_counter()
    run, (method, o, c, reason, candidates), compiled, pattern = _build(
        "hessian_fn", f, x_example, mode, sparse_output, coloring, order
    )
    seconds = time.perf_counter() - start
    return HessianFn(
        run,
        method=method,
        order=o,
        coloring=c,
        reason=reason,
        candidates=candidates,
        seconds=seconds,
        pattern=pattern,
        compiled=compiled,
    )


def hessian(f, x, *, mode="dense", sparse_output=False, coloring=None, order=None):
    """The Hessian of a scalar ``f`` at ``x``: ``mode="dense"`` (the default, as
    ``jax.hessian``: forward-over-reverse), ``"sparse"`` or ``"auto"``.

    The same as ``hessian_fn(f, x, ...)(x)`` (see :func:`hessian_fn` for the arguments),
    except that ``mode="sparse"`` without an ``order`` uses forward-over-reverse rather
    than timing the three orders, which only pays over many calls.

    Returns:
      ``H[i][j]`` blocks of shape ``x_i.shape + x_j.shape`` for pytree ``x``, or a BCOO
      ``(n, n)`` with ``sparse_output=True``.
    """
    if mode == "dense" and not sparse_output and coloring is None and order is None:
        _checks.check_inputs(x)
        _checks.check_scalar(f, x, "hessian")
        return jax.jacfwd(jax.jacrev(f))(x)
    if mode == "sparse" and order is None:
        order = "fwd-over-rev"
    run, *_ = _build("hessian", f, x, mode, sparse_output, coloring, order)
    # Compiled even for one call: op by op, k vmapped HVPs and the recovery's gathers
    # dispatch hundreds of small kernels, slower than compiling them into one program.
    return jax.jit(run)(x)
