"""Manual δ-recursion backprop against JAX autodiff (three namespaces) and PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import fwd, manual, ref, rev


def _net(seed, sizes, batch, classes_from_labels=True):
    rng = np.random.default_rng(seed)
    params = [
        (rng.standard_normal((a, b)) / np.sqrt(a), rng.standard_normal(b) * 0.1)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = rng.standard_normal((batch, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=batch)
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
    return params, jnp.asarray(x), jnp.asarray(labels)


def _loss(ns, activation):
    def loss(params, x, labels):
        a = x
        for W, b in params[:-1]:
            a = getattr(ns, activation)(ns.linear(a, W, b))
        W, b = params[-1]
        return ns.softmax_cross_entropy(ns.linear(a, W, b), labels)

    return loss


NS = (ref, rev, fwd)


def _max_rel(got, want):
    errs = [
        float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w)))
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    ]
    return max(errs)


# A 2-layer network with sigmoid hidden units and one with ReLU hidden units (the two
# textbook cases), plus deeper tanh nets for the general recursion.
CASES = [
    ("sigmoid", (4, 3, 2), 5),
    ("relu", (4, 8, 3), 100),
    ("tanh", (6, 5, 5, 4, 3), 7),
    ("relu", (3, 16, 16, 16, 16, 2), 9),
]


@pytest.mark.parametrize(("activation", "sizes", "batch"), CASES)
def test_manual_backprop_equals_autodiff_through_every_namespace(activation, sizes, batch):
    params, x, labels = _net(0, sizes, batch)

    @jax.jit  # manual and the three autodiff gradients in one compilation
    def all_gradients(params, x, labels):
        manual_result = manual.backprop(params, x, labels, activation=activation)
        autodiff = [jax.value_and_grad(_loss(ns, activation))(params, x, labels) for ns in NS]
        return manual_result, autodiff

    (loss, grads), autodiff = all_gradients(params, x, labels)
    assert jax.tree.structure(grads) == jax.tree.structure([tuple(p) for p in params])
    for want_loss, want in autodiff:
        np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
        assert _max_rel(grads, want) <= 1e-10


def test_each_gradient_has_its_parameters_dtype_as_jax_grad_gives_it():
    params, x, labels = _net(2, (4, 8, 3), 6)
    # Mixed precision: a float16 first layer under float32 inputs computes in float32.
    params = [
        (params[0][0].astype(jnp.float16), params[0][1].astype(jnp.float32)),
        tuple(p.astype(jnp.float32) for p in params[1]),
    ]
    x = x.astype(jnp.float32)
    _, grads = manual.backprop(params, x, labels, activation="tanh")
    want = jax.grad(_loss(ref, "tanh"))(params, x, labels)
    leaves = (jax.tree.leaves(t) for t in (grads, want, params))
    for g, w, p in zip(*leaves, strict=True):
        assert g.dtype == w.dtype == p.dtype
        np.testing.assert_allclose(np.float32(g), np.float32(w), rtol=2e-3, atol=1e-4)


def test_one_hot_labels_give_the_same_gradients_as_class_ids():
    params, x, labels = _net(1, (4, 8, 3), 6)
    _, g_ids = manual.backprop(params, x, labels, activation="relu")
    _, g_hot = manual.backprop(params, x, jax.nn.one_hot(labels, 3), activation="relu")
    assert _max_rel(g_hot, g_ids) <= 1e-14


def test_manual_cache_holds_what_the_rules_save():
    params, x, _ = _net(2, (4, 8, 8, 3), 5)
    probs, cache = manual.forward(params, x, activation="relu")
    assert len(cache.inputs) == 3 and len(cache.saved) == 2
    # relu keeps its output, which is the next layer's input: the cache holds nothing extra.
    for saved, next_input in zip(cache.saved, cache.inputs[1:], strict=True):
        np.testing.assert_array_equal(saved, next_input)
    np.testing.assert_allclose(jnp.sum(probs, axis=1), 1.0, rtol=1e-14)
    _, cache = manual.forward(params, x, activation="sigmoid")
    np.testing.assert_array_equal(cache.saved[0], cache.inputs[1])  # sigmoid keeps a


def test_manual_backprop_jits():
    params, x, labels = _net(3, (4, 8, 3), 10)
    eager = manual.backprop(params, x, labels, activation="tanh")
    jitted = jax.jit(manual.backprop, static_argnames="activation")(
        params, x, labels, activation="tanh"
    )
    assert _max_rel(jitted, eager) <= 1e-14


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_hessian_of_two_layer_loss_through_rev_equals_ref(activation):
    params, x, labels = _net(4, (3, 4, 3), 6)
    h_rev, h_ref, h_fwd = jax.jit(
        lambda *a: [jax.hessian(_loss(ns, activation))(*a) for ns in (rev, ref, fwd)]
    )(params, x, labels)
    assert _max_rel(h_rev, h_ref) <= 1e-10
    assert _max_rel(h_fwd, h_ref) <= 1e-10


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_manual_backprop_matches_pytorch_autograd(activation):
    torch = pytest.importorskip("torch")
    params, x, labels = _net(5, (4, 3, 2) if activation == "sigmoid" else (4, 8, 3), 5)
    loss, grads = manual.backprop(params, x, labels, activation=activation)

    t_params = [
        (
            torch.tensor(np.asarray(W), dtype=torch.float64, requires_grad=True),
            torch.tensor(np.asarray(b), dtype=torch.float64, requires_grad=True),
        )
        for W, b in params
    ]
    a = torch.tensor(np.asarray(x), dtype=torch.float64)
    act = getattr(torch, activation)
    for W, b in t_params[:-1]:
        a = act(a @ W + b)
    W, b = t_params[-1]
    t_loss = torch.nn.functional.cross_entropy(
        a @ W + b, torch.tensor(np.asarray(labels), dtype=torch.long)
    )
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-13)
    for (gW, gb), (W, b) in zip(grads, t_params, strict=True):
        np.testing.assert_allclose(gW, W.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-10, atol=1e-14)
