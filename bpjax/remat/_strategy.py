"""The one contract every rematerialization strategy meets.

A strategy is a small frozen (hashable) object that knows four things about a stack of L
layers, and nothing outside its class switches on its type:

* :meth:`Strategy.decide`: what to settle once per (layer, shapes), from the traced layer
  (segment lengths, a revolve program, a check); cached by :func:`~bpjax.remat.prepare`, so it
  must return a hashable value holding no arrays or tracers.
* :meth:`Strategy.run`: the forward pass ``x ← layer(params[i], x)`` for i = 0..L-1, written so
  that ``jax.grad`` of it stores what the strategy stores.
* :meth:`Strategy.evaluations`: layer evaluations per gradient, forward pass included.
* :meth:`Strategy.predict_bytes`: activation bytes of one gradient from one layer's sizes.

A new strategy is one such class in one file (and, if it should have a short name, an entry in
:data:`~bpjax.remat.STRATEGIES`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable

from bpjax.remat._layer import TracedLayer
from bpjax.remat._residuals import LayerBytes, layer_bytes


class Strategy(abc.ABC):
    """Base class of every strategy: see the module docstring for the contract.

    ``reverse_only``: True for a strategy whose :meth:`run` is a ``custom_vjp`` (its own
    backward pass): ``jax.jvp`` through it raises, and :class:`~bpjax.remat.Prepared` says
    which strategies have forward mode.
    """

    reverse_only: bool = False

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short name used in tables and figures (``"none"``, ``"sqrt"``, ``"binomial10"``)."""

    def decide(self, n_layers: int, layer: TracedLayer) -> Hashable:
        """What :meth:`run` needs settled for this layer at these shapes (default: nothing)."""
        del n_layers, layer
        return None

    @abc.abstractmethod
    def run(self, decision: Hashable, layer: Callable, params, x):
        """The final state of the L layers, shaped like ``x``.

        Args:
          decision: what :meth:`decide` returned for this layer and these shapes.
          layer: ``layer(p, x) -> x``.
          params: pytree stacked on a leading axis of length L.
          x: the input state.
        """

    @abc.abstractmethod
    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        """Layer evaluations in one gradient (forward pass plus recomputation)."""

    @abc.abstractmethod
    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        """Predicted activation (temporary) bytes of one gradient through the stack."""

    def layer_bytes(self, layer: Callable, params, x) -> LayerBytes:
        """The :class:`LayerBytes` that :meth:`predict_bytes` needs for this layer."""
        return layer_bytes(layer, params, x)
