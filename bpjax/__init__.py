"""bpjax: backpropagation in JAX, made explicit and measured.

Submodules (each imported on first use, so ``import bpjax`` stays fast):

* :mod:`bpjax.rules`: the rule table (primal, hand-written JVP, hand-written VJP per op).
* :mod:`bpjax.ref`, :mod:`bpjax.rev`, :mod:`bpjax.fwd`: the same ops differentiated by JAX
  autodiff, by the hand-written VJPs (``custom_vjp``) and by the hand-written JVPs
  (``custom_jvp``).
* :mod:`bpjax.manual`: an L-layer MLP's backward pass written as the δ recursion, no autodiff.
* :mod:`bpjax.check`: gradient checks against autodiff and float64 finite differences.
* :mod:`bpjax.tape`: a teaching reverse-mode tape on the rules; :mod:`bpjax.graph`: the
  forward and backward graph JAX traces, drawn.
* :mod:`bpjax.models`: deep MLPs (plain, residual, highway, dense) as pure functions;
  :mod:`bpjax.grads`: gradient norms and clipping; :mod:`bpjax.train`: a jit-compiled
  training loop; :mod:`bpjax.data`: the digits data set.
* :mod:`bpjax.modes`: forward vs reverse mode, automatic and sparse Jacobians, HVPs.
* :mod:`bpjax.remat`: rematerialization strategies for a stack of layers, with a planner.
* :mod:`bpjax.parallel`: data parallelism on a device mesh; :mod:`bpjax.steps`: SGD and
  optax-style updates that XLA applies in place when the parameters are donated.
* :mod:`bpjax.nnx`: Flax NNX modules computing through the rules.
* :mod:`bpjax.measure`: timing, XLA costs, compiled memory, environment.

Tooling, not in ``__all__`` and imported by no library module (:data:`TOOLING`):
:mod:`bpjax.bench` (``bpjax bench``), :mod:`bpjax.results`, :mod:`bpjax.report` and
:mod:`bpjax.tables` (result files, the report, the tables of results that the README and the
site publish). ``bpjax.bench`` and ``from bpjax import results`` still work.
"""

from __future__ import annotations

import importlib

from bpjax._platform import warn_if_miscompiling

__version__ = "0.1.0"

# Once per process (a module body runs once): a jaxlib that computes wrong numbers
# silently is worth a line at import, before any Jacobian is trusted.
warn_if_miscompiling()

__all__ = [
    "check",
    "data",
    "fwd",
    "grads",
    "graph",
    "manual",
    "measure",
    "models",
    "modes",
    "nnx",
    "parallel",
    "ref",
    "remat",
    "rev",
    "rules",
    "steps",
    "tape",
    "train",
]

# The benchmark and publishing machinery: importable, documented, but not the library.
TOOLING = ("bench", "results", "report", "tables")


def __getattr__(name: str):
    # PEP 562: a submodule is imported the first time it is asked for, not with bpjax.
    if name in __all__ or name in TOOLING:
        return importlib.import_module(f"bpjax.{name}")
    raise AttributeError(f"module 'bpjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(TOOLING))
