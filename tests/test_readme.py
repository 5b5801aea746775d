"""The README tells the truth: its code runs and its rule table is the library's."""

from __future__ import annotations

import re
from pathlib import Path

import jax

from bpjax import rules

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks and len(blocks) == text.count("```python")  # no block escapes the regex
    namespace: dict = {}
    with jax.enable_x64(False):  # as a user's fresh session would run them
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)


def test_readme_rule_table_matches_the_library():
    text = README.read_text()
    table = text.split("<!-- rule-table:start -->\n")[1].split("\n<!-- rule-table:end -->")[0]
    assert table == rules.markdown_table()
