"""The two ends of the trade: store every residual, or store only each layer's input."""

from __future__ import annotations

import dataclasses

from bpjax.remat._residuals import LayerBytes
from bpjax.remat._scan import checkpointed, plain
from bpjax.remat._strategy import Strategy


@dataclasses.dataclass(frozen=True)
class StoreAll(Strategy):
    """No rematerialization (``"none"``): every layer's residuals stay until the backward pass.

    Memory ``L·r``; each layer evaluated once (``L``).
    """

    @property
    def name(self) -> str:
        return "none"

    def run(self, decision, layer, params, x):
        del decision
        return plain(layer, params, x)

    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        del sizes
        return n_layers

    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        return n_layers * sizes.residual


@dataclasses.dataclass(frozen=True)
class Every(Strategy):
    """Checkpoint every layer (``"every"``): store its input, recompute it in the backward pass.

    Memory ``L·s + r + g`` (the inputs, then one layer's residuals and parameter gradient while
    it is reversed); each layer evaluated twice (``2L``).
    """

    @property
    def name(self) -> str:
        return "every"

    def run(self, decision, layer, params, x):
        del decision
        return checkpointed(layer, params, x)

    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        del sizes
        return 2 * n_layers

    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        return n_layers * sizes.state + sizes.residual + sizes.params
