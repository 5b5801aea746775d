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

Users have asked JAX for a view of the backward graph (jax-ml/jax#5159, #12462).
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
    jaxpr = closed.jaxpr
    norms = _norms(closed, jax.tree.leaves(flat_args)) if values else {}
    nodes, edges, producer = [], [], {}
    names = list(names or [])
    for i, v in enumerate(jaxpr.invars):
        is_ct = ct_vars is not None and v in ct_vars
        label = "cotangent seed" if is_ct else (names[i] if i < len(names) else f"input {i}")
        extra = f"\n‖·‖={norms[v]:.3g}" if v in norms else ""
        nodes.append(Node(f"in{i}", f"{label}\n{_aval(v)}{extra}", "input", "input"))
        producer[v] = f"in{i}"
    backward_vars = set(ct_vars or [])
    groups: dict[str, str] = {}
    for k, eqn in enumerate(jaxpr.eqns):
        in_vars = [v for v in eqn.invars if not isinstance(v, _Literal)]
        scope = _scope(eqn)
        # Backward: reads the cotangent, or is part of a transposed (backward) computation,
        # or of a hand-written VJP; everything else is the forward pass.
        is_backward = (
            any(v in backward_vars for v in in_vars)
            or (ct_vars is not None and _in_transpose(eqn))
            or (scope is not None and scope[0] == "backward")
        )
        if is_backward:
            backward_vars.update(eqn.outvars)
        if scope is not None and scope in groups:
            node_id = groups[scope]
        else:
            node_id = f"op{k}"
            if scope is None:
                label = _op_label(eqn)
            else:
                kind = "hand VJP" if scope[0] == "backward" else "fwd, saves residuals"
                label = f"{scope[1].split('#')[0]} ({kind})"
            shapes = ", ".join(_aval(v) for v in eqn.outvars)
            text = label if scope else f"{label}\n{shapes}"  # a rule spans several values
            nodes.append(Node(node_id, text, "op", "backward" if is_backward else "forward"))
            if scope is not None:
                groups[scope] = node_id
        for v in in_vars:
            src = producer.get(v)
            if src is not None and src != node_id and (src, node_id, _aval(v)) not in edges:
                edges.append((src, node_id, _aval(v)))
        for v in eqn.outvars:
            producer[v] = node_id
        if values and eqn.outvars[0] in norms:
            nodes[-1].label += f"\n‖·‖={norms[eqn.outvars[0]]:.3g}"
    for i, v in enumerate(jaxpr.outvars):
        if isinstance(v, _Literal):
            continue
        phase = "backward" if v in backward_vars else "forward"
        name = "gradient" if phase == "backward" else "output"
        nodes.append(Node(f"out{i}", f"{name} {i}\n{_aval(v)}", "output", "output"))
        edges.append((producer[v], f"out{i}", _aval(v)))
    phase_of = {n.id: n.phase for n in nodes}
    cache = [e for e in edges if phase_of[e[0]] in ("forward",) and phase_of[e[1]] == "backward"]
    edges = [e for e in edges if e not in cache]
    return Graph(nodes, edges, cache)


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
    """The seed's 2-layer ReLU net on :mod:`bpjax.rev` rules, ready to draw.

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
    """The seed's section-13 diagram, generated: a 2-layer ReLU net, forward and backward.

    Built from :mod:`bpjax.rev`, so each hand-written rule is one node and the activation
    cache is exactly the residuals its backward pass reads.
    """
    loss, args, names = two_layer_example()
    return mermaid(loss, *args, backward=True, names=names)
