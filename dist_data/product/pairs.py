"""Synonym-pair steps: pairs from neighbour lists, one row per unordered pair, and the review order.
Pure numpy; the entry point :mod:`dist_data.pairs` does the reading, embedding, search and routing."""

from __future__ import annotations

import numpy as np

from ..core.select import PAD_ID

MODEL, TRANSLITERATION = 1, 2  # how a pair was found (bits)
SOURCES = {MODEL: "model", TRANSLITERATION: "transliteration", MODEL | TRANSLITERATION: "model+transliteration"}
SORTS = ("score", "ambiguous_first")
PAIR = np.dtype([("a", np.int64), ("b", np.int64), ("score", np.float64), ("source", np.uint8)])


def neighbor_pairs(query_ids: np.ndarray, nbr_ids: np.ndarray, nbr_scores: np.ndarray, min_score: float,
                   max_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(min id, max id)`` from each query's first ``max_neighbors`` other names scoring >= ``min_score``.

    Args:
        query_ids: ``(n,)`` each query's own id (dropped from its list).
        nbr_ids, nbr_scores: ``(n, k)`` its neighbours in canonical order (-1 = padding).

    Returns:
        ``(pairs (PAIR), full (n,) bool)``: ``full`` marks the queries whose ``max_neighbors`` slots
        all scored >= ``min_score`` (more pairs may lie past them).
    """
    other = (nbr_ids != PAD_ID) & (nbr_ids != query_ids[:, None])
    slot = np.cumsum(other, axis=1)
    take = other & (slot <= max_neighbors) & (nbr_scores >= min_score)
    full = take.sum(axis=1) == max_neighbors
    rows, cols = np.nonzero(take)
    return make_pairs(query_ids[rows], nbr_ids[rows, cols], nbr_scores[rows, cols], MODEL), full


def make_pairs(x: np.ndarray, y: np.ndarray, score: np.ndarray, source: int) -> np.ndarray:
    out = np.empty(len(x), dtype=PAIR)
    out["a"], out["b"] = np.minimum(x, y), np.maximum(x, y)
    # a cosine is at most 1: two unit vectors' exact product can round past it (1.0000001), which a
    # threshold of 1 or a reader checking [-1, 1] would trip over
    out["score"], out["source"] = np.clip(score, -1.0, 1.0), source
    return out


def combine(pairs: np.ndarray) -> np.ndarray:
    """One row per unordered pair (sorted by ids), its sources OR-ed: a pair found from both of its
    names, or by the model and by transliteration, is one pair. Its score is the same from either
    side (exact scores are symmetric)."""
    if len(pairs) == 0:
        return pairs
    order = np.lexsort((pairs["b"], pairs["a"]))
    pairs = pairs[order]
    start = np.r_[True, (pairs["a"][1:] != pairs["a"][:-1]) | (pairs["b"][1:] != pairs["b"][:-1])]
    out = pairs[start].copy()
    out["source"] = np.bitwise_or.reduceat(pairs["source"], np.flatnonzero(start))
    return out


def review_key(score: float, name_a: str, name_b: str, min_score: float, sort: str) -> tuple:
    """The order pairs are written in: ``score`` (highest first) or ``ambiguous_first`` (nearest the
    threshold first, then highest); ties by names. A total order over the names alone, so the file is
    the same for any world size and any order of the input's rows."""
    if sort == "score":
        return (-score, name_a, name_b)
    return (abs(score - min_score), -score, name_a, name_b)
