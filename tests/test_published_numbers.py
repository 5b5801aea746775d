"""The README and the findings pages publish the committed results, number by number.

Each findings page (``docs/findings/<name>.md``) is one section, and the README another. A
number in a section's prose is accounted for in one of three ways:

* it sits in a generated table (``<!-- table:NAME -->``), and the table equals what
  ``python -m bpjax.report --readme`` computes from ``results/``;
* it sits in a claim below: a phrase whose numbers are recomputed here from the JSON;
* it is mathematics (``σ' ≤ 1/4``), listed in ``MATH``.

Code blocks are not prose (their numbers are inputs, run by the tests). Sections not yet tied
to ``results/`` are listed in ``PENDING_SECTIONS`` and numbers the results do not record in
``UNRECORDED``; everything else fails, naming the number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bpjax import report, tables

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FINDINGS = ROOT / "docs" / "findings"
RESULTS = ROOT / "results"


def _record(name: str, folder: str = "") -> dict:
    return json.loads((RESULTS / folder / f"{name}.json").read_text())


# Result sections whose numbers are not tied to results/ yet (their experiments are being
# rewritten); the lead ties them with tables or claims when rewriting the README.
PENDING_SECTIONS = {
    "rules_overhead",
    "modes",
    "autograd",
    "remat",
    "bench",
    "parallel",
    "nnx",
    "accelerators",
}

# Numbers stated in tied sections that results/ does not record: exploding.json keeps the
# runs of parts (b) and (d) but not their learning rate, depth or gain. Add them to the
# record's data, then turn these into claims.
UNRECORDED = {"exploding": ["SGD (lr 0.05)", "a depth-8 gain-2 net", "A depth-64"]}

# Mathematics, and facts about the project rather than measurements.
MATH = [
    "Python 3.10+",
    "(1/4)^(L−l)",
    "σ' ≤ 1/4",
    "(1/4)^L",
    "z = 0",
    "(α = 1)",
    "α = 1/√L",
    "exceeds 1",
]


def _chance_depth(activation: str) -> int:
    """The first depth at which the plain net's test accuracy is below 0.2 (10 classes)."""
    runs = _record("depth")["data"]["runs"]
    return min(
        r["depth"]
        for r in runs
        if r["activation"] == activation and r["arch"] == "plain" and r["test_acc"] < 0.2
    )


def _depth_acc(activation: str, arch: str, depth: int) -> float:
    (acc,) = [
        r["test_acc"]
        for r in _record("depth")["data"]["runs"]
        if (r["activation"], r["arch"], r["depth"]) == (activation, arch, depth)
    ]
    return acc


def _sgd_test_thresholds() -> dict:
    source = (ROOT / "tests" / "test_train.py").read_text()
    body = source.split("def test_plain_sigmoid_depth_8_stays_at_chance_under_sgd")[1]
    body = body.split("\ndef ")[0]
    return {
        "lr": re.search(r'optimizer="sgd", learning_rate=([\d.]+)', body)[1],
        "lo": re.search(r"plain\.final_test_acc <= ([\d.]+)", body)[1],
        "hi": re.search(r"residual\.final_test_acc >= ([\d.]+)", body)[1],
    }


def _clip_labels() -> dict:
    labels = list(_record("exploding")["data"]["divergence"])
    return {
        "norm": re.search(r"clip global norm ([\d.]+)", " ".join(labels))[1],
        "value": re.search(r"clip value ([\d.]+)", " ".join(labels))[1],
    }


# (section, phrase with {fields}, fields computed from the results)
CLAIMS = [
    (
        "vanishing",
        "(width {width}, batch {batch}, geometric mean of {seeds} seeds)",
        lambda: {
            "width": _record("vanishing")["data"]["width"],
            "batch": _record("vanishing")["data"]["batch"],
            "seeds": len(_record("vanishing")["data"]["seeds"]),
        },
    ),
    (
        "exploding",
        "clipping by global norm {norm} or by value {value}",
        _clip_labels,
    ),
    (
        "exploding",
        "at {cos_norm:.2f} at every threshold; clipping by value drops it to {cos_value:.2f}",
        lambda: {
            "cos_norm": min(_record("exploding")["data"]["cos_norm"]),
            "cos_value": min(_record("exploding")["data"]["cos_value"]),
        },
    ),
    (
        "depth",
        "{steps} Adam steps, batch {batch}, lr {lr}, width {width}.",
        lambda: {
            **{k: _record("depth")["data"][k] for k in ("steps", "batch", "width")},
            "lr": f"{_record('depth')['data']['lr']:.0e}".replace("e-0", "e-"),
        },
    ),
    (
        "depth",
        "(sigmoid by depth {sigmoid}, ReLU by {relu})",
        lambda: {"sigmoid": _chance_depth("sigmoid"), "relu": _chance_depth("relu")},
    ),
    (
        "depth",
        "Plain sigmoid at depth {depth} still reaches {acc:.0%} under Adam",
        lambda: {"depth": 8, "acc": _depth_acc("sigmoid", "plain", 8)},
    ),
    (
        "depth",
        "under SGD (lr {lr}) it stays at chance (test accuracy at most {lo}) while the "
        "residual net reaches at least {hi}",
        _sgd_test_thresholds,
    ),
    (
        "depth",
        "see only the last {window} hidden outputs",
        lambda: {"window": re.search(r"window of (\d+)", _record("depth")["notes"])[1]},
    ),
    (
        "depth",
        "the `--full` sweep (depths {lo}-{hi}, {seeds} seeds)",
        lambda: {
            "lo": min(_record("depth", "full")["data"]["depths"]),
            "hi": max(_record("depth", "full")["data"]["depths"]),
            "seeds": len(_record("depth", "full")["data"]["seeds"]),
        },
    ),
]


def _prose(text: str) -> str:
    """Whitespace collapsed; generated tables and code blocks removed."""
    text = re.sub(r"<!-- table:[\w-]+ -->\n.*?<!-- /table -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets are paths, not findings
    return " ".join(text.split())


def _sections() -> dict[str, str]:
    """Every findings page by file stem, and the README, as prose."""
    pages = {p.stem: _prose(p.read_text()) for p in sorted(FINDINGS.glob("*.md"))}
    return {**pages, "README": _prose(README)}


def _documents() -> dict[str, str]:
    return {"README.md": README} | {
        f"docs/findings/{p.name}": p.read_text() for p in sorted(FINDINGS.glob("*.md"))
    }


SECTIONS = _sections()
TIED = sorted(set(SECTIONS) - PENDING_SECTIONS)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?")


def test_sections_are_known():
    assert set(SECTIONS) >= PENDING_SECTIONS, sorted(PENDING_SECTIONS - set(SECTIONS))


@pytest.mark.parametrize("name", sorted(_documents()))
def test_published_tables_equal_the_results(name):
    text = _documents()[name]
    filled = report.fill_tables(text, report.readme_tables(RESULTS))
    assert filled == text, (
        f"{name}: tables differ from results/: run python -m bpjax.report --readme"
    )


def test_every_table_is_published_somewhere():
    used = set(re.findall(r"<!-- table:([\w-]+) -->", "".join(_documents().values())))
    assert used == set(tables.TABLES), sorted(set(tables.TABLES) ^ used)


@pytest.mark.parametrize(
    "section, template, values", CLAIMS, ids=[f"{s}: {t[:40]}" for s, t, _ in CLAIMS]
)
def test_claim_matches_the_results(section, template, values):
    phrase = template.format(**values())
    assert phrase in SECTIONS[section], f"section {section!r} should say: {phrase!r}"


@pytest.mark.parametrize("section", TIED)
def test_every_number_in_a_tied_section_is_accounted_for(section):
    text = SECTIONS[section]
    text = re.sub(r"`[^`]*`", lambda m: " " * len(m[0]), text)  # identifiers, not claims
    text = re.sub(r"!\[[^]]*\]\([^)]*\)", lambda m: " " * len(m[0]), text)  # figure links
    covered = []
    phrases = [t.format(**v()) for s, t, v in CLAIMS if s == section]
    for phrase in phrases + MATH + UNRECORDED.get(section, []):
        covered += [(m.start(), m.end()) for m in re.finditer(re.escape(phrase), SECTIONS[section])]
    loose = [
        m[0] for m in _NUMBER.finditer(text) if not any(a <= m.start() < b for a, b in covered)
    ]
    assert not loose, f"{section}: numbers with no source in results/: {loose}"


def test_unrecorded_numbers_are_still_in_the_readme():
    for section, phrases in UNRECORDED.items():
        for phrase in phrases:
            assert phrase in SECTIONS[section], f"{phrase!r} left {section!r}: drop it here"
