"""Shared fixtures: real WordNet text, the shipped MiniLM, and a CLI runner (torchrun or plain)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from dist_data.wordnet import iter_synsets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wordnet_pairs(n: int, seed: int = 0, synonyms: bool = True) -> list[dict]:
    """(lemma, definition) pairs from ``n`` random WordNet synsets.

    With ``synonyms``, a synset's second lemma gives a second row with the same definition:
    real duplicate documents, as a filter must treat them.
    """
    synsets = list(iter_synsets(pos="nv"))
    rng = random.Random(seed)
    rows = []
    for s in sorted(rng.sample(synsets, n), key=lambda s: (s.pos, s.offset)):
        rows.append({"query": s.lemmas[0], "document": s.definition, "id": s.id})
        if synonyms and len(s.lemmas) > 1 and rng.random() < 0.3:
            rows.append({"query": s.lemmas[1], "document": s.definition, "id": s.id + "-2"})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def run_cli(module: str, *flags: str, nproc: int = 2, timeout: int = 600, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node=nproc -m module flags`` (``nproc=0``: plain python)."""
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", module, *flags]
    else:
        cmd = [sys.executable, "-m", module, *flags]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def model():
    from sentence_transformers import SentenceTransformer

    from dist_data.embed import resolve_model

    return SentenceTransformer(resolve_model(None), device="cpu")
