# %% [markdown]
# # 8. How autograd works: the tape and the traced graph
#
# Two ways to get from a program to its backward pass:
#
# * **A tape** (PyTorch's autograd, micrograd): run the program eagerly, and record every op
#   with its inputs and a closure that computes its VJP. `backward()` walks the record in
#   reverse. `bpjax.tape` is such an engine, in about a hundred lines, driven by the same
#   rule table as everything else.
# * **A trace** (JAX): run the program once on abstract values to get a graph (a jaxpr),
#   then *transform* that graph into another graph that computes the VJP, and compile it.
#   `bpjax.graph` draws that graph, forward and backward, as the Mermaid diagrams below.

# %%
import html

import jax
import jax.numpy as jnp
from IPython.display import HTML, display

from bpjax import graph, ref, tape

jax.config.update("jax_enable_x64", True)


def show_mermaid(text: str) -> None:
    """Render Mermaid text on this page (the site draws
    ``<pre class="mermaid">`` blocks)."""
    code = html.escape(text)
    display(HTML(f'<pre class="mermaid"><code>{code}</code></pre>'))


# %% [markdown]
# ## The tape
#
# Each op on a `tape.Var` runs its rule's forward pass now, keeping the rule's residuals,
# and records a node. `loss.backward()` sorts the recorded nodes so that each comes after
# its inputs, then walks them in reverse, calling each node's VJP on the cotangent that
# reached it, and **adds** the cotangents that reach a value along several paths.

# %%
x = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])  # (batch, d_in)
labels = jnp.array([0, 3])
W = tape.Var(jnp.full((3, 4), 0.1), requires_grad=True, name="W")
b = tape.Var(jnp.zeros(4), requires_grad=True, name="b")

h = tape.tanh(tape.linear(x, W, b))
loss = tape.softmax_cross_entropy(h, labels)
print("recorded:", loss, "<-", h)
loss.backward()
print("W.grad =\n", W.grad)


def loss_fn(W, b):
    return ref.softmax_cross_entropy(
        ref.tanh(ref.linear(x, W, b)), labels
    )


gW, gb = jax.grad(loss_fn, argnums=(0, 1))(W.value, b.value)
print(
    "equal to jax.grad:",
    bool(jnp.allclose(W.grad, gW) and jnp.allclose(b.grad, gb)),
)

# %% [markdown]
# ### Fan-out is fan-in
#
# A value used twice in the forward pass receives the *sum* of two cotangents in the
# backward pass. For `y = x·x + x`, `dy/dx = 2x + 1`: one path through each factor of the
# product, one through the sum.

# %%
v = tape.Var(jnp.array(3.0), requires_grad=True)
y = v * v + v
y.backward()
print("tape:", float(v.grad), " 2x + 1:", 2 * 3.0 + 1)

# %% [markdown]
# ### Gradients accumulate
#
# Leaves **add** each backward pass into `.grad`. That is what makes micro-batch gradient
# accumulation work on a tape, and why training loops call `zero_grad()` before each step.
# Functional JAX has no such state: `jax.grad` returns the gradient as a value.

# %%
u = tape.Var(jnp.array([1.0, 2.0]), requires_grad=True)
history = []
for _ in range(3):
    (u * u).sum().backward()  # d/du Σ u² = 2u
    history.append(u.grad)
print("without zero_grad:", [g.tolist() for g in history])
u.zero_grad()
(u * u).sum().backward()
print("after zero_grad:  ", u.grad.tolist())

with tape.no_grad():
    frozen = (u * u).sum()
print(
    "inside no_grad:",
    frozen,
    "(nothing recorded, requires_grad =",
    frozen.requires_grad,
    ")",
)

# %% [markdown]
# ## The traced graph, forward
#
# JAX never records a tape. `jax.make_jaxpr` traces a function into a jaxpr, a small
# functional program; `bpjax.graph` turns it into nodes and edges. Built from `bpjax.rev`,
# each hand-written rule is **one node**: here the two-layer ReLU network of
# `graph.two_layer_example()`.

# %%
net, args, names = graph.two_layer_example()
show_mermaid(graph.mermaid(net, *args, names=names))

# %% [markdown]
# The same network written with `bpjax.ref` (plain `jax.numpy`) shows JAX's primitives
# instead: the matrix products are `dot_general`, and the ReLU and the loss become a couple
# of dozen elementwise and reduction primitives. Below, the primitive names that occur, and
# the beginning of the jaxpr they come from.


# %%
def ref_net(W1, b1, W2, b2, x):
    return ref.softmax_cross_entropy(
        ref.linear(ref.relu(ref.linear(x, W1, b1)), W2, b2),
        jnp.array([0, 2, 1]),
    )


ref_graph = graph.trace(ref_net, *args, names=names)
print(
    sorted(
        {
            n.label.split("\n")[0]
            for n in ref_graph.nodes
            if n.kind == "op"
        }
    )
)
jaxpr_lines = str(jax.make_jaxpr(ref_net)(*args)).splitlines()
print(
    "\n".join(jaxpr_lines[:24]),
    f"\n... ({len(jaxpr_lines)} lines in all)",
)

# %% [markdown]
# ## The traced graph, forward and backward
#
# With `backward=True`, `bpjax.graph` traces `(loss, vjp(cotangent))`: the cotangent is an
# input, so everything that depends on it is the **backward pass** (red), everything else
# the **forward pass**. The dashed edges labelled `cache` are the forward values that the
# backward pass reads: the residuals each hand-written VJP saved, the activation cache of
# tutorial 1, drawn.

# %%
flow = graph.trace(net, *args, backward=True, names=names)
show_mermaid(graph.mermaid(net, *args, backward=True, names=names))
for src, dst, what in flow.cache:
    label = {n.id: n.label for n in flow.nodes}
    print(f"cache: {label[src]!r:48} -> {label[dst]!r:28} {what}")

# %% [markdown]
# With `values=True` every node also shows the norm of its value (the cotangent seed is 1),
# as micrograd prints `data` and `grad`; `graph.dot` and `graph.render` give the same graph
# for Graphviz.

# %%
show_mermaid(
    graph.mermaid(net, *args, backward=True, values=True, names=names)
)

# %% [markdown]
# ## Check yourself
#
# 1. After three `backward()` calls on `Σ u²` without `zero_grad()`, what is `u.grad` at
#    `u = [1, 2]`?
# 2. How many cache edges does the two-layer network's backward graph have, and why do two
#    of them leave the same node?
# 3. How many backward-pass nodes does the `bpjax.rev` graph have, and why that many?

# %%
# 1. 3 × 2u = [6, 12].
assert history[-1].tolist() == [6.0, 12.0]
print("1.", history[-1].tolist())

# 2. Three: the log-probabilities for the loss's VJP, and the ReLU
#    output a = max(z, 0), read twice: by the second linear layer's VJP
#    (it is that layer's input, for W̄2) and by ReLU's own VJP, which
#    needs only a > 0 (equal to z > 0), so one saved array serves both
#    and no separate mask is stored.
label = {n.id: n.label for n in flow.nodes}
sources = [label[src] for src, _, _ in flow.cache]
assert len(flow.cache) == 3 and sum("relu" in s for s in sources) == 2
print(
    "2.",
    len(flow.cache),
    "cache edges;",
    sources.count(sources[-1]),
    "from",
    sources[-1],
)

# 3. Four: one hand-written VJP per forward op (linear, relu, linear,
#    softmax_cross_entropy).
backward_ops = [n for n in flow.nodes if n.phase == "backward"]
forward_ops = [n for n in flow.nodes if n.phase == "forward"]
assert len(backward_ops) == len(forward_ops) == 4
print("3.", [n.label for n in backward_ops])
