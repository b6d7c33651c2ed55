"""Stages shared by every entry point: the run folder, stats, reading a shard, global dedup,
block embedding, and publishing the merged outputs.

The output folder of a run::

    args.json                 the flags (a rerun with other flags is refused)
    cache/emb-<key>/*.npy     per-block embeddings (resume)
    parts/part-00000.jsonl    rank-local results, merged in rank order = input order
    parts/*.done              per-rank completion markers
    <result>.jsonl[.gz]       the merged result
    rejects.jsonl             bad rows set aside with --on_bad_rows=skip (file, line, reason, row)
    stats.json                totals and per-rank counts and stage timings
    _SUCCESS                  written last
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import distributed
from .embed import BlockEmbedder
from .keys import global_first
from .io import (BadRowError, Catalog, InputError, Row, build_catalog, get_texts, merge_files, resolve_sources,
                 write_json, write_lines)
from .log import logger

# Flags that do not change the result; a rerun may differ in these.
NON_RESULT_FLAGS = {"output_dir", "overwrite", "progress", "timeout_minutes"}


class RunConflictError(RuntimeError):
    """The output folder holds another run's results."""


def fmt_rows(n: float) -> str:
    return f"{int(n):,}"


# ---------------------------------------------------------------- stats

@dataclass
class Stats:
    """Counts and stage timings of one rank; :meth:`merge` makes the run's totals."""

    counts: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, key: str, n: int = 1, reason: str | None = None) -> None:
        if reason is None:
            self.counts[key] = self.counts.get(key, 0) + int(n)
        else:
            bucket = self.counts.setdefault(key, {})
            bucket[reason] = bucket.get(reason, 0) + int(n)

    @contextmanager
    def stage(self, name: str, rows: int | None = None, log: bool = True) -> Iterator[dict[str, float]]:
        """Time a stage; set ``rec["rows"]`` inside when the count is known only at the end."""
        rec: dict[str, float] = {"rows": rows or 0}
        start = time.perf_counter()
        yield rec
        rec["seconds"] = round(time.perf_counter() - start, 4)
        rec["rows_per_s"] = round(rec["rows"] / rec["seconds"], 1) if rec["seconds"] > 0 else 0.0
        self.stages[name] = rec
        if log:
            logger.info("%-7s %s rows in %.1f s (%s rows/s)", name, fmt_rows(rec["rows"]), rec["seconds"],
                        fmt_rows(rec["rows_per_s"]))

    def record(self, name: str, rows: int, seconds: float) -> None:
        """A stage timed elsewhere (e.g. the index build inside the search)."""
        self.stages[name] = {"rows": rows, "seconds": round(seconds, 4),
                             "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "stages": self.stages}

    @staticmethod
    def merge(per_rank: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Totals: counts summed; a stage's seconds are the slowest rank's (wall), rows summed."""
        counts: dict[str, Any] = {}
        for rank_stats in per_rank:
            for key, value in rank_stats["counts"].items():
                if isinstance(value, dict):
                    bucket = counts.setdefault(key, {})
                    for reason, n in value.items():
                        bucket[reason] = bucket.get(reason, 0) + n
                else:
                    counts[key] = counts.get(key, 0) + value
        stages: dict[str, dict[str, float]] = {}
        for rank_stats in per_rank:
            for name, rec in rank_stats["stages"].items():
                total = stages.setdefault(name, {"rows": 0, "seconds": 0.0})
                total["rows"] += rec["rows"]
                total["seconds"] = max(total["seconds"], rec["seconds"])
        for rec in stages.values():
            rec["rows_per_s"] = round(rec["rows"] / rec["seconds"], 1) if rec["seconds"] > 0 else 0.0
        return {"counts": counts, "stages": stages, "ranks": list(per_rank)}


# ---------------------------------------------------------------- run folder

class RunDir:
    """The output folder: args identity, part files, markers, caches, final outputs."""

    def __init__(self, path: str, args: dict[str, Any], result_name: str):
        self.path = path
        self.args = {k: v for k, v in sorted(args.items()) if k not in NON_RESULT_FLAGS}
        self.result_name = result_name
        self.parts_dir = os.path.join(path, "parts")
        self.cache_dir = os.path.join(path, "cache")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def part(self, name: str, rank: int) -> str:
        return os.path.join(self.parts_dir, f"{name}-{rank:05d}.jsonl")

    def prepare(self, overwrite: bool, is_main: bool) -> None:
        """Refuse a folder that holds another run's results; create the folders (rank 0)."""
        conflict = None
        if is_main:
            args_path = self.file("args.json")
            if os.path.exists(args_path):
                with open(args_path, encoding="utf-8") as f:
                    old = json.load(f)
                diff = {k: (old.get(k), v) for k, v in self.args.items() if old.get(k) != v}
                diff.update({k: (v, None) for k, v in old.items() if k not in self.args})
                if diff and not overwrite:
                    shown = ", ".join(f"{k}={new!r} (was {was!r})" for k, (was, new) in sorted(diff.items())[:4])
                    conflict = (f"output dir {self.path} holds another run's results ({shown}); "
                                f"use another --output_dir or pass --overwrite=True")
                elif diff:
                    logger.warning("--overwrite: removing the previous run in %s", self.path)
                    shutil.rmtree(self.path)
            elif os.path.isdir(self.path) and os.listdir(self.path) and not overwrite:
                conflict = (f"output dir {self.path} is not empty and holds no args.json of a dist_data run; "
                            f"use another --output_dir or pass --overwrite=True")
            if conflict is None:
                os.makedirs(self.parts_dir, exist_ok=True)
                os.makedirs(self.cache_dir, exist_ok=True)
        conflict = distributed.broadcast_object(conflict)
        if conflict:
            raise RunConflictError(conflict)

    def write_args(self) -> None:
        write_json(self.file("args.json"), self.args)

    def is_complete(self) -> bool:
        return os.path.exists(self.file("_SUCCESS"))

    def mark_part_done(self, rank: int, world_size: int) -> None:
        write_json(self._marker(rank, world_size), {"rank": rank, "world_size": world_size})

    def _marker(self, rank: int, world_size: int) -> str:
        return os.path.join(self.parts_dir, f"part-{rank:05d}-of-{world_size:05d}.done")


# ---------------------------------------------------------------- reading

def sample_positions(total: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Global ids to process: all rows, or a seeded sample of ``max_rows`` of them in input order."""
    if not max_rows or max_rows >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=max_rows, replace=False)).astype(np.int64)


@dataclass
class Shard:
    """This rank's readable rows: their positions (index into the processed rows) and parsed values."""

    positions: np.ndarray  # (n,) int64
    gids: np.ndarray  # (n,) int64 global line ids
    values: list[Any]  # what ``parse`` returned for each row
    records: list[str]  # each row as written in the output
    rejects: list[dict[str, Any]]
    n_read: int
    lo: int = 0  # this rank's slice [lo, hi) of the processed rows
    hi: int = 0
    n_processed: int = 0  # processed rows on all ranks

    def column(self, j: int) -> list[Any]:
        return [v[j] for v in self.values]


Parse = Callable[[Row], Any]
REJECTED = object()


def reject_reason(reason: str) -> str:
    """The kind of a bad row, for counting: its reason without the details after "(" or ":"."""
    return reason.split(" (")[0].split(":")[0]


def parse_or_reject(row: Row, parse: Parse, on_bad_rows: str, rejects: list[dict[str, Any]], stats: Stats) -> Any:
    """``parse(row)``; a bad row raises (``on_bad_rows='error'``) or is set aside and counted (:data:`REJECTED`)."""
    try:
        return parse(row)
    except BadRowError as e:
        if on_bad_rows == "error":
            raise
        rejects.append({"file": row.source, "line": row.line, "reason": e.reason,
                        "row": row.raw if row.raw is not None else row.value})
        stats.add("rejected", reason=reject_reason(e.reason))
        return REJECTED


def read_shard(catalog: Catalog, gids: np.ndarray, first_position: int, parse: Parse, on_bad_rows: str,
               stats: Stats) -> Shard:
    """Read rows ``gids`` (this rank's slice), parse and check each, set aside or raise on bad ones.

    Raises:
        BadRowError: with ``on_bad_rows='error'``, for the first bad row (file and line named).
    """
    positions, good_gids, values, records, rejects = [], [], [], [], []
    n_read = 0
    for n_read, row in enumerate(catalog.read(gids), start=1):
        value = parse_or_reject(row, parse, on_bad_rows, rejects, stats)
        if value is REJECTED:
            continue
        positions.append(first_position + n_read - 1)
        good_gids.append(row.gid)
        values.append(value)
        records.append(row.as_json())
    stats.add("read", n_read)
    return Shard(np.asarray(positions, dtype=np.int64), np.asarray(good_gids, dtype=np.int64), values, records,
                 rejects, n_read)


def read_stage(info: distributed.DistInfo, stats: Stats, dataset: str, split: str, parse: Parse | Sequence[str],
               max_rows: int | None, seed: int, block_rows: int, on_bad_rows: str, name: str = "read") -> Shard:
    """Resolve and count the inputs, sample, and read this rank's block-aligned slice of rows.

    ``parse`` turns a row into its value (or raises :class:`BadRowError`); a list of keys means
    :func:`io.get_texts` of those keys.

    A bad row (with ``on_bad_rows='error'``) or a bad path on any rank stops every rank with the
    same one-line error, before anything is published.
    """
    if not callable(parse):
        keys = list(parse)
        parse = lambda row: get_texts(row, keys)  # noqa: E731
    with stats.stage(name) as rec:
        error, shard = None, None
        try:
            catalog = build_catalog(resolve_sources(dataset, split), info.rank, info.world_size)
            selected = sample_positions(catalog.total, max_rows, seed)
            lo, hi = distributed.shard_range(len(selected), info.rank, info.world_size, unit=block_rows)
            shard = read_shard(catalog, selected[lo:hi], lo, parse, on_bad_rows, stats)
            shard.lo, shard.hi, shard.n_processed = lo, hi, len(selected)
        except (BadRowError, InputError) as e:
            error = e
        distributed.raise_if_any_failed(error)
        rec["rows"] = shard.n_read
        if info.is_main:
            if name == "read":
                stats.add("dropped", catalog.total - len(selected), reason="not_sampled")
                stats.add("input_rows", catalog.total)
            logger.info("%s: %s rows in %d file(s); processing %s on %d rank(s), %s here", name,
                        fmt_rows(catalog.total), len(catalog.sources), fmt_rows(len(selected)), info.world_size,
                        fmt_rows(shard.n_read))
    return shard


# ---------------------------------------------------------------- embedding

def embed_by_block(embedder: BlockEmbedder, positions: np.ndarray, texts: Sequence[str], block_rows: int,
                   role: str, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Embed this rank's rows block by block (a block = ``block_rows`` consecutive positions)."""
    blocks = positions // block_rows
    out = []
    bounds = np.flatnonzero(np.diff(blocks)) + 1
    for chunk in np.split(np.arange(len(positions)), bounds):
        if len(chunk) == 0:
            continue
        out.append(embedder.embed([texts[i] for i in chunk], f"{role}-{int(blocks[chunk[0]]):07d}"))
        if progress:
            progress(len(chunk))
    if not out:
        return embedder.embed([], f"{role}-empty")
    return np.concatenate(out)


@dataclass
class PairEmbeddings:
    """This rank's query vectors (one per row) and the vectors of the documents it holds first."""

    query_emb: np.ndarray  # (n, d) float32
    doc_ids: np.ndarray  # (n,) int64 id of each row's document (position of its first appearance)
    is_first: np.ndarray  # (n,) bool: this row is its document's first appearance
    doc_emb: np.ndarray  # (is_first.sum(), d) float32
    first_docs: list[str]


def query_document_embedders(info: distributed.DistInfo, run: RunDir, *, model_name: str | None, revision: str | None,
                             dtype: str, max_seq_length: int | None, batch_size: int, query_prompt: str,
                             document_prompt: str) -> tuple[BlockEmbedder, BlockEmbedder]:
    """One model, two block embedders (query and document prompts) caching blocks in the run folder."""
    from .embed import load_model, spec_for

    model = load_model(model_name, info.device, dtype, max_seq_length, revision)
    return tuple(BlockEmbedder(model, spec_for(model, model_name, revision, prompt, dtype, batch_size), run.cache_dir)
                 for prompt in (query_prompt, document_prompt))


def count_cache_hits(info: distributed.DistInfo, stats: Stats, run: RunDir, embedders: Sequence[BlockEmbedder]) -> None:
    """Record this rank's blocks served from the cache; rank 0 logs the total (a resumed run)."""
    hits = distributed.all_gather_object(sum(e.cache_hits for e in embedders))
    stats.add("cached_blocks", hits[info.rank])
    if sum(hits) and info.is_main:
        logger.info("embed: %d block(s) served from the cache in %s", sum(hits), run.cache_dir)


def embed_pairs(info: distributed.DistInfo, stats: Stats, run: RunDir, shard: Shard, queries: Sequence[str],
                documents: Sequence[str], *, model_name: str | None, revision: str | None, dtype: str,
                max_seq_length: int | None, batch_size: int, block_rows: int, query_prompt: str,
                document_prompt: str, show_progress: bool) -> PairEmbeddings:
    """The embed stage of a pairs pipeline: every query, and each distinct document once."""
    from .log import progress

    with stats.stage("embed") as rec:
        doc_ids = global_first(shard.positions, documents)
        is_first = doc_ids == shard.positions
        embedders = query_document_embedders(info, run, model_name=model_name, revision=revision, dtype=dtype,
                                             max_seq_length=max_seq_length, batch_size=batch_size,
                                             query_prompt=query_prompt, document_prompt=document_prompt)
        first_docs = [documents[i] for i in np.flatnonzero(is_first)]
        rec["rows"] = len(queries) + len(first_docs)
        with progress(rec["rows"], "embed", show_progress and info.is_main) as bar:
            query_emb = embed_by_block(embedders[0], shard.positions, queries, block_rows, "query", bar.update)
            doc_emb = embed_by_block(embedders[1], shard.positions[is_first], first_docs, block_rows, "document",
                                     bar.update)
        count_cache_hits(info, stats, run, embedders)
    return PairEmbeddings(query_emb, doc_ids, is_first, doc_emb, first_docs)


def open_run(info: distributed.DistInfo, output_dir: str, args: dict[str, Any], result_name: str,
             overwrite: bool) -> tuple[RunDir, dict[str, Any] | None]:
    """The run folder, checked; with the stats of a complete run with the same flags (then nothing to do)."""
    run = RunDir(output_dir, args, result_name)
    run.prepare(overwrite, info.is_main)
    if not run.is_complete():
        return run, None
    if info.is_main:
        logger.info("%s is already complete (same flags); nothing to do", output_dir)
    with open(run.file("stats.json"), encoding="utf-8") as f:
        return run, json.load(f)


def common_flag_problems(batch_size: Any, max_rows: Any, on_bad_rows: Any, dtype: Any) -> list[str]:
    """Checks of the flags every pairs entry point takes; one message per bad flag."""
    problems = []
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        problems.append(f"--batch_size must be an integer >= 1, got {batch_size!r}")
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        problems.append(f"--max_rows must be an integer >= 1, got {max_rows!r}")
    if on_bad_rows not in ("error", "skip"):
        problems.append(f"--on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
    if dtype not in ("float32", "float16", "bfloat16"):
        problems.append(f"--dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return problems


def run_entry_point(problems: Sequence[str], timeout_minutes: int, body: Callable[[distributed.DistInfo], Any]) -> None:
    """Init the process group and logging, run ``body(info)``; user errors exit 2 with one line (rank 0)."""
    import sys

    from .log import setup_logging

    with distributed.process_group(timeout_minutes) as info:
        setup_logging(info.rank, info.local_rank, info.world_size)
        try:
            if problems:
                raise ValueError("; ".join(problems))
            body(info)
        except (ValueError, InputError, BadRowError, RunConflictError) as e:
            if info.is_main:
                logger.error("%s", e)
            sys.exit(2)


# ---------------------------------------------------------------- publishing

def write_parts(run: RunDir, rank: int, result_lines: Sequence[str], ids: Sequence[int] | None,
                rejects: Sequence[dict[str, Any]]) -> None:
    """This rank's result, rejects and (when given) kept ids, each atomically."""
    write_lines(run.part("part", rank), result_lines)
    write_lines(run.part("rejects", rank), (json.dumps(r, ensure_ascii=False, default=str) for r in rejects))
    if ids is not None:
        write_lines(run.part("ids", rank), (str(i) for i in ids))


def merge_outputs(run: RunDir, rank: int, world_size: int, stats: Stats, gzip_output: bool,
                  write_ids: bool, merge_result: Callable[[], str] | None = None) -> dict[str, Any] | None:
    """After every rank wrote its parts, rank 0 merges them in rank (= input) order.

    ``merge_result`` replaces the concatenation of the jsonl parts for results that are not jsonl
    (it returns the result's name in the run folder).

    Returns the run's merged stats on rank 0 (also written to stats.json), None elsewhere.
    """
    stats_part = os.path.join(run.parts_dir, f"stats-{rank:05d}.json")
    write_json(stats_part, stats.to_dict())
    run.mark_part_done(rank, world_size)
    distributed.barrier()
    merged = None
    if rank == 0:
        with stats.stage("merge") as rec:
            if merge_result is not None:
                result = merge_result()
            else:
                result = run.result_name + (".gz" if gzip_output else "")
                merge_files([run.part("part", r) for r in range(world_size)], run.file(result), gzip_output)
            merge_files([run.part("rejects", r) for r in range(world_size)], run.file("rejects.jsonl"))
            if write_ids:
                kept_ids: list[int] = []
                for r in range(world_size):
                    with open(run.part("ids", r), encoding="utf-8") as f:
                        kept_ids.extend(int(line) for line in f)
                write_json(run.file("ids_to_keep.json"), kept_ids)
            per_rank = []
            for r in range(world_size):
                with open(os.path.join(run.parts_dir, f"stats-{r:05d}.json"), encoding="utf-8") as f:
                    per_rank.append(json.load(f))
            rec["rows"] = sum(p["counts"].get("kept", 0) for p in per_rank)
        per_rank[0] = stats.to_dict()
        merged = Stats.merge(per_rank)
        merged["world_size"] = world_size
        merged["outputs"] = {"result": result, "rejects": "rejects.jsonl"}
        write_json(run.file("stats.json"), merged)
        with open(run.file("_SUCCESS"), "w", encoding="utf-8"):
            pass
    distributed.barrier()
    return merged
