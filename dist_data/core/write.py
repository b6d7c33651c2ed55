"""Atomic output files: temp name, then rename; merging rank-local parts; npy/npz/parquet/datasets."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Sequence

import numpy as np

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


def save_dataset(ds, path: str) -> None:
    """``ds.save_to_disk(path)`` atomically: written beside it, then renamed over it (a failed write,
    a full disk, leaves neither a half dataset nor its temporary folder)."""
    write_folder_atomically(path, lambda tmp: save_to_disk(ds, tmp))


def save_to_disk(ds, folder: str) -> None:
    """``ds.save_to_disk(folder)`` with the same bytes for the same rows: ``datasets`` records a
    fingerprint drawn from the dataset's history (paths, a random draw); it becomes a hash of the
    data files, so a resumed run, another folder or another machine writes the same ``state.json``."""
    import hashlib

    ds.save_to_disk(folder)
    state_path = os.path.join(folder, "state.json")
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    digest = hashlib.sha256()
    for entry in state.get("_data_files", []):
        with open(os.path.join(folder, entry["filename"]), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    state["_fingerprint"] = digest.hexdigest()[:16]
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)


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
