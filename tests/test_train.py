"""Training loop: determinism, divergence detection, clipping, and the depth claims on digits."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import data, models, train


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_data_split_is_fixed_and_shaped_like_digits(digits):
    assert digits.name == "digits" and digits.classes == 10
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert float(digits.x_train.max()) == 1.0 and float(digits.x_train.min()) == 0.0
    again = data.digits()
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    fake = data.synthetic()
    assert fake.name == "synthetic" and fake.x_train.shape == digits.x_train.shape


def test_same_seed_same_run_different_seed_different_run(digits):
    model = models.MLP(depth=3, width=16)
    a = train.train(model, digits, steps=30, eval_every=10, seed=1)
    b = train.train(model, digits, steps=30, eval_every=10, seed=1)
    c = train.train(model, digits, steps=30, eval_every=10, seed=2)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert not np.array_equal(a.loss, c.loss)
    assert a.layer_norms.shape == (30, 4) and a.update_ratio.shape == (30, 4)
    assert a.eval_steps == [10, 20, 30]


def test_divergence_is_detected_and_clipping_prevents_it(digits):
    model = models.MLP(arch="plain", depth=8, activation="relu", gain=2.0)
    kwargs = dict(steps=100, optimizer="sgd", learning_rate=0.05, eval_every=25)
    h = train.train(model, digits, **kwargs)
    assert h.diverged_at is not None and h.diverged_at < 25
    assert h.nonfinite_layer is not None and h.nonfinite_layer.startswith("layer")
    assert len(h.loss) == 25  # stopped after the chunk in which it diverged
    clipped = train.train(model, digits, clip_norm=1.0, **kwargs)
    assert clipped.diverged_at is None and np.all(np.isfinite(clipped.loss))
    assert clipped.final_test_acc > 0.3


def test_bad_training_arguments(digits):
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        train.train(models.MLP(depth=2), digits, optimizer="lbfgs")
    with pytest.raises(ValueError, match="must be >= 1"):
        train.train(models.MLP(depth=2), digits, steps=0)


# The depth claims of issue 3, on the default budget: 600 Adam steps, batch 128, lr 3e-3.
SIGMOID = dict(activation="sigmoid", weight_init="xavier", width=64)
RELU = dict(activation="relu", weight_init="he", width=64)


# Depth 8 runs by default; the deeper runs (6 s each) with `make test-slow`.
@pytest.mark.parametrize(
    "depth", [8, pytest.param(32, marks=pytest.mark.slow), pytest.param(64, marks=pytest.mark.slow)]
)
def test_residual_sigmoid_trains_at_every_depth(digits, depth):
    h = train.train(models.MLP(arch="residual", depth=depth, **SIGMOID), digits)
    assert h.final_test_acc >= 0.95


@pytest.mark.slow  # 4 s; the depth-8 SGD run below and test_models' gradient norms cover it
def test_plain_sigmoid_stays_near_chance_once_deep(digits):
    h = train.train(models.MLP(arch="plain", depth=16, **SIGMOID), digits)
    assert h.final_test_acc <= 0.20


@pytest.mark.slow  # two 64-layer training runs, 8 s; `make test-slow`
def test_residual_relu_depth_64_trains_only_with_scaled_branches(digits):
    scaled = train.train(models.MLP(arch="residual", depth=64, **RELU), digits)
    assert scaled.final_test_acc >= 0.95
    unscaled = train.train(models.MLP(arch="residual", depth=64, branch_scale=1.0, **RELU), digits)
    assert unscaled.grad_norm[0] > 1e6 * scaled.grad_norm[0]
    assert unscaled.final_test_acc < 0.5 or unscaled.diverged_at is not None
    assert jnp.isfinite(scaled.final_loss)


def test_plain_sigmoid_depth_8_stays_at_chance_under_sgd_but_not_residual(digits):
    # Under Adam the plain depth-8 net still learns part of the task (Adam divides each
    # gradient by its own running scale, which undoes the uniform shrinking); plain SGD
    # shows the vanishing gradient undisguised.
    kwargs = dict(optimizer="sgd", learning_rate=0.5)
    plain = train.train(models.MLP(arch="plain", depth=8, **SIGMOID), digits, **kwargs)
    assert plain.final_test_acc <= 0.20
    residual = train.train(models.MLP(arch="residual", depth=8, **SIGMOID), digits, **kwargs)
    assert residual.final_test_acc >= 0.90
