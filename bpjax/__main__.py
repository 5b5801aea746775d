"""``bpjax <command>``: the command line (``python -m bpjax`` or the ``bpjax`` script).

Commands:
  bench   time an MLP training step against the peers and the GEMM roofline
          (``bpjax bench --help``).
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from bpjax import bench

        return bench.main(rest)
    print(f"bpjax: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
