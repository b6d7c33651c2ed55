#!/usr/bin/env bash
# Refresh constraints.txt, the versions setup.sh installs: the newest releases that setup.py's ranges
# allow go into a scratch virtual environment (torch kept at 2.13.0), the whole test suite runs there,
# and only when it passes are that environment's versions written to constraints.txt.
#     bash scripts/refresh_pins.sh      # after setup.sh's apt packages are in place; ~35 min on 2 cores
# Then commit constraints.txt and put the versions that matter in README's "Setup" section.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
. "$scratch/venv/bin/activate"
echo "torch==2.13.0" > "$scratch/torch.txt"
python -m pip install -q torch==2.13.0
python -m pip install -q -c "$scratch/torch.txt" -e '.[cpu,dev,images,samples,captions,docs,cloud]'
if pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then
  python -m pip install -q -c "$scratch/torch.txt" -e '.[ffcv]'
fi
python -m pytest -q tests
{
  echo "# The versions setup.sh installs: the test suite passed with exactly these on $(date -u +%F)"
  echo "# (made by scripts/refresh_pins.sh; setup.py keeps ranges for environments users bring)."
  # a local build label (2.13.0+cpu) is the machine's choice of build, not a version to pin
  python -m pip freeze --exclude-editable | sed -E 's/^(torch|torchvision)==([^+]*)\+.*/\1==\2/' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt refreshed: $(grep -c '==' constraints.txt) pins (git diff constraints.txt shows what moved)"
