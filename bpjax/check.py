"""Gradient checks: hand-written derivatives against JAX autodiff and finite differences.

:func:`gradients` checks any function; :func:`op` checks one op of the rule table in both
hand-written namespaces. Everything runs in float64 (inside ``jax.enable_x64``), whatever the
caller's dtype, so finite differences are meaningful.

Each comparison is a relative error ``‖a − b‖ / max(‖a‖, ‖b‖)`` over a few random
directions (the largest is reported):

* ``jvp vs autodiff``, ``vjp vs autodiff``: ``J v`` and ``uᵀ J`` of ``f`` against JAX's
  autodiff of ``reference`` (when given);
* ``jvp vs finite differences``: ``J v`` against ``(f(x + εv) − f(x − εv)) / 2ε``;
* ``vjp vs finite differences``: ``⟨uᵀJ, v⟩`` against ``⟨u, FD(v)⟩``, relative to the
  Cauchy-Schwarz scale ``max(‖uᵀJ‖‖v‖, ‖u‖‖FD(v)‖)`` so a near-zero product cannot blow up;
* ``vjp vs jvp``: the transpose identity ``⟨u, J v⟩ = ⟨uᵀ J, v⟩`` for ``f`` itself;
* ``primal vs reference``: the function values.

A ``custom_vjp`` function has no forward mode; its JVP comparisons are listed as skipped
with the reason rather than failing. Finite differences have truncation error ~ε² and
round-off ~1e-16/ε; with the default ε = 1e-6 expect ~1e-8, not 1e-15.

>>> import jax.numpy as jnp
>>> from bpjax import check, rev, ref
>>> report = check.gradients(rev.tanh, jnp.linspace(-2.0, 2.0, 5), reference=ref.tanh)
>>> report.max_error() < 1e-6
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpjax import _validate
from bpjax.rules import TABLE

__all__ = [
    "gradients",
    "op",
    "Report",
]


@dataclasses.dataclass(frozen=True)
class Report:
    """Result of a gradient check.

    Attributes:
      name: what was checked.
      errors: comparison name → largest relative error over the directions tried.
      skipped: comparison name → why it could not run (e.g. no forward mode).
      notes: what may explain large errors, e.g. ``f`` computing in float32, which limits
        finite differences to about 1e-2 whatever ``eps``.
    """

    name: str
    errors: dict[str, float]
    skipped: dict[str, str]
    notes: tuple[str, ...] = ()

    def max_error(self, *, exclude_fd: bool = False) -> float:
        """The largest error, optionally ignoring the finite-difference comparisons."""
        values = [
            e for k, e in self.errors.items() if not (exclude_fd and "finite differences" in k)
        ]
        return _worst(values) if values else 0.0

    def ok(self, *, tol: float = 1e-10, fd_tol: float = 1e-6) -> bool:
        """True when exact comparisons are within ``tol`` and finite differences ``fd_tol``
        (an error of NaN, from a NaN or infinite derivative or value, is never within)."""
        return all(
            e <= (fd_tol if "finite differences" in k else tol) for k, e in self.errors.items()
        )

    def __str__(self) -> str:
        lines = [f"gradient check: {self.name}"]
        lines += [f"  {k:<28} {e:9.2e}" for k, e in self.errors.items()]
        lines += [f"  {k:<28} skipped: {why}" for k, why in self.skipped.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _worst(values) -> float:
    # NaN-propagating max: Python's max() keeps a NaN only when it comes first, so a NaN
    # derivative along one direction would otherwise read as a pass.
    values = np.asarray(values, np.float64)
    return float("nan") if np.isnan(values).any() else float(values.max())


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")  # nothing non-finite agrees with anything: the check fails
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def _split(args):
    """Flatten the floating leaves of ``args`` to one float64 vector; keep the rest fixed."""
    leaves, treedef = jax.tree.flatten(args)
    leaves = [_validate.to_device(x) for x in leaves]
    is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]
    if not any(is_float):
        raise TypeError("check: no floating-point argument to differentiate")
    theta, unravel = ravel_pytree(
        [x.astype(jnp.float64) for x, f in zip(leaves, is_float, strict=True) if f]
    )

    def rebuild(vec):
        floats = iter(unravel(vec))
        new = [next(floats) if f else x for x, f in zip(leaves, is_float, strict=True)]
        return jax.tree.unflatten(treedef, new)

    return theta, rebuild


def _flat(fn, rebuild):
    def f(theta):
        out = fn(*rebuild(theta))
        if not jax.tree.leaves(out):
            raise TypeError(
                f"check: the function returned {out!r}, no array to differentiate; return the "
                "output (a missing `return`?)"
            )
        for leaf in jax.tree.leaves(out):
            if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
                raise TypeError(
                    f"check: the function returned a {jnp.asarray(leaf).dtype} leaf; "
                    "only floating outputs can be differentiated"
                )
        return ravel_pytree(jax.tree.map(lambda y: jnp.asarray(y, jnp.float64), out))[0]

    return f


def _same_output_shapes(f, reference, rebuild, theta) -> None:
    def shapes(fn):
        out = jax.eval_shape(lambda t: fn(*rebuild(t)), theta)
        return jax.tree.structure(out), [tuple(leaf.shape) for leaf in jax.tree.leaves(out)]

    (f_tree, f_shapes), (r_tree, r_shapes) = shapes(f), shapes(reference)
    if f_tree != r_tree or f_shapes != r_shapes:
        raise ValueError(
            f"check.gradients: the reference returns {r_tree} with shapes {r_shapes} but f "
            f"returns {f_tree} with shapes {f_shapes}; pass a reference that computes the same "
            "function"
        )


def _try_jvp(f, theta, v):
    try:
        return jax.jvp(f, (theta,), (v,))[1], None
    except TypeError as err:
        if "custom_vjp" not in str(err):
            raise
        return None, "no forward mode (custom_vjp); use bpjax.fwd for hand-written JVPs"


def gradients(
    f: Callable,
    *args,
    reference: Callable | None = None,
    directions: int = 3,
    eps: float = 1e-6,
    seed: int = 0,
    name: str | None = None,
) -> Report:
    """Check the derivatives of ``f`` at ``args``.

    Args:
      f: the function under test, e.g. built from ``bpjax.rev`` or your own ``custom_vjp``.
        Its arguments may be pytrees; floating leaves are differentiated, integer leaves
        (class ids) are held fixed.
      *args: the point to check at; cast to float64.
      reference: the same function written without custom rules, differentiated by JAX
        autodiff. Without it only finite differences and self-consistency are checked.
      directions: how many random tangent/cotangent directions to try.
      eps: central finite-difference step.
      seed: seed of the random directions.
      name: label for the report.

    Returns:
      A :class:`Report`.

    Raises:
      ValueError: ``directions < 1`` or ``eps <= 0`` (a check of nothing must not pass), or
        ``reference`` returns a differently shaped output than ``f`` (comparing the two
        flattened would silently compare unrelated numbers).
    """
    if not _validate.is_int(directions) or directions < 1:
        raise ValueError(
            f"check.gradients: directions must be an int >= 1 (random directions to compare "
            f"along), got {directions!r}"
        )
    if isinstance(eps, bool) or not isinstance(eps, int | float | np.floating) or not eps > 0:
        raise ValueError(f"check.gradients: eps must be a positive number, got {eps!r}")
    if not callable(f):
        raise TypeError(f"check.gradients: f must be a function, got {type(f).__name__}")
    if reference is not None and not callable(reference):
        raise TypeError(
            "check.gradients: reference must be a function (f written without custom rules), "
            f"got {type(reference).__name__}"
        )
    with jax.enable_x64(True):
        theta, rebuild = _split(args)
        if reference is not None:
            _same_output_shapes(f, reference, rebuild, theta)
        # jit: the many evaluations below then reuse one compilation per transform.
        f_flat = jax.jit(_flat(f, rebuild))
        ref_flat = jax.jit(_flat(reference, rebuild)) if reference is not None else None
        errors, skipped = _compare(f_flat, ref_flat, theta, directions, eps, seed)
        notes = _low_precision_note(f_flat, theta)
    label = name or getattr(f, "__qualname__", repr(f))
    return Report(label, {k: _worst(vals) for k, vals in errors.items()}, skipped, notes)


def _low_precision_note(f_flat, theta) -> tuple[str, ...]:
    """A note when ``f`` computes in a floating type narrower than float64 (a cast inside
    it, or float32 constants it closes over): the arguments are float64 here, but the
    rounding of float32 (~6e-8) divided by ``2 eps`` swamps the finite differences."""
    narrow = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                dtype = getattr(var.aval, "dtype", None)
                floating = dtype is not None and jnp.issubdtype(dtype, jnp.floating)
                if floating and jnp.finfo(dtype).bits < 64:
                    narrow.add(str(dtype))
        for sub in jax.extend.core.subjaxprs(jaxpr):
            visit(sub)

    visit(jax.make_jaxpr(f_flat)(theta).jaxpr)
    if not narrow:
        return ()
    return (
        f"f computes in {', '.join(sorted(narrow))} (a cast or a constant of that type "
        "inside it), so finite differences are accurate to about 1e-2 at best, whatever "
        "eps; compute in float64 to check tightly (jnp.asarray(w, jnp.float64) for "
        "closed-over weights)",
    )


def _compare(f_flat, ref_flat, theta, directions, eps, seed):
    """Every comparison of the module docstring along ``directions`` random directions."""
    y, f_vjp = jax.vjp(f_flat, theta)
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}

    def record(key, value):
        errors.setdefault(key, []).append(value)

    if ref_flat is not None:
        y_ref, ref_vjp = jax.vjp(ref_flat, theta)
        record("primal vs reference", _rel(y, y_ref))
    for _ in range(directions):
        v = _validate.to_device(rng.standard_normal(theta.shape))
        u = _validate.to_device(rng.standard_normal(y.shape))
        fd = (f_flat(theta + eps * v) - f_flat(theta - eps * v)) / (2 * eps)
        (uJ,) = f_vjp(u)
        a, b = float(jnp.vdot(uJ, v)), float(jnp.vdot(u, fd))
        scale = max(
            float(jnp.linalg.norm(uJ) * jnp.linalg.norm(v)),
            float(jnp.linalg.norm(u) * jnp.linalg.norm(fd)),
        )
        if not np.isfinite([a, b, scale]).all():
            record("vjp vs finite differences", float("nan"))
        else:
            record("vjp vs finite differences", 0.0 if scale == 0 else abs(a - b) / scale)
        if ref_flat is not None:
            record("vjp vs autodiff", _rel(uJ, ref_vjp(u)[0]))
        Jv, why = _try_jvp(f_flat, theta, v)
        if Jv is None:
            skipped["jvp"] = why
            continue
        record("jvp vs finite differences", _rel(Jv, fd))
        record("vjp vs jvp", _rel(jnp.vdot(u, Jv), jnp.vdot(uJ, v)))
        if ref_flat is not None:
            record("jvp vs autodiff", _rel(Jv, jax.jvp(ref_flat, (theta,), (v,))[1]))
    return errors, skipped


def op(op_name: str, *args, directions: int = 3, eps: float = 1e-6, seed: int = 0, **options):
    """Check one op of the rule table: ``bpjax.rev`` and ``bpjax.fwd`` against ``bpjax.ref``.

    Args:
      op_name: a key of :data:`bpjax.rules.TABLE`, e.g. ``"softmax"``.
      *args: the op's array arguments.
      **options: the op's keyword options (``axis=0``).

    Returns:
      ``{"rev": Report, "fwd": Report}``.

    >>> import jax.numpy as jnp
    >>> from bpjax import check
    >>> reports = check.op("softmax", jnp.array([[1.0, 2.0, 3.0]]), axis=-1)
    >>> all(r.ok() for r in reports.values())
    True
    """
    from bpjax import fwd, ref, rev

    if op_name not in TABLE:
        raise ValueError(f"check.op: unknown op {op_name!r}; the table has {sorted(TABLE)}")

    def bind(namespace):
        fn = getattr(namespace, op_name)
        return lambda *a: fn(*a, **options)

    return {
        ns: gradients(
            bind(mod),
            *args,
            reference=bind(ref),
            directions=directions,
            eps=eps,
            seed=seed,
            name=f"{ns}.{op_name}",
        )
        for ns, mod in (("rev", rev), ("fwd", fwd))
    }
