"""Scalar energies with known Hessian structure, for tests and benchmarks of sparse Hessians.

Each family is ``f: x ↦ R`` with ``n`` variables and comes with its true Hessian pattern:

=================  ==============================================================
family             Hessian
=================  ==============================================================
``banded``         half-bandwidth ``k`` (default 2):
                   ``Σ cosh x_i + Σ_{d ≤ k} Σ_i (x_{i+d} − x_i)² (1 + x_{i+d}²)``
``stencil``        the 5-point pattern on an ``s x s`` grid (``n = s²``): a nonlinear
                   Poisson energy ``Σ_edges ½t² + log cosh t`` (``t`` the difference
                   across a grid edge) ``+ Σ u⁴/4 + u²/2 − load·u``
``arrowhead``      a coupling variable: ``Σ_i exp(x₀ x_i / 4) + Σ x_i²`` (dense first
                   row and column, the diagonal)
``block_diagonal`` 16 x 16 dense blocks: ``Σ_b log(1 + (Σ_{i∈b} x_i)²) + Σ sin x_i``
``mlp``            dense: a softplus MLP's mean squared loss on 64 fixed samples, in its
                   weights ``{"W1": (h, 8), "W2": (h,)}`` (a pytree, ``n = 9h``)
=================  ==============================================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from bpjax._validate import to_device

FAMILIES = ("banded", "stencil", "arrowhead", "block_diagonal", "mlp")
BLOCK = 16
MLP_IN = 8
MLP_SAMPLES = 64


def banded(k: int = 2):
    """The banded energy with half-bandwidth ``k`` (see the module docstring)."""

    def f(x):
        e = jnp.sum(jnp.cosh(x))
        for d in range(1, k + 1):
            e = e + jnp.sum((x[d:] - x[:-d]) ** 2 * (1 + x[d:] ** 2))
        return e

    return f


def stencil(s: int):
    """The nonlinear Poisson energy on an ``s x s`` grid of ``x: (s*s,)``; strictly convex
    (``H ⪰ I``), its minimizer solves ``−div(φ'(∇u)) + u³ + u = load``."""
    i = np.arange(s)
    load = to_device(1.0 + 4.0 * np.outer(np.sin(np.pi * i / s), np.cos(np.pi * i / s)))

    def f(x):
        u = x.reshape(s, s)
        t = jnp.concatenate([(u[1:] - u[:-1]).ravel(), (u[:, 1:] - u[:, :-1]).ravel()])
        return jnp.sum(0.5 * t**2 + jnp.log(jnp.cosh(t))) + jnp.sum(u**4 / 4 + u**2 / 2 - load * u)

    return f


def arrowhead(x):
    return jnp.sum(jnp.exp(x[0] * x[1:] / 4)) + jnp.sum(x**2)


def block_diagonal(x):
    blocks = x.reshape(-1, BLOCK)
    return jnp.sum(jnp.log1p(jnp.sum(blocks, axis=1) ** 2)) + jnp.sum(jnp.sin(x))


def mlp(hidden: int, seed: int = 0):
    """``(loss, w)``: a softplus MLP's loss in its weights ``w`` (a pytree of ``9·hidden``)."""
    rng = np.random.default_rng(seed)
    X = to_device(rng.normal(size=(MLP_SAMPLES, MLP_IN)))
    y = to_device(rng.normal(size=MLP_SAMPLES))

    def loss(w):
        z = jax.nn.softplus(X.astype(w["W1"].dtype) @ w["W1"].T)
        return jnp.mean((z @ w["W2"] - y) ** 2)

    w = {
        "W1": rng.normal(size=(hidden, MLP_IN)) / np.sqrt(MLP_IN),
        "W2": rng.normal(size=hidden) / np.sqrt(hidden),
    }
    return loss, w


def _band_pattern(n, k):
    return sp.diags_array([np.ones(n - abs(d)) for d in range(-k, k + 1)], offsets=range(-k, k + 1))


def size(name: str, N: int) -> int:
    """The ``n`` family ``name`` has at size about ``N``."""
    if name == "stencil":
        return int(round(np.sqrt(N))) ** 2
    if name == "block_diagonal":
        return max(BLOCK, N // BLOCK * BLOCK)
    if name == "mlp":
        return max(N // (MLP_IN + 1), 1) * (MLP_IN + 1)
    return N


def family(name: str, N: int, *, dtype=jnp.float64, seed: int = 0, k: int = 2):
    """``(f, x, pattern)``: the energy, a random point, its true ``(n, n)`` Hessian pattern.

    Args:
      name: one of :data:`FAMILIES`.
      N: about the number of variables (rounded as :func:`size` says).
      dtype: of ``x`` (leaves of ``x`` for ``mlp``).
      seed: for ``x`` and the MLP's data.
      k: the half-bandwidth of ``banded``.

    Returns:
      ``f`` (scalar), ``x`` (an ``(n,)`` array, or for ``mlp`` a dict of arrays) and the
      boolean SciPy CSR pattern (``mlp``: dense).
    """
    rng = np.random.default_rng(seed)
    n = size(name, N)
    if name == "banded":
        f, pattern = banded(k), _band_pattern(n, k)
    elif name == "stencil":
        s = int(round(np.sqrt(n)))
        one = _band_pattern(s, 1)
        eye = sp.eye_array(s)
        f, pattern = stencil(s), sp.kron(one, eye) + sp.kron(eye, one)
    elif name == "arrowhead":
        A = sp.lil_array((n, n))
        A[0, :] = 1
        A[:, 0] = 1
        A.setdiag(1)
        f, pattern = arrowhead, A
    elif name == "block_diagonal":
        f = block_diagonal
        pattern = sp.block_diag([np.ones((BLOCK, BLOCK))] * (n // BLOCK))
    elif name == "mlp":
        f, w = mlp(n // (MLP_IN + 1), seed)
        x = jax.tree.map(lambda a: to_device(a, dtype), w)
        return f, x, sp.csr_array(np.ones((n, n), bool))
    else:
        raise ValueError(f"family: unknown name {name!r}; choose one of {FAMILIES}")
    x = to_device(rng.uniform(-1.0, 1.0, size=n), dtype)
    pattern = sp.csr_array(pattern != 0)
    pattern.sort_indices()
    return f, x, pattern


def newton(
    f, x0, *, tol: float = 1e-10, max_iter: int = 30, mode: str = "auto", order: str | None = None
):
    """Minimize a smooth, strictly convex ``f`` of ``x0: (n,)`` by Newton's method with a
    sparse Hessian: ``x ← x − H(x)⁻¹ ∇f(x)``, ``H`` a BCOO from
    :func:`bpjax.modes.hessian_fn` (decided once), solved by SciPy's sparse LU on the host.

    Near the minimum the gradient norm falls quadratically, ``‖g_{k+1}‖ ≤ C ‖g_k‖²``.
    ``mode`` and ``order`` are passed to :func:`~bpjax.modes.hessian_fn`.

    Returns:
      ``(x, history)``: the minimizer and one dict per iteration with the gradient norm
      ``grad_norm`` and the seconds spent on the Hessian (``hessian_seconds``) and on the
      solve (``solve_seconds``).

    Example:
      >>> x, history = newton(stencil(64), jnp.zeros(64 * 64))
      >>> [f"{h['grad_norm']:.0e}" for h in history]
      ['1e+02', '2e+03', '6e+02', '1e+02', '3e+01', '2e+00', '2e-02', '4e-06', '1e-13']
    """
    import time

    from scipy.sparse.linalg import spsolve

    from bpjax import modes

    hess = modes.hessian_fn(f, x0, mode=mode, sparse_output=True, order=order)
    grad = jax.jit(jax.grad(f))
    x, history = x0, []
    for _ in range(max_iter):
        g = grad(x)
        norm = float(jnp.linalg.norm(g))
        record = {"grad_norm": norm}
        history.append(record)
        if norm <= tol:
            break
        start = time.perf_counter()
        H = jax.block_until_ready(hess(x))
        record["hessian_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        rows, cols = np.asarray(H.indices).T
        A = sp.csc_array((np.asarray(H.data), (rows, cols)), shape=H.shape)
        step = spsolve(A, np.asarray(g))
        record["solve_seconds"] = time.perf_counter() - start
        x = x - to_device(step, x.dtype)
    return x, history
