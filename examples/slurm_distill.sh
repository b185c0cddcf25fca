#!/bin/bash
# MMT-ARD at the paper's scale on several nodes with SLURM: one torchrun per node, torchrun's own
# c10d rendezvous on the first node (no other launcher). Submit with:  sbatch examples/slurm_distill.sh
#
# optim.batch_size is the GLOBAL batch (512 in the paper): it must be a multiple of the number of
# processes (nodes x GPUs per node); each GPU gets batch_size / processes images per step.
#SBATCH --job-name=mmt-ard
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun per node; it starts one process per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64           # DataLoader workers: loop.data.workers per GPU (preset: 8)
#SBATCH --time=12:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

export IMAGENET_ROOT=${IMAGENET_ROOT:-/data/imagenet}
export CLEAN_TEACHER=${CLEAN_TEACHER:-/ckpt/vitl14-clean.pt}
export ADV_TEACHER=${ADV_TEACHER:-/ckpt/vitl14-pmg-fast2.pt}
OUTPUT=${OUTPUT:-runs/paper-vit-b32}
PRESET=${PRESET:-paper-vit-b32}

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8

# A run folder that holds a checkpoint is continued (e.g. after a requeue, with any number of nodes).
RESUME=()
if [ -f "$OUTPUT/checkpoints/last.pt" ]; then RESUME=(--resume); fi

srun torchrun \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "${SLURM_GPUS_PER_NODE:-8}" \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$head_node:29500" \
    -m mmt_ard.cli.main distill --config "$PRESET" --output "$OUTPUT" "${RESUME[@]}" "$@"
