"""``bpjax bench``: one MLP training step against the peers and against the GEMM roofline.

Every contender runs the same step on the same data from the same parameters: forward pass of
a ReLU MLP, softmax cross-entropy (batch mean), backward pass, SGD update ``p ← p − lr·g``.
bpjax's contenders (``rev``, ``fwd``, ``ref + jax.grad``, ``manual``; ``rev, not donated``)
are one ``jax.jit`` step each with the parameters donated (:func:`bpjax.steps.sgd_step`); the
peers (Flax NNX, PyTorch eager and ``torch.compile``, NumPy) run as their users would run
them (:mod:`bpjax.bench._peers`).

For each size, the run

1. builds every contender, timing its first call (trace, compile, one step);
2. checks every contender's gradient against ``ref + jax.grad`` (float32 tolerance);
3. times the steady state in interleaved rounds (:func:`bpjax.measure.run_rounds`), adding
   rounds until a paired bootstrap says whether ``rev`` is ahead of, behind or tied with the
   best peer (:func:`ranking`), or the size's time budget is spent;
4. reports the median, the 10th-90th percentile, the ratio to the reference and to the best
   peer, the fraction of the GEMM roofline (the rate of one large float32 GEMM measured with
   JAX in the same run), and the steps after which ``rev``'s total time (first call
   included) is below each peer's (:func:`break_even`).

Use it from the command line (``bpjax bench --help``, or ``python -m bpjax bench``) or from a
script::

    from bpjax import bench
    record = bench.run([((784, 256, 10), 128)], rounds=11, budget=20, compile_torch=False)
    print(bench.table(record["rows"], record["rankings"]))
"""

from bpjax.bench._agreement import away_from_kinks, check_agreement
from bpjax.bench._bpjax import grad_fns, jax_contenders
from bpjax.bench._cli import main, parse_args
from bpjax.bench._compile import first_call_vs_depth
from bpjax.bench._figures import draw, figure, ratio_bars, size_caption
from bpjax.bench._harness import build, gemm_rate, run, time_until_resolved
from bpjax.bench._peers import flax_contender, numpy_contender, torch_contenders, torch_device
from bpjax.bench._problem import (
    GRIDS,
    HEADLINE,
    LR,
    OURS,
    REFERENCE,
    UNDONATED,
    Contender,
    host_peers,
    layers_label,
    problem,
    size_label,
    step_flops,
)
from bpjax.bench._records import break_even, readme_table, size_rows, table, verdict_line
from bpjax.bench._stability import ranking

__all__ = [
    "GRIDS",
    "HEADLINE",
    "LR",
    "OURS",
    "REFERENCE",
    "UNDONATED",
    "Contender",
    "away_from_kinks",
    "break_even",
    "build",
    "check_agreement",
    "draw",
    "figure",
    "first_call_vs_depth",
    "flax_contender",
    "gemm_rate",
    "grad_fns",
    "host_peers",
    "jax_contenders",
    "main",
    "numpy_contender",
    "parse_args",
    "problem",
    "ranking",
    "ratio_bars",
    "readme_table",
    "run",
    "size_caption",
    "layers_label",
    "size_label",
    "size_rows",
    "step_flops",
    "table",
    "time_until_resolved",
    "torch_contenders",
    "torch_device",
    "verdict_line",
]
