#!/usr/bin/env bash
# Many nodes under SLURM, torchrun rendezvous over c10d on the first node:
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh dist_data.filter --dataset=/data/pairs --output_dir=/shared/out
# The output folder must be on a file system every node sees.
#SBATCH --job-name=dist_data
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}
srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node="$GPUS_PER_NODE" \
  --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD:$PORT" \
  -m "$@"
