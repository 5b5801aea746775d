"""bpjax.steps: a donated SGD step that XLA updates in place, with no weight copies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bpjax import bench, measure, models, parallel, rev, steps

SIZES, BATCH = (1024,) * 9 + (10,), 512  # the benchmark's "8 × 1024 b512"


def rev_grad(p, x, y):
    return jax.grad(models.layers_loss)(p, x, y, ops=rev, activation="relu")


def plain_sgd(p, x, y):
    return jax.tree.map(lambda w, g: w - 0.1 * g, p, rev_grad(p, x, y))


@pytest.fixture(scope="module")
def big_problem():
    # Shapes only: lowering and compiling never runs the step.
    params = [
        (jax.ShapeDtypeStruct((i, o), jnp.float32), jax.ShapeDtypeStruct((o,), jnp.float32))
        for i, o in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    x = jax.ShapeDtypeStruct((BATCH, SIZES[0]), jnp.float32)
    y = jax.ShapeDtypeStruct((BATCH,), jnp.int32)
    return params, x, y


def weight_copies(fn, params, x, y, **jit_options):
    compiled = jax.jit(fn, donate_argnums=0, **jit_options).lower(params, x, y).compile()
    shapes = {f"f32[{','.join(map(str, a.shape))}]" for a in jax.tree.leaves(params)}
    return [s for s in measure.copies(compiled) if s in shapes]


def test_the_donated_rev_step_at_8x1024_copies_no_weight(big_problem):
    assert weight_copies(steps.sgd_step(rev_grad, learning_rate=0.1), *big_problem) == []


def test_a_plain_donated_update_does_copy_the_weights_the_backward_pass_reads(big_problem):
    # The defect the module fixes, so the test above cannot pass by XLA never copying: every
    # hidden weight and the output weight (read again for δ W_lᵀ) is copied; the first
    # layer's is not (no input gradient is computed).
    copies = weight_copies(plain_sgd, *big_problem)
    assert sorted(copies) == sorted(["f32[1024,1024]"] * 7 + ["f32[1024,10]"])


def test_the_benchmark_builds_its_donated_steps_without_weight_copies():
    params, x, y = bench.problem((12, 16, 16, 16, 5), 8)
    for name, grad_fn in bench.grad_fns().items():
        step = steps.sgd_step(grad_fn, learning_rate=bench.LR)
        assert weight_copies(step, params, x, y) == [], name


def test_parallel_sgd_step_copies_no_weight():
    m = parallel.mesh(1)
    params = models.init_layers(jax.random.key(0), (12, 32, 32, 32, 5))
    x, y = jnp.ones((16, 12), jnp.float32), jnp.arange(16) % 5
    step = parallel.sgd_step(lambda p, x, y: models.layers_loss(p, x, y), m, learning_rate=0.1)
    shapes = {f"f32[{','.join(map(str, a.shape))}]" for a in jax.tree.leaves(params)}
    copies = measure.copies(step.lower(params, x, y).compile())
    assert [s for s in copies if s in shapes] == []


def test_sgd_equals_the_plain_update_for_layers_and_for_any_tree():
    params, x, y = bench.problem((6, 8, 8, 3), 16)
    grads = rev_grad(params, x, y)
    want = jax.tree.map(lambda w, g: w - 0.1 * g, params, grads)
    for got in (
        jax.jit(steps.sgd, static_argnames="learning_rate")(params, grads, learning_rate=0.1),
        steps.sgd({"layers": params}, {"layers": grads}, learning_rate=0.1)["layers"],
        steps.sgd_step(rev_grad, learning_rate=0.1)(params, x, y),
    ):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)


def test_apply_updates_matches_optax_and_keeps_dtypes():
    params = {"w": jnp.ones((3, 2), jnp.bfloat16), "n": jnp.arange(3)}
    updates = {"w": jnp.full((3, 2), 0.25, jnp.float32), "n": jnp.ones(3, jnp.int32)}
    got, want = steps.apply_updates(params, updates), optax.apply_updates(params, updates)
    for key in params:
        assert got[key].dtype == want[key].dtype == params[key].dtype
        np.testing.assert_array_equal(got[key], want[key])


def test_after_leaves_values_alone_even_when_a_dependency_is_not_finite():
    tree = {"a": jnp.array([1.0, -2.0]), "i": jnp.array([3])}
    out = steps.after(tree, [jnp.array([jnp.nan]), jnp.array([jnp.inf, 1.0]), jnp.zeros(0)])
    np.testing.assert_array_equal(out["a"], tree["a"])
    np.testing.assert_array_equal(out["i"], tree["i"])
