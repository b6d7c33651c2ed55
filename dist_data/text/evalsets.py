"""Evaluation sets named by ``--against``: which texts each holds, whatever shape it comes in.

One ``--against`` item may be:

- a file, folder, glob or hub name of rows: one set (named by its stem), the ``--against_key`` field
  of each row;
- a collection manifest (``.yaml``/``.yml``, or ``.json`` with ``datasets:``): each dataset is one
  set (its manifest ``name``), read as an item of its own (any shape below); an entry's
  ``against_key`` or ``text_key`` names its field;
- a BeIR folder (``corpus``, ``queries``, ``qrels/``): two sets, ``NAME.queries`` and
  ``NAME.corpus`` (title and text joined, as models embed them);
- an MTEB dataset folder (``{split}.jsonl`` in a layout :mod:`dist_data.text.tasks` reads): one set
  per evaluation split, ``NAME.{split}`` (every split but ``train``; a folder with only ``train`` is
  refused), every text column of a row (``text``, ``sentences``, ``sentence1``/``sentence2``, ``query``/``positive``/
  ``negative``);
- a folder of those (the ``--data_path`` that ``embed_mteb`` reads): each sub-folder as above.

A row may hold several texts (an STS pair, a reranking list): each is an item of the set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

from ..core.manifests import is_manifest, manifest_datasets
from ..core.errors import BadRowError, InputError
from ..core.rows import checked_text, get_texts, Row, row_value
from .layouts import beir_join, get_beir_document, get_beir_query
from .tasks import has_layout, local_splits, split_file, TASK_TYPES

# the text columns of MTEB's layouts (tasks.py), in the order a row's items are numbered
MTEB_TEXT_COLUMNS = ("text", "sentences", "sentence1", "sentence2", "query", "positive", "negative")
_MTEB_TYPES = tuple(t for t in TASK_TYPES if t != "retrieval")


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: ``dataset`` is what the reader reads, ``texts(row)`` the row's items."""

    name: str
    dataset: str
    texts: Callable[[Row], list[str]]
    split: str = "train"


def eval_sets(items: Sequence[str], text_key: str) -> list[EvalSet]:
    """The evaluation sets of ``--against``'s items (names made unique by a ``_N`` suffix).

    Raises:
        InputError: an item that names nothing readable, or a folder of embed_mteb's vectors.
    """
    sets = [s for i, item in enumerate(items) for s in _expand(item.strip(), None, text_key, f"set{i}")]
    names = [s.name for s in sets]
    return [s if names.count(s.name) == 1 else EvalSet(f"{s.name}_{i}", s.dataset, s.texts, s.split)
            for i, s in enumerate(sets)]


def _stem(path: str) -> str:
    return os.path.basename(os.path.expanduser(path).rstrip("/")).split(".")[0]


def _expand(item: str, name: str | None, key: str, fallback: str) -> list[EvalSet]:
    path = os.path.expanduser(item)
    name = name or _stem(path) or fallback
    if os.path.isfile(path) and is_manifest(path):
        out = []
        for ds in manifest_datasets(path):
            entry_key = str(ds.overrides.get("against_key") or ds.overrides.get("text_key") or key)
            out += _expand(ds.path, ds.name, entry_key, ds.name)
        return out
    if os.path.isdir(path):
        if _is_beir(path):
            return beir_sets(path, name)
        if _is_mteb(path):
            return mteb_sets(path, name)
        subs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
        if subs and all(_is_beir(os.path.join(path, d)) or _is_mteb(os.path.join(path, d)) for d in subs):
            return [s for d in subs for s in _expand(os.path.join(path, d), d, key, d)]
        if any(f.endswith(".npz") for f in os.listdir(path)):
            raise InputError(f"--against {item}: a folder of vectors (.npz, as embed_mteb writes them) holds no texts "
                             f"to compare; give the data folder it read (--data_path) instead")
    return [EvalSet(name, item, lambda row: get_texts(row, [key]))]


def _is_beir(folder: str) -> bool:
    return has_layout(folder, "retrieval")


def _is_mteb(folder: str) -> bool:
    try:
        return any(has_layout(folder, t) for t in _MTEB_TYPES)
    except (InputError, BadRowError):
        return False


def beir_sets(folder: str, name: str) -> list[EvalSet]:
    def document(row: Row) -> list[str]:
        _, title, text = get_beir_document(row)
        return [beir_join(title, text)]

    return [EvalSet(f"{name}.queries", split_file(folder, "queries"), lambda row: [get_beir_query(row)[1]]),
            EvalSet(f"{name}.corpus", split_file(folder, "corpus"), document)]


def mteb_sets(folder: str, name: str) -> list[EvalSet]:
    splits = [s for t in _MTEB_TYPES for s in local_splits(folder, t)]
    splits = list(dict.fromkeys(splits))
    evaluation = [s for s in splits if s != "train"]
    if not evaluation:
        given = split_file(folder, splits[0]) if splits else folder
        raise InputError(f"--against {folder}: an MTEB data folder is checked by its evaluation splits (every split "
                         f"but train) and this one has only {', '.join(splits) or 'no split'}; to check against "
                         f"its rows anyway, give the file itself ({given})")
    return [EvalSet(f"{name}.{s}", split_file(folder, s), mteb_texts) for s in evaluation]


def mteb_texts(row: Row) -> list[str]:
    """Every text of an MTEB-layout row, column by column (a list column item by item).

    Raises:
        BadRowError: a row with none of the text columns, or a text that is not a non-empty string.
    """
    value = row_value(row)
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    columns = [c for c in MTEB_TEXT_COLUMNS if c in value]
    if not columns:
        raise BadRowError(row.source, row.line, f"none of the text columns {', '.join(MTEB_TEXT_COLUMNS)} "
                          f"(has {sorted(value)[:8]})")
    out = []
    for c in columns:
        for text in value[c] if isinstance(value[c], list) else [value[c]]:
            out.append(checked_text(row, c, text))
    return out
