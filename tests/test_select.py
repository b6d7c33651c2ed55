"""Pure selection logic against a numpy brute-force reference (ties and duplicate documents)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dist_data.core.dedup import first_occurrence, normalize_text, text_hashes
from dist_data.core.select import PAD_ID, canonical_topk, consistency_keep, exact_scores, merge_topk


def brute_force_keep(q, d, doc_of_pair, k):
    """Reference: rank every document for every query by (score desc, id asc) in float64."""
    scores = q.astype(np.float64) @ d.astype(np.float64).T
    keep = []
    for i in range(len(q)):
        order = sorted(range(d.shape[0]), key=lambda j: (-scores[i, j], j))
        keep.append(doc_of_pair[i] in order[:k])
    return np.array(keep)


def test_canonical_topk_breaks_ties_by_id_and_pads():
    scores = np.array([[0.5, 0.9, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]])
    ids = np.array([[7, 3, 2, 9], [4, 1, PAD_ID, 0]])
    s, i = canonical_topk(scores, ids, 3)
    assert i.tolist() == [[3, 2, 7], [0, 1, 4]]
    s, i = canonical_topk(scores[:, :2], ids[:, :2], 4)
    assert i.tolist() == [[3, 7, PAD_ID, PAD_ID], [1, 4, PAD_ID, PAD_ID]]
    assert np.isneginf(s[0, 2:]).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31 - 1), st.booleans())
def test_merge_of_shards_equals_topk_of_all(n_docs, n_shards, k, seed, quantize):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(5, n_docs))
    if quantize:  # many exact ties
        scores = np.round(scores)
    ids = np.tile(np.arange(n_docs), (5, 1))
    full = canonical_topk(scores, ids, k)
    cuts = np.sort(rng.integers(0, n_docs + 1, size=n_shards - 1))
    parts = [canonical_topk(scores[:, a:b], ids[:, a:b], k) for a, b in zip([0, *cuts], [*cuts, n_docs])]
    merged = merge_topk(parts, k)
    np.testing.assert_array_equal(merged[1], full[1])


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 25), st.integers(1, 5), st.integers(0, 2**31 - 1), st.booleans())
def test_consistency_keep_matches_brute_force(n_pairs, k, seed, with_ties):
    rng = np.random.default_rng(seed)
    dim = 4
    q = rng.normal(size=(n_pairs, dim)).astype(np.float32)
    # A pool of documents, some used by several pairs (duplicate documents share one id).
    pool = rng.normal(size=(max(1, n_pairs // 2), dim)).astype(np.float32)
    if with_ties:
        pool = np.round(pool)
        q = np.round(q)
    doc_of_pair = rng.integers(0, len(pool), size=n_pairs)
    ids = np.tile(np.arange(len(pool)), (n_pairs, 1))
    scores = exact_scores(q, pool, ids)
    _, neighbors = canonical_topk(scores, ids, k)
    keep = consistency_keep(neighbors, doc_of_pair, k)
    np.testing.assert_array_equal(keep, brute_force_keep(q, pool, doc_of_pair, k))


def test_consistency_keep_rejects_bad_k():
    with pytest.raises(ValueError):
        consistency_keep(np.zeros((1, 2), dtype=np.int64), np.zeros(1, dtype=np.int64), 0)
    with pytest.raises(ValueError):
        consistency_keep(np.zeros((1, 1), dtype=np.int64), np.zeros(1, dtype=np.int64), 2)


def test_exact_scores_do_not_depend_on_batch_order_or_layout():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 384)).astype(np.float32)
    d = rng.normal(size=(80, 384)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    cand = rng.integers(-1, 80, size=(50, 7))
    whole = exact_scores(q, d, cand)
    pieces = np.concatenate([exact_scores(q[i : i + 3], d, cand[i : i + 3]) for i in range(0, 50, 3)])
    np.testing.assert_array_equal(whole, pieces)
    # The same (query, document) pairs with the documents stored in another order, candidates permuted.
    perm, cols = rng.permutation(80), rng.permutation(7)
    moved = exact_scores(q, d[perm], np.where(cand >= 0, np.argsort(perm)[np.maximum(cand, 0)], -1)[:, cols])
    np.testing.assert_array_equal(whole[:, cols], moved)
    assert np.isneginf(whole[cand < 0]).all()
    ok = cand >= 0
    reference = np.einsum("nd,nkd->nk", q.astype(np.float64), d[np.maximum(cand, 0)].astype(np.float64))
    np.testing.assert_allclose(whole[ok], reference[ok], atol=1e-6)


def test_duplicates_by_normalised_text():
    texts = ["a dog", "a  dog\n", "A dog", "cat", "a dog"]
    assert normalize_text(texts[1]) == "a dog"
    rep = first_occurrence(text_hashes(texts), np.array([10, 11, 12, 13, 14]))
    assert rep.tolist() == [10, 10, 12, 13, 10]
