"""Known-bad JAX releases: bpjax warns once, at import, when it runs on one of them.

Each entry is a jaxlib release that computes wrong numbers without raising, the issue that
reports it and the release to move to. ``tests/test_canary.py`` runs the reproducers
themselves, so a pin that brings one of these back fails the default suite.
"""

from __future__ import annotations

import warnings

# jaxlib version -> (issue, what goes wrong, release to move to)
MISCOMPILES = {
    "0.10.2": (
        "jax-ml/jax#39103",
        "XLA:CPU returns a wrong sum under jit for a vmapped matrix-vector product followed "
        "by a reduction (the shape of every Jacobian bpjax computes)",
        "jaxlib 0.10.1 on Python 3.11, or 0.12.0.1 or newer on Python >= 3.12",
    ),
}


class MiscompileWarning(UserWarning):
    """The installed jaxlib is known to compute wrong results silently."""


def check_jaxlib(version: str | None = None) -> str | None:
    """The warning text for jaxlib ``version`` (default: the installed one), or ``None``."""
    if version is None:
        try:
            import jaxlib
        except ImportError:
            return None
        version = jaxlib.__version__
    if version not in MISCOMPILES:
        return None
    issue, what, fix = MISCOMPILES[version]
    return (
        f"bpjax: jaxlib {version} is known to miscompile ({issue}): {what}. Install {fix} "
        "(`make` does, from constraints.txt)."
    )


def warn_if_miscompiling() -> None:
    message = check_jaxlib()
    if message is not None:
        warnings.warn(message, MiscompileWarning, stacklevel=3)
