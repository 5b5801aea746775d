"""First-call time against depth: does compiling grow with the number of layers?

A Python loop over layers (``bpjax.models.layers_loss``, Flax NNX's ``nnx.List``, PyTorch)
unrolls into one program whose size, and so whose trace and compile time, grows with depth;
:class:`bpjax.models.MLP` stacks its hidden blocks and runs them under ``lax.scan``, so its
program has one block whatever the depth.
"""

from __future__ import annotations

import time

DEPTHS = (2, 8, 32)


def first_call_vs_depth(
    depths=DEPTHS, *, width: int = 256, batch: int = 128, compile_torch: bool = False
) -> list[dict]:
    """Seconds to the end of the first SGD step at each depth (``depth`` hidden layers of
    ``width``, input ``width``, 10 classes), for bpjax unrolled and scanned, Flax NNX and
    PyTorch (eager, and ``torch.compile`` when ``compile_torch``).

    Returns:
      One row per (depth, contender): ``{"depth", "contender", "first_call", "compile"}``.
    """
    from bpjax.bench._bpjax import jax_contenders
    from bpjax.bench._harness import have_torch
    from bpjax.bench._peers import flax_contender, torch_contenders
    from bpjax.bench._problem import problem

    rows = []
    for depth in depths:
        params, x, y = problem((width,) * (depth + 1) + (10,), batch)
        built = jax_contenders(params, x, y, names={"rev"})
        built[0].name = "rev (unrolled)"
        built.append(_scanned_rev(depth, width, x, y))
        built.append(flax_contender(params, x, y))
        if have_torch():
            built += torch_contenders(params, x, y, compile_too=compile_torch)
        rows += [
            {"depth": depth, "contender": c.name, "first_call": c.first_call, "compile": c.compile}
            for c in built
        ]
    return rows


def _scanned_rev(depth: int, width: int, x, y):
    """``rev`` through :class:`bpjax.models.MLP` (blocks under ``lax.scan``), donated."""
    import jax

    from bpjax import measure, models, rev, steps
    from bpjax._validate import to_device
    from bpjax.bench._problem import LR, Contender

    model = models.MLP(depth=depth, width=width, activation="relu")
    params = jax.block_until_ready(model.init(jax.random.key(0), width, 10))
    start = time.perf_counter()
    xj, yj = to_device(x), to_device(y)
    grad_fn = jax.grad(lambda p, x, y: model.loss(p, x, y, ops=rev))
    compiled, seconds = measure.compile_fn(
        steps.sgd_step(grad_fn, learning_rate=LR), params, xj, yj, donate_argnums=(0,)
    )
    jax.block_until_ready(compiled(params, xj, yj))
    return Contender(
        "rev (scan)", lambda: None, lambda x, y: [], time.perf_counter() - start, compile=seconds
    )
