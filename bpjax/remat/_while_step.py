"""What the loops of :func:`~bpjax.remat.while_loop` share: the loop's static description
(:class:`Spec`), its body and condition on flat leaves, and the body as a function of its
inexact leaves (what ``jax.jvp`` and ``jax.vjp`` differentiate)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """What the loops need besides arrays; hashed by identity (a ``custom_jvp`` static arg)."""

    body: Callable  # body(val, *consts) -> val, from _close_over
    cond: Callable  # cond(val, *consts) -> bool[]
    tree: object  # the state's treedef
    checkpoints: int
    max_steps: int | None
    inexact: tuple  # per state leaf: does it carry a tangent


def step(spec: Spec, consts, xs):
    out = spec.body(jax.tree.unflatten(spec.tree, xs), *consts)
    return [o.astype(x.dtype) for o, x in zip(jax.tree.leaves(out), xs, strict=True)]


def going_on(spec: Spec, cond_consts, xs, steps):
    going = spec.cond(jax.tree.unflatten(spec.tree, xs), *cond_consts)
    return going if spec.max_steps is None else going & (steps < spec.max_steps)


def pick(values, mask):
    return [v for v, m in zip(values, mask, strict=True) if m]


def put(values, mask, new):
    new, out = iter(new), list(values)
    for i, m in enumerate(mask):
        if m:
            out[i] = next(new)
    return out


def differentiable_step(spec: Spec, consts, xs, const_mask):
    """``g(x_inexact, consts_masked) -> (out_inexact, out)``, for ``jvp``/``vjp`` with aux.

    Integer and boolean leaves (a step counter) take no tangent; they ride along in ``out``,
    as do the consts outside ``const_mask`` (integer ones and those nothing differentiates).
    """

    def g(x_diff, c_diff):
        out = step(spec, put(consts, const_mask, c_diff), put(xs, spec.inexact, x_diff))
        return pick(out, spec.inexact), out

    return g
