"""The deep MLP with a choice of skip connections: a frozen config plus pure functions."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bpjax import _validate, remat, rev
from bpjax.models._blocks import Block, get_block
from bpjax.models._inits import INITS, kernel_init
from bpjax.models._ops import namespace

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def _choice(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"MLP: unknown {name} {value!r}; choose one of {tuple(allowed)}")


def _finite(name, value, *, positive=False) -> None:
    if not _validate.is_number(value) or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"MLP: {name} must be {kind}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MLP:
    """A deep MLP with a choice of skip connections, as a frozen config plus pure functions.

    Layout: a *stem* ``h¹ = σ(x W₀ + b₀)`` (``d_in → width``), then ``depth − 1`` hidden
    blocks of equal width stacked on a leading axis and run under ``lax.scan`` (so depth 256
    compiles as fast as depth 2), then a linear *output* layer to the logits. ``depth`` is the
    number of hidden layers, stem included. Block ``l`` by ``arch`` (the built-in blocks;
    :func:`register_block` adds more):

    * ``"plain"``: ``h ← σ(h W + b)``.
    * ``"residual"``: ``h ← h + α σ(h W + b)`` (He et al. 2016). The branch scale ``α``
      defaults to ``1/√depth``: with ``α = 1`` every block adds a term of the size of ``h``,
      so activations and gradients grow like ``(1 + c)^depth`` and a depth-64 ReLU net
      diverges; with ``α² = 1/depth`` the growth is at most ``(1 + c/depth)^depth ≤ eᶜ``
      whatever the depth (the same argument as SkipInit/ReZero and Fixup). ``branch_scale=1``
      gives the plain-init network, to show the failure.
    * ``"highway"``: ``h ← T ⊙ σ(h W + b) + (1 − T) ⊙ h`` with the learned gate
      ``T = sigmoid(h W_T + b_T)`` (Srivastava et al. 2015); ``b_T`` starts at
      ``gate_bias = −2`` so blocks begin mostly carrying ``h`` through.
    * ``"dense"``: block ``l`` sees the concatenation of the last ``K = min(dense_cap, depth)``
      hidden outputs (zero-padded at the start), ``h ← σ([h_l, …, h_{l−K+1}] W + b)``, and so
      does the output layer (Huang et al. 2017, with a cap so every block has input width
      ``K · width`` and the blocks stack under ``scan``). ``dense_cap ≥ depth`` is fully dense.

    The block scan runs through :func:`bpjax.remat.stack` with the strategy ``checkpoint``
    (default ``"none"``: a plain ``lax.scan``); any strategy gives the same gradients with
    less memory.

    Weights are Gaussian with variance ``gain² · s(fan_in, fan_out)`` for ``weight_init``
    ``"he"`` (2/fan_in), ``"xavier"`` (2/(fan_in + fan_out)) or ``"lecun"`` (1/fan_in); biases
    start at zero. ``gain > 1`` applies to the hidden layers and provokes explosion on purpose.

    Parameters are a dict ``{"stem": {"W", "b"}, "blocks": {"W", "b"[, "W_T", "b_T"]},
    "out": {"W", "b"}}`` with ``blocks`` arrays carrying a leading ``depth − 1`` axis.

    >>> import jax, jax.numpy as jnp
    >>> model = MLP(arch="residual", depth=8, width=32, activation="relu")
    >>> params = model.init(jax.random.key(0), 64, 10)
    >>> model.apply(params, jnp.ones((5, 64))).shape
    (5, 10)
    """

    arch: str = "plain"
    depth: int = 4
    width: int = 64
    activation: str = "relu"
    weight_init: str = "he"
    gain: float = 1.0
    branch_scale: float | None = None
    gate_bias: float = -2.0
    dense_cap: int = 4
    dtype: Any = jnp.float32
    checkpoint: Any = "none"

    def __post_init__(self):
        get_block(self.arch)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("weight_init", self.weight_init, tuple(INITS))
        _validate.require_int("MLP", "depth", self.depth)
        _validate.require_int("MLP", "width", self.width)
        _validate.require_int("MLP", "dense_cap", self.dense_cap)
        _finite("gain", self.gain, positive=True)
        _finite("gate_bias", self.gate_bias)
        if self.branch_scale is not None:
            _finite("branch_scale", self.branch_scale)
        if not jnp.issubdtype(jnp.dtype(self.dtype), jnp.floating):
            raise TypeError(f"MLP: dtype must be a floating dtype, got {self.dtype!r}")
        remat.resolve(self.checkpoint)

    @property
    def block(self) -> Block:
        """The registered :class:`Block` named by ``arch``."""
        return get_block(self.arch)

    @property
    def alpha(self) -> float:
        """The residual branch scale actually used."""
        return 1.0 / math.sqrt(self.depth) if self.branch_scale is None else self.branch_scale

    @property
    def window(self) -> int:
        """How many hidden outputs a windowed block such as ``"dense"`` (and the output layer
        after it) sees; 1 for the others."""
        return min(self.dense_cap, self.depth) if self.block.windowed else 1

    def init(self, key, d_in: int, d_out: int):
        """Parameters for inputs ``(batch, d_in)`` and ``d_out`` classes."""
        _validate.require_int("MLP.init", "d_in", d_in)
        _validate.require_int("MLP.init", "d_out", d_out)
        k_stem, k_blocks, k_gates, k_out = jax.random.split(key, 4)
        w, n, fan, dt = self.width, self.depth - 1, self.window * self.width, self.dtype
        inits = self.initializers()

        def stacked(init, k, shape):
            return jax.vmap(lambda k: init(k, shape, dt))(jax.random.split(k, n))

        blocks = {"W": stacked(inits["block"], k_blocks, (fan, w)), "b": jnp.zeros((n, w), dt)}
        if self.block.gated:
            blocks["W_T"] = stacked(inits["gate"], k_gates, (w, w))
            blocks["b_T"] = jnp.full((n, w), self.gate_bias, dt)
        return {
            "stem": {"W": inits["stem"](k_stem, (d_in, w), dt), "b": jnp.zeros(w, dt)},
            "blocks": blocks,
            "out": {"W": inits["out"](k_out, (fan, d_out), dt), "b": jnp.zeros(d_out, dt)},
        }

    def initializers(self) -> dict:
        """The weight initializer of each layer (``stem``, ``block``, ``gate``, ``out``).

        ``gain`` scales the hidden layers only (stem and blocks), so ``gain > 1`` provokes
        explosion while the gates and the logits start as usual. The NNX modules use these
        same functions.
        """
        hidden = kernel_init(self.weight_init, self.gain)
        plain = kernel_init(self.weight_init, 1.0)
        return {"stem": hidden, "block": hidden, "gate": plain, "out": plain}

    def apply(self, params, x, *, ops=rev):
        """Logits ``(batch, d_out)`` for ``x: (batch, d_in)``, differentiated by ``ops``
        (:mod:`bpjax.ref`, ``rev`` or ``fwd``, the module or its name)."""
        ops = namespace(ops)
        self.check_params(params)
        d_in = params["stem"]["W"].shape[0]
        if x.shape[-1] != d_in:
            raise ValueError(
                f"MLP.apply: x has {x.shape[-1]} features but the model was initialised for "
                f"d_in={d_in} (x.shape={tuple(x.shape)}); call init(key, {x.shape[-1]}, d_out)"
            )
        act = getattr(ops, self.activation)
        h = act(ops.linear(x, params["stem"]["W"], params["stem"]["b"]))
        state = self.initial_state(h)
        kind = self.block

        def layer(p, state):
            def gate(h):
                return ops.sigmoid(ops.linear(h, p["W_T"], p["b_T"]))

            return kind.apply(
                state,
                affine=lambda h: ops.linear(h, p["W"], p["b"]),
                act=act,
                gate=gate if kind.gated else None,
                alpha=self.alpha,
            )

        if self.depth > 1:
            state = remat.stack(layer, params["blocks"], state, strategy=self.checkpoint)
        return ops.linear(self.top(state), params["out"]["W"], params["out"]["b"])

    def initial_state(self, h):
        """The block scan's input state from the stem's output ``h: (batch, width)``."""
        if not self.block.windowed:
            return h
        return (h,) + (jnp.zeros_like(h),) * (self.window - 1)

    def top(self, state):
        """What the output layer reads: ``h``, or the dense window concatenated."""
        return jnp.concatenate(state, axis=-1) if self.block.windowed else state

    def check_params(self, params) -> None:
        """Raise a ValueError unless ``params`` have the layout and shapes this config makes.

        Catches parameters made by another config (another width, depth, arch or window).
        The layout and shapes wanted are those :meth:`init` gives (``jax.eval_shape``, for
        the ``d_in`` and ``d_out`` that ``params`` were made for).
        """
        if not isinstance(params, dict) or set(params) != {"stem", "blocks", "out"}:
            raise ValueError("MLP: params must be a dict with keys 'stem', 'blocks', 'out'")
        d_in = np.shape(params["stem"]["W"])[0]
        d_out = np.shape(params["out"]["W"])[-1]
        try:
            want = _param_shapes(self, self.block, d_in, d_out)
        except TypeError:  # an unhashable checkpoint strategy: no cache
            want = _param_shapes.__wrapped__(self, self.block, d_in, d_out)
        if set(params["blocks"]) != set(want["blocks"]):
            raise ValueError(
                f"MLP: params['blocks'] has keys {sorted(params['blocks'])} but arch="
                f"{self.arch!r} needs {sorted(want['blocks'])}; were they made by another config?"
            )
        for part, names in want.items():
            for name, shape in names.items():
                got = tuple(np.shape(params[part].get(name)))
                if got != shape:
                    raise ValueError(
                        f"MLP: params[{part!r}][{name!r}].shape={got} but depth={self.depth}, "
                        f"width={self.width}, arch={self.arch!r} need {shape}; were they made "
                        "by another config?"
                    )

    def loss(self, params, x, labels, *, ops=rev):
        """Mean softmax cross-entropy of :meth:`apply` against ``labels``."""
        return namespace(ops).softmax_cross_entropy(self.apply(params, x, ops=ops), labels)


@functools.lru_cache(maxsize=256)
def _param_shapes(config: MLP, block: Block, d_in: int, d_out: int) -> dict:
    # Cached because apply checks params on every eager call; block is in the key so that a
    # block registered anew under the same name is not answered from the cache.
    del block
    shapes = jax.eval_shape(lambda key: config.init(key, d_in, d_out), jax.random.key(0))
    return {part: {n: tuple(a.shape) for n, a in arrays.items()} for part, arrays in shapes.items()}
