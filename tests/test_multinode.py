"""Two torchrun "nodes" on this machine, started through ``launch/multi_host.sh`` as a user starts
them on two hosts (c10d rendezvous, one process each): the same bytes as one plain process."""

import os
import socket
import subprocess
import sys

from conftest import REPO, run_cli, wordnet_pairs, write_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_multi_host_sh_equal_one_process(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(300, seed=17))
    flags = [f"--dataset={path}", "--batch_size=32", "--num_negatives=3", "--output_scores", "--noprogress"]
    env = {**os.environ, "HEAD": "127.0.0.1", "NNODES": "2", "NPROC": "1", "PORT": str(free_port()),
           "RDZV_ID": f"test-{os.getpid()}", "HF_HUB_OFFLINE": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    nodes = [subprocess.Popen(["bash", "launch/multi_host.sh", "dist_data.mine", *flags,
                               f"--output_dir={tmp_path / 'two_nodes'}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    logs = "".join(err for _, err in results)
    assert "[rank 1/2]" in logs and "on 2 rank(s)" in logs  # one job of 2 ranks, not two jobs of 1
    run_cli("dist_data.mine", *flags, f"--output_dir={tmp_path / 'one'}", nproc=0)
    assert (tmp_path / "two_nodes" / "mined.jsonl").read_bytes() == (tmp_path / "one" / "mined.jsonl").read_bytes()
