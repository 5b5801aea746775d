"""Derived figures (see :mod:`bpjax.tables._derived`) of the Jacobian, Hessian and mode-cost
experiments."""

from __future__ import annotations

import statistics

from bpjax.results import entry


def _e(name, value, unit, text, **at) -> dict:
    return {**entry(name, value, unit=unit, text=text, **at), "derived": True}


def hessians(record: dict) -> list[dict]:
    data, out = record["data"], []
    largest: dict[str, dict] = {}
    for p in data["points"]:
        if p["n"] >= largest.get(p["family"], {"n": -1})["n"]:
            largest[p["family"]] = p
    for family, p in largest.items():
        at, c = {"family": family, "n": p["n"]}, p["contenders"]
        where = f"{family} n={p['n']}"
        for coloring, k in p["colors"].items():
            if k is not None:
                out.append(
                    _e("colors", k, "count", f"{coloring} colors, {where}", **at, coloring=coloring)
                )
        for who, t in c.items():
            out.append(
                _e(
                    "time",
                    1e3 * t["median"],
                    "ms",
                    f"{who}, ms per Hessian, {where}",
                    **at,
                    contender=who,
                )
            )
        for fmt, v in p.get("verdicts", {}).items():
            text = f"bpjax auto against asdex, {where} ({fmt}): paired verdict"
            verdict = "same program" if v.get("same_program") else v["verdict"]
            out.append(_e("verdict", verdict, "text", text, **at, output=fmt.lower()))
        decision = p["auto"]["decision_seconds"]
        out.append(_e("auto_decision", decision, "s", f"auto's decision, {where}", **at))
        if "asdex" in c:
            out.append(_e("asdex_setup", c["asdex"]["setup"], "s", f"asdex's setup, {where}", **at))
        mb = p["n"] ** 2 * 8 / 1e6
        out.append(_e("dense_hessian", mb, "MB", f"dense float64 Hessian, {where}", **at))
    if "dense output floor" in largest["stencil"]["contenders"]:
        # Measured: writing any n x n array from x (no derivative at all).
        floor = 1e3 * largest["stencil"]["contenders"]["dense output floor"]["median"]
        what = "writing an n x n array from x, stencil n=4096 (the dense-output floor)"
    else:  # records before the floor was measured
        floor = min(
            1e3 * largest[f]["contenders"]["bpjax auto"]["median"]
            for f in ("banded", "stencil", "arrowhead")
        )
        what = "fastest dense auto Hessian, banded/stencil/arrowhead"
    out.append(_e("dense_output_floor", floor, "ms", what))
    out.append(_e("rounds", data["rounds"], "count", "timing rounds per contender"))
    newton = data["newton"]
    ms = 1e3 * newton["hessian seconds"]["bpjax"]
    out.append(_e("newton_hessian", ms, "ms", "Newton: one sparse Hessian, bpjax", n=newton["n"]))
    gb = newton["dense Hessian bytes"] / 1e9
    out.append(_e("newton_dense_hessian", gb, "GB", "Newton: a dense Hessian", n=newton["n"]))
    return out


def _ms(point: dict, who: str) -> float:
    return 1e3 * point["contenders"][who]["median"]


def jacobians(record: dict) -> list[dict]:
    data, out = record["data"], []
    points = data["points"]
    at = {(p["family"], p["N"], p["format"]): p for p in points}
    out.append(_e("sizes", ", ".join(map(str, data["sizes"])), "text", "sizes N of every family"))
    for family, sizes in data.get("extra", {}).items():
        out.append(
            _e(
                "extra_sizes",
                ", ".join(map(str, sizes)),
                "text",
                f"extra sizes of {family}",
                family=family,
            )
        )
    # Times and colorings the page names one by one.
    for family, N, output, who in _TIMES_SHOWN:
        p = at[family, N, output]
        text = f"{who}, ms per Jacobian, {family} N={N} ({output})"
        out.append(
            _e("time", _ms(p, who), "ms", text, family=family, N=N, output=output, contender=who)
        )
    for family, output in (("elementwise", "bcoo"), ("block_diagonal", "dense")):
        p = at[family, 4096, output]
        apart = 100 * (_ms(p, "bpjax columns") / _ms(p, "bpjax auto") - 1)
        text = f"bpjax columns vs auto (the same method), {family} N=4096 ({output}): % apart"
        out.append(_e("percent_apart", apart, "", text, family=family, N=4096, output=output))
    tri = at["tridiagonal", 4096, "dense"]
    faster = min(_ms(tri, f"jax.{k}") for k in ("jacfwd", "jacrev"))
    out.append(
        _e(
            "faster_jax",
            faster,
            "ms",
            "faster of jax.jacfwd/jacrev, tridiagonal N=4096 (dense)",
            family="tridiagonal",
            N=4096,
        )
    )
    for family, N in (("tridiagonal", 4096), ("arrowhead", 2048), ("stencil", 4096)):
        for kind, c in at[family, N, "dense"]["colorings"].items():
            for what in ("products", "jvps", "vjps"):
                if what in c:
                    out.append(
                        _e(
                            f"coloring_{what}",
                            c[what],
                            "count",
                            f"{kind} coloring: {what}, {family} N={N}",
                            family=family,
                            N=N,
                            coloring=kind,
                        )
                    )
    mib = 2048 * 2048 * 4 / 2**20
    out.append(
        _e(
            "dense_jacobian",
            mib,
            "MiB",
            "dense float32 Jacobian, arrowhead N=2048",
            family="arrowhead",
            N=2048,
        )
    )
    big = data["big"]
    for name, value, unit in (
        ("big_rss_before", big["peak_rss_before_bytes"] / 2**20, "MiB"),
        ("big_asdex_end_to_end", big["asdex_end_to_end_seconds"], "s"),
        ("big_asdex_steady", 1e3 * big["asdex_steady_seconds"], "ms"),
        ("big_steady_over_asdex", big["steady_seconds"] / big["asdex_steady_seconds"], "ratio"),
    ):
        out.append(
            _e(
                name,
                value,
                unit,
                name.replace("_", " "),
                family="tridiagonal",
                n=big["n"],
                output="bcoo",
            )
        )
    out += _auto(record)
    out += _compiles(points)
    return out


# (family, N, output, contender) whose time the findings page gives.
_TIMES_SHOWN = [
    ("tridiagonal", 4096, "bcoo", "bpjax columns"),
    ("arrowhead", 2048, "bcoo", "bpjax bicoloring"),
    ("elementwise", 4096, "bcoo", "bpjax auto"),
    ("elementwise", 4096, "bcoo", "bpjax columns"),
    ("block_diagonal", 4096, "dense", "bpjax auto"),
    ("block_diagonal", 4096, "dense", "bpjax columns"),
]


def _auto(record: dict) -> list[dict]:
    """Per way of timing auto, over dense and BCOO outputs together: points within 10% of the
    best, points, and the worst ratio (where the experiment's summary lacks it)."""
    points, out = record["data"]["points"], []
    own = [e for e in record["summary"] if not e.get("derived")]
    have = {(e["name"], e["at"].get("output"), e["at"].get("timing")) for e in own}
    # Ratios every point has (not regret_choice_as_timed: kept only where auto's program is
    # the best contender's own, beside the regret of 1 counted there).
    timings = [
        k.removeprefix("regret_")
        for k in points[0]
        if k.startswith("regret_") and all(k in p for p in points)
    ]
    for timing in timings:
        # None: a point that ratio does not apply to (not counted).
        ratios = [p[f"regret_{timing}"] for p in points if p[f"regret_{timing}"] is not None]
        at = {"output": "all", "timing": timing}
        text = f"auto ({timing}), dense and BCOO output"
        out.append(
            _e(
                "auto_hits",
                sum(r <= 1.10 for r in ratios),
                "count",
                f"{text}: points within 10% of the best",
                **at,
            )
        )
        out.append(_e("auto_points", len(ratios), "count", f"{text}: points", **at))
        if ("auto_worst_ratio", "all", timing) not in have:
            out.append(_e("auto_worst_ratio", max(ratios), "ratio", f"{text}: worst ratio", **at))
    return out


def _compiles(points: list[dict]) -> list[dict]:
    out = []
    compiles = [
        v["compile"]
        for p in points
        for k, v in p["contenders"].items()
        if k.startswith(("bpjax", "jax."))
    ]
    out.append(_e("compile_min", 1e3 * min(compiles), "ms", "fastest compilation, bpjax and jax"))
    out.append(_e("compile_max", 1e3 * max(compiles), "ms", "slowest compilation, bpjax and jax"))
    arrow = [p["contenders"] for p in points if p["family"] == "arrowhead"]
    extra = statistics.mean(
        c["bpjax bicoloring"]["compile"] - c["bpjax rev"]["compile"] for c in arrow
    )
    out.append(
        _e(
            "bicoloring_compile_excess",
            1e3 * extra,
            "ms",
            "bicoloring's compile time over rev's, arrowhead, mean",
            family="arrowhead",
        )
    )
    speedup = [
        p["contenders"]["bpjax fwd"]["median"] / p["contenders"]["bpjax rev"]["median"]
        for p in points
        if p["family"] in ("arrowhead", "stencil")
    ]
    out.append(
        _e("rev_speedup_min", min(speedup), "ratio", "fwd / rev time, arrowhead and stencil: least")
    )
    out.append(
        _e("rev_speedup_max", max(speedup), "ratio", "fwd / rev time, arrowhead and stencil: most")
    )
    few = "bpjax auto calls=10"
    alike = [p for p in points if p["auto"]["method"] == p["auto_few"]["method"]]
    same = [
        abs(p["contenders"]["bpjax auto"]["compile"] - p["contenders"][few]["compile"])
        for p in alike
        if "-O0" not in p["auto_few"]["reason"]
    ]
    out.append(
        _e(
            "few_compile_difference_max",
            1e3 * max(same),
            "ms",
            "auto vs calls=10, one method, one program: largest compile-time difference",
        )
    )
    pairs = [
        (p["contenders"]["bpjax auto"], p["contenders"][few])
        for p in alike
        if "-O0" in p["auto_few"]["reason"]
    ]
    saved = [100 * (1 - f["compile"] / a["compile"]) for a, f in pairs]
    slower = [f["median"] / a["median"] for a, f in pairs]
    text = "calls=10 at -O0 vs auto, same method"
    out.append(
        _e("o0_compile_saving_min", min(saved), "", f"{text}: compile time saved, least (%)")
    )
    out.append(_e("o0_compile_saving_max", max(saved), "", f"{text}: compile time saved, most (%)"))
    out.append(_e("o0_run_ratio_min", min(slower), "ratio", f"{text}: run time ratio, least"))
    out.append(_e("o0_run_ratio_max", max(slower), "ratio", f"{text}: run time ratio, most"))
    decisions = [p["auto"]["decision_seconds"] for p in points]
    out.append(_e("decision_min", 1e3 * min(decisions), "ms", "auto's decision, fastest"))
    out.append(_e("decision_max", 1e3 * max(decisions), "ms", "auto's decision, slowest"))
    # The probe jacobian_fn leaves to its calls (records since 2026-12-05).
    probed = [p for p in points if p["auto"].get("probe_seconds") is not None]
    text = "points where auto's calls run a probe"
    out.append(_e("probe_points", len(probed), "count", text))
    if probed:
        seconds = [p["auto"]["probe_seconds"] for p in probed]
        due = [p["auto"]["probe_due_after_calls"] for p in probed]
        # The probe against what the calls before it took, run (they are counted at the
        # model's prices): the ski-rental bound as it came out.
        paid = [
            p["auto"]["probe_seconds"]
            / (p["auto"]["probe_due_after_calls"] * p["contenders"]["bpjax auto"]["median"])
            for p in probed
        ]
        for name, value, unit, what in (
            ("probe_seconds_min", 1e3 * min(seconds), "ms", "the probe, fastest"),
            ("probe_seconds_max", 1e3 * max(seconds), "ms", "the probe, slowest"),
            ("probe_due_min", min(due), "count", "calls before it runs, fewest"),
            ("probe_due_max", max(due), "count", "calls before it runs, most"),
            ("probe_over_calls_min", min(paid), "ratio", "probe ÷ the calls before it, least"),
            ("probe_over_calls_max", max(paid), "ratio", "probe ÷ the calls before it, most"),
        ):
            out.append(_e(name, value, unit, f"{text}: {what}"))
    over = []
    for p in points:
        best = min(
            v["median"] for k, v in p["contenders"].items() if not k.startswith("bpjax auto")
        )
        if best > 0.010:
            over.append(p["auto"]["decision_seconds"] / best)
    text = "points whose best Jacobian takes over 10 ms"
    out.append(_e("slow_points", len(over), "count", text))
    out.append(
        _e(
            "decision_over_jacobian_min",
            min(over),
            "ratio",
            f"{text}: decision / one Jacobian, least",
        )
    )
    out.append(
        _e(
            "decision_over_jacobian_max",
            max(over),
            "ratio",
            f"{text}: decision / one Jacobian, most",
        )
    )
    return out


def mode_cost(record: dict) -> list[dict]:
    data, out = record["data"], []
    out.append(_e("sizes", ", ".join(map(str, data["sizes"])), "text", "sizes n and m"))
    out.append(_e("width_min", min(data["widths"]), "count", "narrowest width"))
    out.append(_e("width_max", max(data["widths"]), "count", "widest width"))
    for basis, key in (
        ("xla", "auto_over_best"),
        ("calibrated", "calibrated_over_best"),
        ("model", "model_over_best"),
        ("probe", "probe_over_best"),
    ):
        if key not in data["jacobian"][0]:
            continue  # records before the probe basis was measured
        hits = sum(r[key] <= 1.10 for r in data["jacobian"])
        out.append(
            _e(
                "auto_hits",
                hits,
                "count",
                f"auto ({basis}): points within 10% of the faster mode",
                basis=basis,
            )
        )
    deepest = max(data["memory"], key=lambda r: r["depth"])
    for mode, key in (
        ("rev", "temp_rev"),
        ("fwd", "temp_fwd"),
        ("rev_wrt_weights", "temp_rev_wrt_weights"),
    ):
        out.append(
            _e(
                "temp_deepest",
                deepest[key] / 2**20,
                "MiB",
                f"temp memory, {mode}, deepest",
                mode=mode,
                depth=deepest["depth"],
            )
        )
    fastest = ", ".join(f"{h['fastest']} at width {h['width']}" for h in data["hvp"])
    out.append(_e("fastest_hvp", fastest, "text", "fastest HVP order per width"))
    for r in data["jacobian"]:
        if (r["family"], r["n"], r["m"]) == ("elementwise", 2048, 256):
            at = {"family": "elementwise", "n": 2048, "m": 256}
            out.append(
                _e("products_fwd_over_rev", r["n"] / r["m"], "ratio", "products, fwd / rev", **at)
            )
            out.append(
                _e(
                    "flops_fwd_over_rev",
                    r["flops_fwd"] / r["flops_rev"],
                    "ratio",
                    "FLOPs, fwd / rev",
                    **at,
                )
            )
            out.append(
                _e("time_rev_over_fwd", r["t_rev"] / r["t_fwd"], "ratio", "time, rev / fwd", **at)
            )
    return out


def jacobian_structures(record: dict) -> list[dict]:
    """Per structure: bpjax sparse's and auto's time over asdex's, the products each used,
    and over all structures how many bpjax sparse was at or below asdex on.

    Sparse over asdex is the paired ratio (median of per-round ratios) where the record has
    the verdict against asdex, else the ratio of medians (records without that verdict);
    auto over asdex is always the ratio of medians."""
    out, at_or_below = [], 0
    points = record["data"]["points"]
    for p in points:
        c, at = p["contenders"], {"structure": p["structure"]}
        if "asdex" not in c:
            continue
        paired = p.get("verdicts", {}).get("vs asdex")
        for who, key in (("bpjax sparse", "sparse"), ("bpjax auto", "auto")):
            if key == "sparse" and paired is not None:
                ratio = paired["ratio"]
                text = f"{p['structure']}: {who} ÷ asdex (paired, median per-round ratio)"
            else:
                ratio = c[who]["median"] / c["asdex"]["median"]
                text = f"{p['structure']}: {who} ÷ asdex (medians)"
            out.append(_e(f"{key}_over_asdex", ratio, "ratio", text, **at))
            if key == "sparse":
                at_or_below += ratio <= 1.0
        for who, coloring in p["colorings"].items():
            if coloring.get("products") is not None:
                text = f"{p['structure']}: products, {who}"
                out.append(_e("products", coloring["products"], "count", text, **at, who=who))
    text = "structures where bpjax sparse took at most asdex's time"
    out.append(_e("sparse_at_or_below_asdex", at_or_below, "count", text))
    out.append(
        _e(
            "structures_with_asdex",
            sum("asdex" in p["contenders"] for p in points),
            "count",
            "structures asdex ran",
        )
    )
    return out
