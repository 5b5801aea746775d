"""``remat.while_loop``: a ``lax.while_loop`` that reverse mode can differentiate, in c states.

JAX cannot reverse-differentiate ``lax.while_loop`` (jax-ml/jax#2469): the backward pass would
need every step's residuals, and the number of steps is only known at run time. This loop keeps
a fixed buffer of c states instead, placed online while the loop runs (``_online.py``: optimal
in recomputations for L ≤ β(c, 2), optimal in repetition number for every L), and reverses
each segment between them with revolve once the trip count L is known.

Three passes, each a ``lax.while_loop``, over the body on flat leaves (``_while_step.py``):

* **forward** (``_while_forward.py``): ``x ← body(x)`` while ``cond(x)``, storing each state
  the placement rule (:mod:`~bpjax.remat._online`) keeps, once the next step shows it was
  not the last input: a precomputed table for the first 4096 decisions (65,536 when
  c < 128), then the rule's O(1)-amortized traced form. Under ``vmap`` it runs over lanes
  with masked writes.
* **reverse sweep** (``_while_reverse.py``): from t = L − 1 down to 0, restore the latest
  checkpoint ≤ t, advance to where revolve stores next or to t, and turn at t with the
  ``jax.vjp`` of step t. Only the closed-over arrays JAX differentiates get cotangents
  (symbolic zeros in the ``custom_jvp`` rule).
* **tangent** (``_tangent``): forward mode, the state and its tangent carried together for L
  steps (what ``jax.jvp`` runs).

How JAX sees it: a ``custom_jvp`` whose primal is a plain ``lax.while_loop`` (no buffer when no
derivative is taken) and whose tangent is a linear map (``_linear.apply``) evaluated by the
tangent loop and transposed by the reverse sweep. So ``jax.jvp``, ``jax.grad``, ``jax.vmap``
(a batch of loops with different trip counts), ``jax.jit`` and forward-over-reverse
(``jax.hessian``) all work; reverse-over-reverse raises
:class:`~bpjax.remat._linear.ReverseOverReverseError` with the fix.

Memory: the c slots, the live and previous states and the cotangent, whatever L turns out to
be. Body evaluations per gradient: :func:`~bpjax.remat.online_evaluations`.

Known inefficiencies:

* A turn evaluates the body again inside ``jax.vjp``, as every checkpointing scheme that
  stores states (not residuals) does.
* Under ``vmap`` the lanes' schedules differ, so the reverse sweep's turn/advance branch
  becomes a select that computes both, and every lane runs as many iterations as the longest.
* ``jax.jvp`` runs the forward pass twice: the checkpointed one (the primal of the rule; XLA
  drops its buffer when nothing reads it) and the tangent loop.
* Past the table, XLA copies the forward's (c,) bookkeeping arrays (the slot list and the
  stored steps) once or twice per step around the search's loop: ~3 µs a step at c = 10^4
  on a 2-core Xeon, nothing measurable at c ≤ 100. Straight-line searches and a single
  scatter were tried and were slower (XLA then recomputes the index chains in many fusions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bpjax.remat import _linear
from bpjax.remat._while_args import (
    check_body,
    check_cond,
    check_int,
    close_over,
    inexact,
    strong_array,
)
from bpjax.remat._while_forward import forward
from bpjax.remat._while_reverse import reverse
from bpjax.remat._while_step import Spec, differentiable_step, going_on, pick, put, step

__all__ = ["while_loop"]


def while_loop(
    cond_fun: Callable,
    body_fun: Callable,
    init_val,
    *,
    checkpoints: int,
    max_steps: int | None = None,
):
    """``lax.while_loop`` that ``jax.grad`` can differentiate, keeping ``checkpoints`` states.

    Runs ``val = body_fun(val)`` while ``cond_fun(val)`` is true, exactly as
    ``lax.while_loop(cond_fun, body_fun, init_val)``. Reverse mode (``grad``, ``vjp``) keeps
    ``checkpoints`` copies of the state however many steps the loop takes, and recomputes the
    rest; ``jax.jvp``, ``jit``, ``vmap`` and forward-over-reverse (``jax.hessian``) work too.

    Args:
      cond_fun: ``cond_fun(val) -> bool[]``, a boolean scalar.
      body_fun: ``body_fun(val) -> val``, returning the same pytree structure, shapes and
        dtypes. It may close over arrays, traced ones included (a parameter being
        differentiated): their gradients are returned.
      init_val: the initial state, a pytree of arrays (``{"x": (d,), "t": ()}``, say).
      checkpoints: c ≥ 1, how many states the backward pass may keep (x_0 included).
        Body evaluations per gradient are ``2L + Σ t(n_i, c − i)`` (see
        :func:`~bpjax.remat.online_evaluations`): the offline optimum ``t(L, c) + L + 1``
        while L ≤ (c + 1)(c + 2)/2, and never more than ``r(L, c)`` evaluations of any step.
      max_steps: if given, stop after this many steps even if ``cond_fun`` still holds.

    Returns:
      The final state, shaped like ``init_val``.

    Raises:
      TypeError: ``cond_fun`` does not return a boolean scalar, ``body_fun`` changes the
        state's structure or dtypes, or ``checkpoints`` / ``max_steps`` is not an int.
      ValueError: ``body_fun`` changes a shape, ``checkpoints < 1`` or ``max_steps < 0``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from bpjax import remat
      >>> def halve(a):  # halve x until it is below 1: the trip count depends on a
      ...     return remat.while_loop(
      ...         lambda s: s[0] >= 1.0, lambda s: (s[0] * a, s[1] + 1), (jnp.float32(100.0), 0),
      ...         checkpoints=4)
      >>> x, steps = halve(0.5)
      >>> int(steps), float(x)
      (7, 0.78125)
      >>> round(float(jax.grad(lambda a: halve(a)[0])(0.5)), 4)  # d(100 a^7)/da at a = 0.5
      10.9375
    """
    check_int("checkpoints", checkpoints, minimum=1)
    if max_steps is not None:
        check_int("max_steps", max_steps, minimum=0)
    init_val = jax.tree_util.tree_map_with_path(lambda p, x: strong_array(x, p), init_val)
    leaves, tree = jax.tree.flatten(init_val)
    check_cond(cond_fun, init_val)
    check_body(body_fun, init_val)
    body, body_consts = close_over(body_fun, init_val)
    cond, cond_consts = close_over(cond_fun, init_val)
    spec = Spec(
        body=body,
        cond=cond,
        tree=tree,
        checkpoints=int(checkpoints),
        max_steps=None if max_steps is None else int(max_steps),
        inexact=tuple(inexact(x) for x in leaves),
    )
    out = _loop(spec, list(cond_consts), list(body_consts), leaves)
    return jax.tree.unflatten(tree, out)


# ---------------------------------------------------------------------------------------------
# The primal, forward and tangent loops (the reverse sweep is in _while_reverse.py).


def _plain(spec: Spec, cond_consts, consts, xs):
    """The primal when nothing is differentiated: ``lax.while_loop`` with a step count."""

    def going(carry):
        return going_on(spec, cond_consts, carry[1], carry[0])

    def advance(carry):
        return carry[0] + 1, step(spec, consts, carry[1])

    return lax.while_loop(going, advance, (jnp.int32(0), list(xs)))[1]


def _tangent(spec: Spec, const_mask, res, tangents):
    """Forward mode: the tangent of x_L's inexact leaves, carried beside the state for L steps."""
    consts, xs, _, _, _, n_steps = res
    d_consts, d_x = tangents

    def advance(carry):
        i, x, dx = carry
        g = differentiable_step(spec, consts, x, const_mask)
        primals = (pick(x, spec.inexact), pick(consts, const_mask))
        _, dx, x = jax.jvp(g, primals, (dx, list(d_consts)), has_aux=True)
        return i + 1, x, dx

    carry = (jnp.int32(0), list(xs), list(d_x))
    return lax.while_loop(lambda carry: carry[0] < n_steps, advance, carry)[2]


# ---------------------------------------------------------------------------------------------
# How JAX sees the loop: a custom_jvp whose tangent is a linear map with a custom transpose.


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _loop(spec: Spec, cond_consts, consts, xs):
    return _plain(spec, cond_consts, consts, xs)


@functools.partial(_loop.defjvp, symbolic_zeros=True)
def _loop_jvp(spec: Spec, primals, tangents):
    cond_consts, consts, xs = primals
    _, d_consts, d_xs = tangents
    # Cotangents only for the consts JAX differentiates: a weight held fixed (the gradient
    # taken w.r.t. the state) costs no weight-gradient product per turn of the reverse sweep.
    const_mask = tuple(
        inexact(c) and not _is_zero(d) for c, d in zip(consts, d_consts, strict=True)
    )
    d_xs = [
        jnp.zeros(np.shape(x), x.dtype) if _is_zero(d) else d for x, d in zip(xs, d_xs, strict=True)
    ]
    sizes = (len(cond_consts), len(consts))
    run = _linear.forward_only(functools.partial(forward, spec, sizes))
    x_last, prev, buffer, slot_steps, n_steps = run([*cond_consts, *consts, *xs])
    res = (list(consts), list(xs), prev, buffer, slot_steps, n_steps)
    lin = (pick(d_consts, const_mask), pick(d_xs, spec.inexact))
    d_out = _linear.apply(
        functools.partial(_tangent, spec, const_mask),
        functools.partial(reverse, spec, const_mask),
        res,
        lin,
    )
    d_full = put([_float0(x) for x in x_last], spec.inexact, d_out)
    return x_last, d_full


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _float0(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)
