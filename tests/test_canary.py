"""Miscompile canary: known XLA bugs, reproduced under jit and compared with eager.

A future pin that brings one back fails here, loudly, with the issue number. The
reproducers run in a fresh process with the user's compiler options (the suite itself
compiles at LLVM -O0, see conftest.py, which could hide an optimizer bug).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jaxlib
import pytest

from bpjax import _platform

SCRIPT = Path(__file__).parent / "scripts" / "miscompile_canary.py"


@pytest.fixture(scope="module")
def canary():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_known_miscompiles_compute_right(canary):
    assert len(canary) == 2
    wrong = [c for c in canary if c["max_abs_diff"] != 0.0]
    assert not wrong, (
        f"jaxlib {jaxlib.__version__} miscompiles: "
        + "; ".join(
            f"{c['case']}: jit gave {c['jit_last']}, eager {c['eager_last']}" for c in wrong
        )
        + ". Move the pin in constraints.txt to a release that passes (see bpjax/_platform.py)."
    )


def test_import_warns_on_a_known_bad_jaxlib():
    message = _platform.check_jaxlib("0.10.2")
    assert "jax-ml/jax#39103" in message and "0.10.1" in message
    assert _platform.check_jaxlib("0.10.1") is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        orig = _platform.check_jaxlib
        try:
            _platform.check_jaxlib = lambda: message
            _platform.warn_if_miscompiling()
        finally:
            _platform.check_jaxlib = orig
    assert [w.category for w in caught] == [_platform.MiscompileWarning]


def test_installed_jaxlib_is_not_known_bad():
    assert _platform.check_jaxlib() is None, _platform.check_jaxlib()
