"""Run by tests/test_parallel.py in a subprocess with 4 simulated CPU devices; prints JSON."""

import dataclasses
import json

import jax

jax.config.update("jax_num_cpu_devices", 4)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bpjax import data, models, parallel, train  # noqa: E402


def same_on_every_device(tree):
    """Every device holds the same values: what "replicated" must mean. The sharding alone
    cannot fail (out_shardings fixes it), but a missing all-reduce leaves each device its own
    partial gradient under a sharding that still says "replicated"."""
    for leaf in jax.tree.leaves(tree):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        if len(shards) != 4 or any(not np.array_equal(s, shards[0]) for s in shards):
            return False
    return True


def rel(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


out = {"devices": jax.device_count()}
m = parallel.mesh(4)
x = jax.random.normal(jax.random.key(0), (32, 12), jnp.float32)
y = jnp.arange(32) % 5
for remat in ("none", "sqrt", "binomial"):
    model = models.MLP(arch="residual", depth=9, width=16, activation="tanh", checkpoint=remat)
    params = model.init(jax.random.key(1), 12, 5)
    single = jax.jit(jax.grad(model.loss))(params, x, y)
    for how in ("auto", "shard_map"):
        sharded = parallel.grad_fn(model.loss, m, how=how)(params, x, y)
        out[f"grad {remat} {how}"] = rel(sharded, single)
        out[f"grad {remat} {how} replicated"] = same_on_every_device(sharded)

model = models.MLP(arch="residual", depth=4, width=16, activation="relu")
params = model.init(jax.random.key(1), 12, 5)
want = jax.tree.map(lambda w, g: w - 0.1 * g, params, jax.grad(model.loss)(params, x, y))
step = parallel.sgd_step(model.loss, m, learning_rate=0.1)
placed = parallel.replicate(jax.tree.map(jnp.copy, params), m)  # donated by the step
new = step(placed, parallel.shard_batch(x, m), parallel.shard_batch(y, m))
out["sgd step"] = rel(new, want)
out["params replicated"] = same_on_every_device(new)
out["x sharded"] = str(parallel.shard_batch(x, m).sharding.spec)
# NumPy buffers written after placing them (a loader refilling its batch): float32, so no
# dtype conversion forces a copy and only bpjax's own copy keeps the placed arrays apart.
hosts = [np.zeros((32, 16), np.float32) for _ in range(100)]
placed_np = [(parallel.shard_batch(h, m), parallel.replicate(h, m)) for h in hosts]
for h in hosts:
    h[:] = 5.0
out["numpy aliased"] = sum(float(jnp.sum(a)) != 0 or float(jnp.sum(b)) != 0 for a, b in placed_np)
try:
    parallel.grad_fn(model.loss, m)(params, x[:30], y[:30])
    out["indivisible error"] = None
except ValueError as err:
    out["indivisible error"] = str(err)
try:
    step(placed, x[:30], y[:30])
    out["sgd indivisible error"] = None
except ValueError as err:
    out["sgd indivisible error"] = str(err)
try:
    parallel.mesh(8)
    out["too many devices error"] = None
except ValueError as err:
    out["too many devices error"] = str(err)

ds = data.digits()
cfg = models.MLP(arch="residual", depth=4, width=32, activation="relu")
h1 = train.train(cfg, ds, steps=20, batch_size=64, eval_every=20, seed=3)
h4 = train.train(cfg, ds, steps=20, batch_size=64, eval_every=20, seed=3, devices=4)
h4r = train.train(
    dataclasses.replace(cfg, checkpoint="sqrt"),
    ds,
    steps=20,
    batch_size=64,
    eval_every=20,
    seed=3,
    devices=4,
)
out["train loss diff"] = float(jnp.max(jnp.abs(jnp.asarray(h1.loss) - jnp.asarray(h4.loss))))
out["train loss diff remat"] = float(jnp.max(jnp.abs(jnp.asarray(h1.loss) - jnp.asarray(h4r.loss))))
out["train test acc"] = [h1.test_acc[-1], h4.test_acc[-1], h4r.test_acc[-1]]
print(json.dumps(out))
