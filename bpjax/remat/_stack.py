"""The entry point: :func:`stack` runs L layers with a strategy, deciding once per shapes.

:func:`prepare` checks the layer, traces it once, and asks the strategy for its decision
(segment lengths, a revolve program, a check of checkpoint names). Decisions are cached on
(strategy, L, the layer's jaxpr), so tracing the same model again at the same shapes (every
``jit`` retrace, every call of a model's ``apply`` that builds its layer anew) reuses it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Hashable

from bpjax.remat._binomial import Binomial
from bpjax.remat._layer import depth, spec, trace
from bpjax.remat._nested import Nested
from bpjax.remat._policy import dots
from bpjax.remat._stored import Every, StoreAll
from bpjax.remat._strategy import Strategy

STRATEGIES: dict[str, Strategy] = {
    "none": StoreAll(),
    "every": Every(),
    "sqrt": Nested(2),
    "nested": Nested(3),
    "binomial": Binomial(),
    "dots": dots(),
}
"""Strategies by short name; any :class:`Strategy` object is accepted as well."""


def resolve(strategy) -> Strategy:
    """A strategy object from a name in :data:`STRATEGIES` or an object; clear error otherwise."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str) and strategy in STRATEGIES:
        return STRATEGIES[strategy]
    raise ValueError(
        f"unknown remat strategy {strategy!r}: use one of {sorted(STRATEGIES)}, "
        "or Nested(levels=k), Binomial(checkpoints=c), dots(), names(...), offload(...)"
    )


# Decisions hold no arrays, so keeping them across traces leaks nothing; the bound keeps a
# long session that sweeps many shapes from growing the cache without end.
_DECISIONS: collections.OrderedDict = collections.OrderedDict()
_MAX_DECISIONS = 512


def _decision(strategy: Strategy, n_layers: int, traced) -> Hashable:
    key = (strategy, n_layers, traced.key)
    if key in _DECISIONS:
        _DECISIONS.move_to_end(key)
        return _DECISIONS[key]
    decision = strategy.decide(n_layers, traced)
    _DECISIONS[key] = decision
    if len(_DECISIONS) > _MAX_DECISIONS:
        _DECISIONS.popitem(last=False)
    return decision


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A strategy and its decision for one layer at one set of shapes; call it like :func:`stack`.

    Attributes:
      strategy: the strategy object.
      decision: what the strategy settled (e.g. ``Nested``'s segment lengths).
      layer: the layer it runs.
      shapes: the params and state specs it was prepared for; calls must match them.
    """

    strategy: Strategy
    decision: Hashable
    layer: Callable
    shapes: tuple

    def __call__(self, params, x):
        shapes = spec((params, x))
        if shapes != self.shapes:
            raise ValueError(
                f"remat: prepared for params/x shaped {self.shapes}, called with {shapes}; "
                "call remat.prepare again for these shapes"
            )
        try:
            return self.strategy.run(self.decision, self.layer, params, x)
        except TypeError as err:
            if not (self.strategy.reverse_only and "forward-mode autodiff" in str(err)):
                raise
            forward = [k for k, s in STRATEGIES.items() if not s.reverse_only]
            raise TypeError(
                f"remat: strategy {self.strategy.name!r} runs its own backward pass (a "
                "custom_vjp), so forward mode (jax.jvp, jax.jacfwd) cannot go through it; "
                f"use one of {forward} or a Policy there. Reverse mode and forward-over-reverse "
                "(jax.hessian, jvp of grad) work with every strategy"
            ) from err


def prepare(layer: Callable, params, x, *, strategy="sqrt") -> Prepared:
    """Check ``layer``, settle the strategy's decision for these shapes, return a runner.

    Args:
      layer: ``layer(p, x) -> x``, a pure function; ``p`` is one layer's slice of ``params``.
      params: pytree stacked on a leading axis of length L (arrays or ``ShapeDtypeStruct``).
      x: the input state (array, pytree, or specs).
      strategy: a name in :data:`STRATEGIES` or a :class:`Strategy` object.

    Returns:
      A :class:`Prepared` runner, ``runner(params, x)`` equal to :func:`stack`. A layer that
      closes over traced values must be prepared and run inside the same trace.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = lambda p, x: jnp.tanh(x @ p["W"])
      >>> params, x = {"W": jnp.ones((16, 4, 4)) * 0.1}, jnp.ones((2, 4))
      >>> runner = prepare(layer, params, x, strategy="nested")
      >>> runner.decision  # segment lengths, outermost first
      (4, 1)
      >>> runner(params, x).shape
      (2, 4)
    """
    strategy = resolve(strategy)
    n_layers = depth(params)
    traced = trace(layer, params, x)
    decision = _decision(strategy, n_layers, traced)
    return Prepared(strategy, decision, layer, spec((params, x)))


def stack(layer: Callable, params, x, *, strategy="sqrt"):
    """Run L layers ``x ← layer(params[i], x)`` for i = 0..L-1, rematerialized by ``strategy``.

    Args:
      layer: ``layer(p, x) -> x``, a pure function; ``p`` is one layer's slice of ``params``,
        the output has x's shapes and dtypes. It may close over traced values (a scale being
        differentiated): every strategy returns their gradients too.
      params: pytree whose leaves are stacked on a leading axis of length L,
        e.g. ``{"W": (L, d, d), "b": (L, d)}``.
      x: the input state, e.g. ``(batch, d)``, or a pytree of arrays.
      strategy: a name in :data:`STRATEGIES` (``"none"``, ``"every"``, ``"sqrt"``, ``"nested"``,
        ``"binomial"``, ``"dots"``) or an object: ``StoreAll()``, ``Every()``,
        ``Nested(levels=k)``, ``Binomial(checkpoints=c)``, :func:`dots`, :func:`names`,
        :func:`offload`.

    Returns:
      The final state, shaped like ``x``. Gradients are the same whichever strategy (up to
      floating-point reassociation); only memory and time differ.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = lambda p, x: jnp.tanh(x @ p["W"])
      >>> params = {"W": jnp.ones((16, 4, 4)) * 0.1}
      >>> stack(layer, params, jnp.ones((2, 4)), strategy="sqrt").shape
      (2, 4)
    """
    return prepare(layer, params, x, strategy=strategy)(params, x)
