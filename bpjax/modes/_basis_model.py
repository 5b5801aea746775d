"""The default cost basis: the run-time model (:mod:`bpjax.modes._cost`), nothing compiled.

From the product counts, ``f``'s jaxpr and rates measured once per machine and kept on disk
(:mod:`bpjax.modes._rates`), so the decision costs a trace of ``f`` plus the sparsity pass
and the coloring. With ``calls=`` the compilation of each candidate is modelled too, as its
difference from the fastest-compiling one (:func:`bpjax.modes._cost.compile_seconds`), and
a dense mode's run time with BCOO output on a sparse pattern, which XLA's fusion makes
unpredictable, is taken at its pessimistic end (``_cost.BCOO_DENSE_UNDERPRICE``, 3x).
"""

from __future__ import annotations

import jax

from bpjax.modes import _cost, _rates
from bpjax.modes._basis import CostBasis, per_call


class ModelBasis(CostBasis):
    """``basis="model"``: predicted by the run-time model (ties within 25%)."""

    name = "model"
    band = 1.25
    verb = "predicted"
    prices_calls = True

    def prices(self, plan, *, sparse_output, calls):
        r = _rates.rates(jax.default_backend())
        closed = plan.closed
        if closed is None:
            closed = jax.make_jaxpr(plan.f_flat)(plan.x_flat)
        work = _cost.profile(closed)
        nnz = plan.pattern.nnz if plan.pattern is not None else plan.n * plan.m
        dense_output = not sparse_output

        def seconds(c, rates):
            return _cost.method_seconds(
                c, work, n=plan.n, m=plan.m, nnz=nnz, dense_output=dense_output, r=rates
            )

        prices = {c.name: {"seconds": seconds(c, r)} for c in plan.candidates}
        # What breaks a tie (_auto._TIE_BREAKS): the price with JVPs and VJPs alike.
        alike = _cost.directions_alike(r)
        structural = {c.name: seconds(c, alike) for c in plan.candidates}
        if calls:
            # A first use: a dense mode's BCOO price at its pessimistic end (see _cost).
            risk = {
                c.name: _cost.BCOO_DENSE_UNDERPRICE
                if plan.gathers_nonzeros(c, sparse_output=sparse_output)
                else 1.0
                for c in plan.candidates
            }
            for name, k in risk.items():
                prices[name]["seconds"] *= k
                structural[name] *= k
            eqns = _cost.equations(closed.jaxpr)
            # A dense mode's mask compiles too, unless these calls would run without it.
            masked = {
                c.name: plan.masks(c, sparse_output=sparse_output)
                and not plan.leaves_mask_out(
                    c, prices[c.name]["seconds"], calls, sparse_output=sparse_output
                )
                for c in plan.candidates
            }
            extra = {
                c.name: _cost.compile_seconds(
                    c, nnz=nnz, eqns=eqns, dense_output=dense_output, r=r, masked=masked[c.name]
                )
                for c in plan.candidates
            }
            # Only differences count: priced over the fastest-compiling candidate.
            least = min(extra.values())
            for name, price in prices.items():
                prices[name] = per_call(price["seconds"], extra[name] - least, calls)
                structural[name] = per_call(structural[name], extra[name] - least, calls)["seconds"]
                if risk[name] != 1.0:
                    prices[name]["pessimistic"] = risk[name]
        for name, price in prices.items():
            price["structural"] = structural[name]
        return prices
