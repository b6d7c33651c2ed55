"""Benchmark ``dist_data.filter`` against the floor (bare ``SentenceTransformer.encode``) and its
index + search against a plain faiss ``IndexFlatIP``.

    python bench/filter.py                      # 5,000 WordNet pairs (the shipped sample)
    python bench/filter.py --n_pairs=20000      # more pairs, drawn from /usr/share/wordnet

Each command runs as its own process under ``/usr/bin/time -v`` (wall time, peak RSS of the largest
process). Prints a table and writes bench/results/filter.json.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOR = r"""
import json, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
from dist_data.embed import resolve_model
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
from dist_data.index import search
import torch
emb = np.load(sys.argv[1]); n = emb.shape[0] // 2
q, d = np.ascontiguousarray(emb[:n]), np.ascontiguousarray(emb[n:])
t = time.perf_counter(); index = faiss.IndexFlatIP(d.shape[1]); index.add(d); index.search(q, 2)
flat = time.perf_counter() - t
t = time.perf_counter(); search(q, d, np.arange(n), 2, "gather", torch.device("cpu"))
ours = time.perf_counter() - t
print(json.dumps({"faiss_flat_ip_seconds": flat, "dist_data_index_search_seconds": ours}))
"""


def make_pairs(n_pairs: int, path: str) -> None:
    from dist_data.wordnet import SAMPLE_PAIRS, iter_synsets

    if n_pairs == 5000:
        with gzip.open(SAMPLE_PAIRS, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
            out.write(f.read())
        return
    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    with open(path, "w", encoding="utf-8") as out:
        for s in random.Random(1).sample(synsets, n_pairs):
            out.write(json.dumps({"query": s.lemmas[0], "document": s.definition}) + "\n")


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run under /usr/bin/time -v; wall seconds, peak RSS (MiB) of the largest process, stdout."""
    full = ["/usr/bin/time", "-v", *cmd] if os.path.exists("/usr/bin/time") else cmd
    start = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "stdout": proc.stdout}


def main(n_pairs: int = 5000, batch_size: int = 64, repeats: int = 1) -> None:
    work = tempfile.mkdtemp(prefix="bench-filter-")
    data = os.path.join(work, "pairs.jsonl")
    make_pairs(n_pairs, data)
    py = sys.executable
    results: dict[str, list[dict]] = {}
    commands = {
        "floor: SentenceTransformer.encode (1 process)": [py, "-c", FLOOR, data, str(batch_size),
                                                          os.path.join(work, "emb.npy")],
        "dist_data.filter, 1 process": [py, "-m", "dist_data.filter", f"--dataset={data}",
                                        f"--batch_size={batch_size}", "--progress=False"],
        "dist_data.filter, torchrun 2 ranks": [py, "-m", "torch.distributed.run", "--standalone",
                                               "--nproc-per-node=2", "-m", "dist_data.filter",
                                               f"--dataset={data}", f"--batch_size={batch_size}", "--progress=False"],
    }
    for _ in range(repeats):
        for name, cmd in commands.items():
            if "dist_data.filter" in name:
                out = os.path.join(work, "out")
                shutil.rmtree(out, ignore_errors=True)
                cmd = cmd + [f"--output_dir={out}"]
            results.setdefault(name, []).append(timed(cmd))
    search = json.loads(timed([py, "-c", SEARCH, os.path.join(work, "emb.npy")])["stdout"])
    floor = min(r["wall_s"] for r in results[next(iter(commands))])
    rows = []
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["wall_s"])
        rows.append({"command": name, "wall_s": best["wall_s"], "peak_rss_mib": best["peak_rss_mib"],
                     "vs_floor": round(best["wall_s"] / floor, 2)})
    print(f"\n{n_pairs:,} WordNet pairs ({2 * n_pairs:,} texts), all-MiniLM-L6-v2, batch {batch_size}, "
          f"{os.cpu_count()} CPU cores, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"| {'command':<46} | {'wall s':>7} | {'peak RSS MiB':>12} | {'x floor':>7} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 14}|{'-' * 9}|")
    for r in rows:
        print(f"| {r['command']:<46} | {r['wall_s']:>7.2f} | {r['peak_rss_mib']!s:>12} | {r['vs_floor']:>7.2f} |")
    print(f"\nindex + search of {n_pairs:,} queries over {n_pairs:,} documents, k=2: faiss IndexFlatIP "
          f"{search['faiss_flat_ip_seconds']:.3f} s, dist_data (exact rescoring, canonical ties) "
          f"{search['dist_data_index_search_seconds']:.3f} s")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    report = {"n_pairs": n_pairs, "batch_size": batch_size, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "machine": platform.platform(), "rows": rows, "search": search}
    with open(os.path.join(HERE, "results", "filter.json"), "w") as f:
        json.dump(report, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
