"""Writing experiment results: one JSON per experiment, with device, versions and seed.

Experiments are thin scripts; this module gives them a shared command line and a shared
file format, so ``python -m bpjax.report`` can assemble ``results/REPORT.md`` from them.

Every file is written atomically: figures and text go to a temporary file beside their
destination (:func:`staged`, :func:`save_figure`, :func:`save_text`) and only replace the
previous file when :func:`save` writes the JSON record, which is itself written to a
temporary file first and moved into place with ``os.replace``. A run that fails or is
interrupted (full disk, Ctrl-C, an exception) leaves the previous run's files complete and
consistent with each other.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import math
import os
import re
import tempfile
from pathlib import Path

from bpjax import _files
from bpjax._files import default_mode
from bpjax.measure import environment

__all__ = [
    "save",
    "entry",
    "summary_problems",
    "value",
    "parse_args",
    "save_figure",
    "save_text",
    "staged",
    "write_atomic",
    "writable_folder_problem",
]

# Destination -> temporary file written this run, moved into place by the next save().
_STAGED: dict[Path, Path] = {}


def parse_args(description: str, argv=None, *, configure=None) -> argparse.Namespace:
    """The command line every experiment shares: ``--full``, ``--out DIR``, ``--seed N``,
    ``--devices N``.

    ``--devices N`` asks for N devices (data parallel where the experiment supports it); on
    CPU it simulates them with ``jax_num_cpu_devices``, which must happen before JAX first
    runs, so call this first thing in ``main``. ``configure(parser)`` adds an experiment's
    own options. The output folder is created and checked to be writable here, before any
    measurement, so a bad ``--out`` costs nothing.
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
    if args.devices is not None and args.devices < 1:
        parser.error(f"--devices must be >= 1, got {args.devices}")
    problem = writable_folder_problem(args.out)
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    if args.devices is not None:
        import jax

        jax.config.update("jax_num_cpu_devices", args.devices)
    args.profile = "full" if args.full else "quick"
    return args


def writable_folder_problem(folder: Path) -> str | None:
    """Create ``folder`` if needed and try writing a file in it; the problem in words, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"cannot write there ({err.strerror or err}); choose a writable folder"
    return None


def staged(path: Path | str) -> Path:
    """A temporary file beside ``path`` that replaces ``path`` when :func:`save` next runs.

    Write the new content to the returned path (it keeps ``path``'s suffix, so tools that
    pick a format from the suffix still work). Until :func:`save` succeeds, ``path`` keeps
    its previous content; staged files never committed are removed when the process exits.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.fchmod(fd, default_mode())
    os.close(fd)
    previous = _STAGED.pop(path, None)
    if previous is not None:
        previous.unlink(missing_ok=True)
    _STAGED[path] = Path(tmp)
    return Path(tmp)


def save_figure(fig, path: Path | str, *, dpi: int = 120) -> None:
    """Render a matplotlib figure for ``path``, staged until the next :func:`save`."""
    path = Path(path)
    fig.savefig(staged(path), dpi=dpi, format=path.suffix.lstrip(".") or "png")


def save_text(path: Path | str, text: str) -> None:
    """Write ``text`` for ``path`` (a ``.mmd``, a ``.md``), staged until the next :func:`save`."""
    staged(path).write_text(text)


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing: a temporary file, then ``os.replace``.

    The library's one atomic write (:func:`bpjax._files.write_atomic`), which the core's
    caches use too."""
    _files.write_atomic(path, text)


def _commit_staged() -> None:
    for path, tmp in list(_STAGED.items()):
        os.replace(tmp, path)
        del _STAGED[path]


@atexit.register
def _discard_staged() -> None:
    for tmp in _STAGED.values():
        tmp.unlink(missing_ok=True)
    _STAGED.clear()


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


UNITS = frozenset(
    {"", "ratio", "fraction", "count", "bool", "text", "s", "ms", "MiB", "MB", "GB", "GFLOP/s"}
)
"""What a summary entry's ``unit`` may be: ``"ratio"`` (a quotient of two like quantities:
times, sizes), ``"fraction"`` (a share, an accuracy), ``"count"``, ``"bool"``, ``"text"`` (a
value in words), ``""`` (a dimensionless number of another kind: a slope, a cosine, an
error), or a physical unit."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def entry(name: str, value, *, unit: str, text: str, **at) -> dict:
    """One summary entry: ``name`` (a short identifier, stable across runs), ``value``,
    ``unit`` (one of ``UNITS``: ``"ratio"``, ``"fraction"``, ``"count"``, ``"bool"``,
    ``"text"``, ``""`` for another dimensionless number, or a physical unit), the grid point
    ``at`` it was measured at (keyword arguments: ``family="stencil", n=4096``) and
    ``text``, the sentence the report shows.

    Readers find an entry by name and grid point (:func:`value`); the text is for people.
    """
    return {"name": name, "at": at, "value": value, "unit": unit, "text": text}


def summary_problems(summary) -> list[str]:
    """What is wrong with a record's ``summary`` (a list of :func:`entry` dicts), in words:
    a missing field, a name that is not an identifier, an unknown unit, a grid point that is
    not a dict of scalars, two entries with one name and grid point. Empty if nothing."""
    if not isinstance(summary, list):
        return [f"summary is a {type(summary).__name__}, not a list of entries"]
    problems, seen = [], set()
    for i, e in enumerate(summary):
        if not isinstance(e, dict) or not {"name", "at", "value", "unit", "text"} <= set(e):
            problems.append(f"entry {i} lacks name, at, value, unit or text: {e!r}")
            continue
        if not isinstance(e["name"], str) or not _NAME.fullmatch(e["name"]):
            problems.append(f"entry {i}: name {e['name']!r} is not a lower-case identifier")
        if e["unit"] not in UNITS:
            problems.append(f"entry {i} ({e['name']}): unit {e['unit']!r} not in {sorted(UNITS)}")
        at = e["at"]
        if not isinstance(at, dict) or not all(
            isinstance(v, str | int | float | bool) for v in at.values()
        ):
            problems.append(f"entry {i} ({e['name']}): grid point {at!r} is not a dict of scalars")
            continue
        key = (e["name"], tuple(sorted(at.items())))
        if key in seen:
            problems.append(f"entry {i}: {e['name']} at {at} twice")
        seen.add(key)
    return problems


def value(record: dict, name: str, **at):
    """The value of summary entry ``name`` at grid point ``at`` of ``record``.

    Raises:
      KeyError: no such entry (the message lists the grid points ``name`` has, if any).
    """
    found = [e for e in record["summary"] if e["name"] == name]
    for e in found:
        if e["at"] == at:
            return e["value"]
    points = [e["at"] for e in found]
    raise KeyError(
        f"results/{record.get('name')}.json has no summary entry {name} at {at}"
        + (f"; it has {name} at {points}" if points else "")
    )


def save(
    name: str,
    *,
    out: Path | str,
    profile: str,
    seed: int,
    title: str,
    summary: dict,
    data: dict,
    figures: list[str] = (),
    notes: str = "",
) -> Path:
    """Write ``<out>/<name>.json`` and commit the files staged since the last save.

    Args:
      name: the experiment's file stem (``rules_overhead``).
      out: the output folder.
      profile: ``"quick"`` or ``"full"`` (which sweep produced the numbers).
      seed: the random seed of the run.
      title: one line for the report.
      summary: the headline numbers, shown as a table in the report: a list of
        :func:`entry` dicts (name, grid point, value, unit, text).
      data: every number measured.
      figures: PNG file names (relative to ``out``) to embed in the report; each must have
        been staged this run (:func:`save_figure`) or exist from an earlier one.
      notes: a paragraph of interpretation for the report.

    The summary gets the record's derived entries (:func:`bpjax.tables.derive`: figures the
    findings pages publish, computed from ``data``) after the experiment's own; a run whose
    data lacks what a derivation needs is saved without them, saying so.

    The JSON is serialised and written to a temporary file first; only when that succeeded
    are the staged figures and the JSON moved into place, so a failure at any point before
    leaves every previous file as it was.
    """
    out = Path(out)
    problems = summary_problems(summary)
    if problems:
        raise ValueError(f"results.save({name!r}): bad summary: " + "; ".join(problems))
    missing = [f for f in figures if (out / f) not in _STAGED and not (out / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"results.save({name!r}): figures {missing} were neither staged with "
            "results.save_figure nor present in " + str(out)
        )
    record = {
        "name": name,
        "title": title,
        "profile": profile,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": summary,
        "notes": notes,
        "figures": list(figures),
        "data": data,
    }
    from bpjax.tables import derive  # the figures the findings pages publish (imports this)

    try:
        record["summary"] = derive(_clean(record))
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as err:
        # A partial run (a subset of families, sizes) lacks what the pages publish: keep the
        # measurements; the published-numbers test names the entries that are missing.
        print(f"results.save({name!r}): no derived entries ({type(err).__name__}: {err})")
    path = out / f"{name}.json"
    try:
        text = json.dumps(_clean(record), indent=1) + "\n"
        with open(staged(path), "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _discard_staged()
        raise
    _commit_staged()
    print(f"wrote {path}")
    return path
