"""Category triplets for a catalogue embedder: (anchor, positive of the same category, negative of another).

Each distinct (category, text) item is an anchor once; its text is the ``--text_keys`` fields joined.
Positives: a seeded random item of the same category, or the nearest one; negatives: a seeded
random item of another category, or the most similar one that passes ``mine``'s margin and score
rules. Picks depend on the items and ``--seed`` alone, so the file is the same for any number of ranks.

    torchrun --nproc-per-node=8 -m dist_data.triplets --dataset=goods.csv --text_keys=title,description \\
        --category_key=parentname --positives=nearest_same_category --negatives=hardest_other_category \\
        --relative_margin=0.05 --output_dir=DIR
    python -m dist_data.triplets --dataset=goods.parquet --text_keys=title --category_key=category --output_dir=DIR

Outputs in ``--output_dir``: ``triplets.jsonl`` (``anchor, positive, negative``: sentence-transformers'
triplet columns, nothing else, so it trains as it is), ``review.csv`` (per triplet: its line in
triplets.jsonl, the rows it came from, categories, cosine anchor-positive and anchor-negative, their
margin, character-level likeness of each to the anchor, ``needs_review`` and why; ambiguous first:
smallest margin first), ``scores.png``, ``stats.json``, ``rejects.jsonl``, ``args.json``.
"""

from __future__ import annotations

import csv
import heapq
import json
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .product import triplets as steps
from .product.names import char_ratio
from .core import distributed
from .core.cli import at_least, cosine, flag, non_empty, one_of
from .core.paths import INPUT_SPEC
from .core.write import atomic_open
from .core.files import read_lines
from .core.keys import KeyedVectors, Owners, fetch_held, global_first
from .core.log import logger
from .core.options import INDEX_HELP, INDEX_MODES, IndexOptions, ModelOptions, RunOptions
from .core.collection import CollectionOptions
from .core.run import Output, Run, run_main
from .core.select import PAD_ID, exact_scores, seeded_uniform

RESULT_NAME = "triplets.jsonl"
REVIEW_NAME = "review.csv"
REVIEW_COLUMNS = ("triplet", "anchor_row", "positive_row", "negative_row", "category", "negative_category",
                  "positive_score", "negative_score", "margin", "positive_char_ratio", "negative_char_ratio",
                  "needs_review", "review_reason")


@dataclass(frozen=True, kw_only=True)
class TripletsOptions(RunOptions, ModelOptions, IndexOptions, CollectionOptions):
    """(anchor, positive, negative) triplets by product category."""

    dataset_required = True  # checked with the collection flags: --dataset, or --collection
    counts = ("items", "categories", "needs_review")
    count_buckets = ("negative_candidates_removed", "review_reason")
    summary = ("items", "categories", "needs_review")
    kept_unit = "triplets"

    index: str = flag("sharded", INDEX_HELP, one_of(*INDEX_MODES))
    dataset: str | None = flag(None, "items: csv/tsv/parquet/jsonl file, folder, glob or comma list (required unless "
                               "--collection)", non_empty, path=INPUT_SPEC)
    text_keys: str = flag("title,description", "comma list of the text fields joined into an item's text", non_empty)
    join: str = flag(" ", "what joins the text fields")
    category_key: str = flag("category", "the category field", non_empty)
    positives: str = flag("random_same_category", ", ".join(steps.POSITIVES), one_of(*steps.POSITIVES))
    negatives: str = flag("hardest_other_category", ", ".join(steps.NEGATIVES), one_of(*steps.NEGATIVES))
    depth: int = flag(100, "neighbours searched per anchor for the nearest / hardest picks", at_least(2))
    max_score: float | None = flag(None, "hardest negative: drop candidates scoring above this", cosine)
    min_score: float | None = flag(None, "hardest negative: drop candidates scoring below this", cosine)
    absolute_margin: float | None = flag(None, "hardest negative: drop candidates with score + margin > the "
                                         "anchor-positive score")
    relative_margin: float | None = flag(None, "hardest negative: drop candidates with score > positive - "
                                         "|positive| * margin")
    review_margin: float = flag(0.05, "flag triplets whose anchor-positive score beats anchor-negative by less")
    review_char_ratio: float = flag(0.9, "flag triplets whose positive or negative text is this alike to the "
                                    "anchor's, character by character")

    def result_file(self) -> str:
        return RESULT_NAME

    def side_outputs(self) -> list[str]:
        return [REVIEW_NAME]

    def problems(self) -> list[str]:
        if not [k for k in self.text_keys.split(",") if k.strip()]:
            return ["--text_keys names no field"]
        return []

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.text_keys.split(",") if k.strip()]


def run_triplets(info: distributed.DistInfo, opts: TripletsOptions, run: Run) -> dict | None:
    """The triplets pipeline on this rank; returns the merged stats on rank 0."""
    stats = run.stats
    shard = run.read(lambda row: steps.parse_item(row, opts.keys, opts.category_key, opts.join))
    run.begin()

    texts, categories = shard.column(0), shard.column(1)
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    stats.add("dropped", int((~has_text).sum()), reason="empty_text")
    rep = global_first(shard.positions[has_text], [f"{c}\t{t}" for c, t, ok in zip(categories, texts, has_text) if ok])
    first = np.zeros(len(texts), dtype=bool)
    first[np.flatnonzero(has_text)[rep == shard.positions[has_text]]] = True
    stats.add("dropped", int(has_text.sum() - first.sum()), reason="duplicate_item")
    rows = np.flatnonzero(first)
    ids, gids = shard.positions[rows], shard.gids[rows]
    texts = [texts[i] for i in rows]
    names = sorted(set().union(*distributed.all_gather_object(sorted({categories[i] for i in rows}))))
    number = {c: i for i, c in enumerate(names)}
    my_cats = np.asarray([number[categories[i]] for i in rows], dtype=np.int64)
    cats = steps.Categories.of(distributed.all_gather_array(ids), distributed.all_gather_array(my_cats), len(names))
    stats.add("items", len(ids))
    stats.add("categories", len(names) if info.is_main else 0)
    if info.is_main and len(names) < 2:
        logger.warning("one category only (%s): there are no negatives", names[0] if names else "none")

    with run.embed(len(ids)) as embed:
        emb = embed(ids, texts, "item")
    owners = Owners.gather([(shard.lo, shard.hi)])
    vectors = KeyedVectors(ids, emb)

    searched = opts.positives == "nearest_same_category" or opts.negatives == "hardest_other_category"
    if searched:
        nbr_scores, nbr_ids, _ = run.search(emb, emb, ids, opts.depth, unit="items")
        nbr_cats = np.where(nbr_ids == PAD_ID, -1, cats.category(np.maximum(nbr_ids, 0)))

    def score(other: np.ndarray) -> np.ndarray:
        """Exact cosine of each anchor with an item of any rank (collective)."""
        got = vectors.lookup(np.maximum(other, 0), owners)
        return np.where(other == PAD_ID, -np.inf, exact_scores(emb, got, np.arange(len(other))[:, None])[:, 0])

    with stats.stage("pick", rows=len(ids)):
        if opts.positives == "random_same_category":
            positive = steps.random_same(cats, ids, my_cats, seeded_uniform(ids, opts.seed))
        else:
            positive = steps.nearest_same(ids, my_cats, nbr_ids, nbr_cats)
        pos_score = score(positive)
        if opts.negatives == "random_other_category":
            negative = steps.random_other(cats, my_cats, seeded_uniform(ids, opts.seed + 1_000_003))
            neg_score = score(negative)
        else:
            negative, _, removed = steps.hardest_other(
                ids, my_cats, nbr_ids, nbr_scores, nbr_cats, pos_score, max_score=opts.max_score,
                min_score=opts.min_score, absolute_margin=opts.absolute_margin, relative_margin=opts.relative_margin)
            for rule, n in removed.items():
                stats.add("negative_candidates_removed", n, reason=rule)
            neg_score = score(negative)
        no_pos, no_neg = positive == PAD_ID, (negative == PAD_ID) & (positive != PAD_ID)
        stats.add("dropped", int(no_pos.sum()), reason="no_positive" if opts.positives == "random_same_category"
                  else f"no_same_category_item_in_top_{opts.depth}")
        stats.add("dropped", int(no_neg.sum()), reason="no_negative" if opts.negatives == "random_other_category"
                  else f"no_negative_in_top_{opts.depth}")
        keep = (positive != PAD_ID) & (negative != PAD_ID)

    # the texts and rows of positives and negatives held by other ranks
    picks = np.concatenate([positive[keep], negative[keep]])
    pick_texts, pick_gids = fetch_held(picks, owners, ids, texts, gids)
    n = int(keep.sum())
    kept = np.flatnonzero(keep)
    a_texts = [texts[i] for i in kept]
    p_texts, n_texts = pick_texts[:n], pick_texts[n:]
    p_ratio = np.array([char_ratio(a, p) for a, p in zip(a_texts, p_texts)])
    n_ratio = np.array([char_ratio(a, b) for a, b in zip(a_texts, n_texts)])
    reasons = steps.review(pos_score[keep], neg_score[keep], p_ratio, n_ratio, opts.review_margin,
                           opts.review_char_ratio)
    offset = distributed.count_before(n)
    stats.add("kept", n)  # the rows dropped are counted above, by why
    stats.add("needs_review", sum(bool(r) for r in reasons))
    for r in reasons:
        for why in filter(None, r.split(",")):
            stats.add("review_reason", reason=why)
    neg_cats = cats.category(negative[keep]) if n else np.zeros(0, np.int64)
    review_rows = [{"triplet": offset + j, "anchor_row": int(gids[i]), "positive_row": int(pick_gids[j]),
                    "negative_row": int(pick_gids[n + j]), "category": names[my_cats[i]],
                    "negative_category": names[neg_cats[j]], "positive_score": float(pos_score[i]),
                    "negative_score": float(neg_score[i]), "margin": float(pos_score[i] - neg_score[i]),
                    "positive_char_ratio": float(p_ratio[j]), "negative_char_ratio": float(n_ratio[j]),
                    "needs_review": bool(reasons[j]), "review_reason": reasons[j]}
                   for j, i in enumerate(kept)]
    review_rows.sort(key=_review_key)
    run.report_scores(f"dist_data.triplets: {opts.positives}, {opts.negatives}",
                      {"positive_score": pos_score[keep], "negative_score": neg_score[keep],
                       "margin": pos_score[keep] - neg_score[keep]},
                      [("anchor-positive vs anchor-negative", ["positive_score", "negative_score"], "cosine"),
                       ("margin (positive - negative)", ["margin"], "cosine")])
    run.write_parts((json.dumps({"anchor": a, "positive": p, "negative": q}, ensure_ascii=False)
                     for a, p, q in zip(a_texts, p_texts, n_texts)), shard.rejects,
                    review=(json.dumps(r, ensure_ascii=False) for r in review_rows))
    reviews = [run.part("review", r) for r in range(info.world_size)]
    return run.merge(outputs=[Output(REVIEW_NAME, write=lambda path: _write_review(reviews, path))])


def _review_key(row: dict) -> tuple:
    """Ambiguous first: smallest margin first, then triplet order."""
    return (row["margin"], row["triplet"])


def _write_review(parts: list[str], path: str) -> None:
    """review.csv: the ranks' sorted parts merged (streamed)."""
    with atomic_open(path) as f:
        out = csv.DictWriter(f, fieldnames=REVIEW_COLUMNS, lineterminator="\n")
        out.writeheader()
        out.writerows(heapq.merge(*((json.loads(line) for line in read_lines([p])) for p in parts), key=_review_key))


COMMANDS = {None: (TripletsOptions, run_triplets)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.triplets --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.triplets", argv)


if __name__ == "__main__":
    main()
