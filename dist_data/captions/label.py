"""Caption -> ImageNet class labelling (YFCC15M-Cls, CC12M-Cls; LAIONet's rule with ``unique_lemmas``).

Every caption is matched against the lemmas of the 1,000 ILSVRC synsets (:mod:`.lemmas`); a caption
matching k classes gives k rows ``(filepath, caption, label)``, in input order and, within a
caption, in label order. Rows are processed in global blocks of ``block_rows`` (each rank a
contiguous run of blocks); each block's rows and counts are cached, so a killed run resumes at its
first missing block, and rank 0 joins the blocks in order: the table does not depend on the number
of ranks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..core.dedup import content_hash
from ..core.io import BadRowError, Row, atomic_open, read_json, write_json
from ..core.pipeline import REJECTED, Stats, parse_or_reject
from .lemmas import LemmaMatcher
from .tables import one_line, tsv_text

COLUMNS = ("filepath", "caption", "label")
MAX_SHOWN = 10  # unmatched captions shown in stats.json (the first ones, in input order)


def parse_caption(row: Row, caption_key: str, filepath_key: str) -> tuple[str, str | None]:
    """``(filepath, caption)`` of a row; a null caption is None (dropped as empty, not an error)."""
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    value = row.value
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    for key in (filepath_key, caption_key):
        if key not in value:
            raise BadRowError(row.source, row.line, f"missing key {key!r} (has {sorted(value)[:8]})")
    filepath, caption = value[filepath_key], value[caption_key]
    if not isinstance(filepath, str) or not filepath.strip():
        raise BadRowError(row.source, row.line, f"{filepath_key!r} must be a non-empty string, got {filepath!r:.60}")
    if caption is not None and not isinstance(caption, str):
        raise BadRowError(row.source, row.line, f"{caption_key!r} is {type(caption).__name__}, expected a string")
    return filepath, caption


@dataclass
class BlockResult:
    """One block's labelled rows (TSV lines, no header) and what happened to each input row."""

    tsv: str
    counts: dict[str, Any] = field(default_factory=dict)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    unmatched_examples: list[str] = field(default_factory=list)


def label_block(rows: Sequence[Row], matcher: LemmaMatcher, wnids: Sequence[str], caption_key: str,
                filepath_key: str, on_bad_rows: str) -> BlockResult:
    stats = Stats.with_keys("read", "captions_matched", "rows_out", buckets=("dropped", "rejected", "per_class",
                                                                           "classes_per_caption"))
    rejects: list[dict[str, Any]] = []
    out, unmatched = [], []
    for row in rows:
        parsed = parse_or_reject(row, lambda r: parse_caption(r, caption_key, filepath_key), on_bad_rows, rejects,
                                 stats)
        if parsed is REJECTED:
            continue
        filepath, caption = parsed
        if caption is None or not caption.strip():
            stats.add("dropped", reason="empty_caption")
            continue
        classes = matcher.match(caption)
        if not classes:
            stats.add("dropped", reason="no_class_lemma")
            if len(unmatched) < MAX_SHOWN:
                unmatched.append(caption[:200])
            continue
        stats.add("captions_matched")
        stats.add("classes_per_caption", reason=str(len(classes)))
        line = one_line(caption)
        for c in classes:
            out.append((filepath, line, c))
            stats.add("per_class", reason=wnids[c])
    stats.add("read", len(rows))
    stats.add("rows_out", len(out))
    return BlockResult(tsv_text(out), stats.counts, rejects, unmatched)


def block_key(rows: Sequence[Row]) -> str:
    """The content of a block's rows: a changed input never reuses a cached block."""
    return content_hash([r.raw if r.raw is not None else json.dumps(r.value, sort_keys=True, default=str)
                         for r in rows])


def block_paths(cache: str, block: int) -> tuple[str, str]:
    return os.path.join(cache, f"block-{block:07d}.tsv"), os.path.join(cache, f"block-{block:07d}.json")


def cached_block(cache: str, block: int, key: str) -> BlockResult | None:
    tsv_path, meta_path = block_paths(cache, block)
    meta = read_json(meta_path) if os.path.exists(meta_path) else None
    if not meta or meta.get("key") != key or not os.path.exists(tsv_path):
        return None
    return BlockResult("", meta["counts"], meta["rejects"], meta["unmatched_examples"])


def save_block(cache: str, block: int, key: str, result: BlockResult) -> None:
    """The rows first, then the counts: the counts file marks the block done."""
    tsv_path, meta_path = block_paths(cache, block)
    with atomic_open(tsv_path) as f:
        f.write(result.tsv)
    write_json(meta_path, {"key": key, "counts": result.counts, "rejects": result.rejects,
                           "unmatched_examples": result.unmatched_examples})


def per_class_array(per_class: dict[str, int], wnids: Sequence[str]) -> np.ndarray:
    return np.asarray([per_class.get(w, 0) for w in wnids], dtype=np.int64)
