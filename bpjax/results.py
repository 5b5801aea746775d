"""Writing experiment results: one JSON per experiment, with device, versions and seed.

Experiments are thin scripts; this module gives them a shared command line and a shared
file format, so ``python -m bpjax.report`` can assemble ``results/REPORT.md`` from them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

from bpjax.measure import environment


def parse_args(description: str, argv=None, *, configure=None) -> argparse.Namespace:
    """The command line every experiment shares: ``--full``, ``--out DIR``, ``--seed N``,
    ``--devices N``.

    ``--devices N`` asks for N devices (data parallel where the experiment supports it); on
    CPU it simulates them with ``jax_num_cpu_devices``, which must happen before JAX first
    runs, so call this first thing in ``main``. ``configure(parser)`` adds an experiment's
    own options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--full", action="store_true", help="the paper-size sweep instead of the quick profile"
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--devices", type=int, default=None, help="data parallel over N devices (CPU: simulated)"
    )
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    if args.devices is not None:
        import jax

        if args.devices < 1:
            parser.error("--devices must be >= 1")
        jax.config.update("jax_num_cpu_devices", args.devices)
    args.profile = "full" if args.full else "quick"
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def _clean(value):
    """JSON has no NaN/inf: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def save(
    name: str,
    args: argparse.Namespace,
    *,
    title: str,
    summary: dict,
    data: dict,
    figures: list[str] = (),
    notes: str = "",
) -> Path:
    """Write ``<out>/<name>.json``.

    Args:
      name: the experiment's file stem (``rules_overhead``).
      args: from :func:`parse_args` (profile, seed, out).
      title: one line for the report.
      summary: the headline numbers, shown as a table in the report.
      data: every number measured.
      figures: PNG file names (relative to ``out``) to embed in the report.
      notes: a paragraph of interpretation for the report.
    """
    record = {
        "name": name,
        "title": title,
        "profile": args.profile,
        "seed": args.seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": summary,
        "notes": notes,
        "figures": list(figures),
        "data": data,
    }
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(_clean(record), indent=1) + "\n")
    print(f"wrote {path}")
    return path
