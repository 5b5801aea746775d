"""Remat that really saves memory: every strategy of bpjax.remat, measured four ways.

A stack of L tanh layers ``x ← tanh(x W + b)`` (batch 256, width 128, float32), differentiated
w.r.t. the weights and the input. For L in the sweep and each strategy: predicted bytes (the
byte model), the jaxpr's residual bytes, XLA's compiled temp bytes, and (at the timed depth)
the runtime peak where the backend reports it, the step time and the layer evaluations.
Figures: memory vs L (log-log, fitted slopes beside theory), the memory/time Pareto front at
the timed depth with the binomial family drawn from theory, and the three memory sources side
by side. The same stack written as Flax NNX modules (``nnx.scan``/``nnx.remat``) is measured
beside it.

Quick profile: memory to L = 1024, timing at L = 1024. ``--full``: memory to L = 4096.
``--depths`` and ``--time-depth`` size it by hand (the accelerator script does).
"""

from __future__ import annotations

import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from bpjax import measure, models, remat, results
from bpjax import nnx as bnnx

BATCH, WIDTH = 256, 128


def layer(p, x):
    return jnp.tanh(checkpoint_name(x @ p["W"] + p["b"], "pre"))


def problem(n_layers, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "W": jax.random.normal(k1, (n_layers, WIDTH, WIDTH), jnp.float32) / math.sqrt(WIDTH),
        "b": jnp.zeros((n_layers, WIDTH), jnp.float32),
    }
    return params, jax.random.normal(k2, (BATCH, WIDTH), jnp.float32)


def strategies(n_layers):
    log_l = max(2, math.ceil(math.log2(n_layers)))
    out = {
        "none": remat.StoreAll(),
        "every": remat.Every(),
        "sqrt": remat.Nested(2),
        "nested3": remat.Nested(3),
        "nested4": remat.Nested(4),
        "binomial c=log2L": remat.Binomial(log_l),
        "binomial c=2log2L": remat.Binomial(2 * log_l),
        "dots": remat.dots(),
        "names:pre": remat.names("pre"),
    }
    if any(m.kind == "pinned_host" for m in jax.local_devices()[0].addressable_memories()):
        out["offload:pre"] = remat.offload("pre")
    return out


def family(name):
    return name.split(" ")[0]


def slope(depths, values):
    return float(np.polyfit(np.log(depths), np.log(values), 1)[0])


THEORY_SLOPE = {"none": 1.0, "every": 1.0, "sqrt": 0.5, "nested3": 1 / 3, "nested4": 0.25}
THEORY_SLOPE.update({"dots": 1.0, "names:pre": 1.0, "offload:pre": 1.0})


def theory_slope(name):
    if family(name) == "binomial":
        return "log L"
    return f"{THEORY_SLOPE[family(name)]:.2f}"


def memory_sweep(depths):
    rows = []
    for n_layers in depths:
        params, x = problem(n_layers)
        specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, x))
        for name, strategy in strategies(n_layers).items():
            start = time.perf_counter()
            m = remat.measure_memory(layer, *specs, strategy=strategy, run=False)
            rows.append({"L": n_layers, **m.as_dict(), "strategy": name})
            print(
                f"  L={n_layers:5d} {name:18s} predicted {m.predicted / 2**20:9.2f} MiB  "
                f"jaxpr {m.jaxpr_residuals / 2**20:9.2f} MiB  "
                f"compiled {m.compiled_temp / 2**20:9.2f} MiB  "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    return rows


def timing(n_layers, rounds):
    params, x = problem(n_layers)
    chosen = dict(strategies(n_layers))
    # The binomial family at more checkpoint counts, to compare with the theory curve.
    chosen.update({f"binomial c={c}": remat.Binomial(c) for c in (4, 6, 16)})
    # Least memory first: the device's high-water mark only shows a run that raises it.
    order = sorted(chosen, key=lambda n: remat.predict(layer, params, x, strategy=chosen[n]))
    contenders, meas = {}, {}
    for name in order:
        meas[name] = remat.measure_memory(layer, params, x, strategy=chosen[name], run=True)
        fn = functools.partial(remat.gradient, layer, strategy=chosen[name])
        contenders[name] = (fn, (params, x))
    print(f"  timing {len(contenders)} strategies at L={n_layers}, {rounds} rounds", flush=True)
    timings = measure.compare(contenders, rounds=rounds, min_round_seconds=0.0, warmup=1)
    rows = []
    for name, t in timings.items():
        rows.append({**meas[name].as_dict(), **t.as_dict(), "strategy": name})
        print(
            f"  {name:18s} {t.median * 1e3:8.1f} ms  (p10 {t.p10 * 1e3:.1f}, p90 "
            f"{t.p90 * 1e3:.1f})  compiled {meas[name].compiled_temp / 2**20:8.2f} MiB  "
            f"{meas[name].evaluations} evaluations",
            flush=True,
        )
    return rows


def counted(n_layers):
    params, x = problem(n_layers)
    sizes = remat.layer_bytes(layer, params, x)
    out = {}
    for name, strategy in strategies(n_layers).items():
        out[name] = {
            "counted": remat.count_evaluations(layer, params, x, strategy=strategy),
            "theory": remat.evaluations(strategy, n_layers, sizes),
        }
    return out


def nnx_sweep(depths):
    rows = []
    for n_layers in depths:
        # The same tanh layer as a stack of nnx.Linear blocks (n_layers blocks after a stem).
        config = models.MLP(arch="plain", depth=n_layers + 1, width=WIDTH, activation="tanh")
        blocks = bnnx.stacked_blocks(config, key=jax.random.key(0))
        x = jnp.ones((BATCH, WIDTH), jnp.float32)
        for name in ("nnx.scan", "nnx.scan+nnx.remat", "bpjax.remat sqrt"):
            temp = bnnx.remat_temp_bytes(blocks, x, how=name)
            rows.append({"L": n_layers, "how": name, "compiled_temp": temp})
            print(f"  NNX L={n_layers:5d} {name:20s} compiled {temp / 2**20:9.2f} MiB", flush=True)
    return rows


def pareto_front(points):
    """Indices of the points no other point beats in both memory and time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory(out, mem_rows, nnx_rows, slopes):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name in dict.fromkeys(r["strategy"] for r in mem_rows):
        rows = [r for r in mem_rows if r["strategy"] == name]
        ax.plot(
            [r["L"] for r in rows],
            [r["compiled_temp"] / 2**20 for r in rows],
            "o-",
            label=f"{name}: slope {slopes[name]:.2f} (theory {theory_slope(name)})",
        )
    for r in nnx_rows:
        ax.plot(r["L"], r["compiled_temp"] / 2**20, "kx", ms=7)
    ax.plot([], [], "kx", label="Flax NNX equivalents")
    ax.set(xscale="log", yscale="log", xlabel="layers L", ylabel="compiled temp memory (MiB)")
    ax.set_title(f"Gradient memory vs depth (batch {BATCH}, width {WIDTH}, float32)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    results.save_figure(fig, out / "remat_memory.png", dpi=120)
    plt.close(fig)


def plot_pareto(out, time_rows, n_time):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    pts = [(r["compiled_temp"] / 2**20, r["median"] * 1e3) for r in time_rows]
    for r, (m, t) in zip(time_rows, pts, strict=True):
        ax.plot(m, t, "o", color="C1" if family(r["strategy"]) == "binomial" else "C0")
        ax.annotate(r["strategy"], (m, t), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="front")
    # Theory for the binomial family: predicted bytes, and time from a fit of step time to
    # layer evaluations over the measured strategies.
    evals = np.array([r["evaluations"] for r in time_rows], float)
    secs = np.array([r["median"] for r in time_rows])
    a, b = np.polyfit(evals, secs, 1)
    sizes = remat.layer_bytes(layer, *problem(1))
    family_c = [remat.Binomial(int(c)) for c in range(2, 4 * math.ceil(math.log2(n_time)) + 1)]
    ax.plot(
        [remat.predict_bytes(s, n_time, sizes) / 2**20 for s in family_c],
        [(a * remat.evaluations(s, n_time, sizes) + b) * 1e3 for s in family_c],
        "C1:",
        label="binomial, theory (c = 2, 3, ...)",
    )
    ax.set(xscale="log", xlabel="compiled temp memory (MiB)", ylabel="gradient step (ms)")
    ax.set_title(f"Memory/time trade-off at L = {n_time}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    results.save_figure(fig, out / "remat_pareto.png", dpi=120)
    plt.close(fig)


def plot_sources(out, time_rows, n_time):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = np.arange(len(time_rows))
    have_peak = any(r["runtime_peak"] for r in time_rows)
    keys = [("predicted", "predicted"), ("jaxpr_residuals", "jaxpr residuals")]
    keys += [("compiled_temp", "compiled temp")]
    if have_peak:
        keys.append(("runtime_peak", "runtime peak"))
    width = 0.8 / len(keys)
    for j, (key, label) in enumerate(keys):
        heights = [max(r[key] or 0, 1) / 2**20 for r in time_rows]
        ax.bar(xs + j * width, heights, width, label=label)
    labels = [r["strategy"] for r in time_rows]
    ax.set_xticks(xs + 0.4 - width / 2, labels, rotation=45, ha="right")
    ax.set(yscale="log", ylabel="MiB")
    note = "" if have_peak else " (runtime peak not reported on this backend)"
    ax.set_title(f"Where the bytes are, L = {n_time}{note}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    results.save_figure(fig, out / "remat_sources.png", dpi=120)
    plt.close(fig)


def options(parser):
    parser.add_argument("--depths", type=int, nargs="+", help="L values of the memory sweep")
    parser.add_argument("--time-depth", type=int, help="L at which strategies are timed")


def fitted_slopes(mem_rows):
    slopes = {}
    for name in dict.fromkeys(r["strategy"] for r in mem_rows):
        rows = [r for r in mem_rows if r["strategy"] == name]
        slopes[name] = slope([r["L"] for r in rows], [r["compiled_temp"] for r in rows])
    return slopes


def summarize(time_rows, slopes, counts, n_time):
    at = {r["strategy"]: r for r in time_rows}  # memory and time at the timed depth
    log_l = math.ceil(math.log2(n_time))
    none, binomial = at["none"], at["binomial c=log2L"]
    entry, mib = results.entry, 2**20
    binomial_c = f"binomial c={log_l}"
    return [
        entry("device", jax.devices()[0].device_kind, unit="text", text="device"),
        entry("compiled_temp", none["compiled_temp"] / mib, unit="MiB",
              text=f"none compiled temp at L={n_time} (MiB)", strategy="none", L=n_time),
        entry("compiled_temp_over_none", at["sqrt"]["compiled_temp"] / none["compiled_temp"],
              unit="ratio", text="sqrt / none compiled temp", strategy="sqrt"),
        entry("compiled_temp", at["nested3"]["compiled_temp"] / mib, unit="MiB",
              text=f"nested3 compiled temp at L={n_time} (MiB)", strategy="nested3", L=n_time),
        entry("compiled_temp", binomial["compiled_temp"] / mib, unit="MiB",
              text=f"{binomial_c} compiled temp (MiB)", strategy=binomial_c),
        *[
            entry("step_time_over_none", row["median"] / none["median"], unit="ratio",
                  text=f"{strategy} step time / none", strategy=strategy)
            for strategy, row in (("sqrt", at["sqrt"]), ("nested3", at["nested3"]),
                                  (binomial_c, binomial))
        ],
        *[
            entry("memory_slope", slopes[name], unit="", text=f"slope {name}", strategy=name)
            for name in ("none", "sqrt", "nested3", "nested4", "binomial c=log2L")
        ],
        entry("compiled_over_predicted_worst",
              max(r["compiled_temp"] / r["predicted"] for r in time_rows), unit="ratio",
              text="compiled/predicted, worst"),
        entry("counted_equals_theory", all(v["counted"] == v["theory"] for v in counts.values()),
              unit="bool", text="counted evaluations == theory"),
    ]  # fmt: skip


NOTES = (
    "Compiled temp memory is XLA's plan for temporaries of the jitted gradient w.r.t. weights "
    "and input; runtime peak is only reported by GPU/TPU backends. Nested levels and binomial "
    "write each layer's parameter gradient in place into the stacked gradient (custom_vjp), "
    "so nested memory follows k L^(1/k) and binomial memory grows only with c."
)


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv, configure=options)
    depths = args.depths or [16, 64, 256, 1024] + ([4096] if args.full else [])
    n_time = args.time_depth or 1024
    start = time.perf_counter()
    print(f"memory sweep, L in {depths}", flush=True)
    mem_rows = memory_sweep(depths)
    slopes = fitted_slopes(mem_rows)
    print("Flax NNX", flush=True)
    nnx_rows = nnx_sweep([n for n in depths if n <= 1024])
    print("layer evaluations, counted at L=64", flush=True)
    counts = counted(64)
    time_rows = timing(n_time, rounds=9 if args.full else 5)
    plot_memory(args.out, mem_rows, nnx_rows, slopes)
    plot_pareto(args.out, time_rows, n_time)
    plot_sources(args.out, time_rows, n_time)
    summary = summarize(time_rows, slopes, counts, n_time)
    seconds = time.perf_counter() - start
    summary.append(results.entry("seconds", seconds, unit="s", text="seconds"))
    for key, value in ((e["text"], e["value"]) for e in summary):
        print(f"  {key}: {value}")
    results.save(
        "remat_memory",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Remat: memory and time of every checkpoint strategy",
        summary=summary,
        data={
            "batch": BATCH,
            "width": WIDTH,
            "memory": mem_rows,
            "slopes": slopes,
            "timing": time_rows,
            "evaluations_at_64": counts,
            "nnx": nnx_rows,
        },
        figures=["remat_memory.png", "remat_pareto.png", "remat_sources.png"],
        notes=NOTES,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
