# %% [markdown]
# # 1. The chain rule and the forward cache
#
# Backpropagation is the chain rule applied in a particular order: from the loss back to
# the inputs, one op at a time, each op multiplying the incoming gradient by its own local
# derivative. This page does it by hand for a two-layer network, checks every number
# against `jax.grad`, and then asks the question that decides the memory cost of training:
# **what must the forward pass keep so that the backward pass can run?**

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

from bpjax import ref
from bpjax.rules import TABLE

# float64: hand and autodiff agree to ~1e-15
jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## The chain rule on a scalar
#
# For `f(x) = tanh(w·x + b)²`, write it as a chain of three steps, `z = w·x + b`,
# `a = tanh z`, `f = a²`. The chain rule multiplies the local derivatives:
#
#     df/dx = df/da · da/dz · dz/dx = 2a · (1 − a²) · w
#
# Two things to notice. The product can be evaluated from the output end (`2a` first, then
# `· (1 − a²)`, then `· w`): that is reverse mode. And every factor needs a value from the
# forward pass (`a`, and `w`), which therefore has to be kept until the backward pass
# reaches it.

# %%
w, b, x = 1.5, -0.3, 0.8


def f(x):
    return jnp.tanh(w * x + b) ** 2


z = w * x + b
a = jnp.tanh(z)
by_hand = 2 * a * (1 - a**2) * w
print(f"by hand  {by_hand:.15f}\njax.grad {jax.grad(f)(x):.15f}")

# %% [markdown]
# ## A two-layer network, forward
#
# Batch-major arrays, as everywhere in bpjax: `x: (m, d_in)`, `W1: (d_in, h)`,
# `W2: (h, d_out)`. The loss is the mean squared error against targets `t`:
#
#     z1 = x W1 + b1,   a1 = tanh z1,   y = a1 W2 + b2,   L = (1/n) Σ (y − t)²
#
# The forward pass below keeps a **cache**: exactly the values the backward formulas will
# read. We will see which ones those are.

# %%
key = jax.random.key(0)
k1, k2, k3, k4 = jax.random.split(key, 4)
m, d_in, h, d_out = 16, 5, 8, 3
x = jax.random.normal(k1, (m, d_in))
t = jax.random.normal(k2, (m, d_out))
params = {
    "W1": jax.random.normal(k3, (d_in, h)) / jnp.sqrt(d_in),
    "b1": jnp.zeros(h),
    "W2": jax.random.normal(k4, (h, d_out)) / jnp.sqrt(h),
    "b2": jnp.zeros(d_out),
}


def forward(p, x):
    a1 = jnp.tanh(x @ p["W1"] + p["b1"])
    y = a1 @ p["W2"] + p["b2"]
    # what backward() reads, and nothing else
    cache = {"x": x, "a1": a1, "r": y - t}
    return jnp.mean((y - t) ** 2), cache


loss, cache = forward(params, x)
print("loss", float(loss))
print({k: v.shape for k, v in cache.items()})

# %% [markdown]
# ## The same network, backward
#
# Walk the chain from the loss back. `ȳ` ("y-bar") is ∂L/∂y, the gradient arriving at `y`:
#
#     ȳ  = 2 (y − t) / n                        n = m · d_out entries are averaged
#     W̄2 = a1ᵀ ȳ,    b̄2 = Σ_rows ȳ
#     ā1 = ȳ W2ᵀ
#     z̄1 = ā1 ⊙ (1 − a1²)                      tanh' written with tanh's output
#     W̄1 = xᵀ z̄1,    b̄1 = Σ_rows z̄1
#
# Each line reads only the incoming gradient, a parameter, and something in the cache.


# %%
def backward(p, cache):
    n = cache["r"].size
    y_bar = 2 * cache["r"] / n
    a1 = cache["a1"]
    a1_bar = y_bar @ p["W2"].T
    z1_bar = a1_bar * (1 - a1**2)
    return {
        "W1": cache["x"].T @ z1_bar,
        "b1": z1_bar.sum(axis=0),
        "W2": a1.T @ y_bar,
        "b2": y_bar.sum(axis=0),
    }


by_hand = backward(params, cache)
auto = jax.grad(lambda p: forward(p, x)[0])(params)
for name in params:
    err = float(jnp.max(jnp.abs(by_hand[name] - auto[name])))
    print(f"{name}: max |hand − jax.grad| = {err:.1e}")

# %% [markdown]
# ## What the cache holds, and why
#
# `x` is needed for `W̄1 = xᵀ z̄1`; `a1` for `W̄2` and for tanh's derivative; the residual
# `r = y − t` for `ȳ`. `z1` is **not** needed: tanh's derivative `1 − tanh² z` can be written
# with tanh's *output*. The rule table records this choice for every op: `vjp_fwd` returns
# the output and the residuals the backward rule keeps. For tanh the residual is the output
# itself; for `linear` it is the input and the weight.

# %%
z_demo = jnp.array([-2.0, 0.0, 1.0])
out, residual = TABLE["tanh"].vjp_fwd(z_demo)
print(
    "tanh keeps its output:",
    bool(jnp.array_equal(out, residual)),
    "|",
    TABLE["tanh"].saves,
)
print(
    "linear keeps:",
    TABLE["linear"].saves,
    "| relu keeps:",
    TABLE["relu"].saves,
)

# %% [markdown]
# The figure shows why keeping the output is enough for tanh and sigmoid: their derivatives
# are functions of the output value alone. ReLU keeps even less, one bit per entry (the
# mask `z > 0`).

# %%
zs = jnp.linspace(-4, 4, 200)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, fn in (("tanh", ref.tanh), ("sigmoid", ref.sigmoid)):
    a_s = fn(zs)
    axes[0].plot(zs, a_s, label=f"{name}(z)")
    axes[0].plot(
        zs, jax.vmap(jax.grad(fn))(zs), "--", label=f"{name}'(z)"
    )
    derivative_from_output = (
        1 - a_s**2 if name == "tanh" else a_s * (1 - a_s)
    )
    axes[1].plot(
        a_s, derivative_from_output, label=f"{name}' as a function of a"
    )
axes[0].set_xlabel("z")
axes[0].legend()
axes[0].set_title("activation and its derivative")
axes[1].set_xlabel("a (the output the forward pass keeps)")
axes[1].legend()
axes[1].set_title("the derivative needs only the output")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The cost of the cache
#
# The cache grows with the batch and with depth: one activation per layer per example. For
# a network with widths `784-256-256-10` and a batch of 128 in float32, the activations the
# backward pass needs (each layer's input) weigh:

# %%
widths = (784, 256, 256, 10)
batch = 128
layer_inputs = widths[:-1]  # W̄ˡ = aˡ⁻¹ᵀ δˡ reads every layer's input
cache_bytes = sum(batch * w_ * 4 for w_ in layer_inputs)
param_bytes = sum(
    (a_ * b_ + b_) * 4
    for a_, b_ in zip(widths[:-1], widths[1:], strict=True)
)
print(
    f"activation cache {cache_bytes / 2**20:.2f} MiB, parameters "
    f"{param_bytes / 2**20:.2f} MiB"
)

# %% [markdown]
# At this size the parameters dominate; at batch 4096, or depth 100, the cache does. Trading
# that memory for recomputation is *checkpointing* (rematerialization, `bpjax.remat`).

# %% [markdown]
# ## Check yourself
#
# 1. Which cached value does sigmoid's backward rule need, and does `TABLE["sigmoid"]`
#    agree?
# 2. Why is `b̄2` the sum of `ȳ` over the rows, and not its mean?
# 3. How many bytes does the cache of the toy network above hold (float64), and which of
#    its arrays could a ReLU network replace by a boolean mask?

# %%
# 1. Sigmoid keeps its output a: σ'(z) = a (1 − a).
_, kept = TABLE["sigmoid"].vjp_fwd(z_demo)
assert jnp.allclose(kept, ref.sigmoid(z_demo))
print("1. sigmoid keeps a = σ(z):", TABLE["sigmoid"].saves)

# 2. b2 is added to every row, so its gradient collects every row's ȳ;
#    the 1/n of the mean is already inside ȳ.
y_bar = 2 * cache["r"] / cache["r"].size
assert jnp.allclose(by_hand["b2"], y_bar.sum(axis=0))
assert jnp.allclose(auto["b2"], y_bar.sum(axis=0))
print("2. b̄2 = Σ_rows ȳ:", by_hand["b2"])

# 3. The bytes of x, a1 and r; with ReLU, tanh's a1 (read for the
#    derivative) would become a mask, though W̄2 = a1ᵀ ȳ still needs a1
#    itself.
nbytes = sum(v.nbytes for v in cache.values())
assert nbytes == 8 * (m * d_in + m * h + m * d_out)
print(
    f"3. the cache holds {nbytes} bytes: x {cache['x'].shape}, a1 "
    f"{cache['a1'].shape}, "
    f"r {cache['r'].shape}"
)
