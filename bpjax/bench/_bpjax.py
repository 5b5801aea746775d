"""bpjax's contenders: one jitted SGD step per differentiation method, parameters donated."""

from __future__ import annotations

import functools
import time

from bpjax.bench._problem import LR, REFERENCE, UNDONATED, Contender


def grad_fns() -> dict:
    """name → ``grad(params, x, y)`` of the ReLU MLP's mean cross-entropy, for every method.

    ``rev``, ``fwd``, ``ref + jax.grad``: :func:`bpjax.models.layers_loss` differentiated by
    the hand-written VJPs, the hand-written JVPs (transposed by JAX) and JAX autodiff;
    ``manual``: :func:`bpjax.manual.backprop` (the δ recursion, no autodiff).
    """
    import jax

    from bpjax import fwd, manual, models, ref, rev

    def autodiff(ops):
        return lambda p, x, y: jax.grad(models.layers_loss)(p, x, y, ops=ops, activation="relu")

    return {
        "rev": autodiff(rev),
        "fwd": autodiff(fwd),
        REFERENCE: autodiff(ref),
        "manual": lambda p, x, y: manual.backprop(p, x, y, activation="relu")[1],
    }


def jax_contenders(params, x, y, *, devices: int | None = None, names=None) -> list[Contender]:
    """bpjax's contenders (all of :func:`grad_fns`, plus ``rev`` without donation).

    Each step is :func:`bpjax.steps.sgd_step` under ``jax.jit`` with the parameters donated,
    so XLA updates them in place without copying any weight. With ``devices``, each step is
    data parallel over that many devices (:mod:`bpjax.parallel`: batch split over a 1-D
    mesh, parameters replicated). ``names`` keeps only those contenders.
    """
    import jax
    import jax.numpy as jnp

    from bpjax import measure, parallel, steps
    from bpjax._validate import to_device

    xj, yj = to_device(x), to_device(y)
    place = jax.tree.map
    if devices is not None:
        mesh = parallel.mesh(devices)
        xj, yj = parallel.shard_batch((xj, yj), mesh)

        def place(fn, tree):
            return parallel.replicate(jax.tree.map(fn, tree), mesh)

    fns = grad_fns()
    variants = [(name, fn, True) for name, fn in fns.items()] + [(UNDONATED, fns["rev"], False)]
    out = []
    for name, grad_fn, donate in variants:
        if names is not None and name not in names:
            continue
        start = time.perf_counter()
        step_fn = steps.sgd_step(grad_fn, learning_rate=LR)
        first = place(jnp.asarray, params)
        compiled, seconds = measure.compile_fn(
            step_fn, first, xj, yj, donate_argnums=(0,) if donate else ()
        )
        jax.block_until_ready(compiled(first, xj, yj))
        first_call = time.perf_counter() - start
        state = [place(jnp.asarray, params)]

        def step(compiled=compiled, state=state):
            state[0] = compiled(state[0], xj, yj)
            return state[0]

        grads = functools.partial(_numpy_tree, jax.jit(grad_fn), place(jnp.asarray, params))
        out.append(
            Contender(name, step, grads, first_call, compile=seconds, device=jax.default_backend())
        )
    return out


def _numpy_tree(fn, *args):
    import numpy as np

    return [tuple(np.asarray(a) for a in layer) for layer in fn(*args)]
