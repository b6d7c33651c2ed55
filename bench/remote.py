"""Data in a bucket: how fast the engine reads rows from an S3 server against the same files on local
disk, and ``filter`` end to end with its input and output in the bucket against the same on disk.

    python bench/remote.py                            # 100,000 WordNet pairs read; filter on 5,000
    python bench/remote.py --n_read=20000 --n_filter=2000

The S3 server is moto's (``moto.server.ThreadedMotoServer``) on this machine, reached over loopback
by s3fs exactly as a real endpoint is (``AWS_ENDPOINT_URL``). So the figures show what reading through
a store costs the engine (one listing on rank 0, the list sent to every rank, streamed reads of each
rank's share, gzip), not a network's bandwidth or latency.

- ``read``: the engine's read stage (:func:`dist_data.core.blocks.read_stage`: resolve, count, read and
  check this rank's slice) on 8 gzipped jsonl shards, under ``torchrun --nproc-per-node=1`` and ``2``;
  rows/s per rank, from each rank's own stage time (the count of every file included, as a run does).
- ``filter``: ``python -m dist_data.filter`` on local disk, and from bucket to bucket (``--output_dir``
  in the bucket: staged locally, parts and result uploaded, ``_SUCCESS`` last); wall time.

Writes bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from bench.common import make_pairs, moto_server, timed, write_report  # noqa: E402

BUCKET = "bench"
SHARDS = 8


def worker(dataset: str) -> None:
    """Under torchrun: this rank's read stage; one JSON line per rank on stdout."""
    from dist_data.core import distributed
    from dist_data.core.blocks import read_stage
    from dist_data.core.stats import Stats

    with distributed.process_group() as info:
        stats = Stats.for_command()
        start = time.perf_counter()
        shard = read_stage(info, stats, dataset, "train", ["query", "document"], None, 0, 1024, "error")
        seconds = time.perf_counter() - start
        print(json.dumps({"rank": info.rank, "world_size": info.world_size, "rows": shard.n_read,
                          "seconds": round(seconds, 3)}), flush=True)


def _shards(n_pairs: int, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    flat = os.path.join(folder, "all.jsonl")
    make_pairs(n_pairs, flat)
    lines = open(flat, encoding="utf-8").readlines()
    os.remove(flat)
    per = -(-len(lines) // SHARDS)
    for i in range(SHARDS):
        with gzip.open(os.path.join(folder, f"shard-{i:05d}.jsonl.gz"), "wt", encoding="utf-8") as f:
            f.writelines(lines[i * per:(i + 1) * per])


def _upload(client, folder: str, prefix: str) -> None:
    for name in sorted(os.listdir(folder)):
        client.upload_file(os.path.join(folder, name), BUCKET, f"{prefix}/{name}")


def read_rates(dataset: str, nproc: int, env: dict[str, str]) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           os.path.abspath(__file__), "--worker", f"--dataset={dataset}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"read worker failed:\n{proc.stderr[-3000:]}")
    return sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_read", type=int, default=100_000)
    parser.add_argument("--n_filter", type=int, default=5000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.dataset)
        return {}
    import boto3

    work = tempfile.mkdtemp(prefix="bench_remote_")
    server, env = moto_server()
    os.environ.update(env)
    env["DIST_DATA_STAGING"] = os.path.join(work, "staging")
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    rows = []
    try:
        _shards(args.n_read, os.path.join(work, "read"))
        _upload(client, os.path.join(work, "read"), "read")
        for nproc in (1, 2):
            for where, dataset in (("local disk", os.path.join(work, "read")), ("S3 server", f"s3://{BUCKET}/read/")):
                ranks = read_rates(dataset, nproc, env)
                rows.append({"step": "read", "where": where, "ranks": nproc, "rows": sum(r["rows"] for r in ranks),
                             "seconds": max(r["seconds"] for r in ranks),
                             "rows_per_s_per_rank": [round(r["rows"] / r["seconds"]) for r in ranks]})
                print(json.dumps(rows[-1]), flush=True)
        _shards(args.n_filter, os.path.join(work, "filter"))
        _upload(client, os.path.join(work, "filter"), "filter")
        flags = ["--k=2", "--noprogress"]
        runs = {"local disk": [f"--dataset={os.path.join(work, 'filter')}", f"--output_dir={work}/filter-out"],
                "S3 server": [f"--dataset=s3://{BUCKET}/filter/", f"--output_dir=s3://{BUCKET}/filter-out"]}
        results = {}
        for where, paths in runs.items():
            t = timed([sys.executable, "-m", "dist_data.filter", *paths, *flags], env={**env, "HF_HUB_OFFLINE": "1"})
            results[where] = t
            rows.append({"step": "filter", "where": where, "ranks": 1, "rows": args.n_filter, "seconds": t["wall_s"],
                         "peak_rss_mib": t["peak_rss_mib"]})
            print(json.dumps(rows[-1]), flush=True)
        local = open(os.path.join(work, "filter-out", "filtered.jsonl"), "rb").read()
        stored = client.get_object(Bucket=BUCKET, Key="filter-out/filtered.jsonl")["Body"].read()
        same = local == stored
    finally:
        server.stop()
    print(f"\nremote: {args.n_read:,} pairs read in {SHARDS} gzipped jsonl shards; filter on {args.n_filter:,} pairs; "
          f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}")
    print("| step | where | ranks | rows | seconds | rows/s per rank |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        rate = ", ".join(f"{x:,}" for x in r.get("rows_per_s_per_rank", [round(r["rows"] / r["seconds"])]))
        print(f"| {r['step']} | {r['where']} | {r['ranks']} | {r['rows']:,} | {r['seconds']} | {rate} |")
    print(f"filter's result from the bucket has the bytes of the local one: {same}")
    report = {"args": {k: v for k, v in vars(args).items() if k not in ("worker", "dataset")}, "rows": rows,
              "same_bytes": same}
    print("wrote", write_report("remote", report))
    return report


if __name__ == "__main__":
    main()
