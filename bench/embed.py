"""Benchmark ``dist_data.embed_mteb`` against the floor (bare ``SentenceTransformer.encode`` of the
same texts) on a local MTEB-shaped classification dataset of WordNet definitions.

    python bench/embed.py                        # 10,000 rows
    python bench/embed.py --n_rows=50000 --repeats=3

Each command is its own process under ``/usr/bin/time -v``; rows/s = rows / wall. Prints a table
and writes bench/results/embed.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from common import run_all, table, write_report

FLOOR = r"""
import json, sys
from sentence_transformers import SentenceTransformer
from dist_data.core.embed import resolve_model
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
model = SentenceTransformer(resolve_model(None), device="cpu")
model.encode(texts, batch_size=int(sys.argv[2]), normalize_embeddings=True)
"""


def make_dataset(n_rows: int, root: str) -> str:
    """``root/wn_pos/test.jsonl``: WordNet definitions labelled by part of speech."""
    import random

    from dist_data.text.wordnet import iter_synsets

    synsets = random.Random(0).sample(list(iter_synsets()), n_rows)
    os.makedirs(os.path.join(root, "wn_pos"), exist_ok=True)
    path = os.path.join(root, "wn_pos", "test.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for s in synsets:
            f.write(json.dumps({"text": s.definition, "label": s.pos}) + "\n")
    return path


def main(n_rows: int = 10000, batch_size: int = 64, repeats: int = 1) -> None:
    work = tempfile.mkdtemp(prefix="bench-embed-")
    data = os.path.join(work, "data")
    path = make_dataset(n_rows, data)
    out = os.path.join(work, "out")
    py = sys.executable
    ours = ["-m", "dist_data.embed_mteb", "--task_type=classification", "--dataset_name=wn_pos",
            f"--data_path={data}", f"--save_root_path={out}", f"--batch_size={batch_size}", "--progress=False"]
    commands = {
        "floor: SentenceTransformer.encode (1 process)": [py, "-c", FLOOR, path, str(batch_size)],
        "dist_data.embed_mteb, 1 process": [py, *ours],
        "dist_data.embed_mteb, torchrun 2 ranks": [py, "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc-per-node=2", *ours],
    }

    def prepare(name, cmd):
        shutil.rmtree(out, ignore_errors=True)
        return cmd

    results = run_all(commands, repeats, prepare)
    rows = table(results, next(iter(commands)),
                 f"embed_mteb: {n_rows:,} WordNet definitions, all-MiniLM-L6-v2, batch {batch_size}")
    for r in rows:
        r["rows_per_s"] = round(n_rows / r["wall_s"], 1)
        print(f"  {r['command']}: {r['rows_per_s']:,} rows/s")
    path = write_report("embed", {"n_rows": n_rows, "batch_size": batch_size, "rows": rows})
    print(f"\nwrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
