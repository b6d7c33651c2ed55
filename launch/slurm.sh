#!/usr/bin/env bash
# Many nodes under SLURM, torchrun rendezvous over c10d on the first node:
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh dist_data.filter --dataset=/data/pairs --output_dir=/shared/out
# The output folder must be on a file system every node sees.
# Preemptible nodes: MAX_RESTARTS=3 restarts the ranks after a lost one (each restart re-embeds only the
# blocks not yet cached; the result is the bytes of an uninterrupted run); --requeue lets SLURM start a
# preempted job again, which resumes the same way.
#SBATCH --job-name=dist_data
#SBATCH --requeue
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
# Ranks per node: the GPUs SLURM allocated on this node (sbatch --gpus-per-node=N), or GPUS_PER_NODE.
if [ -z "${GPUS_PER_NODE:-}" ]; then
  if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
    GPUS_PER_NODE=$SLURM_GPUS_ON_NODE
  elif [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then
    GPUS_PER_NODE=${SLURM_GPUS_PER_NODE##*:}   # "a100:8" -> 8
  else
    echo "slurm.sh: SLURM allocated no GPUs; pass --gpus-per-node=N to sbatch, or set GPUS_PER_NODE (CPU ranks too)" >&2
    exit 2
  fi
fi
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}
# flags and paths checked here, before any rank starts: a typo is one line, not a failed job
"${PYTHON:-python}" -m dist_data.registry check "$@"
srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node="$GPUS_PER_NODE" --max-restarts="${MAX_RESTARTS:-0}" \
  --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD:$PORT" \
  -m "$@"
