#!/usr/bin/env bash
# One node, one rank per GPU (or NPROC CPU ranks):
#   bash launch/single_node.sh dist_data.filter --dataset=data/ --output_dir=out/filter --k=2
# MAX_RESTARTS=N: a lost rank restarts the ranks (up to N times); the run resumes from its cache.
set -euo pipefail
NPROC=${NPROC:-$(python -c 'import torch; print(torch.cuda.device_count() or 1)')}
# flags and paths checked here, before any rank starts: a typo is one line, not a failed job
"${PYTHON:-python}" -m dist_data.registry check "$@"
exec torchrun --standalone --nproc-per-node="$NPROC" --max-restarts="${MAX_RESTARTS:-0}" -m "$@"
