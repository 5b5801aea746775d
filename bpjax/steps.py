"""Training-step updates that XLA applies in place when the parameters are donated.

A step ``params -> params - lr * grad(params)`` compiled with ``jax.jit(step,
donate_argnums=0)`` lets XLA write each new parameter into the old one's buffer. It may do so
only after the last read of the old value. In reverse mode a hidden weight ``W_l`` is read
twice, by the forward pass and by the backward pass's input gradient ``δ_l W_lᵀ``, and the
update ``W_l - lr · x_{l-1}ᵀ δ_l`` does not depend on that second read. XLA's copy insertion
orders instructions by data dependence alone (on CPU it runs before scheduling), so it cannot
prove the read comes first and copies every such weight at the start of the step: one copy of
each hidden weight per step, plus the temporary memory to hold the copies.

The functions here give each update a data dependence on a value computed after those reads:

* for a list (or tuple) of layers in forward order, layer ``l``'s update waits for layer
  ``l - 1``'s gradient, which reverse mode computes from ``δ_{l-1} = (δ_l W_lᵀ) ⊙ σ'``,
  i.e. after the last read of ``W_l``. Each update still runs as soon as it can, so no
  gradient is kept longer than one layer;
* for any other pytree, every update waits for every gradient (always enough, but then all
  gradients are alive at once).

The dependence is a zero XLA cannot constant-fold: ``0 · isfinite(g[0])`` (a float product
with 0 is not folded, since it would be wrong for ``inf``/``NaN``; ``isfinite`` is 0 or 1, so the
product is exactly 0 and a non-finite gradient does not leak into other layers). Values are
unchanged, except that a parameter equal to ``-0.0`` may come out as ``+0.0``.

>>> import jax, jax.numpy as jnp
>>> from bpjax import models, steps
>>> params = models.init_layers(jax.random.key(0), (4, 8, 8, 3))
>>> step = jax.jit(steps.sgd_step(jax.grad(models.layers_loss), learning_rate=0.1),
...                donate_argnums=0)
>>> params = step(params, jnp.ones((5, 4)), jnp.zeros(5, jnp.int32))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "after",
    "apply_in_place",
    "apply_updates",
    "sgd",
    "sgd_step",
]


def after(tree, deps):
    """``tree`` with the same values, computed (in XLA's data flow) after every leaf of ``deps``.

    Args:
      tree: a pytree of arrays; inexact (float, complex) leaves get the dependence, integer and
        boolean leaves pass through unchanged.
      deps: a pytree of arrays that must be complete first (e.g. gradients).
    """
    flags = [jnp.isfinite(jnp.ravel(leaf)[0]) for leaf in jax.tree.leaves(deps) if jnp.size(leaf)]
    if not flags:
        return tree
    zero = functools.reduce(jnp.logical_and, flags).astype(jnp.float32) * 0.0

    def tie(a):
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            return a + zero.astype(jnp.result_type(a))
        return a

    return jax.tree.map(tie, tree)


def apply_in_place(update: Callable, params, grads):
    """``update(p, g)`` for every pair of leaves, ordered so that XLA can update in place.

    Args:
      update: ``(param, grad_or_update) -> new_param`` for one leaf.
      params: a list or tuple of per-layer pytrees in forward order (each layer waits for the
        previous layer's gradient), or any pytree (every leaf waits for all of ``grads``).
      grads: the same structure as ``params``.

    Returns:
      The new parameters, structured like ``params``.
    """
    if type(params) in (list, tuple) and len(params) > 1:
        new = [
            jax.tree.map(update, layer if i == 0 else after(layer, grads[i - 1]), grads[i])
            for i, layer in enumerate(params)
        ]
        return type(params)(new)
    return jax.tree.map(update, after(params, grads), grads)


def sgd(params, grads, *, learning_rate: float):
    """Plain SGD ``p ← p − lr · g``, in place when ``params`` are donated (see the module)."""
    return apply_in_place(lambda p, g: p - learning_rate * g, params, grads)


def apply_updates(params, updates):
    """``p + u`` for every leaf, like ``optax.apply_updates``, in place when donated.

    The result keeps each parameter's dtype (as optax does).
    """

    def add(p, u):
        return jnp.asarray(p + u).astype(jnp.result_type(p))

    return apply_in_place(add, params, updates)


def _check_learning_rate(value, where: str) -> None:
    if isinstance(value, jax.core.Tracer):
        return  # a traced schedule value: checked by whoever computes it
    if isinstance(value, str | bytes | bool) or not (
        isinstance(value, int | float | np.number) or (hasattr(value, "shape") and not value.shape)
    ):
        raise TypeError(f"{where}: learning_rate must be a real number, got {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{where}: learning_rate must be finite, got {value!r}")


def sgd_step(grad_fn: Callable, *, learning_rate: float) -> Callable:
    """``step(params, *batch) -> params`` taking one :func:`sgd` step with ``grad_fn``.

    Args:
      grad_fn: ``grad_fn(params, *batch) -> grads`` (e.g. ``jax.grad(loss)``).
      learning_rate: the step size.

    Returns:
      A pure function to ``jax.jit`` (with ``donate_argnums=0`` to update in place).

    Raises:
      TypeError: ``learning_rate`` is not a real number (a string failed only inside the
        first jitted step, about scalar indices).
      ValueError: ``learning_rate`` is NaN or infinite (every parameter would become NaN).
    """
    _check_learning_rate(learning_rate, "sgd_step")

    def step(params, *batch):
        return sgd(params, grad_fn(params, *batch), learning_rate=learning_rate)

    return step
