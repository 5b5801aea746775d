# %% [markdown]
# # 2. One op's JVP and VJP, checked
#
# Every op in bpjax is written once, in the rule table, with three functions: the primal,
# a **JVP** (Jacobian-vector product: push a tangent `ż` forward, `ȧ = J ż`) and a **VJP**
# (vector-Jacobian product: pull a cotangent `ā` back, `z̄ = Jᵀ ā`). Forward-mode autodiff
# is built from JVPs, reverse mode (backpropagation) from VJPs. Neither ever forms the
# Jacobian `J`. This page takes one op, softmax, writes both products out, checks them
# against each other, against JAX's autodiff and against finite differences, and shows
# what a wrong rule looks like to `bpjax.check`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from bpjax import check, fwd, ref, rules
from bpjax.rules import TABLE

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## The rule table
#
# One row per op: its formula, its tangent rule, its backward rule, and what the backward
# rule keeps from the forward pass (its memory cost). `bpjax.ref` differentiates the primal
# with JAX's autodiff; `bpjax.rev` uses the hand-written VJP (`jax.custom_vjp`);
# `bpjax.fwd` the hand-written JVP (`jax.custom_jvp`).

# %%
display(Markdown(rules.markdown_table()))

# %% [markdown]
# ## Softmax: the Jacobian, and the two products
#
# For one row, `a = softmax(z)` has the Jacobian `J = diag(a) − a aᵀ` (`∂a_i/∂z_j =
# a_i (δ_ij − a_j)`). Multiplying it by a vector needs no matrix:
#
#     JVP:  ȧ = J ż  = a ⊙ (ż − ⟨a, ż⟩)
#     VJP:  z̄ = Jᵀ ā = a ⊙ (ā − ⟨ā, a⟩)        (J is symmetric)
#
# Both cost O(n) for n classes; the Jacobian costs O(n²) to form. Here are the table's rules
# called directly, next to JAX's autodiff of the reference softmax:

# %%
z = jnp.array([1.0, 2.0, 0.5, -1.0])
z_dot = jnp.array([0.3, -0.2, 0.1, 0.4])  # a tangent
a_bar = jnp.array([1.0, 0.0, -2.0, 0.5])  # a cotangent

a, a_dot = TABLE["softmax"].jvp((z,), (z_dot,))
_, residual = TABLE["softmax"].vjp_fwd(z)
(z_bar,) = TABLE["softmax"].vjp_bwd(residual, a_bar)

_, a_dot_auto = jax.jvp(ref.softmax, (z,), (z_dot,))
_, pullback = jax.vjp(ref.softmax, z)
(z_bar_auto,) = pullback(a_bar)
print("JVP  hand", a_dot, "\n     auto", a_dot_auto)
print("VJP  hand", z_bar, "\n     auto", z_bar_auto)

# %% [markdown]
# Building the Jacobian from the products shows what they are: the JVP of each basis vector
# is a **column** of `J`, the VJP of each basis vector a **row**. Forward mode needs one JVP
# per input, reverse mode one VJP per output: for a scalar loss, a single VJP gives the
# whole gradient, which is why training uses reverse mode.

# %%
basis = jnp.eye(z.size)
J_cols = jnp.stack(
    [TABLE["softmax"].jvp((z,), (e,))[1] for e in basis], axis=1
)
J_rows = jnp.stack(
    [TABLE["softmax"].vjp_bwd(residual, e)[0] for e in basis], axis=0
)
J_formula = jnp.diag(a) - jnp.outer(a, a)
print(
    "columns from JVPs == rows from VJPs == diag(a) − a aᵀ:",
    bool(
        jnp.allclose(J_cols, J_formula)
        and jnp.allclose(J_rows, J_formula)
    ),
)

fig, ax = plt.subplots(figsize=(4, 3.5))
im = ax.imshow(J_formula, cmap="RdBu_r", vmin=-0.3, vmax=0.3)
ax.set_title("softmax Jacobian diag(a) − a aᵀ")
ax.set_xlabel("j (input z_j)")
ax.set_ylabel("i (output a_i)")
fig.colorbar(im)
plt.show()

# %% [markdown]
# ## The transpose identity
#
# A JVP and a VJP of the same op must satisfy `⟨ū, J v⟩ = ⟨Jᵀ ū, v⟩` for every `u`, `v`:
# the cheapest consistency check there is, and one `bpjax.check` runs on every function it
# is given (`vjp vs jvp`).

# %%
key = jax.random.key(0)
u, v = jax.random.normal(key, (2, z.size))
lhs = jnp.vdot(u, TABLE["softmax"].jvp((z,), (v,))[1])
rhs = jnp.vdot(TABLE["softmax"].vjp_bwd(residual, u)[0], v)
print(f"⟨u, J v⟩ = {lhs:.15f}\n⟨Jᵀu, v⟩ = {rhs:.15f}")

# %% [markdown]
# ## `bpjax.check`: three references
#
# `check.op(name, *args)` checks the table's op in both hand-written namespaces against
# `bpjax.ref`. Each line is a relative error over a few random directions:
#
# * `vjp vs autodiff`, `jvp vs autodiff`: against JAX's derivative of the plain primal;
# * `... vs finite differences`: against `(f(x + εv) − f(x − εv)) / 2ε` in float64;
# * `vjp vs jvp`: the transpose identity above.
#
# `rev.softmax` is a `custom_vjp`, which has no forward mode: its JVP lines are skipped
# with the reason.

# %%
reports = check.op("softmax", z[None, :], axis=-1)
for report in reports.values():
    print(report, "\n  ok:", report.ok())

# %% [markdown]
# ## Finite differences have an error of their own
#
# A central difference has truncation error ~ε² and round-off error ~10⁻¹⁶/ε, so its
# error against the true derivative is smallest near ε ≈ 10⁻⁵ to 10⁻⁶ and grows on both
# sides. That is why `check` compares against autodiff *exactly* (tolerance 1e-10) and
# against finite differences loosely (1e-6).

# %%
epsilons = [10.0**-k for k in range(1, 12)]
fd_error = [
    check.gradients(fwd.tanh, jnp.linspace(-2.0, 2.0, 5), eps=e).errors[
        "jvp vs finite differences"
    ]
    for e in epsilons
]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(epsilons, fd_error, "o-")
ax.set_xlabel("finite-difference step ε")
ax.set_ylabel("relative error, fwd.tanh JVP vs FD")
ax.set_title("truncation (right) vs round-off (left)")
ax.invert_xaxis()
plt.show()

# %% [markdown]
# ## What a wrong rule looks like
#
# A classic slip: writing sigmoid's derivative as `a` instead of `a(1 − a)`. As a
# `custom_vjp` it runs, trains, and produces plausible numbers. The check catches it at
# once: both the autodiff and the finite-difference comparisons are of order one.


# %%
@jax.custom_vjp
def bad_sigmoid(z):
    return jax.nn.sigmoid(z)


def bad_fwd(z):
    a = jax.nn.sigmoid(z)
    return a, a


def bad_bwd(a, g):
    return (g * a,)  # should be g * a * (1 - a)


bad_sigmoid.defvjp(bad_fwd, bad_bwd)
bad = check.gradients(
    bad_sigmoid, jnp.linspace(-3.0, 3.0, 7), reference=ref.sigmoid
)
print(bad, "\n  ok:", bad.ok())

# %% [markdown]
# ## Check yourself
#
# 1. Is the softmax Jacobian symmetric, and what do its rows sum to? Why?
# 2. For the scalar `L(z) = Σ softmax(z)²` of `n = 4` inputs, how many JVPs does forward
#    mode need for the gradient, and how many VJPs reverse mode? And for 10⁶ parameters?
# 3. Which comparison flags the wrong sigmoid rule hardest, and does `check.op` pass the
#    table's own sigmoid?

# %%
# 1. Symmetric (diag(a) − a aᵀ), rows summing to 0: softmax's outputs
#    always sum to 1, so no tangent can change that sum.
assert jnp.allclose(J_formula, J_formula.T)
assert jnp.allclose(J_formula.sum(axis=1), 0.0)
print("1. symmetric; row sums:", J_formula.sum(axis=1))


# 2. One JVP per input direction (n of them), one VJP per output (1):
#    10⁶ against 1.
def loss(z):
    return jnp.sum(fwd.softmax(z) ** 2)


# n JVPs
grad_from_jvps = jnp.array(
    [jax.jvp(loss, (z,), (e,))[1] for e in basis]
)
grad_from_vjp = jax.vjp(loss, z)[1](1.0)[0]  # one VJP
assert jnp.allclose(grad_from_jvps, grad_from_vjp)
print(
    f"2. {len(basis)} JVPs == 1 VJP:",
    grad_from_vjp,
    "; for 10⁶ parameters: 10⁶ JVPs vs 1",
)

# 3. The autodiff comparison; the table's sigmoid passes both
#    namespaces.
worst = max(bad.errors, key=bad.errors.get)
assert bad.errors["vjp vs autodiff"] > 0.1 and not bad.ok()
assert all(
    r.ok()
    for r in check.op("sigmoid", jnp.linspace(-3.0, 3.0, 7)).values()
)
print(
    f"3. worst: {worst} ({bad.errors[worst]:.2f}); table's sigmoid "
    "passes"
)
