"""Models as pure functions over pytrees.

:func:`init_layers` / :func:`layers_logits` / :func:`layers_loss` describe a plain MLP as a
list of ``(W, b)`` pairs, the format :mod:`bpjax.manual` uses, so the same parameters can be
differentiated by hand (manual), by hand-written rules (``rev``/``fwd``) and by autodiff
(``ref``) and compared one to one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bpjax import fwd, ref, remat, rev

__all__ = [
    "MLP",
    "block",
    "init_layers",
    "layers_logits",
    "layers_loss",
    "init_weight",
    "kernel_init",
    "namespace",
]

INITS = {
    # name: variance scale as a function of (fan_in, fan_out)
    "he": lambda fan_in, fan_out: 2.0 / fan_in,  # He et al. 2015, for ReLU
    "xavier": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),  # Glorot & Bengio 2010
    "lecun": lambda fan_in, fan_out: 1.0 / fan_in,  # LeCun 1998, for tanh/SELU
}


def init_weight(key, fan_in: int, fan_out: int, *, weight_init="he", gain=1.0, dtype=jnp.float32):
    """A ``(fan_in, fan_out)`` Gaussian weight with the named variance scaling times ``gain²``.

    ``gain > 1`` provokes exploding activations and gradients on purpose.
    """
    if weight_init not in INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {sorted(INITS)}")
    std = gain * math.sqrt(INITS[weight_init](fan_in, fan_out))
    return std * jax.random.normal(key, (fan_in, fan_out), dtype)


def kernel_init(weight_init: str = "he", gain: float = 1.0):
    """:func:`init_weight` as an initializer ``init(key, (fan_in, fan_out), dtype)``.

    The form ``nnx.Linear(kernel_init=...)`` takes, so the NNX modules draw their weights
    with exactly the function the pure-function models use.
    """
    if weight_init not in INITS:
        raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {sorted(INITS)}")

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape
        return init_weight(key, fan_in, fan_out, weight_init=weight_init, gain=gain, dtype=dtype)

    return init


NAMESPACES = {"ref": ref, "rev": rev, "fwd": fwd}


def namespace(ops):
    """The rule namespace ``ops`` names: :mod:`bpjax.ref`, ``rev`` or ``fwd``, as the module
    or its name. Everything that takes ``ops=`` resolves it here."""
    if isinstance(ops, str) and ops in NAMESPACES:
        return NAMESPACES[ops]
    if ops in NAMESPACES.values():
        return ops
    raise ValueError(
        f"ops must be one of {sorted(NAMESPACES)} (or the module bpjax.ref/rev/fwd), got {ops!r}"
    )


def init_layers(key, sizes, *, weight_init="he", dtype=jnp.float32):
    """Parameters of a plain MLP with layer widths ``sizes = (d_in, h_1, …, d_out)``.

    Returns:
      A list of ``(W, b)`` with ``W: (sizes[l], sizes[l+1])`` and zero biases.
    """
    if len(sizes) < 2:
        raise ValueError(f"init_layers: sizes needs at least (d_in, d_out), got {sizes}")
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (init_weight(k, a, b, weight_init=weight_init, dtype=dtype), jnp.zeros(b, dtype))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def layers_logits(params, x, *, ops=rev, activation="relu"):
    """Logits ``(batch, d_out)`` of the MLP ``params`` (see :func:`init_layers`) at ``x``.

    ``ops`` is the rule namespace that differentiates it: ``bpjax.ref``, ``rev`` or ``fwd``
    (the module or its name).
    """
    ops = namespace(ops)
    act = getattr(ops, activation)
    a = x
    for W, b in params[:-1]:
        a = act(ops.linear(a, W, b))
    W, b = params[-1]
    return ops.linear(a, W, b)


def layers_loss(params, x, labels, *, ops=rev, activation="relu"):
    """Mean softmax cross-entropy of :func:`layers_logits` against ``labels``."""
    return namespace(ops).softmax_cross_entropy(
        layers_logits(params, x, ops=ops, activation=activation), labels
    )


ARCHS = ("plain", "residual", "highway", "dense")
ACTIVATIONS = ("sigmoid", "tanh", "relu")


def _choice(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"MLP: unknown {name} {value!r}; choose one of {tuple(allowed)}")


def _positive_int(name, value, where="MLP") -> None:
    # bool is an int in Python: depth=True would silently mean depth=1.
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")


def _finite(name, value, *, positive=False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.floating)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"MLP: {name} must be {kind}, got {value!r}")


def block(arch: str, state, *, affine, act, gate=None, alpha: float = 1.0):
    """One hidden block of :class:`MLP`: the formula, written once for every implementation.

    Args:
      arch: ``"plain"``, ``"residual"``, ``"highway"`` or ``"dense"``.
      state: ``h: (batch, width)``; for ``"dense"`` the tuple of the last ``window`` outputs.
      affine: ``h -> h W + b``, the block's linear map (``(batch, fan) -> (batch, width)``).
      act: the activation.
      gate: ``h -> T``, the highway gate ``sigmoid(h W_T + b_T)`` (highway only).
      alpha: the residual branch scale.

    Returns:
      The next state, shaped like ``state``.
    """
    if arch == "dense":
        new = act(affine(jnp.concatenate(state, axis=-1)))
        return (new, *state[:-1])
    branch = act(affine(state))
    if arch == "plain":
        return branch
    if arch == "residual":
        return state + alpha * branch
    t = gate(state)
    return t * branch + (1 - t) * state


@dataclasses.dataclass(frozen=True)
class MLP:
    """A deep MLP with a choice of skip connections, as a frozen config plus pure functions.

    Layout: a *stem* ``h¹ = σ(x W₀ + b₀)`` (``d_in → width``), then ``depth − 1`` hidden
    blocks of equal width stacked on a leading axis and run under ``lax.scan`` (so depth 256
    compiles as fast as depth 2), then a linear *output* layer to the logits. ``depth`` is the
    number of hidden layers, stem included. Block ``l`` by ``arch``:

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
        _choice("arch", self.arch, ARCHS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("weight_init", self.weight_init, tuple(INITS))
        _positive_int("depth", self.depth)
        _positive_int("width", self.width)
        _positive_int("dense_cap", self.dense_cap)
        _finite("gain", self.gain, positive=True)
        _finite("gate_bias", self.gate_bias)
        if self.branch_scale is not None:
            _finite("branch_scale", self.branch_scale)
        if not jnp.issubdtype(jnp.dtype(self.dtype), jnp.floating):
            raise TypeError(f"MLP: dtype must be a floating dtype, got {self.dtype!r}")
        remat.resolve(self.checkpoint)

    @property
    def alpha(self) -> float:
        """The residual branch scale actually used."""
        return 1.0 / math.sqrt(self.depth) if self.branch_scale is None else self.branch_scale

    @property
    def window(self) -> int:
        """How many hidden outputs a dense block (and the output layer) sees."""
        return min(self.dense_cap, self.depth) if self.arch == "dense" else 1

    def init(self, key, d_in: int, d_out: int):
        """Parameters for inputs ``(batch, d_in)`` and ``d_out`` classes."""
        _positive_int("d_in", d_in, "MLP.init")
        _positive_int("d_out", d_out, "MLP.init")
        k_stem, k_blocks, k_gates, k_out = jax.random.split(key, 4)
        w, n, fan, dt = self.width, self.depth - 1, self.window * self.width, self.dtype
        inits = self.initializers()

        def stacked(init, k, shape):
            return jax.vmap(lambda k: init(k, shape, dt))(jax.random.split(k, n))

        blocks = {"W": stacked(inits["block"], k_blocks, (fan, w)), "b": jnp.zeros((n, w), dt)}
        if self.arch == "highway":
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

        def layer(p, state):
            return block(
                self.arch,
                state,
                affine=lambda h: ops.linear(h, p["W"], p["b"]),
                act=act,
                gate=lambda h: ops.sigmoid(ops.linear(h, p["W_T"], p["b_T"])),
                alpha=self.alpha,
            )

        if self.depth > 1:
            state = remat.stack(layer, params["blocks"], state, strategy=self.checkpoint)
        return ops.linear(self.top(state), params["out"]["W"], params["out"]["b"])

    def initial_state(self, h):
        """The block scan's input state from the stem's output ``h: (batch, width)``."""
        if self.arch != "dense":
            return h
        return (h,) + (jnp.zeros_like(h),) * (self.window - 1)

    def top(self, state):
        """What the output layer reads: ``h``, or the dense window concatenated."""
        return jnp.concatenate(state, axis=-1) if self.arch == "dense" else state

    def check_params(self, params) -> None:
        """Raise a ValueError unless ``params`` have the layout and shapes this config makes.

        Catches parameters made by another config (another width, depth, arch or window).
        """
        w, fan, n = self.width, self.window * self.width, self.depth - 1
        keys = {"W", "b", "W_T", "b_T"} if self.arch == "highway" else {"W", "b"}
        if not isinstance(params, dict) or set(params) != {"stem", "blocks", "out"}:
            raise ValueError("MLP: params must be a dict with keys 'stem', 'blocks', 'out'")
        if set(params["blocks"]) != keys:
            raise ValueError(
                f"MLP: params['blocks'] has keys {sorted(params['blocks'])} but arch="
                f"{self.arch!r} needs {sorted(keys)}; were they made by another config?"
            )
        d_in = np.shape(params["stem"]["W"])[0]
        d_out = np.shape(params["out"]["W"])[-1]
        want = {
            ("stem", "W"): (d_in, w),
            ("stem", "b"): (w,),
            ("blocks", "W"): (n, fan, w),
            ("blocks", "b"): (n, w),
            ("blocks", "W_T"): (n, w, w),
            ("blocks", "b_T"): (n, w),
            ("out", "W"): (fan, d_out),
            ("out", "b"): (d_out,),
        }
        for (part, name), shape in want.items():
            if name not in params[part]:
                continue
            got = tuple(np.shape(params[part][name]))
            if got != shape:
                raise ValueError(
                    f"MLP: params[{part!r}][{name!r}].shape={got} but depth={self.depth}, "
                    f"width={self.width}, arch={self.arch!r} need {shape}; were they made by "
                    "another config?"
                )

    def loss(self, params, x, labels, *, ops=rev):
        """Mean softmax cross-entropy of :meth:`apply` against ``labels``."""
        return namespace(ops).softmax_cross_entropy(self.apply(params, x, ops=ops), labels)
