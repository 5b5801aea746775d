# %% [markdown]
# # 7. Forward vs reverse mode, and Jacobians that are mostly zeros
#
# For `f: Rⁿ → Rᵐ` the Jacobian `J = ∂f/∂x` is `m × n`. Autodiff never forms it to
# differentiate: it applies it.
#
# * **Forward mode** pushes a tangent through the program: one JVP gives `J v`, one
#   *column* of `J` when `v = e_j`. The whole Jacobian costs `n` JVPs.
# * **Reverse mode** pulls a cotangent back: one VJP gives `uᵀ J`, one *row* when
#   `u = e_i`. The whole Jacobian costs `m` VJPs, plus keeping the forward pass's residuals
#   (tutorial 1's cache) for the backward pass.
#
# So a scalar loss of many parameters (`m = 1`) wants reverse mode, which is why
# backpropagation is reverse mode; a function of few inputs and many outputs wants forward
# mode. And when `J` is sparse, neither needs `n` or `m` products: that is the second half
# of this page.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from bpjax import modes


def timed(fn, *args, repeat=5):
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def mlp(n, m, hidden=128):
    k1, k2 = jax.random.split(jax.random.key(0))
    W1 = jax.random.normal(k1, (hidden, n)) / np.sqrt(n)
    W2 = jax.random.normal(k2, (m, hidden)) / np.sqrt(hidden)
    return lambda x: W2 @ jnp.tanh(W1 @ x)


# %% [markdown]
# ## One column per JVP, one row per VJP
#
# A JVP with the basis vector `e_j` is column `j`; a VJP with `e_i` is row `i`. Stacking all
# of them (`jax.vmap` over the basis) is exactly `jax.jacfwd` and `jax.jacrev`.

# %%
f = mlp(5, 3)
x = jnp.linspace(-1.0, 1.0, 5)
J = jax.jacrev(f)(x)
column_2 = jax.jvp(f, (x,), (jnp.eye(5)[2],))[1]
_, pullback = jax.vjp(f, x)
row_1 = pullback(jnp.eye(3)[1])[0]
assert jnp.allclose(column_2, J[:, 2]) and jnp.allclose(row_1, J[1])
print("J[:, 2] from one JVP:", column_2)
print("J[1, :] from one VJP:", row_1)

# %% [markdown]
# ## Tall wants forward, wide wants reverse
#
# Time both modes on a tanh MLP as the input size `n` and the output size `m` trade places.

# %%
sizes = [(8, 1024), (64, 1024), (256, 256), (1024, 64), (1024, 8)]
rows = []
for n, m in sizes:
    g, x = mlp(n, m), jnp.ones(n)
    t_fwd = timed(jax.jit(jax.jacfwd(g)), x)
    t_rev = timed(jax.jit(jax.jacrev(g)), x)
    rows.append((n, m, t_fwd, t_rev))
    print(
        f"n={n:5d} m={m:5d}  jacfwd {t_fwd * 1e3:7.3f} ms  jacrev "
        f"{t_rev * 1e3:7.3f} ms"
    )

fig, ax = plt.subplots(figsize=(6.5, 3.5))
labels = [f"{n}→{m}" for n, m, *_ in rows]
ax.semilogy(
    labels, [r[2] * 1e3 for r in rows], "o-", label="forward (n JVPs)"
)
ax.semilogy(
    labels, [r[3] * 1e3 for r in rows], "s-", label="reverse (m VJPs)"
)
ax.set_xlabel("n → m")
ax.set_ylabel("ms per Jacobian")
ax.legend()
plt.show()

# %% [markdown]
# `bpjax.modes.choose_mode` makes that call for you and says why, from a run-time model
# (products × the work per product read from the jaxpr, with rates measured once per
# machine and kept in `~/.cache/bpjax`), and `modes.jacobian(f, x, mode="auto")` follows it.

# %%
for n, m in [(8, 1024), (1024, 8)]:
    choice = modes.choose_mode(mlp(n, m), jnp.ones(n))
    print(f"n={n}, m={m}: {choice.mode} - {choice.reason}")

# %% [markdown]
# ## Sparse Jacobians: many columns per JVP
#
# A tridiagonal map (each output reads its two neighbours) has a dense Jacobian of `n²`
# entries but only `3n` nonzeros. Columns that share no row can be seeded *together*:
# `J (e_0 + e_3 + e_6 + …)` holds column 0 in rows 0-1, column 3 in rows 2-4, and so on,
# without overlap. Three such seeds recover all of `J`: a **coloring** of the columns
# (Curtis, Powell & Reid 1974; Gebremedhin, Manne & Pothen 2005).
#
# `modes.sparsity` finds the pattern from the jaxpr without differentiating anything,
# `modes.color_columns` colors it, and `modes.jacobian(..., mode="sparse")` does detect,
# color, compress and decompress in one call.

# %%


def tridiagonal(u):
    p = jnp.pad(u, 1)
    return u - 0.1 * (p[:-2] - 2 * u + p[2:] - u**3)


n = 2000
u = jnp.linspace(0.0, 1.0, n)
pattern = modes.sparsity(tridiagonal, u)
print("pattern:", pattern.shape, "with", pattern.nse, "nonzeros")
dense_pattern = np.asarray(pattern.todense()[:12, :12])
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(dense_pattern, cmap="Greys")
ax.set_title("the first 12 × 12 of the pattern")
plt.show()

# pattern, coloring and mode decided once
jac = modes.jacobian_fn(tridiagonal, u)
print(f"{jac.method}: {jac.coloring.products} products instead of {n}")
J_sparse = jac(u)
assert jnp.allclose(J_sparse, jax.jacrev(tridiagonal)(u), atol=1e-6)
# J as a BCOO, 3n entries
jac_bcoo = modes.jacobian_fn(tridiagonal, u, sparse_output=True)

# %% [markdown]
# Where the run-time model cannot rank the leading candidates (a coloring's columns
# against its rows, say: as many JVPs as VJPs, and XLA runs one kind 2-3x faster, either
# way round), `jacobian_fn` does not time them itself. That probe compiles every such
# candidate, a few tenths of a second, which only many calls earn back; so the calls run
# it once the model's price of them adds up to the probe's own, and a Jacobian called a
# handful of times never pays for it. `settle()` runs it now (a benchmark should, before
# timing), and a probe run once is kept on the machine for later processes.

# %%
for name, j in (("dense output", jac), ("BCOO", jac_bcoo)):
    print(
        f"{name}: {j.method}, probe pending: {j.probe_pending}"
        f" (due in {j.probe_due_in} calls)"
    )
    j.settle()
    print(f"  settled on {j.method}: {j.choice.reason}")
t_dense, t_bcoo = timed(jac, u), timed(jac_bcoo, u)
t_rev = timed(jax.jit(jax.jacrev(tridiagonal)), u)
print(
    f"jax.jacrev {t_rev * 1e3:.3f} ms; sparse, dense output "
    f"{t_dense * 1e3:.3f} ms"
)
print(
    f"sparse, BCOO output {t_bcoo * 1e3:.3f} ms ({t_rev / t_bcoo:.0f}x "
    "faster than jacrev)"
)

# %% [markdown]
# With dense output, both are dominated by writing the `n²` zeros of a 16 MB matrix; with
# BCOO output (`sparse_output=True`: the nonzeros and their indices) the sparse Jacobian
# costs three JVPs and a gather.
#
# ## Mixed mode: a dense row *and* a dense column
#
# An "arrowhead" Jacobian has one dense row, one dense column and a diagonal. Every column
# shares row 0, so column coloring needs `n` colors; every row shares column 0, so row
# coloring needs `n` too. A **bicoloring** mixes the modes: one VJP for the dense row, one
# JVP for the dense column, one JVP for everything else (Coleman & Verma 1998; Hill & Dalle
# 2025): three products.

# %%


def arrowhead(x):
    return (
        jnp.tanh(x)
        + x[0] * x
        + jnp.zeros_like(x).at[0].set(jnp.sum(x**2))
    )


x = jnp.linspace(0.1, 1.0, 512)
p = modes.sparsity(arrowhead, x)
csr = p  # the BCOO pattern; the colorings take it as it is
print("columns:", modes.color_columns(csr).products, "products")
print("rows:   ", modes.color_rows(csr).products, "products")
both = modes.bicolor(csr)
print(
    f"bicoloring: {both.products} products ({both.jvps} JVPs, "
    f"{both.vjps} VJPs)"
)
J_mixed = modes.jacobian(
    arrowhead, x, mode="sparse", coloring="bicoloring"
)
assert jnp.allclose(J_mixed, jax.jacrev(arrowhead)(x), atol=1e-6)

# %% [markdown]
# ## A few calls: compilation counts too
#
# `jacobian_fn` compiles its program on the first call. The bicoloring's program holds a
# linearization and its transpose and a scatter into `J`: on XLA:CPU it compiles some
# 40 ms slower than plain reverse mode's. Over thousands of Newton steps that is nothing;
# over ten calls of a sub-millisecond Jacobian it is most of the bill. Tell `jacobian_fn`
# how many calls to expect (`calls=`) and it prices each candidate per call with its
# compilation shared among them (a model of the compile time, scaled to this machine):

# %%
for calls in (None, 10, 10_000):
    pick = modes.jacobian_fn(arrowhead, x, calls=calls)
    print(f"calls={calls}: {pick.method:<10} {pick.choice.reason}")
table = modes.jacobian_fn(arrowhead, x, calls=10).choice.candidates
for name, price in table.items():
    print(
        f"  {name:<10} run {price['run_seconds'] * 1e3:.3f} ms, "
        f"compiles {price['compile_seconds'] * 1e3:.0f} ms slower than "
        "the fastest to compile"
    )

# %% [markdown]
# ## Sparse Hessians: symmetric colorings
#
# A Hessian `H = ∇²f` of a scalar loss is a Jacobian too (of `∇f`), so dense it costs `n`
# Hessian-vector products. It is also *symmetric*, which a column coloring ignores: a star
# coloring (every path on four vertices uses three colors) lets each nonzero `H[i, j]` be
# read either from `i`'s column or from `j`'s, and an acyclic coloring (every cycle uses
# three colors) goes further, recovering the entries by substitution along two-colored
# trees. On a chain, a column coloring needs 3 colors, a star coloring 3, an acyclic one 2;
# on an arrowhead (one variable coupled to all) a column coloring needs `n`, both
# symmetric ones 2.


# %%
def chain_energy(u):
    return jnp.sum(jnp.cosh(u)) + jnp.sum(
        (u[1:] - u[:-1]) ** 2 * (1 + u[1:] ** 2)
    )


def hub_energy(u):
    return jnp.sum(jnp.exp(u[0] * u[1:] / 4)) + jnp.sum(u**2)


for name, energy in (
    ("chain", chain_energy),
    ("arrowhead", hub_energy),
):
    # the pattern of ∇f's Jacobian, symmetrised
    P = modes.hessian_sparsity(energy, x)
    star = modes.color_symmetric(P, kind="star")
    acyclic = modes.color_symmetric(P, kind="acyclic")
    print(
        f"{name:>9}: columns {modes.color_columns(P).products}, star "
        f"{star.count}, "
        f"acyclic {acyclic.count} HVPs (n = {x.size})"
    )

# decided once, compiled
hess = modes.hessian_fn(hub_energy, x, sparse_output=True)
H = hess(x)  # a BCOO with exactly the pattern's nonzeros
print(
    hess.method, hess.order, "->", H.nse, "stored entries;", hess.reason
)
assert jnp.allclose(H.todense(), jax.hessian(hub_energy)(x), atol=1e-5)

# %% [markdown]
# ## Check yourself
#
# 1. A loss `L: R^(10⁶) → R`: how many JVPs would forward mode need for the gradient, and
#    how many VJPs reverse mode?
# 2. How many colors does a *pentadiagonal* Jacobian (each output reads its two neighbours
#    on each side) need, and what is the lower bound?
# 3. Why can't column coloring do better than `n` products on the arrowhead?

# %%
# 1. Forward: one JVP per input, 10⁶; reverse: one VJP per output, 1.
print("1. forward 1,000,000 JVPs; reverse 1 VJP")


# 2. Five nonzeros per row: at least 5 colors, and 5 suffice for a band.
def pentadiagonal(u):
    p = jnp.pad(u, 2)
    return p[:-4] + p[1:-3] - 4 * u + p[3:-1] + p[4:] + u**3


c = modes.color_columns(modes.sparsity(pentadiagonal, jnp.ones(300)))
print(f"2. {c.products} colors, lower bound {c.lower_bound}")
assert c.products == c.lower_bound == 5

# 3. Row 0 is dense: every pair of columns shares it, so no two columns
#    may share a color.
row0 = np.asarray(p.todense()[0])
assert row0.all()
print(
    "3. row 0 has",
    int(row0.sum()),
    "nonzeros: all",
    x.size,
    "columns conflict there",
)
