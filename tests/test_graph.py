"""Graphs from jaxprs: forward/backward phases, hand rules as single nodes, the cache."""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import pytest

from bpjax import graph, ref, rev


def _loss(ns):
    labels = jnp.array([0, 1])

    def loss(W, x):
        return ns.softmax_cross_entropy(ns.tanh(ns.linear(x, W, jnp.zeros(3))), labels)

    return loss


ARGS = (jnp.ones((4, 3)), jnp.ones((2, 4)))


def test_forward_graph_shows_rev_rules_as_single_nodes_and_ref_as_primitives():
    g_rev = graph.trace(_loss(rev), *ARGS)
    labels = [n.label.split("\n")[0] for n in g_rev.nodes if n.kind == "op"]
    assert labels == [
        "broadcast_in_dim",  # the zeros bias, built inside the function
        "linear (hand VJP)",
        "tanh (hand VJP)",
        "softmax_cross_entropy (hand VJP)",
    ]
    g_ref = graph.trace(_loss(ref), *ARGS)
    prims = {n.label.split("\n")[0] for n in g_ref.nodes if n.kind == "op"}
    assert {"dot_general", "tanh", "exp", "log", "reduce_max"} <= prims
    assert not g_rev.cache and not [n for n in g_rev.nodes if n.phase == "backward"]


def test_backward_graph_has_phases_hand_vjps_and_the_activation_cache():
    g = graph.trace(_loss(rev), *ARGS, backward=True, names=["W", "x"])
    phase = {n.id: n.phase for n in g.nodes}
    backward = [n.label for n in g.nodes if n.phase == "backward"]
    assert {"linear (hand VJP)", "tanh (hand VJP)", "softmax_cross_entropy (hand VJP)"} <= set(
        backward
    )
    forward = [n.label for n in g.nodes if n.phase == "forward"]
    assert "tanh (fwd, saves residuals)" in forward
    # The cache: edges from the forward pass into the backward pass, and only those.
    assert g.cache and all(phase[a] == "forward" and phase[b] == "backward" for a, b, _ in g.cache)
    tanh_fwd = next(n.id for n in g.nodes if n.label == "tanh (fwd, saves residuals)")
    tanh_bwd = next(n.id for n in g.nodes if n.label == "tanh (hand VJP)")
    assert (tanh_fwd, tanh_bwd) in {(a, b) for a, b, _ in g.cache}  # tanh's VJP reads its a
    outputs = [n.label.split("\n")[0] for n in g.nodes if n.kind == "output"]
    assert outputs == ["output 0", "gradient 1", "gradient 2"]


def test_text_formats_and_values():
    text = graph.mermaid(_loss(rev), *ARGS, backward=True)
    assert text.startswith("flowchart LR") and 'subgraph backward["Backward pass"]' in text
    assert "-.->|cache|" in text
    d = graph.dot(_loss(ref), *ARGS, values=True)
    assert d.startswith("digraph G {") and "‖·‖=" in d and d.rstrip().endswith("}")


def test_seed_flow_diagram_is_generated():
    text = graph.two_layer_flow()
    for op in ("relu", "linear", "softmax_cross_entropy"):
        assert f"{op} (fwd, saves residuals)" in text  # every forward op …
        assert f"{op} (hand VJP)" in text  # … and its backward counterpart
    assert text.count("linear (hand VJP)") == 2 and text.count("linear (fwd") == 2
    assert text.count("-.->|cache|") >= 3


def test_render_degrades_with_a_clear_message_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs Graphviz's `dot`.*apt-get install graphviz"):
        graph.render(_loss(rev), *ARGS, path=tmp_path / "g.png")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_render_png_with_graphviz(tmp_path):
    out = graph.render(_loss(rev), *ARGS, path=tmp_path / "g.png", backward=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
