"""Data parallel on 4 simulated CPU devices (a subprocess: the device count is set at start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "parallel_check.py"


@pytest.fixture(scope="module")
def report():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], check=True, capture_output=True, text=True, timeout=600
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_are_simulated(report):
    assert report["devices"] == 4


@pytest.mark.parametrize("remat", ["none", "sqrt", "binomial"])
@pytest.mark.parametrize("how", ["auto", "shard_map"])
def test_sharded_gradients_equal_single_device_ones(report, remat, how):
    assert report[f"grad {remat} {how}"] <= 1e-6
    assert report[f"grad {remat} {how} replicated"]


def test_an_sgd_step_keeps_params_replicated_and_matches_one_device(report):
    assert report["sgd step"] <= 1e-6
    assert report["params replicated"]
    assert report["x sharded"] == "P('batch',)"
    assert report["numpy aliased"] == 0  # a later write to a NumPy batch never shows


def test_bad_batches_and_meshes_get_clear_errors(report):
    assert "30 rows does not split evenly over 4 devices" in report["indivisible error"]
    assert "(e.g. 28 or 32)" in report["indivisible error"]
    assert "parallel.sgd_step: a batch of 30 rows" in report["sgd indivisible error"]
    assert "jax_num_cpu_devices" in report["too many devices error"]


def test_training_on_four_devices_follows_the_one_device_run(report):
    assert report["train loss diff"] <= 1e-5
    assert report["train loss diff remat"] <= 1e-5
    one, four, four_remat = report["train test acc"]
    assert abs(one - four) <= 0.01 and abs(one - four_remat) <= 0.01


# --- Bad arguments (one device is enough; checked before anything is placed) --------------


def _one_device_problem():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bpjax import models, parallel

    m = parallel.mesh(np.int64(1))  # a NumPy count is a count
    params = models.init_layers(jax.random.key(0), [3, 2])
    return parallel, m, params, jnp.ones((8, 3)), jnp.zeros(8, jnp.int32)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, m, *_: p.mesh(True), ValueError, "devices must be a positive int, got True"),
        (
            lambda p, m, *_: p.shard_batch(
                {"x": __import__("jax").numpy.ones((8, 2)), "lr": 0.1}, m
            ),
            ValueError,
            r"leaf at \['lr'\] \(float, shape \(\)\) has no leading batch axis",
        ),
        (lambda p, m, w, x, y: p.shard_batch(x, None), TypeError, "must be a jax.sharding.Mesh"),
        (lambda p, m, w, x, y: p.shard_batch(m, x), TypeError, "must be a jax.sharding.Mesh"),
        (lambda p, m, w, x, y: p.replicate(w, 4), TypeError, "must be a jax.sharding.Mesh"),
        (lambda p, m, w, x, y: p.shard_batch(x[:0], m), ValueError, "the batch is empty"),
    ],
)
def test_bad_placements_name_the_argument(call, error, match):
    parallel, m, params, x, y = _one_device_problem()
    with pytest.raises(error, match=match):
        call(parallel, m, params, x, y)


def test_steps_refuse_rows_that_differ_empty_batches_and_bad_learning_rates():
    from bpjax import models

    parallel, m, params, x, y = _one_device_problem()
    grad = parallel.grad_fn(models.layers_loss, m)
    with pytest.raises(ValueError, match="x has 8 rows and y 6"):
        grad(params, x, y[:6])
    with pytest.raises(ValueError, match="the batch is empty"):
        grad(params, x[:0], y[:0])
    for lr, error in [("0.1", TypeError), (True, TypeError), (float("nan"), ValueError)]:
        with pytest.raises(error, match="learning_rate must be"):
            parallel.sgd_step(models.layers_loss, m, learning_rate=lr)
