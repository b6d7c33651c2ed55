"""Where an exact search's time goes: candidates, exact rescoring, canonical order; host and device paths.

    python bench/search_profile.py                      # 50,000 x 50,000, 384-d, k=10
    python bench/search_profile.py --n=200000 --k=32

Vectors: clustered unit vectors (384-d, as MiniLM's), seeded. One exact search of every query
against every document (``index.search``, layout ``gather``, one process), split into its parts:

- host path (faiss ``IndexFlatIP`` for the candidates, then :func:`select.exact_scores` in float64
  on the host and :func:`select.canonical_topk`);
- device path (the torch product + top-k and the exact rescoring on the device, as on a GPU; here
  on the CPU, where it shows the cost of the work, not a GPU's speed);

with the floor: the bare float32 product of all queries with all documents (numpy BLAS, the flop
count any exact search must do). Both paths must give the same bytes; the script checks it.
Writes bench/results/search_profile.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common import HERE, write_report

sys.path.insert(0, os.path.dirname(HERE))


def vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 1), d))
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    import torch

    from dist_data.core import index
    from dist_data.core.select import canonical_topk, exact_scores

    docs, queries = vectors(args.n, args.d, 0), vectors(args.n, args.d, 1)
    ids = np.arange(args.n, dtype=np.int64)
    k = args.k + index.TIE_SLACK
    rows = []

    t = time.perf_counter()
    for s in range(0, args.n, index.SEARCH_BATCH):
        queries[s:s + index.SEARCH_BATCH] @ docs.T
    rows.append(("floor: the bare float32 product (numpy)", time.perf_counter() - t))

    host = index.FlatIndex(docs, torch.device("cpu"))
    t = time.perf_counter()
    cand = np.concatenate([host.search(queries[s:s + index.SEARCH_BATCH], k)
                           for s in range(0, args.n, index.SEARCH_BATCH)])
    t_cand = time.perf_counter() - t
    t = time.perf_counter()
    scores = exact_scores(queries, docs, cand)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    want = canonical_topk(scores, np.where(cand >= 0, cand, -1), args.k)
    t_order = time.perf_counter() - t
    rows += [("host: faiss IndexFlatIP candidates", t_cand), ("host: exact rescoring (float64 grid)", t_exact),
             ("host: canonical order", t_order)]

    device = index.FlatIndex(docs, torch.device("cpu"), use_torch=True)
    t = time.perf_counter()
    got = [index.topk_against(queries[s:s + device.query_batch()], docs, ids, device, args.k)
           for s in range(0, args.n, device.query_batch())]
    rows.append(("device path (torch on this CPU): product, top-k, rescoring, order", time.perf_counter() - t))
    same = bool(np.array_equal(np.concatenate([g[1] for g in got]), want[1])
                and np.array_equal(np.concatenate([g[0] for g in got]), want[0]))

    floor = rows[0][1]
    print(f"\nexact search {args.n:,} x {args.n:,}, d={args.d}, k={args.k} (+{index.TIE_SLACK} slack), "
          f"{os.cpu_count()} CPU cores; device path gives the host's bytes: {same}")
    print("| part | seconds | x floor |\n|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} | {sec / floor:.2f} |")
    path = write_report("search_profile", {"n": args.n, "d": args.d, "k": args.k, "same_bytes": same,
                                           "parts": [{"part": n, "seconds": round(s, 3)} for n, s in rows]})
    print(f"\nwrote {path}")
    if not same:
        raise SystemExit("the device path's results differ from the host's")


if __name__ == "__main__":
    main()
