"""``jax.checkpoint`` policies as strategies: the policy decides which values a layer keeps.

Each layer runs as ``jax.checkpoint(layer, policy=policy)`` inside the scan: values the policy
saves are stored for the backward pass (``p`` bytes per layer), everything else is recomputed.
Memory ``L·p + r + g``; each layer evaluated twice (``2L``), though only the operations whose
outputs were not saved do work the second time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from bpjax.remat._residuals import LayerBytes, layer_bytes, saved_bytes
from bpjax.remat._scan import checkpointed
from bpjax.remat._strategy import Strategy


def host_memory_kinds() -> set[str]:
    """Memory kinds of the default device (``"device"``, ``"pinned_host"``, ...)."""
    return {memory.kind for memory in jax.local_devices()[0].addressable_memories()}


@dataclasses.dataclass(frozen=True)
class Policy(Strategy):
    """``jax.checkpoint(layer, policy=policy)`` in the scan body.

    Build one with :func:`dots`, :func:`names` or :func:`offload` rather than by hand.

    Attributes:
      policy: a ``jax.checkpoint_policies`` policy.
      name: short name for tables.
      saved_names: ``checkpoint_name`` tags the policy refers to; :meth:`decide` checks that the
        layer has each of them (a misspelt name would otherwise save nothing, silently).
      offload_to: memory kind the saved values go to (``"pinned_host"``), or ``None``.
    """

    policy: Callable = dataclasses.field(compare=False)
    name: str = "policy"
    saved_names: tuple[str, ...] = ()
    offload_to: str | None = None

    def decide(self, n_layers: int, layer) -> None:
        del n_layers
        missing = [n for n in self.saved_names if n not in layer.names]
        if missing:
            have = sorted(layer.names) or "none"
            raise ValueError(
                f"remat {self.name}: the layer tags no value with checkpoint_name {missing}; "
                f"its checkpoint_names are {have}. Tag the values to save with "
                "jax.ad_checkpoint.checkpoint_name(value, name) inside the layer."
            )
        if self.offload_to is not None and self.offload_to not in host_memory_kinds():
            raise ValueError(
                f"remat {self.name}: backend {jax.default_backend()!r} has no "
                f"{self.offload_to!r} memory to offload to (it has {sorted(host_memory_kinds())}); "
                f"use names{self.saved_names} to keep the values in device memory instead"
            )

    def run(self, decision, layer, params, x):
        del decision
        return checkpointed(layer, params, x, self.policy)

    def evaluations(self, n_layers: int, sizes: LayerBytes) -> int:
        del sizes
        return 2 * n_layers

    def predict_bytes(self, n_layers: int, sizes: LayerBytes) -> int:
        if sizes.policy_saved is None:
            raise ValueError(
                f"predict_bytes: {self.name} needs LayerBytes.policy_saved; get the sizes from "
                "strategy.layer_bytes(layer, params, x)"
            )
        return n_layers * sizes.policy_saved + sizes.residual + sizes.params

    def layer_bytes(self, layer: Callable, params, x) -> LayerBytes:
        saved = saved_bytes(jax.checkpoint(layer, policy=self.policy), params, x)
        return dataclasses.replace(layer_bytes(layer, params, x), policy_saved=saved)


def dots() -> Policy:
    """Save matmul outputs without batch dimensions (``checkpoint_policies.dots_saveable``).

    Example:
      >>> import jax.numpy as jnp
      >>> from bpjax import remat
      >>> layer = lambda p, x: jnp.tanh(x @ p["W"])
      >>> params = {"W": jnp.ones((8, 4, 4)) / 4}
      >>> remat.stack(layer, params, jnp.ones((2, 4)), strategy=dots()).shape
      (2, 4)
    """
    return Policy(jax.checkpoint_policies.dots_saveable, "dots")


def _check_names(caller: str, saved: tuple) -> None:
    if not saved:
        raise ValueError(f"{caller}: give at least one checkpoint_name")
    if not all(isinstance(n, str) for n in saved):
        raise ValueError(f"{caller}: checkpoint names must be strings, got {saved!r}")


def names(*saved: str) -> Policy:
    """Save only values tagged ``jax.ad_checkpoint.checkpoint_name(value, name)`` in ``saved``.

    :func:`~bpjax.remat.stack` raises ``ValueError`` listing the layer's own checkpoint names
    when the layer tags no value with one of ``saved``.
    """
    _check_names("names", saved)
    policy = jax.checkpoint_policies.save_only_these_names(*saved)
    return Policy(policy, "names:" + ",".join(saved), saved_names=saved)


def offload(*saved: str) -> Policy:
    """Save the named values in pinned host memory (``save_and_offload_only_these_names``).

    Needs a default device with a ``"pinned_host"`` memory space; :func:`~bpjax.remat.stack`
    raises ``ValueError`` on a backend without one. GPUs and TPUs move the values to host memory
    and back. XLA:CPU has such a memory space, but on a CPU host memory is device memory: the
    values stay where they are and the compiled memory equals that of ``names(*saved)``.
    """
    _check_names("offload", saved)
    policy = jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[],
        names_which_can_be_offloaded=list(saved),
        offload_src="device",
        offload_dst="pinned_host",
    )
    return Policy(policy, "offload:" + ",".join(saved), saved_names=saved, offload_to="pinned_host")
