"""Benchmark ``dist_data.filter`` against the floor (bare ``SentenceTransformer.encode``) and its
index + search against a plain faiss ``IndexFlatIP``.

    python bench/filter.py                      # 5,000 WordNet pairs (the shipped sample)
    python bench/filter.py --n_pairs=20000      # more pairs, drawn from /usr/share/wordnet

Each command runs as its own process under ``/usr/bin/time -v`` (wall time, peak RSS of the largest
process). Prints a table and writes bench/results/filter.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from common import make_pairs, run_all, table, timed, write_report

FLOOR = r"""
import json, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
from dist_data.core.embed import resolve_model
path, batch_size = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(path, encoding="utf-8")]
texts = [r["query"] for r in rows] + [r["document"] for r in rows]
model = SentenceTransformer(resolve_model(None), device="cpu")
t = time.perf_counter()
emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
enc = time.perf_counter() - t
np.save(sys.argv[3], emb)
print(json.dumps({"encode_seconds": enc}))
"""
SEARCH = r"""
import json, sys, time
import faiss, numpy as np
from dist_data.core.index import search
import torch
emb = np.load(sys.argv[1]); n = emb.shape[0] // 2
q, d = np.ascontiguousarray(emb[:n]), np.ascontiguousarray(emb[n:])
t = time.perf_counter(); index = faiss.IndexFlatIP(d.shape[1]); index.add(d); index.search(q, 2)
flat = time.perf_counter() - t
t = time.perf_counter(); search(q, d, np.arange(n), 2, "gather", torch.device("cpu"))
ours = time.perf_counter() - t
print(json.dumps({"faiss_flat_ip_seconds": flat, "dist_data_index_search_seconds": ours}))
"""


def main(n_pairs: int = 5000, batch_size: int = 64, repeats: int = 1) -> None:
    work = tempfile.mkdtemp(prefix="bench-filter-")
    data = os.path.join(work, "pairs.jsonl")
    make_pairs(n_pairs, data)
    py = sys.executable
    commands = {
        "floor: SentenceTransformer.encode (1 process)": [py, "-c", FLOOR, data, str(batch_size),
                                                          os.path.join(work, "emb.npy")],
        "dist_data.filter, 1 process": [py, "-m", "dist_data.filter", f"--dataset={data}",
                                        f"--batch_size={batch_size}", "--progress=False"],
        "dist_data.filter, torchrun 2 ranks": [py, "-m", "torch.distributed.run", "--standalone",
                                               "--nproc-per-node=2", "-m", "dist_data.filter",
                                               f"--dataset={data}", f"--batch_size={batch_size}", "--progress=False"],
    }

    def prepare(name, cmd):
        if "dist_data.filter" not in name:
            return cmd
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        return cmd + [f"--output_dir={out}"]

    results = run_all(commands, repeats, prepare)
    search = json.loads(timed([py, "-c", SEARCH, os.path.join(work, "emb.npy")])["stdout"])
    rows = table(results, next(iter(commands)),
                 f"{n_pairs:,} WordNet pairs ({2 * n_pairs:,} texts), all-MiniLM-L6-v2, batch {batch_size}")
    print(f"\nindex + search of {n_pairs:,} queries over {n_pairs:,} documents, k=2: faiss IndexFlatIP "
          f"{search['faiss_flat_ip_seconds']:.3f} s, dist_data (exact rescoring, canonical ties) "
          f"{search['dist_data_index_search_seconds']:.3f} s")
    write_report("filter", {"n_pairs": n_pairs, "batch_size": batch_size, "rows": rows, "search": search})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
