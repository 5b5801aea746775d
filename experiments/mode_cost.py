"""Forward vs reverse mode: Jacobian cost over (n, m), the cheap-gradient ratio, memory, HVPs.

For f: R^n → R^m from two families (a tanh MLP, and an elementwise-heavy map with no
matrix product), times and XLA FLOPs of the Jacobian by forward mode (n JVPs) and by reverse
mode (m VJPs), and what `bpjax.modes.choose_mode` picked; then the cheap-gradient ratio
ω = cost(VJP) / cost(f), forward vs reverse memory vs depth, and the three HVP orders.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bpjax import measure, modes, results
from bpjax.modes import examples
from bpjax.modes._basis_probe import ProbeBasis

QUICK = {
    "sizes": [1, 16, 256, 2048],
    "widths": [16, 64, 256, 1024],
    "depths": [2, 4, 8, 16, 32, 64],
    "rounds": 5,
}
FULL = {
    "sizes": [1, 4, 16, 64, 256, 1024, 4096],
    "widths": [16, 32, 64, 128, 256, 512, 1024],
    "depths": [2, 4, 8, 16, 32, 64],
    "rounds": 11,
}
HIDDEN = 256


def family(name, n, m, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    if name == "mlp_tanh":
        W1 = jax.random.normal(k1, (HIDDEN, n)) / np.sqrt(n)
        W2 = jax.random.normal(k2, (m, HIDDEN)) / np.sqrt(HIDDEN)
        return lambda x: W2 @ jnp.tanh(W1 @ x)
    return examples.gather_chain(jnp.arange(m) % n)  # elementwise: no matrix product


def jacobian_sweep(name, grid):
    rows = []
    for n in grid["sizes"]:
        for m in grid["sizes"]:
            f = family(name, n, m)
            x = jnp.linspace(-1.0, 1.0, n)
            choice = modes.choose_mode(f, x, basis="xla")
            calibrated = modes.choose_mode(f, x, basis="timing", colorings=False)
            model = modes.choose_mode(f, x, colorings=False)
            # jacobian_fn's default once its calls have run the probe: the model, with the
            # candidates it cannot rank timed, at any price per call (jacobian_fn defers
            # the probe to its calls instead of a floor; JacobianFn.settle runs it).
            probe = modes.choose_mode(f, x, basis=ProbeBasis(min_seconds=0.0), colorings=False)
            progs = {
                mode: functools.partial(modes.jacobian, f, mode=mode) for mode in ("fwd", "rev")
            }
            t = measure.compare(
                {k: (p, (x,)) for k, p in progs.items()},
                rounds=grid["rounds"],
                min_round_seconds=0.01,
            )
            t_fwd, t_rev = t["fwd"].median, t["rev"].median
            chosen = t_fwd if choice.mode == "fwd" else t_rev
            row = {
                "family": name,
                "n": n,
                "m": m,
                "t_fwd": t_fwd,
                "t_rev": t_rev,
                "flops_fwd": measure.flops(progs["fwd"], x),
                "flops_rev": measure.flops(progs["rev"], x),
                "temp_fwd": measure.temp_bytes(progs["fwd"], x),
                "temp_rev": measure.temp_bytes(progs["rev"], x),
                "auto": choice.mode,
                "predicted_flops_fwd": choice.fwd["flops"],
                "predicted_flops_rev": choice.rev["flops"],
                "auto_over_best": chosen / min(t_fwd, t_rev),
                "auto_calibrated": calibrated.mode,
                "calibrated_over_best": (t_fwd if calibrated.mode == "fwd" else t_rev)
                / min(t_fwd, t_rev),
                "auto_model": model.mode,
                "model_over_best": (t_fwd if model.mode == "fwd" else t_rev) / min(t_fwd, t_rev),
                "model_decision_seconds": model.decision_seconds,
                "auto_probe": probe.mode,
                "probe_over_best": (t_fwd if probe.mode == "fwd" else t_rev) / min(t_fwd, t_rev),
                "probe_decision_seconds": probe.decision_seconds,
            }
            rows.append(row)
            print(
                f"{name:<12} n={n:>5} m={m:>5}  fwd {t_fwd * 1e3:9.3f} ms  rev "
                f"{t_rev * 1e3:9.3f} ms  auto={choice.mode}  auto/best "
                f"{row['auto_over_best']:.2f}",
                flush=True,
            )
    return rows


def mlp_params(width, depth, batch):
    """``depth`` square tanh-layer weights and an input batch, from a fixed key."""
    keys = jax.random.split(jax.random.key(1), depth + 1)
    params = [jax.random.normal(k, (width, width)) / np.sqrt(width) for k in keys[:depth]]
    return params, jax.random.normal(keys[-1], (batch, width))


def mlp_loss(width, depth=3, batch=64):
    params, x = mlp_params(width, depth, batch)

    def loss(params):
        h = x
        for W in params:
            h = jnp.tanh(h @ W)
        return jnp.mean(h**2)

    return loss, params


def _jvp(f, p, t):
    return jax.jvp(f, (p,), (t,))


def cheap_gradient(grid):
    rows = []
    for width in grid["widths"]:
        loss, params = mlp_loss(width)
        tangent = jax.tree.map(jnp.ones_like, params)
        progs = {
            "f": (loss, (params,)),
            "vjp": (jax.grad(loss), (params,)),
            "jvp": (functools.partial(_jvp, loss), (params, tangent)),
        }
        t = measure.compare(progs, rounds=grid["rounds"])
        fl = {k: measure.flops(fn, *a) for k, (fn, a) in progs.items()}
        rows.append(
            {
                "width": width,
                "params": sum(p.size for p in params),
                "omega_time_rev": t["vjp"].median / t["f"].median,
                "omega_time_fwd": t["jvp"].median / t["f"].median,
                "omega_flops_rev": fl["vjp"] / fl["f"],
                "omega_flops_fwd": fl["jvp"] / fl["f"],
            }
        )
        print(
            f"width {width:>5}: ω_rev time {rows[-1]['omega_time_rev']:.2f} flops "
            f"{rows[-1]['omega_flops_rev']:.2f}; ω_fwd time {rows[-1]['omega_time_fwd']:.2f} "
            f"flops {rows[-1]['omega_flops_fwd']:.2f}",
            flush=True,
        )
    return rows


def memory_vs_depth(grid, width=256, batch=128):
    """Compiled temp memory of d loss / d x by reverse mode and of one JVP along x.

    Differentiating with respect to the *input* (weights are arguments, not differentiated)
    keeps the output small, so the tape shows up in temp memory. Differentiated with respect
    to the weights, XLA parks the activations in the gradient output buffers (which are as
    large) and temp memory stays flat: a trap for anyone reading memory_analysis().
    """
    rows = []
    for depth in grid["depths"]:
        params, x = mlp_params(width, depth, batch)

        def loss(params, x):
            h = x
            for W in params:
                h = jnp.tanh(h @ W)
            return jnp.mean(h**2)

        def jvp_x(params, x, t, loss=loss):
            return jax.jvp(lambda x: loss(params, x), (x,), (t,))

        rows.append(
            {
                "depth": depth,
                "temp_rev": measure.temp_bytes(jax.grad(loss, argnums=1), params, x),
                "temp_fwd": measure.temp_bytes(jvp_x, params, x, x),
                "temp_f": measure.temp_bytes(loss, params, x),
                "temp_rev_wrt_weights": measure.temp_bytes(jax.grad(loss), params, x),
            }
        )
    return rows


def hvp_orders(grid):
    rows = []
    for width in (64, 256):
        loss, params = mlp_loss(width)
        v = jax.tree.map(lambda p: jnp.cos(p), params)
        progs = {
            o: (functools.partial(modes.hvp, loss, order=o), (params, v)) for o in modes.HVP_ORDERS
        }
        t = measure.compare(progs, rounds=grid["rounds"])
        outs = {o: jax.jit(fn)(*a) for o, (fn, a) in progs.items()}
        ref = outs["fwd-over-rev"]
        err = max(
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            for o in modes.HVP_ORDERS
            for a, b in zip(outs[o], ref, strict=True)
        )
        rows.append(
            {
                "width": width,
                **{o: t[o].median for o in modes.HVP_ORDERS},
                "max_rel_disagreement": err,
                "fastest": min(modes.HVP_ORDERS, key=lambda o: t[o].median),
            }
        )
        print(
            f"HVP width {width}: "
            + ", ".join(f"{o} {t[o].median * 1e3:.3f} ms" for o in modes.HVP_ORDERS),
            flush=True,
        )
    return rows


def plot_jacobian_grid(axes, sweep, sizes):
    """log10(t_fwd / t_rev) over (n, m) for each family; the text is XLA-estimate auto's pick."""
    for ax, name in zip(axes, ("mlp_tanh", "elementwise"), strict=True):
        cell = {(r["n"], r["m"]): r for r in sweep if r["family"] == name}
        values = np.array(
            [[np.log10(cell[n, m]["t_fwd"] / cell[n, m]["t_rev"]) for m in sizes] for n in sizes]
        )
        lim = np.max(np.abs(values))
        im = ax.imshow(values, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.plot([-0.5, len(sizes) - 0.5], [-0.5, len(sizes) - 0.5], "k--", lw=1)
        for i, n in enumerate(sizes):
            for j, m in enumerate(sizes):
                ax.text(j, i, cell[n, m]["auto"], ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_yticks(range(len(sizes)), sizes)
        ax.set_xlabel("m (outputs)")
        ax.set_ylabel("n (inputs)")
        ax.set_title(f"{name}: log10(t_fwd / t_rev); text = auto's pick")
        ax.figure.colorbar(im, ax=ax, shrink=0.8)


def plot_omega(ax, omega):
    widths = [r["width"] for r in omega]
    for key, style, label in (
        ("omega_time_rev", "o-", "ω rev (time)"),
        ("omega_flops_rev", "o--", "ω rev (FLOPs)"),
        ("omega_time_fwd", "s-", "ω fwd (time)"),
        ("omega_flops_fwd", "s--", "ω fwd (FLOPs)"),
    ):
        ax.plot(widths, [r[key] for r in omega], style, label=label)
    ax.axhspan(1, 5, color="gray", alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("MLP width (3 layers, batch 64)")
    ax.set_ylabel("cost / cost(f)")
    ax.set_title("cheap-gradient ratio ω")
    ax.legend(fontsize=8)


def plot_memory(ax, memory):
    depths = [r["depth"] for r in memory]
    for key, style, label in (
        ("temp_rev", "o-", "reverse (grad)"),
        ("temp_fwd", "s-", "forward (one JVP)"),
        ("temp_f", "^:", "f alone"),
        ("temp_rev_wrt_weights", "x--", "reverse w.r.t. weights (tape hidden in output buffers)"),
    ):
        ax.plot(depths, [r[key] / 2**20 for r in memory], style, label=label)
    ax.set_xlabel("depth (width 256, batch 128; derivative w.r.t. the input)")
    ax.set_ylabel("compiled temp memory (MiB)")
    ax.set_title("memory vs depth: reverse mode keeps a tape")
    ax.legend(fontsize=8)


def plot_hvps(ax, hvps):
    xs = np.arange(len(hvps))
    for i, o in enumerate(modes.HVP_ORDERS):
        ax.bar(xs + i * 0.25, [r[o] * 1e3 for r in hvps], 0.25, label=o)
    ax.set_xticks(xs + 0.25, [f"width {r['width']}" for r in hvps])
    ax.set_ylabel("ms per HVP")
    ax.set_title("Hessian-vector product orders (jit)")
    ax.legend(fontsize=8)


def plot_cost_model(ax, sweep):
    for name, marker in (("mlp_tanh", "o"), ("elementwise", "s")):
        sel = [r for r in sweep if r["family"] == name]
        predicted = [r["predicted_flops_fwd"] / r["predicted_flops_rev"] for r in sel]
        ax.scatter(
            predicted, [r["flops_fwd"] / r["flops_rev"] for r in sel], marker=marker, label=name
        )
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted FLOP ratio fwd/rev (choose_mode, basis='xla')")
    ax.set_ylabel("compiled FLOP ratio jacfwd/jacrev")
    ax.set_title("cost model vs XLA")
    ax.legend(fontsize=8)


def plot(sweep, omega, memory, hvps, sizes, path):
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    plot_jacobian_grid(axes[0, :2], sweep, sizes)
    plot_omega(axes[0, 2], omega)
    plot_memory(axes[1, 0], memory)
    plot_hvps(axes[1, 1], hvps)
    plot_cost_model(axes[1, 2], sweep)
    fig.suptitle(
        f"forward vs reverse mode on {measure.environment()['cpu_model']} ({jax.default_backend()})"
    )
    fig.tight_layout()
    results.save_figure(fig, path, dpi=110)


def summarize(sweep, omega, memory, hvps):
    entry = results.entry
    summary = [entry("grid_points", len(sweep), unit="count", text="grid points")]
    for key, label, basis in (
        ("auto_over_best", "auto (XLA costs)", "xla"),
        ("calibrated_over_best", "auto (calibrated)", "calibrated"),
        ("model_over_best", "auto (run-time model)", "model"),
        ("probe_over_best", "auto (model and probe, jacobian_fn's default)", "probe"),
    ):
        ratios = np.array([r[key] for r in sweep])
        misses = [
            f"{r['family']} n={r['n']} m={r['m']}: {r[key]:.2f}x" for r in sweep if r[key] > 1.10
        ]
        summary += [
            entry(
                "auto_within_10pct",
                float(np.mean(ratios <= 1.10)),
                unit="fraction",
                text=f"{label} within 10% of the faster mode (fraction)",
                basis=basis,
            ),
            entry(
                "auto_worst_ratio",
                float(ratios.max()),
                unit="ratio",
                text=f"{label} worst ratio to the faster mode",
                basis=basis,
            ),
            entry(
                "auto_misses",
                "; ".join(misses) or "none",
                unit="text",
                text=f"{label} misses (>10%)",
                basis=basis,
            ),
        ]

    def span(key):
        values = [r[key] for r in omega]
        return f"{min(values):.2f}..{max(values):.2f}"

    for mode, cost, text in (
        ("rev", "time", "ω rev (time), min..max over widths"),
        ("rev", "flops", "ω rev (FLOPs), min..max"),
        ("fwd", "time", "ω fwd (time), min..max"),
    ):
        span_ = span(f"omega_{cost}_{mode}")
        summary.append(entry("omega_span", span_, unit="text", text=text, mode=mode, cost=cost))
    return summary + [
        entry(
            "temp_rev_over_fwd_deepest",
            memory[-1]["temp_rev"] / max(memory[-1]["temp_fwd"], 1),
            unit="ratio",
            text="temp memory at max depth, rev / fwd",
        ),
        entry(
            "fastest_hvp_order",
            ", ".join(f"{r['width']}: {r['fastest']}" for r in hvps),
            unit="text",
            text="fastest HVP order (per width)",
        ),
        entry(
            "hvp_max_rel_disagreement",
            max(r["max_rel_disagreement"] for r in hvps),
            unit="",
            text="HVP orders max relative disagreement",
        ),
    ]


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv)
    grid = FULL if args.full else QUICK
    # The probe basis decides afresh at every point: no probe kept by an earlier run is read.
    forgotten = modes.forget_probes()
    sweep = jacobian_sweep("mlp_tanh", grid) + jacobian_sweep("elementwise", grid)
    omega = cheap_gradient(grid)
    memory = memory_vs_depth(grid)
    hvps = hvp_orders(grid)
    plot(sweep, omega, memory, hvps, grid["sizes"], args.out / "mode_cost.png")
    results.save(
        "mode_cost",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Forward vs reverse mode: Jacobian cost, cheap-gradient ratio, memory, HVPs",
        summary=summarize(sweep, omega, memory, hvps),
        data={
            "jacobian": sweep,
            "omega": omega,
            "memory": memory,
            "hvp": hvps,
            "machine_rates": modes.machine_rates(jax.default_backend()),
            **grid,
            "kept_probes_forgotten": forgotten,
        },
        figures=["mode_cost.png"],
        notes=(
            "Times are medians of interleaved rounds of the jit-compiled Jacobian; the text "
            "in each cell is what `auto` picked from XLA's cost estimates (basis='xla'); the "
            "summary also scores the run-time model (choose_mode's default), the model with "
            "its timed probe (basis='probe', jacobian_fn's default) and timing "
            "(basis='timing'), all restricted to fwd and rev here (experiments/jacobians.py "
            "adds the colorings)."
        ),
    )


if __name__ == "__main__":
    main()
