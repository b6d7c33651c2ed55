"""Category-triplet steps: picking positives and negatives by category, and what needs a second look.
Pure numpy; the entry point :mod:`dist_data.triplets` reads, embeds, searches and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.errors import BadRowError
from ..core.rows import Row
from ..core.select import PAD_ID, select_negatives

POSITIVES = ("random_same_category", "nearest_same_category")
NEGATIVES = ("random_other_category", "hardest_other_category")


def parse_item(row: Row, text_keys: Sequence[str], category_key: str, join: str) -> tuple[str, str]:
    """``(text, category)``: the text fields joined (empty or null ones left out), the category as text.

    Raises:
        BadRowError: a missing field, a field that is not text, or a missing or empty category.
    """
    value = row.value
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    parts = []
    for key in text_keys:
        if key not in value:
            raise BadRowError(row.source, row.line, f"missing key {key!r} (has {sorted(value)[:8]})")
        field = value[key]
        if isinstance(field, (int, float)) and not isinstance(field, bool) and field == field:
            field = str(field)
        if field is not None and not isinstance(field, str) and field == field:
            raise BadRowError(row.source, row.line, f"{key!r} is {type(field).__name__}, expected text")
        if isinstance(field, str) and field.strip():
            parts.append(" ".join(field.split()))
    category = value.get(category_key)
    if isinstance(category, (int, np.integer)) and not isinstance(category, bool):
        category = str(category)
    if not isinstance(category, str) or not category.strip():
        raise BadRowError(row.source, row.line, f"category {category_key!r} is missing or empty (got {category!r:.40})")
    return join.join(parts), category.strip()


@dataclass(frozen=True)
class Categories:
    """Every item's category, all ranks' items: ``order`` lists item ids grouped by category (ids
    ascending within one), category ``c`` holding ``order[starts[c]:ends[c]]``."""

    ids: np.ndarray  # (N,) sorted item ids
    cats: np.ndarray  # (N,) their category numbers
    order: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray, cats: np.ndarray, n_categories: int) -> "Categories":
        by_id = np.argsort(ids, kind="stable")
        ids, cats = ids[by_id], cats[by_id]
        order = np.lexsort((ids, cats))
        counts = np.bincount(cats, minlength=n_categories)
        ends = np.cumsum(counts)
        return cls(ids, cats, ids[order], ends - counts, ends)

    def category(self, item_ids: np.ndarray) -> np.ndarray:
        return self.cats[np.searchsorted(self.ids, item_ids)]

    def size(self, cats: np.ndarray) -> np.ndarray:
        return self.ends[cats] - self.starts[cats]


def random_same(cats: Categories, anchor_ids: np.ndarray, anchor_cats: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A uniform pick (``u`` in [0, 1) per anchor) among the other items of the anchor's category; -1 if none."""
    start, size = cats.starts[anchor_cats], cats.size(anchor_cats)
    out = np.full(len(anchor_ids), PAD_ID, dtype=np.int64)
    for i, (s, m, a) in enumerate(zip(start.tolist(), size.tolist(), anchor_ids.tolist())):
        if m < 2:
            continue
        members = cats.order[s : s + m]
        me = int(np.searchsorted(members, a))
        r = int(u[i] * (m - 1))
        out[i] = members[r if r < me else r + 1]
    return out


def random_other(cats: Categories, anchor_cats: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A uniform pick among the items of every other category; -1 if there are none."""
    start, size = cats.starts[anchor_cats], cats.size(anchor_cats)
    others = len(cats.order) - size
    r = np.floor(u * others).astype(np.int64)
    at = np.where(r < start, r, r + size)
    return np.where(others > 0, cats.order[np.minimum(at, len(cats.order) - 1)], PAD_ID)


def nearest_same(anchor_ids: np.ndarray, anchor_cats: np.ndarray, nbr_ids: np.ndarray, nbr_cats: np.ndarray
                 ) -> np.ndarray:
    """The first neighbour (canonical order) in the anchor's category other than the anchor; -1 if none."""
    ok = (nbr_ids != PAD_ID) & (nbr_ids != anchor_ids[:, None]) & (nbr_cats == anchor_cats[:, None])
    first = ok.argmax(axis=1)
    return np.where(ok.any(axis=1), nbr_ids[np.arange(len(nbr_ids)), first], PAD_ID)


def hardest_other(anchor_ids: np.ndarray, anchor_cats: np.ndarray, nbr_ids: np.ndarray, nbr_scores: np.ndarray,
                  nbr_cats: np.ndarray, positive_score: np.ndarray, **margins: Any
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The most similar item of another category that passes ``mine``'s margin and score rules
    (:func:`select_negatives` with the anchor's own category as its positives)."""
    same = [np.append(nbr_ids[i][nbr_cats[i] == anchor_cats[i]], anchor_ids[i]) for i in range(len(anchor_ids))]
    neg_ids, neg_scores, removed = select_negatives(nbr_ids, nbr_scores, same, positive_score, num_negatives=1,
                                                    **margins)
    removed["same_category"] = removed.pop("positive", 0)
    return neg_ids[:, 0], neg_scores[:, 0], removed


def review(positive_score: np.ndarray, negative_score: np.ndarray, positive_ratio: np.ndarray,
           negative_ratio: np.ndarray, min_margin: float, max_char_ratio: float) -> list[str]:
    """Why each triplet needs a second look ("" when it does not): the negative scores at least the
    positive (``negative_closer``) or within ``min_margin`` of it (``small_margin``); the negative's
    text is nearly the anchor's (``negative_text_near_anchor``: a duplicate filed in another category?);
    the positive's text is nearly the anchor's (``positive_text_near_anchor``: teaches nothing)."""
    margin = positive_score - negative_score
    out = []
    for m, pr, nr in zip(margin.tolist(), positive_ratio.tolist(), negative_ratio.tolist()):
        why = ["negative_closer" if m <= 0 else "small_margin"] if m < min_margin else []
        if nr >= max_char_ratio:
            why.append("negative_text_near_anchor")
        if pr >= max_char_ratio:
            why.append("positive_text_near_anchor")
        out.append(",".join(why))
    return out
