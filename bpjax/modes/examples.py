"""Functions with known Jacobian structure, for tests and benchmarks of :mod:`bpjax.modes`.

Each family maps ``x: (n,)`` to ``y: (m,)`` and comes with its true sparsity pattern:

==================  ============  ===================================================
family              ``(n, m)``    Jacobian
==================  ============  ===================================================
``mlp_tall``        ``(N/16, N)``  dense: ``y = W₂ tanh(W₁ x)``, 128 hidden units
``mlp_wide``        ``(N, N/16)``  dense
``mlp_square``      ``(N, N)``    dense
``elementwise``     ``(N, N)``    a permutation: 6 transcendental steps, a gather
                                  ``x[perm]``, 6 more steps
``tridiagonal``     ``(N, N)``    ``y_i = x_i³ − 2x_i + sin x_{i−1} + cos x_{i+1}``
``block_diagonal``  ``(N, N)``    16 x 16 blocks: ``tanh`` of a block product
``arrowhead``       ``(N, N)``    a dense row, a dense column and the diagonal
``stencil``         ``(N, N)``    the 5-point Laplacian on an ``s x s`` grid plus
                                  ``u³`` (``N = s²``)
==================  ============  ===================================================

:func:`gather_chain` builds the ``elementwise`` map for any gather index (``m ≠ n`` too).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

FAMILIES = (
    "mlp_tall",
    "mlp_wide",
    "mlp_square",
    "elementwise",
    "tridiagonal",
    "block_diagonal",
    "arrowhead",
    "stencil",
)
HIDDEN = 128
BLOCK = 16


def _mlp(n, m, rng, dtype):
    W1 = jnp.asarray(rng.normal(size=(HIDDEN, n)) / np.sqrt(n), dtype)
    W2 = jnp.asarray(rng.normal(size=(m, HIDDEN)) / np.sqrt(HIDDEN), dtype)
    return lambda x: W2 @ jnp.tanh(W1 @ x), sp.csr_array(np.ones((m, n), bool))


def gather_chain(index):
    """``f: (n,) -> (len(index),)``: six transcendental steps on ``x``, the gather
    ``x[index]``, six more steps; no matrix product. Its Jacobian has one nonzero per row,
    ``(i, index[i])``; reverse mode turns the gather into a scatter-add."""
    index = jnp.asarray(index)

    def f(x):
        for _ in range(6):
            x = jnp.sin(x) * x + jnp.cos(x) ** 2
        y = x[index]
        for _ in range(6):
            y = jnp.tanh(y) + 0.5 * jnp.exp(-(y**2))
        return y

    return f


def _elementwise(n):
    perm = (np.arange(n) * 7919) % n if np.gcd(7919, n) == 1 else np.arange(n)[::-1].copy()
    return gather_chain(perm), sp.csr_array((np.ones(n, bool), (np.arange(n), perm)), (n, n))


def _tridiagonal(x):
    p = jnp.pad(x, 1)
    return x**3 - 2 * x + jnp.sin(p[:-2]) + jnp.cos(p[2:])


def _block_diagonal(n, rng, dtype):
    b = min(BLOCK, n)
    W = jnp.asarray(rng.normal(size=(n // b, b, b)) / np.sqrt(b), dtype)

    def f(x):
        return jnp.tanh(jnp.einsum("kb,kbc->kc", x.reshape(n // b, b), W)).ravel()

    pattern = sp.block_diag([np.ones((b, b), bool)] * (n // b), format="csr")
    return f, sp.csr_array(pattern)


def _arrowhead(x):
    return jnp.concatenate([jnp.sum(jnp.sin(x))[None], x[1:] ** 2 + x[0] * jnp.cos(x[1:])])


def _stencil(s):
    def f(x):
        u = x.reshape(s, s)
        p = jnp.pad(u, 1)
        lap = 4 * u - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
        return (lap + u**3).ravel()

    one = sp.diags_array([np.ones(s - 1), np.ones(s), np.ones(s - 1)], offsets=[-1, 0, 1])
    eye = sp.eye_array(s)
    return f, sp.csr_array((sp.kron(one, eye) + sp.kron(eye, one)).astype(bool))


def sizes(name: str, N: int) -> tuple[int, int]:
    """``(n, m)`` of family ``name`` at size ``N``."""
    if name == "mlp_tall":
        return max(N // 16, 1), N
    if name == "mlp_wide":
        return N, max(N // 16, 1)
    return N, N


def family(name: str, N: int, *, dtype=jnp.float32, seed: int = 0):
    """``(f, x, pattern)``: the function, a random point ``x: (n,)``, the true pattern.

    Args:
      name: one of :data:`FAMILIES`.
      N: the size (``stencil`` needs a perfect square, ``block_diagonal`` a multiple of 16
        when ``N >= 16``).
      dtype: of ``x`` and of the constant weights.
      seed: for the weights and ``x``.

    Returns:
      ``f: (n,) -> (m,)``, ``x`` of shape ``(n,)`` and the ``(m, n)`` boolean SciPy CSR
      matrix of the Jacobian's structural nonzeros.
    """
    rng = np.random.default_rng(seed)
    n, m = sizes(name, N)
    if name.startswith("mlp_"):
        f, pattern = _mlp(n, m, rng, dtype)
    elif name == "elementwise":
        f, pattern = _elementwise(N)
    elif name == "tridiagonal":
        one = sp.diags_array([np.ones(N - 1), np.ones(N), np.ones(N - 1)], offsets=[-1, 0, 1])
        f, pattern = _tridiagonal, sp.csr_array(one.astype(bool))
    elif name == "block_diagonal":
        f, pattern = _block_diagonal(N, rng, dtype)
    elif name == "arrowhead":
        A = sp.lil_array((N, N), dtype=bool)
        A[0, :] = True
        A[:, 0] = True
        A.setdiag(True)
        f, pattern = _arrowhead, sp.csr_array(A)
    elif name == "stencil":
        s = int(round(np.sqrt(N)))
        if s * s != N:
            raise ValueError(f"family('stencil', N): N must be a perfect square, got {N}")
        f, pattern = _stencil(s)
    else:
        raise ValueError(f"family: unknown name {name!r}; choose one of {FAMILIES}")
    x = jnp.asarray(rng.uniform(-1.0, 1.0, size=n), dtype)
    pattern.sort_indices()
    return f, x, pattern
