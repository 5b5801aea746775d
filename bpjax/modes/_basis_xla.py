"""``basis="xla"``: XLA's FLOP and byte estimates, turned into seconds.

XLA's estimates of the vmapped JVP and VJP at batch sizes 1 and 2, extrapolated to each
candidate's product counts and turned into seconds with the machine's GEMM rate and
bandwidth (:func:`bpjax.modes.machine_rates`)::

    cost(k) = cost(1) + (k − 1) · (cost(2) − cost(1))

Kept for comparison: it misses what XLA's estimates do not see (a scatter-add costing far
more per FLOP than a matrix product). It prices the two dense modes only, and no
compilation (no ``calls=``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bpjax import measure
from bpjax.modes import _rates, _sparse
from bpjax.modes._basis import CostBasis


def _batched(rows, f_flat, x, seeds):
    return rows(f_flat, x, seeds)


class XlaBasis(CostBasis):
    """``basis="xla"``: estimated by XLA (no tie band)."""

    name = "xla"
    band = 1.0
    verb = "estimated by XLA"
    prices_calls = False
    colorings = False

    def prices(self, plan, *, sparse_output, calls):
        del sparse_output, calls  # XLA's estimates see neither
        rates = _rates.machine_rates(jax.default_backend())
        f_flat, x = plan.f_flat, plan.x_flat
        per_kind = {}
        kinds = {
            "jvp": (_sparse.jvp_rows, plan.n, x.dtype, plan.forward),
            "vjp": (_sparse.vjp_rows, plan.m, plan.out_dtype, plan.reverse),
        }
        for kind, (rows, size, dtype, possible) in kinds.items():
            if not possible:
                continue
            # x is an argument, not a constant: XLA would otherwise fold the primal away.
            program = functools.partial(_batched, rows, f_flat)
            costs = [measure.cost(program, x, jnp.ones((k, size), dtype)) for k in (1, 2)]
            per_kind[kind] = [(c["flops"], c["bytes accessed"]) for c in costs]

        def extrapolate(kind, k):
            if k == 0:
                return 0.0, 0.0
            (f1, b1), (f2, b2) = per_kind[kind]
            return f1 + (k - 1) * max(f2 - f1, 0.0), b1 + (k - 1) * max(b2 - b1, 0.0)

        prices = {}
        for c in plan.candidates:
            (ff, bf), (fr, br) = extrapolate("jvp", c.jvps), extrapolate("vjp", c.vjps)
            flops, nbytes = ff + fr, bf + br
            seconds = flops / rates["flops_per_s"] + nbytes / rates["bytes_per_s"]
            prices[c.name] = {"flops": flops, "bytes": nbytes, "seconds": seconds}
        return prices
