"""Scale-out benchmark: filter and mine on 10k .. 1M WordNet-recombined pairs with a seeded tiny
encoder (so that the stages after embedding show), at world 1 and 2, with the exact indexes
(gather, sharded) and the approximate one (ivf).

    python bench/scale.py                         # all sizes (about 30 minutes on 2 cores)
    python bench/scale.py --sizes=10000,100000    # a quick look

For each run: wall time, seconds per stage (slowest rank), peak RSS per rank (from stats.json),
disk used by the run folder and its embedding/search cache, and recall@k for ivf (k = 10, or the searched depth). The
embedding cache is shared by the runs of one size (the first run of a size embeds; the others
read the blocks back), so the search and the stages after it are compared on equal terms.
Growth exponents (time ~ N^a) are fitted between sizes. Prints a table and writes
bench/results/scale.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile

from common import timed, write_report

import scale_data

HERE = os.path.dirname(os.path.abspath(__file__))

# (verb, world, index, sizes it runs at): exact search on one process past 100k takes long on 2 cores;
# ivf keeps the sharded layout (per-rank shards), so it also shows the memory per rank at 1 and 2 ranks
RUNS = [
    ("filter", 2, "sharded", None),
    ("filter", 2, "ivf", None),
    ("filter", 1, "gather", (10_000, 100_000)),
    ("filter", 2, "gather", (10_000, 100_000)),
    ("mine", 1, "sharded", (10_000, 100_000)),
    ("mine", 2, "sharded", (10_000, 100_000)),
    ("mine", 1, "ivf", None),
    ("mine", 2, "ivf", None),
]


def disk_mib(*paths: str) -> float:
    total = 0
    for path in paths:
        for root, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return round(total / 2**20, 1)


def run_one(verb: str, world: int, index: str, data: str, model: str, work: str, ivf: dict) -> dict:
    out = os.path.join(work, f"{verb}-{index}-w{world}")
    shutil.rmtree(out, ignore_errors=True)
    flags = [f"--dataset={data}", f"--model_name={model}", "--batch_size=256", f"--index={index}",
             f"--output_dir={out}", f"--cache_dir={os.path.join(work, 'cache')}", "--progress=False"]
    if index == "ivf":
        flags += [f"--nprobe={ivf['nprobe']}"] + ([f"--nlist={ivf['nlist']}"] if ivf.get("nlist") else [])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"] \
        if world > 1 else [sys.executable]
    result = timed(launcher + ["-m", f"dist_data.{verb}", *flags])
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    row = {"verb": verb, "world": world, "index": index, "wall_s": result["wall_s"],
           "stages": {k: v["seconds"] for k, v in stats["stages"].items()},
           "peak_rss_mib_per_rank": [r["peak_rss_mib"] for r in stats["ranks"]],
           "disk_mib": disk_mib(out), "recall": stats.get("index", {}).get("recall")}
    shutil.rmtree(os.path.join(out, "parts"), ignore_errors=True)
    return row


def recall_cell(recall: dict | None) -> str:
    """``recall@10 0.97`` (or at the searched depth when it is below 10)."""
    if not recall:
        return ""
    return ", ".join(f"{k} {v:.3f}" for k, v in recall.items() if k.startswith("recall@"))


FIT_FROM = 100_000  # below this, start-up (~5 s: Python, torch, the model) hides how a stage grows


def exponent(rows: list[dict], key) -> float | None:
    """Least-squares slope of log(value) against log(N) over the sizes from FIT_FROM where the run exists."""
    pts = [(math.log(r["n"]), math.log(key(r))) for r in rows if key(r) and r["n"] >= FIT_FROM]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts), 2)


def main(sizes: str = "10000,100000,300000,1000000", nprobe: int = 128, nlist: int | None = None,
         work: str | None = None, table_only: bool = False) -> None:
    """``--table_only``: print the table and exponents of bench/results/scale.json again, running nothing."""
    if table_only:
        with open(os.path.join(HERE, "results", "scale.json")) as f:
            report(json.load(f)["rows"], nprobe, nlist, write=False)
        return
    work = work or tempfile.mkdtemp(prefix="bench-scale-")
    model = scale_data.model(os.path.join(work, "tiny-model"))
    rows = []
    sizes = sizes if isinstance(sizes, (list, tuple)) else [int(x) for x in str(sizes).split(",")]  # fire: a tuple
    for n in [int(x) for x in sizes]:
        size_dir = os.path.join(work, f"n{n}")
        os.makedirs(size_dir, exist_ok=True)
        data = scale_data.pairs(n, os.path.join(size_dir, "pairs.jsonl"))
        for verb, world, index, only in RUNS:
            if only and n not in only:
                continue
            row = {"n": n, **run_one(verb, world, index, data, model, size_dir, {"nprobe": nprobe, "nlist": nlist})}
            row["cache_mib"] = disk_mib(os.path.join(size_dir, "cache"))
            rows.append(row)
            print(json.dumps(row), flush=True)
        shutil.rmtree(os.path.join(size_dir, "cache", "search"), ignore_errors=True)
    report(rows, nprobe, nlist)


def report(rows: list[dict], nprobe: int, nlist: int | None, write: bool = True) -> None:
    header = ("| N | verb | world | index | wall s | embed s | search s | other s | peak RSS MiB per rank "
              "| run folder MiB | cache MiB | recall |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        st = r["stages"]
        other = r["wall_s"] - st.get("embed", 0) - st.get("search", 0)
        lines.append(f"| {r['n']:,} | {r['verb']} | {r['world']} | {r['index']} | {r['wall_s']:.0f} | "
                     f"{st.get('embed', 0):.0f} | {st.get('search', 0):.0f} | {other:.0f} | "
                     f"{' / '.join(f'{m:.0f}' for m in r['peak_rss_mib_per_rank'])} | {r['disk_mib']:.0f} | "
                     f"{r['cache_mib']:.0f} | {recall_cell(r['recall'])} |")
    print("\n".join(lines))
    growth = {}
    for verb, world, index, _ in RUNS:
        sel = [r for r in rows if (r["verb"], r["world"], r["index"]) == (verb, world, index)]
        growth[f"{verb} w{world} {index}"] = {
            "search_s": exponent(sel, lambda r: r["stages"].get("search")),
            "wall_s": exponent(sel, lambda r: r["wall_s"]),
            "peak_rss_mib": exponent(sel, lambda r: max(r["peak_rss_mib_per_rank"]))}
    print(f"\ngrowth exponents (value ~ N^a, fitted from N = {FIT_FROM:,}):")
    for name, g in growth.items():
        print(f"  {name:<22} search {g['search_s']}  wall {g['wall_s']}  peak RSS {g['peak_rss_mib']}")
    if write:
        print("report:", write_report("scale", {"rows": rows, "growth": growth, "nprobe": nprobe, "nlist": nlist,
                                                "model": "tiny: 1 layer, 64-d (bench/scale_data.py)"}))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
