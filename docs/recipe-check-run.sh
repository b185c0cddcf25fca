#!/bin/bash
# usage: run.sh NAME KIND [overrides]
cd /work/main
NAME=$1; KIND=$2; shift 2
W=runs/demo-new
case $KIND in
  vit) S="student.arch=mmt-vit-s student.pretrained=$W/pretrain-vit-s/model";;
  lora) S="student.arch=mmt-vit-s student.pretrained=$W/pretrain-vit-s/model lora.enabled=true";;
  rn) S="student.arch=mmt-rn-s student.pretrained=$W/pretrain-rn-s/model";;
esac
start=$(date +%s)
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/mmt-ard distill --output runs/recipe/$NAME --overwrite $S teacher_clean.arch=mmt-vit-t teacher_clean.pretrained=$W/teacher-clean/model teacher_adv.arch=mmt-vit-t teacher_adv.pretrained=$W/teacher-adv/model data=builtin:shapes:split=train,n=12000 attack.eps=2/255 attack.steps=3 attack.step_size=1/255 optim.steps=200 optim.batch_size=64 optim.lr=2e-3 loop.eval_every=0 loop.checkpoint_every=0 eval.dataset=builtin:shapes:split=val eval.limit=500 eval.steps=10 'eval.eps=[1/255,2/255,4/255]' eval.zero_shot=[] "$@" > runs/recipe/$NAME.log 2>&1
echo "$NAME rc=$? wall=$(( $(date +%s)-start ))s $KIND $*" >> runs/recipe/runs.txt
python3 -c "import json;d=json.load(open('runs/recipe/$NAME/summary.json'));print('$NAME', d['val'])" >> runs/recipe/runs.txt 2>&1
