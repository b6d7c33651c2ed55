"""Pure selection algorithms: numpy in, numpy out. No files, no torch.distributed, no faiss.

Neighbour lists are in *canonical order*: score descending, then id ascending. Ties are thus
broken the same way whatever index, shard layout or number of ranks produced the candidates.
Padding entries have id ``-1`` and score ``-inf`` and always sort last.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PAD_ID = -1


def canonical_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row in canonical order (score desc, id asc), padded to ``k``.

    Args:
        scores: ``(n, m) float`` candidate scores.
        ids: ``(n, m) int64`` candidate ids (``-1`` = padding).
        k: how many to keep.

    Returns:
        ``(scores (n, k), ids (n, k))``.

    >>> canonical_topk(np.array([[0.5, 0.9, 0.5]]), np.array([[7, 3, 2]]), 2)
    (array([[0.9, 0.5]]), array([[3, 2]]))
    """
    scores = np.where(ids == PAD_ID, -np.inf, scores)
    n, m = ids.shape
    if m < k:
        scores = np.pad(scores, ((0, 0), (0, k - m)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, k - m)), constant_values=PAD_ID)
    # Padding sorts after every real id with score -inf too.
    id_key = np.where(ids == PAD_ID, np.iinfo(np.int64).max, ids)
    order = np.lexsort((id_key, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists ``[(scores, ids), ...]`` of the same queries into one top-k."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    return canonical_topk(scores, ids, k)


def consistency_keep(neighbor_ids: np.ndarray, positive_ids: np.ndarray, k: int) -> np.ndarray:
    """Consistency filtering: keep pair i iff its document is among the top-k neighbours of query i.

    Args:
        neighbor_ids: ``(n, >=k) int64`` neighbour document ids of each query, canonical order.
        positive_ids: ``(n,) int64`` id of each pair's document (duplicates share one id).
        k: neighbourhood size.

    Returns:
        ``(n,) bool``; a dropped pair's reason is always ``not_in_top_k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if neighbor_ids.shape[1] < k:
        raise ValueError(f"need at least k={k} neighbours per query, got {neighbor_ids.shape[1]}")
    return (neighbor_ids[:, :k] == positive_ids[:, None]).any(axis=1)


def exact_scores(query_emb: np.ndarray, doc_emb: np.ndarray, cand: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Float64 inner products of each query with its candidate rows of ``doc_emb``.

    The value of one (query, document) pair does not depend on the batch, the index or the shard
    it was computed in, so canonical order is the same everywhere.

    Args:
        query_emb: ``(n, d)``; doc_emb: ``(m, d)``; cand: ``(n, c) int64`` rows of doc_emb, -1 = none.

    Returns:
        ``(n, c) float64``, ``-inf`` where cand is -1.
    """
    out = np.full(cand.shape, -np.inf, dtype=np.float64)
    if cand.size == 0 or doc_emb.shape[0] == 0:
        return out
    for s in range(0, cand.shape[0], chunk):
        c = cand[s : s + chunk]
        q = query_emb[s : s + chunk].astype(np.float64)
        d = doc_emb[np.maximum(c, 0)].astype(np.float64)
        out[s : s + chunk] = np.where(c >= 0, np.einsum("nd,ncd->nc", q, d), -np.inf)
    return out
