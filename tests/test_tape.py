"""The teaching tape: gradients equal jax.grad; accumulation, zeroing and no_grad semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import ref, tape
from bpjax.tape import Var


def _close(a, b, tol=1e-12):
    np.testing.assert_allclose(a, b, rtol=tol, atol=1e-15)


def test_two_layer_net_matches_jax_grad():
    rng = np.random.default_rng(0)
    W1, b1 = rng.standard_normal((4, 8)), rng.standard_normal(8) * 0.1
    W2, b2 = rng.standard_normal((8, 3)), rng.standard_normal(3) * 0.1
    x, y = rng.standard_normal((5, 4)), jnp.array([0, 2, 1, 1, 0])
    params = [Var(p, requires_grad=True) for p in (W1, b1, W2, b2)]
    for act in ("sigmoid", "relu"):
        for p in params:
            p.zero_grad()
        h = getattr(tape, act)(tape.linear(x, params[0], params[1]))
        loss = tape.softmax_cross_entropy(tape.linear(h, params[2], params[3]), y)
        loss.backward()

        def f(W1, b1, W2, b2, act=act):
            h = getattr(ref, act)(ref.linear(x, W1, b1))
            return ref.softmax_cross_entropy(ref.linear(h, W2, b2), y)

        want_loss, want = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(W1, b1, W2, b2)
        _close(loss.value, want_loss)
        for p, w in zip(params, want, strict=True):
            _close(p.grad, w)


def test_fan_out_sums_the_paths():
    x = Var(jnp.array([0.3, -1.2, 2.0]), requires_grad=True)
    y = (x * x + tape.tanh(x) * x).sum()  # x is used three times
    y.backward()
    _close(x.grad, jax.grad(lambda v: jnp.sum(v * v + jnp.tanh(v) * v))(x.value))


def test_a_200_layer_chain_does_not_recurse():
    x = Var(jnp.linspace(-1.0, 1.0, 4), requires_grad=True)
    h = x
    for _ in range(200):
        h = tape.tanh(h) + 0.5 * h
    h.sum().backward()

    def f(v):
        for _ in range(200):
            v = jnp.tanh(v) + 0.5 * v
        return jnp.sum(v)

    _close(x.grad, jax.grad(f)(x.value))
    deep = x
    for _ in range(5000):
        deep = deep * 1.0
    deep.sum().backward()  # 5,000 nodes: far past Python's recursion limit of 1,000


def test_backward_twice_doubles_and_zero_grad_resets():
    x = Var(jnp.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    first = x.grad
    loss.backward()
    _close(x.grad, 2 * first)
    x.zero_grad()
    assert x.grad is None
    (x * x).sum().backward()
    _close(x.grad, first)


def test_no_grad_records_nothing():
    x = Var(jnp.array([1.0, 2.0]), requires_grad=True)
    with tape.no_grad():
        y = tape.tanh(x * 3.0)
    assert not y.requires_grad and y._parents == () and y._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    z = tape.tanh(x * 3.0)  # recording is back on after the block
    assert z.requires_grad and z.op == "tanh"


def test_integer_labels_and_constants_get_no_gradient():
    logits = Var(jnp.array([[1.0, 2.0, 0.5]]), requires_grad=True)
    loss = tape.softmax_cross_entropy(logits, jnp.array([1]))
    loss.backward()
    _close(logits.grad, jax.grad(ref.softmax_cross_entropy)(logits.value, jnp.array([1])))


def test_micro_batch_accumulation_equals_the_full_batch_gradient_in_float32():
    from bpjax import models, train

    model = models.MLP(depth=3, width=16, dtype=jnp.float32)
    key = jax.random.key(0)
    params = model.init(key, 8, 3)
    x = jax.random.normal(jax.random.fold_in(key, 1), (64, 8), jnp.float32)
    y = jax.random.randint(jax.random.fold_in(key, 2), (64,), 0, 3)
    full = jax.jit(jax.grad(model.loss))(params, x, y)
    acc = jax.jit(lambda *a: train.accumulated_grad(model.loss, *a, micro_batches=4))(params, x, y)
    for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(full), strict=True):
        assert a.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) <= 1e-6
    with pytest.raises(ValueError, match="does not split into 5"):
        train.accumulated_grad(model.loss, params, x, y, micro_batches=5)
