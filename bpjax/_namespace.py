"""Build one public function per rule, differentiated by autodiff, a VJP rule or a JVP rule.

The three builders share argument handling: bind the call to the primal's signature (so the
namespaces have identical signatures and reject unknown keywords), turn array arguments into
JAX arrays, validate them, and promote the floating ones to one dtype (a custom rule must
return cotangents in its inputs' dtypes, and mixing float32 with float64 would break that).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bpjax import _validate
from bpjax.rules import Rule

_NOTES = {
    "ref": (
        "Namespace ``bpjax.ref``: plain ``jax.numpy``, differentiated by JAX's own autodiff "
        "(``jax.grad``, ``jax.jvp``, ``jax.vjp`` all work). The reference for the others."
    ),
    "rev": (
        "Namespace ``bpjax.rev``: a ``jax.custom_vjp`` with the hand-written VJP rule. "
        "Reverse mode only: ``jax.grad``/``jax.vjp`` (and grad-of-grad) work, ``jax.jvp`` "
        "raises, as it does for any ``custom_vjp`` function."
    ),
    "fwd": (
        "Namespace ``bpjax.fwd``: a ``jax.custom_jvp`` with the hand-written JVP rule. Works "
        "under ``jax.jvp`` and, because the rule is linear in the tangents, under "
        "``jax.grad`` too (JAX transposes it)."
    ),
}


def prepare(rule: Rule, args, kwargs):
    """Bind, convert, validate and promote one call's arguments: ``(arrays, options)``.

    Everything that runs a rule (the namespaces, :mod:`bpjax.tape`, :mod:`bpjax.manual`)
    goes through here, so bad input gets the same error wherever it enters.
    """
    try:
        bound = rule.signature.bind(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{rule.name}{rule.signature}: {err}") from None
    bound.apply_defaults()
    arrays = [_validate.as_array(rule.name, p, bound.arguments[p]) for p in rule.array_params]
    options = {p: bound.arguments[p] for p in rule.option_params}
    rule.validate(*arrays, **options)
    floats = [a for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = jnp.result_type(*floats)
    arrays = [a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in arrays]
    return arrays, options


def _publish(rule: Rule, namespace: str, call: Callable) -> Callable:
    @functools.wraps(rule.primal)
    def op(*args, **kwargs):
        arrays, options = prepare(rule, args, kwargs)
        return call(arrays, options)

    op.__doc__ = f"{rule.primal.__doc__}\n\n    {_NOTES[namespace]}\n"
    op.__module__ = f"bpjax.{namespace}"
    op.__qualname__ = rule.name
    op.rule = rule
    return op


def _freeze(options: dict) -> tuple:
    return tuple(sorted(options.items()))


def build_ref(rule: Rule) -> Callable:
    """The primal itself: JAX differentiates it."""
    return _publish(rule, "ref", lambda arrays, options: rule.primal(*arrays, **options))


def build_rev(rule: Rule) -> Callable:
    """A ``jax.custom_vjp`` whose backward pass is ``rule.vjp_bwd``."""

    @functools.cache
    def differentiable(frozen_options: tuple):
        options = dict(frozen_options)
        f = jax.custom_vjp(functools.partial(rule.primal, **options))

        def bwd(residuals, g):
            # A named scope per backward call lets bpjax.graph draw each hand-written VJP as
            # one node of the backward graph instead of its inlined primitives.
            with jax.named_scope(f"{VJP_SCOPE}{rule.name}#{next(_calls)}"):
                return rule.vjp_bwd(residuals, g, **options)

        def fwd(*arrays):
            with jax.named_scope(f"{FWD_SCOPE}{rule.name}#{next(_calls)}"):
                return rule.vjp_fwd(*arrays, **options)

        f.defvjp(fwd, bwd)
        return f

    return _publish(rule, "rev", lambda arrays, options: differentiable(_freeze(options))(*arrays))


def build_fwd(rule: Rule) -> Callable:
    """A ``jax.custom_jvp`` whose tangent map is ``rule.jvp``."""

    @functools.cache
    def differentiable(frozen_options: tuple):
        options = dict(frozen_options)
        f = jax.custom_jvp(functools.partial(rule.primal, **options))
        f.defjvp(functools.partial(rule.jvp, **options))
        return f

    return _publish(rule, "fwd", lambda arrays, options: differentiable(_freeze(options))(*arrays))


VJP_SCOPE = "bpjax_vjp:"
FWD_SCOPE = "bpjax_fwd:"
_calls = itertools.count()

BUILDERS = {"ref": build_ref, "rev": build_rev, "fwd": build_fwd}
