"""Benchmark a collection job against one launch per dataset (what users do today).

    python bench/collection.py                       # 12 datasets of 500 to 20,000 WordNet pairs
    python bench/collection.py --scale=0.2 --verb=mine

Datasets: 12 disjoint seeded draws of WordNet (lemma, definition) pairs, sizes spaced geometrically
from 500 to 20,000 (times ``--scale``). Whole commands, wall time with start-up and peak RSS, with
all-MiniLM-L6-v2 (the shipped model), world 1 and world 2:

- floor: load the model once and encode every text of every dataset (what any method computes);
- one launch per dataset: ``python -m dist_data.VERB --dataset=X`` (or torchrun) 12 times in a row,
  each paying the interpreter, torch and the model again;
- one collection job: ``--collection=collection.yaml`` (one launch, one model load).

Every dataset's result of the collection job is compared, byte for byte, with its separate launch.
Prints a table and writes bench/results/collection.json.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from common import HERE, run_all, table, write_report

sys.path.insert(0, os.path.dirname(HERE))

FLOOR = "floor: encode every text (1 process)"
RESULT = {"filter": "filtered.jsonl", "mine": "mined.jsonl"}


def sizes(scale: float) -> list[int]:
    return [max(20, round(500 * 40 ** (i / 11) * scale)) for i in range(12)]


def write_datasets(work: str, counts: list[int]) -> list[str]:
    from dist_data.core.wordnet import iter_synsets

    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    if sum(counts) > len(synsets):
        raise SystemExit(f"WordNet has {len(synsets)} synsets, fewer than {sum(counts)}")
    drawn = random.Random(4).sample(synsets, sum(counts))
    paths, start = [], 0
    for i, n in enumerate(counts):
        path = os.path.join(work, "data", f"set{i:02d}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for s in drawn[start:start + n]:
                f.write(json.dumps({"query": s.lemmas[0].replace("_", " "), "document": s.definition}) + "\n")
        paths.append(path)
        start += n
    with open(os.path.join(work, "collection.yaml"), "w", encoding="utf-8") as f:
        f.write("datasets:\n" + "".join(f"  - path: {p}\n" for p in paths))
    return paths


def floor(work: str) -> None:
    import torch

    from dist_data.core.embed import load_model

    texts = []
    for name in sorted(os.listdir(os.path.join(work, "data"))):
        with open(os.path.join(work, "data", name), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts += [row["query"], row["document"]]
    load_model(None, torch.device("cpu")).encode(texts, batch_size=64)


def separate(work: str, launcher: list[str], out: str, flags: list[str]) -> None:
    """One launch per dataset, in a row (each into out/{name}/, as the collection job writes them)."""
    for name in sorted(os.listdir(os.path.join(work, "data"))):
        dataset = os.path.join(work, "data", name)
        subprocess.run([*launcher, f"--dataset={dataset}", f"--output_dir={os.path.join(out, name[:-6])}", *flags],
                       check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="dataset sizes times this (1: 500 to 20,000)")
    parser.add_argument("--verb", default="filter", choices=sorted(RESULT))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--_floor", help=argparse.SUPPRESS)
    parser.add_argument("--_separate", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    flags = ["--noprogress"]
    if args._floor:
        return floor(args._floor)
    if args._separate:
        work, nproc, out = args._separate
        return separate(work, launcher(int(nproc), args.verb), out, flags)

    counts = sizes(args.scale)
    work = tempfile.mkdtemp(prefix="bench-collection-")
    try:
        write_datasets(work, counts)
        outs = {}

        def command(kind: str, nproc: int) -> list[str]:
            out = os.path.join(work, f"{kind}-{nproc}")
            outs[(kind, nproc)] = out
            if kind == "separate":
                return [sys.executable, __file__, f"--verb={args.verb}", "--_separate", work, str(nproc), out]
            return [*launcher(nproc, args.verb), f"--collection={os.path.join(work, 'collection.yaml')}",
                    f"--output_dir={out}", *flags]

        commands = {FLOOR: [sys.executable, __file__, f"--_floor={work}"]}
        for nproc in (1, 2):
            where = "1 process" if nproc == 1 else "torchrun 2 ranks"
            commands[f"12 launches of dist_data.{args.verb}, {where}"] = command("separate", nproc)
            commands[f"one collection job, {where}"] = command("collection", nproc)

        def fresh(name: str, cmd: list[str]) -> list[str]:
            for out in outs.values():
                if out in cmd or any(out in c for c in cmd):
                    shutil.rmtree(out, ignore_errors=True)
            return cmd

        results = run_all(commands, args.repeats, fresh)
        rows = table(results, FLOOR, f"dist_data.{args.verb}: 12 datasets of {counts[0]:,} to {counts[-1]:,} pairs "
                     f"({sum(counts):,} in all)")
        same = {}
        for nproc in (1, 2):
            a, b = outs[("separate", nproc)], outs[("collection", nproc)]
            same[nproc] = all(filecmp.cmp(os.path.join(a, d, RESULT[args.verb]), os.path.join(b, d, RESULT[args.verb]),
                                          shallow=False) for d in os.listdir(a))
        one = {r["command"]: r["wall_s"] for r in rows}
        speedup = {n: round(one[f"12 launches of dist_data.{args.verb}, {w}"] / one[f"one collection job, {w}"], 2)
                   for n, w in ((1, "1 process"), (2, "torchrun 2 ranks"))}
        print(f"collection job vs 12 launches: {speedup[1]}x faster (1 process), {speedup[2]}x (2 ranks); "
              f"results identical: {same[1] and same[2]}")
        path = write_report(f"collection_{args.verb}" + ("" if args.scale == 1 else f"_scale{args.scale}"), {
            "verb": args.verb, "scale": args.scale, "model": "sentence-transformers/all-MiniLM-L6-v2",
            "dataset_pairs": counts,
            "speedup": speedup, "identical_outputs": same, "commands": rows})
        print(f"\nwrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def launcher(nproc: int, verb: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", f"dist_data.{verb}"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
            f"dist_data.{verb}"]


if __name__ == "__main__":
    main()
