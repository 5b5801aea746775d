# %% [markdown]
# # 9. Checkpointing: √L, nested and binomial, what they cost, the planner
#
# Reverse mode keeps what every layer saved in the forward pass until the backward pass
# reaches it (tutorial 1: the forward cache). For a stack of L layers that is L layers'
# residuals: memory grows linearly with depth. *Rematerialization* (gradient
# checkpointing) stores only some layer inputs, the **checkpoints**, and recomputes the
# rest when the backward pass needs them: memory for time.
#
# `bpjax.remat.stack(layer, params, x, strategy=...)` runs L layers `x ← layer(params[i], x)`
# with the parameters stacked on a leading axis, under one of these strategies:
#
# | strategy | stores | memory | layer evaluations |
# |---|---|---|---|
# | `"none"` | every layer's residuals | L·r | L |
# | `"every"` | each layer's input | L·s | 2L |
# | `"sqrt"` = `Nested(2)` | √L segment inputs, one segment's residuals | ≈ 2√L·s | 2L |
# | `Nested(k)` | k levels of segment inputs | ≈ k·L^(1/k)·s | ≤ kL |
# | `Binomial(c)` | c states placed by revolve | (c+1)·s | t(L, c) + L + 1 |
#
# (s: bytes of one state, r: bytes one layer saves.) Binomial is Griewank's *revolve*
# (Griewank 1992; Griewank & Walther 2000): the fewest recomputations possible with c
# stored states, t(L, c) = r·L − β(c+1, r−1) with β(c, r) = C(c+r, c).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from bpjax import remat

batch, width = 32, 64


def layer(p, h):
    # (batch, width) -> (batch, width)
    return jnp.tanh(h @ p["W"] + p["b"])


def stacked(n_layers):
    W = jax.random.normal(
        jax.random.key(0), (n_layers, width, width)
    ) / np.sqrt(width)
    return {"W": W, "b": jnp.zeros((n_layers, width))}


x = jax.random.normal(jax.random.key(1), (batch, width))

# %% [markdown]
# ## Same gradient, whatever the strategy
#
# Rematerialization changes what is stored, never what is computed: every strategy gives
# the gradient of "none" (here to float32 rounding).

# %%
params = stacked(64)


def loss(p, strategy):
    return jnp.sum(remat.stack(layer, p, x, strategy=strategy) ** 2)


g_none = jax.jit(jax.grad(loss), static_argnums=1)(params, "none")
for strategy in ("every", "sqrt", remat.Nested(3), remat.Binomial(4)):
    g = jax.jit(jax.grad(loss), static_argnums=1)(params, strategy)
    err = float(
        jnp.max(jnp.abs(g["W"] - g_none["W"]))
        / jnp.max(jnp.abs(g_none["W"]))
    )
    print(
        f"{getattr(strategy, 'name', strategy):10s} max relative "
        f"difference {err:.1e}"
    )

# %% [markdown]
# ## What each costs: memory and recomputation
#
# `remat.measure_memory` compiles the gradient (w.r.t. the weights *and* the input, so the
# activation tape is not hidden in the gradient buffers) and reads XLA's planned temporary
# memory, beside the byte model's prediction and the theoretical number of layer
# evaluations. These numbers are deterministic: the compiler's plan, not a timing.

# %%
depths = [16, 64, 256]
strategies = [
    "none",
    "every",
    "sqrt",
    remat.Nested(3),
    remat.Binomial(8),
]
table = {}
for n in depths:
    p = stacked(n)
    for s in strategies:
        m = remat.measure_memory(layer, p, x, strategy=s, run=False)
        table[(m.strategy, n)] = m

fig, ax = plt.subplots(figsize=(6.5, 4))
for name in dict.fromkeys(k[0] for k in table):
    ax.loglog(
        depths,
        [table[(name, n)].compiled_temp / 2**20 for n in depths],
        "o-",
        label=name,
    )
ax.set_xlabel("layers L")
ax.set_ylabel("compiled temp memory (MiB)")
ax.set_title(
    f"Gradient memory vs depth (batch {batch}, width {width}, float32)"
)
ax.legend()
plt.show()

print(
    f"{'strategy':10s} {'L':>4s} {'compiled MiB':>12s} "
    f"{'predicted MiB':>13s} {'evaluations':>11s}"
)
for (name, n), m in table.items():
    print(
        f"{name:10s} {n:4d} {m.compiled_temp / 2**20:12.2f} "
        f"{m.predicted / 2**20:13.2f} "
        f"{m.evaluations:6d}"
    )

# %% [markdown]
# "none" grows linearly; √L segments grow like √L; binomial with a fixed number of slots
# stays nearly flat and pays in recomputation instead. The evaluation counts are theory
# (`remat.evaluations`), and `remat.count_evaluations` counts them at run time with a host
# callback in the layer: they agree.

# %%
p16 = stacked(16)
for s in ("sqrt", remat.Binomial(3)):
    counted = remat.count_evaluations(layer, p16, x, strategy=s)
    print(
        f"{getattr(s, 'name', s):10s} counted {counted}, theory "
        f"{remat.evaluations(s, 16)}"
    )
    assert counted == remat.evaluations(s, 16)

# %% [markdown]
# ## The revolve schedule
#
# Binomial checkpointing is a schedule: which state to restore, how far to advance it, where
# to store it, and when to turn (one layer's VJP). `remat.revolve(L, c)` computes it in
# Python; `stack` interprets it in a `lax.scan`. Below, the position of the live state over
# the schedule for L = 16 and c = 3: each turn walks one layer further back.

# %%
events = remat.revolve(16, 3)
pos, trace = 0, []
for event in events:
    if event[0] == "advance":
        pos = event[2]
    elif event[0] == "turn":
        pos = event[1]
    trace.append(pos)
fig, ax = plt.subplots(figsize=(6.5, 3))
ax.step(range(len(trace)), trace, where="post")
turns = [i for i, e in enumerate(events) if e[0] == "turn"]
ax.plot(
    turns,
    [trace[i] for i in turns],
    "rv",
    ms=4,
    label="turn (a layer's VJP)",
)
ax.set_xlabel("schedule step")
ax.set_ylabel("layer")
ax.legend()
plt.show()
advances = remat.schedule_advances(events)
print(
    f"{len(turns)} turns, {advances} forward steps = t(16, 3) = "
    f"{remat.optimal_advances(16, 3)}"
)

# %% [markdown]
# ## The planner: the fastest strategy that fits a budget
#
# `remat.plan(layer, params, x, budget_bytes=...)` ranks candidates by layer evaluations
# (time), predicts their bytes, compiles the first that fits and checks XLA's figure against
# the budget before returning it.

# %%
p256 = stacked(256)
full = remat.measure_memory(
    layer, p256, x, strategy="none", run=False
).compiled_temp
for fraction in (0.5, 0.1, 0.02):
    chosen = remat.plan(
        layer, p256, x, budget_bytes=int(fraction * full)
    )
    print(f"budget {fraction:4.0%} of 'none': {chosen}")
    assert chosen.compiled_bytes <= fraction * full

# %% [markdown]
# ## When you do not know L
#
# Everything above knew L before the forward pass. A Newton or fixed-point iteration run to a
# tolerance, an adaptive ODE solver or an RNN that stops at a token only learns its length by
# running, and JAX cannot reverse-differentiate `lax.while_loop` at all. `remat.while_loop`
# can: it keeps `checkpoints` states, places them *online* while the loop runs, and once the
# loop stops (L is known) reverses each segment between them with revolve.
#
# A fixed-point iteration `x ← tanh(W x + b)` run until the update is below 1e-6; the
# gradient w.r.t. `b` equals a `lax.scan` run for the trip count the loop turned out to take.

# %%
w_fp = (
    0.3 * jax.random.normal(jax.random.key(1), (8, 8)) / jnp.sqrt(8.0)
)


def fixed_point(b, loop):
    def step(s):
        new = jnp.tanh(w_fp @ s[0] + b)
        return new, jnp.max(jnp.abs(new - s[0])), s[2] + 1

    return loop(
        lambda s: s[1] > 1e-6,
        step,
        (jnp.zeros(8), jnp.float32(jnp.inf), 0),
    )


b = jnp.linspace(-1.0, 1.0, 8)


def online(cond, body, init):
    return remat.while_loop(cond, body, init, checkpoints=4)


# what the loop found out
n_steps = int(fixed_point(b, jax.lax.while_loop)[2])


def scan_fixed_point(b):
    step = lambda x, _: (jnp.tanh(w_fp @ x + b), None)  # noqa: E731
    return jax.lax.scan(step, jnp.zeros(8), None, length=n_steps)[0]


g_online = jax.grad(lambda b: fixed_point(b, online)[0].sum())(b)
g_scan = jax.grad(lambda b: scan_fixed_point(b).sum())(b)
assert jnp.allclose(g_online, g_scan, atol=1e-6)
print(
    f"{n_steps} steps; gradient equal to the scan's: max difference "
    f"{float(jnp.max(jnp.abs(g_online - g_scan))):.1e}"
)

# %% [markdown]
# What it costs. The loop keeps c states whatever L turns out to be, so the compiled memory
# does not grow with L. Body evaluations per gradient are counted by
# `remat.online_evaluations(L, c)`: up to L = (c + 1)(c + 2)/2 they equal the offline optimum
# t(L, c) + L + 1 that revolve reaches *knowing* L (Stumm & Walther's online guarantee);
# beyond, no step is evaluated more often than offline (Wang, Moin & Iaccarino's guarantee),
# and the total stays within about 1.25× of the optimum.

# %%
for n in (10, 21, 100, 1000, 10_000):
    online_cost = remat.online_evaluations(n, 5)
    offline = remat.optimal_advances(n, 5) + n + 1
    print(
        f"L = {n:6d}, c = 5: {online_cost:7d} evaluations, offline "
        f"optimum {offline:7d} "
        f"({online_cost / offline:.3f}×)"
    )
# β(5, 2) = 21
assert (
    remat.online_evaluations(21, 5)
    == remat.optimal_advances(21, 5) + 22
)

# %% [markdown]
# Forward mode works through the same loop (`jax.jvp`, and `jax.hessian`, which is forward
# over reverse); reverse over reverse (`grad` of `grad`) raises an error that says to use
# forward over reverse instead. The full measurements, against Equinox's checkpointed while
# loop and a padded scan, are in [online checkpointing](../findings/online_remat.md).

# %%
value, tangent = jax.jvp(
    lambda b: fixed_point(b, online)[0].sum(), (b,), (jnp.ones(8),)
)
assert jnp.allclose(tangent, g_scan.sum(), atol=1e-5)
print(
    f"jvp along ones: {float(tangent):.6f} = sum of the gradient "
    f"{float(g_scan.sum()):.6f}"
)

# %% [markdown]
# ## Check yourself
#
# 1. How many forward steps does revolve need to reverse L = 100 layers with c = 5 slots,
#    and how many with c = 1 (store only the input)?
# 2. With "sqrt" at L = 256, how many layer evaluations does a gradient cost, and why
#    twice L?
# 3. At a budget of 2% of "none" at L = 256, why can the planner not pick "sqrt", and what
#    does the strategy it picks cost in layer evaluations compared with "sqrt"?

# %%
# 1. t(L, c) = r·L − β(c+1, r−1); c = 1 recomputes from the input for
#    every layer.
t5, t1 = remat.optimal_advances(100, 5), remat.optimal_advances(100, 1)
assert t1 == 100 * 99 // 2 and t5 < t1
print(f"1. c = 5: {t5} forward steps; c = 1: {t1} = L(L−1)/2")

# 2. Every layer runs once in the forward pass and once more when its
#    segment is rebuilt.
assert remat.evaluations("sqrt", 256) == 2 * 256
print(
    "2. sqrt at L = 256:", remat.evaluations("sqrt", 256), "evaluations"
)


# 3. sqrt needs ≈ 2√L states: more than the budget. Binomial fits by
#    recomputing more.
sqrt_bytes = table[("sqrt", 256)].compiled_temp
tight = remat.plan(layer, p256, x, budget_bytes=int(0.02 * full))
assert (
    sqrt_bytes > 0.02 * full
    and tight.evaluations > remat.evaluations("sqrt", 256)
)
print(
    f"3. sqrt needs {sqrt_bytes / full:.1%} of 'none'; "
    f"{tight.strategy.name} fits at "
    f"{tight.evaluations / remat.evaluations('sqrt', 256):.1f}× the "
    "evaluations of sqrt"
)
