"""A jit-compiled optax training loop that records what the experiments plot.

Steps run in chunks of ``eval_every`` inside one ``lax.scan`` (one compilation, no Python
per step); between chunks the loop evaluates, reports progress, and stops early if the loss
went non-finite. Minibatches are drawn with ``jax.random.fold_in(key, step)``, so a run is
a deterministic function of ``seed``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bpjax import _validate, grads, parallel, rev
from bpjax.data import Dataset
from bpjax.models import MLP

OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}


@dataclasses.dataclass
class History:
    """What a run recorded.

    Attributes:
      loss: ``(steps_run,)`` minibatch loss per step.
      grad_norm: ``(steps_run,)`` global gradient norm per step, before clipping.
      layer_norms: ``(steps_run, depth + 1)`` per-layer weight-gradient norms, input first.
      update_ratio: ``(steps_run, depth + 1)`` per-layer ‖update‖ / ‖W‖.
      eval_steps: steps at which accuracy was measured (after that many steps).
      train_acc, test_acc, test_loss: full-set figures at ``eval_steps``.
      diverged_at: first step whose loss was NaN/Inf, else None.
      nonfinite_layer: the first layer (from the input) whose gradient was non-finite then.
      seconds: wall time including compilation.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    layer_norms: np.ndarray
    update_ratio: np.ndarray
    eval_steps: list[int]
    train_acc: list[float]
    test_acc: list[float]
    test_loss: list[float]
    diverged_at: int | None
    nonfinite_layer: str | None
    seconds: float

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    @property
    def final_loss(self) -> float:
        """Mean minibatch loss over the last 20 steps run (NaN if diverged)."""
        return float(np.mean(self.loss[-20:])) if len(self.loss) else float("nan")


def make_optimizer(name: str, learning_rate: float, *, clip_norm=None, clip_value=None):
    """``optax`` optimizer ``name`` preceded by bpjax's hand-written clipping if asked."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    tx = OPTIMIZERS[name](learning_rate)
    if clip_norm is None and clip_value is None:
        return tx
    return optax.chain(grads.clipping(max_norm=clip_norm, max_value=clip_value), tx)


def train(
    model: MLP,
    data: Dataset,
    *,
    steps: int = 600,
    batch_size: int = 128,
    optimizer: str = "adam",
    learning_rate: float = 3e-3,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    seed: int = 0,
    ops=rev,
    eval_every: int = 50,
    progress: bool = False,
    label: str = "",
    devices: int | None = None,
) -> History:
    """Train ``model`` on ``data`` with minibatch ``optimizer`` steps.

    Args:
      model: an :class:`~bpjax.models.MLP` config.
      data: a :class:`~bpjax.data.Dataset`.
      steps: optimizer steps (the budget).
      batch_size: rows per minibatch, drawn with replacement each step.
      optimizer: ``"adam"`` or ``"sgd"``.
      learning_rate: step size.
      clip_norm, clip_value: hand-written clipping before the optimizer (None: off).
      seed: initialises the parameters and draws the minibatches.
      ops: rule namespace that differentiates the model.
      eval_every: steps per compiled chunk; accuracy is measured after each chunk.
      progress: print a progress line per chunk to stderr.
      label: name shown in the progress line.
      devices: data parallel over this many devices (:mod:`bpjax.parallel`): each minibatch
        is split over a 1-D mesh, parameters and optimizer state stay replicated, and the
        compiler inserts the gradient all-reduce. ``None``: one device. ``batch_size`` must
        divide evenly.

    Returns:
      A :class:`History`. Training stops at the end of the chunk in which the loss first
      became non-finite.
    """
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError("train: steps, batch_size and eval_every must be >= 1")
    for split in ("train", "test"):
        # Out-of-range ids would make the loss NaN at step 0 (see bpjax.rules.losses): say so
        # before compiling anything, naming the rows.
        _validate.check_label_range(
            f"train: data.y_{split}", np.asarray(getattr(data, f"y_{split}")), data.classes
        )
    start = time.perf_counter()
    mesh = None
    if devices is not None:
        mesh = parallel.mesh(devices)
        parallel.check_batch(batch_size, mesh, "train")
    key_init, key_data = jax.random.split(jax.random.key(seed))
    params = model.init(key_init, data.x_train.shape[1], data.classes)
    tx = make_optimizer(optimizer, learning_rate, clip_norm=clip_norm, clip_value=clip_value)
    opt_state = tx.init(params)
    if mesh is not None:
        params, opt_state = parallel.replicate((params, opt_state), mesh)
        fields = ("x_train", "y_train", "x_test", "y_test")
        arrays = parallel.replicate(tuple(getattr(data, f) for f in fields), mesh)
        data = data._replace(**dict(zip(fields, arrays, strict=True)))
    n_train = data.x_train.shape[0]

    def one_step(carry, step):
        params, opt_state = carry
        idx = jax.random.randint(jax.random.fold_in(key_data, step), (batch_size,), 0, n_train)
        xb, yb = data.x_train[idx], data.y_train[idx]
        if mesh is not None:
            xb, yb = jax.lax.with_sharding_constraint((xb, yb), parallel.batch_sharding(mesh))
        loss, g = jax.value_and_grad(model.loss)(params, xb, yb, ops=ops)
        updates, opt_state = tx.update(g, opt_state, params)
        record = (
            loss,
            grads.global_norm(g),
            grads.layer_norms(g),
            grads.update_ratios(updates, params),
        )
        return (optax.apply_updates(params, updates), opt_state), record

    @jax.jit
    def chunk(params, opt_state, first_step):
        steps_in_chunk = first_step + jnp.arange(eval_every)
        return jax.lax.scan(one_step, (params, opt_state), steps_in_chunk)

    @jax.jit
    def evaluate(params):
        logits_train = model.apply(params, data.x_train, ops=ops)
        logits_test = model.apply(params, data.x_test, ops=ops)
        return (
            jnp.mean(jnp.argmax(logits_train, -1) == data.y_train),
            jnp.mean(jnp.argmax(logits_test, -1) == data.y_test),
            ops.softmax_cross_entropy(logits_test, data.y_test),
        )

    records, eval_steps, train_acc, test_acc, test_loss = [], [], [], [], []
    diverged_at, bad_layer = None, None
    done = 0
    while done < steps:
        (params, opt_state), rec = chunk(params, opt_state, done)
        rec = jax.tree.map(np.asarray, rec)
        take = min(eval_every, steps - done)
        records.append(jax.tree.map(lambda a, take=take: a[:take], rec))
        done += take
        losses = records[-1][0]
        if not np.all(np.isfinite(losses)):
            first = int(np.argmin(np.isfinite(losses)))
            diverged_at = done - take + first
            norms = records[-1][2][first]
            bad = ~np.isfinite(norms)
            if bad.any():
                bad_layer = grads.layer_names(model.depth)[int(np.argmax(bad))]
            break
        tr, te, tl = (float(v) for v in evaluate(params))
        eval_steps.append(done)
        train_acc.append(tr)
        test_acc.append(te)
        test_loss.append(tl)
        if progress:
            print(
                f"\r{label} step {done:>5}/{steps}  loss {losses[-1]:.4f}  test acc {te:.3f}",
                end="" if done < steps else "\n",
                file=sys.stderr,
                flush=True,
            )
    if progress and diverged_at is not None:
        print(f"\n{label} diverged at step {diverged_at} ({bad_layer})", file=sys.stderr)
    loss, gnorm, lnorms, ratios = (np.concatenate(parts) for parts in zip(*records, strict=True))
    return History(
        loss=loss,
        grad_norm=gnorm,
        layer_norms=lnorms,
        update_ratio=ratios,
        eval_steps=eval_steps,
        train_acc=train_acc,
        test_acc=test_acc,
        test_loss=test_loss,
        diverged_at=diverged_at,
        nonfinite_layer=bad_layer,
        seconds=time.perf_counter() - start,
    )


def accumulated_grad(loss_fn, params, x, y, *, micro_batches: int):
    """Gradient of the mean loss, accumulated over ``micro_batches`` equal slices of the batch.

    The functional version of PyTorch's accumulate-then-step: gradients are returned and
    summed as values under ``lax.scan`` (one micro-batch in memory at a time), so there is no
    ``.grad`` to zero. Equals ``jax.grad(loss_fn)(params, x, y)`` for a mean loss.

    Args:
      loss_fn: ``loss_fn(params, x, y) -> scalar`` averaging over rows.
      x: ``(batch, ...)``; y: ``(batch, ...)``; ``batch`` divisible by ``micro_batches``.
    """
    batch = x.shape[0]
    if micro_batches < 1 or batch % micro_batches:
        raise ValueError(
            f"accumulated_grad: batch of {batch} rows does not split into {micro_batches} "
            "equal micro-batches"
        )

    def split(a):
        return a.reshape(micro_batches, batch // micro_batches, *a.shape[1:])

    def add(total, part):
        g = jax.grad(loss_fn)(params, *part)
        return jax.tree.map(jnp.add, total, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    summed, _ = jax.lax.scan(add, zeros, (split(x), split(y)))
    return jax.tree.map(lambda g: g / micro_batches, summed)
