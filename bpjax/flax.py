"""Flax NNX modules whose computation goes through bpjax's rules.

:class:`Linear` has ``nnx.Linear``'s parameters (``kernel: (in, out)``, ``bias: (out,)``), its
initializers and its key usage, so the two are interchangeable (``nnx.update`` copies one's
state into the other), but computes ``ops.linear`` from :mod:`bpjax.ref`, :mod:`bpjax.rev`
(hand-written VJP) or :mod:`bpjax.fwd` (hand-written JVP). :class:`MLP` mirrors
:class:`bpjax.models.MLP` (plain, residual, highway, dense blocks; same parameter layout, see
:func:`to_params`) with its blocks stacked by ``nnx.vmap`` and run by ``nnx.scan``, optionally
rematerialized with ``nnx.remat`` or any :mod:`bpjax.remat` strategy. ``linear="nnx"`` builds
the same network from ``nnx.Linear`` and ``jax.nn`` activations: the independent reference.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = Linear(3, 2, ops="rev", rngs=nnx.Rngs(0))
>>> layer(jnp.ones((4, 3))).shape
(4, 2)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from bpjax import fwd, ref, rev
from bpjax import remat as _remat
from bpjax.measure import temp_bytes
from bpjax.models import ACTIVATIONS, ARCHS

NAMESPACES = {"ref": ref, "rev": rev, "fwd": fwd}
LINEARS = ("ref", "rev", "fwd", "nnx")

_default_kernel_init = nnx.initializers.lecun_normal()
_zeros = nnx.initializers.zeros_init()


def _kernel_init(weight_init: str, gain: float):
    scale = {"he": 2.0, "xavier": 1.0, "lecun": 1.0}[weight_init] * gain**2
    mode = "fan_avg" if weight_init == "xavier" else "fan_in"
    return nnx.initializers.variance_scaling(scale, mode, "normal")


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` through a bpjax rule namespace.

    Args:
      in_features, out_features: ``x: (..., in_features) -> y: (..., out_features)``.
      ops: ``"rev"`` (hand-written VJP), ``"fwd"`` (hand-written JVP) or ``"ref"`` (autodiff).
      kernel_init, bias_init: as for ``nnx.Linear`` (LeCun normal, zeros).
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
        if ops not in NAMESPACES:
            raise ValueError(f"Linear: ops must be one of {sorted(NAMESPACES)}, got {ops!r}")
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), dtype))
        self.in_features, self.out_features, self.ops = in_features, out_features, ops

    def __call__(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: x has {x.shape[-1]} features but the kernel expects "
                f"{self.in_features} (kernel.shape={tuple(self.kernel.shape)})"
            )
        return NAMESPACES[self.ops].linear(x, self.kernel[...], self.bias[...])


def _make_linear(kind, d_in, d_out, *, kernel_init, bias_init, dtype, rngs):
    if kind == "nnx":
        return nnx.Linear(
            d_in,
            d_out,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=dtype,
            rngs=rngs,
        )
    return Linear(
        d_in, d_out, ops=kind, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs
    )


def _activation(kind, name):
    return getattr(jax.nn if kind == "nnx" else NAMESPACES[kind], name)


class Block(nnx.Module):
    """One hidden block of :class:`MLP` (see :class:`bpjax.models.MLP` for the formulas).

    The state is ``h: (batch, width)``, or for ``"dense"`` a tuple of the last ``window``
    outputs.
    """

    def __init__(
        self,
        width: int,
        *,
        arch: str = "plain",
        activation: str = "tanh",
        linear: str = "rev",
        alpha: float = 1.0,
        window: int = 1,
        gate_bias: float = -2.0,
        kernel_init=_default_kernel_init,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        zeros = nnx.initializers.zeros_init()
        make = functools.partial(_make_linear, linear, dtype=dtype, rngs=rngs, bias_init=zeros)
        self.linear = make(window * width, width, kernel_init=kernel_init)
        if arch == "highway":
            self.gate = make(
                width,
                width,
                kernel_init=_kernel_init("he", 1.0),
                bias_init=nnx.initializers.constant(gate_bias),
            )
        self.arch, self.activation, self.kind, self.alpha = arch, activation, linear, alpha

    def __call__(self, state):
        act = _activation(self.kind, self.activation)
        if self.arch == "dense":
            new = act(self.linear(jnp.concatenate(state, axis=-1)))
            return (new, *state[:-1])
        branch = act(self.linear(state))
        if self.arch == "plain":
            return branch
        if self.arch == "residual":
            return state + self.alpha * branch
        sigmoid = _activation(self.kind, "sigmoid")
        gate = sigmoid(self.gate(state))
        return gate * branch + (1 - gate) * state


def stacked_blocks(n_blocks: int, width: int, *, key, **block_options) -> Block:
    """``n_blocks`` :class:`Block` s with parameters stacked on a leading axis (``nnx.vmap``).

    ``block_options`` are :class:`Block`'s keywords (default: plain tanh on ``nnx.Linear``).
    """
    if n_blocks < 1:
        raise ValueError(f"stacked_blocks: need at least one block, got {n_blocks}")
    block_options.setdefault("linear", "nnx")

    @nnx.vmap(in_axes=0, out_axes=0)
    def create(k):
        return Block(width, rngs=nnx.Rngs(params=k), **block_options)

    return create(jax.random.split(key, n_blocks))


def scan_blocks(blocks: Block, state, *, remat=None):
    """Run stacked blocks over ``state``.

    Args:
      blocks: from :func:`stacked_blocks` (or :class:`MLP`'s ``blocks``).
      state: the input state.
      remat: ``None``: ``nnx.scan`` (every residual stored); ``"nnx"``: ``nnx.scan`` over an
        ``nnx.remat`` body (Flax's own way, like ``"every"``); anything else: a
        :mod:`bpjax.remat` strategy, run over the blocks' split state.
    """
    if remat is None or remat == "nnx":

        def body(h, block):
            return block(h)

        if remat == "nnx":
            body = nnx.remat(body)
        return nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(state, blocks)
    graphdef, params = nnx.split(blocks)

    def layer(p, h):
        return nnx.merge(graphdef, p)(h)

    return _remat.stack(layer, params, state, strategy=remat)


def remat_temp_bytes(blocks: Block, x, *, how: str) -> int:
    """Compiled temp bytes of the gradient of ``sum(blocks(x))`` w.r.t. the blocks and ``x``.

    ``how``: ``"nnx.scan"``, ``"nnx.scan+nnx.remat"`` or ``"bpjax.remat <strategy>"``.
    """
    if how == "nnx.scan":
        strategy = None
    elif how == "nnx.scan+nnx.remat":
        strategy = "nnx"
    elif how.startswith("bpjax.remat "):
        strategy = how.split(" ", 1)[1]
    else:
        raise ValueError(f"remat_temp_bytes: unknown how={how!r}")
    graphdef, params = nnx.split(blocks)

    def loss(params, x):
        return jnp.sum(scan_blocks(nnx.merge(graphdef, params), x, remat=strategy))

    return temp_bytes(jax.grad(loss, argnums=(0, 1)), params, x)


class MLP(nnx.Module):
    """:class:`bpjax.models.MLP` as an NNX module: stem, ``depth − 1`` stacked blocks, output.

    Args:
      d_in, d_out: input features and classes.
      arch, depth, width, activation, weight_init, gain, branch_scale, gate_bias, dense_cap:
        as for :class:`bpjax.models.MLP`.
      linear: ``"rev"``, ``"fwd"``, ``"ref"`` (bpjax rules) or ``"nnx"`` (``nnx.Linear`` and
        ``jax.nn``: the reference).
      remat: how the block scan is rematerialized (see :func:`scan_blocks`).
      rngs: ``nnx.Rngs``.

    ``__call__(x: (batch, d_in)) -> logits (batch, d_out)``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        arch: str = "plain",
        depth: int = 4,
        width: int = 64,
        activation: str = "relu",
        weight_init: str = "he",
        gain: float = 1.0,
        branch_scale: float | None = None,
        gate_bias: float = -2.0,
        dense_cap: int = 4,
        linear: str = "rev",
        remat=None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if arch not in ARCHS:
            raise ValueError(f"MLP: unknown arch {arch!r}; choose one of {ARCHS}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        if linear not in LINEARS:
            raise ValueError(f"MLP: linear must be one of {LINEARS}, got {linear!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"MLP: depth must be an integer >= 1, got {depth!r}")
        window = min(dense_cap, depth) if arch == "dense" else 1
        alpha = 1.0 / math.sqrt(depth) if branch_scale is None else branch_scale
        hidden = _kernel_init(weight_init, gain)
        zeros = nnx.initializers.zeros_init()
        make = functools.partial(_make_linear, linear, dtype=dtype, rngs=rngs, bias_init=zeros)
        self.stem = make(d_in, width, kernel_init=hidden)
        self.blocks = nnx.data(None)
        if depth > 1:
            self.blocks = stacked_blocks(
                depth - 1,
                width,
                key=rngs.params(),
                arch=arch,
                activation=activation,
                linear=linear,
                alpha=alpha,
                window=window,
                gate_bias=gate_bias,
                kernel_init=hidden,
                dtype=dtype,
            )
        self.out = make(window * width, d_out, kernel_init=_kernel_init(weight_init, 1.0))
        self.arch, self.activation, self.linear_kind = arch, activation, linear
        self.window, self.width, self.remat = window, width, remat

    def __call__(self, x):
        h = _activation(self.linear_kind, self.activation)(self.stem(x))
        state = (h,) + (jnp.zeros_like(h),) * (self.window - 1) if self.arch == "dense" else h
        if self.blocks is not None:
            state = scan_blocks(self.blocks, state, remat=self.remat)
        top = jnp.concatenate(state, axis=-1) if self.arch == "dense" else state
        return self.out(top)


def to_params(model: MLP) -> dict:
    """The pure-function parameters of :class:`bpjax.models.MLP` holding ``model``'s values."""

    def linear(m, w="W", b="b"):
        return {w: m.kernel[...], b: m.bias[...]}

    params = {"stem": linear(model.stem), "out": linear(model.out)}
    if model.blocks is not None:
        blocks = linear(model.blocks.linear)
        if model.arch == "highway":
            blocks.update(linear(model.blocks.gate, "W_T", "b_T"))
    else:
        fan, w, dtype = model.window * model.width, model.width, model.stem.kernel.dtype
        blocks = {"W": jnp.zeros((0, fan, w), dtype), "b": jnp.zeros((0, w), dtype)}
        if model.arch == "highway":
            blocks.update(W_T=jnp.zeros((0, w, w), dtype), b_T=jnp.zeros((0, w), dtype))
    params["blocks"] = blocks
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
    """Adam on an NNX classifier with ``nnx.Optimizer`` and an ``nnx.jit`` step.

    Minibatches are drawn exactly as :func:`bpjax.train.train` draws them for the same
    ``seed`` (``fold_in(key, step)``), so the two loops see the same data in the same order.

    Args:
      model: e.g. :class:`MLP`; updated in place.
      data: a :class:`bpjax.data.Dataset`.

    Returns:
      Test accuracy after every ``eval_every`` steps (and at the end).
    """
    import optax

    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("flax.train: steps, batch_size and eval_every must be >= 1")
    _, key_data = jax.random.split(jax.random.key(seed))
    n_train = data.x_train.shape[0]
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, i):
        idx = jax.random.randint(jax.random.fold_in(key_data, i), (batch_size,), 0, n_train)

        def loss_fn(model):
            logits = model(data.x_train[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, data.y_train[idx]).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def accuracy(model):
        return jnp.mean(jnp.argmax(model(data.x_test), -1) == data.y_test)

    history = []
    for i in range(steps):
        step(model, optimizer, i)
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            history.append(float(accuracy(model)))
    return history
