"""MLP training step vs PyTorch, NumPy, Flax NNX and the GEMM roofline: ``bpjax bench``.

Same command line as ``bpjax bench`` (``--quick``/``--full``, ``--threads N[,N...]``,
``--compile``, ``--devices N``, ``--rounds R``, ``--budget S``, ``--out DIR``); writes
``peers.json`` and ``peers.png``. See :mod:`bpjax.bench`.
"""

from __future__ import annotations

import sys

from bpjax import bench

if __name__ == "__main__":
    sys.exit(bench.main())
