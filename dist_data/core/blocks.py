"""The run's rows as global ids over every source (:class:`Catalog`), sampled (``--max_rows``) and
dealt to the ranks in whole blocks: this rank's slice read now (:func:`read_stage`) or streamed
later (:func:`plan_blocks`). Rows are identified by their position in file order over all
inputs, so every output is the same for any number of ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from . import distributed
from .errors import BadRowError, InputError
from .log import logger
from .rows import REJECTED, Parse, Row, get_texts, parse_or_reject
from .sources import Source, count_rows, iter_selected, iter_source, resolve_sources
from .stats import Stats, fmt_rows

@dataclass(frozen=True)
class Catalog:
    """The sources of a run and their row counts; global id = offset of the source + row index."""

    sources: tuple[Source, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])

    def read_range(self, lo: int, hi: int) -> Iterator[Row]:
        """Stream the rows with global ids ``[lo, hi)`` in one pass (no id list in memory)."""
        offsets = self.offsets
        for s, source in enumerate(self.sources):
            a, b = max(lo, int(offsets[s])), min(hi, int(offsets[s + 1]))
            if a >= b:
                continue
            skip = a - int(offsets[s]) if source.kind in ("hf", "hf_disk", "parquet") else 0
            rows = iter_source(source, skip)
            for idx, (line, value, raw, error) in enumerate(rows, start=skip):
                if idx + offsets[s] >= b:
                    break
                if idx + offsets[s] >= a:
                    yield Row(int(offsets[s] + idx), source.path, line, value, raw, error)
            rows.close()

    def read(self, gids: np.ndarray) -> Iterator[Row]:
        """Stream the rows with the given sorted global ids."""
        offsets = self.offsets
        for s, source in enumerate(self.sources):
            lo, hi = np.searchsorted(gids, [offsets[s], offsets[s + 1]])
            if lo == hi:
                continue
            for idx, line, value, raw, error in iter_selected(source, gids[lo:hi] - offsets[s]):
                yield Row(int(offsets[s] + idx), source.path, line, value, raw, error)


def shared_sources(info: distributed.DistInfo, dataset: str, split: str) -> list[Source]:
    """The inputs resolved once, on rank 0, and sent to every rank: one listing of a folder or a
    bucket's prefix, not one per rank. Collective: an input that is not there is every rank's error."""
    found, error = None, None
    if info.is_main:
        try:
            found = resolve_sources(dataset, split)
        except InputError as e:
            error = e
    found, error = distributed.broadcast_object((found, error))
    if error is not None:
        raise error
    return found


def build_catalog(sources: Sequence[Source], rank: int = 0, world_size: int = 1) -> Catalog:
    """Count rows per source, the sources dealt round-robin over ranks, then shared."""
    mine = {i: count_rows(s) for i, s in enumerate(sources) if i % world_size == rank}
    counts: dict[int, int] = {}
    for part in distributed.all_gather_object(mine):
        counts.update(part)
    if rank == 0:  # said, never silent: an input with no rows (a header only, blank lines)
        empty = [s.path for i, s in enumerate(sources) if counts[i] == 0]
        if empty:
            logger.warning("%s: no rows%s", empty[0], f" (and {len(empty) - 1} more empty input(s))"
                           if len(empty) > 1 else "")
    return Catalog(tuple(sources), tuple(counts[i] for i in range(len(sources))))


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
            catalog = build_catalog(shared_sources(info, dataset, split), info.rank, info.world_size)
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
    catalog = build_catalog(shared_sources(info, dataset, split), info.rank, info.world_size)
    selected = sample_positions(catalog.total, max_rows, seed)
    n = len(selected) if selected is not None else catalog.total
    lo, hi = distributed.shard_range(n, info.rank, info.world_size, unit=block_rows)
    stats.add("input_rows", catalog.total if info.is_main else 0)
    stats.add("dropped", catalog.total - n if info.is_main else 0, reason="not_sampled")
    if info.is_main:
        logger.info("read: %s %s in %d file(s); %s on %d rank(s), %s here", fmt_rows(catalog.total), unit,
                    len(catalog.sources), fmt_rows(n), info.world_size, fmt_rows(hi - lo))
    return BlockSlice(catalog, selected, n, lo, hi, block_rows)
