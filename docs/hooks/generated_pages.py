"""MkDocs hook: pages generated at build time from the library and from results/.

* ``rule-table.md``: :func:`bpjax.rules.markdown_table`, the same table the README carries.
* ``results/index.md`` and one page per result record (``results/<name>.md``, and
  ``results/full/<name>.md`` for the ``--full`` sweeps), rendered by
  :func:`bpjax.report.section` from the committed JSON, with the figures copied beside them.
  The numbers on the site are therefore the committed ones; nothing is measured here.

Result pages are appended to the ``Results`` section of the nav, so a new record needs no
edit to ``mkdocs.yml``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

from bpjax import report, rules

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
# Folders of results/ with pages on the site, and what their records are.
PROFILES = {"": "quick profile (`make reproduce`)", "full": "`--full` sweep"}


def _records():
    """``(folder, record)`` for every readable record, problems raised: a result file the
    site cannot show must fail the strict build, not vanish from it."""
    for folder in PROFILES:
        records, problems = report.load(RESULTS / folder)
        if problems:
            raise ValueError(f"results/{folder}: unreadable result files: {problems}")
        for rec in records:
            yield folder, rec


def _uri(folder: str, name: str) -> str:
    return f"results/{folder}/{name}" if folder else f"results/{name}"


def on_config(config):
    nav = config["nav"]
    results = next(entry["Results"] for entry in nav if "Results" in entry)
    for folder, rec in _records():
        suffix = " (full)" if folder else ""
        results.append({f"{rec['title']}{suffix}": _uri(folder, f"{rec['name']}.md")})
    return config


def _index(records) -> str:
    lines = [
        "# Results",
        "",
        "Every page here is rendered at build time from a JSON record committed in `results/`",
        "(`make reproduce` writes them; `python -m bpjax.report results` writes the same",
        "sections to `results/REPORT.md`). Each page names the device, CPU and versions its",
        "numbers were measured with.",
        "",
        "| record | profile | measured on |",
        "|---|---|---|",
    ]
    for folder, rec in records:
        env = rec["environment"]
        link = f"[{rec['title']}]({_uri(folder, rec['name'] + '.md').removeprefix('results/')})"
        device = f"{env.get('backend')}, {env.get('cpu_model') or env.get('device')}"
        lines.append(f"| {link} | {PROFILES[folder]} | {device}, {rec.get('created')} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    files.append(
        File.generated(
            config,
            "rule-table.md",
            content="# The rule table\n\n"
            "Generated from `bpjax.rules.TABLE` by `bpjax.rules.markdown_table()`. A dot is a "
            "tangent, a bar a cotangent; `m` is the number of rows averaged over. Each rule "
            "lives in one file, primal, JVP and VJP side by side: `bpjax/rules/linear.py`, "
            "`activations.py`, `softmax.py`, `losses.py`. Tutorial "
            "[2](tutorials/02_jvp_vjp.py) checks one of them.\n\n" + rules.markdown_table() + "\n",
        )
    )
    records = list(_records())
    files.append(File.generated(config, "results/index.md", content=_index(records)))
    for folder, rec in records:
        page = "\n".join(report.section(rec, level=1)) + "\n"
        files.append(File.generated(config, _uri(folder, f"{rec['name']}.md"), content=page))
        for fig in rec.get("figures", []):
            source = RESULTS / folder / fig
            files.append(File.generated(config, _uri(folder, fig), abs_src_path=str(source)))
    return files
