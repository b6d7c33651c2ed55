"""The one reader: input discovery, row streaming with provenance, row validation, sampling and
sharding.

Rows are identified by a global id: their position in file order over all input files (blank
lines are not rows). Every row carries its file and line so a bad one can be named exactly; a bad
row is an error naming them, or a counted reject under ``--on_bad_rows=skip``.
"""

from __future__ import annotations

import csv
import glob as globlib
import gzip
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np

from . import distributed
from .errors import BadRowError, InputError
from .log import logger
from .stats import fmt_rows, Stats

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".json.gz")
SUFFIXES = JSONL_SUFFIXES + (".json", ".parquet", ".csv", ".tsv", ".txt", ".txt.gz")
_HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class Source:
    """One input: a file (``kind`` from its suffix) or a Hugging Face dataset (``kind='hf'``)."""

    path: str
    kind: str
    split: str | None = None


@dataclass
class Row:
    gid: int  # global row id over all sources
    source: str
    line: int  # 1-based physical line (jsonl, csv) or item number (json, parquet, hf)
    value: Any  # the parsed record (dict or list); None when it could not be parsed
    raw: str | None  # the record as written in the input, when the input is a text line
    error: str | None = None  # why it could not be parsed

    def as_json(self) -> str:
        """The record itself for output: the original line where there is one."""
        if self.raw is not None:
            return self.raw
        return json.dumps(self.value, ensure_ascii=False, default=str)


def _kind_of(path: str) -> str | None:
    name = path.lower()
    for suffix in (".jsonl.gz", ".jsonl.zst", ".json.gz", ".txt.gz"):
        if name.endswith(suffix):
            return {"jsonl": "jsonl", "json": "jsonl", "txt": "text"}[suffix.split(".")[1]]
    ext = os.path.splitext(name)[1]
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
            ".csv": "csv", ".tsv": "tsv", ".txt": "text"}.get(ext)


# Files of a shard folder that are not rows: contrastors' counts.json and offsets.json.gz.
FOLDER_METADATA = frozenset({"counts.json", "offsets.json.gz"})


def resolve_sources(spec: str | Sequence[str], split: str = "train") -> list[Source]:
    """Turn ``--dataset`` into an ordered list of sources.

    Accepts a file, a folder (every supported file under it, sorted; e.g. nomic-style
    ``shard-00000.jsonl.gz`` folders, whose ``counts.json`` and ``offsets.json.gz`` are not rows), a glob, a comma-separated list of those, a ``save_to_disk``
    folder or a Hugging Face dataset name.
    """
    specs = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not specs:
        raise InputError("--dataset is empty")
    sources: list[Source] = []
    for item in specs:
        item = os.path.expanduser(str(item).strip())
        if os.path.isdir(item):
            if any(os.path.exists(os.path.join(item, m)) for m in _HF_DISK_MARKERS):
                sources.append(Source(item, "hf_disk", split))
                continue
            files = sorted(
                os.path.join(root, f)
                for root, _, names in os.walk(item)
                for f in names
                if _kind_of(f) and not f.startswith(".") and f not in FOLDER_METADATA
            )
            if not files:
                raise InputError(f"folder {item} holds no input files ({', '.join(SUFFIXES)})")
            sources.extend(Source(f, _kind_of(f)) for f in files)
        elif os.path.isfile(item):
            kind = _kind_of(item)
            if kind is None:
                raise InputError(f"{item}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
            sources.append(Source(item, kind))
        elif globlib.has_magic(item):
            files = sorted(f for f in globlib.glob(item, recursive=True) if os.path.isfile(f) and _kind_of(f))
            if not files:
                raise InputError(f"glob {item} matches no input files")
            sources.extend(Source(f, _kind_of(f)) for f in files)
        elif _kind_of(item) or item.startswith((".", "/", "~")) or os.sep + os.sep in item:
            raise InputError(f"no such file or folder: {item}")
        else:
            sources.append(Source(item, "hf", split))
    return sources


def _open_text_binary(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:  # pragma: no cover - optional
            raise InputError(f"{path}: reading .zst needs `pip install zstandard`") from e
        return zstandard.open(path, "rb")
    return open(path, "rb")


def _load_hf(source: Source):
    import datasets

    try:
        if source.kind == "hf_disk":
            ds = datasets.load_from_disk(source.path)
        else:
            ds = datasets.load_dataset(source.path, split=source.split)
    except Exception as e:  # noqa: BLE001 - turned into one clear line
        raise InputError(f"could not load dataset {source.path!r}: {type(e).__name__}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if source.split not in ds:
            raise InputError(f"dataset {source.path} has no split {source.split!r} (has {sorted(ds)})")
        ds = ds[source.split]
    return ds


def _lines(source: Source) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a text file (gzip and zstd too); a truncated or corrupt
    compressed file is an :class:`InputError` naming the file and the last line read whole."""
    lineno = 0
    try:
        with _open_text_binary(source.path) as f:
            for lineno, bline in enumerate(f, start=1):
                yield lineno, bline
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise InputError(f"no such file: {source.path}") from None
        raise InputError(f"{source.path}: truncated or not a valid {os.path.splitext(source.path)[1]} file "
                         f"({type(e).__name__}: {e}); the last good line is {max(lineno - 1, 0)}") from None


def bad_unicode(value: Any) -> str | None:
    """Where ``value`` holds text that is not valid Unicode (undecodable bytes kept as lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"at character {e.start}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = bad_unicode(item)
        if where:
            return f"in {key!r} {where}"
    return None


def count_rows(source: Source) -> int:
    """Rows in one source without parsing them (blank lines are not rows)."""
    if source.kind in ("jsonl", "text"):
        return sum(1 for _, line in _lines(source) if line.strip())
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(source.path).metadata.num_rows
    if source.kind in ("hf", "hf_disk"):
        return len(_load_hf(source))
    return sum(1 for _ in _iter_source(source))


def _iter_source(source: Source, start: int = 0) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """Yield ``(line, value, raw, error)`` for every row of one source, in order.

    ``start`` skips rows of Hugging Face datasets and parquet files without converting them (text
    files are read from the start); parquet item numbers stay those of the whole file.
    """
    if source.kind in ("jsonl", "text"):
        for lineno, bline in _lines(source):
            if not bline.strip():
                continue
            try:
                text = bline.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield lineno, None, None, f"invalid UTF-8 ({e.reason} at byte {e.start})"
                continue
            if source.kind == "text":
                yield lineno, {"text": text}, None, None
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                yield lineno, None, text, f"malformed JSON ({e.msg} at column {e.colno})"
                continue
            # a \ud800 escape is valid JSON but no text: a lone surrogate (only escapes can make one)
            where = bad_unicode(value) if "\\u" in text else None
            yield (lineno, None, text, f"a lone surrogate {where}") if where else (lineno, value, text, None)
    elif source.kind == "json":
        # Undecodable bytes are kept as lone surrogates and make their record a bad row (below).
        with open(source.path, encoding="utf-8-sig", errors="surrogateescape") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                yield e.lineno, None, None, f"malformed JSON ({e.msg} at column {e.colno})"
                return
        if isinstance(data, dict):  # {"data": [...]} or column-oriented files are not rows
            data = data.get("data", data.get("rows"))
        if not isinstance(data, list):
            raise InputError(f"{source.path}: a .json input must hold a list of records")
        for i, value in enumerate(data, start=1):
            where = bad_unicode(value)
            yield i, None if where else value, None, f"invalid UTF-8 or a lone surrogate {where}" if where else None
    elif source.kind in ("csv", "tsv"):
        # utf-8-sig: a byte-order mark is not part of the first column's name; undecodable bytes are
        # kept as lone surrogates so that their row (not the file) is bad, named by its line.
        with open(source.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="," if source.kind == "csv" else "\t")
            if bad_unicode(reader.fieldnames or []):
                raise InputError(f"{source.path}:1: the header is not valid UTF-8")
            for value in reader:
                where = bad_unicode(value)
                if where:
                    yield reader.line_num, None, None, f"invalid UTF-8 {where}"
                else:
                    yield reader.line_num, value, None, None
    elif source.kind == "parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(source.path).iter_batches(batch_size=8192):
            if i + batch.num_rows <= start:  # rows before this rank's slice: counted, not converted
                i += batch.num_rows
                continue
            for value in batch.slice(max(0, start - i)).to_pylist():
                i = max(i, start)
                i += 1
                yield i, value, None, None
    elif source.kind in ("hf", "hf_disk"):
        ds = _load_hf(source)
        for i in range(start, len(ds), 8192):
            chunk = ds[i : i + 8192]
            keys = list(chunk)
            for j in range(len(chunk[keys[0]]) if keys else 0):
                yield i + j + 1, {k: chunk[k][j] for k in keys}, None, None
    else:  # pragma: no cover
        raise InputError(f"unknown source kind {source.kind}")


def _iter_source_selected(source: Source, local_ids: np.ndarray) -> Iterator[tuple[int, int, Any, str | None, str | None]]:
    """Rows of one source whose 0-based row index is in ``local_ids`` (sorted)."""
    if source.kind in ("hf", "hf_disk") and len(local_ids):
        ds = _load_hf(source).select(local_ids.tolist())
        for idx, value in zip(local_ids.tolist(), ds):
            yield idx, idx + 1, value, None, None
        return
    want = iter(local_ids.tolist())
    nxt = next(want, None)
    for idx, (line, value, raw, error) in enumerate(_iter_source(source)):
        if nxt is None:
            return
        if idx == nxt:
            yield idx, line, value, raw, error
            nxt = next(want, None)


def require_fields(spec: str | Sequence[str], split: str, fields: dict[str, str]) -> None:
    """Check that the first row of the input has every field asked for (``{flag: field name}``), so
    that a misspelt key stops the run before it touches its output folder. Rows that are not
    objects (lists, bad rows) are left to the reader.

    Raises:
        InputError: ``file:line: no field 'captoin' (--caption_key); its fields: caption, filepath``.
    """
    for source in resolve_sources(spec, split):
        for line, value, _, _ in _iter_source(source):
            if not isinstance(value, dict):
                return
            missing = [(flag, key) for flag, key in fields.items() if key not in value]
            if missing:
                flag, key = missing[0]
                raise InputError(f"{source.path}:{line}: no field {key!r} (--{flag}); its fields: "
                                 f"{', '.join(map(str, value))}")
            return


def open_npz(path: str, allow_pickle: bool = False) -> Any:
    """``np.load`` of an ``.npz`` (arrays read on access); a missing, truncated or corrupt file is one
    line naming it, not a zipfile traceback."""
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), read now (a member cut short is named too)."""
    with open_npz(path) as z:
        try:
            return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None


def require_complete_tar(tar: Any, path: str) -> None:
    """After every member of ``tar`` (a ``tarfile.TarFile``) was read: a tar cut short at a member
    boundary reads without a word from ``tarfile``, but lacks the two zero blocks that end every tar.

    Raises:
        InputError: naming the file and where it stops.
    """
    with open(path, "rb") as f:
        f.seek(tar.offset)
        tail = f.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        raise InputError(f"{path}: truncated tar (it stops after byte {tar.offset} without the end-of-archive "
                         f"marker): a copy or download cut short; the samples after that point are missing")


def read_rows(path: str) -> list[Row]:
    """Every row of one small file (jsonl/.gz, json, parquet, csv, tsv), with file and line."""
    kind = _kind_of(path)
    if kind is None:
        raise InputError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    return [Row(i, path, line, value, raw, error)
            for i, (line, value, raw, error) in enumerate(_iter_source(Source(path, kind)))]


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
            rows = _iter_source(source, skip)
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
            for idx, line, value, raw, error in _iter_source_selected(source, gids[lo:hi] - offsets[s]):
                yield Row(int(offsets[s] + idx), source.path, line, value, raw, error)


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


def checked_text(row: Row, name: str, text: Any) -> str:
    """``text`` checked: a non-empty string of valid Unicode, or a :class:`BadRowError` naming the row.

    A lone surrogate (``"\\ud800"`` is valid JSON) would crash the tokenizer on whichever rank
    embeds it; it is a bad row here, at read time.
    """
    if not isinstance(text, str):
        raise BadRowError(row.source, row.line, f"{name!r} is {type(text).__name__}, expected a string")
    if not text.strip():
        raise BadRowError(row.source, row.line, f"{name!r} is empty")
    where = bad_unicode(text)
    if where:
        raise BadRowError(row.source, row.line, f"{name!r} is not valid Unicode (a lone surrogate {where})")
    return text


def row_value(row: Row) -> Any:
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    return row.value


def get_texts(row: Row, keys: Sequence[str]) -> list[str]:
    """The text fields ``keys`` of a row (a dict by key, or a JSON list by position).

    Raises:
        BadRowError: naming file, line and what is wrong (missing key, non-string, empty text).
    """
    value = row_value(row)
    texts = []
    for pos, key in enumerate(keys):
        if isinstance(value, dict):
            if key not in value:
                raise BadRowError(row.source, row.line, f"missing key {key!r} (has {sorted(value)[:8]})")
            text = value[key]
        elif isinstance(value, list):
            if pos >= len(value):
                raise BadRowError(row.source, row.line, f"list row has {len(value)} items, expected at least {len(keys)}")
            text = value[pos]
        else:
            raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object or a list")
        texts.append(checked_text(row, key, text))
    return texts


def require_dir(path: str, flag: str) -> str:
    """``path`` when it is a folder, else :class:`InputError` naming the flag."""
    if not os.path.isdir(path):
        raise InputError(f"--{flag}: no such folder: {path}")
    return path


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


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
    """``parse(row)``; a bad row raises (``on_bad_rows='error'``) or is set aside and counted (:data:`REJECTED`).
    A row the reader found bad (malformed JSON, invalid UTF-8, a lone surrogate) is that, with the
    reader's reason, whatever the verb's ``parse`` would make of it."""
    try:
        if row.error is not None:
            raise BadRowError(row.source, row.line, row.error)
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
