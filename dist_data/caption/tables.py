"""Caption tables: the TSV that open_clip's ``--dataset-type csv`` reads, and the pure steps on them.

A table is a header line and one line per image-caption pair, tab-separated, quoted the way
pandas' ``to_csv(sep="\\t")`` quotes (a field holding a tab, a quote or a line break is put in
double quotes, quotes doubled), so ``pandas.read_csv(path, sep="\\t")`` -- what open_clip's
``CsvDataset`` does -- reads every caption back exactly. Captions themselves never hold a tab or
a line break (``\\n \\r \\t`` -> space when they are made).

The steps (:func:`random_classes`, :func:`select_classes`, :func:`sample_rows`, :func:`trim_tail`)
are pure numpy and seeded; they return row indices, never drop a row without counting it.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..core.errors import BadRowError, InputError
from ..core.rows import bad_unicode
from ..core.write import atomic_open

_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


TABLE_COLUMNS = ("filepath", "label", "caption")  # what open_clip's csv reader is pointed at


def one_line(text: str) -> str:
    """``\\n``, ``\\r`` and ``\\t`` -> space: a caption fits one TSV field unquoted by them."""
    return text.translate(_BREAKS)


def tsv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as TSV lines (pandas' quoting, ``\\n`` line ends)."""
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return buf.getvalue()


def write_tsv(path: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Header and rows to ``path`` atomically; returns the number of rows."""
    n = 0
    with atomic_open(path) as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


@dataclass
class Table:
    """A caption table in memory: its columns, its rows (lists of strings) and their labels."""

    path: str
    columns: list[str]
    rows: list[list[str]]
    labels: np.ndarray  # (n,) int64, the ``label`` column

    def column(self, name: str) -> list[str]:
        j = self.columns.index(name)
        return [r[j] for r in self.rows]

    def take(self, indices: np.ndarray) -> list[list[str]]:
        return [self.rows[i] for i in indices.tolist()]


def read_tsv(path: str, n_classes: int, require: Sequence[str] = ("filepath", "label")) -> Table:
    """A caption table; a malformed line is an error naming the file and line.

    Raises:
        InputError: the file is missing or lacks a required column.
        BadRowError: a line has the wrong number of fields, or a label that is not in ``0..n_classes-1``.
    """
    if not os.path.isfile(path):
        raise InputError(f"--df_path {path} does not exist")
    rows: list[list[str]] = []
    labels: list[int] = []
    # undecodable bytes are kept as lone surrogates, so that their line (not the file) is named
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        columns = next(reader, None)
        if columns is None:
            raise InputError(f"{path}: empty file (expected a header line)")
        if bad_unicode(columns):
            raise InputError(f"{path}:1: the header is not valid UTF-8")
        missing = [c for c in require if c not in columns]
        if missing:
            raise InputError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {columns})")
        j = columns.index("label")
        for row in reader:
            where = bad_unicode(dict(zip(columns, row)))
            if where:
                raise BadRowError(path, reader.line_num, f"invalid UTF-8 {where}")
            if len(row) != len(columns):
                raise BadRowError(path, reader.line_num, f"{len(row)} fields, expected {len(columns)} ({columns})")
            try:
                label = int(row[j])
            except ValueError:
                raise BadRowError(path, reader.line_num, f"label {row[j]!r} is not an integer") from None
            if not 0 <= label < n_classes:
                raise BadRowError(path, reader.line_num, f"label {label} is outside 0..{n_classes - 1} (the "
                                  f"class-frequency file lists {n_classes} classes)")
            rows.append(row)
            labels.append(label)
    return Table(path, list(columns), rows, np.asarray(labels, dtype=np.int64))


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes)[:n_classes]


def random_classes(n_classes: int, k: int, seed: int) -> list[int]:
    """``k`` distinct classes drawn as ``np.random.seed(seed); np.random.choice(n_classes, k, replace=False)``
    draws them (clip-beyond-tail's draw), sorted."""
    if not 1 <= k <= n_classes:
        raise ValueError(f"--k must be in 1..{n_classes}, got {k}")
    return sorted(np.random.RandomState(seed).choice(n_classes, k, replace=False).tolist())


def select_classes(labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label is in ``classes`` (input order), and their new labels ``0..K-1`` (the
    position of the old label in the sorted ``classes``)."""
    classes = np.asarray(sorted(classes), dtype=np.int64)
    keep = np.flatnonzero(np.isin(labels, classes))
    return keep, np.searchsorted(classes, labels[keep])


def sample_rows(filepaths: Sequence[str], n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn without replacement after sorting by filepath, in the order drawn: what
    ``df.sort_values("filepath").sample(n=n, random_state=seed)`` gives (the sort made stable, so
    rows sharing a filepath keep their input order)."""
    if not 1 <= n <= len(filepaths):
        raise ValueError(f"--n must be in 1..{len(filepaths)} (the rows of the table), got {n}")
    order = np.asarray(sorted(range(len(filepaths)), key=filepaths.__getitem__), dtype=np.int64)
    return order[np.random.RandomState(seed).choice(len(order), n, replace=False)]


def trim_tail(labels: np.ndarray, n_classes: int, lastk: int, ceil: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``lastk`` classes with the fewest rows (ties: lower label first) keep at most ``ceil``
    rows each, drawn at random (seeded); every other row is kept.

    Returns:
        ``(keep, tail)``: the kept row indices in input order, and the tail classes.
    """
    counts = class_counts(labels, n_classes)
    tail = np.argsort(counts, kind="stable")[:lastk]
    rng = np.random.RandomState(seed)
    drop = []
    for c in tail.tolist():
        rows = np.flatnonzero(labels == c)
        if len(rows) > ceil:
            drop.append(rng.choice(rows, len(rows) - ceil, replace=False))
    keep = np.ones(len(labels), dtype=bool)
    if drop:
        keep[np.concatenate(drop)] = False
    return np.flatnonzero(keep), tail


_COUNT_SUFFIX = re.compile(r"_\d+$")
_CLASS_COUNT = re.compile(r"in\d*caps")


def renamed(path: str, classes: int | None = None, n: int | None = None, suffix: str = "") -> str:
    """The output name of a derived table, clip-beyond-tail's way: ``incaps`` (or ``in100caps``) ->
    ``in{K}caps`` for a class subset (else ``in{K}_`` in front), the trailing ``_{rows}`` -> ``_{n}`` for a row sample,
    or the trailing ``_{rows}`` -> ``suffix`` (``_tail5ceil1``)."""
    stem = os.path.basename(path)
    stem = stem[: -len(".tsv")] if stem.endswith(".tsv") else os.path.splitext(stem)[0]
    if classes is not None:
        stem, found = _CLASS_COUNT.subn(f"in{classes}caps", stem, count=1)
        stem = stem if found else f"in{classes}_{stem}"
    if n is not None:
        stem = _COUNT_SUFFIX.sub("", stem) + f"_{n}"
    if suffix:
        stem = _COUNT_SUFFIX.sub("", stem) + suffix
    return stem + ".tsv"


def join_tsv(path: str, columns: Sequence[str], parts: Sequence[str]) -> None:
    """A header and the ``parts`` (TSV bodies, no header) in order, as one file written atomically."""
    import shutil

    with atomic_open(path, "wb") as out:
        out.write(tsv_text([columns]).encode("utf-8"))
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
