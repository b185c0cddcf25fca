#!/bin/bash
# usage: [OUT=runs/recipe] run.sh NAME STUDENT(vit|rn|lora) [overrides...]   (later overrides win)
cd "$(dirname "$0")/.."  # the repository root
OUT=${OUT:-runs/vit-investigation}; mkdir -p "$OUT"
NAME=$1; KIND=$2; shift 2
case $KIND in
  vit) S="student.arch=mmt-vit-s student.pretrained=runs/demo-new/pretrain-vit-s/model";;
  lora) S="student.arch=mmt-vit-s student.pretrained=runs/demo-new/pretrain-vit-s/model lora.enabled=true optim.lr=3e-3";;
  rn) S="student.arch=mmt-rn-s student.pretrained=runs/demo-new/pretrain-rn-s/model";;
esac
start=$(date +%s)
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 .venv/bin/mmt-ard distill --output $OUT/$NAME --overwrite $S teacher_clean.arch=mmt-vit-t teacher_clean.pretrained=runs/demo-new/teacher-clean/model teacher_adv.arch=mmt-vit-t teacher_adv.pretrained=runs/demo-new/teacher-adv/model data=builtin:shapes:split=train,n=12000 attack.eps=2/255 attack.steps=3 attack.step_size=1/255 optim.steps=200 optim.batch_size=64 optim.lr=5e-4 loop.eval_every=0 loop.checkpoint_every=0 eval.dataset=builtin:shapes:split=val eval.limit=500 eval.pgd.steps=10 'eval.eps=[1/255,2/255,4/255]' eval.zero_shot=[] "$@" > $OUT/$NAME.log 2>&1
rc=$?
end=$(date +%s)
echo "$NAME rc=$rc wall=$((end-start))s args: $KIND $*" >> $OUT/runs.txt
python3 -c "import json;d=json.load(open('$OUT/$NAME/summary.json'));print('$NAME', d['val'])" >> $OUT/runs.txt 2>&1
tail -2 $OUT/runs.txt
