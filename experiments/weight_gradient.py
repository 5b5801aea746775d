"""The weight-gradient GEMM xᵀδ: which XLA:CPU kernel runs it, at what rate, and whether
routing it to the fast one pays in the whole training step.

A linear layer's three GEMMs are ``z = x W`` (forward), ``dx = δ Wᵀ`` and ``dW = xᵀ δ``.
XLA:CPU hands a dot to its YNNPACK fusion only when the left operand is row-major in the
contracted dimension; ``dW`` contracts the batch, the leading axis of both ``x`` and ``δ``,
so it goes to XLA's own dot emitter. The one way around it is a materialised ``xᵀ`` (a
copy XLA may not fold back into the dot: ``optimization_barrier``). This experiment times,
for each layer of the bench grid with a GEMM worth the name:

* the three GEMMs alone under ``jit`` (interleaved rounds), and ``dW`` routed through the
  transposed copy ("after"), with the kernel each compiled to (read from the HLO);
* ``xᵀ δ`` in NumPy (OpenBLAS) and PyTorch (oneMKL), where installed, as a yardstick;
* the whole donated SGD step of ``bench``'s ReLU MLP with ``rev``'s linear rule as it is,
  against the same rule saving ``xᵀ`` (transposed, behind the barrier) for the backward
  pass: the change the GEMM rates argue for, measured where it counts.
"""

from __future__ import annotations

import dataclasses
import functools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bpjax import bench, measure, results
from bpjax.bench import _stability

GRID = bench.GRIDS["quick"]
# Layers whose three dimensions all reach 64: the rest (4-8-3, the 10-way heads) are too
# small for a GEMM rate to mean anything.
MIN_DIM = 64
GEMMS = ("z = x W", "dx = δ Wᵀ", "dW = xᵀ δ", "dW via xᵀ copy")
TRANSPOSED = "rev, xᵀ saved"


def layer_shapes(grid) -> list[tuple[int, int, int]]:
    """``(batch, d_in, d_out)`` of every distinct layer in ``grid`` with all three >= 64."""
    shapes = []
    for sizes, batch in grid:
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            shape = (batch, d_in, d_out)
            if min(shape) >= MIN_DIM and shape not in shapes:
                shapes.append(shape)
    return shapes


def gemm_programs():
    """name -> ``fn(x, W, g)`` for the GEMMs of :data:`GEMMS`."""
    import jax

    def transposed_dw(x, W, g):
        # The copy is materialised: without the barrier XLA folds the transpose back into
        # the dot's dimension numbers and the dot emitter runs it again.
        return jax.lax.optimization_barrier(x.T) @ g

    return {
        "z = x W": lambda x, W, g: x @ W,
        "dx = δ Wᵀ": lambda x, W, g: g @ W.T,
        "dW = xᵀ δ": lambda x, W, g: x.T @ g,
        "dW via xᵀ copy": transposed_dw,
    }


def kernel(compiled_text: str) -> str:
    """Which kernel a compiled one-GEMM program's dot runs on: YNNPACK or the dot emitter."""
    if "ynn_fusion" in compiled_text or "__ynn" in compiled_text:
        return "YNNPACK"
    return "XLA dot emitter"


def dot_lines(compiled_text: str) -> list[str]:
    """The optimized HLO lines that carry the dot (metadata dropped), for the page."""
    keep = []
    for line in compiled_text.splitlines():
        line = line.strip()
        if " dot(" in line or "kind=kCustom" in line or "transpose" in line and "fusion(" in line:
            keep.append(line.split(", metadata=")[0])
    return keep


def time_gemms(shape, rounds, seed):
    """GFLOP/s of each GEMM at ``shape`` (JAX, NumPy, PyTorch), interleaved rounds."""
    import jax
    import numpy as np

    batch, d_in, d_out = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, d_in)).astype(np.float32)
    W = rng.standard_normal((d_in, d_out)).astype(np.float32)
    g = rng.standard_normal((batch, d_out)).astype(np.float32)
    jx, jW, jg = map(jax.numpy.asarray, (x, W, g))
    steps, groups, kernels, hlo = {}, {}, {}, {}
    reference = x.T @ g
    for name, fn in gemm_programs().items():
        compiled, _ = measure.compile_fn(fn, jx, jW, jg)
        text = compiled.as_text()
        kernels[name], hlo[name] = kernel(text), dot_lines(text)
        if name.startswith("dW"):
            # Same product before anything is timed.
            np.testing.assert_allclose(
                np.asarray(compiled(jx, jW, jg)), reference, rtol=1e-4, atol=1e-3
            )
        steps[name] = lambda c=compiled: c(jx, jW, jg)
        groups[name] = "jax"
    steps["dW = xᵀ δ, NumPy"] = lambda: x.T @ g
    groups["dW = xᵀ δ, NumPy"] = "numpy"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)
        steps["dW = xᵀ δ, PyTorch"] = lambda: tx.T @ tg
        groups["dW = xᵀ δ, PyTorch"] = "torch"
    timings = measure.time_steps(
        steps, rounds=rounds, min_round_seconds=0.05, groups=groups, rewarm_seconds=0.02
    )
    flops = 2 * batch * d_in * d_out
    return {
        name: {"gflops": flops / t.median / 1e9, "kernel": kernels.get(name), **t.as_dict()}
        for name, t in timings.items()
    }, hlo


def transposed_linear():
    """``rev``'s linear op with a rule that saves ``xᵀ`` for the weight gradient."""
    import jax

    from bpjax import _namespace
    from bpjax.rules import TABLE

    def vjp_fwd(x, W, b):
        xt = jax.lax.optimization_barrier(x.reshape(-1, W.shape[0]).T)
        return x @ W + b, (xt, W)

    def vjp_bwd(residuals, g):
        xt, W = residuals
        g2 = g.reshape(-1, W.shape[1])
        return g @ W.T, xt @ g2, g2.sum(axis=0)

    rule = dataclasses.replace(TABLE["linear"], vjp_fwd=vjp_fwd, vjp_bwd=vjp_bwd)
    return _namespace.build_rev(rule)


def time_steps(sizes, batch, rounds, seed):
    """Per-step seconds of the donated ``rev`` SGD step, as is and with the transposed
    residual; gradients compared first."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bpjax import rev, steps

    params, x, y = bench.problem(sizes, batch, seed=seed)
    params = jax.tree.map(jnp.asarray, params)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss(p, x, y, linear):
        a = x
        for W, b in p[:-1]:
            a = rev.relu(linear(a, W, b))
        W, b = p[-1]
        return rev.softmax_cross_entropy(linear(a, W, b), y)

    linears = {"rev": rev.linear, TRANSPOSED: transposed_linear()}
    grad_fns = {
        k: functools.partial(lambda p, x, y, lin: jax.grad(loss)(p, x, y, lin), lin=lin)
        for k, lin in linears.items()
    }
    grads = {k: jax.jit(g)(params, x, y) for k, g in grad_fns.items()}
    for a, b in zip(*(jax.tree.leaves(g) for g in grads.values()), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    compiled_steps = {}
    for k, g in grad_fns.items():
        # Donated, as bench's steps are; each gets its own copy of the parameters.
        state = [jax.tree.map(lambda a: a.copy(), params), x, y]
        step_fn = steps.sgd_step(g, learning_rate=bench.LR)
        compiled, _ = measure.compile_fn(step_fn, *state, donate_argnums=(0,))

        def step(compiled=compiled, state=state):
            state[0] = compiled(*state)
            return state[0]

        compiled_steps[k] = step
    calls = measure.calibrate(compiled_steps, min_round_seconds=0.1, warmup=3)

    def judge(samples):
        verdict = _stability.ranking(samples, TRANSPOSED, ["rev"])
        return verdict, verdict["verdict"] != "unresolved"

    # Rounds until a paired bootstrap of the per-round ratio says ahead, behind or tie
    # (within 3%): a few-percent difference between two steps is below what one run's
    # medians can tell apart on a shared VM.
    samples, verdict = _stability.rounds_until_resolved(
        compiled_steps,
        calls,
        judge,
        rounds=rounds,
        budget=30.0,
        max_rounds=61,
        rewarm_seconds=0.05,
    )
    return measure.summarize(samples, calls), verdict


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv)
    rounds = 21 if args.full else 11
    gemm_rows, hlo_by_shape = [], {}
    for shape in layer_shapes(GRID):
        rates, hlo = time_gemms(shape, rounds, args.seed)
        hlo_by_shape["x".join(map(str, shape))] = hlo
        for name, r in rates.items():
            gemm_rows.append(
                {"batch": shape[0], "d_in": shape[1], "d_out": shape[2], "gemm": name, **r}
            )
            print(f"{shape!s:>18} {name:<22} {r['gflops']:7.1f} GFLOP/s  {r['kernel'] or ''}")
    step_rows = []
    for sizes, batch in GRID:
        timed, verdict = time_steps(sizes, batch, rounds, args.seed)
        label = bench.size_label(sizes, batch)
        for name, t in timed.items():
            row = {
                "size": label,
                "layers": bench.layers_label(sizes),
                "batch": batch,
                "contender": name,
                **t.as_dict(),
            }
            if name == TRANSPOSED:
                # The median per-round ratio (paired), its bootstrap interval and verdict.
                row |= {
                    "ratio_to_rev": verdict["ratio"],
                    "ci": verdict["ci"],
                    "verdict": verdict["verdict"],
                }
            step_rows.append(row)
            print(f"{label:>22} {name:<16} {t.median * 1e3:9.3f} ms")
        print(
            f"{label:>22} {TRANSPOSED} / rev = {verdict['ratio']:.3f} "
            f"({verdict['ci'][0]:.3f}-{verdict['ci'][1]:.3f}, {verdict['rounds']} rounds): "
            f"{verdict['verdict']}"
        )

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(dict.fromkeys(f"{r['d_in']}×{r['d_out']} b{r['batch']}" for r in gemm_rows))
    names = list(dict.fromkeys(r["gemm"] for r in gemm_rows))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rates = [r["gflops"] for r in gemm_rows if r["gemm"] == name]
        ax.bar([k + i * width for k in range(len(labels))], rates, width, label=name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(labels))], labels)
    ax.set_ylabel("GFLOP/s (float32)")
    env = measure.environment()
    ax.set_title(f"One linear layer's GEMMs ({env.get('cpu_model') or env['device']})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    results.save_figure(fig, args.out / "weight_gradient.png", dpi=120)

    summary = []
    for r in gemm_rows:
        if r["gemm"] in ("dW = xᵀ δ", "dW via xᵀ copy", "z = x W"):
            summary.append(
                results.entry(
                    "gemm_gflops",
                    r["gflops"],
                    unit="GFLOP/s",
                    text=(
                        f"{r['gemm']} ({r['kernel']}), {r['d_in']}×{r['d_out']} batch {r['batch']}"
                    ),
                    gemm=r["gemm"],
                    batch=r["batch"],
                    d_in=r["d_in"],
                    d_out=r["d_out"],
                )
            )
    for r in step_rows:
        if r["contender"] == TRANSPOSED:
            summary.append(
                results.entry(
                    "transposed_step_over_rev",
                    r["ratio_to_rev"],
                    unit="ratio",
                    text=(
                        f"rev step with xᵀ saved / rev step @ {r['size']} (paired, {r['verdict']})"
                    ),
                    layers=r["layers"],
                    batch=r["batch"],
                )
            )
    results.save(
        "weight_gradient",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="The weight-gradient GEMM xᵀδ on XLA:CPU: kernel, rate, and the whole step",
        summary=summary,
        data={"gemms": gemm_rows, "steps": step_rows, "hlo": hlo_by_shape},
        figures=["weight_gradient.png"],
        notes=(
            "GEMM rates are medians of interleaved rounds (JAX, NumPy and PyTorch apart within a "
            "round). The step ratios are the median per-round ratio of the donated rev SGD step "
            "with the transposed residual to the same step as shipped, rounds added until a "
            "paired bootstrap resolves it (tie: within 3%); above 1 means the change loses."
        ),
    )


if __name__ == "__main__":
    main()
