"""Losses: softmax cross-entropy (fused), cross-entropy from probabilities, mean squared error.

Each returns a scalar averaged over the batch. Labels may be integer class ids ``(...,)`` or
floating one-hot/probability rows ``(..., classes)``; floating labels are differentiated too
(useful for distillation), integer ones are not.

Out-of-range class ids. Concrete labels outside ``[0, classes)`` raise a ``ValueError`` before
anything runs. Under ``jit`` (or ``vmap``, ``grad``) labels are tracers with no values to
check, so every namespace, :mod:`bpjax.manual` and :mod:`bpjax.tape` share one behaviour: a
class id outside ``[0, classes)`` (negative ids included: they do *not* wrap around as JAX
indexing would) has a target row of NaNs, so the loss is NaN and that row's gradient is NaN
(every entry of it that a gradient reaches), while the other rows are unaffected. Pass
``check_labels=True`` to raise instead: a host callback checks the values at run time and
fails the call (under ``jit`` the ``ValueError`` arrives wrapped in a ``JaxRuntimeError``
whose message contains it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from bpjax import _validate
from bpjax.rules._rule import Rule
from bpjax.rules.softmax import log_softmax


def _rows(scores) -> int:
    """Number of rows the loss averages over: the product of all but the class axis."""
    return math.prod(scores.shape[:-1])


def _is_class_ids(labels) -> bool:
    return jnp.issubdtype(labels.dtype, jnp.integer)


def _targets(labels, like):
    """Labels as rows of ``like``'s shape and dtype: one-hot for class ids, NaN rows for ids
    outside ``[0, classes)`` (see the module docstring), probability rows as given."""
    if not _is_class_ids(labels):
        return labels
    classes = like.shape[-1]
    onehot = (labels[..., None] == jnp.arange(classes)).astype(like.dtype)
    valid = (labels >= 0) & (labels < classes)
    return jnp.where(valid[..., None], onehot, jnp.full_like(onehot, jnp.nan))


def _pick(logp, labels, *, zero_safe=True):
    """Per-row ``Σ_k y_k log p_k`` for class ids or probability rows.

    ``zero_safe``: take ``0 · log 0 = 0`` for class ids, so a class of probability 0 (a logit
    of −inf) that is not the label contributes nothing; only needed where ``log p`` can be
    −inf (softmax), since it also keeps a NaN cotangent away from those entries, which the
    hand-written rules, computing ``ḡ · 0``, would not. A NaN target row stays NaN.
    """
    if not _is_class_ids(labels):
        return jnp.sum(labels * logp, axis=-1)
    y = _targets(labels, logp)
    if not zero_safe:
        return jnp.sum(y * logp, axis=-1)
    return jnp.sum(jnp.where(y == 0, jnp.zeros_like(logp), y * logp), axis=-1)


def _checked(op: str, labels, classes: int, check_labels: bool):
    """``labels``, after a run-time range check when asked for (see the module docstring)."""
    if check_labels and _is_class_ids(labels):
        jax.debug.callback(lambda values: _validate.check_label_range(op, values, classes), labels)
    return labels


def _validate_batch(op: str, name: str, scores, labels) -> None:
    if scores.ndim < 1:
        raise ValueError(f"{op}: {name} must be (batch, classes), got a scalar")
    if scores.shape[-1] == 0:
        raise ValueError(
            f"{op}: {name} has no classes ({name}.shape={tuple(scores.shape)}); the last "
            "axis holds one score per class"
        )
    if _rows(scores) == 0:
        raise ValueError(
            f"{op}: {name} has no rows ({name}.shape={tuple(scores.shape)}): the mean over an "
            "empty batch is undefined; skip empty batches before calling the loss"
        )
    _validate.check_labels(op, name, scores, labels)


# --- softmax_cross_entropy -------------------------------------------------------------


def softmax_cross_entropy(logits, labels, *, check_labels=False):
    """Mean cross-entropy of ``softmax(logits)`` against ``labels``, fused and stable.

    ``L = −(1/m) Σ_rows Σ_k y_k log softmax(z)_k`` with ``m`` the number of rows.

    Args:
      logits: ``(batch, classes)`` (or any ``(..., classes)``; all leading axes are rows).
      labels: integer class ids ``(batch,)`` or one-hot/probabilities ``(batch, classes)``.
      check_labels: check class ids against ``[0, classes)`` at run time, also under ``jit``
        (keyword-only; see the module docstring for what happens without it).

    Returns:
      A scalar. Its VJP is the fused error signal ``z̄ = ḡ (softmax(z) Σ_k y_k − y) / m``, which
      is ``ḡ (softmax(z) − y) / m`` when label rows sum to one (class ids, one-hot rows).
      Empty batches and zero classes are errors.

    >>> import jax.numpy as jnp
    >>> from bpjax import rev
    >>> float(rev.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
    1.386...
    """
    labels = _checked("softmax_cross_entropy", labels, logits.shape[-1], check_labels)
    return -jnp.mean(_pick(log_softmax(logits), labels))


def _sxe_delta(logp, y):
    # ∂L/∂z per row, times m: softmax(z) Σ_k y_k − y (= a − y for rows summing to one).
    return jnp.exp(logp) * jnp.sum(y, axis=-1, keepdims=True) - y


def _sxe_jvp(primals, tangents, *, check_labels=False):
    (z, labels), (tz, tlabels) = primals, tangents
    labels = _checked("softmax_cross_entropy", labels, z.shape[-1], check_labels)
    logp = log_softmax(z)
    m = _rows(z)
    out = -jnp.mean(_pick(logp, labels))
    t_out = jnp.sum(_sxe_delta(logp, _targets(labels, z)) * tz) / m
    if not _is_class_ids(labels):
        t_out = t_out - jnp.sum(logp * tlabels) / m
    return out, t_out


def _sxe_fwd(z, labels, *, check_labels=False):
    labels = _checked("softmax_cross_entropy", labels, z.shape[-1], check_labels)
    logp = log_softmax(z)
    # log p is all the backward pass needs: softmax = exp(log p) gives δ, and log p itself
    # is the gradient with respect to soft labels. The logits are not kept.
    return -jnp.mean(_pick(logp, labels)), (logp, labels)


def _sxe_bwd(residuals, g, *, check_labels=False):
    del check_labels  # checked in the forward pass
    logp, labels = residuals
    m = _rows(logp)
    delta = _sxe_delta(logp, _targets(labels, logp))
    d_labels = None if _is_class_ids(labels) else -g * logp / m
    return g * delta / m, d_labels


def _sxe_validate(logits, labels, *, check_labels=False):
    _validate.require_float("softmax_cross_entropy", "logits", logits)
    _validate.require_bool("softmax_cross_entropy", "check_labels", check_labels)
    _validate_batch("softmax_cross_entropy", "logits", logits, labels)


SOFTMAX_CROSS_ENTROPY = Rule(
    name="softmax_cross_entropy",
    primal=softmax_cross_entropy,
    jvp=_sxe_jvp,
    vjp_fwd=_sxe_fwd,
    vjp_bwd=_sxe_bwd,
    validate=_sxe_validate,
    forward_formula="L = −(1/m) Σ y log softmax(z)",
    jvp_formula="L̇ = (1/m) ⟨a Σy − y, ż⟩ − (1/m) ⟨log a, ẏ⟩",
    vjp_formula="z̄ = L̄ (a Σy − y)/m  (= L̄ (a − y)/m for one-hot y), ȳ = −L̄ log a / m",
    saves="log a (log-probabilities), labels",
)


# --- cross_entropy ---------------------------------------------------------------------

_EPS = 1e-15


def _eps(eps, dtype) -> float:
    """The clip threshold: ``eps`` if given, else ``max(1e-15, finfo(dtype).tiny)``.

    1e-15 is below float16's smallest normal number (6.1e-5) and would round to 0 there, so
    ``log`` of a clipped probability would be −inf; the dtype's ``tiny`` keeps it finite.
    """
    if eps is not None:
        return eps
    return max(_EPS, float(jnp.finfo(dtype).tiny))


def _clipped(probs, eps):
    # where(p > eps, p, eps) rather than maximum(p, eps): autodiff of maximum splits the
    # gradient 0.5/0.5 at a tie, where() gives exactly 0 in the whole clipped region p <= eps,
    # which is the rule the hand-written derivatives state.
    return jnp.where(probs > eps, probs, jnp.full_like(probs, eps))


def cross_entropy(probs, labels, *, eps=None, check_labels=False):
    """Mean cross-entropy of probabilities: ``L = −(1/m) Σ_rows Σ_k y_k log max(p_k, ε)``.

    Prefer :func:`softmax_cross_entropy` on logits; this form is what a hand-written
    backprop on probabilities computes, and its clipping is a classic source of wrong
    gradients.

    Args:
      probs: ``(batch, classes)`` probabilities (rows need not be normalised).
      labels: integer class ids ``(batch,)`` or one-hot/probabilities ``(batch, classes)``.
      eps: lower clip ε that keeps ``log`` finite (keyword-only). Default ``None``:
        ``max(1e-15, finfo(probs.dtype).tiny)``, i.e. 1e-15 in float32/float64/bfloat16
        and 6.1e-5 in float16, where 1e-15 would round to 0. The gradient is 0 wherever
        ``p <= ε`` (the clipped region), as ``np.clip`` implies.
      check_labels: check class ids at run time, also under ``jit`` (keyword-only).

    Returns:
      A scalar. VJP: ``p̄ = −L̄ y / (m p)`` where ``p > ε``, 0 elsewhere.
    """
    labels = _checked("cross_entropy", labels, probs.shape[-1], check_labels)
    log_p = jnp.log(_clipped(probs, _eps(eps, probs.dtype)))  # finite: no 0 · log 0
    return -jnp.mean(_pick(log_p, labels, zero_safe=False))


def _xe_jvp(primals, tangents, *, eps=None, check_labels=False):
    (p, labels), (tp, tlabels) = primals, tangents
    labels = _checked("cross_entropy", labels, p.shape[-1], check_labels)
    eps = _eps(eps, p.dtype)
    pc = _clipped(p, eps)
    m = _rows(p)
    out = -jnp.mean(_pick(jnp.log(pc), labels, zero_safe=False))
    slope = jnp.where(pc > eps, -_targets(labels, p) / pc, jnp.zeros_like(pc))
    t_out = jnp.sum(slope * tp) / m
    if not _is_class_ids(labels):
        t_out = t_out - jnp.sum(jnp.log(pc) * tlabels) / m
    return out, t_out


def _xe_fwd(p, labels, *, eps=None, check_labels=False):
    labels = _checked("cross_entropy", labels, p.shape[-1], check_labels)
    pc = _clipped(p, _eps(eps, p.dtype))
    # The clipped probabilities carry everything: 1/p for the gradient, and the clip mask
    # is recovered as pc > eps (pc equals eps exactly where the clip acted).
    return -jnp.mean(_pick(jnp.log(pc), labels, zero_safe=False)), (pc, labels)


def _xe_bwd(residuals, g, *, eps=None, check_labels=False):
    del check_labels  # checked in the forward pass
    pc, labels = residuals
    y = _targets(labels, pc)
    m = _rows(pc)
    d_p = jnp.where(pc > _eps(eps, pc.dtype), -g * y / (m * pc), jnp.zeros_like(pc))
    d_labels = None if _is_class_ids(labels) else -g * jnp.log(pc) / m
    return d_p, d_labels


def _xe_validate(probs, labels, *, eps=None, check_labels=False):
    _validate.require_float("cross_entropy", "probs", probs)
    _validate.require_bool("cross_entropy", "check_labels", check_labels)
    if eps is not None:
        if not _validate.is_number(eps) or not eps > 0:
            raise ValueError(
                f"cross_entropy: eps must be a positive number (or None for the dtype's "
                f"default), got {eps!r}"
            )
        if float(jnp.asarray(eps, probs.dtype)) == 0:
            raise ValueError(
                f"cross_entropy: eps={eps} rounds to 0 in {probs.dtype}, so log would give "
                f"-inf; use eps >= {float(jnp.finfo(probs.dtype).tiny):.3g} or eps=None"
            )
    _validate_batch("cross_entropy", "probs", probs, labels)


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
      A scalar. VJP ``p̄ = 2 L̄ (pred − target) / n``, ``t̄ = −p̄``. Empty inputs are an error.
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
    _validate.require_float("mse", "pred", pred)
    _validate.require_float("mse", "target", target)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"mse: pred.shape={tuple(pred.shape)} differs from target.shape="
            f"{tuple(target.shape)}; reshape one of them (broadcasting is not applied)"
        )
    if pred.size == 0:
        raise ValueError(
            f"mse: pred is empty (pred.shape={tuple(pred.shape)}): the mean over no elements "
            "is undefined; skip empty batches before calling the loss"
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
