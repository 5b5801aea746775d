"""Rematerialization (gradient checkpointing) for a stack of L layers, predicted and measured.

Reverse mode keeps what each layer saved in the forward pass until the backward pass reaches
it, so the activation memory of ``x_L = f_L(...f_1(x_0))`` grows with L. Rematerialization
stores only some states (checkpoints) and recomputes the rest when the backward pass needs them.

Contract: ``layer(p, x) -> x`` maps a state to a state of the same shapes and dtypes; ``params``
is a pytree whose leaves are stacked on a leading axis of length L (``params["W"]: (L, d, d)``).
:func:`stack` runs the layers with a strategy, a :class:`Strategy` object that knows how to run
them, what to decide once per shapes, how many layer evaluations a gradient costs and how many
bytes it keeps (the contract is in ``_strategy.py``; one family of strategies per file).
By name: ``"none"``, ``"every"``, ``"sqrt"`` (``Nested(2)``), ``"nested"`` (``Nested(3)``),
``"binomial"`` (c = ⌈log₂ L⌉) and ``"dots"`` (:data:`STRATEGIES`):

===============  ======================================  ==========================  ===============
strategy         what is stored                          activation bytes            evaluations
===============  ======================================  ==========================  ===============
``StoreAll()``   every layer's residuals                 L·r                         L
``Every()``      each layer's input                      L·s + r + g                 2L
``Nested(2)``    √L segment inputs, then one segment's   ≈ 2√L·s (Chen et al. 2016)  2L
                 residuals while it is reversed
``Nested(k)``    k levels of nested segment inputs       ≈ k·L^(1/k)·s               ≤ k·L
``Binomial(c)``  c states placed by revolve              (c + 1)·s + r + g           t(L, c) + L + 1
``dots()``, ...  what a ``jax.checkpoint`` policy saves  L·p + r + g                 2L
===============  ======================================  ==========================  ===============

s: bytes of one state; r: bytes one layer saves for its backward pass; g: bytes of one layer's
parameters; p: bytes a layer saves under the policy (:class:`LayerBytes`). Binomial
checkpointing (Griewank 1992; Griewank & Walther 2000) reverses L layers with c states so that
no layer is advanced more than r times, r the least integer with β(c, r) = C(c + r, c) ≥ L,
with the fewest forward steps possible, t(L, c) = r·L − β(c + 1, r − 1).

``Nested`` and ``Binomial`` are ``custom_vjp`` functions with their own backward pass: reverse
mode only (``grad``, ``vjp``, grad of grad, and forward-over-reverse products such as
``jvp(grad(f))``); ``jax.jvp`` through the stack itself raises, so use ``StoreAll``,
``Every`` or a policy where forward mode is needed.

:func:`prepare` settles a strategy's decisions once per layer and shapes (``stack`` caches
them); :func:`measure_memory` sets a strategy's prediction beside the jaxpr's residuals and
XLA's compiled memory; :func:`plan` picks the fastest strategy whose compiled memory fits a
byte budget.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from bpjax import remat
  >>> layer = lambda p, h: jnp.tanh(h @ p["W"] + p["b"])
  >>> params = {"W": jnp.full((64, 8, 8), 0.1), "b": jnp.zeros((64, 8))}
  >>> loss = lambda p, s: remat.stack(layer, p, jnp.ones((4, 8)), strategy=s).sum()
  >>> g1, g2 = jax.grad(loss)(params, "none"), jax.grad(loss)(params, remat.Binomial(4))
  >>> bool(jnp.allclose(g1["W"], g2["W"], atol=1e-6))
  True
"""

from bpjax.remat._binomial import Binomial
from bpjax.remat._nested import Nested, segment_sizes
from bpjax.remat._online import online_checkpoints, online_evaluations
from bpjax.remat._plan import (
    Measurement,
    Plan,
    candidates,
    count_evaluations,
    evaluations,
    gradient,
    measure_memory,
    plan,
    predict,
    predict_bytes,
    stack_loss,
)
from bpjax.remat._policy import Policy, dots, names, offload
from bpjax.remat._residuals import LayerBytes, layer_bytes, residuals
from bpjax.remat._revolve import beta, optimal_advances, repetitions, revolve, schedule_advances
from bpjax.remat._stack import STRATEGIES, Prepared, prepare, resolve, stack
from bpjax.remat._stored import Every, StoreAll
from bpjax.remat._strategy import Strategy
from bpjax.remat._while import while_loop

__all__ = [
    "STRATEGIES",
    "Binomial",
    "Every",
    "LayerBytes",
    "Measurement",
    "Nested",
    "Plan",
    "Policy",
    "Prepared",
    "StoreAll",
    "Strategy",
    "beta",
    "candidates",
    "count_evaluations",
    "dots",
    "evaluations",
    "gradient",
    "layer_bytes",
    "measure_memory",
    "names",
    "offload",
    "online_checkpoints",
    "online_evaluations",
    "optimal_advances",
    "plan",
    "predict",
    "predict_bytes",
    "prepare",
    "repetitions",
    "residuals",
    "resolve",
    "revolve",
    "schedule_advances",
    "segment_sizes",
    "stack",
    "stack_loss",
    "while_loop",
]
