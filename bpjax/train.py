"""A jit-compiled optax training loop that records what the experiments plot.

Steps run in chunks of ``eval_every`` inside one ``lax.scan`` (one compilation, no Python
per step); between chunks the loop evaluates, reports progress, and stops early if the loss
went non-finite. Minibatches are drawn with ``jax.random.fold_in(key, step)``, so a run is
a deterministic function of ``seed``. :func:`make_step` and :func:`run_chunks` are the step
and the loop; :func:`bpjax.nnx.train` runs the same ones on an NNX module.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bpjax import _validate, grads, parallel, rev, steps
from bpjax.data import Dataset
from bpjax.models import MLP, namespace

__all__ = [
    "train",
    "History",
    "make_optimizer",
    "minibatch",
    "make_step",
    "run_chunks",
    "check_labels",
    "accumulated_grad",
]

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
        """Test accuracy at the last evaluation (NaN if the run stopped before any)."""
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


def minibatch(data: Dataset, key, step, batch_size: int):
    """The minibatch of ``step``: ``batch_size`` training rows drawn with replacement with
    ``fold_in(key, step)``, so a run is a deterministic function of its seed."""
    n_train = data.x_train.shape[0]
    idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, n_train)
    return data.x_train[idx], data.y_train[idx]


def make_step(loss_fn, tx, data: Dataset, key, batch_size: int, *, mesh=None, record=None):
    """One optimizer step as a ``lax.scan`` body: ``((params, opt_state), step) -> (new, rec)``.

    The one training step every loop here runs (:func:`train` and
    :func:`bpjax.nnx.train`): draw :func:`minibatch`, ``value_and_grad`` of
    ``loss_fn(params, x, y)``, ``tx.update``, :func:`bpjax.steps.apply_updates` (in place,
    no weight copies). ``record(loss, grads, updates, params)`` says what to keep per step
    (default: the loss); ``mesh`` splits each minibatch over a data-parallel mesh.
    """

    def step_fn(carry, step):
        params, opt_state = carry
        xb, yb = minibatch(data, key, step, batch_size)
        if mesh is not None:
            xb, yb = jax.lax.with_sharding_constraint((xb, yb), parallel.batch_sharding(mesh))
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(g, opt_state, params)
        rec = loss if record is None else record(loss, g, updates, params)
        return (steps.apply_updates(params, updates), opt_state), rec

    return step_fn


def run_chunks(step_fn, carry, *, steps: int, eval_every: int, after_chunk):
    """Run ``steps`` steps in compiled chunks of ``eval_every`` (one ``lax.scan`` each).

    ``after_chunk(carry, records, done)`` runs on the host after each chunk with that chunk's
    records (as NumPy, trimmed to the steps that count) and returns False to stop early.
    Returns the final carry and the list of per-chunk records.
    """

    # The carry is donated and the update ordered after the backward pass's reads
    # (bpjax.steps), so XLA updates parameters and optimizer state in place, without copies.
    @functools.partial(jax.jit, donate_argnums=0)
    def chunk(carry, first_step):
        return jax.lax.scan(step_fn, carry, first_step + jnp.arange(eval_every))

    chunks, done = [], 0
    while done < steps:
        carry, rec = chunk(carry, done)
        take = min(eval_every, steps - done)
        chunks.append(jax.tree.map(lambda a, take=take: np.asarray(a)[:take], rec))
        done += take
        if not after_chunk(carry, chunks[-1], done):
            break
    return carry, chunks


def check_labels(data: Dataset) -> None:
    """Raise a ValueError naming the rows of ``data`` whose class id is outside
    ``[0, data.classes)``."""
    for split in ("train", "test"):
        # Out-of-range ids would make the loss NaN at step 0 (see bpjax.rules.losses): say so
        # before compiling anything, naming the rows.
        _validate.check_label_range(
            f"train: data.y_{split}", np.asarray(getattr(data, f"y_{split}")), data.classes
        )


def _setup(model, data, tx, *, seed, devices, batch_size):
    """Initial (params, opt_state), the data key, and the mesh (data placed on it)."""
    mesh = None
    if devices is not None:
        mesh = parallel.mesh(devices)
        parallel.check_batch(batch_size, mesh, "train")
    key_init, key_data = jax.random.split(jax.random.key(seed))
    params = model.init(key_init, data.x_train.shape[1], data.classes)
    opt_state = tx.init(params)
    if mesh is not None:
        params, opt_state = parallel.replicate((params, opt_state), mesh)
        fields = ("x_train", "y_train", "x_test", "y_test")
        arrays = parallel.replicate(tuple(getattr(data, f) for f in fields), mesh)
        data = data._replace(**dict(zip(fields, arrays, strict=True)))
    return mesh, key_data, (params, opt_state), data


def _evaluator(model, data, ops):
    @jax.jit
    def evaluate(params):
        logits_train = model.apply(params, data.x_train, ops=ops)
        logits_test = model.apply(params, data.x_test, ops=ops)
        return (
            jnp.mean(jnp.argmax(logits_train, -1) == data.y_train),
            jnp.mean(jnp.argmax(logits_test, -1) == data.y_test),
            ops.softmax_cross_entropy(logits_test, data.y_test),
        )

    return evaluate


def _record(loss, g, updates, params):
    return (loss, grads.global_norm(g), grads.layer_norms(g), grads.update_ratios(updates, params))


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
      data: a :class:`~bpjax.data.Dataset`; its labels must lie in ``[0, data.classes)``.
      steps: optimizer steps (the budget).
      batch_size: rows per minibatch, drawn with replacement each step (:func:`minibatch`).
      optimizer: ``"adam"`` or ``"sgd"``.
      learning_rate: step size.
      clip_norm: clip the gradient by global norm before the optimizer (None: off).
      clip_value: clip each gradient element to ``[-clip_value, clip_value]`` before the
        optimizer (None: off); applied before ``clip_norm`` when both are set.
      seed: initialises the parameters and draws the minibatches.
      ops: rule namespace that differentiates the model (``bpjax.rev`` or its name).
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
    ops = namespace(ops)
    check_labels(data)
    start = time.perf_counter()
    tx = make_optimizer(optimizer, learning_rate, clip_norm=clip_norm, clip_value=clip_value)
    mesh, key, carry, data = _setup(
        model, data, tx, seed=seed, devices=devices, batch_size=batch_size
    )

    def loss_fn(params, x, y):
        return model.loss(params, x, y, ops=ops)

    step_fn = make_step(loss_fn, tx, data, key, batch_size, mesh=mesh, record=_record)
    monitor = _Monitor(model, _evaluator(model, data, ops), steps, progress, label)
    _, chunks = run_chunks(
        step_fn, carry, steps=steps, eval_every=eval_every, after_chunk=monitor.after_chunk
    )
    return monitor.history(chunks, seconds=time.perf_counter() - start)


class _Monitor:
    """What :func:`train` does between chunks: detect divergence, evaluate, report."""

    def __init__(self, model, evaluate, steps, progress, label):
        self.model, self.evaluate, self.steps = model, evaluate, steps
        self.progress, self.label = progress, label
        self.evaluations = {"eval_steps": [], "train_acc": [], "test_acc": [], "test_loss": []}
        self.diverged_at, self.bad_layer = None, None

    def history(self, chunks, *, seconds: float) -> History:
        loss, gnorm, lnorms, ratios = (np.concatenate(p) for p in zip(*chunks, strict=True))
        return History(
            loss=loss,
            grad_norm=gnorm,
            layer_norms=lnorms,
            update_ratio=ratios,
            **self.evaluations,
            diverged_at=self.diverged_at,
            nonfinite_layer=self.bad_layer,
            seconds=seconds,
        )

    def after_chunk(self, carry, records, done) -> bool:
        losses = records[0]
        if not np.all(np.isfinite(losses)):
            first = int(np.argmin(np.isfinite(losses)))
            self.diverged_at = done - len(losses) + first
            bad = ~np.isfinite(records[2][first])
            if bad.any():
                self.bad_layer = grads.layer_names(self.model.depth)[int(np.argmax(bad))]
            if self.progress:
                print(
                    f"\n{self.label} diverged at step {self.diverged_at} ({self.bad_layer})",
                    file=sys.stderr,
                )
            return False
        values = (done, *(float(v) for v in self.evaluate(carry[0])))
        for key, value in zip(self.evaluations, values, strict=True):
            self.evaluations[key].append(value)
        if self.progress:
            print(
                f"\r{self.label} step {done:>5}/{self.steps}  loss {losses[-1]:.4f}  "
                f"test acc {values[2]:.3f}",
                end="" if done < self.steps else "\n",
                file=sys.stderr,
                flush=True,
            )
        return True


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
