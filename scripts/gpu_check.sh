#!/usr/bin/env bash
# The GPU check, on one CUDA GPU in at most 8 minutes: every `cuda`-marked test (paper preset in bf16,
# evaluate with AutoAttack, Grad-CAM and the bound, the bench, exports, torchrun), then the ViT-L-14
# bench in float32 and bf16. Writes OUT/gpu_check.json and OUT/gpu_table.md (the README's GPU table).
#   bash scripts/gpu_check.sh            (OUT defaults to runs/gpu-check)
# Without a GPU it says so and exits 0 (the tests would all skip).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
make --quiet install
PY=.venv/bin/python
mkdir -p "$OUT"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU on this machine; nothing to check (the cuda tests skip here)"
  exit 0
fi
$PY -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0))"
status=0
# at most 5 + 2.5 minutes; a step that runs out of time is reported as such in the table
timeout 300 $PY -m pytest -m cuda tests/gpu/test_cuda.py -p no:cacheprovider --junitxml "$OUT/cuda-tests.xml" || status=$?
timeout 150 .venv/bin/mmt-ard bench --preset vit-l14 --device cuda --steps 3 --warmup 1 --precision all \
  --switches none --output "$OUT/bench" || status=$?
$PY -m mmt_ard.bench.gpu_check "$OUT"
exit $status
