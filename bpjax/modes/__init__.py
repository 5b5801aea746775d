"""Jacobians by forward mode, reverse mode, sparse colorings, or whichever is fastest.

For ``f: R^n → R^m`` (pytrees are flattened), the Jacobian ``J = ∂f/∂x`` is ``m x n``.
Forward mode builds it one column per JVP, ``J e_j`` (``n`` products); reverse mode one row
per VJP, ``e_iᵀ J`` (``m`` products). When ``J`` is sparse, both waste products: columns
that share no row can be seeded together, ``J (e_j + e_k)``, and read back apart. So:

1. :func:`sparsity` finds ``J``'s nonzero pattern from ``f``'s jaxpr (abstract
   interpretation: which inputs each output may depend on), without evaluating a
   derivative; exact for the common primitives, conservative otherwise (never missing a
   nonzero: ``custom_jvp``/``custom_vjp`` functions are read through the rules that
   differentiation runs, loops are simulated or iterated to a fixed point). Every mode
   that knows the pattern returns exact zeros outside it, and a ``lax.while_loop`` on
   ``x`` (no reverse mode in JAX) gets forward-mode products only.
2. :func:`color_columns`, :func:`color_rows` and :func:`bicolor` compress it: ``k``
   column colors give ``J`` from ``k`` JVPs, ``J[i, j] = (J s_color(j))_i``; ``k`` row colors
   from ``k`` VJPs; a star bicoloring mixes both (a dense row by one VJP, a dense column
   by one JVP: an arrowhead matrix costs 3 products instead of ``n``).
3. :func:`jacobian` computes ``J`` by ``mode="fwd"``, ``"rev"``, ``"sparse"`` (detect,
   color, compress, decompress) or ``"auto"``; :func:`jacobian_fn` makes that decision
   once and returns a compiled ``x ↦ J`` for a Newton loop or an implicit ODE solver.
4. :func:`choose_mode` explains the automatic choice: every candidate (``fwd``, ``rev``,
   each coloring) priced by a run-time model with per-machine rates
   (``T = k_f·c_jvp + k_r·c_vjp + output``; see ``bpjax/modes/_cost.py``; the rates,
   :func:`model_rates`, are measured once per machine and kept), or by the model with a
   timed probe of the candidates it cannot separate (``basis="probe"``, the default of
   :func:`jacobian_fn`, whose calls run the probe once they have paid for it;
   :meth:`JacobianFn.settle` runs it at once), or by timing (``basis="timing"``), or by
   XLA's estimates (``basis="xla"``), or by a :class:`CostBasis` of your own. A probe's
   measurements are kept on the machine beside the rates, so a later run decides in
   milliseconds (:func:`forget_probes` drops them).

Also :func:`grad_fwd` (a gradient by ``n`` JVPs), :func:`hvp` (``H v`` in three orders) and
:func:`hessian` (dense, or sparse by star or acyclic coloring: :func:`hessian_sparsity`,
:func:`color_symmetric`, :func:`hessian_fn`).

Extending it: each JAX primitive the engine knows is one :class:`PrimitiveRule` in one table
(``bpjax/modes/_primitives.py``), read by both the sparsity pass and the run-time model; a
primitive without one (or listed there as conservative) is handled conservatively and named
in a :class:`SparsityWarning`. :func:`register_primitive` adds one, here or from your code::

    modes.register_primitive("my_roll", move=lambda ops, p: [np.roll(ops[0], p["shift"])],
                             pulled=True)   # a data movement: exact patterns, fused cost

A way to price the candidates is a :class:`CostBasis` (one method, ``prices``), passed as
``basis=`` to :func:`jacobian_fn`, :func:`jacobian` or :func:`choose_mode`.

Example::

    f = lambda x: x**3 - jnp.roll(x, 1) * x             # cyclic bidiagonal Jacobian
    x = jnp.linspace(0.0, 1.0, 2_000)
    jac = modes.jacobian_fn(f, x)                       # decides once
    J = jac(x)                                          # (2000, 2000), dense
    jac.method, jac.coloring.products, jac.choice.reason   # 'columns', 2, ...
    modes.jacobian(f, x, mode="sparse", sparse_output=True)   # a BCOO, nse = 4000

References: A. Griewank & A. Walther, *Evaluating Derivatives* (2nd ed., SIAM 2008),
ch. 8; A. Gebremedhin, F. Manne & A. Pothen, "What color is your Jacobian?", SIAM Review
47 (2005); T. Coleman & A. Verma, SIAM J. Sci. Comput. 19 (1998); A. Hill & G. Dalle,
arXiv:2501.17737 (2025).
"""

from bpjax.modes._auto import BASES, ModeChoice, choose_mode
from bpjax.modes._basis import CostBasis
from bpjax.modes._coloring import (
    Coloring,
    as_csr,
    bicolor,
    bicoloring_lower_bound,
    color_columns,
    color_rows,
)
from bpjax.modes._hessian import HESSIAN_MODES, HessianFn, hessian, hessian_fn, hessian_sparsity
from bpjax.modes._hvp import HVP_ORDERS, grad_fwd, hvp
from bpjax.modes._jacobian import JacobianFn, jacobian, jacobian_fn
from bpjax.modes._plan import COLORINGS, MODES
from bpjax.modes._primitives import PrimitiveRule, register_primitive
from bpjax.modes._probes import forget_probes
from bpjax.modes._rates import machine_rates
from bpjax.modes._rates import rates as model_rates
from bpjax.modes._sparsity import Pattern, SparsityWarning, sparsity
from bpjax.modes._symmetric import SymmetricColoring, color_symmetric

__all__ = [
    "BASES",
    "COLORINGS",
    "HESSIAN_MODES",
    "HVP_ORDERS",
    "HessianFn",
    "MODES",
    "Coloring",
    "CostBasis",
    "JacobianFn",
    "ModeChoice",
    "Pattern",
    "PrimitiveRule",
    "SparsityWarning",
    "SymmetricColoring",
    "as_csr",
    "bicolor",
    "bicoloring_lower_bound",
    "choose_mode",
    "color_columns",
    "color_rows",
    "color_symmetric",
    "forget_probes",
    "grad_fwd",
    "hessian",
    "hessian_fn",
    "hessian_sparsity",
    "hvp",
    "jacobian",
    "jacobian_fn",
    "machine_rates",
    "model_rates",
    "register_primitive",
    "sparsity",
]
