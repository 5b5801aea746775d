#!/usr/bin/env bash
# The mode-cost, remat and bench experiments on whatever device JAX finds, in one go.
#
#   bash experiments/accelerator_run.sh [OUT]      (or: make accelerator)
#
# Results go to OUT (default results/<backend>, e.g. results/gpu), beside the CPU ones in
# results/, each JSON recording the device and versions. On a GPU/TPU the profile is sized
# for about five minutes on one device; on CPU a smaller one (about two minutes on 2 cores),
# so the script can be tested anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BACKEND=$("$PY" -c "import jax; print(jax.default_backend())")
OUT=${1:-results/$BACKEND}
mkdir -p "$OUT"
if [ "$BACKEND" = cpu ]; then
  REMAT=(--depths 16 64 256 --time-depth 256)
  BENCH=(--quick --rounds 5)
else
  REMAT=(--depths 16 64 256 1024 4096 --time-depth 4096)
  BENCH=(--full --rounds 11 --threads "$(nproc)")
fi
"$PY" -c "import jax; print('device:', jax.devices()[0].device_kind, '| jax', jax.__version__)"
start=$SECONDS
echo "== mode_cost (quick profile) -> $OUT"
"$PY" experiments/mode_cost.py --out "$OUT"
echo "== remat_memory ${REMAT[*]} -> $OUT"
"$PY" experiments/remat_memory.py --out "$OUT" "${REMAT[@]}"
echo "== bpjax bench ${BENCH[*]} -> $OUT"
# Every contender at full float32: on a GPU JAX's default is TF32 and PyTorch's is not, and
# the bench's gradient check refused PyTorch there (H200, 2026-12-04: 4.0e-4 > 1e-4).
JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest} \
  "$PY" -m bpjax bench --out "$OUT" "${BENCH[@]}"
"$PY" -m bpjax.report "$OUT"
echo "accelerator_run: $BACKEND profile finished in $((SECONDS - start)) s"
