"""The README and the findings pages publish the committed results, number by number.

Each findings page (``docs/findings/<name>.md``) is one section, and the README another. A
number in a section's prose is accounted for in one of three ways:

* it sits in a generated table (``<!-- table:NAME -->``), and the table equals what
  ``python -m bpjax.report --readme`` computes from ``results/``;
* it sits in a figure of ``tests/published_figures.toml``: a phrase as the page reads, with
  each number written as a reference to a record's summary entry, ``{name key=value |format}``
  (the entry ``name`` at that grid point; ``{full/depth:name ...}`` names another record
  than the section's), which this test formats from the record and looks for on the page;
* it is not a measurement (mathematics, versions, a test's threshold): the file lists it
  under ``not_measured``, with why.

Code blocks are not prose (their numbers are inputs, run by the tests). A number in a tied
section that is none of these fails, naming it; so does a figure whose page no longer says
what its record holds.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import tomllib

from bpjax import report, results, tables

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "docs" / "findings"
RESULTS = ROOT / "results"
FIGURES = tomllib.loads((Path(__file__).parent / "published_figures.toml").read_text())
PAGES = {k: v for k, v in FIGURES.items() if isinstance(v, dict)}


@functools.cache
def _tables_now() -> dict[str, str]:
    """Every table as the committed results give it (computed once for all documents)."""
    return report.readme_tables(RESULTS)


@functools.cache
def _record(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _documents() -> dict[str, str]:
    """The README and every findings page, by the name the figures file gives them."""
    pages = {p.stem: p.read_text() for p in sorted(FINDINGS.glob("*.md"))}
    return {"README": (ROOT / "README.md").read_text(), **pages}


def _prose(text: str) -> str:
    """Whitespace collapsed; generated tables, code blocks and link targets removed."""
    text = re.sub(r"<!-- table:[\w-]+ -->\n.*?<!-- /table -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets are paths, not findings
    return " ".join(text.split())


SECTIONS = {name: _prose(text) for name, text in _documents().items()}
TIED = sorted(set(SECTIONS) - set(FIGURES["pending"]))

# A reference in a figure: {[record:]name [key=value ...] [|format]}; {{ and }} are braces.
_REFERENCE = re.compile(r"\{\{|\}\}|\{([^{}|]+?)\s*(?:\|\s*([^{}]*))?\}")


def _scalar(token: str):
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(token, token)


def _format(value, spec: str) -> str:
    """``value`` as the page writes it: a format spec (``.2f``, ``,``, ``.0%``), or
    ``compact`` (:func:`bpjax.tables.compact`), ``sci`` (``1e-3``), ``up.3f`` and
    ``down.2f`` (rounded up or down at that precision: "at most", "at least")."""
    if spec == "compact":
        return tables.compact(value)
    if spec == "sci":
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    if spec[:2] in ("up", "do"):
        digits = int(spec.split(".")[1][:-1])
        scaled = (math.ceil if spec.startswith("up") else math.floor)(value * 10**digits)
        return f"{scaled / 10**digits:.{digits}f}"
    return format(value, spec)


def _fill(phrase: str, record: str) -> str:
    """``phrase`` with each reference replaced by its entry's value, formatted."""

    def one(m: re.Match) -> str:
        if m[0] in ("{{", "}}"):
            return m[0][0]
        name, *point = shlex.split(m[1])
        where, _, name = name.rpartition(":")
        at = {k: _scalar(v) for k, _, v in (token.partition("=") for token in point)}
        value = results.value(_record(where or record), name, **at)
        return _format(value, (m[2] or "").strip())

    return _REFERENCE.sub(one, phrase)


FILLED = [
    (page, phrase, _fill(phrase, spec["record"]))
    for page, spec in PAGES.items()
    for phrase in spec.get("figures", [])
]


@pytest.mark.parametrize("name", sorted(_documents()))
def test_published_tables_equal_the_results(name):
    text = _documents()[name]
    filled = report.fill_tables(text, _tables_now())
    assert filled == text, (
        f"{name}: tables differ from results/: run python -m bpjax.report --readme"
    )


def test_every_table_is_published_somewhere():
    used = set(re.findall(r"<!-- table:([\w-]+) -->", "".join(_documents().values())))
    assert used == set(tables.TABLES), sorted(set(tables.TABLES) ^ used)


def test_the_figures_file_names_real_pages():
    assert set(PAGES) | set(FIGURES["pending"]) <= set(SECTIONS), sorted(set(PAGES) - set(SECTIONS))


@pytest.mark.parametrize(
    "page, phrase, filled", FILLED, ids=[f"{p}: {f[:40]}" for p, _, f in FILLED]
)
def test_figure_matches_its_record(page, phrase, filled):
    assert filled in SECTIONS[page], (
        f"{page}: the page should say what the records hold:\n  {filled!r}\n"
        f"(tests/published_figures.toml: {phrase!r})"
    )


@pytest.mark.parametrize("page", TIED)
def test_every_number_in_a_tied_section_is_accounted_for(page):
    text = SECTIONS[page]
    blank = lambda m: " " * len(m[0])  # noqa: E731
    text = re.sub(r"`[^`]*`", blank, text)  # identifiers, not claims
    text = re.sub(r"!\[[^]]*\]\([^)]*\)", blank, text)  # figure links
    text = re.sub(r"<!--.*?-->", blank, text)  # comments
    phrases = [f for p, _, f in FILLED if p == page]
    phrases += FIGURES["not_measured"] + PAGES.get(page, {}).get("not_measured", [])
    covered = [
        (m.start(), m.end()) for p in phrases for m in re.finditer(re.escape(p), SECTIONS[page])
    ]
    loose = [
        m[0]
        for m in re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?", text)
        if not any(a <= m.start() < b for a, b in covered)
    ]
    assert not loose, f"{page}: numbers with no record entry in published_figures.toml: {loose}"


def test_not_measured_phrases_are_still_on_their_pages():
    for page, spec in PAGES.items():
        for phrase in spec.get("not_measured", []):
            assert phrase in SECTIONS[page], f"{phrase!r} left {page!r}: drop it from the file"
