"""Losses: softmax cross-entropy (fused), cross-entropy from probabilities, mean squared error.

Each returns a scalar averaged over the batch. Labels may be integer class ids ``(...,)`` or
floating one-hot/probability rows ``(..., classes)``; floating labels are differentiated too
(useful for distillation), integer ones are not.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from bpjax import _validate as v
from bpjax.rules._rule import Rule
from bpjax.rules.softmax import log_softmax


def _rows(scores) -> int:
    """Number of rows the loss averages over: the product of all but the class axis."""
    return math.prod(scores.shape[:-1])


def _is_class_ids(labels) -> bool:
    return jnp.issubdtype(labels.dtype, jnp.integer)


def _targets(labels, like):
    """Labels as rows of ``like``'s shape and dtype (one-hot for class ids)."""
    if _is_class_ids(labels):
        return (labels[..., None] == jnp.arange(like.shape[-1])).astype(like.dtype)
    return labels


def _pick(logp, labels):
    """Per-row ``Σ_k y_k log p_k`` for class ids or probability rows."""
    if _is_class_ids(labels):
        return jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(labels * logp, axis=-1)


# --- softmax_cross_entropy -------------------------------------------------------------


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of ``softmax(logits)`` against ``labels``, fused and stable.

    ``L = −(1/m) Σ_rows Σ_k y_k log softmax(z)_k`` with ``m`` the number of rows.

    Args:
      logits: ``(batch, classes)`` (or any ``(..., classes)``; all leading axes are rows).
      labels: integer class ids ``(batch,)`` or one-hot/probabilities ``(batch, classes)``.

    Returns:
      A scalar. Its VJP is the seed's fused error signal ``z̄ = ḡ (softmax(z) − y) / m``
      (exactly ``softmax(z) Σ_k y_k − y``, which is the same when label rows sum to one).

    >>> import jax.numpy as jnp
    >>> from bpjax import rev
    >>> float(rev.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
    1.386...
    """
    return -jnp.mean(_pick(log_softmax(logits), labels))


def _sxe_jvp(primals, tangents):
    (z, labels), (tz, tlabels) = primals, tangents
    logp = log_softmax(z)
    y = _targets(labels, z)
    m = _rows(z)
    out = -jnp.mean(_pick(logp, labels))
    delta = jnp.exp(logp) * jnp.sum(y, axis=-1, keepdims=True) - y
    t_out = jnp.sum(delta * tz) / m
    if not _is_class_ids(labels):
        t_out = t_out - jnp.sum(logp * tlabels) / m
    return out, t_out


def _sxe_fwd(z, labels):
    logp = log_softmax(z)
    # log p is all the backward pass needs: softmax = exp(log p) gives δ, and log p itself
    # is the gradient with respect to soft labels. The logits are not kept.
    return -jnp.mean(_pick(logp, labels)), (logp, labels)


def _sxe_bwd(residuals, g):
    logp, labels = residuals
    y = _targets(labels, logp)
    m = _rows(logp)
    delta = jnp.exp(logp) * jnp.sum(y, axis=-1, keepdims=True) - y  # = a − y
    d_labels = None if _is_class_ids(labels) else -g * logp / m
    return g * delta / m, d_labels


def _sxe_validate(logits, labels):
    v.require_float("softmax_cross_entropy", "logits", logits)
    if logits.ndim < 1:
        raise ValueError("softmax_cross_entropy: logits must be (batch, classes), got a scalar")
    v.check_labels("softmax_cross_entropy", "logits", logits, labels)


SOFTMAX_CROSS_ENTROPY = Rule(
    name="softmax_cross_entropy",
    primal=softmax_cross_entropy,
    jvp=_sxe_jvp,
    vjp_fwd=_sxe_fwd,
    vjp_bwd=_sxe_bwd,
    validate=_sxe_validate,
    forward_formula="L = −(1/m) Σ y log softmax(z)",
    jvp_formula="L̇ = (1/m) ⟨a − y, ż⟩ − (1/m) ⟨log a, ẏ⟩",
    vjp_formula="z̄ = L̄ (a − y)/m, ȳ = −L̄ log a / m",
    saves="log a (log-probabilities), labels",
)


# --- cross_entropy ---------------------------------------------------------------------


def _clipped(probs, eps):
    # where(p > eps, p, eps) rather than maximum(p, eps): autodiff of maximum splits the
    # gradient 0.5/0.5 at a tie, where() gives exactly 0 in the whole clipped region p <= eps,
    # which is the rule the hand-written derivatives state.
    return jnp.where(probs > eps, probs, jnp.full_like(probs, eps))


def cross_entropy(probs, labels, *, eps=1e-15):
    """Mean cross-entropy of probabilities: ``L = −(1/m) Σ_rows Σ_k y_k log max(p_k, eps)``.

    Prefer :func:`softmax_cross_entropy` on logits; this form exists because the seed's
    manual backprop computes it, and its clipping is a classic source of wrong gradients.

    Args:
      probs: ``(batch, classes)`` probabilities (rows need not be normalised).
      labels: integer class ids ``(batch,)`` or one-hot/probabilities ``(batch, classes)``.
      eps: lower clip that keeps ``log`` finite (keyword-only). The gradient is 0 wherever
        ``p <= eps`` (the clipped region), as ``np.clip`` implies.

    Returns:
      A scalar. VJP: ``p̄ = −L̄ y / (m p)`` where ``p > eps``, 0 elsewhere.
    """
    return -jnp.mean(_pick(jnp.log(_clipped(probs, eps)), labels))


def _xe_jvp(primals, tangents, *, eps=1e-15):
    (p, labels), (tp, tlabels) = primals, tangents
    pc = _clipped(p, eps)
    y = _targets(labels, p)
    m = _rows(p)
    out = -jnp.mean(_pick(jnp.log(pc), labels))
    slope = jnp.where(pc > eps, -y / pc, jnp.zeros_like(pc))
    t_out = jnp.sum(slope * tp) / m
    if not _is_class_ids(labels):
        t_out = t_out - jnp.sum(jnp.log(pc) * tlabels) / m
    return out, t_out


def _xe_fwd(p, labels, *, eps=1e-15):
    pc = _clipped(p, eps)
    # The clipped probabilities carry everything: 1/p for the gradient, and the clip mask
    # is recovered as pc > eps (pc equals eps exactly where the clip acted).
    return -jnp.mean(_pick(jnp.log(pc), labels)), (pc, labels)


def _xe_bwd(residuals, g, *, eps=1e-15):
    pc, labels = residuals
    y = _targets(labels, pc)
    m = _rows(pc)
    d_p = jnp.where(pc > eps, -g * y / (m * pc), jnp.zeros_like(pc))
    d_labels = None if _is_class_ids(labels) else -g * jnp.log(pc) / m
    return d_p, d_labels


def _xe_validate(probs, labels, *, eps=1e-15):
    v.require_float("cross_entropy", "probs", probs)
    if probs.ndim < 1:
        raise ValueError("cross_entropy: probs must be (batch, classes), got a scalar")
    if not eps > 0:
        raise ValueError(f"cross_entropy: eps must be positive, got {eps}")
    v.check_labels("cross_entropy", "probs", probs, labels)


CROSS_ENTROPY = Rule(
    name="cross_entropy",
    primal=cross_entropy,
    jvp=_xe_jvp,
    vjp_fwd=_xe_fwd,
    vjp_bwd=_xe_bwd,
    validate=_xe_validate,
    forward_formula="L = −(1/m) Σ y log max(p, ε)",
    jvp_formula="L̇ = −(1/m) ⟨y/p · 1[p>ε], ṗ⟩ − (1/m) ⟨log p, ẏ⟩",
    vjp_formula="p̄ = −L̄ y/(m p) · 1[p>ε], ȳ = −L̄ log p / m",
    saves="max(p, ε), labels",
)


# --- mse -------------------------------------------------------------------------------


def mse(pred, target):
    """Mean squared error ``L = (1/n) Σ (pred − target)²`` over all ``n`` elements.

    Args:
      pred: any shape.
      target: the same shape as ``pred`` (no broadcasting: a ``(n, 1)`` vs ``(n,)``
        mismatch is a bug, so it is an error).

    Returns:
      A scalar. VJP ``p̄ = 2 L̄ (pred − target) / n``, ``t̄ = −p̄``.
    """
    return jnp.mean(jnp.square(pred - target))


def _mse_jvp(primals, tangents):
    (p, t), (tp, tt) = primals, tangents
    r = p - t
    return jnp.mean(jnp.square(r)), 2 * jnp.sum(r * (tp - tt)) / r.size


def _mse_fwd(p, t):
    r = p - t
    return jnp.mean(jnp.square(r)), r  # Only the residual r = pred − target is needed.


def _mse_bwd(r, g):
    d = 2 * g * r / r.size
    return d, -d


def _mse_validate(pred, target):
    v.require_float("mse", "pred", pred)
    v.require_float("mse", "target", target)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"mse: pred.shape={tuple(pred.shape)} differs from target.shape="
            f"{tuple(target.shape)}; reshape one of them (broadcasting is not applied)"
        )


MSE = Rule(
    name="mse",
    primal=mse,
    jvp=_mse_jvp,
    vjp_fwd=_mse_fwd,
    vjp_bwd=_mse_bwd,
    validate=_mse_validate,
    forward_formula="L = (1/n) Σ (p − t)²",
    jvp_formula="L̇ = (2/n) ⟨p − t, ṗ − ṫ⟩",
    vjp_formula="p̄ = 2 L̄ (p − t)/n, t̄ = −p̄",
    saves="r = p − t",
)
