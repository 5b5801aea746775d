"""What XLA says of a compiled program: FLOPs and bytes accessed, temporary memory, copies.

Loop bodies are counted once in ``cost_analysis()`` (the pitfall the package docstring
describes): count FLOPs on an unrolled program or analytically.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bpjax.measure._timing import compile_fn


def cost(fn: Callable, *args, missing: float = 0.0) -> dict[str, float]:
    """XLA's cost estimates for ``jit(fn)(*args)``: ``{"flops", "bytes accessed"}``.

    Loop bodies are counted once (see above). An estimate XLA does not give is ``missing``.
    """
    compiled, _ = compile_fn(fn, *args)
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jaxlib returned one dict per device
        analysis = analysis[0]
    return {key: float(analysis.get(key, missing)) for key in ("flops", "bytes accessed")}


def flops(fn: Callable, *args) -> float:
    """XLA's FLOP estimate for ``jit(fn)(*args)``. Loop bodies are counted once (see above)."""
    return cost(fn, *args, missing=float("nan"))["flops"]


def temp_bytes(fn: Callable, *args) -> int:
    """Compiled temporary memory of ``jit(fn)(*args)`` in bytes (deterministic, works on CPU)."""
    compiled, _ = compile_fn(fn, *args)
    return int(compiled.memory_analysis().temp_size_in_bytes)


def copies(compiled) -> list[str]:
    """Shapes of the ``copy`` instructions in a compiled program's optimized HLO.

    Args:
      compiled: from ``jax.jit(fn).lower(*args).compile()`` (or :func:`compile_fn`).

    Returns:
      e.g. ``["f32[1024,1024]", ...]``, one entry per copy, in program order.
    """
    return re.findall(r"= (\w+\[[0-9,]*\])(?:\{[^}]*\})? copy\(", compiled.as_text())


def program_signature(fn: Callable, *args) -> list[str]:
    """The optimized HLO of ``jit(fn)(*args)`` as a sorted list of its instructions, with
    names, metadata and stack frames left out: two compilations of one program (``jax.jacfwd``
    and ``bpjax.modes.jacobian_fn(mode="fwd")``, say) give equal signatures whatever their
    functions and values were called."""
    compiled, _ = compile_fn(fn, *args)
    lines = []
    for line in compiled.as_text().splitlines():
        # Instructions only ("%name = type op(...)"): not the module line, not the debug
        # tables of file names and stack frames.
        if not line.lstrip().startswith(("%", "ROOT")):
            continue
        line = re.sub(r", metadata=\{[^}]*\}", "", line)
        line = re.sub(r",? stack_frame_id=\d+", "", line)
        lines.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return sorted(lines)


def same_program(a: Callable, b: Callable, *args) -> bool:
    """Whether ``a`` and ``b`` compile to the same optimized program for ``args`` (equal
    :func:`program_signature`): a timing difference between them is then noise, not a
    difference in what they compute or how."""
    return a is b or program_signature(a, *args) == program_signature(b, *args)
