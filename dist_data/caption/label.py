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
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..core import distributed
from ..core.blocks import BlockSlice
from ..core.dedup import content_hash
from ..core.errors import BadRowError
from ..core.files import read_json
from ..core.rows import REJECTED, Row, parse_or_reject
from ..core.run import Run
from ..core.stats import Stats
from ..core.write import atomic_open, write_json
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
    """One block's labelled rows (``data``: TSV lines without header, or a table) and what happened
    to each input row."""

    data: Any
    counts: dict[str, Any] = field(default_factory=dict)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    unmatched_examples: list[str] = field(default_factory=list)


def captions_of(rows: Sequence[Row], parse: Callable[[Row], tuple[Any, str | None]], on_bad_rows: str,
                stats: Stats, rejects: list[dict[str, Any]]) -> Iterator[tuple[Row, Any, str]]:
    """``(row, payload, caption)`` of each row with a non-empty caption; ``parse(row)`` gives
    ``(payload, caption)``; bad rows are rejected (or raise) and empty captions dropped, both counted."""
    for row in rows:
        parsed = parse_or_reject(row, parse, on_bad_rows, rejects, stats)
        if parsed is REJECTED:
            continue
        payload, caption = parsed
        if caption is None or not caption.strip():
            stats.add("dropped", reason="empty_caption")
            continue
        yield row, payload, caption


def matched_captions(rows: Sequence[Row], matcher: LemmaMatcher, parse: Callable[[Row], tuple[Any, str | None]],
                     on_bad_rows: str, stats: Stats, rejects: list[dict[str, Any]],
                     unmatched: list[str]) -> Iterator[tuple[Any, str, tuple[int, ...]]]:
    """``(payload, caption, classes)`` of each row whose caption names a class, in input order;
    ``parse(row)`` gives ``(payload, caption)``. Counts ``read``, ``captions_matched``,
    ``classes_per_caption`` and every dropped (``empty_caption``, ``no_class_lemma``) or rejected row."""
    stats.add("read", len(rows))
    for _, payload, caption in captions_of(rows, parse, on_bad_rows, stats, rejects):
        classes = matcher.match(caption)
        if not classes:
            stats.add("dropped", reason="no_class_lemma")
            if len(unmatched) < MAX_SHOWN:
                unmatched.append(caption[:200])
            continue
        stats.add("captions_matched")
        stats.add("classes_per_caption", reason=str(len(classes)))
        yield payload, caption, classes


def block_stats() -> Stats:
    """A labelled block's own counts (cached with the block, added to the run's when it is used: the
    run's stats hold every key from the start, as the label commands declare them)."""
    return Stats()


def label_block(rows: Sequence[Row], matcher: LemmaMatcher, wnids: Sequence[str], caption_key: str,
                filepath_key: str, on_bad_rows: str) -> BlockResult:
    stats = block_stats()
    rejects: list[dict[str, Any]] = []
    out, unmatched = [], []
    for filepath, caption, classes in matched_captions(rows, matcher,
                                                       lambda r: parse_caption(r, caption_key, filepath_key),
                                                       on_bad_rows, stats, rejects, unmatched):
        line = one_line(caption)
        for c in classes:
            out.append((filepath, line, c))
            stats.add("per_class", reason=wnids[c])
    stats.add("kept", len(out))
    return BlockResult(tsv_text(out), stats.counts, rejects, unmatched)


def block_key(rows: Sequence[Row]) -> str:
    """The content of a block's rows: a changed input never reuses a cached block."""
    return content_hash([r.raw if r.raw is not None else json.dumps(r.value, sort_keys=True, default=str)
                         for r in rows])


def block_paths(cache: str, block: int, suffix: str = ".tsv") -> tuple[str, str]:
    """A cached block's rows (``block-NNNNNNN{suffix}``) and its counts (``.json``)."""
    return os.path.join(cache, f"block-{block:07d}{suffix}"), os.path.join(cache, f"block-{block:07d}.json")


def cached_meta(cache: str, block: int, key: str, suffix: str = ".tsv") -> dict[str, Any] | None:
    """The counts of a finished block whose input had content ``key``; None when it must be redone."""
    data_path, meta_path = block_paths(cache, block, suffix)
    meta = read_json(meta_path) if os.path.exists(meta_path) else None
    if not meta or meta.get("key") != key or not os.path.exists(data_path):
        return None
    return meta


def save_meta(cache: str, block: int, key: str, meta: dict[str, Any], write_data: Callable[[str], None],
              suffix: str = ".tsv") -> None:
    """The rows first (``write_data(path)``, atomically), then the counts: the counts mark the block done."""
    data_path, meta_path = block_paths(cache, block, suffix)
    write_data(data_path)
    write_json(meta_path, {"key": key, **meta})


def write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def label_blocks(run: Run, plan: BlockSlice, cache: str, suffix: str, label: Callable[[list[Row]], BlockResult],
                 write_data: Callable[[str, Any], None]) -> tuple[list[dict[str, Any]], list[str]]:
    """Label this rank's blocks: a finished block (same content) is read back from ``cache``, any
    other is labelled (``label(rows)``) and saved (``write_data(path, result.data)``). Adds every block's
    counts to the run's stats and the first unmatched captions of all ranks to its examples; returns
    the rejects and the paths of every block of the run (all ranks'), in order, for rank 0 to join.
    A bad row on any rank stops every rank with its message. Collective."""
    os.makedirs(cache, exist_ok=True)
    rejects: list[dict[str, Any]] = []
    unmatched: list[str] = []
    stats = run.stats
    with stats.stage("label") as rec, distributed.same_error_on_every_rank():
        with run.progress(plan.hi - plan.lo, "label", unit="captions") as bar:
            for b, rows in plan.blocks():
                key = block_key(rows)
                meta = cached_meta(cache, b, key, suffix)
                if meta is None:
                    result = label(rows)
                    meta = {"counts": result.counts, "rejects": result.rejects,
                            "unmatched_examples": result.unmatched_examples}
                    save_meta(cache, b, key, meta, lambda path: write_data(path, result.data), suffix)
                else:
                    stats.add("cached_blocks")
                stats.add_counts(meta["counts"])
                rejects.extend(meta["rejects"])
                unmatched.extend(meta["unmatched_examples"][: max(0, MAX_SHOWN - len(unmatched))])
                rec["rows"] += len(rows)
                bar.update(len(rows))
    shown = [t for part in distributed.all_gather_object(unmatched) for t in part][:MAX_SHOWN]
    if run.info.is_main:
        stats.examples = {"unmatched_captions": shown}
    return rejects, [block_paths(cache, b, suffix)[0] for b in range(-(-plan.n // plan.block_rows))]


def class_counts(run: Run, wnids: Sequence[str]) -> np.ndarray:
    """The rows per class of every rank (the run's ``per_class`` bucket), in the order of ``wnids``.
    Collective."""
    mine = np.asarray([run.stats.counts["per_class"].get(w, 0) for w in wnids], dtype=np.int64)
    return distributed.all_gather_array(mine[None, :]).sum(axis=0)
