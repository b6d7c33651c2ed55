"""The distributed helpers on a real 2-rank gloo group (torch.multiprocessing, env init)."""

import os
import socket
import traceback

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dist_data.core import distributed
from dist_data.core import index
from dist_data.core.dedup import text_hashes
from dist_data.core.select import canonical_topk, exact_scores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, errors):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        with distributed.process_group(timeout_minutes=2) as info:
            assert (info.rank, info.world_size) == (rank, world)
            fn(rank, world)
    except BaseException:  # noqa: BLE001 - reported to the parent
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise


def run_ranks(fn, world=2):
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, errors)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    msgs = []
    while not errors.empty():
        msgs.append(errors.get())
    assert not msgs, "\n".join(msgs)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


# --- bodies run on every rank (module level so spawn can pickle them)

def _uneven_gather(rank, world):
    rows = [3, 0][rank]
    mine = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + 100 * rank
    got = distributed.all_gather_array(mine)
    expected = np.concatenate([np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 4), np.float32)])
    np.testing.assert_array_equal(got, expected)
    on_main = distributed.gather_array(mine)
    if rank == 0:
        np.testing.assert_array_equal(on_main, expected)
    else:
        assert on_main is None
    # 16-byte hashes travel unchanged.
    texts = [["alpha", "beta"], ["gamma"]][rank]
    hashes = distributed.all_gather_array(text_hashes(texts))
    assert hashes.tobytes() == text_hashes(["alpha", "beta", "gamma"]).tobytes()
    assert distributed.all_gather_object(rank * 10) == [0, 10]
    assert distributed.broadcast_object("x" if rank == 0 else None) == "x"


def _error_propagates(rank, world):
    err = ValueError("bad row on rank 1") if rank == 1 else None
    with pytest.raises(ValueError, match="bad row on rank 1"):
        distributed.raise_if_any_failed(err)


def _sharded_equals_gather(rank, world):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(101, 16)).astype(np.float32)
    docs[50] = docs[7]  # exact ties across shards
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    lo, hi = distributed.shard_range(101, rank, world)
    qlo, qhi = distributed.shard_range(40, rank, world)
    ids = np.arange(lo, hi, dtype=np.int64) * 3  # ids need not be row numbers
    dev = torch.device("cpu")
    g = index.search(queries[qlo:qhi], docs[lo:hi], ids, 5, "gather", dev)
    s = index.search(queries[qlo:qhi], docs[lo:hi], ids, 5, "sharded", dev)
    np.testing.assert_array_equal(g[1], s[1])
    # Against brute force over all documents.
    ref = canonical_topk(exact_scores(queries[qlo:qhi], docs, np.tile(np.arange(101), (qhi - qlo, 1))),
                         np.tile(np.arange(101) * 3, (qhi - qlo, 1)), 5)[1]
    np.testing.assert_array_equal(g[1], ref)


def test_uneven_all_gather_on_two_ranks():
    run_ranks(_uneven_gather)


def test_any_rank_error_raises_everywhere():
    run_ranks(_error_propagates)


def test_sharded_topk_merge_equals_gather_and_brute_force():
    run_ranks(_sharded_equals_gather)


def test_helpers_are_identity_without_a_group():
    a = np.arange(6).reshape(3, 2)
    assert distributed.all_gather_array(a) is a and distributed.gather_array(a) is a
    assert distributed.all_gather_object(5) == [5]
    assert distributed.get_world_size() == 1
    distributed.raise_if_any_failed(None)


@pytest.mark.parametrize("n,world,unit", [(10, 3, 1), (0, 2, 1), (5000, 2, 512), (7, 4, 4), (100, 8, 7)])
def test_shard_range_covers_in_order(n, world, unit):
    ranges = [distributed.shard_range(n, r, world, unit) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a, b), (c, d) in zip(ranges, ranges[1:]):
        assert b == c and a <= b
    for a, b in ranges[:-1]:
        assert a % unit == 0 and b % unit == 0 or b == n
    sizes = [-(-(b - a) // unit) for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def _check_exchange_and_fetch(rank, world):
    from dist_data.core.keys import KeyedVectors, Owners, global_first

    # uneven personalised all-to-all, with an empty message
    send = [np.full((rank + r, 3), 10 * rank + r, dtype=np.float32) for r in range(world)]
    got = distributed.exchange(send)
    for r, part in enumerate(got):
        assert part.shape == (r + rank, 3) and (part == 10 * r + rank).all()
    # each rank holds keys [100 * rank, 100 * rank + 50); ask for keys of both, in a scrambled order
    mine = np.arange(100 * rank, 100 * rank + 50, dtype=np.int64)
    table = KeyedVectors(mine, np.stack([mine * 2.0, mine * 3.0], 1))
    owners = Owners.gather([(int(mine[0]), int(mine[-1]) + 1)])
    want = np.array([149, 3, 100, 7, 7, 120], dtype=np.int64) if rank == 0 else np.array([], dtype=np.int64)
    out = table.lookup(want, owners)
    np.testing.assert_array_equal(out, np.stack([want * 2.0, want * 3.0], 1).reshape(-1, 2))
    texts = distributed.fetch_strings(want, owners.of(want), lambda keys: [f"doc {k} é" for k in keys.tolist()])
    assert texts == [f"doc {k} é" for k in want.tolist()]
    # first occurrence of a text over ranks, keys in any order
    keys = np.array([5, 1] if rank == 0 else [0, 7], dtype=np.int64)
    reps = global_first(keys, ["a", "b"] if rank == 0 else ["b", "a"])
    assert reps.tolist() == ([5, 0] if rank == 0 else [0, 5])


def test_exchange_fetch_and_first_occurrence_across_ranks():
    run_ranks(_check_exchange_and_fetch)


# --- approximate indexes and the partitioned key tables

def _clustered(n, d, seed):
    """Unit vectors around 30 centres (as real embeddings cluster), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    x = centres[rng.integers(0, 30, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


DOCS, QUERIES = _clustered(3000, 16, 1), _clustered(400, 16, 2)
IVF = index.IndexSpec("ivf", nlist=40, nprobe=3, seed=5, recall_queries=150)


def _ivf_search(rank, world):
    lo, hi = distributed.shard_range(len(DOCS), rank, world)
    qlo, qhi = distributed.shard_range(len(QUERIES), rank, world)
    scores, ids, timings = index.search(QUERIES[qlo:qhi], DOCS[lo:hi], np.arange(lo, hi) * 2, 10, IVF,
                                        torch.device("cpu"))
    ids, scores = distributed.all_gather_array(ids), distributed.all_gather_array(scores)
    if rank == 0:
        np.savez(os.path.join(os.environ["DIST_DATA_TEST_OUT"], f"ivf-{world}.npz"), ids=ids, scores=scores,
                 recall=timings["recall"]["recall@10"], sample=timings["recall"]["recall_queries"])


def test_ivf_gives_the_same_neighbours_for_any_world_size_and_reports_its_true_recall(tmp_path, monkeypatch):
    from dist_data.core.select import seeded_uniform

    monkeypatch.setenv("DIST_DATA_TEST_OUT", str(tmp_path))
    scores, ids, timings = index.search(QUERIES, DOCS, np.arange(len(DOCS)) * 2, 10, IVF, torch.device("cpu"))
    for world in (2, 3):
        run_ranks(_ivf_search, world)
        got = np.load(tmp_path / f"ivf-{world}.npz")
        np.testing.assert_array_equal(got["ids"], ids)  # the shared quantizer: the same lists probed
        assert float(got["recall"]) == timings["recall"]["recall@10"] and int(got["sample"]) == timings["recall"]["recall_queries"]
    # candidates are rescored exactly: every returned score is the exact inner product
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", QUERIES.astype(np.float64), DOCS[ids // 2].astype(np.float64)), atol=1e-6)
    # the reported recall is the overlap with brute force on the seeded sample of queries
    exact = np.argsort(-(QUERIES @ DOCS.T), axis=1, kind="stable")[:, :10] * 2
    sample = seeded_uniform(index._vector_keys(QUERIES), IVF.seed + 1) < IVF.recall_queries / len(QUERIES)
    truth = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact[sample], ids[sample])])
    assert timings["recall"]["recall_queries"] == sample.sum() and 100 < sample.sum() < 200
    assert timings["recall"]["recall@10"] == pytest.approx(truth, abs=1e-4) and 0.3 < truth < 0.999
    # probing every list is exact search
    _, all_lists, t = index.search(QUERIES, DOCS, np.arange(len(DOCS)) * 2, 10,
                                   index.IndexSpec("ivf", nlist=40, nprobe=40, seed=5), torch.device("cpu"))
    np.testing.assert_array_equal(all_lists, index.search(QUERIES, DOCS, np.arange(len(DOCS)) * 2, 10, "gather",
                                                          torch.device("cpu"))[1])
    assert t["recall"]["recall@10"] == 1.0


@pytest.mark.parametrize("score_elements", [1 << 26, 1000])  # every vector in one product; chunks of 2-3 vectors
def test_device_search_path_gives_the_host_bytes(monkeypatch, score_elements):
    """The torch path that runs on a GPU (candidates and their exact rescoring on the device), run on
    the CPU: the same scores and ids, bit for bit, as faiss with the host's rescoring, with exact
    ties (repeated vectors) in the lists; one product against every vector or a running top-k."""
    monkeypatch.setattr(index, "SCORE_ELEMENTS", score_elements)
    monkeypatch.setattr(index, "DEVICE_RESCORE_ELEMENTS", 5000)  # several rescoring steps
    docs = np.concatenate([DOCS, DOCS[:200]])  # 200 exact twins: ties broken by id
    ids = np.arange(len(docs)) * 3
    host = index.FlatIndex(docs, torch.device("cpu"))
    device = index.FlatIndex(docs, torch.device("cpu"), use_torch=True)
    assert host.backend == "faiss-cpu" and device.backend == "torch-cpu" and device.on_device
    want = index.topk_against(QUERIES, docs, ids, host, 25)
    got = index.topk_against(QUERIES, docs, ids, device, 25)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert (got[1][:, :10] // 3 >= len(DOCS)).any()  # twins made it into the lists


def test_hnsw_finds_nearly_all_true_neighbours():
    _, ids, timings = index.search(QUERIES, DOCS, np.arange(len(DOCS)), 10, index.IndexSpec("hnsw", hnsw_m=16),
                                   torch.device("cpu"))
    exact = np.argsort(-(QUERIES @ DOCS.T), axis=1, kind="stable")[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, ids)]) > 0.95
    assert timings["backend"] == "faiss-cpu-hnsw" and timings["recall"]["recall@10"] > 0.95


TEXTS = [f"text {i % 37}" for i in range(500)]  # many repeats across ranks
PAIRS_Q = np.random.default_rng(3).integers(0, 60, 700)
PAIRS_D = np.random.default_rng(4).integers(0, 90, 700)


def _partitioned_tables(rank, world):
    from dist_data.core.dedup import first_occurrence
    from dist_data.text.mining import PositiveSets

    keys = np.random.default_rng(9).permutation(500)[rank::world]  # keys in any order on any rank
    reps = global_first_of(keys)
    np.testing.assert_array_equal(reps, first_occurrence(text_hashes(TEXTS), np.arange(500))[keys])
    lo, hi = distributed.shard_range(700, rank, world)
    sets = PositiveSets.gather(PAIRS_Q[lo:hi], PAIRS_D[lo:hi])
    for q in np.unique(PAIRS_Q[lo:hi]).tolist():
        assert sets.of(q).tolist() == sorted(set(PAIRS_D[PAIRS_Q == q].tolist()))
    counts = np.unique(np.stack([PAIRS_Q, PAIRS_D], 1), axis=0)[:, 0]
    assert sets.max_count == np.unique(counts, return_counts=True)[1].max()
    mine = np.isin(PAIRS_Q, PAIRS_Q[lo:hi])  # it holds the pairs of its own queries, not all pairs
    assert len(sets.query_reps) == len(np.unique(np.stack([PAIRS_Q[mine], PAIRS_D[mine]], 1), axis=0))


def global_first_of(keys):
    from dist_data.core.keys import global_first

    return global_first(keys, [TEXTS[k] for k in keys.tolist()])


def test_first_occurrences_and_positive_sets_are_found_on_home_ranks():
    run_ranks(_partitioned_tables, 3)


def test_more_ranks_than_gpus_is_one_clear_error(monkeypatch):
    from dist_data.core.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InputError, match=r"2 ranks on this node but 1 CUDA device.*--nproc-per-node=1"):
        distributed.init()


def test_refine_keeps_the_best_candidates_by_inner_product():
    rng = np.random.default_rng(3)
    docs, queries = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    cand = rng.integers(0, 500, size=(40, 30))
    cand[5, 20:] = -1  # fewer candidates: trailing -1
    got = index.refine(queries, docs, cand, 8)
    for q in range(40):
        c = cand[q][cand[q] >= 0]
        best = c[np.argsort(-(docs[c] @ queries[q]), kind="stable")[:8]]
        assert set(got[q].tolist()) == set(best.tolist())
    assert (index.refine(queries[:1], docs, cand[5:6, :3], 8)[0, 3:] == -1).all()
