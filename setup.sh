#!/usr/bin/env bash
# One-step setup on a fresh machine, run inside an activated virtual environment:
#     python3 -m venv .venv && . .venv/bin/activate && bash setup.sh
# GPU users: install their CUDA torch and faiss-gpu first (INSTALL_FAISS.md), then `pip install -e .[dev]`.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v python >/dev/null; then
  echo "setup.sh: no 'python' on PATH; first: python3 -m venv .venv && . .venv/bin/activate" >&2
  exit 2
fi
if [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  echo "setup.sh: note: no virtual environment is active; Debian's system python refuses pip installs (PEP 668):" >&2
  echo "          python3 -m venv .venv && . .venv/bin/activate, then rerun" >&2
fi
# Real English text for the tests and benchmarks (Debian's WordNet database, /usr/share/wordnet);
# index.sense (wordnet-sense-index) lets nltk read the same files as an independent reference.
if [ ! -d /usr/share/wordnet ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index
  else
    echo "setup.sh: WordNet is missing and apt-get cannot run as root here: ask for \`apt-get install" >&2
    echo "          --no-install-recommends wordnet-base wordnet-sense-index\`, or unpack WordNet 3.0's dict/ folder" >&2
    echo "          and set WORDNET_DIR to it (only the tests and benchmarks need it)" >&2
  fi
fi
# OpenCV and libjpeg-turbo: FFCV builds against them and loads them at run time (embed_images' FFCV input).
if ! pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends libopencv-dev libturbojpeg0-dev pkg-config
  else
    echo "setup.sh: FFCV needs \`apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config\` (as root); without" >&2
    echo "          them FFCV is not installed and its tests are skipped (ImageFolder and webdataset work)" >&2
  fi
fi
# torch first, pinned (constraints.txt) while the rest installs, so nothing below picks another build.
# Where pip is configured with a local CPU wheel of 2.13.0 (as on our CI) this is the CPU build;
# elsewhere PyPI's torch==2.13.0 is its CUDA build (several GB), which also runs on CPU.
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt -e '.[cpu,dev,images,samples,captions,docs,cloud]'
# FFCV builds from source (about 3 minutes) where OpenCV and libjpeg-turbo are there
if pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then
  python -m pip install -q -c constraints.txt -e '.[ffcv]'
fi
