"""Same gradients before any timing: every contender is checked against ``ref + jax.grad``."""

from __future__ import annotations

from bpjax.bench._problem import REFERENCE


def away_from_kinks(params, x, *, margin: float = 1e-5):
    """Rows of ``x`` whose hidden pre-activations all stay ``margin``·std away from ReLU's kink.

    Computed in float64. At a pre-activation within float32 rounding of 0, summation order
    decides the ReLU mask, so two correct float32 implementations can disagree there; the
    gradient check leaves those rows out rather than loosen its tolerance.

    Returns:
      A boolean mask ``(batch,)``.
    """
    import numpy as np

    keep = np.ones(len(x), bool)
    h = x.astype(np.float64)
    for w, b in params[:-1]:
        z = h @ w.astype(np.float64) + b
        keep &= np.min(np.abs(z), axis=1) > margin * z.std()
        h = np.maximum(z, 0)
    return keep


def check_agreement(contenders, params, x, y, *, tol: float = 1e-4) -> dict[str, float]:
    """Largest relative gradient difference of each contender from :data:`REFERENCE`.

    ``max |g − g_ref| / max |g_ref|`` over every array, on the rows :func:`away_from_kinks`.

    Raises:
      AssertionError: naming the contender, when one exceeds ``tol``, or when too few rows
        are away from the kinks to check anything.
    """
    import numpy as np

    keep = away_from_kinks(params, x)
    if keep.sum() < max(2, len(x) // 4):
        raise AssertionError("too few rows away from ReLU kinks to check gradients; reseed")
    x, y = x[keep], y[keep]
    by_name = {c.name: c for c in contenders}
    want = [a for layer in by_name[REFERENCE].grads(x, y) for a in layer]
    errors = {}
    for c in contenders:
        got = [a for layer in c.grads(x, y) for a in layer]
        err = max(
            float(np.max(np.abs(g - w)) / (np.max(np.abs(w)) + 1e-30))
            for g, w in zip(got, want, strict=True)
        )
        errors[c.name] = err
        if err > tol:
            raise AssertionError(
                f"{c.name} gradients differ from {REFERENCE} by {err:.2e}" + _precision_hint()
            )
    return errors


def _precision_hint() -> str:
    """Why two correct contenders can differ on an accelerator, and the fix."""
    import jax

    if jax.default_backend() == "cpu" or jax.config.jax_default_matmul_precision:
        return ""
    # Seen on an H200 (jax 0.11.2): PyTorch's float32 gradients 4.0e-4 from JAX's.
    return (
        f"; on {jax.default_backend()} JAX computes float32 matrix products at reduced "
        "precision (TF32 on NVIDIA GPUs) by default, other frameworks need not: set "
        "JAX_DEFAULT_MATMUL_PRECISION=highest to check and time every contender at full "
        "float32"
    )
