"""Sparse Hessians: star and acyclic colorings, HVP orders and the automatic choice.

For the energies of `bpjax.modes.hessian_examples` (banded with half-bandwidth 2, a 2-D
5-point stencil energy, an arrowhead (a coupling variable), 16 x 16 block-diagonal, and a
dense softplus-MLP loss in its weights, a pytree) at n ≈ 1024 and 4096 (quick; `--full`
adds 16384; the MLP: 256 and 1024, full 1024 and 4096), the steady-state time (float64,
dense `jax.hessian` layout) of `jax.hessian`, bpjax `dense`, `star`, `acyclic` and `auto`
(`hessian_fn`), and `asdex.hessian`, plus bpjax auto and asdex in BCOO output,
interleaved round by round in one run; the colors of each coloring
against asdex's star coloring and the row-count bound; every Hessian checked against
`jax.hessian` at the smallest size. Then Newton's method on the s x s nonlinear Poisson
energy (s = 256, 65,536 unknowns; full: s = 1000, 10^6) with a BCOO Hessian and a sparse
solve: gradient norms per iteration, and one Hessian by bpjax and by asdex.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.flatten_util import ravel_pytree

from bpjax import measure, modes, results
from bpjax.bench._stability import per_round
from bpjax.modes import hessian_examples as hx

try:  # peers: optional (pip install -e ".[peers]")
    import asdex
except ImportError:  # pragma: no cover - depends on the environment
    asdex = None

# The dense MLP Hessian costs n HVPs whatever the method (4 s a call at n = 4096 here):
# the quick profile stops it at 1024.
QUICK = {"sizes": [1024, 4096], "mlp": [256, 1024], "rounds": 9, "newton_grid": 256}
FULL = {"sizes": [1024, 4096, 16384], "mlp": [1024, 4096], "rounds": 9, "newton_grid": 1000}
DENSE_BYTES_LIMIT = 1 << 30  # skip dense-output contenders whose Hessian alone is larger
ASDEX_DENSE_LIMIT = 1024  # asdex colors dense patterns in ~n³ time: only this n and below


def _contenders(name, f, x, n, notes):
    """name -> (callable, setup seconds); and the bpjax colorings used."""
    found, colorings = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modes.SparsityWarning)
        auto = modes.hessian_fn(f, x)
        found["bpjax auto"] = (auto, auto.decision_seconds)
        order = auto.order
        start = time.perf_counter()
        found["bpjax dense"] = (
            modes.hessian_fn(f, x, mode="dense", order=order),
            time.perf_counter() - start,
        )
        if name != "mlp":  # a dense pattern's colorings are the dense Hessian again
            for kind in ("star", "acyclic"):
                start = time.perf_counter()
                hf = modes.hessian_fn(f, x, mode="sparse", coloring=kind, order=order)
                found[f"bpjax {kind}"] = (hf, time.perf_counter() - start)
                colorings[kind] = hf.coloring
            # Held as a BCOO, no dense n x n array is written: the cost of the products
            # and the recovery (its own decision: the recovery weighs more here).
            hf = modes.hessian_fn(f, x, sparse_output=True)
            found["bpjax auto BCOO"] = (hf, hf.decision_seconds)
    found["jax.hessian"] = (jax.jit(jax.hessian(f)), 0.0)
    if asdex is not None and (name != "mlp" or n <= ASDEX_DENSE_LIMIT):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = asdex.hessian(f, x, output_format="dense")
            found["asdex"] = (jax.jit(fn), time.perf_counter() - start)
            if name != "mlp":
                start = time.perf_counter()
                fn = asdex.hessian(f, x, output_format="bcoo")
                found["asdex BCOO"] = (jax.jit(fn), time.perf_counter() - start)
    elif asdex is not None:
        notes.append(f"asdex skipped on the dense MLP Hessian above n = {ASDEX_DENSE_LIMIT}")
    return found, colorings, auto


def _asdex_colors(f, x):
    if asdex is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(asdex.hessian_coloring(f, x).num_colors)


def _error(fns, f, x):
    want = jax.jit(jax.hessian(f))(x)
    worst = 0.0
    for fn in fns:
        got = fn(x)
        got = got.todense() if isinstance(got, jsparse.BCOO) else got
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            worst = max(worst, float(jnp.max(jnp.abs(a - b))))
    return worst


# Paired verdicts on bpjax against asdex, per output format: (ours, peer).
PAIRS = {"dense": ("bpjax auto", "asdex"), "BCOO": ("bpjax auto BCOO", "asdex BCOO")}
MIN_ROUNDS = 9  # a bootstrap over fewer rounds says little
MAX_ROUNDS = 61  # rounds are added (while a verdict is unresolved) up to this many
BUDGET_SECONDS = 20.0  # per grid point, spent adding rounds to unresolved verdicts


def _dense_floor(n):
    """What writing any n x n array computed from x costs here (one add per entry): the
    floor under every method with the dense output, whatever it computes."""

    def floor(x):
        return x[:, None] + x[None, :]

    return floor


def _time_until_resolved(found, x, rounds, same):
    """Interleaved rounds of every contender, ``rounds`` first, then more while a paired
    bootstrap (``bench._stability.ranking``) cannot say whether bpjax is ahead of, behind
    or tied with asdex in either output format, up to ``MAX_ROUNDS`` or ``BUDGET_SECONDS``.
    Returns the timings and the verdicts."""
    from bpjax.bench._stability import ranking, rounds_until_resolved

    steps = {}
    compile_seconds = {}
    for k, (fn, _) in found.items():
        compiled, seconds = measure.compile_fn(fn, x)
        steps[k] = lambda c=compiled: c(x)
        compile_seconds[k] = seconds
    calls = measure.calibrate(steps, min_round_seconds=0.01, warmup=1)

    def judge(samples):
        verdicts = {
            fmt: ranking(samples, ours, [peer], min_rounds=MIN_ROUNDS)
            for fmt, (ours, peer) in PAIRS.items()
            if ours in samples and peer in samples
        }
        for fmt, v in verdicts.items():
            v["same_program"] = same[fmt]
        return verdicts, all(
            v["verdict"] != "unresolved" or v["same_program"] for v in verdicts.values()
        )

    samples, verdicts = rounds_until_resolved(
        steps, calls, judge, rounds=rounds, budget=BUDGET_SECONDS, max_rounds=MAX_ROUNDS
    )
    timed = measure.summarize(samples, calls)
    for k, t in timed.items():
        timed[k] = dataclasses.replace(t, compile=compile_seconds[k])
    return timed, verdicts


def measure_point(name, N, rounds, notes, check=False):
    f, x, pattern = hx.family(name, N)
    n = ravel_pytree(x)[0].size
    if n * n * 8 > DENSE_BYTES_LIMIT:
        notes.append(f"{name} n={n}: skipped (a dense Hessian over {DENSE_BYTES_LIMIT} B)")
        return None
    jax.block_until_ready(jax.jit(f)(x))
    gc.collect()
    gc.disable()
    try:
        found, colorings, auto = _contenders(name, f, x, n, notes)
    finally:
        gc.enable()
    if name != "mlp" and "bpjax dense" in found:
        found["dense output floor"] = (_dense_floor(n), 0.0)
    # Where bpjax and asdex compile to one program, their ratio is only the spread between
    # two compilations of it: said so, and no rounds are added to resolve it.
    same = {
        fmt: measure.same_program(found[ours][0], found[peer][0], x)
        for fmt, (ours, peer) in PAIRS.items()
        if ours in found and peer in found
    }
    timed, verdicts = _time_until_resolved(found, x, rounds, same)
    row = {
        "family": name,
        "N": N,
        "n": n,
        "nnz": int(pattern.nnz),
        "contenders": {k: {**t.as_dict(), "setup": found[k][1]} for k, t in timed.items()},
        "colors": {k: int(c.count) for k, c in colorings.items()}
        | {
            "asdex star": _asdex_colors(f, x) if name != "mlp" else None,
            "row-count bound": int(np.diff(pattern.indptr).max()),
        },
        "substitution rounds": (
            int(colorings["acyclic"].substitution.rounds) if "acyclic" in colorings else None
        ),
        "verdicts": verdicts,
        "auto": {
            "method": auto.method,
            "order": auto.order,
            "decision_seconds": auto.decision_seconds,
            "reason": auto.reason,
        },
    }
    if check:
        hessians = [fn for k, (fn, _) in found.items() if k != "dense output floor"]
        row["max error vs jax.hessian"] = _error(hessians, f, x)
    print(
        f"{name:>15} n={n:>6}: "
        + ", ".join(f"{k} {t.median * 1e3:.3g} ms" for k, t in timed.items())
        + f" | colors {row['colors']}",
        flush=True,
    )
    return row


def acceptance(rows):
    entry, out = results.entry, []
    at = {(r["family"], r["N"]): r for r in rows}
    for (family, N), r in sorted(at.items()):
        c = r["contenders"]
        if N != 4096 or "bpjax auto" not in c:
            continue
        auto = c["bpjax auto"]["median"]
        point = {"family": family, "n": N}
        if family == "stencil":
            text = "stencil n=4096: jax.hessian ÷ bpjax auto, target ≥ 50"
            value = c["jax.hessian"]["median"] / auto
            out.append(
                entry(
                    "jax_hessian_over_auto", value, unit="ratio", text=text, **point, output="dense"
                )
            )
            if "bpjax auto BCOO" in c:
                text = "stencil n=4096: jax.hessian ÷ bpjax auto in BCOO"
                value = c["jax.hessian"]["median"] / c["bpjax auto BCOO"]["median"]
                out.append(
                    entry(
                        "jax_hessian_over_auto",
                        value,
                        unit="ratio",
                        text=text,
                        **point,
                        output="bcoo",
                    )
                )
        if "asdex BCOO" in c and "bpjax auto BCOO" in c:
            text = f"{family} n=4096: bpjax auto ÷ asdex, both BCOO"
            value = c["bpjax auto BCOO"]["median"] / c["asdex BCOO"]["median"]
            out.append(
                entry("auto_over_asdex", value, unit="ratio", text=text, **point, output="bcoo")
            )
        if "asdex" in c:
            text = f"{family} n=4096: bpjax auto ÷ asdex, target ≤ 1.0"
            value = auto / c["asdex"]["median"]
            out.append(
                entry("auto_over_asdex", value, unit="ratio", text=text, **point, output="dense")
            )
        if "dense output floor" in c:
            text = f"{family} n=4096: bpjax auto ÷ writing any n x n array (the dense floor)"
            value = auto / c["dense output floor"]["median"]
            out.append(
                entry("auto_over_floor", value, unit="ratio", text=text, **point, output="dense")
            )
        for fmt, v in r.get("verdicts", {}).items():
            output = fmt.lower()
            text = f"{family} n=4096, {fmt}: bpjax auto ÷ asdex {per_round(v)}" + (
                " (the same compiled program)" if v.get("same_program") else ""
            )
            out.append(
                entry(
                    "paired_over_asdex", v["ratio"], unit="ratio", text=text, **point, output=output
                )
            )
            out.append(
                entry(
                    "verdict_vs_asdex",
                    "same program" if v.get("same_program") else v["verdict"],
                    unit="text",
                    text=f"{family} n=4096, {fmt}: bpjax auto against asdex",
                    **point,
                    output=output,
                )
            )
    return out


def newton_run(s, notes):
    """Newton on the s x s nonlinear Poisson energy: gradient norms, per-iteration costs,
    and one sparse Hessian by bpjax and by asdex (BCOO) timed side by side."""
    f, x0 = hx.stencil(s), jnp.zeros(s * s)
    start = time.perf_counter()
    x, history = hx.newton(f, x0)
    total = time.perf_counter() - start
    record = {"grid": s, "n": s * s, "history": history, "seconds": total}
    programs = {"bpjax": (modes.hessian_fn(f, x0, sparse_output=True), (x,))}
    if asdex is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fn = asdex.hessian(f, x0, output_format="bcoo")
            record["asdex setup seconds"] = time.perf_counter() - start
        programs["asdex"] = (jax.jit(fn), (x,))
    timed = measure.compare(programs, rounds=3, warmup=1, min_round_seconds=0.01)
    record["hessian seconds"] = {k: t.median for k, t in timed.items()}
    record["dense Hessian bytes"] = (s * s) ** 2 * 8
    notes.append(f"Newton n={s * s}: no dense Hessian ({(s * s) ** 2 * 8 / 1e9:.0f} GB)")
    print(
        f"newton n={s * s}: grad norms "
        + " ".join(f"{h['grad_norm']:.1e}" for h in history)
        + f"; Hessian per call {record['hessian seconds']}",
        flush=True,
    )
    return record


def _options(parser):
    parser.add_argument("--sizes", help="comma-separated sizes instead of the profile's")
    parser.add_argument("--families", help="comma-separated families (default: all)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = results.parse_args(__doc__.splitlines()[0], argv, configure=_options)
    jax.config.update("jax_enable_x64", True)
    grid = dict(FULL if args.full else QUICK)
    if args.sizes:
        grid["sizes"] = [int(s) for s in args.sizes.split(",")]
    families = args.families.split(",") if args.families else hx.FAMILIES
    notes = [] if asdex is not None else ["peer asdex not installed: skipped"]
    # Each auto decision times its candidates afresh, as a first run on a machine does.
    forgotten = modes.forget_probes()
    rows = []
    for name in families:
        for i, N in enumerate(grid["mlp"] if name == "mlp" else grid["sizes"]):
            row = measure_point(name, N, grid["rounds"], notes, check=i == 0)
            if row is not None:
                rows.append(row)
    newton = newton_run(grid["newton_grid"], notes)
    entry, n = results.entry, newton["n"]
    summary = [entry("grid_points", len(rows), unit="count", text="grid points (family × size)")]
    summary += acceptance(rows)
    text = f"Newton n={n}: iterations to ‖∇f‖ ≤ 1e-10"
    summary.append(
        entry("newton_iterations", len(newton["history"]) - 1, unit="count", text=text, n=n)
    )
    for who, seconds in newton["hessian seconds"].items():
        text = f"Newton n={n}: one sparse Hessian, {who} (s)"
        summary.append(entry("newton_hessian_seconds", seconds, unit="s", text=text, n=n, who=who))
    error = max((r.get("max error vs jax.hessian", 0.0) for r in rows), default=0.0)
    text = "largest error vs jax.hessian (smallest size)"
    summary.append(entry("max_error_vs_jax_hessian", error, unit="", text=text))
    results.save(
        "hessians",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Sparse Hessians: star and acyclic colorings and the automatic choice vs jax, asdex",
        summary=summary,
        data={
            "points": rows,
            "newton": newton,
            **grid,
            "notes": notes,
            "kept_probes_forgotten": forgotten,
        },
        notes=(
            "Steady-state medians of interleaved rounds, float64, every contender "
            "jit-compiled, dense jax.hessian layout. 'setup' is each contender's detection, "
            "coloring and (for bpjax auto) timed choice. Skipped: "
            + ("; ".join(dict.fromkeys(notes)) or "none")
        ),
    )


if __name__ == "__main__":
    main()
