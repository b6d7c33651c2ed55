"""Reading and writing LAIONet's parquet tables: columns by name, labels checked, per-class lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core import distributed
from ..core.errors import BadRowError, InputError
from ..core.write import atomic_open
from ..core.blocks import plan_blocks
from ..core.rows import parse_or_reject, REJECTED
from ..core.stats import Stats
from .classes import wnid_to_label
from .laion import INDEX, TEXT
from .tables import one_line


def laion_table(records: list[dict[str, Any]], float_columns: Sequence[str] = ()):
    """A pyarrow table of ``records`` (keys of the first record), scores as float32."""
    import pyarrow as pa

    if not records:
        return pa.table({})
    table = pa.Table.from_pylist(records)
    for name in float_columns:
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.float32()))
    return table


def require_columns(path: str, names: Sequence[str], need: Sequence[str]) -> None:
    missing = [c for c in need if c not in names]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (has {', '.join(list(names)[:12])})")


def column_array(path: str, name: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[name]).column(name).to_numpy(zero_copy_only=False)


def write_wnid_lists(path: str, parquet_path: str, column: str, wnids: Sequence[str]) -> None:
    """``{wnid: [laion_index, ...]}`` (every class in label order, indices sorted) from a table whose
    ``column`` holds a wnid or a list of them."""
    import pyarrow.parquet as pq

    names = pq.read_schema(parquet_path).names
    out: dict[str, list[int]] = {w: [] for w in wnids}
    if column in names:
        table = pq.read_table(parquet_path, columns=[INDEX, column])
        for index, found in zip(table.column(INDEX).to_pylist(), table.column(column).to_pylist()):
            for w in (found if isinstance(found, list) else [found]):
                out.setdefault(w, []).append(int(index))  # LAIONet's id of a class too
    with atomic_open(path) as f:
        json.dump({w: sorted(v) for w, v in out.items()}, f)


@dataclass
class Columns:
    """The columns of a LAIONet parquet a one-process step needs, whole (a few per row)."""

    path: str
    data: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def labels(self, column: str) -> np.ndarray:
        known = wnid_to_label()
        out = np.empty(len(self), dtype=np.int64)
        for i, w in enumerate(self.data[column]):
            if w not in known:
                raise BadRowError(self.path, i + 1, f"{column!r} is {w!r:.40}, not an ImageNet-1k wnid")
            out[i] = known[w]
        return out

    def floats(self, column: str) -> np.ndarray:
        return np.asarray([np.nan if v is None else v for v in self.data[column]], dtype=np.float64)

    def indices(self) -> np.ndarray:
        if INDEX in self.data:
            return np.asarray(self.data[INDEX], dtype=np.int64)
        return np.arange(len(self), dtype=np.int64)

    def table_rows(self, positions: np.ndarray, image_root: str, source: str | None = None) -> list[tuple]:
        """``(filepath, label, caption[, source])`` rows; filepath ``{image_root}/{wnid}/{laion_index}.jpg``."""
        known, indices = wnid_to_label(), self.indices()
        wnids, texts = self.data["wnid"], self.data[TEXT]
        out = []
        for p in np.asarray(positions, dtype=np.int64).tolist():
            text = texts[p]
            if not isinstance(text, str):
                raise BadRowError(self.path, p + 1, f"{TEXT!r} is {text!r:.40}, expected a caption")
            row = (f"{image_root.rstrip('/')}/{wnids[p]}/{int(indices[p])}.jpg", known[wnids[p]], one_line(text))
            out.append(row + ((source,) if source is not None else ()))
        return out


def load_columns(path: str, required: Sequence[str], optional: Sequence[str] = ()) -> Columns:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    require_columns(path, names, required)
    columns = list(required) + [c for c in optional if c in names]
    table = pq.read_table(path, columns=columns)
    return Columns(path, {c: table.column(c).to_pylist() for c in columns})


@dataclass
class References:
    """This rank's reference captions: global row id, text, class label."""

    keys: np.ndarray
    texts: list[str]
    labels: np.ndarray


def reference_text(value: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = value.get(k)
        if isinstance(v, (list, tuple)):
            v = " ".join(str(x) for x in v)
        if v is not None and str(v).strip():
            parts.append(str(v).strip())
    return " ".join(parts)


def read_references(run: Any, known: dict[str, int], rejects: list[dict[str, Any]]) -> References:
    """This rank's block-aligned share of ``--references`` (the text from ``--reference_key``, a comma
    list joined; the class from ``--reference_wnid_key``)."""
    opts, stats = run.opts, run.stats
    keys_ = [k.strip() for k in opts.reference_key.split(",") if k.strip()]
    wnid_key, on_bad_rows = opts.reference_wnid_key, opts.on_bad_rows
    scratch = Stats()  # the references' input rows are not the run's
    plan = plan_blocks(run.info, scratch, opts.references, opts.split, None, 0, opts.block_rows, unit="references")

    def parse(row):
        if row.error is not None:
            raise BadRowError(row.source, row.line, row.error)
        value = row.value
        if not isinstance(value, dict):
            raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
        missing = [k for k in (*keys_, wnid_key) if k not in value]
        if missing:
            raise BadRowError(row.source, row.line, f"missing key {missing[0]!r} (has {sorted(value)[:8]})")
        if value[wnid_key] not in known:
            raise BadRowError(row.source, row.line, f"{wnid_key!r} is {value[wnid_key]!r:.40}, not an ImageNet-1k wnid")
        return reference_text(value, keys_), known[value[wnid_key]]

    ids, texts, labels = [], [], []
    with distributed.same_error_on_every_rank():
        for _, rows in plan.blocks():
            for row in rows:
                parsed = parse_or_reject(row, parse, on_bad_rows, rejects, stats)
                if parsed is REJECTED:
                    continue
                text, label = parsed
                if not text:
                    stats.add("dropped", reason="empty_reference")
                    continue
                ids.append(row.gid)
                texts.append(text)
                labels.append(label)
    stats.add("references", len(texts))
    return References(np.asarray(ids, dtype=np.int64), texts, np.asarray(labels, dtype=np.int64))
