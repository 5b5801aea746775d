"""Result files: the JSON/figure pipeline, written atomically, and the report that reads it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bpjax import report, results, tables

ROOT = Path(__file__).resolve().parents[1]


def _save(out, name="demo", **overrides):
    kwargs = dict(
        out=out,
        profile="quick",
        seed=3,
        title="A demo",
        summary=[
            results.entry("ratio", 0.5, unit="ratio", text="ratio", n=4),
            results.entry("bad", float("nan"), unit="", text="bad"),
        ],
        data={"xs": [1.0, float("inf")]},
        figures=[],
        notes="Some words.",
    )
    kwargs.update(overrides)
    return results.save(name, **kwargs)


def test_save_and_report_roundtrip(tmp_path):
    args = results.parse_args("t", ["--out", str(tmp_path), "--seed", "3"])
    results.save_text(args.out / "demo.png", "not really a png")
    _save(args.out, seed=args.seed, profile=args.profile, figures=["demo.png"])
    rec = json.loads((tmp_path / "demo.json").read_text())
    assert rec["seed"] == 3 and rec["profile"] == "quick"
    assert results.value(rec, "bad") == "nan" and rec["data"]["xs"][1] == "inf"
    assert results.value(rec, "ratio", n=4) == 0.5
    with pytest.raises(KeyError, match="no summary entry ratio at {'n': 5}; it has ratio at"):
        results.value(rec, "ratio", n=5)
    assert (tmp_path / "demo.png").read_text() == "not really a png"
    text = report.render(tmp_path)
    assert "## A demo" in text and "| ratio | 0.5 |" in text and "![demo.png](demo.png)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.png"]


def test_a_failed_save_leaves_previous_files_byte_for_byte(tmp_path, monkeypatch):
    results.save_text(tmp_path / "flow.mmd", "graph one")
    _save(tmp_path, data={"run": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    # The next run stages a new figure, then fails half-way through writing its JSON.
    results.save_text(tmp_path / "flow.mmd", "graph two")
    real_dumps = json.dumps

    def dumps_then_fail(*args, **kwargs):
        text = real_dumps(*args, **kwargs)
        return text[: len(text) // 2] + object()  # TypeError mid-serialisation

    monkeypatch.setattr(json, "dumps", dumps_then_fail)
    with pytest.raises(TypeError):
        _save(tmp_path, data={"run": 2})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temporary file left behind


def test_a_full_disk_does_not_truncate_the_previous_result(tmp_path):
    """As `ulimit -f 8` would: the second, larger record cannot be written."""
    _save(tmp_path, data={"run": 1})
    before = (tmp_path / "demo.json").read_bytes()
    script = textwrap.dedent(
        f"""
        import resource
        from bpjax import results
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))
        results.save("demo", out={str(tmp_path)!r}, profile="quick", seed=0, title="big",
                     summary=[], data={{"xs": list(range(100_000))}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr
    assert (tmp_path / "demo.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]


@pytest.mark.parametrize(
    "summary, problem",
    [
        ({"ratio": 0.5}, "not a list of entries"),
        ([{"name": "x", "value": 1}], "lacks name, at, value, unit or text"),
        ([results.entry("Bad name", 1, unit="", text="t")], "not a lower-case identifier"),
        ([results.entry("x", 1, unit="furlongs", text="t")], "unit 'furlongs' not in"),
        ([results.entry("x", 1, unit="", text="t", n=[1, 2])], "is not a dict of scalars"),
        ([results.entry("x", 1, unit="", text="t", n=1)] * 2, "x at {'n': 1} twice"),
    ],
)
def test_save_refuses_a_summary_readers_cannot_look_up(tmp_path, summary, problem):
    with pytest.raises(ValueError, match="bad summary: .*" + re.escape(problem)):
        _save(tmp_path, summary=summary)
    assert list(tmp_path.iterdir()) == []


def test_committed_records_have_structured_summaries():
    for path in sorted((ROOT / "results").glob("**/*.json")):
        assert results.summary_problems(json.loads(path.read_text())["summary"]) == [], path


def test_staged_files_are_not_committed_without_save(tmp_path):
    (tmp_path / "fig.png").write_text("old")
    results.save_text(tmp_path / "fig.png", "new")
    assert (tmp_path / "fig.png").read_text() == "old"
    results._discard_staged()  # what happens at exit when the run died before save()
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_save_refuses_a_figure_that_was_never_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        _save(tmp_path, figures=["missing.png"])
    assert not (tmp_path / "demo.json").exists()


def test_report_names_an_unreadable_file_and_keeps_the_others(tmp_path, capsys):
    _save(tmp_path, name="good", title="Good one")
    (tmp_path / "broken.json").write_text('{"name": "broken", "title": ')
    (tmp_path / "other.json").write_text('{"unrelated": true}')
    old = {"name": "old", "title": "Old", "environment": {}, "summary": {"a sentence": 1.0}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert report.main([str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Good one" in text
    assert "`broken.json`: JSONDecodeError" in text
    assert "`other.json`: ValueError" in text
    assert "`old.json`: ValueError: summary: summary is a dict, not a list of entries" in text
    err = capsys.readouterr().err
    assert "broken.json" in err and "other.json" in err


def test_parse_args_refuses_an_unwritable_out_before_measuring(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exc:
        results.parse_args("t", ["--out", str(blocker / "sub")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        results.parse_args("t", ["--devices", "0", "--out", str(tmp_path)])


def test_report_sections_name_device_cpu_and_versions(tmp_path):
    _save(tmp_path)
    (rec,), _ = report.load(tmp_path)
    text = "\n".join(report.section(rec, level=1))
    env = rec["environment"]
    assert text.startswith("# A demo\n")
    for key in ("backend", "cpu_count", "jax", "jaxlib", "numpy", "optax", "flax", "python"):
        assert str(env[key]) in text, key
    assert str(env["cpu_model"] or env["machine"]) in text


def test_fill_tables_rewrites_only_marked_blocks_and_names_bad_markers():
    text = "intro 0.98\n<!-- table:t -->\n| old | 0.98 |\n<!-- /table -->\nafter\n"
    assert report.fill_tables(text, {"t": "| new |"}) == (
        "intro 0.98\n<!-- table:t -->\n| new |\n<!-- /table -->\nafter\n"
    )
    with pytest.raises(ValueError, match="no table named"):
        report.fill_tables(text, {"other": "x"})
    with pytest.raises(ValueError, match="no <!-- /table -->"):
        report.fill_tables("<!-- table:t -->\n| a |\n", {"t": "x"})


def test_readme_check_fails_on_a_stale_table(tmp_path):
    readme = tmp_path / "README.md"
    tables = report.readme_tables(ROOT / "results")
    stale = tables["depth"].replace("0.97", "0.98", 1)
    readme.write_text(f"<!-- table:depth -->\n{stale}\n<!-- /table -->\n")
    argv = [str(ROOT / "results"), "--readme", str(readme)]
    assert report.main([*argv, "--check"]) == 1
    assert report.main(argv) == 0 and report.main([*argv, "--check"]) == 0
    assert tables["depth"] in readme.read_text()


def test_headlines_table_names_the_renamed_summary_entry():
    records = report.records_by_name(ROOT / "results")
    table = tables.headlines_table(records)
    assert len(table.splitlines()) == 2 + len(tables.HEADLINES)
    renamed = [{**e, "name": "renamed"} for e in records["jacobians"]["summary"]]
    records["jacobians"] = {**records["jacobians"], "summary": renamed}
    with pytest.raises(KeyError, match="results/jacobians.json has no summary entry.*HEADLINES"):
        tables.headlines_table(records)


def _row(size, contender, ratio):
    return {"size": size, "contender": contender, "ratio_to_ref": ratio}


def test_table_builders_compute_their_columns_from_the_record():
    # Hand-made records with known answers: a wrong column, ratio or order fails here (the
    # published tables are produced by these same builders, so comparing them with the
    # committed pages alone would not catch it).
    overhead = {
        "summary": [
            results.entry("rev_over_ref", 0.5, unit="ratio", text="", layers="4-8-3", batch=100)
        ],
        "data": {
            "rows": [
                _row("4-8-3 b100", "rev (hand VJP)", 0.5),
                _row("4-8-3 b100", "fwd (hand JVP, transposed)", 2.0),
                _row("4-8-3 b100", "manual (δ recursion)", 1.25),
            ]
        },
    }
    assert tables.rules_overhead_table({"rules_overhead": overhead}).splitlines()[2] == (
        "| 4-8-3, batch 100 | 0.50 | 2.00 | 1.25 |"
    )
    timing = [
        {
            "strategy": "sqrt",
            "compiled_temp": 2**20,
            "predicted": 2**19,
            "evaluations": 8,
            "median": 0.003,
        },
        {
            "strategy": "none",
            "compiled_temp": 4 * 2**20,
            "predicted": 4 * 2**20,
            "evaluations": 4,
            "median": 0.002,
        },
    ]
    remat = tables.remat_table({"remat_memory": {"data": {"timing": timing}}}).splitlines()
    assert remat[2] == "| none | 4.0 MiB | 1.00 | 4 | 2 ms | 1.00 |"
    assert remat[3] == "| sqrt | 1.0 MiB | 2.00 | 8 | 3 ms | 1.50 |"
    coloring = {"products": 3, "jvps": 2, "vjps": 1, "lower_bound": 3}
    points = [
        {"family": "arrowhead", "N": 8, "n": 8, "m": 8, "colorings": {"bicoloring": coloring}},
        {"family": "arrowhead", "N": 4, "n": 4, "m": 4, "colorings": {"bicoloring": coloring}},
    ]
    colors = tables.jacobian_colors_table({"jacobians": {"data": {"points": points}}})
    assert colors.splitlines()[2:] == ["| arrowhead | 8×8 | – | – | 3 (2 JVPs + 1 VJP) |"]


def test_save_adds_the_derived_entries_and_survives_a_partial_run(tmp_path):
    vanishing = json.loads((ROOT / "results" / "vanishing.json").read_text())
    own = [e for e in vanishing["summary"] if not e.get("derived")]
    _save(tmp_path, name="vanishing", summary=own, data=vanishing["data"])
    assert json.loads((tmp_path / "vanishing.json").read_text())["summary"] == vanishing["summary"]
    _save(tmp_path, name="vanishing", summary=own, data={"width": 8})  # no batch, no seeds
    assert json.loads((tmp_path / "vanishing.json").read_text())["summary"] == own


def test_committed_derived_entries_are_current(tmp_path):
    # A derivation changed without `python -m bpjax.report --derive` fails here.
    for path in (ROOT / "results").glob("**/*.json"):
        copy = tmp_path / path.relative_to(ROOT / "results")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    assert report.rederive(tmp_path) == []


def test_structures_compare_sparse_with_asdex_paired_where_the_record_can():
    from bpjax.tables import _derived_sparse

    def point(verdicts):
        times = {"bpjax sparse": 1.10, "bpjax auto": 1.00, "asdex": 1.00}
        return {
            "structure": "s",
            "contenders": {k: {"median": v} for k, v in times.items()},
            "colorings": {},
            "verdicts": verdicts,
        }

    def entries(p):
        out = _derived_sparse.jacobian_structures({"data": {"points": [p]}})
        return {e["name"]: e["value"] for e in out}

    # Medians say 1.10 (behind); the rounds, paired, say 0.98: the paired ratio is published.
    paired = entries(point({"vs asdex": {"ratio": 0.98}}))
    assert paired["sparse_over_asdex"] == 0.98 and paired["sparse_at_or_below_asdex"] == 1
    assert paired["auto_over_asdex"] == 1.0
    old = entries(point({}))  # a record from before the paired verdict
    assert old["sparse_over_asdex"] == pytest.approx(1.10) and old["sparse_at_or_below_asdex"] == 0
