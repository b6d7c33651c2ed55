#!/usr/bin/env bash
# Many hosts without a scheduler: run the same line on every host (e.g. with pssh or a loop over ssh).
#   HEAD=node0 NNODES=2 bash launch/multi_host.sh dist_data.filter --dataset=/data --output_dir=/shared/out
#   for h in node0 node1; do ssh $h "cd $PWD && HEAD=node0 NNODES=2 bash launch/multi_host.sh dist_data.filter ..." & done; wait
# The output folder must be on a file system every host sees. MAX_RESTARTS=N: a lost rank restarts the ranks.
set -euo pipefail
: "${HEAD:?set HEAD to the host name of the first node}"
: "${NNODES:?set NNODES to the number of hosts}"
NPROC=${NPROC:-$(python -c 'import torch; print(torch.cuda.device_count() or 1)')}
# flags and paths checked here, before any rank starts: a typo is one line, not a failed job
"${PYTHON:-python}" -m dist_data.registry check "$@"
exec torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC" --max-restarts="${MAX_RESTARTS:-0}" \
  --rdzv-id="${RDZV_ID:-dist_data}" --rdzv-backend=c10d --rdzv-endpoint="$HEAD:${PORT:-29500}" \
  -m "$@"
