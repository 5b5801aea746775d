"""Tables of the Jacobian and Hessian experiments: times per contender, colorings."""

from __future__ import annotations

from bpjax.tables._common import ms, plural, table

_JACOBIAN_PEERS = ["jax.jacfwd", "jax.jacrev", "asdex", "sparsejac"]


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
            + [ms(times[name]) if name in times else "–" for name in _JACOBIAN_PEERS]
            + [f"{ms(auto)} ({p['auto']['method']})", f"{auto / min(others):.2f}"]
        )
    header = ["family", "n×m", "output", *_JACOBIAN_PEERS, "bpjax auto (pick)"]
    return table(header + ["auto ÷ best other"], body)


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
                    f"{c['products']} ({plural(c['jvps'], 'JVP')} + {plural(c['vjps'], 'VJP')})"
                )
            else:
                cells.append(f"{c['products']} (bound {c['lower_bound']})")
        body.append([family, f"{p['n']}×{p['m']}", *cells])
    return table(["family", "n×m", "column coloring", "row coloring", "bicoloring"], body)


def _verdict(v: dict) -> str:
    """A paired verdict as the tables show it: the ratio and ahead/behind/tie, or that the
    two compiled to one program (their ratio is then the spread between compilations)."""
    if not v:
        return "–"
    return f"{v['ratio']:.2f} " + ("same program" if v.get("same_program") else v["verdict"])


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
        cell = lambda name, c=c: ms(c[name]["median"]) if name in c else ""  # noqa: E731
        auto = point["auto"]
        body.append(
            [
                f"{family} n = {point['n']}",
                cell("jax.hessian"),
                cell("bpjax dense"),
                cell("asdex"),
                cell("bpjax auto"),
                f"{auto['method']}, {auto['order']}" if auto["method"] != "dense" else "dense",
                cell("dense output floor"),
                cell("asdex BCOO"),
                cell("bpjax auto BCOO"),
                " / ".join(
                    _verdict(point.get("verdicts", {}).get(fmt, {})) for fmt in ("dense", "BCOO")
                ),
                " / ".join(str(colors.get(k)) for k in ("star", "acyclic", "asdex star"))
                if colors.get("star") is not None
                else "none (dense)",
            ]
        )
    header = ["family", "jax.hessian", "bpjax dense", "asdex", "bpjax auto", "auto chose"]
    header += ["n x n write", "asdex BCOO", "bpjax auto BCOO", "auto vs asdex, dense / BCOO"]
    header += ["colors star / acyclic / asdex"]
    return table(header, body)


def jacobian_structures_table(records: dict) -> str:
    """Microseconds per Jacobian (n = 4096, float64, BCOO output) on structures beyond the
    tuned families, and bpjax sparse's paired ratio to the best peer with its verdict
    (``jacobian_structures``)."""
    body = []
    for p in records["jacobian_structures"]["data"]["points"]:
        c, colorings, v = p["contenders"], p["colorings"], p["verdicts"]
        us = lambda name, c=c: f"{1e6 * c[name]['median']:.0f}" if name in c else "–"  # noqa: E731
        sparse = colorings["bpjax sparse"]
        peer = v.get("vs best peer")
        body.append(
            [
                p["structure"],
                str(p["nnz"]),
                f"{sparse['method']} ({sparse['products']})",
                str(colorings.get("asdex", {}).get("products", "–")),
                us("bpjax sparse"),
                us("bpjax auto"),
                us("asdex"),
                us("sparsejac.jacfwd"),
                us("sparsejac.jacrev"),
                f"{peer['ratio']:.2f} ({peer['ci'][0]:.2f}-{peer['ci'][1]:.2f}), "
                + ("same program" if peer.get("same_program") else peer["verdict"])
                if peer
                else "–",
            ]
        )
    header = ["structure", "nonzeros", "bpjax sparse (products)", "asdex colors"]
    header += ["bpjax sparse", "bpjax auto", "asdex", "sparsejac.jacfwd", "sparsejac.jacrev"]
    header += ["sparse ÷ best peer (95% CI), verdict"]
    return table(header, body)
