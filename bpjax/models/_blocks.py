"""The hidden blocks of :class:`~bpjax.models.MLP`, in one registry.

:class:`~bpjax.models.MLP` and :class:`bpjax.nnx.MLP` look their ``arch`` up here and nowhere
else switch on its name, so a new block is one :func:`register_block` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Block:
    """One kind of hidden block: its formula and what it needs from the network.

    Attributes:
      apply: ``apply(state, *, affine, act, gate, alpha) -> state``, the block's formula.
        ``state`` is ``h: (batch, width)``, or with ``windowed`` the tuple of the last
        ``window`` outputs, newest first; ``affine: (batch, fan) -> (batch, width)`` is the
        block's linear map ``h W + b`` (``fan = window · width``); ``act`` the activation;
        ``gate: (batch, width) -> (batch, width)`` the gate ``sigmoid(h W_T + b_T)`` (``None``
        unless ``gated``); ``alpha`` the residual branch scale. Returns the next state,
        shaped like ``state``.
      gated: the block has a gate ``W_T: (width, width)``, ``b_T: (width,)``, its bias
        starting at the config's ``gate_bias``.
      windowed: the block reads the last ``window = min(dense_cap, depth)`` hidden outputs
        (zero-padded at the start) and so does the output layer, which sees them
        concatenated.
    """

    apply: Callable[..., Any]
    gated: bool = False
    windowed: bool = False


def _plain(state, *, affine, act, gate, alpha):
    del gate, alpha
    return act(affine(state))


def _residual(state, *, affine, act, gate, alpha):
    del gate
    return state + alpha * act(affine(state))


def _highway(state, *, affine, act, gate, alpha):
    del alpha
    branch = act(affine(state))
    t = gate(state)
    return t * branch + (1 - t) * state


def _dense(state, *, affine, act, gate, alpha):
    del gate, alpha
    new = act(affine(jnp.concatenate(state, axis=-1)))
    return (new, *state[:-1])


BLOCKS: dict[str, Block] = {
    "plain": Block(_plain),  # h ← σ(h W + b)
    "residual": Block(_residual),  # h ← h + α σ(h W + b)
    "highway": Block(_highway, gated=True),  # h ← T ⊙ σ(h W + b) + (1 − T) ⊙ h
    "dense": Block(_dense, windowed=True),  # h ← σ([h_l, …, h_{l−K+1}] W + b)
}


def register_block(name: str, block: Block, *, replace: bool = False) -> None:
    """Make ``block`` available as ``MLP(arch=name)`` in :mod:`bpjax.models` and
    :mod:`bpjax.nnx`.

    Args:
      name: the ``arch`` string that selects it.
      block: its :class:`Block` record.
      replace: allow ``name`` to be registered already (it then names ``block``).

    >>> def scaled(state, *, affine, act, gate, alpha):
    ...     del gate
    ...     return (1 - alpha) * state + alpha * act(affine(state))
    >>> register_block("scaled", Block(scaled), replace=True)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_block: name must be a non-empty string, got {name!r}")
    if not isinstance(block, Block):
        raise TypeError(
            f"register_block: block must be a bpjax.models.Block, got {type(block).__name__}; "
            "wrap its formula as Block(apply, gated=..., windowed=...)"
        )
    if not callable(block.apply):
        raise TypeError(f"register_block: {name!r}: Block.apply must be callable")
    if name in BLOCKS and not replace:
        raise ValueError(
            f"register_block: {name!r} is registered already; pass replace=True to redefine it"
        )
    BLOCKS[name] = block


def get_block(name: str, where: str = "MLP") -> Block:
    """The registered :class:`Block` called ``name``, or a ValueError listing them."""
    if isinstance(name, str) and name in BLOCKS:
        return BLOCKS[name]
    raise ValueError(
        f"{where}: unknown arch {name!r}; choose one of {tuple(BLOCKS)} or register your own "
        "with bpjax.models.register_block(name, bpjax.models.Block(apply, gated=..., "
        "windowed=...))"
    )


# The built-in blocks; MLP accepts any name registered with register_block.
ARCHS = tuple(BLOCKS)


def block(arch: str, state, *, affine, act, gate=None, alpha: float = 1.0):
    """One hidden block of :class:`MLP`: the formula, written once for every implementation.

    The formula is the ``apply`` of the :class:`Block` registered as ``arch``.

    Args:
      arch: ``"plain"``, ``"residual"``, ``"highway"``, ``"dense"`` or a name given to
        :func:`register_block`.
      state: ``h: (batch, width)``; for ``"dense"`` the tuple of the last ``window`` outputs.
      affine: ``h -> h W + b``, the block's linear map (``(batch, fan) -> (batch, width)``).
      act: the activation.
      gate: ``h -> T``, the highway gate ``sigmoid(h W_T + b_T)`` (highway only).
      alpha: the residual branch scale.

    Returns:
      The next state, shaped like ``state``.
    """
    return get_block(arch, "block").apply(state, affine=affine, act=act, gate=gate, alpha=alpha)
