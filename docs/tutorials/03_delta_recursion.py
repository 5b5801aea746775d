# %% [markdown]
# # 3. The δ recursion by hand
#
# For an L-layer perceptron, backpropagation fits in three lines. With `m` rows,
# `a⁰ = x`, `zˡ = aˡ⁻¹ Wˡ + bˡ`, `aˡ = σ(zˡ)` for the hidden layers, `p = softmax(zᴸ)` and
# the mean cross-entropy loss, define `δˡ = ∂loss/∂zˡ`. Then
#
#     δᴸ   = (p − y) / m                      (tutorial 4 derives this)
#     W̄ˡ   = aˡ⁻¹ᵀ δˡ,    b̄ˡ = Σ_rows δˡ
#     δˡ⁻¹ = (δˡ Wˡᵀ) ⊙ σ'(zˡ⁻¹)
#
# `bpjax.manual` is exactly this, with no autodiff anywhere. This page writes the recursion
# a second time in a dozen lines of `jax.numpy`, and checks both against `jax.grad`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

from bpjax import data, manual, models

jax.config.update("jax_enable_x64", True)

digits = data.digits()
x = digits.x_train[:64].astype(jnp.float64)  # (m, 64) pixels
y = digits.y_train[:64]  # (m,) class ids
sizes = (64, 32, 32, 32, 10)  # L = 4 layers
params = models.init_layers(jax.random.key(0), sizes, dtype=jnp.float64)
print("layers:", [(W.shape, b.shape) for W, b in params])

# %% [markdown]
# ## `bpjax.manual`: forward with a cache, backward by the recursion
#
# `manual.forward` returns the class probabilities and a `Cache` holding what the backward
# pass will read: each layer's input `aˡ⁻¹` (for `W̄ˡ`), what each activation's backward
# rule keeps (for `σ'`), and the log-probabilities (for `δᴸ`).

# %%
probs, cache = manual.forward(params, x, activation="tanh")
print("layer inputs:", [a.shape for a in cache.inputs])
print(
    "kept for σ' :",
    [s.shape for s in cache.saved],
    "(tanh keeps its output)",
)
grads = manual.backward(params, cache, y)
loss, _ = manual.backprop(params, x, y, activation="tanh")

auto = jax.grad(models.layers_loss)(
    params, x, y, ops="ref", activation="tanh"
)
worst = max(
    float(jnp.max(jnp.abs(g - a)))
    for g, a in zip(
        jax.tree.leaves(grads), jax.tree.leaves(auto), strict=True
    )
)
print(
    f"loss {float(loss):.6f}; max |manual − jax.grad| over all "
    f"parameters: {worst:.1e}"
)

# %% [markdown]
# ## The same recursion, written out
#
# Nothing hidden: the loop below is the three lines above, for `σ = tanh`
# (`σ'(z) = 1 − tanh² z`, read from the cached output). One-hot labels make `p − y` a
# subtraction of two `(m, classes)` arrays.


# %%
def my_backprop(params, x, y):
    # forward, keeping each layer's input
    inputs, a = [], x
    for W, b in params[:-1]:
        inputs.append(a)
        a = jnp.tanh(a @ W + b)
    inputs.append(a)
    W, b = params[-1]
    p = jax.nn.softmax(a @ W + b)
    # backward
    m = x.shape[0]
    delta = (p - jax.nn.one_hot(y, p.shape[1])) / m  # δᴸ
    out, deltas = [], []
    for l in range(len(params) - 1, -1, -1):
        deltas.append(delta)
        out.append((inputs[l].T @ delta, delta.sum(axis=0)))  # W̄ˡ, b̄ˡ
        if l > 0:
            a_prev = inputs[l]  # = tanh(zˡ⁻¹)
            delta = (delta @ params[l][0].T) * (1 - a_prev**2)  # δˡ⁻¹
    return out[::-1], deltas[::-1]


mine, deltas = my_backprop(params, x, y)
worst = max(
    float(jnp.max(jnp.abs(g - a)))
    for g, a in zip(
        jax.tree.leaves(mine), jax.tree.leaves(auto), strict=True
    )
)
print(f"max |my recursion − jax.grad|: {worst:.1e}")
print("δ shapes:", [d.shape for d in deltas])

# %% [markdown]
# ## Watching δ travel back
#
# Each step back multiplies δ by `Wˡᵀ` and by `σ'`. With sigmoid, `σ' ≤ 1/4`, so δ shrinks
# layer after layer; with tanh and a matching initialization the two factors roughly
# cancel. The figure shows `‖W̄ˡ‖` for a deeper network (L = 12) with the three activations,
# all computed by `bpjax.manual`.

# %%
deep_sizes = (64,) + (32,) * 11 + (10,)
fig, ax = plt.subplots(figsize=(6, 3.8))
for activation, init in (
    ("sigmoid", "xavier"),
    ("tanh", "xavier"),
    ("relu", "he"),
):
    p_deep = models.init_layers(
        jax.random.key(1),
        deep_sizes,
        weight_init=init,
        dtype=jnp.float64,
    )
    _, g_deep = manual.backprop(p_deep, x, y, activation=activation)
    norms = [float(jnp.linalg.norm(gW)) for gW, _ in g_deep]
    ax.semilogy(
        range(1, len(norms) + 1),
        norms,
        "o-",
        label=f"{activation} ({init} init)",
    )
ax.set_xlabel("layer l (1 = nearest the input)")
ax.set_ylabel("‖W̄ˡ‖")
ax.set_title("gradient norm per layer at initialization, L = 12")
ax.legend()
plt.show()

# %% [markdown]
# ## What the backward pass costs
#
# Per layer, the forward pass does one matrix product (`aˡ⁻¹ Wˡ`, `2 m d_{l−1} d_l`
# FLOPs); the backward pass does two (`aˡ⁻¹ᵀ δˡ` for the weights and `δˡ Wˡᵀ` for the next
# δ), except at the first layer, whose input gradient nobody needs. So a training step costs
# about three forward passes: backward ≈ 2 × forward.


# %%
def matmul_flops(sizes, m):
    forward = sum(
        2 * m * a * b
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )
    # no δ⁰ for the input layer
    backward = 2 * forward - 2 * m * sizes[0] * sizes[1]
    return forward, backward


fw, bw = matmul_flops(sizes, x.shape[0])
print(
    f"forward {fw:,} FLOPs, backward {bw:,} FLOPs, ratio {bw / fw:.2f}"
)

# %% [markdown]
# ## Check yourself
#
# 1. What is the shape of `δˡ`, and why must it match `zˡ`?
# 2. For one-hot labels, what do the rows of `δᴸ` sum to?
# 3. The backward/forward FLOP ratio above is below 2. Which term makes it so, and what is
#    it for a network whose input layer is much wider than the rest (784-32-10)?

# %%
# 1. (m, d_l): δˡ is ∂loss/∂zˡ, one entry per entry of zˡ.
hidden = [x.shape[0]] * len(sizes[1:])
assert [d.shape for d in deltas] == list(
    zip(hidden, sizes[1:], strict=True)
)
print("1. δ shapes", [d.shape for d in deltas])

# 2. Zero: Σ_j (p_j − y_j) = 1 − 1.
assert jnp.allclose(deltas[-1].sum(axis=1), 0.0)
print(
    "2. row sums of δᴸ:",
    float(jnp.max(jnp.abs(deltas[-1].sum(axis=1)))),
)

# 3. The first layer skips δ⁰ = δ¹ W¹ᵀ; with a wide input layer that is
#    most of the work.
fw_wide, bw_wide = matmul_flops((784, 32, 10), 64)
assert bw_wide / fw_wide < bw / fw < 2
print(
    f"3. 784-32-10: ratio {bw_wide / fw_wide:.2f} (the skipped "
    "input-gradient product)"
)
