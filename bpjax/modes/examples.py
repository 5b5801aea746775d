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
:func:`structure` gives the structures of :data:`STRUCTURES` (bands, 2-D and 3-D stencils,
block bands, irregular graphs), on which the sparse programs are compared with the peers'
beyond the families above.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from bpjax._validate import to_device

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
    W1 = to_device(rng.normal(size=(HIDDEN, n)) / np.sqrt(n), dtype)
    W2 = to_device(rng.normal(size=(m, HIDDEN)) / np.sqrt(HIDDEN), dtype)
    return lambda x: W2 @ jnp.tanh(W1 @ x), sp.csr_array(np.ones((m, n), bool))


def gather_chain(index):
    """``f: (n,) -> (len(index),)``: six transcendental steps on ``x``, the gather
    ``x[index]``, six more steps; no matrix product. Its Jacobian has one nonzero per row,
    ``(i, index[i])``; reverse mode turns the gather into a scatter-add."""
    index = to_device(index)

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
    W = to_device(rng.normal(size=(n // b, b, b)) / np.sqrt(b), dtype)

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
    x = to_device(rng.uniform(-1.0, 1.0, size=n), dtype)
    pattern.sort_indices()
    return f, x, pattern


# Structures beyond the families: name -> (grid shape, stencil offsets) or a block band.
# Every map is y = sum over offsets o of w_o g_o(x shifted by o) + x³ with zero padding at
# the edges, g_o cycling through sin, cos, tanh: nonlinear, so each offset is a nonzero.
_NINE = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
_FIVE = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
_SEVEN = [(0, 0, 0)] + [
    tuple(d if i == axis else 0 for i in range(3)) for axis in range(3) for d in (-1, 1)
]
STRUCTURES = {
    "band k=2": ((4096,), [(d,) for d in range(-2, 3)]),
    "band k=4": ((4096,), [(d,) for d in range(-4, 5)]),
    "band k=8": ((4096,), [(d,) for d in range(-8, 9)]),
    "5-point 64x64": ((64, 64), _FIVE),
    "5-point 32x128": ((32, 128), _FIVE),
    "9-point 64x64": ((64, 64), _NINE),
    "9-point 32x128": ((32, 128), _NINE),
    "7-point 16x16x16": ((16, 16, 16), _SEVEN),
    "block band 16": ((4096,), "block band"),
    # Irregular: each output reads its own input and 4 others through a gather, chosen
    # uniformly (every column in about 5 rows) or skewed towards low indices (hub columns
    # read by hundreds of rows, as high-degree nodes of a graph are).
    "random graph d=4": ((4096,), "uniform"),
    "power-law graph d=4": ((4096,), "skewed"),
}


def _shifted_map(shape, offsets, rng, dtype):
    reach = max(max(abs(d) for d in o) for o in offsets)
    w = to_device(rng.uniform(0.5, 1.5, size=len(offsets)), dtype)
    g = (jnp.sin, jnp.cos, jnp.tanh)

    def f(x):
        u = x.reshape(shape)
        p = jnp.pad(u, reach)
        y = u**3
        for i, o in enumerate(offsets):
            window = tuple(slice(reach + d, reach + d + s) for d, s in zip(o, shape, strict=True))
            y = y + w[i] * g[i % 3](p[window])
        return y.ravel()

    index = np.arange(int(np.prod(shape))).reshape(shape)
    rows, cols = [], []
    for o in offsets:
        src = tuple(slice(max(0, -d), s - max(0, d)) for d, s in zip(o, shape, strict=True))
        dst = tuple(slice(max(0, d), s - max(0, -d)) for d, s in zip(o, shape, strict=True))
        rows.append(index[src].ravel())
        cols.append(index[dst].ravel())
    n = index.size
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return f, sp.csr_array((np.ones(rows.size, bool), (rows, cols)), (n, n))


def _graph_map(n, neighbours, rng, dtype):
    """``y_i = x_i³ + Σ_k w_k g_k(x[neighbours[i, k]])``: a gather per neighbour slot."""
    d = neighbours.shape[1]
    w = to_device(rng.uniform(0.5, 1.5, size=d), dtype)
    g = (jnp.sin, jnp.cos, jnp.tanh)

    def f(x):
        y = x**3
        for k in range(d):
            y = y + w[k] * g[k % 3](x[neighbours[:, k]])
        return y

    rows = np.repeat(np.arange(n), d + 1)
    cols = np.concatenate([np.arange(n)[:, None], neighbours], axis=1).ravel()
    pattern = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), (n, n))
    pattern.sum_duplicates()
    return f, pattern


def _neighbours(n, kind, rng, d=4):
    u = rng.uniform(size=(n, d))
    if kind == "uniform":
        return np.minimum((n * u).astype(np.int64), n - 1)
    # P(index < k) = (k / n)^(1/3): column 0 is read by about n·d·n^(-1/3) rows.
    return np.minimum((n * u**3).astype(np.int64), n - 1)


def _block_band(n, rng, dtype):
    b = BLOCK
    k = n // b
    W = to_device(rng.normal(size=(3, k, b, b)) / np.sqrt(3 * b), dtype)

    def f(x):
        u = jnp.pad(x.reshape(k, b), ((1, 1), (0, 0)))
        z = sum(jnp.einsum("kb,kbc->kc", u[d : d + k], W[d]) for d in range(3))
        return jnp.tanh(z).ravel()

    blocks = sp.diags_array([np.ones(k - 1), np.ones(k), np.ones(k - 1)], offsets=[-1, 0, 1])
    return f, sp.csr_array(sp.kron(blocks, np.ones((b, b))).astype(bool).T)


def structure(name: str, *, dtype=jnp.float64, seed: int = 0):
    """``(f, x, pattern)`` for one of :data:`STRUCTURES`, ``n = m = 4096``.

    The bands (half-bandwidth 2, 4, 8), 5- and 9-point stencils on square and rectangular
    grids, a 3-D 7-point stencil and a block band (16 x 16 blocks coupled to their two
    neighbours) are ``y = Σ_o w_o g_o(x shifted by o) + x³`` (block band:
    ``tanh`` of three block products), zero-padded at the edges. The two graphs are
    irregular: ``y_i = x_i³ + Σ_k w_k g_k(x[N(i)_k])`` with 4 neighbours per row, uniform
    or skewed towards hub columns, read through gathers.

    Returns:
      ``f: (n,) -> (n,)``, ``x`` of shape ``(n,)`` and the ``(n, n)`` boolean SciPy CSR
      matrix of the Jacobian's structural nonzeros.
    """
    if name not in STRUCTURES:
        raise ValueError(f"structure: unknown name {name!r}; choose one of {tuple(STRUCTURES)}")
    rng = np.random.default_rng(seed)
    shape, offsets = STRUCTURES[name]
    if offsets == "block band":
        f, pattern = _block_band(shape[0], rng, dtype)
    elif offsets in ("uniform", "skewed"):
        f, pattern = _graph_map(shape[0], _neighbours(shape[0], offsets, rng), rng, dtype)
    else:
        f, pattern = _shifted_map(shape, offsets, rng, dtype)
    n = int(np.prod(shape))
    x = to_device(rng.uniform(-1.0, 1.0, size=n), dtype)
    pattern.sort_indices()
    return f, x, pattern
