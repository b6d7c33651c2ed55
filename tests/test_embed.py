"""Token-budget batching: the batch plan, the vectors it gives, and the same bytes from any world size."""

import numpy as np
import pytest

from conftest import run_cli, wordnet_pairs, write_jsonl
from dist_data.core.embed import BlockEmbedder, spec_for, token_batches, token_lengths


def test_token_batches_cover_every_row_once_within_the_budget():
    lengths = np.random.default_rng(0).integers(1, 120, size=1000)
    lengths[7] = 500  # longer than the budget: a batch of its own
    batches = token_batches(lengths, 256)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    assert list(lengths[rows]) == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 256
    assert all(len(b) == max(1, 256 // lengths[b].max()) for b in batches[:-1])  # each batch filled greedily
    assert [len(b) for b in batches if 7 in b] == [1]
    # ties keep input order, so the plan is a function of the block alone
    assert token_batches(np.array([3, 3, 3, 3]), 6)[0].tolist() == [0, 1]


@pytest.mark.parametrize("path", ["forward", "encode"])
def test_token_budget_vectors_match_encode_and_each_pass_is_within_budget(model, monkeypatch, path):
    """Both routes: the plain stack's own forward over ids tokenised once, and ``encode`` a batch
    at a time for any other model."""
    from dist_data.core import embed

    texts = [p["document"] for p in wordnet_pairs(400, seed=5)] + ["a", "of the"]
    budget = 700
    spec = spec_for(model, None, None, "", "float32", 32, batch_tokens=budget)
    assert spec.key() != spec_for(model, None, None, "", "float32", 32).key()
    assert embed.fast_path_problem(model, spec) is None  # MiniLM: the fast path gives encode's tokens
    seen = []  # (rows, padded width) of every forward pass
    if path == "encode":
        monkeypatch.setattr(embed, "fast_path_problem", lambda m, s: "forced")
        real = model.encode
        monkeypatch.setattr(model, "encode", lambda part, batch_size, **kw: (
            seen.append((len(part), int(token_lengths(model, part).max()))), real(part, batch_size=batch_size, **kw))[1])
    else:
        real = model.forward
        monkeypatch.setattr(model, "forward", lambda f: (seen.append(tuple(f["input_ids"].shape)), real(f))[1])
    got = BlockEmbedder(model, spec, None).embed(texts, "b0")
    monkeypatch.undo()
    ref = model.encode(texts, batch_size=32, normalize_embeddings=True)
    assert np.abs(got - ref).max() < 1e-5  # only padding differs between the two plans
    assert sum(rows for rows, _ in seen) == len(set(texts))  # each distinct text once
    assert all(rows == 1 or rows * width <= budget for rows, width in seen)
    assert len(seen) > 1 and max(r for r, _ in seen) > 2 * min(r for r, _ in seen)  # short texts, bigger batches


def test_token_budget_run_gives_the_same_bytes_on_one_and_two_ranks(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(300, seed=9))
    out = {}
    for nproc in (0, 2):
        out[nproc] = tmp_path / f"w{nproc}"
        run_cli("dist_data.filter", f"--dataset={data}", f"--output_dir={out[nproc]}", "--batch_size=16",
                "--batch_tokens=300", "--k=2", "--progress=False", nproc=nproc)
    assert (out[0] / "filtered.jsonl").read_bytes() == (out[2] / "filtered.jsonl").read_bytes()
    assert '"batch_tokens": 300' in (out[2] / "args.json").read_text()


def test_the_zero_cost_encoder_is_registered_and_runs_the_pipelined_blocks(tmp_path):
    """``builtin:zero-cost`` (what bench/host_overhead.py measures the host with): MiniLM's token ids,
    each vector the normalised sum of two token rows; the engine's overlapped blocks (a thread
    tokenising ahead, another writing the cache) give the vectors of embedding block by block in
    series, and a second pass reads every block back from the cache."""
    import torch

    from dist_data.core.embed import embed_by_block, load_model
    from dist_data.core.models import ZERO_COST_MODEL, check_model

    assert check_model(ZERO_COST_MODEL) == ZERO_COST_MODEL
    model = load_model(ZERO_COST_MODEL, torch.device("cpu"))
    texts = [r["document"] for r in wordnet_pairs(300, synonyms=False)][:300]
    spec = spec_for(model, ZERO_COST_MODEL, None, "", "float32", 32, batch_tokens=2048)
    piped = embed_by_block(BlockEmbedder(model, spec, str(tmp_path)), np.arange(300), texts, 64, "q")
    series = np.concatenate([BlockEmbedder(model, spec, None).embed(texts[s:s + 64], f"q-{s // 64:07d}")
                             for s in range(0, 300, 64)])
    np.testing.assert_array_equal(piped, series)
    ids = model.tokenizer(texts[:5], truncation=True)["input_ids"]
    table = model[0].table.detach().numpy()
    want = np.stack([table[i[1]] + table[i[2]] for i in ids])
    np.testing.assert_allclose(piped[:5], want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-6)
    again = BlockEmbedder(model, spec, str(tmp_path))
    np.testing.assert_array_equal(embed_by_block(again, np.arange(300), texts, 64, "q"), piped)
    assert again.cache_hits == 5 and again.texts_embedded == 0
