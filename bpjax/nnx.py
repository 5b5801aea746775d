"""Flax NNX modules whose computation goes through bpjax's rules.

:class:`Linear` has ``nnx.Linear``'s parameters (``kernel: (in, out)``, ``bias: (out,)``), its
initializers and its key usage, so the two are interchangeable (``nnx.update`` copies one's
state into the other), but computes ``ops.linear`` from :mod:`bpjax.ref`, :mod:`bpjax.rev`
(hand-written VJP) or :mod:`bpjax.fwd` (hand-written JVP). :class:`MLP` is
:class:`bpjax.models.MLP` as a module: built from its config (validated by it), with the
same block formula (the :class:`bpjax.models.Block` registered for its ``arch``) and the same
initializers, its blocks stacked by ``nnx.vmap`` and run by ``nnx.scan``, optionally
rematerialized with ``nnx.remat`` or any :mod:`bpjax.remat` strategy. ``ops="nnx"`` builds
the same network from ``nnx.Linear`` and ``jax.nn`` activations: the independent reference.
:func:`train` runs the training step and loop of :mod:`bpjax.train` on a module's parameters.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = Linear(3, 2, ops="rev", rngs=nnx.Rngs(0))
>>> layer(jnp.ones((4, 3))).shape
(4, 2)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from bpjax import models
from bpjax import remat as _remat
from bpjax import train as _train
from bpjax.measure import temp_bytes

__all__ = [
    "Linear",
    "Block",
    "MLP",
    "stacked_blocks",
    "scan_blocks",
    "remat_temp_bytes",
    "to_params",
    "train",
]

OPS = ("ref", "rev", "fwd", "nnx")
# The models.MLP fields that nnx.MLP takes as keywords; its own checkpoint replaces theirs.
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(models.MLP) if f.name != "checkpoint")

_default_kernel_init = nnx.initializers.lecun_normal()
_zeros = nnx.initializers.zeros_init()


def _check_ops(where: str, ops: str, allowed=OPS) -> None:
    if ops not in allowed:
        raise ValueError(f"{where}: ops must be one of {allowed}, got {ops!r}")


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` through a bpjax rule namespace.

    Args:
      in_features: ``x: (..., in_features)``.
      out_features: ``y: (..., out_features)``.
      ops: ``"rev"`` (hand-written VJP), ``"fwd"`` (hand-written JVP) or ``"ref"`` (autodiff).
      kernel_init: as for ``nnx.Linear`` (LeCun normal).
      bias_init: as for ``nnx.Linear`` (zeros).
      dtype: parameter dtype.
      rngs: ``nnx.Rngs``; one ``params`` key for the kernel, one for the bias, like
        ``nnx.Linear``, so the same seed gives the same parameters.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        ops: str = "rev",
        kernel_init=_default_kernel_init,
        bias_init=_zeros,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check_ops("Linear", ops, ("ref", "rev", "fwd"))
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), dtype))
        self.in_features, self.out_features, self.ops = in_features, out_features, ops

    def __call__(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: x has {x.shape[-1]} features but the kernel expects "
                f"{self.in_features} (kernel.shape={tuple(self.kernel.shape)})"
            )
        return models.namespace(self.ops).linear(x, self.kernel[...], self.bias[...])


def _linear(ops, d_in, d_out, *, kernel_init, bias_init=_zeros, dtype, rngs):
    if ops == "nnx":
        return nnx.Linear(
            d_in, d_out, kernel_init=kernel_init, bias_init=bias_init, param_dtype=dtype, rngs=rngs
        )
    return Linear(
        d_in, d_out, ops=ops, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs
    )


def _activation(ops, name):
    return getattr(jax.nn if ops == "nnx" else models.namespace(ops), name)


class Block(nnx.Module):
    """One hidden block of :class:`MLP`: :func:`bpjax.models.block` on NNX linear layers.

    Args:
      config: the :class:`bpjax.models.MLP` whose block this is (arch, width, activation,
        α, dense window, initializers).
      ops: ``"ref"``, ``"rev"``, ``"fwd"`` (bpjax rules) or ``"nnx"`` (``nnx.Linear``,
        ``jax.nn``).
      rngs: ``nnx.Rngs``.

    The state is ``h: (batch, width)``, or for ``"dense"`` a tuple of the last ``window``
    outputs.
    """

    def __init__(self, config: models.MLP, *, ops: str = "rev", rngs: nnx.Rngs):
        _check_ops("Block", ops)
        inits, w = config.initializers(), config.width
        make = functools.partial(_linear, ops, dtype=config.dtype, rngs=rngs)
        self.linear = make(config.window * w, w, kernel_init=inits["block"])
        if config.block.gated:
            gate_bias = nnx.initializers.constant(config.gate_bias)
            self.gate = make(w, w, kernel_init=inits["gate"], bias_init=gate_bias)
        self.config, self.ops = config, ops

    def __call__(self, state):
        kind, sigmoid = self.config.block, _activation(self.ops, "sigmoid")

        def gate(h):
            return sigmoid(self.gate(h))

        return kind.apply(
            state,
            affine=self.linear,
            act=_activation(self.ops, self.config.activation),
            gate=gate if kind.gated else None,
            alpha=self.config.alpha,
        )


def stacked_blocks(config: models.MLP, *, key, ops: str = "nnx") -> Block:
    """The ``config.depth − 1`` hidden :class:`Block` s of ``config``, parameters stacked on a
    leading axis (``nnx.vmap``), as :func:`scan_blocks` runs them."""
    n_blocks = config.depth - 1
    if n_blocks < 1:
        raise ValueError(f"stacked_blocks: depth={config.depth} has no hidden blocks")

    @nnx.vmap(in_axes=0, out_axes=0)
    def create(k):
        return Block(config, ops=ops, rngs=nnx.Rngs(params=k))

    return create(jax.random.split(key, n_blocks))


def scan_blocks(blocks: Block, state, *, checkpoint=None):
    """Run stacked blocks over ``state``.

    Args:
      blocks: from :func:`stacked_blocks` (or :class:`MLP`'s ``blocks``).
      state: the input state.
      checkpoint: ``None``: ``nnx.scan`` (every residual stored); ``"nnx"``: ``nnx.scan``
        over an ``nnx.remat`` body (Flax's own way, like ``"every"``); anything else: a
        :mod:`bpjax.remat` strategy, run over the blocks' split state.
    """
    if checkpoint is None or checkpoint == "nnx":

        def body(h, block):
            return block(h)

        if checkpoint == "nnx":
            body = nnx.remat(body)
        return nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(state, blocks)
    graphdef, params = nnx.split(blocks)

    def layer(p, h):
        return nnx.merge(graphdef, p)(h)

    return _remat.stack(layer, params, state, strategy=checkpoint)


SCAN_KINDS = ("nnx.scan", "nnx.scan+nnx.remat")


def remat_temp_bytes(blocks: Block, x, *, how: str) -> int:
    """Compiled temp bytes of the gradient of ``sum(blocks(x))`` w.r.t. the blocks and ``x``.

    ``how``: ``"nnx.scan"``, ``"nnx.scan+nnx.remat"`` or ``"bpjax.remat <strategy>"``.
    """
    if how in SCAN_KINDS:
        checkpoint = None if how == "nnx.scan" else "nnx"
    elif how.startswith("bpjax.remat "):
        checkpoint = how.split(" ", 1)[1]
    else:
        raise ValueError(
            f"remat_temp_bytes: how must be one of {SCAN_KINDS} or 'bpjax.remat <strategy>', "
            f"got {how!r}"
        )
    graphdef, params = nnx.split(blocks)

    def loss(params, x):
        return jnp.sum(scan_blocks(nnx.merge(graphdef, params), x, checkpoint=checkpoint))

    return temp_bytes(jax.grad(loss, argnums=(0, 1)), params, x)


class MLP(nnx.Module):
    """:class:`bpjax.models.MLP` as an NNX module: stem, ``depth − 1`` stacked blocks, output.

    Args:
      d_in: input features.
      d_out: classes.
      ops: ``"rev"``, ``"fwd"``, ``"ref"`` (bpjax rules) or ``"nnx"`` (``nnx.Linear`` and
        ``jax.nn``: the reference).
      checkpoint: how the block scan is rematerialized (see :func:`scan_blocks`).
      rngs: ``nnx.Rngs``.
      **config: the fields of :class:`bpjax.models.MLP` (``arch``, ``depth``, ``width``,
        ``activation``, ``weight_init``, ``gain``, ``branch_scale``, ``gate_bias``,
        ``dense_cap``, ``dtype``), with its defaults, validated by it; the module is built
        from that config. A name that is not a field is refused.

    ``__call__(x: (batch, d_in)) -> logits (batch, d_out)``; :func:`to_params` gives the
    pure-function parameters, with which ``self.config.apply`` computes the same logits.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        ops: str = "rev",
        checkpoint=None,
        rngs: nnx.Rngs,
        **config,
    ):
        _check_ops("MLP", ops)
        unknown = sorted(set(config) - set(_CONFIG_FIELDS))
        if unknown:
            raise TypeError(
                f"MLP: unknown option(s) {unknown}; besides d_in, d_out, ops, checkpoint and "
                f"rngs it takes the fields of bpjax.models.MLP: {', '.join(_CONFIG_FIELDS)}"
            )
        config = models.MLP(**config)
        if checkpoint not in (None, "nnx"):
            _remat.resolve(checkpoint)
        inits, fan = config.initializers(), config.window * config.width
        make = functools.partial(_linear, ops, dtype=config.dtype, rngs=rngs)
        self.stem = make(d_in, config.width, kernel_init=inits["stem"])
        self.blocks = nnx.data(None)
        if config.depth > 1:
            self.blocks = stacked_blocks(config, key=rngs.params(), ops=ops)
        self.out = make(fan, d_out, kernel_init=inits["out"])
        self.config, self.ops, self.checkpoint = config, ops, checkpoint

    def __call__(self, x):
        h = _activation(self.ops, self.config.activation)(self.stem(x))
        state = self.config.initial_state(h)
        if self.blocks is not None:
            state = scan_blocks(self.blocks, state, checkpoint=self.checkpoint)
        return self.out(self.config.top(state))


def to_params(model: MLP) -> dict:
    """The pure-function parameters of :class:`bpjax.models.MLP` holding ``model``'s values."""

    def linear(m, w="W", b="b"):
        return {w: m.kernel[...], b: m.bias[...]}

    params = {"stem": linear(model.stem), "out": linear(model.out)}
    if model.blocks is not None:
        params["blocks"] = linear(model.blocks.linear)
        if model.config.block.gated:
            params["blocks"].update(linear(model.blocks.gate, "W_T", "b_T"))
    else:
        d_in, d_out = model.stem.kernel.shape[0], model.out.kernel.shape[1]
        shapes = jax.eval_shape(lambda k: model.config.init(k, d_in, d_out), jax.random.key(0))
        dtype = model.stem.kernel.dtype
        params["blocks"] = {k: jnp.zeros(s.shape, dtype) for k, s in shapes["blocks"].items()}
    return params


def train(
    model: nnx.Module,
    data,
    *,
    steps: int = 600,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 0,
    eval_every: int = 100,
) -> list[float]:
    """Adam on an NNX classifier with the training step and loop of :mod:`bpjax.train`.

    The module's ``nnx.Param`` state is split off (``nnx.split``), trained by
    :func:`bpjax.train.make_step` and :func:`bpjax.train.run_chunks` (minibatches drawn
    exactly as :func:`bpjax.train.train` draws them for the same ``seed``), and written back
    into ``model`` (``nnx.update``) at the end.

    Args:
      model: e.g. :class:`MLP`; updated in place.
      data: a :class:`bpjax.data.Dataset`.

    Returns:
      Test accuracy after every ``eval_every`` steps (and at the end).
    """
    import optax

    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("nnx.train: steps, batch_size and eval_every must be >= 1")
    _train.check_labels(data)
    _, key = jax.random.split(jax.random.key(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the loop donates its carry; the module keeps its own

    def logits(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

    accuracy = jax.jit(lambda p: jnp.mean(jnp.argmax(logits(p, data.x_test), -1) == data.y_test))
    tx = optax.adam(learning_rate)
    history = []

    def after_chunk(carry, records, done):
        history.append(float(accuracy(carry[0])))
        return True

    step_fn = _train.make_step(loss_fn, tx, data, key, batch_size)
    (params, _), _ = _train.run_chunks(
        step_fn,
        (params, tx.init(params)),
        steps=steps,
        eval_every=eval_every,
        after_chunk=after_chunk,
    )
    nnx.update(model, params)
    return history
