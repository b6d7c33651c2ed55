"""What the host costs around the model: ``filter`` and ``mine`` end to end with a zero-cost encoder.

    python bench/host_overhead.py                          # 100,000 pairs, 1 and 2 ranks; overlap on 5,000
    python bench/host_overhead.py --n_pairs=20000 --overlap_pairs=2000

The encoder is the registered ``builtin:zero-cost`` (dist_data/core/zero_model.py: MiniLM's tokenizer
and 384-d vectors looked up from a text's first two word pieces, a forward that costs next to
nothing), so what is left is the host: reading, hashing, tokenising, batching, cache files, the
exchanges between ranks, writing. Each rank gets one core (``OMP_NUM_THREADS=1``), as a GPU node
gives a rank about 1-2 cores. The index is ivf (the exact CPU search would dominate the wall time
and is measured elsewhere: bench/scale.py; on a GPU it is the device's work).

Reported per run: wall seconds, seconds per stage (slowest rank), and the host rate: texts embedded
per rank / seconds of the stages other than the search and the model's load (fixed costs: the
index is the device's, the load happens once a job). The target is 25,000 texts/s per rank
(two cores then keep one GPU busy at MiniLM's ~25k texts/s).

Overlap: on ``--overlap_pairs`` pairs, 1 rank with the real MiniLM (2 threads): the stages other
than the search and the load against max(model time, host time), where model time is the bare forward over the
same texts in the same blocks and token-budget batches (tokenised and padded beforehand) and host time the zero-cost run's; <= 1.1
means the host's work is hidden behind the model's. Writes bench/results/host_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from common import HERE, timed, write_report

sys.path.insert(0, os.path.dirname(HERE))
import scale_data  # noqa: E402

ZERO = "builtin:zero-cost"
BATCH_TOKENS = 16384

MODEL_TIME = r"""
import json, sys, time
from dist_data.core.embed import BATCHES_PER_BLOCK, _token_ids, padded_batches, resolve_model  # first (torchvision)
import torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[3]))
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
model = SentenceTransformer(resolve_model(None), device="cpu")
block_rows, seen, blocks = BATCHES_PER_BLOCK * int(sys.argv[4]), set(), []
for s in range(0, len(rows), block_rows):  # the pipeline's blocks: queries by row, documents by first row
    part = rows[s:s + block_rows]
    docs = [d for d in dict.fromkeys(r["document"] for r in part) if d not in seen]
    seen.update(docs)
    blocks += [list(dict.fromkeys(r["query"] for r in part)), docs]
batches = [b for texts in blocks if texts for b in padded_batches(model, _token_ids(model, texts), int(sys.argv[2]))]
start = time.perf_counter()
with torch.inference_mode():
    for f in batches:
        f.pop("rows")
        model.forward(f)
print(json.dumps({"model_s": time.perf_counter() - start, "texts": sum(map(len, blocks))}))
"""


def run(verb: str, world: int, data: str, work: str, model: str, threads: int) -> dict:
    out = os.path.join(work, f"{verb}-w{world}-{model.split(':')[-1].replace('/', '_')}")
    shutil.rmtree(out, ignore_errors=True)
    flags = [f"--dataset={data}", f"--model_name={model}", f"--batch_tokens={BATCH_TOKENS}", "--batch_size=256",
             "--index=ivf", "--nprobe=8", f"--output_dir={out}", "--progress=False"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"] \
        if world > 1 else [sys.executable]
    result = timed(launcher + ["-m", f"dist_data.{verb}", *flags], env={"OMP_NUM_THREADS": str(threads)})
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    stages = {k: v["seconds"] for k, v in stats["stages"].items()}
    texts = stats["stages"]["embed"]["rows"]
    host = sum(v for k, v in stages.items() if k not in ("search", "index", "model"))
    shutil.rmtree(out, ignore_errors=True)
    return {"verb": verb, "world": world, "model": model, "wall_s": result["wall_s"], "stages": stages,
            "texts": texts, "host_s": round(host, 2), "texts_per_s_per_rank": round(texts / world / max(host, 1e-9))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_pairs", type=int, default=100_000)
    parser.add_argument("--overlap_pairs", type=int, default=5_000)
    parser.add_argument("--overlap_only", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-host-")
    report = {"encoder": ZERO, "batch_tokens": BATCH_TOKENS, "index": "ivf", "runs": []}
    earlier = os.path.join(HERE, "results", "host_overhead.json")
    if args.overlap_only and os.path.exists(earlier):  # keep the earlier host runs
        with open(earlier, encoding="utf-8") as f:
            report["runs"] = json.load(f)["runs"]
    try:
        data = scale_data.pairs(args.n_pairs, os.path.join(work, "pairs.jsonl"))
        print(f"\nhost cost, zero-cost encoder, {args.n_pairs:,} pairs, 1 core per rank")
        print("| verb | ranks | wall s | texts | host s | texts/s per rank | seconds per stage |")
        print("|---|---|---|---|---|---|---|")
        for verb in () if args.overlap_only else ("filter", "mine"):
            for world in (1, 2):
                r = run(verb, world, data, work, ZERO, 1)
                report["runs"].append(r)
                print(f"| {verb} | {world} | {r['wall_s']:.1f} | {r['texts']:,} | {r['host_s']:.1f} | "
                      f"{r['texts_per_s_per_rank']:,} | " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
                      + " |")
        small = scale_data.pairs(args.overlap_pairs, os.path.join(work, "small.jsonl"))
        host = run("filter", 1, small, work, ZERO, 2)
        real = run("filter", 1, small, work, "sentence-transformers/all-MiniLM-L6-v2", 2)
        floor = json.loads(timed([sys.executable, "-c", MODEL_TIME, small, str(BATCH_TOKENS), "2", "256"])["stdout"])
        ratio = real["host_s"] / max(floor["model_s"], host["host_s"])
        report["overlap"] = {"pairs": args.overlap_pairs, "threads": 2, "model_s": round(floor["model_s"], 2),
                             "host_s": host["host_s"], "end_to_end_s": real["host_s"], "ratio": round(ratio, 3),
                             "stages": real["stages"]}
        print(f"\noverlap, filter on {args.overlap_pairs:,} pairs, 1 rank, 2 threads: model alone "
              f"{floor['model_s']:.1f} s, host alone {host['host_s']:.1f} s, end to end (stages but the search) "
              f"{real['host_s']:.1f} s = {ratio:.2f} x max(model, host)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {write_report('host_overhead', report)}")


if __name__ == "__main__":
    main()
