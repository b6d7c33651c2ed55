"""The GPU paths: run where CUDA is present (the suite's GPU tests), skipped with the reason elsewhere.

On a GPU machine: ``python -m pytest -q tests/test_gpu.py``.
"""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli, wordnet_pairs, write_jsonl
from dist_data.core import index

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: the GPU "
                                "paths (nccl, faiss-gpu, the torch search, fp16/bf16) are not exercised here")
CUDA = torch.device("cuda", 0)


def _vectors(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("spec", ["gather", "sharded", index.IndexSpec("ivf", nlist=20, nprobe=20)])
def test_gpu_search_gives_the_cpu_neighbours(spec):
    docs, queries = _vectors(5000, 64, 0), _vectors(300, 64, 1)
    ids = np.arange(len(docs)) * 3
    cpu = index.search(queries, docs, ids, 10, spec, torch.device("cpu"))
    gpu = index.search(queries, docs, ids, 10, spec, CUDA)
    np.testing.assert_array_equal(gpu[1], cpu[1])  # exact rescoring: the same canonical lists
    np.testing.assert_array_equal(gpu[0], cpu[0])


def test_torch_search_on_gpu_without_faiss_gives_the_cpu_neighbours(monkeypatch):
    docs, queries = _vectors(5000, 64, 2), _vectors(300, 64, 3)
    cpu = index.search(queries, docs, np.arange(5000), 10, "gather", torch.device("cpu"))
    monkeypatch.setattr(index, "_faiss", lambda: None)
    flat = index.FlatIndex(docs, CUDA)
    assert flat.backend == "torch-gpu"
    gpu = index.search(queries, docs, np.arange(5000), 10, "gather", CUDA)
    np.testing.assert_array_equal(gpu[1], cpu[1])
    half = index.search(queries, docs, np.arange(5000), 10, "gather", CUDA, fp16=True)
    assert np.mean(half[1] == cpu[1]) > 0.98  # fp16 candidates, exact rescoring


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_embeddings_match_float32(dtype):
    from dist_data.core.embed import load_model

    texts = [p["document"] for p in wordnet_pairs(500)]
    ref = load_model(None, torch.device("cpu")).encode(texts, batch_size=64, normalize_embeddings=True)
    half = load_model(None, CUDA, dtype).encode(texts, batch_size=64, normalize_embeddings=True,
                                                 convert_to_numpy=False)
    half = torch.stack(half).float().cpu().numpy()
    cos = np.sum(ref * half, axis=1) / np.linalg.norm(half, axis=1)
    assert cos.min() > (0.999 if dtype == "float16" else 0.99)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs two GPUs (one rank per device)")
def test_two_ranks_on_nccl_give_the_bytes_of_one_process(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(3000))
    for nproc, name in ((0, "one"), (2, "two")):
        run_cli("dist_data.mine", f"--dataset={data}", f"--output_dir={tmp_path / name}", "--progress=False",
                "--index=sharded", nproc=nproc)
    assert (tmp_path / "one" / "mined.jsonl").read_bytes() == (tmp_path / "two" / "mined.jsonl").read_bytes()
    stats = json.load(open(tmp_path / "two" / "stats.json"))
    assert "gpu" in stats["index"]["backend"]


def test_nccl_group_carries_every_helper(tmp_path):
    """The collectives over nccl (tensors on the GPU), in a group of one: a one-GPU machine."""
    import torch.distributed as dist

    from dist_data.core import distributed

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1,
                            device_id=CUDA)
    try:
        assert distributed._comm_device().type == "cuda"
        x = _vectors(100, 8, 4).astype(np.float16)
        np.testing.assert_array_equal(distributed.all_gather_array(x), x)
        assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
        assert distributed.all_reduce_max(7) == 7
        parts = distributed.exchange([np.arange(5)])
        np.testing.assert_array_equal(parts[0], np.arange(5))
        docs, queries = _vectors(3000, 32, 5), _vectors(200, 32, 6)
        cpu = index.search(queries, docs, np.arange(3000), 10, "gather", torch.device("cpu"))
        got = index._sharded_search(queries, docs, np.arange(3000), index.FlatIndex(docs, CUDA), 10)
        np.testing.assert_array_equal(got[1], cpu[1])
    finally:
        dist.destroy_process_group()


def test_a_torchrun_rank_on_the_gpu_gives_the_bytes_of_a_plain_process(tmp_path):
    """The GPU path end to end (float16 embeddings in token-budget batches, the GPU search)."""
    data = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(3000))
    flags = ["--progress=False", "--index=sharded", "--dtype=float16", "--batch_tokens=8192"]
    for nproc, name in ((0, "plain"), (1, "torchrun")):
        run_cli("dist_data.mine", f"--dataset={data}", f"--output_dir={tmp_path / name}", *flags, nproc=nproc)
    assert (tmp_path / "plain" / "mined.jsonl").read_bytes() == (tmp_path / "torchrun" / "mined.jsonl").read_bytes()
    stats = json.load(open(tmp_path / "torchrun" / "stats.json"))
    assert "gpu" in stats["index"]["backend"] and stats["counts"]["kept"] > 1000
