"""Computational graphs made visible: forward and backward, from the jaxpr JAX traces.

``mermaid(f, *args)`` and ``dot(f, *args)`` return the graph of ``f`` as Mermaid or Graphviz
text; ``render(f, *args, path=...)`` writes PNG/SVG through Graphviz's ``dot`` program.

* Forward graph (``backward=False``): one node per primitive of ``jax.make_jaxpr(f)``; ops
  from :mod:`bpjax.rev`/:mod:`bpjax.fwd` are single nodes (``custom_vjp_call`` /
  ``custom_jvp_call``) labelled with the rule's name, ops from :mod:`bpjax.ref` show JAX's
  primitives.
* With ``backward=True`` the graph is that of ``(out, vjp(ct))``: the cotangent ``ct`` is an
  input, so every op that depends on it is the **backward pass** and every other op the
  forward pass; forward values that backward ops read are the **activation cache** (drawn
  dashed, the residuals). Each hand-written VJP of :mod:`bpjax.rev` is one node.
* ``values=True`` evaluates the graph and adds each value's norm to its node (as micrograd
  prints data and grad), with cotangent seed 1.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from bpjax._namespace import FWD_SCOPE, VJP_SCOPE

__all__ = [
    "trace",
    "mermaid",
    "dot",
    "render",
    "two_layer_example",
    "two_layer_flow",
    "Graph",
    "Node",
]

_Literal = jax.extend.core.Literal

_CALLS = {"custom_vjp_call": "hand VJP", "custom_jvp_call": "hand JVP", "pjit": "jit", "jit": "jit"}


@dataclasses.dataclass
class Node:
    id: str
    label: str
    kind: str  # "input", "op", "output"
    phase: str  # "forward", "backward", "input", "output"


@dataclasses.dataclass
class Graph:
    """Nodes and edges; ``cache`` lists the forward→backward edges (the residuals)."""

    nodes: list[Node]
    edges: list[tuple[str, str, str]]  # (src, dst, label)
    cache: list[tuple[str, str, str]]


def _aval(v) -> str:
    aval = v.aval
    return f"{aval.dtype.name}{list(aval.shape)}"


def _stack(eqn):
    return getattr(eqn.source_info.name_stack, "stack", ())


def _scope(eqn) -> tuple[str, str] | None:
    """``(phase, "rule#call")`` when ``eqn`` belongs to a hand rule of :mod:`bpjax.rev`."""
    for entry in reversed(_stack(eqn)):
        name = getattr(entry, "name", "")
        if name.startswith(VJP_SCOPE):
            return "backward", name[len(VJP_SCOPE) :]
        if name.startswith(FWD_SCOPE):
            return "forward", name[len(FWD_SCOPE) :]
    return None


def _in_transpose(eqn) -> bool:
    return any(type(e).__name__ == "Transform" and e.name == "transpose" for e in _stack(eqn))


def _op_label(eqn) -> str:
    name = eqn.primitive.name
    if name not in _CALLS:
        return name
    if "name" in eqn.params:
        return f"{eqn.params['name']} ({_CALLS[name]})"
    sub = eqn.params.get("call_jaxpr")
    info = getattr(getattr(sub, "jaxpr", sub), "debug_info", None)
    src = getattr(info, "func_src_info", None) or ""
    return f"{src.split(' ')[0] or name} ({_CALLS[name]})"


def _norms(closed, args):
    """Evaluate the jaxpr, returning ``{var: ‖value‖}`` for every variable."""
    env = {}
    jaxpr = closed.jaxpr
    for v, c in zip(jaxpr.constvars, closed.consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [v.val if isinstance(v, _Literal) else env[v] for v in eqn.invars]
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        out = out if eqn.primitive.multiple_results else [out]
        env.update(zip(eqn.outvars, out, strict=True))
    return {
        v: float(np.linalg.norm(np.asarray(x, np.float64).ravel()))
        for v, x in env.items()
        if np.issubdtype(np.asarray(x).dtype, np.number)
    }


def _trace(f, args, backward):
    if not backward:
        return jax.make_jaxpr(f)(*args), list(args), None
    out = jax.eval_shape(f, *args)
    ct = jax.tree.map(lambda o: jnp.ones(o.shape, o.dtype), out)

    def forward_and_backward(*inputs):
        *primals, cotangent = inputs
        value, pull = jax.vjp(f, *primals)
        return value, pull(cotangent)

    closed = jax.make_jaxpr(forward_and_backward)(*args, ct)
    return closed, [*args, ct], closed.jaxpr.invars[-len(jax.tree.leaves(ct)) :]


def trace(f, *args, backward: bool = False, values: bool = False, names=None) -> Graph:
    """The :class:`Graph` of ``f`` at ``args`` (see the module docstring).

    Args:
      f: a function of arrays. With ``backward=True`` every argument must be floating (close
        over class ids).
      *args: example arguments (shapes and dtypes matter; values only with ``values=True``).
      backward: include the backward pass (the VJP) and the activation cache.
      values: label nodes with the norm of their value.
      names: optional names for the inputs, e.g. ``["W1", "b1", "x"]``.
    """
    closed, flat_args, ct_vars = _trace(f, args, backward)
    norms = _norms(closed, jax.tree.leaves(flat_args)) if values else {}
    builder = _Builder(ct_vars, norms)
    builder.inputs(closed.jaxpr.invars, list(names or []))
    for k, eqn in enumerate(closed.jaxpr.eqns):
        builder.equation(k, eqn)
    builder.outputs(closed.jaxpr.outvars)
    phase_of = {n.id: n.phase for n in builder.nodes}
    cache = [
        e for e in builder.edges if phase_of[e[0]] == "forward" and phase_of[e[1]] == "backward"
    ]
    return Graph(builder.nodes, [e for e in builder.edges if e not in cache], cache)


class _Builder:
    """Turns a jaxpr into nodes and edges, one equation at a time, tracking which values
    belong to the backward pass (they depend on the cotangent seed)."""

    def __init__(self, ct_vars, norms):
        self.ct_vars, self.norms = ct_vars, norms
        self.nodes, self.edges, self.producer, self.groups = [], [], {}, {}
        self.backward_vars = set(ct_vars or [])

    def _norm(self, v) -> str:
        return f"\n‖·‖={self.norms[v]:.3g}" if v in self.norms else ""

    def inputs(self, invars, names):
        for i, v in enumerate(invars):
            is_ct = self.ct_vars is not None and v in self.ct_vars
            label = "cotangent seed" if is_ct else (names[i] if i < len(names) else f"input {i}")
            self.nodes.append(
                Node(f"in{i}", f"{label}\n{_aval(v)}{self._norm(v)}", "input", "input")
            )
            self.producer[v] = f"in{i}"

    def _is_backward(self, eqn, in_vars, scope) -> bool:
        # Backward: reads the cotangent, or is part of a transposed (backward) computation,
        # or of a hand-written VJP; everything else is the forward pass.
        return (
            any(v in self.backward_vars for v in in_vars)
            or (self.ct_vars is not None and _in_transpose(eqn))
            or (scope is not None and scope[0] == "backward")
        )

    def _node_for(self, k, eqn, scope, is_backward) -> str:
        if scope is not None and scope in self.groups:
            return self.groups[scope]  # one node per hand-written rule call
        node_id = f"op{k}"
        if scope is None:
            shapes = ", ".join(_aval(v) for v in eqn.outvars)
            text = f"{_op_label(eqn)}\n{shapes}"
        else:
            kind = "hand VJP" if scope[0] == "backward" else "fwd, saves residuals"
            text = f"{scope[1].split('#')[0]} ({kind})"  # a rule spans several values
            self.groups[scope] = node_id
        self.nodes.append(Node(node_id, text, "op", "backward" if is_backward else "forward"))
        return node_id

    def equation(self, k, eqn):
        in_vars = [v for v in eqn.invars if not isinstance(v, _Literal)]
        scope = _scope(eqn)
        is_backward = self._is_backward(eqn, in_vars, scope)
        if is_backward:
            self.backward_vars.update(eqn.outvars)
        node_id = self._node_for(k, eqn, scope, is_backward)
        for v in in_vars:
            src = self.producer.get(v)
            if src is not None and src != node_id and (src, node_id, _aval(v)) not in self.edges:
                self.edges.append((src, node_id, _aval(v)))
        for v in eqn.outvars:
            self.producer[v] = node_id
        if scope is None and eqn.outvars[0] in self.norms:
            self.nodes[-1].label += self._norm(eqn.outvars[0])  # the node just made

    def outputs(self, outvars):
        for i, v in enumerate(outvars):
            if isinstance(v, _Literal):
                continue
            name = "gradient" if v in self.backward_vars else "output"
            self.nodes.append(Node(f"out{i}", f"{name} {i}\n{_aval(v)}", "output", "output"))
            self.edges.append((self.producer[v], f"out{i}", _aval(v)))


_STYLE = {"input": "#3498DB", "output": "#27AE60", "forward": "#ECF0F1", "backward": "#FADBD8"}


def _esc(text: str) -> str:
    return text.replace('"', "'")


def mermaid(f, *args, backward: bool = False, values: bool = False, names=None) -> str:
    """Mermaid ``flowchart`` text of the graph (paste into GitHub Markdown)."""
    g = trace(f, *args, backward=backward, values=values, names=names)
    lines = ["flowchart LR"]
    for phase, title in (("forward", "Forward pass"), ("backward", "Backward pass")):
        members = [n for n in g.nodes if n.phase == phase]
        if not members:
            continue
        lines.append(f'  subgraph {phase}["{title}"]')
        lines += [f'    {n.id}["{_esc(n.label).replace(chr(10), "<br/>")}"]' for n in members]
        lines.append("  end")
    for n in g.nodes:
        if n.phase in ("input", "output"):
            lines.append(f'  {n.id}(["{_esc(n.label).replace(chr(10), "<br/>")}"])')
    lines += [f"  {a} --> {b}" for a, b, _ in g.edges]
    lines += [f"  {a} -.->|cache| {b}" for a, b, _ in g.cache]
    lines += [f"  style {n.id} fill:{_STYLE[n.phase]}" for n in g.nodes]
    return "\n".join(lines) + "\n"


def dot(f, *args, backward: bool = False, values: bool = False, names=None) -> str:
    """Graphviz DOT text of the graph."""
    g = trace(f, *args, backward=backward, values=values, names=names)
    lines = [
        "digraph G {",
        "  rankdir=LR;",
        '  node [shape=box, style=filled, fontname="Helvetica"];',
    ]
    for phase, title in (("forward", "Forward pass"), ("backward", "Backward pass")):
        members = [n for n in g.nodes if n.phase == phase]
        if not members:
            continue
        lines.append(f'  subgraph cluster_{phase} {{ label="{title}";')
        lines += [
            f'    {n.id} [label="{_esc(n.label)}", fillcolor="{_STYLE[phase]}"];' for n in members
        ]
        lines.append("  }")
    for n in g.nodes:
        if n.phase in ("input", "output"):
            lines.append(
                f'  {n.id} [label="{_esc(n.label)}", shape=ellipse, fillcolor="{_STYLE[n.phase]}"];'
            )
    lines += [f'  {a} -> {b} [label="{lab}", fontsize=8];' for a, b, lab in g.edges]
    lines += [
        f'  {a} -> {b} [style=dashed, color="#F39C12", label="cache"];' for a, b, _ in g.cache
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(f, *args, path, backward: bool = False, values: bool = False, names=None) -> Path:
    """Write the graph to ``path`` (``.png`` or ``.svg``) with Graphviz's ``dot`` program.

    Raises:
      RuntimeError: when ``dot`` is not installed, saying how to get it; :func:`dot` and
        :func:`mermaid` need nothing.
    """
    path = Path(path)
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(
            "bpjax.graph.render needs Graphviz's `dot` program, which is not on PATH: install "
            "it (`apt-get install graphviz`, `brew install graphviz`, `conda install "
            "graphviz`) or use bpjax.graph.dot()/mermaid() for the text"
        )
    fmt = path.suffix.lstrip(".") or "png"
    text = dot(f, *args, backward=backward, values=values, names=names)
    subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=text.encode(), check=True)
    return path


def two_layer_example():
    """A 2-layer ReLU net on :mod:`bpjax.rev` rules, ready to draw.

    Returns:
      ``(loss, args, names)``: ``loss(W1, b1, W2, b2, x)`` (softmax cross-entropy against
      three fixed labels), float32 example arguments of shapes ``(4, 8), (8,), (8, 3), (3,),
      (3, 4)``, and their names.
    """
    from bpjax import rev

    labels = jnp.array([0, 2, 1])

    def loss(W1, b1, W2, b2, x):
        return rev.softmax_cross_entropy(
            rev.linear(rev.relu(rev.linear(x, W1, b1)), W2, b2), labels
        )

    shapes = [(4, 8), (8,), (8, 3), (3,), (3, 4)]
    return loss, [jnp.ones(s, jnp.float32) for s in shapes], ["W1", "b1", "W2", "b2", "x"]


def two_layer_flow() -> str:
    """The classic autograd diagram, generated: a 2-layer ReLU net, forward and backward.

    Built from :mod:`bpjax.rev`, so each hand-written rule is one node and the activation
    cache is exactly the residuals its backward pass reads.
    """
    loss, args, names = two_layer_example()
    return mermaid(loss, *args, backward=True, names=names)
