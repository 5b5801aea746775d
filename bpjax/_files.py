"""Writing files all or nothing, for the library and the tooling alike.

The core (the per-machine rates of :mod:`bpjax.modes`) and the tooling (result records,
the report) both keep files that another process may read while they are written; each
goes through :func:`write_atomic`, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_mode() -> int:
    # mkstemp creates files readable by the owner only; a kept file should get the
    # permissions any other file written here would (0o666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing: a temporary file, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.fchmod(fd, default_mode())
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
