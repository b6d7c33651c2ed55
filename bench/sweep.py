"""Benchmark a selection sweep: the same pairs mined with 4 settings of margins and ranges, as a
user tunes them by looking at ``scores.png``. Compares, side by side in one run:

- ``dist_data.mine`` with a shared ``--cache_dir`` (embeddings and search results keyed by content:
  only the first setting embeds and searches);
- ``dist_data.mine`` without it (every run embeds and searches);
- sentence-transformers' ``mine_hard_negatives`` with a shared ``cache_folder`` (its embedding cache);
- the floor: one bare ``SentenceTransformer.encode`` of the unique texts.

    python bench/sweep.py                       # 5,000 WordNet pairs (the shipped sample)
    python bench/sweep.py --n_pairs=20000 --repeats=2

Each sweep is one shell command under ``/usr/bin/time -v``. Prints a table and writes
bench/results/sweep.json (with the speed-up of the shared cache).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile

from common import make_pairs, run_all, table, write_report
from mine import FLOOR

SETTINGS = [dict(absolute_margin=0.0), dict(absolute_margin=0.05), dict(absolute_margin=0.1), dict(range_min=5)]
BASE = dict(num_negatives=8, range_max=50)
REFERENCE = r"""
import json, sys
import datasets
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
from dist_data.core.embed import resolve_model
path, batch_size, cache, settings = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
rows = [json.loads(l) for l in open(path, encoding="utf-8")]
ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows], "document": [r["document"] for r in rows]})
model = SentenceTransformer(resolve_model(None), device="cpu")
mine_hard_negatives(ds, model, anchor_column_name="query", positive_column_name="document", output_format="n-tuple",
                    batch_size=batch_size, use_faiss=True, verbose=False, cache_folder=cache, **settings)
"""


def main(n_pairs: int = 5000, batch_size: int = 64, repeats: int = 1) -> None:
    work = tempfile.mkdtemp(prefix="bench-sweep-")
    data = os.path.join(work, "pairs.jsonl")
    make_pairs(n_pairs, data)
    py = sys.executable

    def ours(i: int, settings: dict, extra: list[str]) -> str:
        flags = {**BASE, **settings}
        return shlex.join([py, "-m", "dist_data.mine", f"--dataset={data}", f"--batch_size={batch_size}",
                           "--output_format=n-tuple", "--progress=False", f"--output_dir={work}/run{i}",
                           *[f"--{k}={v}" for k, v in flags.items()], *extra])

    def reference(settings: dict) -> str:
        return shlex.join([py, "-c", REFERENCE, data, str(batch_size), f"{work}/st-cache",
                           json.dumps({**BASE, **settings})])

    sweeps = {
        "floor: SentenceTransformer.encode of the unique texts, once": [py, "-c", FLOOR, data, str(batch_size)],
        "dist_data.mine x4, shared --cache_dir": ["bash", "-c", " && ".join(
            ours(i, s, [f"--cache_dir={work}/shared"]) for i, s in enumerate(SETTINGS))],
        "dist_data.mine x4, no shared cache": ["bash", "-c", " && ".join(
            ours(i, s, []) for i, s in enumerate(SETTINGS))],
        "mine_hard_negatives x4, shared cache_folder": ["bash", "-c", " && ".join(reference(s) for s in SETTINGS)],
    }

    def prepare(name, cmd):  # every sweep starts cold: no run folders, no caches
        for i in range(len(SETTINGS)):
            shutil.rmtree(f"{work}/run{i}", ignore_errors=True)
        shutil.rmtree(f"{work}/shared", ignore_errors=True)
        shutil.rmtree(f"{work}/st-cache", ignore_errors=True)
        return cmd

    results = run_all(sweeps, repeats, prepare)
    rows = table(results, next(iter(sweeps)),
                 f"a sweep of {len(SETTINGS)} selection settings: {n_pairs:,} WordNet pairs, all-MiniLM-L6-v2, "
                 f"batch {batch_size}, 8 negatives from ranks < 50")
    wall = {r["command"]: r["wall_s"] for r in rows}
    speedup = round(wall["dist_data.mine x4, no shared cache"] / wall["dist_data.mine x4, shared --cache_dir"], 2)
    print(f"\nshared cache: {speedup}x faster than the same sweep without it")
    path = write_report("sweep", {"n_pairs": n_pairs, "batch_size": batch_size, "settings": SETTINGS, "base": BASE,
                                  "rows": rows, "shared_cache_speedup": speedup})
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
