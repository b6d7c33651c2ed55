"""LAIONet: LAION rows labelled with ImageNet classes, scored against the classes' definitions.

The steps (Shirali & Hardt's LAIONet, as clip-beyond-tail rebuilt it), each a pure function here:

- label: a LAION caption gets the classes whose WordNet lemmas it contains, counting only lemmas
  that belong to exactly one class (:class:`.lemmas.LemmaMatcher` with ``unique_only``), or by
  LAIONet's own ``label_laion.py`` rule (:class:`.lemmas.LaionetMatcher`, ``--rule=laionet``);
- similarity: the cosine between a caption and its class's query text
  ``"{name} which is {definition}"`` (:func:`query_text`), for rows that name exactly one class;
- filter: similarity above a threshold, optionally only rows LAION marked ``NSFW == "UNLIKELY"``;
- subsets: rows at or above a threshold, sampled by fraction or count, no class lost
  (:func:`subset_positions`, pandas' ``sample`` semantics);
- search_similar: each reference caption claims the first unclaimed row of its top-k (:func:`claim`);
- match_freq: per class, LAIONet rows sampled to a reference count, topped up from the claimed rows
  (:func:`match_frequency`);
- arrange: img2dataset's keys back to rows (:func:`img2dataset_row`).

Rows are identified by ``laion_index``: the input's own column of that name when it has one, else
the row's position in the input (files in sorted order, rows in file order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.errors import BadRowError
from ..core.rows import Row
from .classes import ImageNetClass

INDEX = "laion_index"
TEXT = "TEXT"
WNIDS = "wnids"  # label: the classes a caption names
QUERY_WNID = "name_def_wnid"  # similarity: the one class a caption is scored against
SIMILARITY = "text_to_name_def_wnid_similarity"
WNID = "wnid"  # filter, search_similar: the row's class
SAFE_TAG = "UNLIKELY"  # LAION's NSFW column: the only value --remove_nsfw keeps
NSFW = "NSFW"


def query_text(cls: ImageNetClass) -> str:
    """``"{name} which is {definition}"``: the first WordNet lemma (``_`` as space) and the gloss."""
    return f"{cls.lemmas[0].replace('_', ' ')} which is {cls.definition}"


def parse_laion_row(row: Row, text_key: str) -> tuple[dict[str, Any], str | None]:
    """``(record with laion_index, caption)``; a null caption is None (dropped as empty)."""
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    value = row.value
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    if text_key not in value:
        raise BadRowError(row.source, row.line, f"missing key {text_key!r} (has {sorted(value)[:8]})")
    caption = value[text_key]
    if caption is not None and not isinstance(caption, str):
        raise BadRowError(row.source, row.line, f"{text_key!r} is {type(caption).__name__}, expected a string")
    index = value.get(INDEX, row.gid)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise BadRowError(row.source, row.line, f"{INDEX!r} must be a non-negative integer, got {index!r:.40}")
    return {INDEX: int(index), **{k: v for k, v in value.items() if k != INDEX}}, caption


def wnid_lists(indices: np.ndarray, labels: np.ndarray, wnids: Sequence[str]) -> dict[str, list[int]]:
    """``{wnid: sorted laion indices}`` for every class in label order (empty lists kept)."""
    out: dict[str, list[int]] = {w: [] for w in wnids}
    order = np.lexsort((indices, labels))
    for i in order.tolist():
        out[wnids[int(labels[i])]].append(int(indices[i]))
    return out


FILTER_REASONS = ("nsfw", "no_similarity", "below_threshold")


def keep_mask(similarity: np.ndarray, nsfw: Sequence[Any] | None, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, reason)``: the rows whose similarity is above ``threshold`` (strictly) and, with
    ``nsfw`` given, whose NSFW tag is ``UNLIKELY``; each other row's reason (:data:`FILTER_REASONS`,
    NSFW first)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    unsafe = np.zeros(len(similarity), dtype=bool) if nsfw is None else \
        np.asarray([v != SAFE_TAG for v in nsfw], dtype=bool)
    missing = np.isnan(similarity)
    low = ~(similarity > threshold)
    reason = np.select([unsafe, missing, low], list(FILTER_REASONS), default="").astype(object)
    return reason == "", reason


def _sample(rng_seed: int, n_total: int, n: int) -> np.ndarray:
    """pandas ``sample(n=n, random_state=seed)``: positions drawn by ``RandomState(seed).choice``."""
    return np.random.RandomState(rng_seed).choice(n_total, size=n, replace=False)


def top_classes(labels: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` labels with the most rows (ties: the label seen first in ``labels`` first)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    return uniq[order[:k]]


@dataclass
class Subset:
    positions: np.ndarray  # (m,) sorted row positions kept
    drawn: np.ndarray  # rows drawn by the fraction / count
    readded: np.ndarray  # first rows of classes the draw lost, put back
    trimmed: np.ndarray  # rows taken out of the largest classes to keep exactly n


def subset_positions(labels: np.ndarray, similarity: np.ndarray, thresh: float, frac: float, n: int | None,
                     seed: int, n_classes: int, top_k: int = 10) -> Subset:
    """The LAIONet subset (clip-beyond-tail's ``create_laionet_subsets``), as positions into the rows.

    The first row of every class (in row order) is remembered; rows with ``similarity >= thresh``
    are sampled (``n`` rows, else ``round(frac * rows)``), in pandas' order of draws; the first rows
    of the classes the draw lost are appended; when ``n`` is given and exceeded, the excess is drawn
    (same seed) from the rows of the ``top_k`` largest classes of that list and removed.

    Raises:
        ValueError: ``n`` larger than the rows at or above the threshold.
    """
    labels = np.asarray(labels, dtype=np.int64)
    uniq, first_of_class = np.unique(labels, return_index=True)
    eligible = np.flatnonzero(np.asarray(similarity, dtype=np.float64) >= thresh)
    if n is not None:
        if n > len(eligible):
            raise ValueError(f"--n={n} is more than the {len(eligible)} rows with similarity >= {thresh}")
        take = n
    else:
        take = int(round(frac * len(eligible)))
    drawn = eligible[_sample(seed, len(eligible), take)]
    present = np.zeros(n_classes, dtype=bool)
    present[labels[drawn]] = True
    lost = np.sort(first_of_class[~present[uniq]])
    order = np.concatenate([drawn, lost]).astype(np.int64)
    trimmed = np.zeros(0, dtype=np.int64)
    if n is not None and len(order) > n:
        excess = len(order) - n
        in_top = np.flatnonzero(np.isin(labels[order], top_classes(labels[order], top_k)))
        if excess > len(in_top):
            raise ValueError(f"--n={n}: {excess} rows must go but the {top_k} largest classes hold {len(in_top)}")
        drop = in_top[_sample(seed, len(in_top), excess)]
        trimmed = np.sort(order[drop])
        order = np.delete(order, drop)
    return Subset(np.sort(order), drawn, lost, trimmed)


@dataclass
class Claims:
    laion_ids: np.ndarray  # (m,) int64 claimed rows, in reference order
    reference: np.ndarray  # (m,) int64 the reference that claimed each
    score: np.ndarray  # (m,) float64 its similarity
    unclaimed: np.ndarray  # (r,) int64 references whose whole top-k was claimed before them


def claim(ids: np.ndarray, scores: np.ndarray) -> Claims:
    """Each reference, in order, claims the first row of its top-k list no earlier reference claimed.

    Args:
        ids: ``(n_ref, k) int64`` each reference's top-k rows, best first (-1: no more).
        scores: ``(n_ref, k)`` their similarities.
    """
    taken: set[int] = set()
    got, ref, sc, none = [], [], [], []
    for r in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            i = int(ids[r, j])
            if i >= 0 and i not in taken:
                taken.add(i)
                got.append(i)
                ref.append(r)
                sc.append(float(scores[r, j]))
                break
        else:
            none.append(r)
    return Claims(np.asarray(got, dtype=np.int64), np.asarray(ref, dtype=np.int64), np.asarray(sc, dtype=np.float64),
                  np.asarray(none, dtype=np.int64))


@dataclass
class Matched:
    primary: np.ndarray  # positions into the LAIONet rows kept
    extra: np.ndarray  # positions into the top-up rows kept
    short: dict[int, int]  # label -> rows missing to reach its target
    duplicates: int  # top-up rows skipped because the LAIONet rows already hold them


def match_frequency(target: np.ndarray, labels: np.ndarray, indices: np.ndarray, extra_labels: np.ndarray,
                    extra_indices: np.ndarray, seed: int) -> Matched:
    """Per class (label order): LAIONet rows drawn down to ``target[c]``; then, class by class, the
    shortfall topped up from the extra rows of that class, skipping rows whose ``laion_index`` is
    already in (a LAION row is used once, whatever its class). One ``RandomState(seed)`` makes
    every draw, so the result is reproducible."""
    rng = np.random.RandomState(seed)
    labels, extra_labels = np.asarray(labels, dtype=np.int64), np.asarray(extra_labels, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    by_class = _positions_by_class(labels, len(target))
    extra_by_class = _positions_by_class(extra_labels, len(target))
    primary = []
    for c, want in enumerate(target.tolist()):
        rows = by_class[c]
        primary.append(rows[rng.choice(len(rows), want, replace=False)] if len(rows) > want else rows)
    taken = set(np.asarray(indices)[np.concatenate(primary)].tolist()) if primary else set()
    extra, short, duplicates = [], {}, 0
    for c, want in enumerate(target.tolist()):
        need = want - len(primary[c])
        if need <= 0:
            continue
        pool = extra_by_class[c]
        fresh = np.asarray([p for p in pool.tolist() if int(extra_indices[p]) not in taken], dtype=np.int64)
        duplicates += len(pool) - len(fresh)
        if len(fresh) > need:
            fresh = fresh[rng.choice(len(fresh), need, replace=False)]
        taken.update(int(extra_indices[p]) for p in fresh.tolist())
        extra.append(fresh)
        if len(fresh) < need:
            short[c] = need - len(fresh)
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return Matched(cat(primary), cat(extra), short, duplicates)


def _positions_by_class(labels: np.ndarray, n_classes: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_classes)]


def img2dataset_row(key: str, shard: str, samples_per_shard: int) -> int:
    """The url_list row of an img2dataset sample: its key is the shard number (as many digits as
    the shard's file name) followed by the position in the shard (``10 ** digits`` per shard)."""
    if not key.isdigit() or len(key) <= len(shard) or not shard.isdigit():
        raise ValueError(f"key {key!r} of shard {shard!r} is not an img2dataset key")
    if key[: len(shard)] != shard:
        raise ValueError(f"key {key!r} is in shard {shard!r} but names shard {key[: len(shard)]!r}")
    position = int(key[len(shard):])
    if position >= samples_per_shard:
        raise ValueError(f"key {key!r}: position {position} in its shard is not below --number_sample_per_shard="
                         f"{samples_per_shard} (give the value img2dataset ran with)")
    return int(shard) * samples_per_shard + position
