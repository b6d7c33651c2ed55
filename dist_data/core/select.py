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


def seeded_uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform draw in ``[0, 1)`` per key (splitmix64 of key and seed): a row is in a seeded
    sample by its own key alone, so the sample is the same for any number of ranks.

    >>> bool(seeded_uniform(np.array([7]), 0)[0] == seeded_uniform(np.array([5, 7]), 0)[1])
    True
    """
    with np.errstate(over="ignore"):
        z = np.asarray(keys).astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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


# Exact inner products: vectors are put on a grid of 2**-26 (integer-valued float64), where every
# product (< 2**52) and, for vectors of norm < 1.4, every partial sum (< 2**53) is exact.
SCORE_GRID = 2.0**-26
_CHUNK_ELEMENTS = 1 << 19  # ~4 MB of float64 per step: cache-sized, measured fastest


def on_grid(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as integer multiples of :data:`SCORE_GRID`, in float64."""
    return np.round(np.asarray(vectors, dtype=np.float64) / SCORE_GRID)


def exact_scores(query_emb: np.ndarray, doc_emb: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Inner products of each query with its candidate rows of ``doc_emb``, computed exactly.

    On the :data:`SCORE_GRID` every floating-point operation of the dot product is exact, so the
    value of a (query, document) pair is the same whatever the batch, the BLAS, the thread count,
    the index or the shard that computed it: canonical order agrees everywhere. It differs from the
    float32 product by < 1e-6 (the grid rounding). Vectors must have norm < 1.4 (ours are L2-normalised).

    Args:
        query_emb: ``(n, d)``; doc_emb: ``(m, d)``; cand: ``(n, c) int64`` rows of doc_emb, -1 = none.

    Returns:
        ``(n, c) float64``, ``-inf`` where cand is -1.
    """
    out = np.full(cand.shape, -np.inf, dtype=np.float64)
    if cand.size == 0 or doc_emb.shape[0] == 0:
        return out
    # Only the candidate rows go on the grid (float64), once each.
    used, inverse = np.unique(np.maximum(cand, 0), return_inverse=True)
    doc_grid, cand = on_grid(doc_emb[used]), np.where(cand >= 0, inverse.reshape(cand.shape), -1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, cand.shape[1] * doc_grid.shape[1]))
    for s in range(0, cand.shape[0], chunk):
        c = cand[s : s + chunk]
        q = on_grid(query_emb[s : s + chunk])
        d = doc_grid[np.maximum(c, 0)]
        out[s : s + chunk] = np.where(c >= 0, np.matmul(d, q[:, :, None])[:, :, 0] * SCORE_GRID**2, -np.inf)
    return out


def select_negatives(cand_ids: np.ndarray, cand_scores: np.ndarray, positive_ids: Sequence[np.ndarray],
                     positive_score: np.ndarray, *, num_negatives: int, range_min: int = 0,
                     range_max: int | None = None, max_score: float | None = None, min_score: float | None = None,
                     absolute_margin: float | None = None, relative_margin: float | None = None,
                     sampling: str = "top", seeds: np.ndarray | None = None, exclude_positives: bool = True,
                     query_doc_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Hard negatives per query from its candidates, as sentence-transformers' ``mine_hard_negatives``.

    Candidates that are the query itself (a document with the query's text), positives, too close
    to the positive (margins) or outside the score bounds are removed first; the remaining ones, in
    canonical order, form the rank window ``[range_min, range_max)``, from which ``num_negatives``
    are taken (``top``) or sampled (``random``, seeded per query by ``seeds``, then put back in
    canonical order).

    Args:
        cand_ids: ``(n, c) int64`` candidate document ids, canonical order (-1 = padding).
        cand_scores: ``(n, c) float`` their scores.
        positive_ids: per query, the ids of all its positives (never emitted, unless
            ``exclude_positives`` is off: reranking evaluation sets keep them in rank order).
        positive_score: ``(n,)`` the query's hardest (lowest) positive score, for the margins.
        seeds: ``(n,) int`` per-query seeds for ``random`` (e.g. from the query's global id).
        query_doc_ids: ``(n,) int64`` the id of the document whose text is the query's (-1: none),
            never a negative of it; with ``exclude_positives`` off it stays where it is one of the
            query's positives (sentence-transformers >= 6.3).

    Returns:
        ``(neg_ids (n, num_negatives), neg_scores, removed)``: padded with -1 / -inf where fewer
        were found; ``removed`` counts candidates removed by each rule.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if range_max is None:
        range_max = cand_ids.shape[1]
    if not 0 <= range_min < range_max:
        raise ValueError(f"need 0 <= range_min < range_max, got range_min={range_min}, range_max={range_max}")
    if sampling not in ("top", "random"):
        raise ValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    n = cand_ids.shape[0]
    valid = cand_ids != PAD_ID
    removed: dict[str, int] = {}

    def drop(rule: str, mask: np.ndarray) -> None:
        hit = mask & valid
        removed[rule] = removed.get(rule, 0) + int(hit.sum())
        valid[hit] = False

    if query_doc_ids is not None:
        own = np.asarray(query_doc_ids, dtype=np.int64)
        if not exclude_positives:  # the query is its own positive: it keeps its rank
            own = np.array([d if d not in positive_ids[i] else PAD_ID for i, d in enumerate(own.tolist())],
                           dtype=np.int64)
        drop("query_text", (cand_ids == own[:, None]) & (own[:, None] != PAD_ID))
    if exclude_positives:
        drop("positive", np.stack([np.isin(cand_ids[i], positive_ids[i]) for i in range(n)]) if n else valid)
    pos = np.asarray(positive_score, dtype=np.float64)[:, None]
    if absolute_margin is not None:
        drop("absolute_margin", cand_scores + absolute_margin > pos)
    if relative_margin is not None:
        drop("relative_margin", cand_scores > pos - np.abs(pos) * relative_margin)
    if max_score is not None:
        drop("max_score", cand_scores > max_score)
    if min_score is not None:
        drop("min_score", cand_scores < min_score)

    neg_ids = np.full((n, num_negatives), PAD_ID, dtype=np.int64)
    neg_scores = np.full((n, num_negatives), -np.inf)
    for i in range(n):
        window = np.flatnonzero(valid[i])[range_min:range_max]
        if sampling == "random" and len(window) > num_negatives:
            rng = np.random.default_rng(None if seeds is None else int(seeds[i]))
            window = np.sort(rng.choice(window, size=num_negatives, replace=False))
        window = window[:num_negatives]
        neg_ids[i, : len(window)] = cand_ids[i, window]
        neg_scores[i, : len(window)] = cand_scores[i, window]
    return neg_ids, neg_scores, removed
