"""Train-step time of an MLP: hand-written rules (rev, fwd) and manual backprop vs jax.grad.

Each contender runs one full SGD step (forward, backward, update) of the same MLP with the
same parameters, jit-compiled with the parameters donated. Gradients are compared once per
size before timing, so no contender is fast by being wrong. Ratios are to ``ref`` +
``jax.grad`` in the same run (the median of per-round ratios of interleaved rounds).
Beside them, the step a user builds from the public API (``models.MLP.apply(ops=rev)``
+ ``softmax_cross_entropy`` + ``jax.grad`` + SGD), timed against the same built with
``ops=ref``.
"""

from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bpjax import bench, measure, results

QUICK = [((4, 8, 3), 100), ((784, 256, 10), 128), ((784, 512, 512, 10), 256)]
FULL = [*QUICK, ((1024,) * 9 + (10,), 512)]
NAMES = {
    bench.REFERENCE: "ref + jax.grad",
    "rev": "rev (hand VJP)",
    "fwd": "fwd (hand JVP, transposed)",
    "manual": "manual (δ recursion)",
}


USER_REF = "user step: MLP.apply(ref)"


def user_steps(sizes, batch, x, y, seed):
    """The step a user builds from the public API, for ``rev`` and for ``ref``:
    ``models.MLP.apply(ops=...)`` + ``ops.softmax_cross_entropy`` + ``jax.grad`` + SGD,
    jit-compiled with the parameters donated. Returns name -> zero-argument step."""
    import jax
    import numpy as np

    from bpjax import models, ref, rev, steps

    # On the device once, as the bench's steps have them: NumPy arguments would be copied
    # in at every call (about 0.1 ms of the 784-256-10 step).
    x, y = jax.numpy.asarray(x), jax.numpy.asarray(y)
    hidden = sizes[1:-1]
    model = models.MLP(depth=len(hidden), width=hidden[0], activation="relu")
    params = model.init(jax.random.key(seed), sizes[0], sizes[-1])
    out, grads = {}, {}
    for tag, ops in (("rev", rev), ("ref", ref)):

        def loss(p, x, y, ops=ops):
            return ops.softmax_cross_entropy(model.apply(p, x, ops=ops), y)

        grads[tag] = jax.jit(jax.grad(loss))(params, x, y)
        step = jax.jit(steps.sgd_step(jax.grad(loss), learning_rate=bench.LR), donate_argnums=0)
        state = [jax.tree.map(jax.numpy.array, params)]

        def run(step=step, state=state):
            state[0] = step(state[0], x, y)
            return state[0]

        out[f"user step: MLP.apply({tag})"] = run
    # Same gradients (float32 tolerance) before anything is timed.
    for a, b in zip(jax.tree.leaves(grads["rev"]), jax.tree.leaves(grads["ref"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    return out


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv)
    grid = FULL if args.full else QUICK
    rounds = 61 if args.full else 31
    rows = []
    for sizes, batch in grid:
        params, x, y = bench.problem(sizes, batch, seed=args.seed)
        contenders = bench.jax_contenders(params, x, y, names=set(NAMES))
        # Same gradients (float32 tolerance) before anything is timed.
        bench.check_agreement(contenders, params, x, y)
        steps = {NAMES[c.name]: c.step for c in contenders}
        steps |= user_steps(sizes, batch, x, y, args.seed)
        calls = measure.calibrate(steps)
        samples = measure.run_rounds(steps, calls, rounds=rounds, rewarm_seconds=0.05)
        timings = measure.summarize(samples, calls)
        label = bench.size_label(sizes, batch)
        for name, t in timings.items():
            # The user-built steps against each other; the rest against ref + jax.grad.
            # Paired: the median of the per-round ratios, so what a round's conditions did
            # to both steps cancels (two medians of 15 rounds had put 1.08 on a 0.98).
            base = USER_REF if name.startswith("user") else "ref + jax.grad"
            pairs = zip(samples[name], samples[base], strict=True)
            ratio = statistics.median(a / b for a, b in pairs)
            rows.append({"size": label, "contender": name, "ratio_to_ref": ratio, **t.as_dict()})
            print(
                f"{label:>28}  {name:<28} {t.median * 1e3:9.3f} ms "
                f"[{t.p10 * 1e3:.3f}, {t.p90 * 1e3:.3f}]  ratio {ratio:5.2f}"
            )

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    bench.ratio_bars(ax, rows, "ratio_to_ref")
    ax.set_ylabel("train-step time / (ref + jax.grad)")
    ax.set_title(f"SGD step time relative to autodiff ({measure.environment()['device']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    results.save_figure(fig, args.out / "rules_overhead.png", dpi=120)

    ratio = {(r["size"], r["contender"]): r["ratio_to_ref"] for r in rows}
    summary = [
        results.entry(
            f"{who}_over_ref",
            ratio[bench.size_label(sizes, batch), NAMES[who]],
            unit="ratio",
            text=f"{who} / ref @ {bench.size_label(sizes, batch)}",
            layers=bench.layers_label(sizes),
            batch=batch,
        )
        for who in ("rev", "manual")
        for sizes, batch in grid
    ]
    summary += [
        results.entry(
            "user_rev_over_user_ref",
            ratio[bench.size_label(sizes, batch), "user step: MLP.apply(rev)"],
            unit="ratio",
            text=(
                "user-built step, MLP.apply(ops=rev) / MLP.apply(ops=ref) @ "
                + bench.size_label(sizes, batch)
            ),
            layers=bench.layers_label(sizes),
            batch=batch,
        )
        for sizes, batch in grid
    ]
    results.save(
        "rules_overhead",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Hand-written rules vs autodiff: MLP train-step time",
        summary=summary,
        data={"rows": rows, "lr": bench.LR, "activation": "relu", "dtype": "float32"},
        figures=["rules_overhead.png"],
        notes=(
            "Median of interleaved rounds; error bars are the 10th-90th percentile. Ratios are "
            "the median per-round ratio (paired). "
            "A ratio below 1 means faster than `jax.grad` over plain `jax.numpy`."
        ),
    )


if __name__ == "__main__":
    main()
