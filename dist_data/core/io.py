"""Input discovery, row streaming with provenance, and atomic output files.

Rows are identified by a global id: their position in file order over all input files (blank
lines are not rows). Every row carries its file and line so a bad one can be named exactly.
"""

from __future__ import annotations

import csv
import glob as globlib
import gzip
import io
import json
import os
import shutil
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".json.gz")
SUFFIXES = JSONL_SUFFIXES + (".json", ".parquet", ".csv", ".tsv", ".txt", ".txt.gz")
_HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class InputError(ValueError):
    """A user-facing problem with the input (path, format); printed as one line."""


class BadRowError(ValueError):
    """A malformed row, named by file and line."""

    def __init__(self, source: str, line: int, reason: str):
        super().__init__(f"{source}:{line}: {reason}")
        self.source, self.line, self.reason = source, line, reason

    def __reduce__(self):  # picklable, so it can travel between ranks
        return (BadRowError, (self.source, self.line, self.reason))


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


def _bad_unicode(value: Any) -> str | None:
    """Where ``value`` holds text that is not valid Unicode (undecodable bytes kept as lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"at character {e.start}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = _bad_unicode(item)
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
            where = _bad_unicode(value) if "\\u" in text else None
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
            where = _bad_unicode(value)
            yield i, None if where else value, None, f"invalid UTF-8 or a lone surrogate {where}" if where else None
    elif source.kind in ("csv", "tsv"):
        # utf-8-sig: a byte-order mark is not part of the first column's name; undecodable bytes are
        # kept as lone surrogates so that their row (not the file) is bad, named by its line.
        with open(source.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="," if source.kind == "csv" else "\t")
            if _bad_unicode(reader.fieldnames or []):
                raise InputError(f"{source.path}:1: the header is not valid UTF-8")
            for value in reader:
                where = _bad_unicode(value)
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
    from . import distributed

    mine = {i: count_rows(s) for i, s in enumerate(sources) if i % world_size == rank}
    counts: dict[int, int] = {}
    for part in distributed.all_gather_object(mine):
        counts.update(part)
    return Catalog(tuple(sources), tuple(counts[i] for i in range(len(sources))))


def _text(row: Row, name: str, text: Any) -> str:
    """``text`` checked: a non-empty string of valid Unicode, or a :class:`BadRowError` naming the row.

    A lone surrogate (``"\\ud800"`` is valid JSON) would crash the tokenizer on whichever rank
    embeds it; it is a bad row here, at read time.
    """
    if not isinstance(text, str):
        raise BadRowError(row.source, row.line, f"{name!r} is {type(text).__name__}, expected a string")
    if not text.strip():
        raise BadRowError(row.source, row.line, f"{name!r} is empty")
    where = _bad_unicode(text)
    if where:
        raise BadRowError(row.source, row.line, f"{name!r} is not valid Unicode (a lone surrogate {where})")
    return text


def _parsed(row: Row) -> Any:
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    return row.value


def get_texts(row: Row, keys: Sequence[str]) -> list[str]:
    """The text fields ``keys`` of a row (a dict by key, or a JSON list by position).

    Raises:
        BadRowError: naming file, line and what is wrong (missing key, non-string, empty text).
    """
    value = _parsed(row)
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
        texts.append(_text(row, key, text))
    return texts


def get_query_positives(row: Row, query_key: str, document_key: str) -> tuple[str, list[str]]:
    """A query and its positives from any of the pair layouts of sentence-transformers' training data.

    - ``{query_key: q, document_key: d}`` (one positive);
    - ``{query_key: q, "pos": [d, ...]}`` (``"neg"``: see :func:`get_query_positives_negatives`);
    - ``{"set": [q, d, ...]}``: the first item is the query, the rest its positives;
    - ``[q, d, ...]``: a list row; the first item is the query, the second its positive (further
      items, the negatives of a triplet, are not used).
    """
    return get_query_positives_negatives(row, query_key, document_key, False)[:2]


def get_query_positives_negatives(row: Row, query_key: str, document_key: str,
                                  with_negatives: bool = True) -> tuple[str, list[str], list[str]]:
    """:func:`get_query_positives` and the row's own negatives (``neg``, ``negative``,
    ``negative_N``, or a list row's items after the positive); none when ``with_negatives`` is off."""
    value = _parsed(row)
    if isinstance(value, list):
        if len(value) < 2:
            raise BadRowError(row.source, row.line, f"list row has {len(value)} item(s), expected [query, positive, ...]")
        negatives = [_text(row, f"item {i}", t) for i, t in enumerate(value[2:], 2)] if with_negatives else []
        return _text(row, "item 0", value[0]), [_text(row, "item 1", value[1])], negatives
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object or a list")
    query, positives = _dict_query_positives(row, value, query_key, document_key)
    return query, positives, _input_negatives(row, value) if with_negatives else []


def _dict_query_positives(row: Row, value: dict, query_key: str, document_key: str) -> tuple[str, list[str]]:
    if "set" in value and query_key not in value:
        items = value["set"]
        if not isinstance(items, list) or len(items) < 2:
            raise BadRowError(row.source, row.line, "'set' must be a list of at least 2 texts [query, positive, ...]")
        return _text(row, "set[0]", items[0]), [_text(row, f"set[{i}]", t) for i, t in enumerate(items[1:], 1)]
    if query_key not in value:
        raise BadRowError(row.source, row.line, f"missing key {query_key!r} (has {sorted(value)[:8]})")
    query = _text(row, query_key, value[query_key])
    if document_key in value:
        return query, [_text(row, document_key, value[document_key])]
    if "pos" in value:
        pos = value["pos"]
        if isinstance(pos, str):  # e.g. a part-of-speech column named pos: never a positive
            raise BadRowError(row.source, row.line, f"'pos' is a string ({pos[:40]!r}), expected a list of "
                                                    f"positive texts; is --document_key={document_key!r} right?")
        if not isinstance(pos, list) or not pos:
            raise BadRowError(row.source, row.line, "'pos' must be a non-empty list of texts")
        return query, [_text(row, f"pos[{i}]", t) for i, t in enumerate(pos)]
    raise BadRowError(row.source, row.line, f"missing key {document_key!r} (or 'pos') (has {sorted(value)[:8]})")


def _input_negatives(row: Row, value: dict) -> list[str]:
    """The negatives a row brings: ``neg`` (a list or one text), ``negative``, ``negative_1``, ..."""
    if "neg" in value:
        neg = value["neg"]
        items = [neg] if isinstance(neg, str) else neg
        if not isinstance(items, list):
            raise BadRowError(row.source, row.line, "'neg' must be a list of texts")
        return [_text(row, f"neg[{i}]", t) for i, t in enumerate(items)]
    keys = (["negative"] if "negative" in value else []) + sorted(
        (k for k in value if k.startswith("negative_") and k[9:].isdigit()), key=lambda k: int(k[9:]))
    return [_text(row, k, value[k]) for k in keys]


def _row_id(row: Row, value: dict) -> str:
    if "_id" not in value:
        raise BadRowError(row.source, row.line, f"missing key '_id' (has {sorted(value)[:8]})")
    rid = value["_id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
        raise BadRowError(row.source, row.line, f"'_id' must be a non-empty string or integer, got {rid!r}")
    return str(rid)


def get_beir_document(row: Row, text_key: str = "text") -> tuple[str, str, str]:
    """``(id, title, text)`` of a BeIR corpus row ``{"_id", "title", "text"}`` (``_id`` optional).

    The text a model sees is ``beir_join(title, text)``. A row without ``_id`` gets its line number.
    """
    value = _parsed(row)
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    rid = _row_id(row, value) if "_id" in value else str(row.gid)
    if text_key not in value:
        raise BadRowError(row.source, row.line, f"missing key {text_key!r} (has {sorted(value)[:8]})")
    text, title = value[text_key], value.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise BadRowError(row.source, row.line, "'title' and the text must be strings")
    _text(row, "title + text", beir_join(title, text))
    return rid, title, text


def beir_join(title: str, text: str) -> str:
    """A BeIR document as models embed it: title and text joined by a space, stripped."""
    return f"{title} {text}".strip()


def get_beir_query(row: Row) -> tuple[str, str]:
    """``(id, text)`` of a BeIR queries row ``{"_id", "text"}``."""
    value = _parsed(row)
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    return _row_id(row, value), _text(row, "text", value.get("text"))


@dataclass(frozen=True)
class Qrel:
    line: int
    query_id: str
    doc_id: str
    score: float


def read_qrels(path: str) -> tuple[list[Qrel], list[BadRowError]]:
    """A BeIR qrels TSV (``query-id  corpus-id  score``, header optional): its judgements, and its
    malformed lines as errors naming file and line.

    Raises:
        InputError: when the file is missing.
    """
    if not os.path.isfile(path):
        raise InputError(f"no such qrels file: {path}")
    out, bad = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            if lineno == 1 and cols[-1].strip().lower() == "score":
                continue
            if len(cols) != 3 or not cols[0] or not cols[1]:
                bad.append(BadRowError(path, lineno, "expected 3 tab-separated columns query-id, corpus-id, score "
                                                     f"(got {line.strip()[:80]!r})"))
                continue
            try:
                out.append(Qrel(lineno, cols[0], cols[1], float(cols[2])))
            except ValueError:
                bad.append(BadRowError(path, lineno, f"score {cols[2]!r} is not a number"))
    return out, bad


# ---------------------------------------------------------------- atomic outputs

@contextmanager
def atomic_open(path: str, mode: str = "w", gzip_output: bool = False):
    """Write to a temporary name beside ``path`` and rename on success; nothing half-written."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if gzip_output:
            raw = open(tmp, "wb")
            # mtime=0 and no file name: the same content gives the same bytes.
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            f = io.TextIOWrapper(gz, encoding="utf-8", newline="\n") if "b" not in mode else gz
            try:
                yield f
            finally:
                f.close()
                raw.close()
        else:
            with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
                yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        f.write("\n")


def write_json_list(path: str, items: Iterable[str]) -> None:
    """A JSON list of already-encoded ``items``, streamed: the bytes of :func:`write_json` of the list."""
    with atomic_open(path) as f:
        sep = "[\n  "
        for item in items:
            f.write(sep + item)
            sep = ",\n  "
        f.write("[]\n" if sep.startswith("[") else "\n]\n")


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


def save_dataset(ds, path: str) -> None:
    """``ds.save_to_disk(path)`` atomically: written beside it, then renamed over it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(tmp)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_folder_atomically(path: str, fill: Callable[[str], Any]) -> Any:
    """``fill(tmp)`` writes a folder beside ``path``, which then replaces ``path`` (nothing half-written
    is ever at ``path``); returns what ``fill`` returned."""
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        out = fill(tmp)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_lines(paths: Sequence[str]) -> Iterator[str]:
    """The lines of ``paths`` in order, without their line ends."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")


def write_lines(path: str, lines: Iterable[str]) -> int:
    n = 0
    with atomic_open(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            n += 1
    return n


def merge_files(parts: Sequence[str], out_path: str, gzip_output: bool = False) -> None:
    """Concatenate part files in order into ``out_path`` (atomically, optionally gzipped)."""
    with atomic_open(out_path, "wb", gzip_output=gzip_output) as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def save_npy(path: str, array: np.ndarray) -> None:
    # Through a buffer: numpy's direct file write reports a full disk as an OSError without errno.
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())


def save_npz(path: str, **arrays: np.ndarray) -> None:
    """``np.savez`` with reproducible bytes: the same arrays give the same file (``np.savez`` stamps
    each member with the time of writing). Object arrays (ragged rows) are pickled, as numpy does."""
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, array, allow_pickle=array.dtype.hasobject)


def write_parquet(path: str, table) -> None:
    """A pyarrow table to ``path``, atomically."""
    import pyarrow.parquet as pq

    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def join_parquet(parts: Sequence[str], out_path: str) -> int:
    """Concatenate parquet files in order into one (streamed a file at a time; schemas unified, so a
    column that is all null in one part and text in another is text). Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    schema = schema.remove_metadata()
    tmp, rows = f"{out_path}.tmp-{os.getpid()}", 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for p in parts:
            table = pq.read_table(p)
            table = table.select([n for n in schema.names if n in table.column_names])
            for name in schema.names:
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(len(table), schema.field(name).type))
            writer.write_table(table.select(schema.names).cast(schema))
            rows += len(table)
    os.replace(tmp, out_path)
    return rows
