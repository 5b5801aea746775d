"""Predict, measure and plan: what a strategy costs for a layer, and which one fits a budget.

:func:`predict` evaluates a strategy's byte model for a layer; :func:`measure_memory` puts the
prediction beside the jaxpr's residual bytes, XLA's compiled temporary bytes and (on GPU/TPU)
the runtime peak; :func:`count_evaluations` counts layer evaluations at run time; :func:`plan`
picks the strategy with the fewest layer evaluations whose compiled memory fits a budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bpjax import _validate
from bpjax.measure import compile_fn, temp_bytes
from bpjax.remat._binomial import Binomial
from bpjax.remat._layer import depth, trace
from bpjax.remat._nested import Nested
from bpjax.remat._residuals import UNIT, LayerBytes, residuals
from bpjax.remat._stack import resolve, stack
from bpjax.remat._stored import Every, StoreAll
from bpjax.remat._strategy import Strategy


def evaluations(strategy, n_layers: int, sizes: LayerBytes | None = None) -> int:
    """Layer evaluations per gradient (forward pass plus recomputation), from theory.

    ``sizes`` matter only to strategies that choose a schedule from them (``Nested``'s segment
    lengths); without them a state, residuals and parameters count alike.
    """
    if not _validate.is_int(n_layers) or n_layers < 1:
        raise ValueError(f"evaluations: n_layers must be an int >= 1, got {n_layers!r}")
    return resolve(strategy).evaluations(n_layers, sizes or UNIT)


def predict_bytes(strategy, n_layers: int, sizes: LayerBytes) -> int:
    """Predicted activation bytes of one gradient through :func:`stack` (the strategy's model)."""
    return resolve(strategy).predict_bytes(n_layers, sizes)


def predict(layer: Callable, params, x, *, strategy="sqrt", sizes=None) -> int:
    """:func:`predict_bytes` for this layer and these params (policies included)."""
    strategy = resolve(strategy)
    sizes = sizes or strategy.layer_bytes(layer, params, x)
    return strategy.predict_bytes(depth(params), sizes)


def stack_loss(layer: Callable, *, strategy="sqrt") -> Callable:
    """``loss(params, x) = Σ stack(layer, params, x)``: the scalar every figure differentiates."""

    def loss(params, x):
        out = stack(layer, params, x, strategy=strategy)
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))

    return loss


def gradient(layer: Callable, params, x, *, strategy="sqrt"):
    """``(d params, d x)`` of :func:`stack_loss`: what :func:`measure_memory` compiles."""
    return jax.grad(stack_loss(layer, strategy=strategy), argnums=(0, 1))(params, x)


def count_evaluations(layer: Callable, params, x, *, strategy="sqrt") -> int:
    """Layer evaluations in one gradient, counted at run time by a host callback in the layer.

    The callback takes a value of the state, so JAX cannot hoist it out of a loop as invariant,
    and XLA does not merge side effects, so each recomputation is counted.
    """
    calls = [0]

    def tick(_):
        calls[0] += 1

    def counting(p, h):
        jax.debug.callback(tick, jnp.ravel(jax.tree.leaves(h)[0])[0])
        return layer(p, h)

    grads = jax.jit(functools.partial(gradient, counting, strategy=strategy))(params, x)
    jax.block_until_ready(grads)
    return calls[0]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Memory figures of one strategy's gradient, in bytes.

    Attributes:
      strategy: its name.
      n_layers: L.
      predicted: :func:`predict`.
      jaxpr_residuals: bytes of what the gradient's jaxpr saves between its forward and backward
        passes (computed values only; inputs and free views of them are not counted).
      compiled_temp: ``memory_analysis().temp_size_in_bytes`` of the compiled gradient.
      runtime_peak: bytes the run added above what was in use before it, from the device's
        ``peak_bytes_in_use`` (GPU, TPU; ``None`` on CPU, and ``None`` when an earlier, larger
        run in the same process hides it: measure strategies from least memory to most).
      evaluations: theory (:func:`evaluations`, with this layer's sizes).
    """

    strategy: str
    n_layers: int
    predicted: int
    jaxpr_residuals: int
    compiled_temp: int
    runtime_peak: int | None
    evaluations: int

    def as_dict(self) -> dict:
        """The fields as a plain dict, for a result record."""
        return dataclasses.asdict(self)


def _runtime_peak(compiled, params, x) -> int | None:
    device = jax.devices()[0]
    before = device.memory_stats() or {}
    jax.block_until_ready(compiled(params, x))
    after = device.memory_stats() or {}
    # The backend keeps one process-wide high-water mark: a run shows its own peak only if it
    # raises the mark; then peak − (bytes in use before) is what this run added.
    if after.get("peak_bytes_in_use", 0) > before.get("peak_bytes_in_use", 0):
        return int(after["peak_bytes_in_use"] - before.get("bytes_in_use", 0))
    return None


def measure_memory(layer: Callable, params, x, *, strategy="sqrt", run: bool = True):
    """Predicted, jaxpr, compiled and (where reported) runtime memory of one strategy.

    Args:
      layer: ``layer(p, x) -> x``, as for :func:`stack`.
      params: pytree stacked on a leading axis of length L (specs suffice with ``run=False``).
      x: the input state (a spec suffices with ``run=False``).
      strategy: a name or a :class:`Strategy`.
      run: also run the compiled gradient once for the runtime peak.

    Returns:
      A :class:`Measurement`.
    """
    strategy = resolve(strategy)
    loss = stack_loss(layer, strategy=strategy)
    saved = sum(r["bytes"] for r in residuals(loss, params, x) if r["source"] == "computed")
    compiled, _ = compile_fn(jax.grad(loss, argnums=(0, 1)), params, x)
    sizes = strategy.layer_bytes(layer, params, x)
    n_layers = depth(params)
    return Measurement(
        strategy=strategy.name,
        n_layers=n_layers,
        predicted=strategy.predict_bytes(n_layers, sizes),
        jaxpr_residuals=saved,
        compiled_temp=int(compiled.memory_analysis().temp_size_in_bytes),
        runtime_peak=_runtime_peak(compiled, params, x) if run else None,
        evaluations=strategy.evaluations(n_layers, sizes),
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`plan` chose and why.

    Attributes:
      strategy: the strategy object to pass to :func:`stack`.
      predicted_bytes: its predicted activation memory.
      compiled_bytes: its compiled temp memory (checked against the budget), or ``None`` when
        ``verify=False``.
      evaluations: layer evaluations per gradient (the time cost the choice minimizes).
      considered: ``(name, predicted bytes, evaluations)`` of every candidate, fastest first.
    """

    strategy: Strategy
    predicted_bytes: int
    compiled_bytes: int | None
    evaluations: int
    considered: tuple

    def __str__(self):
        fits = "" if self.compiled_bytes is None else f", compiled {self.compiled_bytes:,} B"
        return (
            f"plan: {self.strategy.name} (predicted {self.predicted_bytes:,} B{fits}, "
            f"{self.evaluations} layer evaluations per gradient)"
        )


def candidates(n_layers: int) -> list[Strategy]:
    """Strategies :func:`plan` considers, roughly fastest first."""
    out = [StoreAll(), Every(), Nested(2), Nested(3), Nested(4)]
    c_max = max(2, 2 * math.ceil(math.log2(max(n_layers, 2))))
    out += [Binomial(c) for c in range(min(c_max, n_layers), 0, -1)]
    return out


def _ranked(n_layers: int, sizes: LayerBytes) -> list[tuple]:
    scored = [
        (s.evaluations(n_layers, sizes), s.predict_bytes(n_layers, sizes), i, s)
        for i, s in enumerate(candidates(n_layers))
    ]
    return sorted(scored, key=lambda t: t[:3])


def plan(layer: Callable, params, x, *, budget_bytes: int, verify: bool = True) -> Plan:
    """The fastest strategy whose memory fits ``budget_bytes`` (activation/temporary memory).

    Candidates (:func:`candidates`) are ranked by layer evaluations per gradient, then by
    predicted bytes; the first whose prediction fits is compiled and its ``temp_size_in_bytes``
    checked against the budget (``verify=True``); if the compiler needs more than predicted,
    the next candidate is tried. Raises ``ValueError`` when nothing fits, naming the smallest
    figure seen.
    """
    if not _validate.is_int(budget_bytes) or budget_bytes <= 0:  # True is not 1 byte
        raise ValueError(f"plan: budget_bytes must be a positive int, got {budget_bytes!r}")
    n_layers = depth(params)
    trace(layer, params, x)
    ranked = _ranked(n_layers, StoreAll().layer_bytes(layer, params, x))
    considered = tuple((s.name, b, e) for e, b, _, s in ranked)
    smallest = None
    for evals, predicted, _, strategy in ranked:
        compiled = None
        if predicted <= budget_bytes and verify:
            compiled = temp_bytes(jax.grad(stack_loss(layer, strategy=strategy), (0, 1)), params, x)
        seen = predicted if compiled is None else compiled
        smallest = seen if smallest is None else min(smallest, seen)
        if seen <= budget_bytes:
            return Plan(strategy, predicted, compiled, evals, considered)
    raise ValueError(
        f"plan: no strategy fits budget_bytes={budget_bytes:,}; the least memory any candidate "
        f"needs is about {smallest:,} bytes (Binomial(checkpoints=1) stores only the input, at "
        "L(L-1)/2 extra layer evaluations)"
    )
