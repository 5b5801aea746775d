"""Data parallelism on JAX's own sharding: a 1-D device mesh over the batch axis.

Nothing here is home-made: a :class:`jax.sharding.Mesh` with one axis (``"batch"``), inputs
placed with ``NamedSharding(mesh, P("batch"))``, parameters with ``NamedSharding(mesh, P())``
(replicated). Two equivalent ways to get the averaged gradient:

* ``how="auto"``: ``jax.jit`` the plain gradient of the mean loss with those shardings; the
  compiler (GSPMD) splits the batch and inserts the all-reduce that sums the partial gradients.
* ``how="shard_map"``: ``jax.shard_map`` runs the per-device gradient of the local mean loss
  and ``lax.pmean`` averages it over the ``"batch"`` axis, spelled out. It runs with
  ``check_vma=False``: with JAX's varying-axis types on, autodiff would already sum the
  gradients of replicated weights over devices (pmean would then return n times the mean),
  and a ``custom_vjp`` rule's per-device weight cotangent is rejected as "varying" where the
  weight is replicated. Without the types, each device keeps its own gradient until pmean.

Both give the single-device gradient (up to float summation order) when the batch splits into
equal shards, which :func:`check_batch` enforces. Any :mod:`bpjax.remat` strategy composes
with either (remat is inside the per-device computation).

On CPU, simulate devices with ``jax.config.update("jax_num_cpu_devices", n)`` (or
``XLA_FLAGS=--xla_force_host_platform_device_count=n``) before JAX first runs anything.

Several hosts: call ``jax.distributed.initialize()`` first on every host; ``jax.devices()``
then lists every host's devices and the same mesh spans them. What changes is the input:
each host holds only its slice of the global batch and builds the global array with
``jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows)``. The step
functions below do not change.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bpjax import _validate, steps

__all__ = [
    "batch_sharding",
    "check_batch",
    "grad_fn",
    "mesh",
    "replicate",
    "replicated",
    "sgd_step",
    "shard_batch",
]

AXIS = "batch"


def mesh(devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over the first ``devices`` devices (default: all)."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not _validate.is_int(n) or n < 1:  # np.int64(2) is a count, True is not
        raise ValueError(f"parallel.mesh: devices must be a positive int, got {devices!r}")
    if n > len(available):
        raise ValueError(
            f"parallel.mesh: asked for {n} devices but JAX sees {len(available)} "
            f"({available[0].platform}); on CPU call "
            f'jax.config.update("jax_num_cpu_devices", {n}) before JAX first runs'
        )
    return Mesh(np.asarray(available[: int(n)]), (AXIS,))


def batch_sharding(m: Mesh) -> NamedSharding:
    """Rows split over the ``"batch"`` axis."""
    return NamedSharding(m, P(AXIS))


def replicated(m: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(m, P())


def _check_mesh(m, where: str) -> None:
    if not isinstance(m, Mesh):
        raise TypeError(
            f"{where}: the mesh must be a jax.sharding.Mesh (from parallel.mesh(devices)), "
            f"got {type(m).__name__}; call it as {where}(tree, mesh)"
        )


def check_batch(batch: int, m: Mesh, where: str = "parallel") -> None:
    """Raise unless ``batch`` rows split into equal shards over the mesh (and are not none)."""
    n = m.devices.size
    if batch == 0:
        raise ValueError(f"{where}: the batch is empty (0 rows); a mean over no rows is NaN")
    if batch % n:
        lower = batch - batch % n
        suggestion = f"{lower} or {lower + n}" if lower else f"{n}"
        raise ValueError(
            f"{where}: a batch of {batch} rows does not split evenly over {n} devices; "
            f"use a multiple of {n} (e.g. {suggestion})"
        )


def shard_batch(tree, m: Mesh):
    """Place arrays with a leading batch axis split over the mesh (checked to divide);
    NumPy arrays are copied (:func:`bpjax._validate.host_copy`), never aliased."""
    _check_mesh(m, "shard_batch")
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not hasattr(leaf, "shape") or np.ndim(leaf) == 0:
            raise ValueError(
                f"shard_batch: the leaf at {jax.tree_util.keystr(path) or 'the root'} "
                f"({type(leaf).__name__}, shape {np.shape(leaf)}) has no leading batch axis "
                "to split; pass arrays only, and place scalars and parameters with replicate"
            )
        check_batch(np.shape(leaf)[0], m, "shard_batch")
    return jax.device_put(jax.tree.map(_validate.host_copy, tree), batch_sharding(m))


def replicate(tree, m: Mesh):
    """Place a pytree (parameters, optimizer state) on every device of the mesh; NumPy
    arrays are copied (:func:`bpjax._validate.host_copy`), never aliased."""
    _check_mesh(m, "replicate")
    return jax.device_put(jax.tree.map(_validate.host_copy, tree), replicated(m))


def _averaged_grad(loss_fn: Callable, m: Mesh, how: str, where: str) -> Callable:
    """The gradient of a mean loss over the whole batch, to be jitted with the mesh shardings."""
    if how == "auto":
        return jax.grad(loss_fn)
    if how == "shard_map":
        return jax.shard_map(
            lambda p, x, y: lax.pmean(jax.grad(loss_fn)(p, x, y), AXIS),
            mesh=m,
            in_specs=(P(), P(AXIS), P(AXIS)),
            out_specs=P(),
            check_vma=False,
        )
    raise ValueError(f"{where}: how must be 'auto' or 'shard_map', got {how!r}")


def _check_rows(x, y, m, where):
    rows_x, rows_y = np.shape(x)[:1], np.shape(y)[:1]
    if rows_x != rows_y:
        raise ValueError(
            f"{where}: x has {rows_x[0] if rows_x else 'no'} rows and y "
            f"{rows_y[0] if rows_y else 'no'}; both need the same leading batch axis"
        )
    check_batch(rows_x[0], m, where)


def grad_fn(loss_fn: Callable, m: Mesh, *, how: str = "auto") -> Callable:
    """``(params, x, y) -> grads`` of a mean loss, data parallel over ``m``; grads replicated.

    Args:
      loss_fn: ``loss_fn(params, x, y) -> scalar``, a mean over rows.
      m: from :func:`mesh`.
      how: ``"auto"`` (compiler-inserted reduction) or ``"shard_map"`` (explicit ``pmean``).
    """
    rep, rows = replicated(m), batch_sharding(m)
    jitted = jax.jit(
        _averaged_grad(loss_fn, m, how, "parallel.grad_fn"),
        in_shardings=(rep, rows, rows),
        out_shardings=rep,
    )

    def run(params, x, y):
        _check_rows(x, y, m, "parallel.grad_fn")
        return jitted(params, x, y)

    return run


def sgd_step(loss_fn: Callable, m: Mesh, *, learning_rate: float, how: str = "auto"):
    """A jitted data-parallel SGD step ``params -> params - lr * grad`` (params stay replicated).

    The parameters are donated, as in a training loop, and updated in place:
    :func:`bpjax.steps.sgd` orders each update after the backward pass's reads of that
    parameter, so XLA needs no copy of the weights. A batch that does not split evenly over
    the mesh is refused before anything runs (as :func:`grad_fn` does).
    """
    rep, rows = replicated(m), batch_sharding(m)
    step = steps.sgd_step(
        _averaged_grad(loss_fn, m, how, "parallel.sgd_step"), learning_rate=learning_rate
    )
    jitted = jax.jit(step, in_shardings=(rep, rows, rows), out_shardings=rep, donate_argnums=(0,))

    def run(params, x, y):
        _check_rows(x, y, m, "parallel.sgd_step")
        return jitted(params, x, y)

    run.lower = jitted.lower  # as on the jitted step: step.lower(...).compile()
    return run
