"""bpjax: backpropagation in JAX, made explicit and measured.

* :mod:`bpjax.rules`: the rule table (primal, hand-written JVP, hand-written VJP per op).
* :mod:`bpjax.ref`, :mod:`bpjax.rev`, :mod:`bpjax.fwd`: the same ops differentiated by JAX
  autodiff, by the hand-written VJPs (``custom_vjp``) and by the hand-written JVPs
  (``custom_jvp``).
* :mod:`bpjax.manual`: an L-layer MLP's backward pass written as the δ recursion, no autodiff.
* :mod:`bpjax.check`: gradient checks against autodiff and float64 finite differences.
"""

from bpjax import check, fwd, manual, ref, rev, rules

__version__ = "0.1.0"

__all__ = ["check", "fwd", "manual", "ref", "rev", "rules"]
