#!/bin/bash
# The measured builtin results of docs/results.md: every experiment on the demo's world (mmt-ard demo --output runs/demo-new),
# 3 paired seeds. The two sweeps were first run with 1 seed, then again with 3 (their seed-0 runs reused).
# After the first pass the LoRA student's recipe changed (inner eps 4/255, docs/vit-student-investigation.md)
# and table1, gradcam and bound were run again with the same commands (their other runs were reused).
cd "$(dirname "$0")/.."  # the repository root
run() {
  s=$(date +%s)
  .venv/bin/mmt-ard experiment $1 --preset builtin --seeds $2 --world runs/demo-new --output runs/experiments --no-report >> runs/experiments.log 2>&1
  echo "$1 seeds=$2 rc=$? $(( $(date +%s) - s ))s $(date +%T)" >> runs/experiments-times.txt
}
for n in table1 table2 table3 components released-code gradcam bound efficiency; do run $n 3; done
run table4 3
run dynamic-weights 3
.venv/bin/mmt-ard report runs/experiments/{table1,table2,table3,table4,components,released-code,gradcam,bound,dynamic-weights,efficiency} \
    --output runs/experiments/report
