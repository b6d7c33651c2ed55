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
