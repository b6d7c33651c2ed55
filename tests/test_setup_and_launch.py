"""What setup and launching promise: search without faiss, ranks per node from SLURM's allocation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO


def test_search_without_faiss_falls_back_to_torch_with_the_same_result(monkeypatch, caplog):
    from dist_data.core import index

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:50] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    ids = np.arange(1000, 1300, dtype=np.int64)
    cpu = torch.device("cpu")
    with_faiss = index.search(queries, docs, ids, 7, "gather", cpu)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails, as with no faiss installed
    monkeypatch.setattr(index, "_NOTICED", [])
    without = index.search(queries, docs, ids, 7, "gather", cpu)
    assert with_faiss[2]["backend"] == "faiss-cpu" and without[2]["backend"] == "torch-cpu"
    np.testing.assert_array_equal(with_faiss[1], without[1])
    np.testing.assert_array_equal(with_faiss[0], without[0])
    assert "faiss is not installed" in caplog.text
    # brute force: the true top-7 by inner product
    truth = ids[np.argsort(-(queries.astype(np.float64) @ docs.T.astype(np.float64)), axis=1, kind="stable")[:, :7]]
    np.testing.assert_array_equal(without[1], truth)


def _fake_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"scontrol": 'echo head-node', "srun": 'shift; echo "$@"'}.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "GPUS_PER_NODE"))},
            "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "n[0-1]", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_JOB_ID": "77", "PYTHON": sys.executable}


def test_slurm_launch_takes_ranks_per_node_from_the_allocation(tmp_path):
    env = _fake_slurm(tmp_path)
    (tmp_path / "pairs.jsonl").write_text('{"query": "dog", "document": "a domestic canine"}\n')
    flags = ["dist_data.filter", f"--dataset={tmp_path / 'pairs.jsonl'}", f"--output_dir={tmp_path / 'x'}"]
    script = os.path.join(REPO, "launch", "slurm.sh")
    for extra, want in [({"SLURM_GPUS_ON_NODE": "4"}, "--nproc-per-node=4"),
                        ({"SLURM_GPUS_PER_NODE": "a100:2"}, "--nproc-per-node=2"),
                        ({"GPUS_PER_NODE": "3", "SLURM_GPUS_ON_NODE": "8"}, "--nproc-per-node=3")]:
        proc = subprocess.run(["bash", script, *flags], env={**env, **extra}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert want in proc.stdout and "--rdzv-endpoint=head-node:29500" in proc.stdout
        assert proc.stdout.strip().endswith(" ".join(["-m", *flags]))
    proc = subprocess.run(["bash", script, "dist_data.filter"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "--gpus-per-node" in proc.stderr


@pytest.mark.parametrize("script", ["single_node.sh", "multi_host.sh", "slurm.sh"])
def test_launch_checks_the_flags_before_torchrun_starts_a_rank(script, tmp_path):
    """A typo is refused in the launching process: one line, exit 2, and torchrun never started."""
    env = _fake_slurm(tmp_path)
    started = tmp_path / "torchrun-started"
    fake = tmp_path / "bin" / "torchrun"
    fake.write_text(f"#!/usr/bin/env bash\ntouch {started}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**env, "NPROC": "2", "GPUS_PER_NODE": "2", "HEAD": "node0", "NNODES": "1"}
    proc = subprocess.run(["bash", os.path.join(REPO, "launch", script), "dist_data.filter", "--datset=x",
                           f"--output_dir={tmp_path / 'out'}"], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["dist_data.filter: error: unknown flag --datset; did you mean --dataset?"], proc.stderr
    assert not started.exists() and not (tmp_path / "out").exists()
