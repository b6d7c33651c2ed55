"""The output folder never loses a user's files or a finished run; faults give one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, wordnet_pairs, write_jsonl

FAST = ("--max_rows=200", "--batch_size=32", "--noprogress")


def filter_run(out, *flags, nproc=0, check=True):
    return run_cli("dist_data.filter", f"--output_dir={out}", *FAST, *flags, nproc=nproc, check=check)


def test_overwrite_removes_only_what_dist_data_wrote_and_only_after_the_inputs_are_checked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my own notes")
    (out / "mine").mkdir()
    (out / "mine" / "keep.jsonl").write_text("{}\n")
    filter_run(out)
    first = (out / "filtered.jsonl").read_bytes()
    assert json.load(open(out / "manifest.json"))["paths"] == sorted(
        ["README.md", "_SUCCESS", "args.json", "cache", "filtered.jsonl", "manifest.json", "parts", "rejects.jsonl", "scores.png",
         "stats.json"])

    # other flags without --overwrite: refused, naming the flag
    proc = filter_run(out, "--k=3", check=False)
    assert proc.returncode == 2 and "--k=3 (was 2)" in proc.stderr and "--overwrite" in proc.stderr
    # a typo in --dataset together with --overwrite: refused before anything is removed
    proc = filter_run(out, "--k=3", "--overwrite", f"--dataset={tmp_path / 'typo.jsonl'}", check=False)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    # a wrong key with --overwrite: the rows are read (and refused) before anything is removed
    proc = filter_run(out, "--k=3", "--overwrite", "--query_key=lemma", check=False)
    assert proc.returncode == 2 and "missing key 'lemma'" in proc.stderr
    assert (out / "filtered.jsonl").read_bytes() == first and (out / "_SUCCESS").exists()

    filter_run(out, "--k=3", "--overwrite")
    assert json.load(open(out / "args.json"))["k"] == 3
    assert (out / "notes.txt").read_text() == "my own notes" and (out / "mine" / "keep.jsonl").exists()
    assert len((out / "filtered.jsonl").read_bytes()) > len(first)  # k=3 keeps more

    proc = filter_run(out, "--k=3")  # the same flags: complete, nothing to do
    assert "already complete" in proc.stderr


def test_a_run_that_failed_before_caching_anything_does_not_block_the_corrected_command(tmp_path):
    out = tmp_path / "run"
    proc = filter_run(out, "--document_key=definition", check=False)  # wrong key
    assert proc.returncode == 2 and "missing key 'definition'" in proc.stderr
    start = time.time()
    proc = filter_run(out, "--model_name=sentence-transformers/no-such-model", check=False)
    assert proc.returncode == 2 and time.time() - start < 60
    assert "no-such-model" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "ERROR" in line]) == 1
    proc = filter_run(out, f"--dataset={tmp_path / 'missing.jsonl'}", check=False)
    assert proc.returncode == 2
    filter_run(out, "--k=1")  # the corrected command, other flags than every failed one
    assert (out / "_SUCCESS").exists()


def test_stale_temporaries_are_removed_and_a_killed_run_is_resumed(tmp_path):
    out = tmp_path / "run"
    (out / "parts").mkdir(parents=True)
    # what a run killed during its merge leaves: its manifest, and half-written temporaries
    (out / "manifest.json").write_text(json.dumps({"paths": ["args.json", "cache", "filtered.jsonl", "manifest.json",
                                                             "parts"], "written_by": "dist_data"}))
    (out / "filtered.jsonl.tmp-4242").write_text("half a merge")
    (out / "parts" / "part-00000.jsonl.tmp-4242").write_text("half a part")
    (out / "draft.tmp").write_text("a user's own temporary file")
    proc = filter_run(out)
    assert "removed 2 temporary file(s)" in proc.stderr
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if ".tmp" in f]
    assert leftovers == ["draft.tmp"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_runs_into_one_folder_are_refused_and_a_dead_lock_is_taken_over(tmp_path):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "started": "2026-01-01T00:00:00", "command": "x"}
        (out / ".dist_data.lock").write_text(json.dumps(lock))
        proc = filter_run(out, check=False)
        assert proc.returncode == 2
        assert f"being written by another dist_data run (pid {holder.pid} on this host" in proc.stderr
        assert not (out / "args.json").exists()
        lock["host"] = "node-7"  # another node: cannot be checked from here, the message says how to clear it
        (out / ".dist_data.lock").write_text(json.dumps(lock))
        proc = filter_run(out, check=False)
        assert proc.returncode == 2 and "on host node-7" in proc.stderr and "delete" in proc.stderr
    finally:
        holder.kill()
    lock.update(host=socket.gethostname(), pid=_dead_pid())
    (out / ".dist_data.lock").write_text(json.dumps(lock))
    proc = filter_run(out)
    assert "taking over the lock of a dead run" in proc.stderr
    assert (out / "_SUCCESS").exists() and not (out / ".dist_data.lock").exists()


def test_a_concurrent_second_job_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dist_data.filter", f"--output_dir={out}", "--noprogress", "--batch_size=32"]
    first = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 120
        while not (out / ".dist_data.lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc = filter_run(out, check=False)
        assert proc.returncode == 2 and f"pid {first.pid}" in proc.stderr
    finally:
        first.kill()
        first.communicate()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    out = tmp_path / "run"
    flags = [f"--output_dir={out}", "--noprogress", "--batch_size=16", "--max_rows=1000"]
    cmd = [sys.executable, "-m", "dist_data.filter", *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not any(f.endswith(".npy") for _, _, fs in os.walk(out) for f in fs):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err and not (out / ".dist_data.lock").exists()
    proc = run_cli("dist_data.filter", *flags, nproc=0)  # the same command resumes
    assert "block(s) served from the cache" in proc.stderr and (out / "_SUCCESS").exists()


def test_a_full_disk_is_one_line_and_nothing_is_published(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = filter_run(mnt / "run", check=False)
        assert proc.returncode == 2 and "No space left on device" in proc.stderr
        assert "nothing was published" in proc.stderr and "Traceback" not in proc.stderr
        assert not (mnt / "run" / "_SUCCESS").exists()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)  # a read-only file system
        proc = filter_run(mnt / "run2", check=False)
        assert proc.returncode == 2 and "Read-only file system" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        subprocess.run(["umount", str(mnt)])


def test_stats_have_the_same_keys_on_every_rank_and_mine_adds_up(tmp_path):
    rows = wordnet_pairs(150, seed=3)
    # one query with four positives: after its positives are removed it has fewer candidates left
    rows.append({"query": rows[0]["query"], "pos": [r["document"] for r in rows[1:4]]})
    rows[5] = {"query": "x", "pos": "n"}  # a string where positives are expected: a bad row, never a positive
    n_docs = len({r["document"] for r in rows if "document" in r})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "mine"
    run_cli("dist_data.mine", f"--dataset={data}", f"--output_dir={out}", "--on_bad_rows=skip",
            f"--range_min={n_docs - 5}", "--num_negatives=3", "--too_few=drop", "--batch_size=32", "--noprogress",
            nproc=2)
    stats = json.load(open(out / "stats.json"))
    keys = [sorted(r["counts"]) for r in stats["ranks"]]
    assert keys[0] == keys[1] == sorted(stats["counts"])
    c = stats["counts"]
    assert c["rejected"] == {"'pos' is a string ('n')": 1} or sum(c["rejected"].values()) == 1
    assert c["input_rows"] == len(rows) and c["read"] == len(rows)
    assert c["pairs"] == len(rows) - 2 + 3 == c["kept"] + c["dropped"]["too_few_negatives"]
    assert c["kept"] > 0 and c["dropped"]["too_few_negatives"] >= 3  # the four-positive query's pairs are short
    with open(out / "mined.jsonl") as f:
        assert c["rows_written"] == sum(1 for _ in f) == 3 * c["kept"]  # triplets: a row per negative
    reject = json.loads(open(out / "rejects.jsonl").readline())
    assert reject["line"] == 6 and "'pos' is a string" in reject["reason"]

    filtered = tmp_path / "filter"
    filter_run(filtered, nproc=2)
    stats = json.load(open(filtered / "stats.json"))
    assert sorted(stats["ranks"][0]["counts"]) == sorted(stats["ranks"][1]["counts"])
    assert stats["counts"]["rejected"] == {} and stats["counts"]["dropped"]["not_sampled"] == 4800


def test_noprogress_silences_every_bar(tmp_path):
    proc = filter_run(tmp_path / "quiet", nproc=2)
    assert "it/s" not in proc.stderr and "rows/s]" not in proc.stderr and "%|" not in proc.stderr


def test_bad_rows_of_every_kind_are_skipped_with_file_and_line(tmp_path):
    rows = wordnet_pairs(40, seed=5, synonyms=False)
    lines = [f"{r['query']},{r['document'].replace(',', ' ')}".encode() for r in rows]
    lines[3] = b"caf\xe9,a place for coffee"
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_bytes("\ufeffquery,document\n".encode() + b"\n".join(lines) + b"\n")
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", [*rows[:2], '{"query": "x\\ud800", "document": "d"}'])
    out = tmp_path / "run"
    filter_run(out, f"--dataset={csv_path},{jsonl}", "--on_bad_rows=skip", nproc=2)
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert [(os.path.basename(r["file"]), r["line"]) for r in rejects] == [("pairs.csv", 5), ("pairs.jsonl", 3)]
    stats = json.load(open(out / "stats.json"))["counts"]
    assert stats["read"] == 43 and sum(stats["rejected"].values()) == 2
    assert stats["kept"] + stats["dropped"]["not_in_top_k"] == 41
    proc = filter_run(tmp_path / "run2", f"--dataset={jsonl}", check=False)
    assert proc.returncode == 2 and "pairs.jsonl:3: a lone surrogate in 'query'" in proc.stderr
    # the shipped sample's pos is a part-of-speech letter: with a wrong --document_key it is a bad row
    proc = run_cli("dist_data.mine", f"--output_dir={tmp_path / 'm'}", "--document_key=doc", "--noprogress",
                   nproc=0, check=False)
    assert proc.returncode == 2 and "'pos' is a string ('n')" in proc.stderr and "wordnet_pairs.jsonl.gz:1" in proc.stderr


def test_parts_and_merge_are_refused_before_the_run_begins(tmp_path):
    """A verb that forgot ``begin()`` cannot write around the run's record (an earlier run's files
    would be mixed with its own): the engine refuses, and nothing is written."""
    from dist_data.core import cli, distributed
    from dist_data.core.run import Run
    from dist_data.filter import FilterOptions

    opts = cli.parse(FilterOptions, [f"--output_dir={tmp_path / 'out'}"])
    info = distributed.DistInfo(0, 1, 0, distributed.torch.device("cpu"))
    run = Run.open(info, opts, opts.result_file(), "dist_data.filter")
    try:
        with pytest.raises(RuntimeError, match="before Run.begin"):
            run.write_parts(["{}"], [])
        with pytest.raises(RuntimeError, match="before Run.begin"):
            run.merge()
        assert not os.path.exists(run.part("part", 0)) and not (tmp_path / "out" / "manifest.json").exists()
    finally:
        run.lock.release()
