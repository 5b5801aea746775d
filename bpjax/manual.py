"""Backpropagation by hand: an L-layer MLP's gradients as the δ recursion, no autodiff.

Network (batch-major, ``m`` rows)::

    a⁰ = x,   zˡ = aˡ⁻¹ Wˡ + bˡ,   aˡ = σ(zˡ)  (l < L),   p = softmax(zᴸ)
    loss = −(1/m) Σ_rows log p_y

Backward pass, the recursion this module spells out::

    δᴸ = (p − y) / m                       softmax + cross-entropy, fused
    dWˡ = aˡ⁻¹ᵀ δˡ,   dbˡ = Σ_rows δˡ
    δˡ⁻¹ = (δˡ Wˡᵀ) ⊙ σ'(zˡ⁻¹)

The ``1/m`` of the batch mean is folded into δᴸ once, so every later product is already
averaged. ``σ'`` comes from the rule table's hand-written VJP of the activation, applied to
what that rule saved on the forward pass: the cache holds exactly what the backward pass
will withdraw, and nothing is differentiated by JAX.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bpjax import _validate
from bpjax._namespace import prepare
from bpjax.rules import TABLE

__all__ = [
    "backprop",
    "forward",
    "backward",
    "Cache",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu")


class Cache(NamedTuple):
    """What the forward pass deposits for the backward pass.

    Attributes:
      inputs: ``(a⁰, …, aᴸ⁻¹)``, the input of each linear layer, ``(m, d_l)`` each: needed
        for ``dWˡ = aˡ⁻¹ᵀ δˡ``.
      saved: per hidden layer, what its activation's VJP rule keeps (sigmoid/tanh: the
        output, since σ' is a function of it: a(1 − a), 1 − a², 1[a > 0]): needed for ``σ'``.
      logp: ``(m, classes)`` log-softmax of the logits: what the table's fused
        softmax-cross-entropy rule keeps, and all ``δᴸ = (exp(log p) − y)/m`` needs.
      logits: ``(m, classes)`` ``zᴸ``, kept for a stable loss value.
      activation: the hidden activation's name.
    """

    inputs: tuple
    saved: tuple
    logp: jax.Array
    logits: jax.Array
    activation: str


def _check(params, x, activation):
    """Validate the call as the rule table would, layer by layer; returns arrays.

    Each layer goes through the table's own ``linear`` checks (shapes, float dtypes, arrays
    from lists), so manual and the namespaces refuse the same mistakes with the same words.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"manual: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    if not isinstance(params, list | tuple) or not params:
        raise ValueError("manual: params must be a non-empty list of (W, b) pairs, one per layer")
    x = _validate.as_array("manual", "x", x)
    _validate.require_float("manual", "x", x)
    _validate.require_ndim("manual", "x", x, 2, "(batch, d_in)")
    # A stand-in for each layer's input (a zero-stride view: no memory), so the table's
    # checks see its true shape and dtype and their messages quote them.
    checked, a = [], x
    for l, layer in enumerate(params):
        if not isinstance(layer, list | tuple) or len(layer) != 2:
            raise ValueError(f"manual: params[{l}] must be a (W, b) pair, got {layer!r:.60}")
        try:
            (_, W, b), _ = prepare(TABLE["linear"], (a, *layer), {})
        except (TypeError, ValueError) as err:
            raise type(err)(f"manual: layer {l}: {err}") from None
        checked.append((W, b))
        a = np.broadcast_to(np.zeros((), W.dtype), (x.shape[0], W.shape[1]))
    return checked, x


def _labels(logits, labels):
    """Labels checked against the logits by the fused loss rule's own validation."""
    try:
        (_, labels), _ = prepare(TABLE["softmax_cross_entropy"], (logits, labels), {})
    except (TypeError, ValueError) as err:
        raise type(err)(f"manual: {err}") from None
    return labels


def forward(params, x, *, activation="relu"):
    """Run the MLP and keep the activation cache.

    Args:
      params: list of ``(W, b)``, ``W: (d_{l-1}, d_l)``, ``b: (d_l,)``; the last layer
        produces the logits.
      x: ``(batch, d_0)``.
      activation: hidden activation, one of ``"sigmoid"``, ``"tanh"``, ``"relu"``.

    Returns:
      ``(probs, cache)`` with ``probs: (batch, classes)``.
    """
    params, x = _check(params, x, activation)
    act = TABLE[activation]
    inputs, saved = [], []
    a = x
    for W, b in params[:-1]:
        inputs.append(a)
        a, residual = act.vjp_fwd(a @ W + b)
        saved.append(residual)
    W, b = params[-1]
    inputs.append(a)
    logits = a @ W + b
    logp = TABLE["log_softmax"].primal(logits)
    return jnp.exp(logp), Cache(tuple(inputs), tuple(saved), logp, logits, activation)


def backward(params, cache: Cache, labels):
    """The δ recursion: gradients of the mean cross-entropy with respect to every param.

    Args:
      params: the same list of ``(W, b)`` given to :func:`forward`.
      cache: what :func:`forward` returned.
      labels: integer class ids ``(batch,)`` or one-hot rows ``(batch, classes)``.

    Returns:
      A list of ``(dW, db)`` with the structure and shapes of ``params``.
    """
    if not isinstance(cache, Cache):
        got = type(cache).__name__
        fix = (
            "; forward returns (probs, cache): pass its second element"
            if isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[1], Cache)
            else ""
        )
        raise TypeError(
            f"manual.backward: cache must be the Cache forward returned, got {got}{fix}"
        )
    given = params
    params, _ = _check(params, cache.inputs[0], cache.activation)
    # Each gradient in its parameter's dtype, as jax.grad returns it (the checks promote a
    # float16 W under float32 inputs to float32; its dW is rounded back to float16).
    dtypes = [
        tuple(getattr(g, "dtype", c.dtype) for g, c in zip(pair, checked, strict=True))
        for pair, checked in zip(given, params, strict=True)
    ]
    shapes = [tuple(np.shape(W)) for W, _ in params]
    cached = [tuple(np.shape(a))[1:] for a in cache.inputs]
    if len(cached) != len(shapes) or any(
        s[0] != c[0] for s, c in zip(shapes, cached, strict=False)
    ):
        raise ValueError(
            f"manual.backward: the cache was made by forward with other params: {len(cached)} "
            f"layer inputs of widths {[c[0] for c in cached]}, but params has {len(shapes)} "
            f"layers of shapes {shapes}; call forward(params, x) with these params"
        )
    labels = _labels(cache.logp, labels)
    act = TABLE[cache.activation]
    # δᴸ = (softmax − y)/m, batch mean folded in, by the table's fused rule. Written as
    # (p − y)/m with p = softmax(z) it is the same number, but XLA:CPU ran that form of the
    # [batch, classes] block about 0.1 ms slower per step at 784-256-10 (measured, cause in
    # XLA's fusion of exp/sum/divide not pinned down), which made manual lag jax.grad.
    one = jnp.ones((), cache.logp.dtype)
    delta, _ = TABLE["softmax_cross_entropy"].vjp_bwd((cache.logp, labels), one)
    grads = []
    for l in range(len(params) - 1, -1, -1):
        W, _ = params[l]
        a_prev = cache.inputs[l]
        dW, db = a_prev.T @ delta, delta.sum(axis=0)
        grads.append((dW.astype(dtypes[l][0]), db.astype(dtypes[l][1])))
        if l > 0:
            (delta,) = act.vjp_bwd(cache.saved[l - 1], delta @ W.T)  # ⊙ σ'(zˡ⁻¹)
    return grads[::-1]


def backprop(params, x, labels, *, activation="relu"):
    """Forward and backward in one call.

    Returns:
      ``(loss, grads)``: the mean cross-entropy (a scalar) and a list of ``(dW, db)`` shaped
      like ``params``. Equal to ``jax.value_and_grad`` of the same loss (see the tests).

    >>> import jax, jax.numpy as jnp
    >>> from bpjax import manual
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> params = [(jax.random.normal(k1, (4, 8)), jnp.zeros(8)),
    ...           (jax.random.normal(k2, (8, 3)), jnp.zeros(3))]
    >>> loss, grads = manual.backprop(params, jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1]))
    >>> [g[0].shape for g in grads]
    [(4, 8), (8, 3)]
    """
    probs, cache = forward(params, x, activation=activation)
    labels = _labels(cache.logits, labels)
    loss = TABLE["softmax_cross_entropy"].primal(cache.logits, labels)
    return loss, backward(params, cache, labels)
