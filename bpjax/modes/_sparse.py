"""Jacobian programs: dense (one product per input or output) and compressed by a coloring.

Every method computes ``J`` of the flattened ``f: R^n → R^m`` from batched products:

* ``fwd``: ``J = [J e_1, …, J e_n]``, ``n`` JVPs (``jax.jacfwd``);
* ``rev``: ``J = [e_1ᵀ J; …; e_mᵀ J]``, ``m`` VJPs (``jax.jacrev``);
* ``columns``: ``B = J S_fᵀ`` with one seed per column color, ``J[i, j] = B[i, color(j)]``;
* ``rows``: ``C = S_r J`` with one seed per row color, ``J[i, j] = C[color(i), j]``;
* ``bicoloring``: both, sharing one linearization of ``f`` (``jax.linearize``, with
  ``jax.linear_transpose`` for the VJPs), each nonzero read from whichever product
  :class:`~bpjax.modes._coloring.Coloring` says.

Products are vmapped, so each method is one batched program.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from bpjax.modes._coloring import Coloring, coordinates

DENSE = ("fwd", "rev")
COLORED = ("columns", "rows", "bicoloring")


@dataclasses.dataclass(frozen=True)
class Method:
    """One way to compute ``J``: its products and, for colored methods, the coloring."""

    name: str
    jvps: int
    vjps: int
    coloring: Coloring | None = None

    @property
    def products(self) -> int:
        return self.jvps + self.vjps

    @property
    def mode(self) -> str:
        """``"fwd"``, ``"rev"`` or ``"sparse"`` (the colored methods)."""
        return self.name if self.name in DENSE else "sparse"

    def describe(self) -> str:
        counts = " + ".join(
            f"{k} {w}{'s' if k != 1 else ''}"
            for k, w in ((self.jvps, "JVP"), (self.vjps, "VJP"))
            if k
        )
        label = {
            "fwd": "forward mode",
            "rev": "reverse mode",
            "columns": "sparse, column coloring",
            "rows": "sparse, row coloring",
            "bicoloring": "sparse, bicoloring",
        }[self.name]
        return f"{label} ({counts})"


def maskable(pattern, m: int, n: int) -> bool:
    """Whether a dense mode's dense ``(m, n)`` output can be masked to ``pattern``: a
    pattern with structural zeros, and its CSR (built on first access, so read last: 0.4 s
    for a dense 4096 x 4096 pattern)."""
    return pattern is not None and pattern.nnz < m * n and pattern.csr is not None


def program_name(method: Method) -> str:
    """The program ``method`` builds: ``"fwd"`` or ``"rev"`` for a coloring with one color
    per column or per row (its seeds are the identity), else ``method.name``."""
    c = method.coloring
    if c is not None and c.kind == "columns" and c.jvps == c.column_colors.size:
        return "fwd"
    if c is not None and c.kind == "rows" and c.vjps == c.row_colors.size:
        return "rev"
    return method.name


def dense_methods(n: int, m: int) -> list[Method]:
    return [Method("fwd", n, 0), Method("rev", 0, m)]


def colored_method(coloring: Coloring) -> Method:
    return Method(coloring.kind, coloring.jvps, coloring.vjps, coloring)


def jvp_rows(f_flat, x, seeds):
    """``(k, m)``: ``J s`` for each of the ``k`` rows of ``seeds``."""
    return jax.vmap(lambda t: jax.jvp(f_flat, (x,), (t,))[1])(seeds)


def vjp_rows(f_flat, x, cotangents):
    """``(k, n)``: ``uᵀ J`` for each of the ``k`` rows of ``cotangents``."""
    _, pull = jax.vjp(f_flat, x)
    return jax.vmap(lambda u: pull(u)[0])(cotangents)


def _seeds(colors: np.ndarray, count: int, dtype) -> np.ndarray:
    """``(count, len(colors))`` 0/1 seeds: row ``c`` marks the vertices of color ``c``."""
    return (np.arange(count)[:, None] == colors[None, :]).astype(dtype)


def _compressed(f_flat, x, method, out_dtype):
    """``concatenate([B.ravel(), C.ravel()])``: the JVP rows ``B``, then the VJP rows ``C``."""
    c = method.coloring
    S_f = _seeds(c.column_colors, c.jvps, x.dtype)
    S_r = _seeds(c.row_colors, c.vjps, out_dtype)
    parts = []
    if c.jvps and c.vjps:
        _, lin = jax.linearize(f_flat, x)
        transpose = jax.linear_transpose(lin, x)
        parts.append(jax.vmap(lin)(S_f))
        parts.append(jax.vmap(lambda u: transpose(u)[0])(S_r))
    elif c.jvps:
        parts.append(jvp_rows(f_flat, x, S_f))
    else:
        parts.append(vjp_rows(f_flat, x, S_r))
    return jnp.concatenate([b.ravel() for b in parts])


def program(
    method: Method,
    f_flat,
    x_flat,
    m: int,
    pattern,
    *,
    sparse_output: bool,
    out_dtype=None,
    mask: bool = True,
):
    """``fn(x_flat)``: the Jacobian by ``method``, to be jit-compiled.

    Returns a dense ``(m, n)`` array, or with ``sparse_output`` a ``BCOO`` ``(m, n)`` holding
    the nonzeros of ``pattern`` (a :class:`~bpjax.modes.Pattern`; needed for colored methods
    and for sparse output, otherwise may be ``None``). ``out_dtype``: ``f_flat``'s output
    dtype if known (otherwise ``f_flat`` is traced once more to find it). ``mask=False``:
    a dense mode's dense output is left as the products give it, without zeroing the
    entries outside ``pattern`` (only where they are exact zeros anyway: see
    :mod:`bpjax.modes._finite`).
    """
    # Seeds and indices are constants of the program, not arguments: XLA then simplifies
    # the products for the known 0/1 seeds, which runs faster at the same compile time.
    n = x_flat.size
    if out_dtype is None:
        out_dtype = jax.eval_shape(f_flat, x_flat).dtype
    index = flat = None
    # Dense products multiply 0 by an infinite local derivative (sqrt at 0, a where whose
    # untaken branch is infinite) into entries that are structurally zero: keep only the
    # pattern's entries, so every entry outside it is an exact zero.
    masked = mask and maskable(pattern, m, n)
    if pattern is not None and (sparse_output or masked or method.coloring is not None):
        index = np.stack(coordinates(pattern.csr), axis=1).astype(np.int32)
        if m * n < 2**31:
            # Row-major positions: a scatter or gather on the flattened (m*n,) Jacobian
            # compiles 8-25 ms faster on XLA:CPU than the same on two index columns, and
            # runs as fast.
            flat = index[:, 0] * np.int32(n) + index[:, 1]

    def finish(J_or_data, dense_is_J):
        if dense_is_J and (sparse_output or masked):
            if flat is not None:
                J_or_data = J_or_data.ravel()[flat]
            else:
                J_or_data = J_or_data[index[:, 0], index[:, 1]]
            dense_is_J = False
        if sparse_output:
            return jsparse.BCOO(
                (J_or_data, jnp.asarray(index)),
                shape=(m, n),
                indices_sorted=True,
                unique_indices=True,
            )
        if dense_is_J:
            return J_or_data
        if flat is not None:
            J = jnp.zeros((m * n,), J_or_data.dtype)
            J = J.at[flat].set(J_or_data, indices_are_sorted=True, unique_indices=True)
            return J.reshape(m, n)
        J = jnp.zeros((m, n), J_or_data.dtype)
        return J.at[index[:, 0], index[:, 1]].set(
            J_or_data, indices_are_sorted=True, unique_indices=True
        )

    name = program_name(method)
    if name == "fwd" and sparse_output and flat is not None:
        # Read the nonzeros straight from Jᵀ, the batch's own layout, without transposing
        # it first: 1.1-1.6x faster (arrowhead n = 1024: 7.3 -> 5.1 ms).
        flat_t = index[:, 1] * np.int32(m) + index[:, 0]
        return lambda x: finish(
            jvp_rows(f_flat, x, jnp.eye(n, dtype=x.dtype)).ravel()[flat_t], False
        )
    if name == "fwd":
        return lambda x: finish(jvp_rows(f_flat, x, jnp.eye(n, dtype=x.dtype)).T, True)
    if name == "rev":
        return lambda x: finish(vjp_rows(f_flat, x, jnp.eye(m, dtype=out_dtype)), True)
    source = method.coloring.source.astype(np.int32)
    return lambda x: finish(_compressed(f_flat, x, method, out_dtype)[source], False)
