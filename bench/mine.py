"""Benchmark ``dist_data.mine`` against sentence-transformers' ``mine_hard_negatives`` (faiss and
torch search) and the floor (bare ``SentenceTransformer.encode`` of the same unique texts).

All miners run the common recipe: skip the 2 nearest, sample 16 negatives at random from ranks
3-100, n-tuple output written to disk.

    python bench/mine.py                        # 5,000 WordNet pairs (the shipped sample)
    python bench/mine.py --n_pairs=20000 --repeats=3

Each command is its own process under ``/usr/bin/time -v`` (wall time incl. start-up and model load,
peak RSS of the largest process). Prints a table and writes bench/results/mine.json.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from common import make_pairs, run_all, table, write_report

RECIPE = dict(range_min=2, range_max=100, num_negatives=16, sampling_strategy="random")
FLOOR = r"""
import json, sys
from sentence_transformers import SentenceTransformer
from dist_data.core.embed import resolve_model
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
texts = list(dict.fromkeys(r["query"] for r in rows)) + list(dict.fromkeys(r["document"] for r in rows))
model = SentenceTransformer(resolve_model(None), device="cpu")
model.encode(texts, batch_size=int(sys.argv[2]), normalize_embeddings=True)
"""
REFERENCE = r"""
import json, sys
import datasets
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
from dist_data.core.embed import resolve_model
path, batch_size, use_faiss, out, recipe = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], json.loads(sys.argv[5])
rows = [json.loads(l) for l in open(path, encoding="utf-8")]
ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows], "document": [r["document"] for r in rows]})
model = SentenceTransformer(resolve_model(None), device="cpu")
mined = mine_hard_negatives(ds, model, anchor_column_name="query", positive_column_name="document",
                            output_format="n-tuple", batch_size=batch_size, use_faiss=use_faiss, verbose=False,
                            **recipe)
mined.to_json(out)
"""


def main(n_pairs: int = 5000, batch_size: int = 64, repeats: int = 1) -> None:
    import json

    work = tempfile.mkdtemp(prefix="bench-mine-")
    data = os.path.join(work, "pairs.jsonl")
    make_pairs(n_pairs, data)
    py = sys.executable
    ours = ["-m", "dist_data.mine", f"--dataset={data}", f"--batch_size={batch_size}", "--output_format=n-tuple",
            "--progress=False", *[f"--{k}={v}" for k, v in RECIPE.items()]]
    out = os.path.join(work, "out")
    commands = {
        "floor: SentenceTransformer.encode of the unique texts": [py, "-c", FLOOR, data, str(batch_size)],
        "mine_hard_negatives, use_faiss=True": [py, "-c", REFERENCE, data, str(batch_size), "1",
                                                os.path.join(work, "ref.jsonl"), json.dumps(RECIPE)],
        "mine_hard_negatives, use_faiss=False": [py, "-c", REFERENCE, data, str(batch_size), "0",
                                                 os.path.join(work, "ref.jsonl"), json.dumps(RECIPE)],
        "dist_data.mine, 1 process": [py, *ours],
        "dist_data.mine, torchrun 2 ranks": [py, "-m", "torch.distributed.run", "--standalone",
                                             "--nproc-per-node=2", *ours],
    }

    def prepare(name, cmd):
        shutil.rmtree(out, ignore_errors=True)
        return cmd + [f"--output_dir={out}"] if "dist_data" in name else cmd

    results = run_all(commands, repeats, prepare)
    rows = table(results, next(iter(commands)),
                 f"dist_data.mine vs mine_hard_negatives: {n_pairs:,} WordNet pairs, all-MiniLM-L6-v2, "
                 f"batch {batch_size}, 16 random negatives from ranks 3-100")
    path = write_report("mine", {"n_pairs": n_pairs, "batch_size": batch_size, "recipe": RECIPE, "rows": rows})
    print(f"\nwrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
