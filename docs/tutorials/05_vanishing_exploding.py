# %% [markdown]
# # 5. Vanishing and exploding gradients, and clipping
#
# The δ recursion of tutorial 3, `δˡ⁻¹ = (δˡ Wˡᵀ) ⊙ σ'(zˡ⁻¹)`, multiplies the gradient by one
# factor per layer. Over L layers those factors compound: if each shrinks δ by a constant,
# the first layers get a gradient smaller by that constant to the power L (it **vanishes**);
# if each grows it, the gradient **explodes**. This page measures both on deep MLPs at
# initialization with `bpjax.grads.layer_norms`, then shows what clipping does, and does not,
# repair.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from bpjax import data, grads, models, ref, train

digits = data.digits()
xb, yb = digits.x_train[:128], digits.y_train[:128]


def init_grads(model, seed=0, dtype=jnp.float32):
    params = model.init(jax.random.key(seed), 64, 10)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    return jax.grad(model.loss)(params, xb.astype(dtype), yb)


# %% [markdown]
# ## The sigmoid bound
#
# `σ'(z) = σ(z)(1 − σ(z)) ≤ 1/4`, with equality only at `z = 0`. With weights that keep
# `‖δ Wᵀ‖ ≈ ‖δ‖` (Xavier initialization), each sigmoid layer still multiplies the gradient
# by at most 1/4: after 16 layers, by at most 4⁻¹⁶ ≈ 2·10⁻¹⁰.

# %%
zs = jnp.linspace(-6.0, 6.0, 241)
slopes = jax.vmap(jax.grad(ref.sigmoid))(zs)
print(
    f"max σ'(z) = {float(slopes.max()):.4f} at z = "
    f"{float(zs[slopes.argmax()]):.2f}"
)

# %% [markdown]
# ## Per-layer gradient norms at initialization
#
# `grads.layer_norms(g)` gives `‖W̄ˡ‖` for every layer of a `models.MLP`, input layer first.
# Computed in float64 so that the smallest values stay visible (in float32 some would be
# exactly 0). The dotted line is the `(1/4)^(L−l)` decay the bound allows for sigmoid.

# %%
jax.config.update("jax_enable_x64", True)
depth = 16
fig, ax = plt.subplots(figsize=(6.5, 4))
profiles = {}
for activation, init in (
    ("sigmoid", "xavier"),
    ("tanh", "xavier"),
    ("relu", "he"),
):
    model = models.MLP(
        arch="plain",
        depth=depth,
        width=32,
        activation=activation,
        weight_init=init,
    )
    norms = np.asarray(
        grads.layer_norms(init_grads(model, dtype=jnp.float64))
    )
    profiles[activation] = norms
    ax.semilogy(
        range(1, len(norms) + 1),
        norms,
        "o-",
        label=f"{activation}, {init} init",
    )
layers = np.arange(1, depth + 1)
top = profiles["sigmoid"][depth - 1]
ax.semilogy(
    layers, top * 0.25 ** (depth - layers), "k:", label="(1/4)^(L−l)"
)
ax.set_xlabel(
    "layer (1 = stem, nearest the input; last = output layer)"
)
ax.set_ylabel("‖W̄ˡ‖ at initialization")
ax.set_title(
    f"plain MLP, depth {depth}, width 32, a digits batch of 128"
)
ax.legend()
plt.show()
for activation, norms in profiles.items():
    print(
        f"{activation:8s} first / last hidden layer: "
        f"{norms[0] / norms[depth - 1]:.2g}"
    )

# %% [markdown]
# Sigmoid vanishes, roughly at the rate the bound predicts (slightly faster: σ' is below 1/4
# away from 0). Tanh (σ'(0) = 1) and ReLU with He initialization (half the units pass with
# slope 1, and the variance 2/fan_in compensates) keep the gradient's size *at
# initialization*.
#
# ## Exploding: a gain per layer
#
# Scale He initialization by a gain `g` (`models.MLP(gain=g)` multiplies the stem's and the
# blocks' initial weights by `g`; below we scale one set of weights, so each depth compiles
# once). Each ReLU layer then multiplies the signal, forward and backward, by about `g`: the
# gradient norm grows like `gᴸ`, a straight line on a log scale with slope `log g` per layer.

# %%
jax.config.update("jax_enable_x64", False)
depths = [2, 4, 8, 16]
gains = (0.8, 1.0, 1.5, 2.0)
growth = {gain: [] for gain in gains}
for d in depths:
    model = models.MLP(depth=d, width=32)
    grad_fn = jax.jit(jax.grad(model.loss))
    base = model.init(jax.random.key(0), 64, 10)
    for gain in gains:
        scaled = {
            "stem": {**base["stem"], "W": gain * base["stem"]["W"]},
            "blocks": {
                **base["blocks"],
                "W": gain * base["blocks"]["W"],
            },
            "out": base["out"],
        }
        growth[gain].append(
            float(grads.global_norm(grad_fn(scaled, xb, yb)))
        )
fig, ax = plt.subplots(figsize=(6, 4))
fitted = {}
for gain, norms in growth.items():
    fitted[gain] = np.polyfit(depths, np.log(norms), 1)[0]
    ax.semilogy(
        depths,
        norms,
        "o-",
        label=f"gain {gain}: slope {fitted[gain]:.2f}/layer",
    )
ax.set_xlabel("depth")
ax.set_ylabel("global gradient norm at initialization")
ax.set_title("plain ReLU MLP, W ~ gain · He")
ax.legend()
plt.show()

# %% [markdown]
# ## Clipping: by global norm or by value
#
# Two hand-written clips (`bpjax.grads`, tested against optax):
#
# * by global norm, `g ← g · min(1, c/‖g‖)`: one scale for the whole tree, so the direction
#   is kept;
# * by value, `gᵢ ← clip(gᵢ, −c, c)`: each entry alone, so large entries are cut and the
#   direction turns.
#
# Below, both are applied to the exploding gradient of a depth-8, gain-2 ReLU net, at
# thresholds given as a fraction of `‖g‖` (norm clipping) or of `max|gᵢ|` (value clipping).

# %%
exploding = models.MLP(arch="plain", depth=8, width=64, gain=2.0)
g = init_grads(exploding)
flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(g)])
g_norm, g_max = (
    float(grads.global_norm(g)),
    float(jnp.max(jnp.abs(flat))),
)


def cosine(tree):
    v = jnp.concatenate(
        [leaf.ravel() for leaf in jax.tree.leaves(tree)]
    )
    return float(
        jnp.vdot(v, flat) / (jnp.linalg.norm(v) * jnp.linalg.norm(flat))
    )


fractions = np.logspace(-4, 0, 13)
cos_norm = [
    cosine(grads.clip_tree_by_global_norm(g, f * g_norm)[0])
    for f in fractions
]
cos_value = [
    cosine(grads.clip_tree_by_value(g, f * g_max)) for f in fractions
]
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.semilogx(
    fractions, cos_norm, "o-", label="by global norm (threshold × ‖g‖)"
)
ax.semilogx(
    fractions, cos_value, "s-", label="by value (threshold × max |gᵢ|)"
)
ax.set_xlabel("threshold")
ax.set_ylabel("cosine(clipped g, g)")
ax.set_ylim(0, 1.05)
ax.legend()
plt.show()

# %% [markdown]
# ## Training with and without clipping
#
# SGD on that net (`train.train`, learning rate 0.05, 100 steps): without clipping the first
# steps overshoot, the loss overflows and the run stops at the first non-finite loss, naming
# the layer whose gradient went bad first. Clipping the global norm to 1 keeps every step
# bounded.

# %%
runs = {}
for label, clip in (
    ("no clipping", None),
    ("clip global norm 1.0", 1.0),
):
    h = train.train(
        exploding,
        digits,
        steps=100,
        eval_every=25,
        optimizer="sgd",
        learning_rate=0.05,
        clip_norm=clip,
    )
    runs[label] = h
    if h.diverged_at is None:
        print(
            f"{label:22s} finite for all {len(h.loss)} steps; test "
            f"accuracy {h.final_test_acc:.2f}"
        )
    else:
        print(
            f"{label:22s} non-finite loss at step {h.diverged_at}, "
            f"first in {h.nonfinite_layer}"
        )

# %% [markdown]
# Clipping bounds the *step*; it cannot fix a *forward* pass that already overflows. For a
# deep residual net that is the job of the branch scale (`models.MLP(branch_scale=...)`,
# default `1/√depth`), shown in [tutorial 6](06_skip_connections.py) and measured in the
# [exploding results](../results/exploding.md).
#
# ## Check yourself
#
# 1. Where does `σ'` reach its maximum, and what is it?
# 2. After `clip_tree_by_global_norm(g, c)` with `c < ‖g‖`, what are the new norm and the
#    cosine with `g`?
# 3. By how much per layer should a gain-2 ReLU net's gradient grow, and how close is the
#    fitted slope above?

# %%
# 1. 1/4 at z = 0.
assert (
    abs(float(slopes.max()) - 0.25) < 1e-6
    and abs(float(zs[slopes.argmax()])) < 1e-6
)
print("1. max σ' = 1/4 at z = 0")

# 2. Norm exactly c, cosine 1.
c = 0.01 * g_norm
clipped, before = grads.clip_tree_by_global_norm(g, c)
assert np.isclose(float(grads.global_norm(clipped)), c, rtol=1e-5)
assert np.isclose(cosine(clipped), 1.0, atol=1e-5)
print(
    f"2. norm {float(before):.3g} → "
    f"{float(grads.global_norm(clipped)):.3g}, "
    f"cosine {cosine(clipped):.6f}"
)

# 3. log 2 ≈ 0.69 per layer, and the fit is close to it (the stem and
#    output layer add a constant, which the fit's intercept absorbs).
gap = abs(fitted[2.0] - np.log(2.0))
assert gap < 0.2
print(
    f"3. expected {np.log(2.0):.2f}, fitted {fitted[2.0]:.2f} (gap "
    f"{gap:.2f})"
)
