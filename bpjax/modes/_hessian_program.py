"""Hessian programs: ``k`` batched Hessian-vector products, then the recovery.

``B = H S`` for the ``k`` seeds of a :class:`~bpjax.modes.SymmetricColoring` is one
vmapped program in one of three HVP orders; the nonzeros are read from ``B`` directly
(star) or by substitution, one vectorized round per level of the two-colored trees
(acyclic), and written to a dense ``(n, n)`` array or a BCOO.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from bpjax._validate import to_device
from bpjax.modes import _symmetric


def coords(sym):
    rows = np.repeat(np.arange(sym.shape[0]), np.diff(sym.indptr))
    return np.stack([rows, sym.indices], axis=1).astype(np.int32)


def bcoo(sym, values):
    return jsparse.BCOO(
        (values, to_device(coords(sym))),
        shape=sym.shape,
        indices_sorted=True,
        unique_indices=True,
    )


def hvp_rows(f_flat, x, seeds, order: str):
    """``(k, n)``: ``H s`` for each of the ``k`` rows of ``seeds``, by ``order``."""
    if order == "fwd-over-rev":
        return jax.vmap(lambda s: jax.jvp(jax.grad(f_flat), (x,), (s,))[1])(seeds)
    if order == "rev-over-rev":
        _, pull = jax.vjp(jax.grad(f_flat), x)  # Hᵀ s = H s: one backward pass, k pulls
        return jax.vmap(lambda s: pull(s)[0])(seeds)
    return jax.vmap(lambda s: jax.grad(lambda y: jax.jvp(f_flat, (y,), (s,))[1])(x))(seeds)


def _segments(sub: _symmetric.Substitution):
    """Runs of consecutive rounds whose widths round up to the same power of two, each
    padded (with ``-1``) to that width: a wide first round of leaves then does not pad the
    long narrow tail, and the padding is at most the entries themselves."""
    widths = np.diff(sub.starts)
    if widths.size == 0:  # no off-diagonal nonzero: nothing to substitute
        return
    padded = 2 ** np.ceil(np.log2(np.maximum(widths, 1))).astype(np.int64)
    cuts = np.flatnonzero(np.diff(padded)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(padded)], strict=True):
        w = int(padded[lo])
        rows = np.repeat(np.arange(hi - lo), widths[lo:hi])
        cols = np.arange(sub.starts[lo], sub.starts[hi]) - np.repeat(
            sub.starts[lo:hi], widths[lo:hi]
        )
        block = []
        for a in (sub.edge, sub.b_index, sub.src_slot, sub.dst_slot):
            out = np.full((hi - lo, w), -1, np.int64)
            out[rows, cols] = a[sub.starts[lo] : sub.starts[hi]]
            block.append(jnp.asarray(out))
        yield tuple(block)


def _substitute(sub: _symmetric.Substitution, b_flat):
    """The acyclic recovery's edge values: one vectorized step per round (leaves first)."""
    edges = int(sub.edge.max(initial=-1)) + 1

    def step(carry, r):
        h, acc = carry
        edge, b_index, src, dst = r
        valid = edge >= 0
        value = jnp.where(valid, b_flat[b_index] - acc[src], 0.0)
        acc = acc.at[jnp.where(valid, dst, sub.slots)].add(value)
        h = h.at[jnp.where(valid, edge, edges)].set(value)
        return (h, acc), None

    carry = (jnp.zeros(edges + 1, b_flat.dtype), jnp.zeros(sub.slots + 1, b_flat.dtype))
    for rounds in _segments(sub):
        carry, _ = jax.lax.scan(step, carry, rounds)
    return carry[0][:edges]


def program(f_flat, coloring, order: str, *, sparse_output: bool):
    """``x_flat ↦ H`` (``(n, n)`` dense, or a BCOO) by ``coloring`` (``None``: dense)."""
    if coloring is None:

        def dense(x):
            return hvp_rows(f_flat, x, jnp.eye(x.size, dtype=x.dtype), order)

        return dense
    n = coloring.colors.size
    seeds = (np.arange(coloring.count)[:, None] == coloring.colors[None, :]).astype(np.float64)
    sym, source = coloring.pattern, to_device(coloring.source)
    rows, cols = coords(sym).T

    def colored(x):
        b_flat = hvp_rows(f_flat, x, jnp.asarray(seeds, x.dtype), order).ravel()
        if coloring.substitution is None:
            values = b_flat[source]
        else:
            h = _substitute(coloring.substitution, b_flat)
            values = jnp.concatenate([h, b_flat])[source]
        if sparse_output:
            return bcoo(sym, values)
        return jnp.zeros((n, n), x.dtype).at[rows, cols].set(values)

    return colored
