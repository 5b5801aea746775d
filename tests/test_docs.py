"""The docs site documents the whole public API, and its tutorials are executed strictly.

These tests read the sources of the site (``mkdocs.yml``, ``docs/``) and import the package;
they do not build the site (``make docs`` does, with ``--strict``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import bpjax

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = (ROOT / "mkdocs.yml").read_text()

# Names in an ``__all__`` that are data, not functions or classes, with where they come from.
DATA_EXPORTS = {
    ("rules", "TABLE"),
    ("tables", "TABLES"),
    ("tables", "SOURCES"),
    ("remat", "STRATEGIES"),
    ("modes", "BASES"),
    ("modes", "COLORINGS"),
    ("modes", "HESSIAN_MODES"),
    ("modes", "HVP_ORDERS"),
    ("modes", "MODES"),
    ("bench", "GRIDS"),
    ("bench", "HEADLINE"),
    ("bench", "LR"),
    ("bench", "OURS"),
    ("bench", "REFERENCE"),
    ("bench", "UNDONATED"),
}


def _page_members(module: str) -> list[str] | None:
    """The ``members:`` list of ``docs/api/<module>.md``; None when the page has none."""
    text = (DOCS / "api" / f"{module}.md").read_text()
    assert f"::: bpjax.{module}\n" in text, f"docs/api/{module}.md does not render bpjax.{module}"
    match = re.search(r"^ +members:\n((?: +- \w+\n)+)", text, flags=re.M)
    return None if match is None else re.findall(r"- (\w+)", match[1])


def _defined_here(module) -> set[str]:
    """Public functions and classes whose home is ``module`` (imports excluded)."""
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        # a private submodule's class re-exported here (bpjax.rules._rule.Rule) lives here
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + "._"))
    }


def _doc(attr) -> str:
    target = attr.fget if isinstance(attr, property) else attr
    return (getattr(target, "__doc__", None) or "").strip()


def _undocumented_methods(cls) -> list[str]:
    """Public methods and properties defined on ``cls`` itself without a docstring, neither
    their own nor the one of the base-class method they implement (a contract documented
    once, as on ``remat.Strategy``)."""
    missing = []
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        target = attr.fget if isinstance(attr, property) else attr
        if not inspect.isfunction(target):
            continue
        inherited = [vars(base)[name] for base in cls.__mro__[1:] if name in vars(base)]
        if not _doc(attr) and not any(_doc(a) for a in inherited):
            missing.append(f"{cls.__name__}.{name}")
    return missing


def test_the_library_lists_no_tooling():
    # `import bpjax` shows the library; bench, result records, report and tables are tooling.
    assert set(bpjax.__all__).isdisjoint(bpjax.TOOLING)
    assert all(getattr(bpjax, m).__name__ == f"bpjax.{m}" for m in bpjax.TOOLING)


def test_every_public_module_has_a_reference_page_in_the_nav():
    for module in [*bpjax.__all__, *bpjax.TOOLING]:
        assert (DOCS / "api" / f"{module}.md").is_file(), f"no docs/api/{module}.md"
        assert f"bpjax.{module}: api/{module}.md" in MKDOCS, f"api/{module}.md not in the nav"


@pytest.mark.parametrize("module", sorted({*bpjax.__all__, *bpjax.TOOLING}))
def test_reference_page_documents_exactly_the_modules_all(module):
    mod = importlib.import_module(f"bpjax.{module}")
    assert hasattr(mod, "__all__"), f"bpjax.{module} has no __all__"
    exported = set(mod.__all__)
    defined = _defined_here(mod)
    assert defined <= exported, (
        f"bpjax.{module} defines public {sorted(defined - exported)} missing from __all__: "
        "export them (and document them) or rename them with a leading underscore"
    )
    extra = {n for n in exported - defined if (module, n) not in DATA_EXPORTS}
    assert not extra, f"bpjax.{module}.__all__ lists {sorted(extra)}, not defined there"
    members = _page_members(module)
    assert members is not None, f"docs/api/{module}.md has no members: list"
    assert sorted(members) == sorted(exported), (
        f"docs/api/{module}.md documents {sorted(set(members) ^ exported)} differently from "
        f"bpjax.{module}.__all__"
    )


@pytest.mark.parametrize("module", sorted({*bpjax.__all__, *bpjax.TOOLING}))
def test_every_exported_function_and_class_has_a_docstring(module):
    mod = importlib.import_module(f"bpjax.{module}")
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        callable_ = inspect.isfunction(obj) or inspect.isclass(obj)
        if callable_ and not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            missing += _undocumented_methods(obj)
    assert not missing, f"bpjax.{module}: no docstring for {missing}"


def _tutorials() -> list[Path]:
    return sorted((DOCS / "tutorials").glob("*.py"))


def test_tutorials_are_in_the_nav_and_executed_strictly():
    nav = re.findall(r"(tutorials/\w+\.py)", MKDOCS)
    assert sorted(nav) == sorted(f"tutorials/{p.name}" for p in _tutorials())
    jupyter = MKDOCS.split("- mkdocs-jupyter:")[1].split("\n  - ")[0]
    for setting in ("execute: true", "allow_errors: false", "cache: false"):
        assert setting in jupyter, f"mkdocs-jupyter must run with {setting}"
    assert "strict: true" in MKDOCS


@pytest.mark.parametrize("path", _tutorials(), ids=lambda p: p.stem)
def test_tutorial_is_a_percent_script_ending_with_check_yourself(path):
    text = path.read_text()
    assert text.startswith("# %% [markdown]"), f"{path.name}: not a jupytext percent script"
    cells = text.split("# %%")
    last_heading = [c for c in cells if "[markdown]" in c and "\n# ## " in c][-1]
    assert "## Check yourself" in last_heading, f"{path.name} must end with 'Check yourself'"
    assert "assert " in text.split("## Check yourself")[1], (
        f"{path.name}: the 'Check yourself' answers must be computed (and asserted) on the page"
    )


def test_docstring_rendering_fences_doctests_and_plains_roles():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("gd", DOCS / "hooks" / "griffe_docstrings.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    text = "See :func:`~bpjax.models.block`::\n\n>>> f(1)\n[(4, 8)]\n\nAfter."
    assert hook.rewrite(text) == (
        "See ``bpjax.models.block``:\n\n```pycon\n>>> f(1)\n[(4, 8)]\n```\n\nAfter."
    )


# The widest code line each place shows without a scroll bar, in monospace columns. The site
# (Material, `font: false`): the content column at its narrowest desktop layout is 34.4rem
# (61rem grid − two 12.1rem sidebars − 1.2rem margins); a Markdown code block sets code at
# 0.68rem with 0.8rem padding a side, 80 columns of a 0.6em-wide font (SF Mono, Menlo,
# DejaVu Sans Mono). A notebook cell (the tour, the tutorials) sets it at a fixed 13px beside
# a 64px prompt: 73 columns at the 20px rem of that layout. One width for all code under
# docs/, the notebooks' (docs/ruff.toml formats their Python to it); the README is read on
# GitHub or PyPI, no narrower than the site's Markdown column.
CODE_COLUMNS = {"docs": 72, "README.md": 80}


def _fenced_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line inside a fenced code block."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker[1]
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            lines.append((number, line))
    return lines


def _notebook_code_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line of a percent script's code cells."""
    lines, code = [], True
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("# %%"):
            code = "[markdown]" not in line
        elif code:
            lines.append((number, line))
    return lines


def _code_blocks() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), DOCS / "tour.py", *_tutorials()]


@pytest.mark.parametrize("path", _code_blocks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fits_the_page_without_scrolling(path):
    text = path.read_text()
    lines = _notebook_code_lines(text) if path.suffix == ".py" else _fenced_lines(text)
    limit = CODE_COLUMNS[path.relative_to(ROOT).parts[0]]
    wide = [f"line {n}: {len(line)} columns" for n, line in lines if len(line) > limit]
    assert not wide, f"{path.relative_to(ROOT)}: code wider than {limit} columns: {wide}"


def test_the_width_check_reads_fences_and_code_cells():
    fenced = "text\n```python\nx = 1\n```\nmore\n~~~\ny\n~~~\n"
    assert _fenced_lines(fenced) == [(3, "x = 1"), (7, "y")]
    script = "# %% [markdown]\n# prose\n\n# %%\nx = 1\n# %% [markdown]\n# more\n"
    assert _notebook_code_lines(script) == [(5, "x = 1")]
