"""Tables of the checkpointing experiments: remat_memory and online_remat."""

from __future__ import annotations

from bpjax.tables._common import ms, table


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
    return table(header + ["step time", "vs none"], body)


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
                ms(r["bpjax seconds"]),
                ms(r["equinox seconds"]) if "equinox seconds" in r else "",
                "" if scan is None else ms(scan),
            ]
        )
    header = ["L", "c", "bpjax evaluations", "Equinox evaluations", "offline optimum"]
    header += ["bpjax ms", "Equinox ms", "padded scan ms"]
    return table(header, body)


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
    return table(header, body)
