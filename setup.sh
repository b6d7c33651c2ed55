#!/usr/bin/env bash
# One-step setup on a fresh machine (CPU). GPU users: install their CUDA torch and faiss-gpu first
# (see INSTALL_FAISS.md), then `pip install -e .[dev]`.
set -euo pipefail
cd "$(dirname "$0")"
# Real English text for the tests and benchmarks (Debian's WordNet database).
if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wordnet-base
fi
# The CPU build of torch first, so that nothing below pulls a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt -e '.[dev]'
