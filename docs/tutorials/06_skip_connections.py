# %% [markdown]
# # 6. Skip connections: residual, highway, dense
#
# Tutorial 5 showed a plain sigmoid network's gradient shrinking by up to 4× per layer.
# Skip connections change the *Jacobian* of a block so that the product over layers no
# longer has to shrink. `bpjax.models.block` writes each block once:
#
#     plain:     h ← σ(h W + b)
#     residual:  h ← h + α σ(h W + b)                 (He et al. 2016; α = 1/√depth here)
#     highway:   h ← T ⊙ σ(h W + b) + (1 − T) ⊙ h,    T = sigmoid(h W_T + b_T)
#                                                     (Srivastava et al. 2015)
#     dense:     h ← σ([h_l, h_{l−1}, …, h_{l−K+1}] W + b)   (Huang et al. 2017, window K)
#
# and `bpjax.models.MLP(arch=...)` stacks them.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from bpjax import data, grads, models, ref, train

digits = data.digits()
xb, yb = digits.x_train[:128], digits.y_train[:128]

# %% [markdown]
# ## The block Jacobian
#
# Backpropagation multiplies δ by each block's Jacobian `∂h_out/∂h_in`. For a plain block
# it is `W diag(σ')`: with sigmoid, its singular values sit well below 1. For a residual
# block it is `I + α W diag(σ')`: the identity is always there, so the singular values
# cluster around 1 whatever σ' does. Below, the singular values of the product of 16 block
# Jacobians (the end-to-end Jacobian of the block stack), for one input row.

# %%
width, depth = 32, 16


def stack_jacobian(arch, key):
    model = models.MLP(
        arch=arch,
        depth=depth + 1,
        width=width,
        activation="sigmoid",
        weight_init="xavier",
    )
    blocks = model.init(key, 64, 10)["blocks"]

    def run(h):
        for l in range(depth):
            p = jax.tree.map(lambda leaf, l=l: leaf[l], blocks)
            h = models.block(
                arch,
                h,
                affine=lambda h, p=p: ref.linear(h, p["W"], p["b"]),
                act=ref.sigmoid,
                gate=lambda h, p=p: ref.sigmoid(
                    ref.linear(h, p["W_T"], p["b_T"])
                ),
                alpha=model.alpha,
            )
        return h

    h0 = jax.random.normal(jax.random.key(1), (width,))
    return jnp.linalg.svd(jax.jacfwd(run)(h0), compute_uv=False)


spectra = {
    arch: stack_jacobian(arch, jax.random.key(0))
    for arch in ("plain", "residual", "highway")
}
fig, ax = plt.subplots(figsize=(6, 3.8))
for arch, s in spectra.items():
    ax.semilogy(np.arange(1, width + 1), s, "o-", ms=3, label=arch)
ax.set_xlabel("index")
ax.set_ylabel("singular value")
ax.set_title(f"∂h_out/∂h_in through {depth} sigmoid blocks")
ax.legend()
plt.show()
for arch, s in spectra.items():
    print(
        f"{arch:9s} largest {float(s[0]):.3g}, smallest "
        f"{float(s[-1]):.3g}"
    )

# %% [markdown]
# ## Per-layer gradient norms at initialization
#
# The same picture, seen from the parameters: `‖W̄ˡ‖` per layer for a depth-32 sigmoid
# network of each kind (float64, so the vanishing values stay visible).

# %%
jax.config.update("jax_enable_x64", True)
fig, ax = plt.subplots(figsize=(6.5, 4))
ratios = {}
for arch in ("plain", "residual", "highway", "dense"):
    model = models.MLP(
        arch=arch,
        depth=32,
        width=32,
        activation="sigmoid",
        weight_init="xavier",
        dtype=jnp.float64,
    )
    params = model.init(jax.random.key(0), 64, 10)
    norms = np.asarray(
        grads.layer_norms(
            jax.grad(model.loss)(params, xb.astype(float), yb)
        )
    )
    ratios[arch] = norms[0] / norms[-2]
    ax.semilogy(
        np.arange(1, len(norms) + 1), norms, "o-", ms=3, label=arch
    )
ax.set_xlabel("layer (1 = stem; last = output layer)")
ax.set_ylabel("‖W̄ˡ‖ at initialization")
ax.set_title("sigmoid MLP, depth 32, width 32")
ax.legend()
plt.show()
for arch, r in ratios.items():
    print(f"{arch:9s} first / last hidden layer: {r:.2g}")
jax.config.update("jax_enable_x64", False)

# %% [markdown]
# The dense blocks here see only the last `K = 4` hidden outputs (so that every block has the
# same input width and the blocks stack under `lax.scan`): the early layers have no short
# path to the loss, and the gradient vanishes as in the plain net. That is a limit of the
# capped window, visible here and in the [depth results](../results/depth.md).
#
# ## Does it train?
#
# The same budget for each: 150 Adam steps on digits, depth 16, width 32, sigmoid.

# %%
accuracy = {}
for arch in ("plain", "residual", "highway", "dense"):
    model = models.MLP(
        arch=arch,
        depth=16,
        width=32,
        activation="sigmoid",
        weight_init="xavier",
    )
    h = train.train(model, digits, steps=150, eval_every=75)
    accuracy[arch] = h.final_test_acc
    print(
        f"{arch:9s} test accuracy {h.final_test_acc:.2f}, final loss "
        f"{h.final_loss:.3f}"
    )

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(
    list(accuracy),
    list(accuracy.values()),
    color=["#999", "#27AE60", "#3498DB", "#E67E22"],
)
ax.axhline(0.1, color="k", ls=":", label="chance")
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
ax.legend()
plt.show()

# %% [markdown]
# ## Check yourself
#
# 1. What is a residual block's Jacobian when its branch scale α is 0, and a highway
#    block's when its gate T is 0?
# 2. How wide is a dense block's input for width 32 and window 4, and where does
#    `models.MLP` keep that?
# 3. Why does `models.MLP` scale the residual branch by `1/√depth` by default? Compute the
#    growth bound `(1 + α²)^(depth/2)` of the forward signal for α = 1 and α = 1/√depth at
#    depth 64.

# %%
h0 = jax.random.normal(jax.random.key(2), (width,))
W = jax.random.normal(jax.random.key(3), (width, width))


def residual(h, alpha):
    return models.block(
        "residual", h, affine=lambda h: h @ W, act=jnp.tanh, alpha=alpha
    )


def highway_closed(h):
    return models.block(
        "highway",
        h,
        affine=lambda h: h @ W,
        act=jnp.tanh,
        gate=lambda h: jnp.zeros_like(h),
    )


# 1. Both are the identity: the block passes h through unchanged.
assert jnp.allclose(
    jax.jacfwd(lambda h: residual(h, 0.0))(h0), jnp.eye(width)
)
assert jnp.allclose(jax.jacfwd(highway_closed)(h0), jnp.eye(width))
print("1. α = 0 and T = 0: Jacobian = I")

# 2. K · width = 128 columns: params["blocks"]["W"] is
#    (depth − 1, 128, 32).
dense = models.MLP(arch="dense", depth=16, width=32)
W_dense = dense.init(jax.random.key(0), 64, 10)["blocks"]["W"]
assert (
    W_dense.shape == (15, dense.window * 32, 32) and dense.window == 4
)
print("2. dense block weights:", W_dense.shape)

# 3. Each block adds a branch of relative size ≈ α: ‖h‖ grows by
#    ≈ √(1 + α²) per block.
bound = {a: (1 + a**2) ** (64 / 2) for a in (1.0, 1 / np.sqrt(64))}
assert bound[1.0] > 1e9 and bound[1 / np.sqrt(64)] < np.sqrt(np.e)
print(
    f"3. α = 1: ×{bound[1.0]:.2g}; α = 1/√64: "
    f"×{bound[1 / np.sqrt(64)]:.3f} (≤ √e)"
)
