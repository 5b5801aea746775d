"""The README tells the truth: its code runs (its numbers: tests/test_published_numbers.py)."""

from __future__ import annotations

import re
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks and len(blocks) == text.count("```python")  # no block escapes the regex
    namespace: dict = {}
    with jax.enable_x64(False):  # as a user's fresh session would run them
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)


def test_readme_links_point_at_files_that_exist():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 10  # the findings pages, tutorials, docs and the report
    missing = [t for t in local if not (README.parent / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
