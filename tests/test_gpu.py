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
def test_half_precision_embeddings_match_float32(model, dtype):
    from dist_data.core.embed import load_model

    texts = [p["document"] for p in wordnet_pairs(500)]
    ref = model.encode(texts, batch_size=64, normalize_embeddings=True)
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
