"""Reverse mode through loops of unknown length: remat.while_loop against Equinox and a padded scan.

A loop ``x ← tanh(x W)`` (state (16, 64), float32) runs until a step counter in its state
reaches L, a number the loop only learns by running. For c in {4, 10, 30}:

* body evaluations per gradient ÷ the offline optimum t(L, c) + L + 1 (revolve knowing L),
  from the schedule for every L on a log grid to 10^5, and counted at run time (a host
  callback in the body) for bpjax and for Equinox's checkpointed while loop at the timed L;
* compiled temporary memory of the gradient w.r.t. the state;
* time per gradient, interleaved (bpjax, Equinox, ``lax.scan`` padded to a known maximum).

Under ``vmap``: Equinox's own speed case (vmap of grad over two loops that stop at different
steps, L = 2c, c in {100, 10 000}), bpjax against Equinox.

Then two real uses, each gradient checked against float64 central differences: an adaptive
Dormand-Prince integration of Van der Pol (step rejection, tolerance 1e-6) differentiated
w.r.t. μ, and a fixed-point iteration run to a tolerance differentiated w.r.t. its bias.

Quick profile: timing and counts at L in {100, 1000}. ``--full``: L in {100, 1000, 10 000}.
Equinox is skipped with a message where it is not installed.
"""

from __future__ import annotations

import functools
import math
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # the real uses are checked in float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from bpjax import measure, remat, results  # noqa: E402

BATCH, WIDTH = 16, 64
CHECKPOINTS = (4, 10, 30)

try:
    import equinox.internal as eqxi
except ImportError:  # the peers extra is optional
    eqxi = None


def problem(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(k1, (WIDTH, WIDTH), jnp.float32) / math.sqrt(WIDTH)
    return w, jax.random.normal(k2, (BATCH, WIDTH), jnp.float32)


def body_of(w, tick=None):
    def body(state):
        x, i = state
        if tick is not None:
            jax.debug.callback(tick, x[0, 0])
        return jnp.tanh(x @ w), i + 1

    return body


def loss_fn(how, n_steps, c, tick=None):
    """``loss(w, x0)``: the sum of the final state after n_steps steps, looped by ``how``."""

    def loss(w, x0):
        body, init = body_of(w, tick), (x0, jnp.int32(0))
        going = lambda s: s[1] < n_steps  # noqa: E731  (L known only by running)
        if how == "bpjax":
            x = remat.while_loop(going, body, init, checkpoints=c)[0]
        elif how == "equinox":
            x = eqxi.while_loop(going, body, init, kind="checkpointed", checkpoints=c)[0]
        else:  # a scan padded to the maximum, each step masked once the loop is done

            def step(s, _):
                return jax.tree.map(functools.partial(jnp.where, going(s)), body(s), s), None

            x = lax.scan(step, init, None, length=padded_length(n_steps))[0][0]
        return jnp.sum(x)

    return loss


def padded_length(n_steps):
    """The maximum a padded scan must be compiled for: the next power of ten."""
    return 10 ** math.ceil(math.log10(max(n_steps, 1)))


def contenders():
    return ["bpjax", "equinox", "scan (padded)"] if eqxi else ["bpjax", "scan (padded)"]


def ratio_curve(grid):
    rows = []
    for c in CHECKPOINTS:
        for n in grid:
            optimum = remat.optimal_advances(n, c) + n + 1
            rows.append(
                {"c": c, "L": n, "bpjax": remat.online_evaluations(n, c), "optimum": optimum}
            )
    return rows


def counted(how, n_steps, c):
    calls = [0]

    def tick(_):
        calls[0] += 1

    w, x0 = problem()
    grad = jax.jit(jax.grad(loss_fn(how, n_steps, c, tick), argnums=1))
    jax.block_until_ready(grad(w, x0))
    calls[0] = 0
    jax.block_until_ready(grad(w, x0))
    return calls[0]


def timed(fns, rounds, row):
    """Interleaved rounds of ``fns``; median and 10th/90th percentiles written into ``row``."""
    timings = measure.compare(fns, rounds=rounds, min_round_seconds=0.05, warmup=1)
    for how, t in timings.items():
        row[f"{how} seconds"] = t.median
        row[f"{how} p10"], row[f"{how} p90"] = t.p10, t.p90
    return timings


def sweep(depths, rounds):
    rows = []
    w, x0 = problem()
    for n in depths:
        for c in CHECKPOINTS:
            optimum = remat.optimal_advances(n, c) + n + 1
            row = {"L": n, "c": c, "optimum": optimum, "model": remat.online_evaluations(n, c)}
            fns = {}
            for how in contenders():
                if how == "scan (padded)" and c != CHECKPOINTS[0]:
                    continue  # the padded scan keeps every step: c does not apply
                fn = jax.grad(loss_fn(how, n, c), argnums=1)
                fns[how] = (fn, (w, x0))
                row[f"{how} temp"] = measure.temp_bytes(fn, w, x0)
                if how != "scan (padded)":
                    row[f"{how} evaluations"] = counted(how, n, c)
            timings = timed(fns, rounds, row)
            rows.append(row)
            print(
                f"  L={n:6d} c={c:2d}  evaluations bpjax {row['bpjax evaluations']} "
                f"(model {row['model']}, optimum {optimum})"
                + (f" equinox {row['equinox evaluations']}" if eqxi else "")
                + "  ms/grad "
                + " ".join(f"{h} {row[f'{h} seconds'] * 1e3:.2f}" for h in timings)
                + "  temp MiB "
                + " ".join(f"{h} {row[f'{h} temp'] / 2**20:.2f}" for h in fns),
                flush=True,
            )
    return rows


# --- Under vmap: Equinox's own speed case ----------------------------------------------------

# Equinox's tests/test_while_loop.py::test_speed_grad_checkpointed_while: a batch of two
# loops (their steps start at 0 and 10, so the lanes stop at different steps) of 2c steps
# rotating (re, im) by an MLP's angle, vmap of grad; Equinox asserts under 0.5 s at c = 10^4.
VMAP_CHECKPOINTS = (100, 10_000)


def _rotation_mlp(key):
    keys = jax.random.split(key, 3)
    shapes = [(2, 2), (2, 2), (2, 1)]
    return [
        (jax.random.normal(k, s, jnp.float32) / math.sqrt(2), jnp.zeros(s[1:], jnp.float32))
        for k, s in zip(keys, shapes, strict=True)
    ]


def rotation_grad(how, c, mlp):
    def body(carry):
        step, val = carry
        x = val
        for w, b in mlp[:-1]:
            x = jax.nn.relu(x @ w + b)
        (theta,) = x @ mlp[-1][0] + mlp[-1][1]
        z = (val[0] + 1j * val[1]) * jnp.exp(1j * theta)
        return step + 1, jnp.stack([jnp.real(z), jnp.imag(z)])

    def loss(val, start):
        going = lambda s: s[0] < 2 * c  # noqa: E731
        if how == "bpjax":
            out = remat.while_loop(going, body, (start, val), checkpoints=c)
        else:
            out = eqxi.while_loop(going, body, (start, val), kind="checkpointed", checkpoints=c)
        return jnp.sum(out[1])

    return jax.vmap(jax.grad(loss))


def vmap_sweep(rounds):
    rows = []
    mlp = _rotation_mlp(jax.random.key(5))
    val = jax.random.normal(jax.random.key(6), (2, 2), jnp.float32)
    starts = jnp.array([0, 10], jnp.int32)
    for c in VMAP_CHECKPOINTS:
        fns = {how: (rotation_grad(how, c, mlp), (val, starts)) for how in contenders()[:-1]}
        row = {"c": c, "L": 2 * c, "lanes": 2}
        timings = timed(fns, rounds, row)
        rows.append(row)
        print(
            f"  vmap of grad, c={c}, L={2 * c}, 2 lanes: ms "
            + " ".join(f"{h} {row[f'{h} seconds'] * 1e3:.1f}" for h in timings),
            flush=True,
        )
    return rows


# --- Two real uses -------------------------------------------------------------------------

# Dormand-Prince 5(4): Butcher tableau (Dormand & Prince 1980), FSAL not exploited.
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def van_der_pol(mu, t_end=6.0, *, loop, tol=1e-6):
    """y(t_end) of y'' = μ(1 − y²)y' − y, y(0) = (2, 0), adaptive DP5(4) with rejections."""

    def f(t, y):
        del t
        return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def step(state):
        t, y, h, n = state
        h = jnp.minimum(h, t_end - t)
        ks = []
        for a, c in zip(_DP_A, _DP_C, strict=True):
            yi = y + h * sum((aj * kj for aj, kj in zip(a, ks, strict=False)), jnp.zeros_like(y))
            ks.append(f(t + c * h, yi))
        y5 = y + h * sum(b * k for b, k in zip(_DP_B5, ks, strict=True))
        y4 = y + h * sum(b * k for b, k in zip(_DP_B4, ks, strict=True))
        err = jnp.max(jnp.abs(y5 - y4) / (tol + tol * jnp.abs(y5)))
        accept = err <= 1.0
        # The controller is differentiated too, so the gradient is that of the whole
        # computation, which is what central differences measure.
        factor = jnp.clip(0.9 * (err + 1e-16) ** -0.2, 0.2, 5.0)
        return (
            jnp.where(accept, t + h, t),
            jnp.where(accept, y5, y),
            h * factor,
            n + 1,
        )

    init = (jnp.float64(0.0), jnp.array([2.0, 0.0]), jnp.float64(0.01), jnp.int32(0))
    return loop(lambda s: s[0] < t_end, step, init)


def fixed_point(b, *, loop, tol=1e-10):
    """x* = tanh(W x* + b), iterated from 0 until the update is below ``tol``."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)) * 0.15)

    def step(state):
        x, _, n = state
        new = jnp.tanh(w @ x + b)
        return new, jnp.max(jnp.abs(new - x)), n + 1

    init = (jnp.zeros(8), jnp.float64(jnp.inf), jnp.int32(0))
    return loop(lambda s: s[1] > tol, step, init)


def central_difference(f, x, eps):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


def real_uses(c):
    loop = functools.partial(remat.while_loop, checkpoints=c)
    plain = lax.while_loop
    out = {}

    def vdp(mu, how):
        return jnp.sum(van_der_pol(mu, loop=how)[1])

    mu = 1.5
    steps = int(van_der_pol(mu, loop=plain)[3])
    grad = float(jax.jit(jax.grad(lambda m: vdp(m, loop)))(mu))
    fd = float(central_difference(jax.jit(lambda m: vdp(m, plain)), mu, 1e-6))
    out["van der pol"] = {"steps": steps, "grad": grad, "central difference": fd}
    out["van der pol"]["relative error"] = abs(grad - fd) / abs(fd)

    b0 = jnp.linspace(-0.5, 0.5, 8)

    def fp(s, how):
        return jnp.sum(fixed_point(b0 + s, loop=how)[0] ** 2)

    steps = int(fixed_point(b0, loop=plain)[2])
    grad = float(jax.jit(jax.grad(lambda s: fp(s, loop)))(0.0))
    fd = float(central_difference(jax.jit(lambda s: fp(s, plain)), 0.0, 1e-6))
    out["fixed point"] = {"steps": steps, "grad": grad, "central difference": fd}
    out["fixed point"]["relative error"] = abs(grad - fd) / abs(fd)
    for name, r in out.items():
        print(
            f"  {name}: {r['steps']} steps, grad {r['grad']:.10g}, central difference "
            f"{r['central difference']:.10g}, relative error {r['relative error']:.1e}"
        )
    return out


def jvp_support():
    w, x0 = problem()
    out = {}
    for how in contenders()[:-1]:
        try:
            jax.jvp(functools.partial(loss_fn(how, 10, 4), w), (x0,), (x0,))
            out[how] = "works"
        except Exception as err:  # noqa: BLE001  (recorded, not handled)
            out[how] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        print(f"  jax.jvp through {how}: {out[how]}")
    return out


def plot(out, curve, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, c in enumerate(CHECKPOINTS):
        pts = [r for r in curve if r["c"] == c]
        ax.plot(
            [r["L"] for r in pts],
            [r["bpjax"] / r["optimum"] for r in pts],
            "-",
            color=f"C{k}",
            label=f"bpjax, c = {c}",
        )
        ax.axvline(remat.beta(c, 2), color=f"C{k}", ls=":", lw=0.8)
        eq = [r for r in rows if r["c"] == c and "equinox evaluations" in r]
        if eq:
            ax.plot(
                [r["L"] for r in eq],
                [r["equinox evaluations"] / r["optimum"] for r in eq],
                "x",
                color=f"C{k}",
                ms=9,
                label=f"Equinox (counted), c = {c}",
            )
    ax.set(xscale="log", xlabel="trip count L (unknown to the loop)")
    ax.set(ylabel="body evaluations ÷ offline optimum t(L, c) + L + 1")
    ax.set_title("Online checkpointing: evaluations per gradient (dotted: L = β(c, 2))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    results.save_figure(fig, out / "online_remat.png", dpi=120)
    plt.close(fig)


def summarize(curve, rows, uses, jvp, vmapped=()):
    worst = max(curve, key=lambda r: r["bpjax"] / r["optimum"])
    summary = []

    def put(name, value, unit, text, **at):
        summary.append(results.entry(name, value, unit=unit, text=text, **at))

    put("device", jax.devices()[0].device_kind, "text", "device")
    ratio, text = worst["bpjax"] / worst["optimum"], "worst evaluations / optimum (L to 1e5)"
    put("worst_evaluations_over_optimum", ratio, "ratio", text)
    put("worst_at", f"({worst['L']}, {worst['c']})", "text", "worst at (L, c)")
    optimal = all(r["bpjax"] == r["optimum"] for r in curve if r["L"] <= remat.beta(r["c"], 2))
    put("optimal_up_to_beta2", optimal, "bool", "optimal at every L <= beta(c, 2)")
    counted = all(r["bpjax evaluations"] == r["model"] for r in rows)
    put("counted_equals_model", counted, "bool", "counted == model")
    for c in CHECKPOINTS:
        temps = [r["bpjax temp"] for r in rows if r["c"] == c]
        text = f"bpjax temp MiB, c={c} (max/min over L)"
        span = f"{max(temps) / 2**20:.3f} ({max(temps) / min(temps):.3f})"
        put("bpjax_temp_mib_max_min", span, "text", text, c=c)
    if eqxi:
        fewer = all(r["bpjax evaluations"] <= r["equinox evaluations"] for r in rows)
        put("evaluations_at_most_equinox", fewer, "bool", "evaluations <= Equinox at every point")
        speed = [r["bpjax seconds"] / r["equinox seconds"] for r in rows]
        median = float(np.median(speed))
        put("time_over_equinox_median", median, "ratio", "time bpjax / Equinox, median")
        at_most = f"{sum(s <= 1.0 for s in speed)}/{len(speed)}"
        put("time_at_most_equinox_at", at_most, "text", "time bpjax / Equinox <= 1.0 at")
    for r in vmapped:
        at = {"c": r["c"], "L": r["L"]}
        put("vmap_bpjax_ms", r["bpjax seconds"] * 1e3, "ms", "vmap of grad, bpjax ms", **at)
        if eqxi:
            text = "vmap of grad, Equinox ms"
            put("vmap_equinox_ms", r["equinox seconds"] * 1e3, "ms", text, **at)
            ratio = r["bpjax seconds"] / r["equinox seconds"]
            put("vmap_time_over_equinox", ratio, "ratio", "vmap of grad, bpjax / Equinox", **at)
    for name, r in uses.items():
        text = f"{name}: grad vs central difference (rel. error)"
        put("grad_rel_error_vs_central_difference", r["relative error"], "", text, loop=name)
    put("jax_jvp", "; ".join(f"{k}: {v.split(':')[0]}" for k, v in jvp.items()), "text", "jax.jvp")
    return summary


NOTES = (
    "Evaluations count the body's forward evaluations in one gradient (the forward pass, the "
    "recomputation and the one inside each step's VJP), against revolve knowing L in advance. "
    "Memory is XLA's compiled temporary bytes of the gradient w.r.t. the state. Times are "
    "medians of interleaved rounds on the machine recorded beside them; on a shared machine "
    "they are indicative only."
)


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv)
    depths = [100, 1000, 10_000] if args.full else [100, 1000]
    start = time.perf_counter()
    grid = sorted({int(round(v)) for v in np.logspace(0, 5, 160)} | {1, 2, 3})
    grid += [remat.beta(c, k) + d for c in CHECKPOINTS for k in (2, 3) for d in (0, 1, 2)]
    grid = sorted(g for g in set(grid) if g <= 100_000)
    print(f"schedule: evaluations / optimum for {len(grid)} trip counts to 1e5", flush=True)
    curve = ratio_curve(grid)
    if eqxi is None:
        print("equinox is not installed: its checkpointed while loop is skipped", flush=True)
    print(f"timed sweep, L in {depths}", flush=True)
    rows = sweep(depths, rounds=9 if args.full else 5)
    print("vmap of grad, lanes stopping at different steps (Equinox's speed case)", flush=True)
    vmapped = vmap_sweep(rounds=9 if args.full else 5)
    print("real uses (float64)", flush=True)
    uses = real_uses(c=10)
    jvp = jvp_support()
    plot(args.out, curve, rows)
    summary = summarize(curve, rows, uses, jvp, vmapped)
    seconds = time.perf_counter() - start
    summary.append(results.entry("seconds", seconds, unit="s", text="seconds"))
    for key, value in ((e["text"], e["value"]) for e in summary):
        print(f"  {key}: {value}")
    results.save(
        "online_remat",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Reverse mode through loops of unknown length (online checkpointing)",
        summary=summary,
        data={
            "batch": BATCH,
            "width": WIDTH,
            "checkpoints": list(CHECKPOINTS),
            "ratio_curve": curve,
            "sweep": rows,
            "vmap": vmapped,
            "real_uses": uses,
            "jvp": jvp,
        },
        figures=["online_remat.png"],
        notes=NOTES,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
