"""Figures the findings pages publish that an experiment's own summary does not hold.

Each function here takes one record and returns summary entries (:func:`bpjax.results.entry`,
marked ``"derived": true``) computed from its ``data``: a ratio of two contenders' times, the
smallest depth at chance, how many points a choice got right. :func:`derive` gives a record
its entries; :func:`bpjax.results.save` appends them to every record it writes, and
``python -m bpjax.report --derive`` recomputes them in committed records. The pages tie
each published number to an entry by name and grid point (``tests/published_figures.toml``),
so a number on a page is always some record's field.
"""

from __future__ import annotations

import math

from bpjax.results import entry
from bpjax.tables._derived_sparse import hessians, jacobian_structures, jacobians, mode_cost


def _e(name, value, unit, text, **at) -> dict:
    return {**entry(name, value, unit=unit, text=text, **at), "derived": True}


def _count(record: dict, *keys: str) -> list[dict]:
    """A count entry per ``data`` key (a list counts its items): widths, batches, seeds."""
    data = record["data"]
    return [_e(k, len(data[k]) if isinstance(data[k], list) else data[k], "count", k) for k in keys]


def depth(record: dict) -> list[dict]:
    data, out = record["data"], _count(record, "steps", "batch", "width", "seeds")
    out.append(_e("lr", data["lr"], "", "learning rate"))
    out.append(_e("depth_min", min(data["depths"]), "count", "smallest depth"))
    out.append(_e("depth_max", max(data["depths"]), "count", "largest depth"))
    runs = data["runs"]

    def accs(activation, arch, depth):
        cell = [
            r for r in runs if (r["activation"], r["arch"], r["depth"]) == (activation, arch, depth)
        ]
        return [r["test_acc"] for r in sorted(cell, key=lambda r: r["seed"])]

    cells = list(dict.fromkeys((r["activation"], r["arch"]) for r in runs))
    for activation, arch in cells:
        at = {"activation": activation, "arch": arch}
        # The smallest depth from which every deeper cell, every seed, is below 0.2 (10 classes).
        chance = [
            d
            for d in data["depths"]
            if all(a < 0.2 for e in data["depths"] if e >= d for a in accs(activation, arch, e))
        ]
        if chance:
            text = f"{activation} {arch}: at chance in every seed from depth"
            out.append(_e("chance_from_depth", min(chance), "count", text, **at))
        deep = [a for d in data["depths"] if d >= 32 for a in accs(activation, arch, d)]
        text = f"{activation} {arch}: test accuracy, depth 32 on, every seed"
        out.append(_e("test_acc_min", min(deep), "fraction", f"{text}: least", **at, from_depth=32))
        out.append(_e("test_acc_max", max(deep), "fraction", f"{text}: most", **at, from_depth=32))
        for d in data["depths"]:
            if len(data["seeds"]) == 1 or (activation, arch, d) not in _CELLS_SHOWN:
                continue
            cell, text = accs(activation, arch, d), f"{activation} {arch} depth {d}"
            below = sum(a < 0.2 for a in cell)
            out += [
                _e("runs_at_chance", below, "count", f"{text}: seeds below 0.2", **at, depth=d),
                _e("test_acc_min", min(cell), "fraction", f"{text}: least", **at, depth=d),
                _e("test_acc_max", max(cell), "fraction", f"{text}: most", **at, depth=d),
            ]
            for seed, acc in zip(sorted(data["seeds"]), cell, strict=True):
                text = f"{activation} {arch} depth {d}, seed {seed}: test accuracy"
                out.append(_e("test_acc_seed", acc, "fraction", text, **at, depth=d, seed=seed))
    for arch in dict.fromkeys(arch for _, arch in cells):
        least = min(r["test_acc"] for r in runs if r["arch"] == arch)
        out.append(_e("test_acc_min", least, "fraction", f"{arch}: least test accuracy", arch=arch))
    return out


# The cells of a sweep with several seeds whose seeds the findings page names.
_CELLS_SHOWN = {
    ("sigmoid", "plain", 8),
    ("relu", "plain", 32),
    ("relu", "plain", 64),
    ("relu", "highway", 64),
}


def vanishing(record: dict) -> list[dict]:
    return _count(record, "width", "batch", "seeds")


def remat_memory(record: dict) -> list[dict]:
    data, out = record["data"], _count(record, "batch", "width")
    timing = {r["strategy"]: r for r in data["timing"]}
    L = timing["none"]["n_layers"]
    out.append(_e("timed_depth", L, "count", "depth of the timed strategies"))
    out.append(
        _e("log2_checkpoints", math.ceil(math.log2(L)), "count", "⌈log₂ L⌉ at the timed depth")
    )
    for strategy, r in timing.items():
        text = f"{strategy} compiled temp at the timed depth"
        out.append(
            _e("timed_compiled_temp", r["compiled_temp"] / 2**20, "MiB", text, strategy=strategy)
        )
    saving = timing["none"]["compiled_temp"] / timing["sqrt"]["compiled_temp"]
    out.append(_e("memory_saving", saving, "ratio", "none / sqrt compiled temp", strategy="sqrt"))
    # The depth at which counted evaluations were checked against theory, if they all agree.
    agree = all(v["counted"] == v["theory"] for v in data["evaluations_at_64"].values())
    text = "depth at which every strategy's counted evaluations equal theory"
    out.append(_e("evaluations_checked_at", 64 if agree else -1, "count", text))
    depths = [r["L"] for r in data["memory"]]
    out.append(_e("depth_min", min(depths), "count", "smallest depth of the memory sweep"))
    out.append(_e("depth_max", max(depths), "count", "largest depth of the memory sweep"))
    deepest = max(r["L"] for r in data["nnx"])
    for r in data["nnx"]:
        if r["L"] == deepest:
            text = f"{r['how']} compiled temp, L={deepest}"
            out.append(
                _e(
                    "nnx_compiled_temp",
                    r["compiled_temp"] / 2**20,
                    "MiB",
                    text,
                    how=r["how"],
                    L=deepest,
                )
            )
    return out


def online_remat(record: dict) -> list[dict]:
    data, out = record["data"], _count(record, "batch", "width")
    curve, sweep = data["ratio_curve"], data["sweep"]
    worst = max(curve, key=lambda r: r["bpjax"] / r["optimum"])
    out.append(_e("worst_trip_count", worst["L"], "count", "L of the worst evaluations / optimum"))
    out.append(_e("worst_checkpoints", worst["c"], "count", "c of the worst evaluations / optimum"))
    decades = round(math.log10(max(r["L"] for r in curve)))
    out.append(_e("curve_decades", decades, "count", "the curve's largest L, as a power of 10"))
    out.append(_e("checkpoints", ", ".join(map(str, data["checkpoints"])), "text", "checkpoints c"))
    lengths = sorted({r["L"] for r in sweep})
    out.append(_e("sweep_lengths", " and ".join(map(str, lengths)), "text", "trip counts L timed"))
    out.append(_e("shortest_trip_count", lengths[0], "count", "smallest trip count timed"))
    for c in data["checkpoints"]:
        temps = {r["bpjax temp"] for r in sweep if r["c"] == c}
        if len(temps) == 1:  # the same at every L
            out.append(
                _e("bpjax_temp", temps.pop() / 2**20, "MiB", f"bpjax temp at c={c}, every L", c=c)
            )
    for L in lengths:
        (row,) = [r for r in sweep if (r["L"], r["c"]) == (L, data["checkpoints"][0])]
        out.append(
            _e(
                "scan_temp",
                row["scan (padded) temp"] / 2**20,
                "MiB",
                f"padded scan temp, L={L}",
                L=L,
            )
        )
    for r in sweep:
        at = {"L": r["L"], "c": r["c"]}
        for who in ("bpjax", "equinox"):
            out.append(
                _e(
                    "evaluations",
                    r[f"{who} evaluations"],
                    "count",
                    f"{who} evaluations",
                    **at,
                    who=who,
                )
            )
        ratio = r["equinox evaluations"] / r["optimum"]
        out.append(
            _e("equinox_over_optimum", ratio, "ratio", "Equinox evaluations / optimum", **at)
        )
    speed = [r["bpjax seconds"] / r["equinox seconds"] for r in sweep]
    out.append(
        _e("faster_points", sum(s < 1.0 for s in speed), "count", "points where bpjax is faster")
    )
    out.append(_e("points", len(speed), "count", "timed points"))
    return out


def autograd_tour(record: dict) -> list[dict]:
    data = record["data"]
    grads = data["accumulation"]
    out = [_e("backward_calls", len(grads["without zero_grad"]), "count", "backward() calls")]
    for how, zero in (("without", False), ("with", True)):
        for i, g in enumerate(grads[f"{how} zero_grad"][-1]):
            text = f".grad[{i}] after the last backward() {how} zero_grad"
            out.append(_e("accumulated_grad", g, "", text, zero_grad=zero, index=i))
    out.append(_e("micro_batches", data["microbatch"]["micro_batches"], "count", "micro-batches"))
    return out


# Record name → its derived entries, as a function of the record.
DERIVED = {
    "autograd_tour": autograd_tour,
    "depth": depth,
    "hessians": hessians,
    "jacobian_structures": jacobian_structures,
    "jacobians": jacobians,
    "mode_cost": mode_cost,
    "online_remat": online_remat,
    "remat_memory": remat_memory,
    "vanishing": vanishing,
}


def derive(record: dict) -> list[dict]:
    """``record``'s summary with its derived entries recomputed from its data: the entries
    the experiment wrote, then :data:`DERIVED`'s (none for a record it does not name)."""
    own = [e for e in record["summary"] if not e.get("derived")]
    return own + DERIVED.get(record["name"], lambda record: [])(record)


__all__ = ["DERIVED", "derive"]
