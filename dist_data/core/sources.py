"""Input discovery and the per-format readers: ``--dataset`` (files, folders, globs, comma lists,
``save_to_disk`` folders, hub names) as an ordered list of sources, and each source's rows in order
(:data:`READERS`, one reader per kind), blank lines not rows, bad bytes a bad row, not a crash."""

from __future__ import annotations

import csv
import glob as globlib
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from typing import IO, Any, Iterator, Sequence

import numpy as np

from . import remote
from .errors import InputError
from .rows import Row, bad_unicode

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".json.gz")


SUFFIXES = JSONL_SUFFIXES + (".json", ".parquet", ".csv", ".tsv", ".txt", ".txt.gz")


_HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class Source:
    """One input: a file (``kind`` from its suffix) or a Hugging Face dataset (``kind='hf'``)."""

    path: str
    kind: str
    split: str | None = None


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
    ``shard-00000.jsonl.gz`` folders, whose ``counts.json`` and ``offsets.json.gz`` are not rows), a
    glob, a URL of any of those (:mod:`dist_data.core.remote`: ``s3://``, ``gs://``, ``hf://``,
    ``https://``...), a comma-separated list of those, a ``save_to_disk`` folder or a Hugging Face
    dataset name.
    """
    specs = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not specs:
        raise InputError("--dataset is empty")
    sources: list[Source] = []
    for item in specs:
        item = os.path.expanduser(str(item).strip())
        if remote.is_url(item):
            files = [f for f in remote.list_files(item) if _kind_of(f) and f.rsplit("/", 1)[-1] not in FOLDER_METADATA
                     and not f.rsplit("/", 1)[-1].startswith(".")]
            if not files:
                raise InputError(f"{item} holds no input files ({', '.join(SUFFIXES)})")
            sources.extend(Source(f, _kind_of(f)) for f in files)
            continue
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
            sources.extend(hub_sources(item, split))
    return sources


def hub_sources(name: str, split: str) -> list[Source]:
    """A Hugging Face Hub dataset name: the data files of its ``split`` (``hf://datasets/NAME@COMMIT/...``,
    pinned to the revision the Hub resolved), read like any URL: streamed, each rank reading only its
    share (a parquet file by row groups), the rows in the order of the files. A split that is not a set
    of files of a kind the reader knows (a loading script) is loaded by ``datasets`` instead, said in
    the log."""
    import datasets

    from .log import logger

    try:
        builder = datasets.load_dataset_builder(name)
    except Exception as e:  # noqa: BLE001 - turned into one clear line
        raise InputError(f"could not load dataset {name!r}: {type(e).__name__}: {remote.first_line(e)}") from None
    data_files = dict(builder.config.data_files or {})
    if data_files and split not in data_files:
        raise InputError(f"dataset {name} has no split {split!r} (has {sorted(data_files)})")
    files = [str(f) for f in data_files.get(split, [])]
    if files and all(_kind_of(f) for f in files):
        return [Source(f, _kind_of(f)) for f in files]
    logger.warning("%s: its %s split is not a set of data files the reader knows; datasets loads it whole", name,
                   split)
    return [Source(name, "hf", split)]


def _open_binary(path: str) -> IO[bytes]:
    """A local file or a URL (streamed), as stored."""
    return remote.open_binary(path) if remote.is_url(path) else open(path, "rb")


def _open_text(path: str, **kwargs) -> IO[str]:
    """A local file or a URL as text (``kwargs``: ``encoding``, ``errors``, ``newline``)."""
    return io.TextIOWrapper(_open_binary(path), **kwargs) if remote.is_url(path) else open(path, **kwargs)


def _open_text_binary(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=_open_binary(path), mode="rb") if remote.is_url(path) else gzip.open(path, "rb")
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:  # pragma: no cover - optional
            raise InputError(f"{path}: reading .zst needs `pip install zstandard`") from e
        return zstandard.open(_open_binary(path), "rb")
    return _open_binary(path)


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


def count_rows(source: Source) -> int:
    """Rows in one source without parsing them (blank lines are not rows)."""
    if source.kind in ("jsonl", "text"):
        return sum(1 for _, line in _lines(source) if line.strip())
    if source.kind == "parquet":
        return _parquet_file(source.path).metadata.num_rows
    if source.kind in ("hf", "hf_disk"):
        return len(_load_hf(source))
    return sum(1 for _ in iter_source(source))


def _text_rows(source: Source, start: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """jsonl (a JSON value a line) and text (a document a line); blank lines are not rows."""
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


def _json_rows(source: Source, start: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """A .json file holding a list of records (or ``{"data": [...]}``)."""
    # Undecodable bytes are kept as lone surrogates and make their record a bad row (below).
    with _open_text(source.path, encoding="utf-8-sig", errors="surrogateescape") as f:
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


def _delimited_rows(source: Source, start: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """csv and tsv with a header row; a row's line is its physical line."""
    # utf-8-sig: a byte-order mark is not part of the first column's name; undecodable bytes are
    # kept as lone surrogates so that their row (not the file) is bad, named by its line.
    with _open_text(source.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f, delimiter="," if source.kind == "csv" else "\t")
        if bad_unicode(reader.fieldnames or []):
            raise InputError(f"{source.path}:1: the header is not valid UTF-8")
        for value in reader:
            where = bad_unicode(value)
            if where:
                yield reader.line_num, None, None, f"invalid UTF-8 {where}"
            else:
                yield reader.line_num, value, None, None


def _parquet_file(path: str):
    """A parquet file, local or by URL (row groups read as needed, not the whole file)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(_open_binary(path) if remote.is_url(path) else path)


def _parquet_rows(source: Source, start: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """parquet, by record batches; rows before ``start`` are counted, not converted."""
    i = 0
    for batch in _parquet_file(source.path).iter_batches(batch_size=8192):
        if i + batch.num_rows <= start:  # rows before this rank's slice: counted, not converted
            i += batch.num_rows
            continue
        for value in batch.slice(max(0, start - i)).to_pylist():
            i = max(i, start)
            i += 1
            yield i, value, None, None


def _hf_rows(source: Source, start: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """A hub dataset or a ``save_to_disk`` folder, from row ``start``."""
    ds = _load_hf(source)
    for i in range(start, len(ds), 8192):
        chunk = ds[i : i + 8192]
        keys = list(chunk)
        for j in range(len(chunk[keys[0]]) if keys else 0):
            yield i + j + 1, {k: chunk[k][j] for k in keys}, None, None


# one reader per source kind: (source, first row) -> (line, value, raw text, error) of each row
READERS = {"jsonl": _text_rows, "text": _text_rows, "json": _json_rows, "csv": _delimited_rows,
           "tsv": _delimited_rows, "parquet": _parquet_rows, "hf": _hf_rows, "hf_disk": _hf_rows}


def iter_source(source: Source, start: int = 0) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """Yield ``(line, value, raw, error)`` for every row of one source, in order.

    ``start`` skips rows of Hugging Face datasets and parquet files without converting them (text
    files are read from the start); parquet item numbers stay those of the whole file.
    """
    reader = READERS.get(source.kind)
    if reader is None:  # pragma: no cover - resolve_sources makes no other kind
        raise InputError(f"unknown source kind {source.kind}")
    return reader(source, start)


def iter_selected(source: Source, local_ids: np.ndarray) -> Iterator[tuple[int, int, Any, str | None, str | None]]:
    """Rows of one source whose 0-based row index is in ``local_ids`` (sorted)."""
    if source.kind in ("hf", "hf_disk") and len(local_ids):
        ds = _load_hf(source).select(local_ids.tolist())
        for idx, value in zip(local_ids.tolist(), ds):
            yield idx, idx + 1, value, None, None
        return
    want = iter(local_ids.tolist())
    nxt = next(want, None)
    for idx, (line, value, raw, error) in enumerate(iter_source(source)):
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
        for line, value, _, _ in iter_source(source):
            if not isinstance(value, dict):
                return
            missing = [(flag, key) for flag, key in fields.items() if key not in value]
            if missing:
                flag, key = missing[0]
                raise InputError(f"{source.path}:{line}: no field {key!r} (--{flag}); its fields: "
                                 f"{', '.join(map(str, value))}")
            return


def read_rows(path: str) -> list[Row]:
    """Every row of one small file (jsonl/.gz, json, parquet, csv, tsv), with file and line."""
    kind = _kind_of(path)
    if kind is None:
        raise InputError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    return [Row(i, path, line, value, raw, error)
            for i, (line, value, raw, error) in enumerate(iter_source(Source(path, kind)))]
