"""Tables of results for the README and the findings pages, built from the result records.

Each builder is a function of the records by name (``{"depth": record, ...}``, as
:func:`bpjax.report.readme_tables` loads them from ``results/``) returning a Markdown table.
:data:`TABLES` names them; a Markdown file asks for one with a block

    <!-- table:NAME -->
    <!-- /table -->

that ``python -m bpjax.report --readme`` fills, so every number in such a table is the
committed result's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

__all__ = [
    "TABLES",
    "SOURCES",
    "provenance",
    "depth_table",
    "vanishing_table",
    "exploding_growth_table",
    "exploding_training_table",
    "headlines_table",
    "rules_overhead_table",
    "remat_table",
    "jacobians_table",
    "jacobian_colors_table",
    "bench_table",
    "online_remat_table",
    "online_remat_uses_table",
    "hessians_table",
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _compact(x: float) -> str:
    """Two significant digits, in plain notation from 0.01 to 9999 and ``3.4e15`` outside."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    exponent = math.floor(math.log10(abs(x)))
    if -2 <= exponent <= 3:
        return f"{x:.{max(0, 1 - exponent)}f}"
    mantissa = x / 10**exponent
    if round(abs(mantissa), 1) >= 10:  # 9.96e7 rounds up to 1.0e8
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.1f}e{exponent}"


def _number(value) -> float:
    """A JSON number, or NaN for the strings results.save writes for non-finite values."""
    return float(value) if isinstance(value, int | float) else float("nan")


def depth_table(records: dict) -> str:
    """Test accuracy per activation and architecture (rows) and depth (columns), ``depth``.

    With several seeds a cell is their mean.
    """
    rec = records["depth"]
    cells: dict[tuple, list[float]] = {}
    for run in rec["data"]["runs"]:
        key = (run["activation"], run["arch"], run["depth"])
        cells.setdefault(key, []).append(_number(run["test_acc"]))
    depths = sorted({d for _, _, d in cells})
    rows = list(dict.fromkeys((a, arch) for a, arch, _ in cells))
    seeds = len(rec["data"]["seeds"])
    label = "test accuracy" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    body = [
        [f"{a} {arch}"] + [f"{sum(cells[a, arch, d]) / len(cells[a, arch, d]):.2f}" for d in depths]
        for a, arch in rows
    ]
    return _table([label] + [f"depth {d}" for d in depths], body)


_RATIO = re.compile(r"first/last hidden grad norm, (\w+) (\w+) L=(\d+)")


def vanishing_table(records: dict) -> str:
    """First/last hidden-layer gradient-norm ratio per activation and architecture and depth
    (``vanishing``), and how many layers' float32 gradients underflow to exactly 0."""
    rec = records["vanishing"]
    ratios = {
        (m[1], m[2], int(m[3])): v
        for k, v in rec["summary"].items()
        if (m := _RATIO.fullmatch(k)) is not None
    }
    depths = sorted({d for _, _, d in ratios})
    deepest = depths[-1]
    zeros = rec["data"]["float32_layers_with_zero_gradient"]
    body = []
    for act, arch in dict.fromkeys((a, arch) for a, arch, _ in ratios):
        zero = zeros.get(f"{act}/{arch}/{deepest}")
        body.append(
            [f"{act}, {arch}"]
            + [_compact(ratios[act, arch, d]) for d in depths]
            + [f"{zero} of {deepest}" if zero else "none"]
        )
    header = ["first / last hidden layer"] + [f"L = {d}" for d in depths]
    return _table(header + [f"float32 layers at exactly 0, L = {deepest}"], body)


def exploding_growth_table(records: dict) -> str:
    """Fitted log-growth of the gradient norm per layer at each gain (``exploding`` (a))."""
    slopes = records["exploding"]["data"]["slopes"]
    body = [[g, f"{s:.2f}", f"{math.log(float(g)):.2f}"] for g, s in slopes.items()]
    return _table(["gain", "fitted d log‖g‖ / d layer", "log gain"], body)


def _final_loss(losses) -> str:
    values = [_number(v) for v in losses[-20:]]
    return _compact(sum(values) / len(values)) if all(map(math.isfinite, values)) else "—"


def exploding_training_table(records: dict) -> str:
    """The training runs of ``exploding``: (b) SGD under each clipping, (d) residual branch
    scales; where each diverged, its final loss (mean of the last 20 steps) and accuracy."""
    data = records["exploding"]["data"]
    body = []
    for part, runs in (("(b)", data["divergence"]), ("(d)", data["residual"])):
        for label, run in runs.items():
            acc = run["test_acc"]
            acc = _number(acc[-1] if acc else "nan") if isinstance(acc, list) else _number(acc)
            diverged = run["diverged_at"]
            where = f", {run['nonfinite_layer']}" if run.get("nonfinite_layer") else ""
            norm = run.get("init_grad_norm")
            body.append(
                [
                    f"{part} {label}",
                    _compact(norm) if norm is not None else "—",
                    "never" if diverged is None else f"step {diverged}{where}",
                    str(len(run["loss"])),
                    _final_loss(run["loss"]),
                    "—" if math.isnan(acc) else f"{acc:.2f}",
                ]
            )
    header = ["run", "‖g‖ at init", "diverged", "steps run", "final loss", "test accuracy"]
    return _table(header, body)


def _summary(records: dict, name: str, key: str):
    """``records[name]["summary"][key]``, or an error naming the experiment that renamed it."""
    summary = records[name]["summary"]
    if key not in summary:
        raise KeyError(
            f"tables: results/{name}.json has no summary entry {key!r}; the experiment renamed "
            f"it, so update HEADLINES in bpjax/tables.py (its entries: {sorted(summary)})"
        )
    return summary[key]


def _largest(name: str, prefix: str) -> Callable[[dict], str]:
    """The last summary key of record ``name`` starting with ``prefix`` (sizes are run from
    smallest to largest), as a function of the records."""

    def key(records: dict) -> str:
        keys = [k for k in records[name]["summary"] if k.startswith(prefix)]
        if not keys:
            raise KeyError(f"tables: results/{name}.json has no summary entry starting {prefix!r}")
        return keys[-1]

    return key


def _ratio(x) -> str:
    x = _number(x)
    return f"{x:.0f}×" if x >= 10 else f"{x:.2f}×"


def _size(label: str) -> str:
    """``"1024-1024-…-10 b512"`` as ``"8 × 1024 hidden, batch 512"``."""
    dims, batch = label.split(" b")
    hidden = dims.split("-")[1:-1]
    if len(set(hidden)) == 1:
        return f"{len(hidden)} × {hidden[0]} hidden, batch {batch}"
    return f"{dims}, batch {batch}"


# (what it shows, record, summary key or a function of the records giving one, format).
# One line per experiment's main figure; the findings pages carry the rest. ``{size}`` in
# the text is the size named after the key's ``@``.
HEADLINES: list[tuple[str, str, str | Callable[[dict], str], Callable]] = [
    (
        "hand-written VJPs (`rev`) ÷ JAX autodiff (`ref`), training step, 784-512-512-10",
        "rules_overhead",
        "rev / ref @ 784-512-512-10 b256",
        _ratio,
    ),
    (
        "first ÷ last hidden layer's gradient norm, plain sigmoid net, 64 layers",
        "vanishing",
        "first/last hidden grad norm, sigmoid plain L=64",
        _compact,
    ),
    (
        "… the same with residual connections",
        "vanishing",
        "first/last hidden grad norm, sigmoid residual L=64",
        _compact,
    ),
    (
        "test accuracy at depth 64, plain sigmoid net (chance is 0.10)",
        "depth",
        "sigmoid plain test acc @ depth 64",
        lambda x: f"{_number(x):.2f}",
    ),
    (
        "… the same with residual connections",
        "depth",
        "sigmoid residual test acc @ depth 64",
        lambda x: f"{_number(x):.2f}",
    ),
    (
        "automatic fwd/rev choice (the default run-time model) within 10% of the faster mode, "
        "share of the fwd/rev grid",
        "mode_cost",
        "auto (run-time model) within 10% of the faster mode (fraction)",
        lambda x: f"{_number(x):.0%}",
    ),
    (
        "`jacobian_fn`'s choice among fwd, rev and colorings within 10% of the best contender "
        "(asdex and sparsejac included), dense output, share of the 8-family grid",
        "jacobians",
        "auto (dense output, steady state, the chosen method's own timing): within 10% of the "
        "best, fraction of 25",
        lambda x: f"{_number(x):.0%}",
    ),
    (
        "… its first use told `calls=10` (decision + compilation + 10 calls, every contender "
        "compiled cold; bpjax may then compile at LLVM -O0, peers keep their defaults) within "
        "10% of the best contender's, share of all 41 points",
        "jacobians",
        "auto (all outputs, calls=10: setup + compile + 10 calls, every contender): within 10% "
        "of the best, fraction of 41",
        lambda x: f"{_number(x):.0%}",
    ),
    (
        "sparse Jacobian by coloring: faster of jacfwd/jacrev ÷ bpjax, tridiagonal n = 4096",
        "jacobians",
        "tridiagonal n=4096: faster of jacfwd/jacrev ÷ bpjax sparse (columns, BCOO), target ≥ 50",
        _ratio,
    ),
    (
        "bpjax sparse ÷ asdex on the same tridiagonal Jacobian (BCOO output; below 1: faster)",
        "jacobians",
        "tridiagonal n=4096: bpjax sparse ÷ asdex, both BCOO, target ≤ 1.0",
        _ratio,
    ),
    (
        "arrowhead n = 2048: best one-sided method ÷ mixed-mode bicoloring (BCOO output)",
        "jacobians",
        "arrowhead n=2048 (bcoo): best of fwd/rev/one-sided coloring ÷ bicoloring, target ≥ 20",
        _ratio,
    ),
    (
        "√L checkpointing: compiled temporary memory ÷ storing every activation, L = 1024",
        "remat_memory",
        "sqrt / none compiled temp",
        lambda x: f"{_number(x):.3f}",
    ),
    (
        "binomial checkpointing (10 checkpoints): step time ÷ storing every activation",
        "remat_memory",
        "binomial c=10 step time / none",
        _ratio,
    ),
    (
        "online checkpointing (`remat.while_loop`, trip count unknown): time per gradient ÷ "
        "Equinox's checkpointed while loop, median over L = 100, 1000 and c = 4, 10, 30",
        "online_remat",
        "time bpjax / Equinox, median",
        _ratio,
    ),
    (
        "sparse Hessian by coloring: `jax.hessian` ÷ bpjax, 2-D stencil energy n = 4096 (BCOO)",
        "hessians",
        "stencil n=4096: jax.hessian ÷ bpjax auto in BCOO",
        _ratio,
    ),
    (
        "bpjax `rev` training step ÷ the fastest peer (PyTorch, Flax, NumPy), {size}",
        "peers",
        _largest("peers", "rev / best peer @ "),
        _ratio,
    ),
    (
        "… the same at {size}, from the full sweep (where bpjax loses: PyTorch's "
        "GEMMs are faster there)",
        "full/peers",
        _largest("full/peers", "rev / best peer @ "),
        _ratio,
    ),
]


def headlines_table(records: dict) -> str:
    """One main figure per experiment (:data:`HEADLINES`), with the size it was measured at,
    a link to the findings page that shows it (relative to the repository root, for the
    README) and the CPU, from the records' summaries (quick profile, as ``make reproduce``
    writes)."""
    body = []
    for what, name, key, fmt in HEADLINES:
        key = key(records) if callable(key) else key
        if "{size}" in what:
            what = what.format(size=_size(key.split("@ ")[1]))
        env = records[name]["environment"]
        where = env.get("cpu_model") or env.get("device") or "?"
        page = f"[{_FINDINGS[name]}](docs/findings/{_FINDINGS[name]}.md)"
        jax = f"jax {env.get('jax', '?')}"
        body.append([what, fmt(_summary(records, name, key)), page, f"`{name}`, {where}, {jax}"])
    return _table(["finding", "figure", "shown on", "record, CPU, JAX"], body)


# The findings page (docs/findings/<page>.md) that shows each record's figures.
_FINDINGS = {
    "rules_overhead": "rules_overhead",
    "vanishing": "vanishing",
    "depth": "depth",
    "mode_cost": "modes",
    "jacobians": "modes",
    "remat_memory": "remat",
    "peers": "bench",
    "full/peers": "bench",
    "online_remat": "online_remat",
    "hessians": "hessians",
}


def rules_overhead_table(records: dict) -> str:
    """Step time of each way of getting the gradient over JAX autodiff's, per size
    (``rules_overhead``)."""
    rows = records["rules_overhead"]["data"]["rows"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    ratio = {(r["size"], r["contender"].split(" ")[0]): r["ratio_to_ref"] for r in rows}
    body = [
        [size.replace(" b", ", batch ")]
        + [f"{ratio[size, who]:.2f}" for who in ("rev", "fwd", "manual")]
        for size in sizes
    ]
    return _table(["size", "rev / ref", "fwd / ref", "manual / ref"], body)


def remat_table(records: dict) -> str:
    """Every strategy at the timed depth, most memory first (``remat_memory``): compiled temp
    memory, its ratio to the byte model, counted layer evaluations, median step time."""
    rows = sorted(records["remat_memory"]["data"]["timing"], key=lambda r: -r["compiled_temp"])
    none = next(r for r in rows if r["strategy"] == "none")
    body = [
        [
            r["strategy"],
            f"{r['compiled_temp'] / 2**20:.1f} MiB",
            f"{r['compiled_temp'] / r['predicted']:.2f}",
            str(r["evaluations"]),
            f"{1e3 * r['median']:.0f} ms",
            f"{r['median'] / none['median']:.2f}",
        ]
        for r in rows
    ]
    header = ["strategy", "compiled temp", "compiled / predicted", "layer evaluations"]
    return _table(header + ["step time", "vs none"], body)


_JACOBIAN_PEERS = ["jax.jacfwd", "jax.jacrev", "asdex", "sparsejac"]


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g}"


def jacobians_table(records: dict) -> str:
    """Milliseconds per Jacobian, steady state, at each family's largest size (and every size
    of the extra ones), dense and BCOO output (``jacobians``); sparsejac's time is the faster
    of its jacfwd and jacrev, "–" where a contender does not apply or was skipped."""
    data = records["jacobians"]["data"]
    largest = max(data["sizes"])
    extra = {(family, n) for family, sizes in data.get("extra", {}).items() for n in sizes}
    body = []
    for p in data["points"]:
        if p["N"] != largest and (p["family"], p["N"]) not in extra:
            continue
        times = {name: c["median"] for name, c in p["contenders"].items()}
        sparsejac = [t for name, t in times.items() if name.startswith("sparsejac")]
        if sparsejac:
            times["sparsejac"] = min(sparsejac)
        others = [t for name, t in times.items() if name != "bpjax auto"]
        auto = times["bpjax auto"]
        body.append(
            [p["family"], f"{p['n']}×{p['m']}", "BCOO" if p["format"] == "bcoo" else "dense"]
            + [_ms(times[name]) if name in times else "–" for name in _JACOBIAN_PEERS]
            + [f"{_ms(auto)} ({p['auto']['method']})", f"{auto / min(others):.2f}"]
        )
    header = ["family", "n×m", "output", *_JACOBIAN_PEERS, "bpjax auto (pick)"]
    return _table(header + ["auto ÷ best other"], body)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def jacobian_colors_table(records: dict) -> str:
    """Products each coloring needs at each sparse family's largest size, against its lower
    bound (``jacobians``): the most nonzeros in a row, for columns; in a column, for rows."""
    data = records["jacobians"]["data"]
    largest: dict[str, dict] = {}
    for p in data["points"]:
        if p["colorings"] and p["N"] >= largest.get(p["family"], {}).get("N", 0):
            largest[p["family"]] = p
    kinds = ["columns", "rows", "bicoloring"]
    body = []
    for family, p in largest.items():
        cells = []
        for kind in kinds:
            c = p["colorings"].get(kind)
            if c is None:
                cells.append("–")
            elif kind == "bicoloring":
                cells.append(
                    f"{c['products']} ({_plural(c['jvps'], 'JVP')} + {_plural(c['vjps'], 'VJP')})"
                )
            else:
                cells.append(f"{c['products']} (bound {c['lower_bound']})")
        body.append([family, f"{p['n']}×{p['m']}", *cells])
    return _table(["family", "n×m", "column coloring", "row coloring", "bicoloring"], body)


def online_remat_table(records: dict) -> str:
    """Body evaluations, offline optimum and milliseconds per gradient at each timed (L, c)
    of ``online_remat``: bpjax's ``remat.while_loop`` against Equinox's checkpointed loop
    and a scan padded to a known maximum (its one time per L)."""
    body = []
    for r in records["online_remat"]["data"]["sweep"]:
        scan = r.get("scan (padded) seconds")
        body.append(
            [
                str(r["L"]),
                str(r["c"]),
                str(r["bpjax evaluations"]),
                str(r.get("equinox evaluations", "")),
                str(r["optimum"]),
                _ms(r["bpjax seconds"]),
                _ms(r["equinox seconds"]) if "equinox seconds" in r else "",
                "" if scan is None else _ms(scan),
            ]
        )
    header = ["L", "c", "bpjax evaluations", "Equinox evaluations", "offline optimum"]
    header += ["bpjax ms", "Equinox ms", "padded scan ms"]
    return _table(header, body)


def online_remat_uses_table(records: dict) -> str:
    """The two real loops of ``online_remat`` and their gradients against float64 central
    differences."""
    what = {
        "van der pol": "Dormand-Prince 5(4), step rejection, Van der Pol, d y(6)/dμ at μ = 1.5",
        "fixed point": "fixed point x = tanh(W x + b) to 1e-10, d‖x*‖²/db",
    }
    body = [
        [
            what.get(name, name),
            str(use["steps"]),
            f"{use['grad']:.10g}",
            f"{use['central difference']:.10g}",
            f"{use['relative error']:.1e}",
        ]
        for name, use in records["online_remat"]["data"]["real_uses"].items()
    ]
    header = ["loop", "steps", "gradient", "central difference", "relative error"]
    return _table(header, body)


def hessians_table(records: dict) -> str:
    """Milliseconds per Hessian at each family's largest size, dense and BCOO output, with
    the colors each symmetric coloring needs (``hessians``)."""
    points = records["hessians"]["data"]["points"]
    largest = {}
    for point in points:
        if point["n"] >= largest.get(point["family"], {"n": -1})["n"]:
            largest[point["family"]] = point
    body = []
    for family, point in largest.items():
        c = point["contenders"]
        colors = point["colors"]
        ms = lambda name, c=c: _ms(c[name]["median"]) if name in c else ""  # noqa: E731
        auto = point["auto"]
        body.append(
            [
                f"{family} n = {point['n']}",
                ms("jax.hessian"),
                ms("bpjax dense"),
                ms("asdex"),
                ms("bpjax auto"),
                f"{auto['method']}, {auto['order']}" if auto["method"] != "dense" else "dense",
                ms("asdex BCOO"),
                ms("bpjax auto BCOO"),
                " / ".join(str(colors.get(k)) for k in ("star", "acyclic", "asdex star"))
                if colors.get("star") is not None
                else "none (dense)",
            ]
        )
    header = ["family", "jax.hessian", "bpjax dense", "asdex", "bpjax auto", "auto chose"]
    header += ["asdex BCOO", "bpjax auto BCOO", "colors star / acyclic / asdex"]
    return _table(header, body)


def bench_table(records: dict) -> str:
    """``bpjax bench --full``'s table (:func:`bpjax.bench.readme_table` of
    ``results/full/peers.json``)."""
    from bpjax import bench

    return bench.readme_table(records["full/peers"]["data"])


TABLES: dict[str, Callable[[dict], str]] = {
    "depth": depth_table,
    "vanishing": vanishing_table,
    "exploding-growth": exploding_growth_table,
    "exploding-training": exploding_training_table,
    "headlines": headlines_table,
    "rules-overhead": rules_overhead_table,
    "remat": remat_table,
    "jacobians": jacobians_table,
    "jacobian-colors": jacobian_colors_table,
    "bench": bench_table,
    "online-remat": online_remat_table,
    "online-remat-uses": online_remat_uses_table,
    "hessians": hessians_table,
}
"""README table name → function of the records by name (``{"depth": record, ...}``)."""

# The records each table reads, named under it with the JAX, Python and CPU they were measured
# with (the headlines table names them per row).
SOURCES: dict[str, tuple[str, ...]] = {
    "depth": ("depth",),
    "vanishing": ("vanishing",),
    "exploding-growth": ("exploding",),
    "exploding-training": ("exploding",),
    "headlines": (),
    "rules-overhead": ("rules_overhead",),
    "remat": ("remat_memory",),
    "jacobians": ("jacobians",),
    "jacobian-colors": ("jacobians",),
    "bench": ("full/peers",),
    "online-remat": ("online_remat",),
    "online-remat-uses": ("online_remat",),
    "hessians": ("hessians",),
}


def provenance(records: dict, names: tuple[str, ...]) -> str:
    """One line naming what records ``names`` were measured with: JAX, Python, CPU, date.

    Example: ``Record `depth` (quick profile, 2026-12-03): jax 0.10.1, Python 3.11.7, Intel(R)
    Xeon(R) Processor, 2 cores.``
    """
    parts = []
    for name in names:
        rec = records[name]
        env = rec["environment"]
        cpu = env.get("cpu_model") or env.get("machine") or "?"
        parts.append(
            f"Record `{name}` ({rec.get('profile')} profile, {str(rec.get('created'))[:10]}): "
            f"jax {env.get('jax', '?')}, Python {env.get('python', '?')}, {cpu}, "
            f"{env.get('cpu_count', '?')} cores."
        )
    return " ".join(parts)
