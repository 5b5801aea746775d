"""Griffe extension: render bpjax's plain-text docstrings as the site's Markdown.

The docstrings stay what ``help()`` and doctest read; only their rendering changes:

* a doctest block (lines from ``>>>`` to the next blank line) becomes a ``pycon`` code
  block: as bare Markdown, ``>>>`` would open nested block quotes and ``[(4, 8)]`` in its
  output would read as a broken link;
* Sphinx roles (``:func:`bpjax.models.block```, ``:class:`~Report```) become code spans;
* a reST literal-block marker (a line ending in ``::``) ends in one colon, as its indented
  block already renders as code.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|obj|exc):`~?([^`]+)`")


def _fence_doctests(text: str) -> str:
    out, block = [], []

    def flush():
        if block:
            indent = block[0][: len(block[0]) - len(block[0].lstrip())]
            body = [line[len(indent) :] if line.startswith(indent) else line for line in block]
            out.extend([f"{indent}```pycon", *(indent + b for b in body), f"{indent}```"])
            block.clear()

    for line in text.splitlines():
        if block and not line.strip():
            flush()
        if block or line.lstrip().startswith(">>>"):
            block.append(line)
            continue
        out.append(line)
    flush()
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The docstring ``text`` as the site renders it."""
    text = re.sub(r"(?<=[^\s:])::$", ":", _fence_doctests(text), flags=re.M)
    return _ROLE.sub(r"``\1``", text)


class PlainDocstrings(griffe.Extension):
    """Applies :func:`rewrite` to every object's docstring, loaded statically or inspected."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        del node, agent, kwargs
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
