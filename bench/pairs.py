"""Benchmark the all-pairs-above-threshold job (``dist_data.pairs``) against the full-matrix way.

    python bench/pairs.py                              # 20,000, 40,000 and 80,000 WordNet names
    python bench/pairs.py --sizes=20000 --repeats=2

Names: distinct WordNet lemmas (``_`` as space), a seeded sample. Whole commands, wall time with
start-up and peak RSS, on the same names, with all-MiniLM-L6-v2:

- floor: load the model and encode every name (what any method must compute);
- full matrix: what the brand notebooks do, in one process: encode, ``emb @ emb.T`` (N x N float32),
  every upper-triangle pair >= ``--min_score``, written as CSV;
- dist_data.pairs, one process and torchrun with 2 ranks (``--index=sharded``).

The pairs found are compared (the full matrix's set vs dist_data's). Prints a table per size and
writes bench/results/pairs.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile

from common import HERE, fresh_output, run_all, table, write_report

sys.path.insert(0, os.path.dirname(HERE))


FULL = "full N x N matrix (one process)"


def names(n: int) -> list[str]:
    from dist_data.product.names import normalize_name
    from dist_data.core.wordnet import iter_synsets

    seen, out = set(), []
    for s in iter_synsets(pos="nvar"):
        for lemma in s.lemmas:
            name = lemma.replace("_", " ")
            if normalize_name(name) and normalize_name(name) not in seen:
                seen.add(normalize_name(name))
                out.append(name)
    if n > len(out):
        raise SystemExit(f"WordNet has {len(out)} distinct lemmas, fewer than {n}")
    return random.Random(0).sample(out, n)


def load_model():
    import torch

    from dist_data.core.embed import load_model as load

    return load(None, torch.device("cpu"))


def floor(path: str) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        texts = [r["brandname"] for r in csv.DictReader(f)]
    load_model().encode(texts, batch_size=64)


def full_matrix(path: str, out: str, min_score: float) -> None:
    """The notebook way: sentence-transformers' ``cos_sim`` of all names with all names (one N x N
    matrix), thresholded, the upper triangle's pairs written."""
    import torch

    model = load_model()  # first: dist_data's import shim must precede sentence-transformers' util
    from sentence_transformers.util import cos_sim

    with open(path, encoding="utf-8", newline="") as f:
        texts = [r["brandname"] for r in csv.DictReader(f)]
    emb = model.encode(texts, batch_size=64, convert_to_tensor=True)
    sims = cos_sim(emb, emb)
    i, j = torch.nonzero(torch.triu(sims >= min_score, diagonal=1), as_tuple=True)
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name_a", "name_b", "score", "row_a", "row_b"])
        for a, b in zip(i.tolist(), j.tolist()):
            w.writerow([texts[a], texts[b], float(sims[a, b]), a, b])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,40000,80000", help="comma list of name counts")
    parser.add_argument("--min_score", type=float, default=0.85)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--_floor", help=argparse.SUPPRESS)
    parser.add_argument("--_full", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._floor:
        return floor(args._floor)
    if args._full:
        return full_matrix(*args._full, args.min_score)

    report = {"model": "sentence-transformers/all-MiniLM-L6-v2", "min_score": args.min_score, "sizes": []}
    for n in [int(s) for s in args.sizes.split(",")]:
        work = tempfile.mkdtemp(prefix="bench-pairs-")
        try:
            data = os.path.join(work, "brands.csv")
            with open(data, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["brandname"])
                w.writerows([name] for name in names(n))
            full_out = os.path.join(work, "full.csv")
            pairs = ["-m", "dist_data.pairs", f"--dataset={data}", "--text_key=brandname",
                     f"--min_score={args.min_score}", "--max_neighbors=50", "--noprogress"]
            commands = {
                "floor: encode every name": [sys.executable, __file__, f"--_floor={data}"],
                FULL: [sys.executable, __file__, f"--min_score={args.min_score}",
                                                    "--_full", data, full_out],
                "dist_data.pairs, 1 process": [sys.executable, *pairs],
                "dist_data.pairs, torchrun 2 ranks sharded": [sys.executable, "-m", "torch.distributed.run",
                                                              "--standalone", "--nproc-per-node=2", *pairs,
                                                              "--index=sharded"],
            }
            results = run_all(commands, args.repeats, fresh_output(work), may_fail=[FULL])
            rows = table(results, "floor: encode every name", f"all pairs >= {args.min_score} among {n:,} names")
            full = set()
            if os.path.exists(full_out) and not any(r.get("failed") for r in results[FULL]):
                with open(full_out, encoding="utf-8", newline="") as f:
                    full = {(int(r["row_a"]), int(r["row_b"])) for r in csv.DictReader(f)}
            with open(os.path.join(work, "out", "pairs.csv"), encoding="utf-8", newline="") as f:
                ours = {tuple(sorted((int(r["row_a"]), int(r["row_b"])))) for r in csv.DictReader(f)}
            print(f"pairs: full matrix {len(full):,}{' (failed)' if not full else ''}, dist_data {len(ours):,}, "
                  f"in both {len(full & ours):,}; "
                  f"the matrix alone holds {n * n * 4 / 2**20:,.0f} MiB of float32")
            report["sizes"].append({"names": n, "pairs_full_matrix": len(full), "pairs_dist_data": len(ours),
                                    "pairs_in_both": len(full & ours), "matrix_mib": round(n * n * 4 / 2**20),
                                    "commands": rows})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    path = write_report("pairs", report)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
