# %% [markdown]
# # A tour of the API
#
# bpjax in ten short blocks, from one rule differentiated three ways to data parallelism and
# Flax NNX. This page is executed when the site is built, like the tutorials: every block
# below ran, and a block that raises fails the build.

# %%
import jax
import jax.numpy as jnp

from bpjax import check, fwd, manual, ref, rev

x = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])  # (batch, d_in)
W = jnp.full((3, 4), 0.1)  # (d_in, d_out)
b = jnp.zeros(4)  # (d_out,)
labels = jnp.array([0, 3])  # class ids (or one-hot rows)


def loss(ops, W, b):
    return ops.softmax_cross_entropy(
        ops.tanh(ops.linear(x, W, b)), labels
    )


# Same value, same gradient, three ways of differentiating.
for ops in (ref, rev, fwd):
    value, (gW, gb) = jax.value_and_grad(loss, argnums=(1, 2))(
        ops, W, b
    )
    print(ops.__name__, float(value), float(gW[0, 0]))

# Forward mode works through the hand-written JVP rules, not through the
# VJP ones.
_, tangent = jax.jvp(
    lambda W: loss(fwd, W, b), (W,), (jnp.ones_like(W),)
)

# %% [markdown]
# The fused softmax + cross-entropy backward rule is the textbook δ = (a − y)/m:

# %%
z = jnp.array([[2.0, -1.0, 0.5]])
delta = jax.grad(rev.softmax_cross_entropy)(z, jnp.array([2]))
assert jnp.allclose(
    delta, ref.softmax(z) - jax.nn.one_hot(jnp.array([2]), 3)
)

# %% [markdown]
# Manual backprop, no autodiff, equal to `jax.grad` (the tests check 1e-10 in float64 and
# PyTorch autograd when installed):

# %%
from bpjax import models

# [(W1, b1), (W2, b2)]
params = models.init_layers(jax.random.key(0), (4, 8, 3))
xb = jax.random.normal(jax.random.key(1), (5, 4))
yb = jnp.array([0, 1, 2, 0, 1])
value, grads = manual.backprop(params, xb, yb, activation="relu")
auto = jax.grad(models.layers_loss)(
    params, xb, yb, ops=ref, activation="relu"
)
assert all(
    jnp.allclose(g, a, atol=1e-6)
    for g, a in zip(
        jax.tree.leaves(grads), jax.tree.leaves(auto), strict=True
    )
)

# %% [markdown]
# Checking a rule of your own (here a deliberately wrong one: tanh' written as 1 − a):


# %%
@jax.custom_vjp
def my_tanh(z):
    return jnp.tanh(z)


my_tanh.defvjp(
    lambda z: (jnp.tanh(z), jnp.tanh(z)), lambda a, g: (g * (1 - a),)
)

report = check.gradients(
    my_tanh, jnp.linspace(-2.0, 2.0, 5), reference=jnp.tanh
)
# 'vjp vs autodiff' and 'vjp vs finite differences' are large
print(report)
assert not report.ok()
# the table's rule passes
assert all(r.ok() for r in check.op("softmax", x, axis=-1).values())

# %% [markdown]
# Deep MLPs with skip connections, the gradient probes and the training loop:

# %%
from bpjax import data, grads, models, train

model = models.MLP(
    arch="residual",
    depth=16,
    width=32,
    activation="sigmoid",
    weight_init="xavier",
)
# d_in = 64 pixels, 10 classes
params = model.init(jax.random.key(0), 64, 10)
g = jax.grad(model.loss)(params, jnp.ones((8, 64)), jnp.arange(8))
print(grads.layer_norms(g))  # (depth + 1,), input layer first
clipped, norm_before = grads.clip_tree_by_global_norm(g, 1.0)

history = train.train(
    model, data.digits(), steps=100, eval_every=50, clip_norm=1.0
)
print(history.test_acc, history.diverged_at)

# %% [markdown]
# Forward or reverse mode, chosen by a run-time cost model (or from timings with
# `basis="timing"`), and Hessian-vector products in three orders:

# %%
from bpjax import modes

W_tall = jax.random.normal(jax.random.key(2), (512, 4))
tall = lambda v: jnp.tanh(W_tall @ v)  # R^4 -> R^512
choice = modes.choose_mode(tall, jnp.ones(4))
print(choice.mode, "-", choice.reason)  # fwd: 4 JVPs beat 512 VJPs
J = modes.jacobian(tall, jnp.ones(4))  # (512, 4), equal to jax.jacrev
hv = modes.hvp(
    lambda v: jnp.sum(tall(v) ** 2),
    jnp.ones(4),
    jnp.arange(4.0),
    order="rev-over-fwd",
)

# %% [markdown]
# A teaching tape (PyTorch's model: recorded graph, `.backward()`, accumulating `.grad`)
# driven by the same rules, and the graph JAX traces, forward and backward:

# %%
from bpjax import graph, tape

W_t = tape.Var(jnp.full((3, 4), 0.1), requires_grad=True)
loss_t = tape.softmax_cross_entropy(
    tape.tanh(tape.matmul(x, W_t)), labels
)
loss_t.backward()  # W_t.grad now holds dL/dW
assert jnp.allclose(
    W_t.grad, jax.grad(lambda W: loss(ref, W, b))(W), atol=1e-6
)

# or graph.dot / graph.render
print(graph.mermaid(lambda W: loss(rev, W, b), W, backward=True))

# %% [markdown]
# Rematerialization of a stack of L layers (`params` stacked on a leading axis), by name or
# by object, with the same gradients whichever strategy; `measure_memory` and `plan` say what it
# costs:

# %%
from bpjax import remat

# (batch, width) -> (batch, width)
layer = lambda p, h: jnp.tanh(h @ p["W"] + p["b"])
# L = 64 layers
stacked = {"W": jnp.full((64, 32, 32), 0.05), "b": jnp.zeros((64, 32))}
h0 = jnp.ones((16, 32))
g_none = jax.grad(
    lambda p: remat.stack(layer, p, h0, strategy="none").sum()
)(stacked)
g_rev = jax.grad(
    lambda p: remat.stack(
        layer, p, h0, strategy=remat.Binomial(6)
    ).sum()
)(stacked)
assert jnp.allclose(g_none["W"], g_rev["W"], atol=1e-6)
# predicted, compiled bytes
print(remat.measure_memory(layer, stacked, h0, strategy="sqrt"))
# the fastest strategy that fits
print(remat.plan(layer, stacked, h0, budget_bytes=100_000))

# %% [markdown]
# Data parallel on JAX's sharding (a 1-D mesh over the batch; here over however many
# devices JAX sees), and the same models as Flax NNX modules running bpjax's rules:

# %%
from flax import nnx

from bpjax import nnx as bnnx
from bpjax import parallel

mesh = parallel.mesh()  # all devices JAX sees; 1 on a plain CPU
# remat composes
deep = models.MLP(arch="residual", depth=8, width=32, checkpoint="sqrt")
p8 = deep.init(jax.random.key(0), 64, 10)
xs, ys = (
    jnp.ones((8 * mesh.devices.size, 64)),
    jnp.zeros(8 * mesh.devices.size, int),
)
# equals jax.grad(deep.loss)(p8, xs, ys)
g_dp = parallel.grad_fn(deep.loss, mesh)(p8, xs, ys)

net = bnnx.MLP(
    64,
    10,
    arch="residual",
    depth=8,
    width=32,
    ops="rev",
    rngs=nnx.Rngs(0),
)
# train.train's step and loop
accuracy = bnnx.train(net, data.digits(), steps=50, eval_every=50)

# %% [markdown]
# Bad input is caught before tracing, with the shapes and the fix:

# %%
try:
    rev.linear(jnp.ones((2, 3)), jnp.ones((5, 4)), jnp.zeros(4))
except ValueError as err:
    # linear: x has 3 features but W expects 5 (x.shape=(2, 3),
    # W.shape=(5, 4)); ...
    print(err)
else:
    raise AssertionError(
        "linear accepted a (2, 3) input for a (5, 4) weight"
    )

# %% [markdown]
# **Class ids out of range.** Concrete labels outside `[0, classes)` are refused with the rows
# named. Under `jit` labels are tracers with no values to check, so every namespace, `manual`
# and `tape` behave alike: an out-of-range id (negative ids included; they do not wrap around)
# makes the loss NaN and that row's gradient NaN, and the other rows are untouched. To raise
# instead, pass `check_labels=True` (a run-time check that also works under `jit`);
# `train.train` checks its data set before the first step.

# %%
z = jnp.zeros((2, 3))
# nan: row 0 has no class 5
loss = jax.jit(rev.softmax_cross_entropy)(z, jnp.array([5, 0]))
checked = jax.jit(
    lambda z, y: rev.softmax_cross_entropy(z, y, check_labels=True)
)
# checked(z, jnp.array([5, 0])) raises:
# "...labels must lie in [0, 3)...at rows [0]..."
