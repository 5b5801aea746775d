"""What the table builders share: Markdown tables, number formats, summary look-ups."""

from __future__ import annotations

import math

from bpjax.results import value


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def compact(x: float) -> str:
    """Two significant digits, in plain notation from 0.01 to 9999 and ``3.4e15`` outside."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    exponent = math.floor(math.log10(abs(x)))
    if -2 <= exponent <= 3:
        return f"{x:.{max(0, 1 - exponent)}f}"
    mantissa = x / 10**exponent
    if round(abs(mantissa), 1) >= 10:  # 9.96e7 rounds up to 1.0e8
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.1f}e{exponent}"


def number(value) -> float:
    """A JSON number, or NaN for the strings results.save writes for non-finite values."""
    return float(value) if isinstance(value, int | float) else float("nan")


def ratio(x) -> str:
    x = number(x)
    return f"{x:.0f}×" if x >= 10 else f"{x:.2f}×"


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g}"


def plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def entries(record: dict, name: str) -> list[dict]:
    """The summary entries of ``record`` named ``name``, in the order the experiment wrote them."""
    return [e for e in record["summary"] if e["name"] == name]


__all__ = ["table", "compact", "number", "ratio", "ms", "plural", "entries", "value"]
