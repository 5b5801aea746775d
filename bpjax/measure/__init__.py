"""Measurement helpers every benchmark uses: timing, XLA FLOPs, compiled memory, environment.

Timing follows the usual rules for JAX: compile once and report that time apart, warm up,
``block_until_ready`` on every result, many repeats, and report the median with the spread
(10th-90th percentile). :func:`compare` interleaves contenders round by round, so drift on a
shared machine (another process, frequency scaling) hits all of them alike.

Two pitfalls the helpers document rather than hide:

* ``compiled.cost_analysis()["flops"]`` counts the body of a ``scan``/``while`` loop once,
  not once per iteration: count FLOPs on an unrolled program or analytically.
* ``memory_analysis().temp_size_in_bytes`` is what XLA plans for temporaries: deterministic
  and available on CPU, unlike ``device.memory_stats()`` (``None`` on CPU).

One file per concern: ``_timing.py`` the timing, ``_compiled.py`` what XLA says of a compiled
program, ``_environment.py`` the device and versions recorded beside a number.
"""

from bpjax.measure._compiled import (
    copies,
    cost,
    flops,
    program_signature,
    same_program,
    temp_bytes,
)
from bpjax.measure._environment import cpu_info, environment
from bpjax.measure._timing import (
    Timing,
    calibrate,
    compare,
    compile_all,
    compile_fn,
    page_faults,
    paired_seconds,
    run_rounds,
    summarize,
    time_steps,
)

__all__ = [
    "Timing",
    "calibrate",
    "compare",
    "compile_all",
    "compile_fn",
    "copies",
    "cost",
    "cpu_info",
    "environment",
    "flops",
    "page_faults",
    "paired_seconds",
    "program_signature",
    "run_rounds",
    "same_program",
    "summarize",
    "temp_bytes",
    "time_steps",
]
