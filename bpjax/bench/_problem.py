"""The benchmark problem: sizes, data, FLOP count, and the record every contender fills in."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

GRIDS = {
    "quick": [
        ((4, 8, 3), 100),
        ((784, 256, 10), 128),
        ((784, 512, 512, 10), 256),
        ((1024,) * 9 + (10,), 512),
    ],
    "full": [
        ((4, 8, 3), 100),
        ((784, 256, 10), 128),
        ((784, 512, 512, 10), 256),
        ((784, 1024, 1024, 10), 128),
        ((1024,) * 9 + (10,), 512),
        ((2048,) * 5 + (10,), 1024),
    ],
}
LR = 0.1
REFERENCE = "ref + jax.grad"
UNDONATED = "rev, not donated"
OURS = ("rev", "fwd", REFERENCE, "manual", UNDONATED)
# The contender every verdict is about: bpjax's default step (hand-written VJPs, donated).
HEADLINE = "rev"


def layers_label(sizes) -> str:
    """How the README names the layer widths: ``"784-256-10"``, or ``"8 × 1024"`` when the
    input and at least three hidden layers share one width (``(1024,) * 9 + (10,)``)."""
    sizes = tuple(sizes)
    hidden = sizes[1:-1]
    if len(hidden) >= 3 and all(w == sizes[0] for w in hidden):
        return f"{len(hidden)} × {sizes[0]}"
    return "-".join(map(str, sizes))


def size_label(sizes, batch: int) -> str:
    """How the README names a size: ``"784-256-10 b128"``, ``"8 × 1024 b512"``
    (:func:`layers_label` and the batch)."""
    return f"{layers_label(sizes)} b{batch}"


def problem(sizes, batch: int, seed: int = 0):
    """float32 NumPy parameters ``[(W, b), ...]``, inputs ``(batch, sizes[0])`` and labels.

    Weights are He-initialised ``(d_in, d_out)``, biases zero, labels uniform over
    ``sizes[-1]`` classes.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    params = [
        (
            (rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in)).astype(np.float32),
            np.zeros(d_out, np.float32),
        )
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int32)
    return params, x, y


def step_flops(sizes, batch: int) -> int:
    """GEMM FLOPs of one training step (elementwise work not counted).

    Forward ``2·m·n·k`` per layer; backward twice that (``dX`` and ``dW``), except that the
    first layer's input gradient is not computed.
    """
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    total = sum(6 * batch * i * o for i, o in pairs)
    return total - 2 * batch * pairs[0][0] * pairs[0][1]


@dataclasses.dataclass
class Contender:
    """One way of taking a training step.

    Attributes:
      name: shown in the table.
      step: ``step()`` takes one step on its own copy of the parameters, returns its output.
      grads: ``grads(x, y)`` → ``[(dW, db), ...]`` as NumPy arrays at the initial parameters.
      first_call: seconds from nothing to the end of the first step: tracing, compiling and
        running it once (what a user waits for before training starts).
      runtime: whose thread pool runs it (``"jax"``, ``"torch"``, ``"numpy"``); see
        :func:`bpjax.measure.time_steps` for why timing keeps runtimes apart.
      compile: of ``first_call``, the seconds spent compiling (JAX contenders; else 0).
      device: where its arrays live and its arithmetic runs: JAX's platform (``"cpu"``,
        ``"gpu"``, ``"tpu"``) for JAX contenders, ``"cpu"`` or ``"cuda"`` for PyTorch,
        ``"cpu"`` for NumPy. A peer on the host CPU while JAX runs on an accelerator is
        shown but is not a "best peer" (:func:`host_peers`): it answers another question.
      faults_per_step: minor page faults per steady-state step (memory mapped afresh on every
        step; filled in by the harness).
    """

    name: str
    step: Callable[[], object]
    grads: Callable[..., list]
    first_call: float = 0.0
    runtime: str = "jax"
    compile: float = 0.0
    faults_per_step: float | None = None
    device: str = "cpu"


def host_peers(contenders, platform: str) -> set[str]:
    """Names of the peers in ``contenders`` that run on the host CPU while JAX runs on
    ``platform`` (an accelerator): empty on a CPU-only run. Ranking bpjax on a GPU against
    PyTorch or NumPy on the CPU would say nothing about either library."""
    if platform == "cpu":
        return set()
    return {c.name for c in contenders if c.name not in OURS and c.device == "cpu"}
