#!/usr/bin/env bash
# Sweep one distillation setting for a MMT-ARD ViT student on the built-in world, reusing the teachers
# and pretrained student of a finished `mmt-ard demo` (DEMO, default runs/demo), and compare the runs on
# the held-out validation split (never the test or zero-shot sets).
#   bash scripts/sweep.sh KEY VALUE [VALUE ...]        e.g.  bash scripts/sweep.sh loss.gamma 0 0.25 0.5 1 2
#   EXTRA="loss.gamma=0.25" bash scripts/sweep.sh loss.strategy.confidence.slope 1 5 20   (EXTRA: more overrides)
set -euo pipefail
KEY=$1; shift
DEMO=${DEMO:-runs/demo}
OUT=${OUT:-runs/sweep-$KEY}
if [ -z "${MMT:-}" ]; then  # the mmt-ard on PATH, else the one `make` installs
  if command -v mmt-ard > /dev/null; then MMT=mmt-ard; else MMT="$(dirname "$0")/../.venv/bin/mmt-ard"; fi
fi
models=()
for v in "$@"; do
  "$MMT" distill --output "$OUT/$v" --overwrite \
    --student "mmt-vit-s@$DEMO/pretrain-vit-s/model" \
    --teacher-clean "mmt-vit-t@$DEMO/teacher-clean/model" --teacher-adv "mmt-vit-t@$DEMO/teacher-adv/model" \
    optim.steps=200 optim.batch_size=64 optim.lr=2e-3 attack.steps=3 attack.step_size=1/255 \
    loop.eval_every=0 ${EXTRA:-} "$KEY=$v" > /dev/null
  models+=(--model "${KEY##*.}-$v=$OUT/$v/student")
done
"$MMT" evaluate "${models[@]}" --output "$OUT" eval.dataset=builtin:shapes:split=val eval.zero_shot=[] eval.limit=1000
