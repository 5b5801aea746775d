# %% [markdown]
# # 10. One training step, timed: NumPy, PyTorch, Flax and JAX
#
# A training step of an MLP is a forward pass, the backward pass (the δ recursion of
# tutorial 3) and an update. Almost all of its arithmetic is matrix products: a layer with
# an `(n_in, n_out)` weight and a batch of `m` rows costs
#
# * forward, `z = a W + b`: `2 m n_in n_out` FLOPs;
# * backward, `W̄ = aᵀ δ` and `ā = δ Wᵀ`: two products of the same size, `4 m n_in n_out`.
#
# So a step costs about **3×** its forward pass, `6 m Σ n_in n_out` FLOPs, less the first
# layer's input gradient `ā₁`, which nothing needs (`bpjax.bench.step_flops`), whichever
# library runs it. What differs between libraries is
# how close each gets to the machine's matrix-multiply rate, and what it does around the
# products: fusing the elementwise work, reusing buffers, updating the weights in place.
#
# `bpjax bench` (`make bench`) times every contender on the same parameters and data:
# bpjax's `rev` (hand-written VJPs), `fwd` (hand-written JVPs, transposed by JAX) and `ref`
# (JAX autodiff) steps, compiled and with the weights *donated* (updated in place), the
# δ recursion in NumPy, Flax NNX with Optax, and PyTorch eager (and `torch.compile` with
# `--compile`) where PyTorch is installed. This page runs a small version of it.

# %%
import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from bpjax import bench, measure

sizes, batch = (784, 512, 512, 10), 256
# NumPy float32 weights, inputs, labels
params, x, y = bench.problem(sizes, batch)
flops = bench.step_flops(sizes, batch)
print(
    f"{bench.size_label(sizes, batch)}: {flops / 1e9:.2f} GFLOP per "
    "training step"
)
print(measure.environment()["cpu_model"], "|", jax.devices()[0])

# %% [markdown]
# ## The contenders agree first
#
# A timing only means something if every contender computes the same gradient. Each one's
# gradient is compared with JAX autodiff's (`ref + jax.grad`) on the same parameters and
# batch, as the largest relative difference over the layers. float32 contenders that sum
# in different orders differ around 1e-6; a wrong backward pass would show up as ~1.

# %%
contenders = bench.build(params, x, y, compile_torch=False)
agreement = bench.check_agreement(contenders, params, x, y)
for name, err in agreement.items():
    print(f"{name:20} {err:.1e}")
assert max(agreement.values()) < 1e-4

# %% [markdown]
# ## Timing, interleaved
#
# `time_until_resolved` runs the contenders in interleaved rounds (one step of each, in
# turn, so a slow moment of the machine hits them all), each round long enough to time
# (`measure.calibrate`), and adds rounds until a bootstrap test can say whether `rev` is
# ahead of, behind, or tied with the fastest peer, or the time budget runs out. We report
# the median step and the 10th-90th percentile range.

# %%
start = time.perf_counter()
samples, calls, verdict = bench.time_until_resolved(
    contenders, rounds=5, budget=5.0
)
medians = {name: float(np.median(s)) for name, s in samples.items()}
print(
    f"{len(next(iter(samples.values())))} rounds in "
    f"{time.perf_counter() - start:.1f} s"
)
for name, t in sorted(medians.items(), key=lambda kv: kv[1]):
    print(
        f"{name:20} {1e3 * t:7.2f} ms   {flops / t / 1e9:6.1f} GFLOP/s"
    )
print(bench.verdict_line(bench.size_label(sizes, batch), verdict))

# %%
names = sorted(medians, key=medians.get)
lo = [1e3 * np.percentile(samples[n], 10) for n in names]
hi = [1e3 * np.percentile(samples[n], 90) for n in names]
mid = [1e3 * medians[n] for n in names]
fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1))
colors = ["tab:blue" if n in bench.OURS else "tab:gray" for n in names]
ax.barh(names, mid, color=colors)
ax.errorbar(
    mid,
    names,
    xerr=[np.subtract(mid, lo), np.subtract(hi, mid)],
    fmt="none",
    c="k",
)
ax.invert_yaxis()
ax.set_xlabel(
    "ms per training step (median; bars: 10th-90th percentile)"
)
ax.set_title(f"{bench.size_label(sizes, batch)}, blue: bpjax")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How far from the machine?
#
# The ceiling for a step made of matrix products is the rate of one large matrix product
# on the same device (`bench.gemm_rate`). Its ratio to a step's achieved FLOP rate is how
# much of the machine the step uses; the rest goes to the elementwise work (ReLU, softmax,
# bias gradients), to memory traffic between the products, and to dispatch.

# %%
roof = bench.gemm_rate()
print(
    f"one {roof['n']}×{roof['n']} float32 matmul: "
    f"{roof['flops_per_second'] / 1e9:.0f} GFLOP/s"
)
for name in names:
    share = flops / medians[name] / roof["flops_per_second"]
    print(f"{name:20} {share:5.0%} of the matmul rate")

# %% [markdown]
# Small layers stay far from the ceiling in every library: a 10-column output layer and
# the softmax cost memory traffic, not FLOPs. The full benchmark
# (`make bench ARGS="--full --compile"`) runs sizes up to 4 × 2048 at batch 1024, where the
# products dominate; its committed figures, with the CPU named, are on the
# [speed findings page](../findings/bench.md).
#
# ## What "donated" buys
#
# A compiled JAX step returns new weights. Without donation XLA must allocate them beside
# the old ones, which the caller still holds; with `donate_argnums` the old buffers are
# handed over and the update is written in place, as PyTorch's `optimizer.step()` does. The
# undonated variant is timed too (`rev, not donated`): on XLA:CPU the two differ by a few
# percent, in either direction, depending on how the step's temporary memory is allocated
# (the findings page measures it with page-fault counts).
#
# ## Check yourself
#
# 1. How many GEMM FLOPs does one step of the 784-512-512-10 network take at batch 256,
#    and what share of them is the backward pass?
# 2. Which contender was fastest on the machine that built this page, and by what ratio
#    over the slowest?
# 3. Why does the first call of a JAX step take far longer than the others, and after how
#    many steps has `rev` caught up with a peer that needs no compilation?

# %%
# 1. 6 · m · Σ n_in n_out − 2 · m · n_0 n_1 (no ā for the input layer);
#    the backward pass is everything but the forward's
#    2 · m · Σ n_in n_out.
layer_products = sum(
    a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)
)
assert (
    flops
    == 6 * batch * layer_products - 2 * batch * sizes[0] * sizes[1]
)
backward = flops - 2 * batch * layer_products
print(f"1. {flops / 1e9:.3f} GFLOP, backward {backward / flops:.0%}")

# 2. Computed from this page's own timings.
print(
    f"2. {names[0]}, {medians[names[-1]] / medians[names[0]]:.1f}x "
    f"faster than {names[-1]}"
)

# 3. The first call traces the Python function and compiles it with XLA;
#    the step time then amortizes that. bench.break_even gives the step
#    count from the first-call and steady-state times (None: never, when
#    the peer's steady step is faster).
first = {c.name: c.first_call for c in contenders}
peer = min((n for n in names if n not in bench.OURS), key=medians.get)
after = bench.break_even(
    first["rev"], medians["rev"], first[peer], medians[peer]
)
print(
    f"3. rev's first call {first['rev']:.2f} s; against {peer}: caught "
    f"up after {after} steps"
)
