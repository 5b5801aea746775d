# %% [markdown]
# # 4. Softmax + cross-entropy: why the gradient is (a − y)/m
#
# Classifiers end in softmax followed by cross-entropy. Each has an unpleasant derivative
# alone (softmax's Jacobian is a full matrix, the log's derivative `1/p` blows up near 0),
# but together they collapse to the simplest gradient in deep learning. For logits
# `z: (m, classes)`, labels `y` (one-hot rows, or probability rows), `a = softmax(z)` and
#
#     L = −(1/m) Σ_rows Σ_j y_j log a_j
#
# the gradient is
#
#     ∂L/∂z = (a Σ_j y_j − y) / m      =  (a − y) / m   when each row of y sums to 1.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

from bpjax import check, ref, rev
from bpjax.rules import TABLE

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## The derivation, one row
#
# Write `log a_j = z_j − log Σ_k e^{z_k}`. Then `∂ log a_j / ∂z_i = δ_ij − a_i`, and
#
#     ∂/∂z_i (−Σ_j y_j log a_j) = −Σ_j y_j (δ_ij − a_i) = −y_i + a_i Σ_j y_j
#
# Averaging over `m` rows divides by `m`. No `1/a` survives: the log-softmax's derivative is
# bounded, which is why the fused op is both cheaper and numerically safer than softmax
# followed by a separate log.

# %%
z = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])  # (m=2, classes=3)
labels = jnp.array([2, 2])
y = jax.nn.one_hot(labels, 3)
m = z.shape[0]

fused = (ref.softmax(z) - y) / m
for name, ops in (("ref (autodiff)", ref), ("rev (hand VJP)", rev)):
    g = jax.grad(ops.softmax_cross_entropy)(z, labels)
    print(
        f"{name:15s} max |grad − (a − y)/m| = "
        f"{float(jnp.max(jnp.abs(g - fused))):.1e}"
    )

# %% [markdown]
# ## The long way round gives the same numbers
#
# Without fusing, backpropagation goes through two ops: cross-entropy on probabilities
# (`p̄ = −y / (m p)`) and then softmax's VJP (`z̄ = a ⊙ (p̄ − ⟨p̄, a⟩)`). The product
# simplifies to the fused rule, but it divides by `p` on the way.

# %%
a = ref.softmax(z)
p_bar = -y / (m * a)  # cross-entropy's VJP on probabilities
# softmax's VJP
z_bar = a * (p_bar - jnp.sum(p_bar * a, axis=-1, keepdims=True))
print("two-step == fused:", bool(jnp.allclose(z_bar, fused)))

# %% [markdown]
# ## Why fuse: large logits
#
# Let the wrong class win by a margin of a few hundred, in float32. `softmax` then
# underflows to exactly 0 for the true class, and the two-step computation breaks in one of
# two ways: written naively, `−log softmax(z)` is `inf` and its gradient NaN; written with
# the library's `cross_entropy`, which clips probabilities at a tiny ε to keep `log`
# finite, the loss is capped at `−log ε` and the gradient is **zero** (nothing flows through
# a clipped value), exactly when the model is most wrong. The fused rule works on
# log-probabilities: the loss grows linearly with the margin and the gradient stays at
# `‖a − y‖ = √2`.

# %%
margins = jnp.linspace(0.0, 200.0, 41)


def naive(z, labels):
    return -jnp.mean(
        jnp.log(ref.softmax(z))[jnp.arange(z.shape[0]), labels]
    )


def clipped(z, labels):
    return ref.cross_entropy(ref.softmax(z), labels)


ways = {
    "fused softmax_cross_entropy": rev.softmax_cross_entropy,
    "naive −log softmax": naive,
    "cross_entropy(softmax(z)), clipped": clipped,
}
curves = {name: ([], []) for name in ways}
for margin in margins:
    # true class 0 loses
    z32 = jnp.array([[0.0, float(margin), 0.0]], dtype=jnp.float32)
    lab = jnp.array([0])
    for name, fn in ways.items():
        curves[name][0].append(float(fn(z32, lab)))
        curves[name][1].append(
            float(jnp.linalg.norm(jax.grad(fn)(z32, lab)))
        )

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for (name, (losses, norms)), style in zip(
    curves.items(), ("-", "--", ":"), strict=True
):
    axes[0].plot(margins, losses, style, lw=2, label=name)
    axes[1].plot(margins, norms, style, lw=2, label=name)
axes[0].set_ylabel("loss (inf is not drawn)")
axes[1].set_ylabel("‖∂L/∂z‖ (NaN is not drawn)")
for ax in axes:
    ax.set_xlabel("margin of the wrong class (float32)")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
for name, (losses, norms) in curves.items():
    print(
        f"{name:36s} at margin 200: loss {losses[-1]:9.4g}, ‖grad‖ "
        f"{norms[-1]:.4g}"
    )

# %% [markdown]
# ## Soft labels: a Σy − y
#
# Nothing in the derivation needed `y` to be one-hot: label smoothing, distillation targets
# or mixup give probability rows, and the fused rule still holds. If the rows do *not*
# sum to one (unnormalized weights, a per-row loss weight folded into `y`), the `Σ_j y_j`
# factor stays: the table's rule is `z̄ = (a Σy − y)/m`, and the shortcut `(a − y)/m`
# is then wrong.

# %%
# rows sum to 2.0 and 1.0
y_soft = jnp.array([[0.2, 0.3, 1.5], [0.0, 0.5, 0.5]])
g = jax.grad(rev.softmax_cross_entropy)(z, y_soft)
rule = (ref.softmax(z) * y_soft.sum(axis=1, keepdims=True) - y_soft) / m
shortcut = (ref.softmax(z) - y_soft) / m
print("hand VJP == a Σy − y :", bool(jnp.allclose(g, rule)))
print(
    "hand VJP == a − y    :",
    bool(jnp.allclose(g, shortcut)),
    "(row 0 sums to 2)",
)
print(
    check.gradients(
        rev.softmax_cross_entropy,
        z,
        y_soft,
        reference=ref.softmax_cross_entropy,
    )
)

# %% [markdown]
# ## What the backward rule keeps
#
# The table's VJP saves the log-probabilities, not the probabilities: `a = exp(log a)` is
# recovered exactly when needed, and `log a` is also what the label gradient
# `ȳ = −L̄ log a / m` reads. `bpjax.manual` takes `δᴸ` from this very rule.

# %%
loss, (log_a, kept_labels) = TABLE["softmax_cross_entropy"].vjp_fwd(
    z, labels
)
print("saves:", TABLE["softmax_cross_entropy"].saves)
print(
    "exp(log a) == softmax(z):",
    bool(jnp.allclose(jnp.exp(log_a), ref.softmax(z))),
)

# %% [markdown]
# ## Check yourself
#
# 1. What do the entries of `∂L/∂z` sum to, per row, for any labels?
# 2. With label smoothing ε = 0.1 over 3 classes (true class gets 1 − ε + ε/3), what is the
#    gradient at `z = 0`, and is it zero?
# 3. Where is the loss smallest for the smoothed label, and what is its gradient there?

# %%
# 1. Zero: Σ_i (a_i Σy − y_i) = Σy − Σy, whatever y is.
assert jnp.allclose(g.sum(axis=1), 0.0) and jnp.allclose(
    fused.sum(axis=1), 0.0
)
print("1. row sums:", g.sum(axis=1))

# 2. At z = 0, a = 1/3 everywhere, so the gradient is (1/3 − y):
#    not zero.
eps = 0.1
y_smooth = jnp.full((1, 3), eps / 3).at[0, 0].add(1 - eps)
g0 = jax.grad(rev.softmax_cross_entropy)(jnp.zeros((1, 3)), y_smooth)
assert jnp.allclose(g0, 1 / 3 - y_smooth)
print("2. gradient at z = 0:", g0)

# 3. At a = y: z = log y (up to a constant per row), where the gradient
#    vanishes.
z_star = jnp.log(y_smooth)
g_star = jax.grad(rev.softmax_cross_entropy)(z_star, y_smooth)
assert jnp.allclose(g_star, 0.0, atol=1e-12)
print("3. z* = log y:", z_star, "gradient", g_star)
