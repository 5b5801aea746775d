"""Tables of the training experiments: depth, gradients, rules' overhead."""

from __future__ import annotations

import math

from bpjax.tables._common import compact, entries, ms, number, table


def depth_table(records: dict) -> str:
    """Test accuracy per activation and architecture (rows) and depth (columns), ``depth``.

    With several seeds a cell is their mean.
    """
    rec = records["depth"]
    cells: dict[tuple, list[float]] = {}
    for run in rec["data"]["runs"]:
        key = (run["activation"], run["arch"], run["depth"])
        cells.setdefault(key, []).append(number(run["test_acc"]))
    depths = sorted({d for _, _, d in cells})
    rows = list(dict.fromkeys((a, arch) for a, arch, _ in cells))
    seeds = len(rec["data"]["seeds"])
    label = "test accuracy" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    body = [
        [f"{a} {arch}"] + [f"{sum(cells[a, arch, d]) / len(cells[a, arch, d]):.2f}" for d in depths]
        for a, arch in rows
    ]
    return table([label] + [f"depth {d}" for d in depths], body)


def vanishing_table(records: dict) -> str:
    """First/last hidden-layer gradient-norm ratio per activation and architecture and depth
    (``vanishing``), and how many layers' float32 gradients underflow to exactly 0."""
    rec = records["vanishing"]
    ratios = {
        (e["at"]["activation"], e["at"]["arch"], e["at"]["L"]): e["value"]
        for e in entries(rec, "first_over_last_grad_norm")
    }
    depths = sorted({d for _, _, d in ratios})
    deepest = depths[-1]
    zeros = rec["data"]["float32_layers_with_zero_gradient"]
    body = []
    for act, arch in dict.fromkeys((a, arch) for a, arch, _ in ratios):
        zero = zeros.get(f"{act}/{arch}/{deepest}")
        body.append(
            [f"{act}, {arch}"]
            + [compact(ratios[act, arch, d]) for d in depths]
            + [f"{zero} of {deepest}" if zero else "none"]
        )
    header = ["first / last hidden layer"] + [f"L = {d}" for d in depths]
    return table(header + [f"float32 layers at exactly 0, L = {deepest}"], body)


def exploding_growth_table(records: dict) -> str:
    """Fitted log-growth of the gradient norm per layer at each gain (``exploding`` (a))."""
    slopes = records["exploding"]["data"]["slopes"]
    body = [[g, f"{s:.2f}", f"{math.log(float(g)):.2f}"] for g, s in slopes.items()]
    return table(["gain", "fitted d log‖g‖ / d layer", "log gain"], body)


def _final_loss(losses) -> str:
    values = [number(v) for v in losses[-20:]]
    return compact(sum(values) / len(values)) if all(map(math.isfinite, values)) else "—"


def exploding_training_table(records: dict) -> str:
    """The training runs of ``exploding``: (b) SGD under each clipping, (d) residual branch
    scales; where each diverged, its final loss (mean of the last 20 steps) and accuracy."""
    data = records["exploding"]["data"]
    body = []
    for part, runs in (("(b)", data["divergence"]), ("(d)", data["residual"])):
        for label, run in runs.items():
            acc = run["test_acc"]
            acc = number(acc[-1] if acc else "nan") if isinstance(acc, list) else number(acc)
            diverged = run["diverged_at"]
            where = f", {run['nonfinite_layer']}" if run.get("nonfinite_layer") else ""
            norm = run.get("init_grad_norm")
            body.append(
                [
                    f"{part} {label}",
                    compact(norm) if norm is not None else "—",
                    "never" if diverged is None else f"step {diverged}{where}",
                    str(len(run["loss"])),
                    _final_loss(run["loss"]),
                    "—" if math.isnan(acc) else f"{acc:.2f}",
                ]
            )
    header = ["run", "‖g‖ at init", "diverged", "steps run", "final loss", "test accuracy"]
    return table(header, body)


# The contenders of ``rules_overhead`` by the names its rows give them.
_OVERHEAD = {
    "rev": "rev (hand VJP)",
    "fwd": "fwd (hand JVP, transposed)",
    "manual": "manual (δ recursion)",
}


def rules_overhead_table(records: dict) -> str:
    """Step time of each way of getting the gradient over JAX autodiff's, per size
    (``rules_overhead``): the sizes are the grid points of its ``rev_over_ref`` entries, the
    ratios its rows' (``"784-256-10 b128"``, ``"rev (hand VJP)"``)."""
    rec = records["rules_overhead"]
    ratio = {(r["size"], r["contender"]): r["ratio_to_ref"] for r in rec["data"]["rows"]}
    body = []
    for e in entries(rec, "rev_over_ref"):
        layers, batch = e["at"]["layers"], e["at"]["batch"]
        cells = [f"{ratio[f'{layers} b{batch}', _OVERHEAD[who]]:.2f}" for who in _OVERHEAD]
        body.append([f"{layers}, batch {batch}", *cells])
    return table(["size", "rev / ref", "fwd / ref", "manual / ref"], body)


def weight_gradient_table(records: dict) -> str:
    """GFLOP/s of one linear layer's GEMMs per shape (``weight_gradient``): XLA's three
    products with the kernel each ran on, ``dW`` through a materialised ``xᵀ``, and ``xᵀ δ``
    in NumPy and PyTorch where the record has them."""
    rows = records["weight_gradient"]["data"]["gemms"]
    gemms = list(dict.fromkeys(r["gemm"] for r in rows))
    shapes = list(dict.fromkeys((r["batch"], r["d_in"], r["d_out"]) for r in rows))
    rate = {(r["batch"], r["d_in"], r["d_out"], r["gemm"]): r for r in rows}
    header = ["layer (batch)"]
    for g in gemms:
        kernel = rate[(*shapes[0], g)].get("kernel")
        header.append(f"{g} ({kernel})" if kernel else g)
    body = [
        [f"{d_in} → {d_out} ({batch})"]
        + [f"{rate[(batch, d_in, d_out, g)]['gflops']:.0f}" for g in gemms]
        for batch, d_in, d_out in shapes
    ]
    return table(header, body)


def weight_gradient_steps_table(records: dict) -> str:
    """The donated ``rev`` SGD step with ``xᵀ`` saved for the weight gradient, over the
    step as shipped, per bench size (``weight_gradient``): medians, the paired ratio, its
    95% bootstrap interval and the verdict."""
    rows = records["weight_gradient"]["data"]["steps"]
    base = {r["size"]: r["median"] for r in rows if r["contender"] == "rev"}
    body = [
        [
            r["size"],
            ms(base[r["size"]]),
            ms(r["median"]),
            f"{r['ratio_to_rev']:.2f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f})",
            r["verdict"],
        ]
        for r in rows
        if r["contender"] != "rev"
    ]
    header = ["size", "rev step (ms)", "with xᵀ saved (ms)", "ratio (95% CI)", "verdict"]
    return table(header, body)
