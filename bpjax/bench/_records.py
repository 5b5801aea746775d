"""Rows of the result: ratios, roofline fractions, break-even steps, the table, the summary."""

from __future__ import annotations

import math

from bpjax.bench._problem import (
    HEADLINE,
    OURS,
    REFERENCE,
    UNDONATED,
    host_peers,
    layers_label,
    step_flops,
)


def break_even(first_ours: float, step_ours: float, first_peer: float, step_peer: float):
    """Steps after which ours has taken less total time than the peer, for good.

    Total time after ``n`` steps is ``first + (n − 1) · step`` (the first call includes
    tracing and compiling). Returns the smallest ``n ≥ 1`` from which ours stays ahead, or
    ``None`` when it never does (its steady step is not faster).
    """
    if step_ours >= step_peer:
        return 1 if step_ours == step_peer and first_ours <= first_peer else None
    return max(1, math.ceil(1 + (first_ours - first_peer) / (step_peer - step_ours)))


def size_rows(
    label, sizes, batch, contenders, timings, errors, roof, *, platform: str = "cpu"
) -> list[dict]:
    """One row per contender at one size, with ratios to the reference and to the best peer,
    and for each peer the steps after which ``rev`` has caught up (:func:`break_even`).

    ``platform``: where JAX ran; on an accelerator, peers left on the host CPU
    (:func:`~bpjax.bench._problem.host_peers`) get ``"host": True`` and are not the best
    peer."""
    flops = step_flops(sizes, batch)
    host = host_peers(contenders, platform)
    rows = []
    for c in contenders:
        t = timings[c.name]
        rows.append(
            {
                "size": label,
                "sizes": list(sizes),
                "batch": batch,
                "contender": c.name,
                **t.as_dict(),
                "compile": c.compile,
                "first_call": c.first_call,
                "faults_per_step": c.faults_per_step,
                "step_flops": flops,
                "achieved_flops_per_second": flops / t.median,
                "fraction_of_gemm": flops / t.median / roof["flops_per_second"],
                "max_rel_grad_error": errors[c.name],
                "device": c.device,
                **({"host": True} if c.name in host else {}),
            }
        )
    by_name = {r["contender"]: r for r in rows}
    peers = [r for r in rows if r["contender"] not in OURS]
    ranked = [r for r in peers if not r.get("host")]
    best = min(ranked, key=lambda r: r["median"]) if ranked else None
    ours = by_name.get(HEADLINE)
    for r in rows:
        if REFERENCE in by_name:
            r["ratio_to_ref"] = r["median"] / by_name[REFERENCE]["median"]
        if best is not None:
            r["ratio_to_best_peer"] = r["median"] / best["median"]
            r["best_peer"] = best["contender"]
        if ours is not None and r in peers:
            r["rev_ahead_after_steps"] = break_even(
                ours["first_call"], ours["median"], r["first_call"], r["median"]
            )
    return rows


def refit_roofline(rows, roof) -> None:
    """Recompute every row's GEMM fraction against a final roofline ``roof``."""
    for r in rows:
        r["fraction_of_gemm"] = r["achieved_flops_per_second"] / roof["flops_per_second"]


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def verdict_line(label: str, verdict) -> str:
    """``rev vs best peer`` at one size, in words."""
    if verdict is None:
        return f"{label}: no ranking (rev or every peer missing)"
    lo, hi = verdict["ci"]
    return (
        f"{label}: rev / {verdict['best_peer']} = {verdict['ratio']:.3f} "
        f"(95% bootstrap {lo:.3f}-{hi:.3f}) → {verdict['verdict']}; rev faster in "
        f"{100 * verdict['win_fraction']:.0f}% of {verdict['rounds']} rounds"
    )


def table(rows, rankings=None, threads=()) -> str:
    """A plain-text table of rows from :func:`size_rows`, then one verdict line per size.

    ``threads``: thread counts whose medians (``row["median_at_threads"]``) get a column.
    """
    head = (
        f"{'size':>20} {'contender':<17} {'median ms':>10} {'p10-p90 ms':>17} "
        f"{'1st call s':>10} {'/ ref':>6} {'/ best peer':>11} {'GEMM %':>7} {'faults/step':>11} "
        f"{'rev ahead after':>15}"
    )
    lines = [head + "".join(f" {f'ms @{n}t':>9}" for n in threads)]
    for r in rows:
        if r["contender"] in OURS:
            after = ""
        else:
            after = _fmt(r.get("rev_ahead_after_steps"), "d", "never") + " steps"
        at = r.get("median_at_threads", {})
        name = r["contender"] + (" (host)" if r.get("host") else "")
        lines.append(
            f"{r['size']:>20} {name:<17} {r['median'] * 1e3:10.3f} "
            f"{r['p10'] * 1e3:8.3f}-{r['p90'] * 1e3:<8.3f} {r['first_call']:10.2f} "
            f"{_fmt(r.get('ratio_to_ref'), '6.2f'):>6} "
            f"{_fmt(r.get('ratio_to_best_peer'), '11.2f'):>11} "
            f"{100 * r['fraction_of_gemm']:6.1f}% {_fmt(r.get('faults_per_step'), '11.0f'):>11} "
            f"{after:>15}"
            + "".join(
                f" {_fmt(None if at.get(str(n)) is None else at[str(n)] * 1e3, '9.3f'):>9}"
                for n in threads
            )
        )
    lines += [verdict_line(label, v) for label, v in (rankings or {}).items()]
    if any(r.get("host") for r in rows):
        lines.append("(host): ran on the host CPU while JAX ran on the accelerator; not ranked")
    return "\n".join(lines)


def pick(rows, size: str, contender: str, key: str):
    """``row[key]`` of the row at ``size`` for ``contender`` (``None`` if absent)."""
    return next(
        (r.get(key) for r in rows if r["size"] == size and r["contender"] == contender), None
    )


def summary(record: dict, *, threads: int, devices: int) -> list[dict]:
    """The headline numbers for the report, as :func:`bpjax.results.entry` dicts: per size
    (grid point: its layer widths and batch), rev against ref and the best peer."""
    from bpjax.results import entry

    rows = record["rows"]
    # Each size's label and grid point (its layer widths and batch).
    sizes = {r["size"]: {"layers": layers_label(r["sizes"]), "batch": r["batch"]} for r in rows}
    out = [
        entry("threads", threads, unit="count", text="threads"),
        entry("devices", devices, unit="count", text="devices"),
        entry(
            "gemm_rate",
            record["gemm"]["flops_per_second"] / 1e9,
            unit="GFLOP/s",
            text="gemm GFLOP/s",
        ),
    ]
    for s, at in sizes.items():
        verdict = record["rankings"].get(s)
        out += [
            entry("rev_over_ref", pick(rows, s, HEADLINE, "ratio_to_ref"), unit="ratio",
                  text=f"rev / ref @ {s}", **at),
            entry("rev_over_best_peer", pick(rows, s, HEADLINE, "ratio_to_best_peer"),
                  unit="ratio", text=f"rev / best peer @ {s}", **at),
            entry("ranking", verdict["verdict"] if verdict else None, unit="text",
                  text=f"ranking @ {s}", **at),
            entry("rev_first_call", pick(rows, s, HEADLINE, "first_call"), unit="s",
                  text=f"rev first call s @ {s}", **at),
        ]  # fmt: skip
    if sizes:
        s, at = list(sizes.items())[-1]
        out.append(
            entry("rev_gemm_fraction", pick(rows, s, HEADLINE, "fraction_of_gemm"),
                  unit="fraction", text=f"rev GEMM fraction @ {s}", **at)
        )  # fmt: skip
    return out


def add_thread_columns(record: dict, passes: dict[int, dict]) -> None:
    """Give each row of ``record`` the median of the same (size, contender) in every pass.

    ``passes``: thread count → the record of a run pinned to that many cores.
    """
    for r in record["rows"]:
        r["median_at_threads"] = {
            str(n): pick(p["rows"], r["size"], r["contender"], "median") for n, p in passes.items()
        }
    record["thread_passes"] = {
        str(n): {"gemm": p["gemm"], "rankings": p["rankings"]} for n, p in passes.items()
    }


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def readme_table(record: dict) -> str:
    """The README's Markdown table of a ``peers.json`` record's ``data`` (one row per size).

    Columns: rev's median, its ratios to ``ref`` and to the best peer, the verdict with its
    95% interval and win fraction, the undonated step against the best peer, first calls,
    the medians at one thread where a thread sweep ran, faults per step, GEMM fraction.
    """
    rows = record["rows"]
    head = [
        "size", "rev ms", "rev / ref", "rev / best peer", "verdict (95% CI, rev faster in)",
        "rev not donated / best peer", "first call s: rev / best peer",
        "rev ms @1 thread / best peer's", "rev faults/step", "rev % of GEMM",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in dict.fromkeys(r["size"] for r in rows):
        best = pick(rows, size, HEADLINE, "best_peer")
        v = record["rankings"].get(size)
        verdict = "-" if v is None else (
            f"{v['verdict']} ({v['ci'][0]:.2f}-{v['ci'][1]:.2f}, "
            f"{100 * v['win_fraction']:.0f}% of {v['rounds']})"
        )  # fmt: skip
        ours_1t = (pick(rows, size, HEADLINE, "median_at_threads") or {}).get("1")
        best_1t = (pick(rows, size, best, "median_at_threads") or {}).get("1")
        faults = pick(rows, size, HEADLINE, "faults_per_step")
        cells = [
            size,
            _ms(pick(rows, size, HEADLINE, "median")),
            _fmt(pick(rows, size, HEADLINE, "ratio_to_ref"), ".2f"),
            f"{_fmt(pick(rows, size, HEADLINE, 'ratio_to_best_peer'), '.2f')} ({best})",
            verdict,
            _fmt(pick(rows, size, UNDONATED, "ratio_to_best_peer"), ".2f"),
            f"{_fmt(pick(rows, size, HEADLINE, 'first_call'), '.2f')} / "
            f"{_fmt(pick(rows, size, best, 'first_call'), '.2f')}",
            f"{_ms(ours_1t)} / {_ms(best_1t)}",
            _fmt(faults, ",.0f").replace(",", " "),
            f"{100 * pick(rows, size, HEADLINE, 'fraction_of_gemm'):.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
