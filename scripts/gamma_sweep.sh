#!/usr/bin/env bash
# Sweep the cross-modal consistency weight gamma for a MMT-ARD ViT student on the built-in world,
# reusing the teachers and pretrained student of a finished `mmt-ard demo` (DEMO, default runs/demo).
# Selection uses the held-out validation split, never the test or zero-shot sets.
#   bash scripts/gamma_sweep.sh [DEMO] [OUT]
set -euo pipefail
DEMO=${1:-runs/demo}
OUT=${2:-runs/gamma-sweep}
MMT=${MMT:-.venv/bin/mmt-ard}
models=()
for g in 0 0.25 0.5 1 2; do
  "$MMT" distill --output "$OUT/gamma-$g" --overwrite \
    --student "mmt-vit-s@$DEMO/pretrain-vit-s/model" \
    --teacher-clean "mmt-vit-t@$DEMO/teacher-clean/model" --teacher-adv "mmt-vit-t@$DEMO/teacher-adv/model" \
    data=builtin:shapes:split=train,n=12000 optim.steps=200 optim.batch_size=64 optim.lr=5e-4 \
    attack.steps=3 attack.step_size=1/255 loss.gamma=$g loop.eval_every=0 > /dev/null
  models+=(--model "gamma-$g=$OUT/gamma-$g/student")
done
"$MMT" evaluate "${models[@]}" --output "$OUT" eval.dataset=builtin:shapes:split=val eval.zero_shot=[] eval.limit=1000
