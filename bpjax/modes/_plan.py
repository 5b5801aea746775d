"""Planning a Jacobian: flatten ``f``, find its pattern, and list the candidate methods."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bpjax.modes import _checks, _coloring, _cost, _finite, _rates, _sparse, _sparsity

MODES = ("fwd", "rev", "sparse", "auto")
COLORINGS = _sparse.COLORED


@dataclasses.dataclass(frozen=True)
class Plan:
    """What is known about ``f`` at ``x`` before choosing: sizes, pattern, candidates."""

    f_flat: object
    x_flat: jax.Array
    out: object
    n: int
    m: int
    out_dtype: object
    closed: object
    pattern: _sparsity.Pattern | None
    forward: bool
    candidates: list
    reverse: bool = True
    x: object = None  # the example pytree the plan was made at
    # Every local derivative of f finite where its inputs are (_finite): a dense mode's
    # entries outside the pattern are exact zeros without a mask.
    finite: bool = False

    def program(self, method, *, sparse_output: bool, unmasked: bool = False):
        """``fn(x_flat)``: the Jacobian by ``method`` (see :func:`_sparse.program`).
        ``unmasked``: leave a dense mode's output unmasked where ``finite`` says its entries
        outside the pattern are exact zeros already."""
        return _sparse.program(
            method,
            self.f_flat,
            self.x_flat,
            self.m,
            self.pattern,
            sparse_output=sparse_output,
            out_dtype=self.out_dtype,
            mask=not (unmasked and self.finite),
        )

    def masks(self, method, *, sparse_output: bool) -> bool:
        """Whether ``method``'s program zeroes the entries outside the pattern by default: a
        dense mode (``fwd``/``rev``) with dense output on a sparse pattern. (A coloring
        scatters only the pattern's entries; a ``BCOO`` holds them alone.)"""
        return (
            not sparse_output
            and _sparse.program_name(method) in _sparse.DENSE
            and _sparse.maskable(self.pattern, self.m, self.n)
        )

    def gathers_nonzeros(self, method, *, sparse_output: bool) -> bool:
        """Whether ``method``'s program gathers a ``BCOO``'s nonzeros out of whole batched
        products: a dense mode (``fwd``/``rev``) with ``BCOO`` output on a sparse pattern
        (how much of those products XLA then computes is its fusion's choice; see
        :data:`bpjax.modes._cost.BCOO_DENSE_UNDERPRICE`)."""
        return (
            sparse_output
            and _sparse.program_name(method) in _sparse.DENSE
            and self.pattern is not None
            and self.pattern.nnz < self.m * self.n
        )

    def leaves_mask_out(self, method, run_seconds, calls, *, sparse_output: bool) -> bool:
        """Whether ``calls=`` calls of ``method`` (``run_seconds`` each) run without its
        mask: on a CPU, where every local derivative of ``f`` is finite (the entries outside
        the pattern are exact zeros then) and the calls lose less than the mask's
        compilation costs (:func:`bpjax.modes._cost.unmasked_pays`)."""
        if not (calls and run_seconds and self.finite):
            return False
        if not self.masks(method, sparse_output=sparse_output):
            return False
        on_cpu = jax.default_backend() == "cpu"
        return on_cpu and _cost.unmasked_pays(run_seconds, calls, _rates.rates("cpu"))

    def user_program(self, method, *, sparse_output: bool, unmasked: bool = False):
        """``fn(x)``: :meth:`program` taking the pytree ``x`` the plan was made at, with
        ``jax.jacrev``'s layout unless ``sparse_output`` (what :func:`jacobian_fn` runs)."""
        fn = self.program(method, sparse_output=sparse_output, unmasked=unmasked)
        return _checks.planned_for(fn, self.x, self.out, sparse_output, "Jacobian", "jacobian_fn")


def check_mode(mode, coloring):
    if mode not in MODES:
        raise ValueError(f"jacobian: unknown mode {mode!r}; choose one of {MODES}")
    if coloring is not None and coloring not in COLORINGS:
        raise ValueError(f"jacobian: unknown coloring {coloring!r}; choose one of {COLORINGS}")
    if coloring is not None and mode != "sparse":
        raise ValueError(f"jacobian: coloring={coloring!r} needs mode='sparse', got {mode!r}")


def colored_candidates(
    pattern, forward: bool, only: str | None = None, prune: bool = False, reverse: bool = True
) -> list:
    """The colored methods for ``pattern``; ``forward``: JVPs allowed; ``reverse``: VJPs
    allowed; ``only``: one kind.

    The bicoloring is skipped when a one-sided coloring already meets its lower bound. With
    ``prune`` (the automatic mode, where ``fwd`` and ``rev`` are candidates too and the
    decision's own time counts), colorings that cannot beat the dense modes are left out
    without being computed: columns when a row is full (every column then needs its own
    color), rows when a column is full, and the bicoloring when its lower bound reaches
    ``min(m, n)``, or when a one-sided coloring is within 1.5x of that bound.
    """
    m, n = pattern.shape
    if pattern.nnz > pattern.max_nonzeros:
        return []
    wanted = [only] if only else list(COLORINGS)
    if not forward:
        wanted = [w for w in wanted if w == "rows"]
    if not reverse:
        wanted = [w for w in wanted if w == "columns"]
    if only and only not in wanted:
        hint = _checks.CUSTOM_VJP_HINT if not forward else _checks.WHILE_HINT
        raise TypeError(f"jacobian(coloring={only!r}): {hint}")
    rows, cols = pattern.row_counts, pattern.col_counts
    bound = _coloring.bicoloring_lower_bound(rows, cols)
    if prune:
        wanted = [
            w
            for w in wanted
            if not (w == "columns" and rows.max(initial=0) >= n)
            and not (w == "rows" and cols.max(initial=0) >= m)
            and not (w == "bicoloring" and bound >= min(m, n))
        ]
    found = {}
    if "columns" in wanted:
        found["columns"] = _coloring.color_columns(pattern.csr)
    if "rows" in wanted:
        found["rows"] = _coloring.rows_of(pattern.csr, columns=found.get("columns"))
    one_sided = min((c.products for c in found.values()), default=None)
    # In the automatic mode, where deciding is part of the cost, the bicoloring (a Python
    # star coloring, the slowest step) is tried only where it could save a third of the
    # products: a one-sided coloring above 1.5x the bicoloring's lower bound.
    worth_it = one_sided is None or one_sided > (1.5 * bound if prune else bound)
    if "bicoloring" in wanted and (only or worth_it):
        bi = _coloring.bicolor(pattern.csr)
        # A bicoloring that uses one kind of product only is a one-sided coloring again.
        same_side = found.get("columns" if bi.vjps == 0 else "rows" if bi.jvps == 0 else "")
        if only or same_side is None or bi.products < same_side.products:
            found["bicoloring"] = bi
    return [_sparse.colored_method(c) for c in found.values()]


def plan(
    f,
    x,
    *,
    mode: str,
    coloring: str | None = None,
    sparse_output: bool = False,
    colorings: bool = True,
) -> Plan:
    """Check the arguments, detect the pattern when needed, list the candidates for ``mode``.

    ``colorings=False`` leaves the colorings out of ``"auto"`` (and skips the detection).
    """
    check_mode(mode, coloring)
    _checks.check_flag("sparse_output", sparse_output, "jacobian")
    detecting = mode == "sparse" or (mode == "auto" and colorings) or sparse_output
    closed, pattern = None, None
    if detecting:
        f_flat, x_flat, out, m, closed = _checks.flatten_traced(f, x)
    else:
        f_flat, x_flat, out, m = _checks.flatten(f, x)
    if sparse_output:
        _checks.check_single_arrays(x, out)
    n = x_flat.size
    if detecting:
        pattern = _sparsity.detect(f_flat, x_flat, closed=closed)
        if pattern.fallbacks and mode == "sparse":
            _sparsity.warn(pattern)
        if pattern.nnz > pattern.max_nonzeros and (sparse_output or mode == "sparse"):
            raise ValueError("jacobian: " + _sparsity.too_dense_message(pattern))
    # Without a custom_vjp every primitive has a forward rule; with one, ask JAX (a trace of
    # a JVP), unless only VJPs are wanted.
    if pattern is not None and not pattern.custom_vjp:
        forward = True
    else:
        forward = mode != "rev" and _checks.has_forward_mode(f_flat, x_flat)
    if mode == "fwd" and not forward:
        raise TypeError(f"jacobian(mode='fwd'): {_checks.CUSTOM_VJP_HINT}")
    # A while loop on x has no reverse mode in JAX: confirmed by a trace of a VJP (the loop
    # may sit inside a custom_vjp, whose backward rule JAX runs instead).
    reverse = pattern is None or not pattern.while_loop or _checks.has_reverse_mode(f_flat, x_flat)
    if not reverse and (mode == "rev" or not forward):
        raise TypeError(f"jacobian(mode={mode!r}): {_checks.WHILE_HINT}")
    candidates = [
        c
        for c in _sparse.dense_methods(n, m)
        if (forward or c.name != "fwd") and (reverse or c.name != "rev")
    ]
    if mode == "sparse" or (mode == "auto" and colorings):
        colored = colored_candidates(
            pattern, forward, coloring, prune=mode == "auto", reverse=reverse
        )
        candidates = colored if mode == "sparse" else candidates + colored
    elif mode in ("fwd", "rev"):
        candidates = [c for c in candidates if c.name == mode]
    if closed is not None:
        out_dtype = closed.out_avals[0].dtype
    else:  # ravel_pytree's promotion of the output leaves
        out_dtype = jnp.result_type(*(o.dtype for o in jax.tree.leaves(out)))
    finite = closed is not None and _finite.finite_local_derivatives(closed)
    return Plan(
        f_flat,
        x_flat,
        out,
        n,
        m,
        out_dtype,
        closed,
        pattern,
        forward,
        candidates,
        reverse,
        x,
        finite,
    )
