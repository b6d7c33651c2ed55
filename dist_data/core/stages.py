"""The stages every run-folder verb goes through, owned by its :class:`~dist_data.core.run.Run`:
read, embed, search (and the exact threshold search), selections counted by reason. Each stage is
timed into the run's stats, shows a progress bar on rank 0 (``--progress``), and records what the
engine must know (rows read and rejected, blocks served from the cache, the index used); a verb
says only what it reads, embeds or searches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import distributed, index
from .embed import (BATCHES_PER_BLOCK, BlockEmbedder, count_cache_hits, embed_by_block, query_document_embedders,
                    text_embedder)
from .keys import global_first
from .log import logger, progress
from .blocks import plan_blocks, read_stage, Shard
from .rows import Parse
from .report import record_search
from .select import PAD_ID
from .stats import Stats, summary_line


class Embedding:
    """What :meth:`Stages.embed` yields: ``embed(keys, texts, role)`` embeds this rank's texts by block
    (``role`` ``query``/``document``: that role's prompt and length; any other: the plain embedder,
    ``role`` naming the cache blocks), advancing the stage's progress bar."""

    def __init__(self, embedders: dict[str, BlockEmbedder], block_rows: int, bar):
        self.embedders = embedders
        self.block_rows = block_rows
        self._bar = bar

    def embedder(self, role: str) -> BlockEmbedder:
        return self.embedders.get(role) or self.embedders["text"]

    def __call__(self, keys: np.ndarray, texts: Sequence[str], role: str, blocks: np.ndarray | None = None,
                 as_role: str | None = None) -> np.ndarray:
        """Vectors of ``texts`` (this rank's, keyed by ``keys``: blocks of consecutive keys, or of equal
        ``blocks``), embedded as ``as_role`` (default ``role``) with cache blocks named by ``role``."""
        return embed_by_block(self.embedder(as_role or role), keys, texts, self.block_rows, role, self._bar.update,
                              blocks=blocks)

    def one_block(self, texts: Sequence[str], block_id: str) -> np.ndarray:
        """A few texts embedded as one cached block (a verb's fixed texts, such as class names)."""
        return self.embedder("text").embed(texts, block_id)

    @property
    def texts_embedded(self) -> int:
        return sum(e.texts_embedded for e in self.embedders.values())


@dataclasses.dataclass
class PairEmbeddings:
    """This rank's query vectors (one per row) and the vectors of the documents it holds first."""

    query_emb: np.ndarray  # (n, d) float32
    doc_ids: np.ndarray  # (n,) int64 id of each row's document (position of its first appearance)
    is_first: np.ndarray  # (n,) bool: this row is its document's first appearance
    doc_emb: np.ndarray  # (is_first.sum(), d) float32
    first_docs: list[str]


class Stages:
    """The stage helpers of a :class:`~dist_data.core.run.Run` (``info``, ``opts``, ``stats``)."""

    info: distributed.DistInfo
    opts: Any
    stats: Stats
    cache_dir: str

    @property
    def show_progress(self) -> bool:
        return bool(getattr(self.opts, "progress", True)) and self.info.is_main

    def progress(self, total: int, name: str, unit: str = "rows"):
        """A progress bar on rank 0 (none with ``--noprogress``)."""
        return progress(total, name, self.show_progress, unit=unit)

    @property
    def block_rows(self) -> int:
        """Rows per block, the unit of embedding, caching and resume: ``--block_rows``, or
        :data:`BATCHES_PER_BLOCK` batches of ``--batch_size``."""
        rows = getattr(self.opts, "block_rows", None)
        return int(rows) if rows else BATCHES_PER_BLOCK * self.opts.batch_size

    @property
    def cache_root(self) -> str:
        """Where embedding blocks and search results are cached: ``--cache_dir`` (shared by runs: its
        entries are keyed by content) or the run folder's ``cache/``."""
        return getattr(self.opts, "cache_dir", None) or self.cache_dir

    # ---------------------------------------------------------------- read

    def read(self, parse: Parse | Sequence[str], dataset: str | None = None, name: str = "read",
             stats: Stats | None = None, split: str | None = None) -> Shard:
        """This rank's block-aligned slice of ``dataset`` (default ``--dataset``), sampled by
        ``--max_rows``/``--seed``, each row parsed (a list of keys: those texts); bad rows by
        ``--on_bad_rows``. A second input (``name`` other than ``read``) adds its rows read, not its
        input rows. Collective: a bad row or path on any rank stops every rank with one line."""
        opts = self.opts
        return read_stage(self.info, stats or self.stats, dataset or opts.dataset, split or opts.split, parse,
                          opts.max_rows if name == "read" else None, opts.seed, self.block_rows, opts.on_bad_rows,
                          name=name)

    def plan(self, dataset: str, unit: str = "rows"):
        """This rank's block slice of ``dataset``, read later in one streamed pass
        (:class:`~dist_data.core.blocks.BlockSlice`)."""
        opts = self.opts
        return plan_blocks(self.info, self.stats, dataset, opts.split, opts.max_rows, opts.seed, self.block_rows,
                           unit=unit)

    # ---------------------------------------------------------------- embed

    @contextlib.contextmanager
    def embed(self, rows: int, roles: str = "text", checkpoint: str | None = None,
              name: str = "embed") -> Iterator[Embedding]:
        """The embed stage: the model loaded (its own stage), then ``rows`` texts embedded through the
        yielded :class:`Embedding`; the blocks served from the cache are counted (``cached_blocks``)
        and logged. ``roles``: ``text`` (no prompt: texts compared with texts of their kind) or
        ``pairs`` (a query and a document embedder, each with its prompt and length). Collective."""
        with self.stats.stage("model", done="loaded"):
            if roles == "pairs":
                query, document = query_document_embedders(self.info, self.cache_root, self.opts)
                embedders = {"query": query, "document": document}
            else:
                embedders = {"text": text_embedder(self.info, self.cache_root, self.opts, checkpoint)}
        with self.embedding(rows, embedders, name) as embed:
            yield embed

    @contextlib.contextmanager
    def embedding(self, rows: int, embedders: dict[str, BlockEmbedder], name: str = "embed") -> Iterator[Embedding]:
        """Another embed stage with embedders already loaded (an evaluation set after the data)."""
        with self.stats.stage(name, rows=rows), self.progress(rows, name) as bar:
            embed = Embedding(embedders, self.block_rows, bar)
            yield embed
        count_cache_hits(self.info, self.stats, list(embedders.values()))

    def embed_pairs(self, shard: Shard, queries: Sequence[str], documents: Sequence[str]) -> PairEmbeddings:
        """The embed stage of (query, document) rows: every query, and each distinct document once
        (the id of a document is the position of its first row). Collective."""
        doc_ids = global_first(shard.positions, documents)
        is_first = doc_ids == shard.positions
        first_docs = [documents[i] for i in np.flatnonzero(is_first)]
        with self.embed(len(queries) + len(first_docs), roles="pairs") as embed:
            query_emb = embed(shard.positions, queries, "query")
            doc_emb = embed(shard.positions[is_first], first_docs, "document")
        return PairEmbeddings(query_emb, doc_ids, is_first, doc_emb, first_docs)

    # ---------------------------------------------------------------- search

    def search(self, queries: np.ndarray, documents: np.ndarray, document_ids: np.ndarray, depth: int,
               unit: str = "queries", name: str = "search", record: bool = True,
               bar: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(scores, ids, timings)``: each query's top ``depth`` documents over every rank, by the
        run's index (``--index``), cached by content; ``record``: the index stage and the index used
        go into the stats. Collective."""
        opts = self.opts
        spec = self._index_spec()
        shown = self.progress(len(queries), name, unit=unit) if bar else contextlib.nullcontext()
        with self.stats.stage(name, rows=len(queries)), shown as progress_bar:
            found = index.cached_search(self.cache_root, queries, documents, document_ids, depth, spec,
                                        self.info.device, fp16=getattr(opts, "dtype", "float32") == "float16",
                                        on_progress=progress_bar.update if progress_bar is not None else None)
        if record:
            record_search(self.info, self.stats, spec, found[2], len(document_ids), depth)
        return found

    def _index_spec(self) -> index.IndexSpec:
        opts = self.opts
        return opts.index_spec() if hasattr(opts, "index_spec") else index.IndexSpec(opts.index)

    def threshold_pairs(self, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, threshold: float,
                        first_depth: int, search: Callable | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, score, nearest)``: every pair of one of ``queries`` (positions in ``ids``) with
        another vector of any rank scoring >= ``threshold``, exact whatever ``first_depth``: a query
        whose whole list is at or above the threshold is searched again 4x deeper
        (``searched_deeper``), until every list ends below it; ``nearest``: each query's best score
        with another vector (-inf: none). ``search(positions, depth)`` returns ``(scores, ids,
        timings)``; by default the run's index, recorded (an independent check passes its own).
        Collective."""
        record = search is None
        search = search or (lambda todo, depth: self.search(vectors[todo], vectors, ids, depth, unit="texts",
                                                            record=False))
        nearest = np.full(len(queries), -np.inf)
        found_a, found_b, found_s = [], [], []
        total = sum(distributed.all_gather_object(len(ids)))
        if first_depth > total and self.info.is_main:
            logger.info("search: k=%d is more than the %d documents; all %d are ranked", first_depth, total, total)
        todo, depth, round_ = queries, first_depth, 0
        while True:
            depth = min(depth, max(total, 1))
            scores, got, timings = search(todo, depth)
            own = ids[todo]
            other = (got != PAD_ID) & (got != own[:, None])
            if round_ == 0:
                if record:
                    record_search(self.info, self.stats, self._index_spec(), timings, len(ids), got.shape[1])
                if len(todo):
                    nearest[:] = np.where(other, scores, -np.inf).max(axis=1)
            elif record:
                self.stats.add("searched_deeper", len(todo))
            take = other & (scores >= threshold)
            rows, cols = np.nonzero(take)
            found_a.append(own[rows])
            found_b.append(got[rows, cols])
            found_s.append(scores[rows, cols])
            todo = todo[(take.sum(axis=1) == other.sum(axis=1)) & (other.sum(axis=1) >= depth - 1)]
            if depth >= total or not any(distributed.all_gather_object(len(todo) > 0)):
                break
            round_ += 1
            depth *= 4
        a, b = np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)
        s = np.concatenate(found_s).astype(np.float64)
        _, unique = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)  # deeper rounds repeat the first
        unique = np.sort(unique)
        return a[unique], b[unique], s[unique], nearest

    # ---------------------------------------------------------------- selections

    def select(self, keep: np.ndarray, reason: str | Sequence[str | None] | np.ndarray,
               known: Sequence[str] = ()) -> np.ndarray:
        """Count a selection: ``kept``, and ``dropped`` by ``reason`` (one reason for every row not
        kept, or each row's own; the ``known`` reasons are counted even when zero, so every run has
        their keys). Returns the kept positions."""
        keep = np.asarray(keep, dtype=bool)
        self.stats.add("kept", int(keep.sum()))
        for why in known:
            self.stats.add("dropped", 0, reason=why)
        if isinstance(reason, str):
            self.stats.add("dropped", int((~keep).sum()), reason=reason)
        else:
            reasons = np.asarray(reason, dtype=object)[~keep]
            for why in sorted(set(reasons.tolist())):
                self.stats.add("dropped", int((reasons == why).sum()), reason=str(why))
        return np.flatnonzero(keep)


class CommandStages(Stages):
    """The stages of a distributed command whose outputs are its domain's own layout rather than one
    run folder (embed_mteb's per-dataset folders): the same stages and counts into :attr:`stats`
    (the engine's keys and the options' ``counts``/``count_buckets``), the same summary line."""

    def __init__(self, info: distributed.DistInfo, opts: Any, cache_dir: str):
        self.info, self.opts, self.cache_dir = info, opts, cache_dir
        self.stats = Stats.for_command(getattr(opts, "counts", ()), getattr(opts, "count_buckets", ()))
        self.started = time.perf_counter()

    def finish(self, what: str, result: str) -> dict[str, Any]:
        """Every rank's stats merged (returned on every rank); rank 0 logs the summary line of ``what``
        (written to ``result``). Collective."""
        merged = Stats.merge(distributed.all_gather_object(self.stats.to_dict()))
        merged["world_size"] = self.info.world_size
        if self.info.is_main:
            logger.info("%s", summary_line(what, merged, self.opts, time.perf_counter() - self.started, result))
        return merged
