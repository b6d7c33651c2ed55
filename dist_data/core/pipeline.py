"""Stages shared by every entry point: stats, reading a shard, global dedup, block embedding,
opening the run folder (its layout and rerun policy: :mod:`dist_data.core.rundir`), the options
shared by the verbs, and publishing the merged outputs (rank-local parts merged in rank order =
input order, ``stats.json``, ``rejects.jsonl``, ``_SUCCESS`` last).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import distributed
from .cli import CommonOptions, Options, at_least, flag, non_empty, one_of, required
from .paths import OUTPUT_DIR
from .embed import DEFAULT_MODEL, BlockEmbedder
from .io import (BadRowError, Catalog, InputError, Row, build_catalog, get_texts, merge_files, read_lines,
                 resolve_sources, write_json, write_json_list, write_lines)
from .keys import global_first
from .log import logger
from .rundir import RunConflictError, RunDir, io_failure, release_held_locks


# contrastors' filter_rows.py reads every ``ids_to_keep_*.json`` of a folder (one per writer)
IDS_NAME = "ids_to_keep_0.json"


def fmt_rows(n: float) -> str:
    return f"{int(n):,}"


# ---------------------------------------------------------------- stats

def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB): each rank's is in stats.json ``ranks``."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


RUN_SECTIONS = ("scores", "index", "examples")  # one value for the whole run (not per rank)


@dataclass
class Stats:
    """Counts and stage timings of one rank; :meth:`merge` makes the run's totals."""

    counts: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)  # quantile tables over all ranks (set on rank 0)
    index: dict[str, Any] = field(default_factory=dict)  # the index used, and its recall when approximate
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few rows of a kind, to look at (set on rank 0)

    @classmethod
    def with_keys(cls, *keys: str, buckets: Sequence[str] = ()) -> "Stats":
        """Stats whose counts start at zero for ``keys`` (and ``{}`` for ``buckets``), so that every
        rank and every run has the same keys, whatever happened."""
        return cls(counts={**{k: 0 for k in keys}, **{b: {} for b in buckets}})

    def add(self, key: str, n: int = 1, reason: str | None = None) -> None:
        if reason is None:
            self.counts[key] = self.counts.get(key, 0) + int(n)
        else:
            bucket = self.counts.setdefault(key, {})
            bucket[reason] = bucket.get(reason, 0) + int(n)

    def add_counts(self, counts: dict[str, Any]) -> None:
        """Add another ``counts`` (another rank's, a cached block's): numbers summed, buckets by reason."""
        for key, value in counts.items():
            if isinstance(value, dict):
                self.counts.setdefault(key, {})  # an empty bucket stays a key
                for reason, n in value.items():
                    self.add(key, n, reason=reason)
            else:
                self.add(key, value)

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
        return {"counts": self.counts, "stages": self.stages, "peak_rss_mib": peak_rss_mib(),
                **{name: getattr(self, name) for name in RUN_SECTIONS if getattr(self, name)}}

    @staticmethod
    def merge(per_rank: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Totals: counts summed; a stage's seconds are the slowest rank's (wall), rows summed."""
        total = Stats()
        for rank_stats in per_rank:
            total.add_counts(rank_stats["counts"])
        counts = total.counts
        stages: dict[str, dict[str, float]] = {}
        for rank_stats in per_rank:
            for name, rec in rank_stats["stages"].items():
                total = stages.setdefault(name, {"rows": 0, "seconds": 0.0})
                total["rows"] += rec["rows"]
                total["seconds"] = max(total["seconds"], rec["seconds"])
        for rec in stages.values():
            rec["rows_per_s"] = round(rec["rows"] / rec["seconds"], 1) if rec["seconds"] > 0 else 0.0
        sections = {name: next((r[name] for r in per_rank if r.get(name)), None) for name in RUN_SECTIONS}
        return {"counts": counts, "stages": stages, **{k: v for k, v in sections.items() if v},
                "ranks": [{k: v for k, v in r.items() if k not in RUN_SECTIONS} for r in per_rank]}


# ---------------------------------------------------------------- reading

def sample_positions(total: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Global ids to process: a seeded sample of ``max_rows`` of them in input order, or None for
    all rows (no list of every id is made)."""
    if not max_rows or max_rows >= total:
        return None
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


def read_shard(rows: Iterator[Row], first_position: int, parse: Parse, on_bad_rows: str, stats: Stats) -> Shard:
    """Read ``rows`` (this rank's slice, streamed), parse and check each, set aside or raise on bad ones.

    Raises:
        BadRowError: with ``on_bad_rows='error'``, for the first bad row (file and line named).
    """
    positions, good_gids, values, records, rejects = [], [], [], [], []
    n_read = 0
    for n_read, row in enumerate(rows, start=1):
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
            n_selected = catalog.total if selected is None else len(selected)
            lo, hi = distributed.shard_range(n_selected, info.rank, info.world_size, unit=block_rows)
            rows = catalog.read_range(lo, hi) if selected is None else catalog.read(selected[lo:hi])
            shard = read_shard(rows, lo, parse, on_bad_rows, stats)
            shard.lo, shard.hi, shard.n_processed = lo, hi, n_selected
        except (BadRowError, InputError) as e:
            error = e
        distributed.raise_if_any_failed(error)
        rec["rows"] = shard.n_read
        if name == "read":  # counted once (rank 0); zero elsewhere, so every rank has the same keys
            stats.add("dropped", catalog.total - n_selected if info.is_main else 0, reason="not_sampled")
            stats.add("input_rows", catalog.total if info.is_main else 0)
        if info.is_main:
            logger.info("%s: %s rows in %d file(s); processing %s on %d rank(s), %s here", name,
                        fmt_rows(catalog.total), len(catalog.sources), fmt_rows(n_selected), info.world_size,
                        fmt_rows(shard.n_read))
    return shard


@dataclass
class BlockSlice:
    """This rank's contiguous slice ``[lo, hi)`` of the processed rows (``n`` on all ranks), in
    blocks of ``block_rows`` consecutive positions: the unit of caching and resume."""

    catalog: Catalog
    selected: np.ndarray | None  # the sampled global ids, or None for every row
    n: int
    lo: int
    hi: int
    block_rows: int

    def blocks(self) -> Iterator[tuple[int, list[Row]]]:
        """``(block, rows)`` of this slice, read in one streaming pass."""
        rows = self.catalog.read(self.selected[self.lo : self.hi]) if self.selected is not None \
            else self.catalog.read_range(self.lo, self.hi)
        block: list[Row] = []
        current = None
        for pos, row in enumerate(rows, start=self.lo):
            b = pos // self.block_rows
            if current is not None and b != current:
                yield current, block
                block = []
            current = b
            block.append(row)
        if block:
            yield current, block


def plan_blocks(info: distributed.DistInfo, stats: Stats, dataset: str, split: str, max_rows: int | None, seed: int,
                block_rows: int, unit: str = "rows") -> BlockSlice:
    """Count the inputs, sample, and give this rank its block-aligned slice (read later, streamed).

    Counts ``input_rows`` and ``dropped.not_sampled`` once (rank 0; zero elsewhere, same keys).
    """
    catalog = build_catalog(resolve_sources(dataset, split), info.rank, info.world_size)
    selected = sample_positions(catalog.total, max_rows, seed)
    n = len(selected) if selected is not None else catalog.total
    lo, hi = distributed.shard_range(n, info.rank, info.world_size, unit=block_rows)
    stats.add("input_rows", catalog.total if info.is_main else 0)
    stats.add("dropped", catalog.total - n if info.is_main else 0, reason="not_sampled")
    if info.is_main:
        logger.info("read: %s %s in %d file(s); %s on %d rank(s), %s here", fmt_rows(catalog.total), unit,
                    len(catalog.sources), fmt_rows(n), info.world_size, fmt_rows(hi - lo))
    return BlockSlice(catalog, selected, n, lo, hi, block_rows)


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


def cache_root(run: RunDir, opts: "PairOptions") -> str:
    """Where embedding blocks and search results are cached: ``--cache_dir`` (shared by runs: its
    entries are keyed by content) or the run folder's ``cache/``."""
    return opts.cache_dir or run.cache_dir


def query_document_embedders(info: distributed.DistInfo, run: RunDir,
                             opts: "PairOptions") -> tuple[BlockEmbedder, BlockEmbedder]:
    """One model, two block embedders (queries, documents: each its prompt and length), caching blocks."""
    from .embed import load_model, resolve_prompt, spec_for

    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision)
    roles = (("query", opts.query_prompt, opts.query_prompt_name, opts.query_max_seq_length, "query_prompt_name"),
             ("document", opts.document_prompt, opts.corpus_prompt_name, opts.document_max_seq_length,
              "corpus_prompt_name"))
    return tuple(BlockEmbedder(model, spec_for(model, opts.model_name, opts.revision,
                                               resolve_prompt(model, prompt, name, role, flag), opts.dtype,
                                               opts.batch_size, max_len or opts.max_seq_length, role,
                                               opts.batch_tokens),
                               cache_root(run, opts))
                 for role, prompt, name, max_len, flag in roles)


def text_embedder(info: distributed.DistInfo, run: RunDir, opts: "ModelOptions",
                  checkpoint: str | None = None) -> BlockEmbedder:
    """One block embedder of ``--model_name`` with no prompt (texts compared with texts of their own
    kind), caching blocks; an open_clip tower's ``checkpoint`` file is part of its cache key."""
    from .embed import load_model, spec_for

    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision, checkpoint)
    name_tag = opts.model_name + (f" {checkpoint} {os.path.getsize(checkpoint)}" if checkpoint else "")
    return BlockEmbedder(model, spec_for(model, name_tag, opts.revision, "", opts.dtype, opts.batch_size,
                                         opts.max_seq_length, "", opts.batch_tokens),
                         getattr(opts, "cache_dir", None) or run.cache_dir)


def count_cache_hits(info: distributed.DistInfo, stats: Stats, run: RunDir, embedders: Sequence[BlockEmbedder]) -> None:
    """Record this rank's blocks served from the cache; rank 0 logs the total (a resumed run)."""
    hits = distributed.all_gather_object(sum(e.cache_hits for e in embedders))
    stats.add("cached_blocks", hits[info.rank])
    if sum(hits) and info.is_main:
        logger.info("embed: %d block(s) served from the cache in %s", sum(hits), embedders[0].cache_dir)


def embed_pairs(info: distributed.DistInfo, stats: Stats, run: RunDir, shard: Shard, queries: Sequence[str],
                documents: Sequence[str], opts: "PairOptions", block_rows: int) -> PairEmbeddings:
    """The embed stage of a pairs pipeline: every query, and each distinct document once."""
    from .log import progress

    with stats.stage("embed") as rec:
        doc_ids = global_first(shard.positions, documents)
        is_first = doc_ids == shard.positions
        embedders = query_document_embedders(info, run, opts)
        first_docs = [documents[i] for i in np.flatnonzero(is_first)]
        rec["rows"] = len(queries) + len(first_docs)
        with progress(rec["rows"], "embed", opts.progress and info.is_main) as bar:
            query_emb = embed_by_block(embedders[0], shard.positions, queries, block_rows, "query", bar.update)
            doc_emb = embed_by_block(embedders[1], shard.positions[is_first], first_docs, block_rows, "document",
                                     bar.update)
        count_cache_hits(info, stats, run, embedders)
    return PairEmbeddings(query_emb, doc_ids, is_first, doc_emb, first_docs)


def open_run(info: distributed.DistInfo, opts: "RunOptions", result_name: str) -> tuple[RunDir, dict[str, Any] | None]:
    """The run folder, locked and checked (rank 0); with the stats of a complete run with the same
    flags (then nothing to do). Every rank raises the same error when the folder is refused."""
    run = RunDir(opts.output_dir, opts.result_args(), result_name)
    error = None
    if info.is_main:
        try:
            run.prepare(opts.overwrite)
        except (RunConflictError, OSError) as e:
            error = e
    distributed.raise_if_any_failed(error)
    if not run.is_complete() or run.replace:
        return run, None
    if info.is_main:
        logger.info("%s is already complete (same flags); nothing to do", opts.output_dir)
        run.lock.release()
    with open(run.file("stats.json"), encoding="utf-8") as f:
        return run, json.load(f)


def begin_run(info: distributed.DistInfo, run: RunDir) -> None:
    """After the inputs were read (and the model found): rank 0 records the run and removes an
    earlier one it replaces; nothing of an earlier run is lost before this point. A command that
    writes nothing before its result need not call it: :func:`publish_outputs` begins the run, so
    an earlier run is replaced only once the new result is ready."""
    _begin(info.is_main, run)


def _begin(is_main: bool, run: RunDir) -> None:
    if run.begun:
        return
    error = None
    if is_main:
        try:
            run.begin()
        except OSError as e:
            error = e
    distributed.raise_if_any_failed(error)
    run.begun = True


# ---------------------------------------------------------------- options shared by the verbs

@dataclass(frozen=True, kw_only=True)
class RunFolderOptions(CommonOptions):
    """Flags of every command that writes one run folder."""

    output_dir: str = required("the run folder (refused if another run with other flags is there)", non_empty,
                               result=False, path=OUTPUT_DIR)
    overwrite: bool = flag(False, "replace a run with other flags (only files dist_data wrote are removed)",
                           result=False)


@dataclass(frozen=True, kw_only=True)
class RunOptions(RunFolderOptions):
    """Flags of every verb that reads rows into one run folder."""

    split: str = flag("train", "the split of a Hugging Face dataset or save_to_disk folder", non_empty)
    max_rows: int | None = flag(None, "process a seeded sample of at most this many rows (input order kept)",
                                at_least(1))
    seed: int = flag(42, "seed of every random draw (sampling, negatives)", at_least(0))
    on_bad_rows: str = flag("error", "error: stop at the first bad row naming file:line; skip: to rejects.jsonl",
                            one_of("error", "skip"))


@dataclass(frozen=True, kw_only=True)
class ModelOptions(Options):
    """Flags of the verbs that embed with a sentence-transformers model."""

    model_name: str = flag(DEFAULT_MODEL, "a sentence-transformers model: hub name or local folder "
                           "(default: the shipped all-MiniLM-L6-v2)", non_empty)
    revision: str | None = flag(None, "the model's revision on the hub")
    batch_size: int = flag(64, "texts per forward pass (with --batch_tokens: sets the block size only)", at_least(1))
    batch_tokens: int = flag(0, "token-budget batching: each forward pass holds at most this many padded tokens, "
                             "texts sorted by length (e.g. 16384 on a GPU); 0: --batch_size texts a pass", at_least(0))
    max_seq_length: int | None = flag(None, "truncate texts to this many tokens (default: the model's)",
                                      at_least(1))
    dtype: str = flag("float32", "float32; float16 or bfloat16 on GPU", one_of("float32", "float16", "bfloat16"))


INDEX_MODES = ("gather", "sharded", "ivf", "hnsw")
INDEX_HELP = ("gather: every rank searches all vectors (exact); sharded: per-rank shards, merged top-k (exact, same "
              "result, memory / world); ivf, hnsw: approximate per-rank shards for big corpora (candidates rescored "
              "exactly; recall@k in stats.json)")


@dataclass(frozen=True, kw_only=True)
class IndexOptions(Options):
    """Flags of the verbs that search a nearest-neighbour index over their embeddings."""

    index: str = flag("gather", INDEX_HELP, one_of(*INDEX_MODES))
    nlist: int | None = flag(None, "--index=ivf: inverted lists (default: ~sqrt(documents))", at_least(1))
    nprobe: int = flag(128, "--index=ivf: lists visited per query (more: higher recall, slower)", at_least(1))
    hnsw_m: int = flag(32, "--index=hnsw: graph neighbours per document", at_least(2))
    ef_search: int = flag(128, "--index=hnsw: search depth (more: higher recall, slower)", at_least(1))
    recall_queries: int = flag(1000, "--index=ivf/hnsw: queries sampled to measure recall@k against exact search",
                               at_least(1), result=False)
    cache_dir: str | None = flag(None, "embeddings and search results cached by content, shared by runs (a sweep "
                                 "re-embeds nothing); default: the run folder's cache/", non_empty, result=False)

    def index_spec(self):
        from .index import IndexSpec

        return IndexSpec(self.index, nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m,
                         ef_search=self.ef_search, seed=self.seed, recall_queries=self.recall_queries)


@dataclass(frozen=True, kw_only=True)
class PairOptions(RunOptions, ModelOptions, IndexOptions):
    """Flags of the verbs that read (query, document) pairs, embed them and search an index."""

    query_key: str = flag("query", "the query text field", non_empty)
    document_key: str = flag("document", "the document text field", non_empty)
    query_prompt: str = flag("", "prefix for queries (e5/bge style, e.g. 'query: '); wins over --query_prompt_name")
    document_prompt: str = flag("", "prefix for documents; wins over --corpus_prompt_name")
    query_prompt_name: str | None = flag(None, "one of the model's own prompts for queries (default: its 'query' "
                                         "prompt if it has one, as encode_query)", non_empty)
    corpus_prompt_name: str | None = flag(None, "one of the model's own prompts for documents (default: its "
                                          "'document'/'passage'/'corpus' prompt, as encode_document)", non_empty)
    query_max_seq_length: int | None = flag(None, "truncate queries to this many tokens (default: --max_seq_length)",
                                            at_least(1))
    document_max_seq_length: int | None = flag(None, "truncate documents to this many tokens (default: "
                                               "--max_seq_length)", at_least(1))
    compress: bool = flag(False, "gzip the merged result (reproducible bytes)")


def run_entry_point(opts: CommonOptions, body: Callable[[distributed.DistInfo], Any]) -> None:
    """Init the process group and logging, run ``body(info)``.

    User errors (bad input, a refused folder, a full disk) print one line on rank 0 and exit 2;
    Ctrl-C prints one line and exits 130; SIGTERM (torchrun stopping the ranks) exits 143 after
    the same clean-up (the folder lock is released).
    """
    import signal
    import sys

    from .log import quiet_progress, setup_logging

    def terminated(signum, frame):  # noqa: ARG001 - torchrun stops the other ranks with SIGTERM
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    if not opts.progress or int(os.environ.get("LOCAL_RANK", "0") or 0) != 0:  # bars on local rank 0 only
        quiet_progress()
    try:
        with distributed.process_group(opts.timeout_minutes) as info:
            setup_logging(info.rank, info.local_rank, info.world_size)
            try:
                body(info)
            except (ValueError, InputError, BadRowError, RunConflictError) as e:
                if info.is_main:
                    logger.error("%s", e)
                sys.exit(2)
            except OSError as e:
                problem = io_failure(getattr(opts, "output_dir", ""), e)
                if problem is None:
                    raise
                if info.is_main:  # the same error on every rank (raise_if_any_failed): said once
                    logger.error("%s", problem)
                sys.exit(2)
            finally:
                release_held_locks()  # every exit path: a failed run leaves its folder unlocked at once
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except InputError as e:  # raised while the process group starts (body's own are handled above)
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        # A torchrun rank whose work is done and whose process group is torn down leaves now:
        # native libraries' exit-time destructors (thread pools) have been seen to abort a rank
        # ("terminate called without an active exception") after a complete run, which torchrun
        # then reports as a failed job. Every output is already closed and renamed.
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_commands(table: dict[str, tuple[type[CommonOptions], Callable[[distributed.DistInfo, Any], Any]]], doc: str | None,
                 prog: str, argv: Sequence[str] | None = None) -> None:
    """``prog COMMAND --flags`` where each command is ``(options class, body(info, opts))`` run by
    :func:`run_entry_point` (the verbs with subcommands: captions, laionet)."""
    from .cli import main_with_commands

    def entry(body):
        return lambda o: run_entry_point(o, lambda info: body(info, o))

    main_with_commands({name: (cls, entry(body)) for name, (cls, body) in table.items()}, doc, prog, argv)


# ---------------------------------------------------------------- the search

def record_search(info: distributed.DistInfo, stats: Stats, opts: "PairOptions", timings: dict[str, Any],
                  own_documents: int, depth: int) -> None:
    """The index stage (this rank's documents) and, in ``stats.index``, the index used and, for an
    approximate one, its recall@k against exact search; logged on rank 0."""
    stats.record("index", own_documents, timings["index_seconds"])
    spec = opts.index_spec()
    stats.index = {"mode": spec.mode, "depth": depth, "backend": timings["backend"],
                   **({"nlist": spec.nlist or "auto", "nprobe": spec.nprobe} if spec.mode == "ivf" else {}),
                   **({"hnsw_m": spec.hnsw_m, "ef_search": spec.ef_search} if spec.mode == "hnsw" else {}),
                   **({"recall": timings["recall"]} if "recall" in timings else {})}
    if not info.is_main:
        return
    if timings.get("cached"):
        logger.info("search: results read back from the cache (same vectors, k=%d)", depth)
    if "recall" in timings:
        recall = timings["recall"]
        logger.info("index: %s recall against exact search on %d sampled queries: %s", spec.mode,
                    recall["recall_queries"], ", ".join(f"{k} {v:.4f}" for k, v in recall.items() if k != "recall_queries"))


# ---------------------------------------------------------------- what the scores look like

REPORT_ROWS = 1_000_000  # rows of each score column rank 0 holds for the quantiles and histograms


def report_scores(info: distributed.DistInfo, run: RunDir, stats: Stats, title: str,
                  columns: dict[str, np.ndarray], panels: Sequence[tuple[str, Sequence[str], str]],
                  extra: dict[str, np.ndarray] | None = None) -> None:
    """Quantile tables of ``columns`` over all ranks into ``stats.json`` (``scores``), logged as a
    table, and ``scores.png``: one histogram panel per ``(title, column names, x label)``.
    ``extra`` columns are plotted but not tabled (e.g. ranks). Collective; rank 0 writes.

    Up to :data:`REPORT_ROWS` rows of a column are exact; past that every rank sends every
    ``step``-th of its rows (``sampled_1_in`` in the table), so rank 0's memory stays bounded.
    """
    from .report import describe, score_table, write_histograms

    gathered = {}
    for name, values in {**columns, **(extra or {})}.items():
        step = max(1, -(-sum(distributed.all_gather_object(len(values))) // REPORT_ROWS))
        gathered[name] = (distributed.gather_array(np.asarray(values, dtype=np.float32)[::step]), step)
    if not info.is_main:
        return
    stats.scores = {n: {**describe(gathered[n][0]), **({"sampled_1_in": gathered[n][1]} if gathered[n][1] > 1 else {})}
                    for n in columns}
    logger.info("scores:\n%s", score_table(stats.scores))
    run.record(["scores.png"])
    write_histograms(run.file("scores.png"), title,
                     [(t, {n: gathered[n][0] for n in cols}, x) for t, cols, x in panels])


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
            result_name = run.result_name + (".gz" if gzip_output and merge_result is None else "")
            run.record([result_name, "rejects.jsonl", "stats.json", "_SUCCESS"] + ([IDS_NAME] if write_ids else []))
            if merge_result is not None:
                result = merge_result()
            else:
                result = result_name
                merge_files([run.part("part", r) for r in range(world_size)], run.file(result), gzip_output)
            merge_files([run.part("rejects", r) for r in range(world_size)], run.file("rejects.jsonl"))
            if write_ids:
                write_json_list(run.file(IDS_NAME), read_lines([run.part("ids", r) for r in range(world_size)]))
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
        run.lock.release()
    distributed.barrier()
    return merged


def publish_outputs(run: RunDir, rank: int, world_size: int, stats: Stats, name: str,
                    write_result: Callable[[str], int], rejects: Sequence[dict[str, Any]],
                    extra: Sequence[tuple[str, Callable[[str], Any]]] = ()) -> dict[str, Any] | None:
    """After every rank is done: rank 0 writes the result (``write_result(path)`` returns its rows) as
    ``name`` and each ``extra`` file (``(name, write(path))``) in the run folder, then the rejects,
    stats and ``_SUCCESS``. Returns the merged stats on rank 0 (``outputs`` names every file), None
    elsewhere."""
    run.result_name = name

    def write() -> str:
        run.record([n for n, _ in extra])
        with stats.stage("write") as rec:
            rec["rows"] = write_result(run.file(name))
            for extra_name, write_extra in extra:
                write_extra(run.file(extra_name))
        return name

    _begin(rank == 0, run)
    write_parts(run, rank, [], None, rejects)
    merged = merge_outputs(run, rank, world_size, stats, False, False, merge_result=write)
    if merged is not None:
        for extra_name, _ in extra:
            merged["outputs"][extra_name.split(".")[0]] = extra_name
    return merged
