"""Shared by the benchmark scripts: WordNet data, timing a command, the table and the JSON report."""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def make_pairs(n_pairs: int, path: str) -> None:
    """``n_pairs`` (lemma, definition) WordNet pairs: the shipped sample for 5,000, else a seeded draw."""
    from dist_data.text.wordnet import SAMPLE_PAIRS, iter_synsets

    if n_pairs == 5000:
        with gzip.open(SAMPLE_PAIRS, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
            out.write(f.read())
        return
    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    with open(path, "w", encoding="utf-8") as out:
        for s in random.Random(1).sample(synsets, n_pairs):
            out.write(json.dumps({"query": s.lemmas[0], "document": s.definition}) + "\n")


def timed(cmd: list[str], env: dict | None = None, may_fail: bool = False) -> dict:
    """Run under /usr/bin/time -v; wall seconds, peak RSS (MiB) of the largest process, stdout.
    A failing command stops the benchmark, unless ``may_fail``: then ``failed`` says how it ended."""
    full = ["/usr/bin/time", "-v", *cmd] if os.path.exists("/usr/bin/time") else cmd
    start = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    signal = re.search(r"Command terminated by signal (\d+)", proc.stderr)
    failed = None if proc.returncode == 0 and not signal else (
        f"killed by signal {signal.group(1)}" if signal else f"exit status {proc.returncode}")
    if failed and not may_fail:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "stdout": proc.stdout, **({"failed": failed} if failed else {})}


def run_all(commands: dict[str, list[str]], repeats: int, prepare=None, may_fail=()) -> dict[str, list[dict]]:
    """Each command ``repeats`` times, interleaved (so drift hits all alike); ``prepare(name, cmd)`` may
    return the command to run (e.g. with a fresh output folder). The commands named in ``may_fail``
    (a reference that may run out of memory) are recorded as failed instead of stopping the run."""
    results: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for name, cmd in commands.items():
            results.setdefault(name, []).append(timed(prepare(name, cmd) if prepare else cmd,
                                                      may_fail=name in may_fail))
    return results


def fresh_output(work: str, prefix: str = "dist_data"):
    """A ``prepare`` for :func:`run_all`: the commands named ``prefix...`` get an emptied ``work/out`` as
    ``--output_dir`` (so every run does the whole job); the others run as they are."""
    import shutil

    def prepare(name: str, cmd: list[str]) -> list[str]:
        if not name.startswith(prefix):
            return cmd
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        return [*cmd, f"--output_dir={out}"]

    return prepare


def table(results: dict[str, list[dict]], floor_name: str, title: str) -> list[dict]:
    """Print the best run of each command as a markdown table (ratio to the floor); return the rows."""
    floor = min(r["wall_s"] for r in results[floor_name])
    rows = []
    for name, runs in results.items():
        best = min(runs, key=lambda r: (bool(r.get("failed")), r["wall_s"]))
        rows.append({"command": name, "wall_s": best["wall_s"], "peak_rss_mib": best["peak_rss_mib"],
                     "vs_floor": round(best["wall_s"] / floor, 2), "runs": [r["wall_s"] for r in runs],
                     **({"failed": best["failed"]} if best.get("failed") else {})})
    width = max(len(r["command"]) for r in rows)
    print(f"\n{title}, {os.cpu_count()} CPU cores, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"| {'command':<{width}} | {'wall s':>7} | {'peak RSS MiB':>12} | {'x floor':>7} |")
    print(f"|{'-' * (width + 2)}|{'-' * 9}|{'-' * 14}|{'-' * 9}|")
    for r in rows:
        print(f"| {r['command']:<{width}} | {r['wall_s']:>7.2f} | {r['peak_rss_mib']!s:>12} | {r['vs_floor']:>7.2f} |"
              + (f" FAILED: {r['failed']} after {r['wall_s']:.0f} s" if r.get("failed") else ""))
    return rows


def write_report(name: str, report: dict) -> str:
    """bench/results/<name>.json with the machine and date added."""
    report = {**report, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "machine": platform.platform()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"{name}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path


def moto_server() -> tuple[object, dict[str, str]]:
    """moto's S3 server started on a free local port, and the environment a user sets for an endpoint
    (``AWS_ENDPOINT_URL``, keys, region): ``(server, env)``; ``server.stop()`` ends it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
