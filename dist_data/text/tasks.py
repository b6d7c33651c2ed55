"""MTEB-shaped datasets: task types, the task registry check, and reading a task's splits.

Local layout read with ``--data_path`` (the shape MTEB's datasets have on the hub)::

    DATA/{dataset}/{split}.jsonl     classification      {"text", "label"}
                                     clustering          {"sentences": [...], "labels": [...]}
                                     sts                 {"sentence1", "sentence2", "score"}
                                     pair_classification {"sentence1", "sentence2", "label"}
                                                         (or MTEB's lists: {"sentence1": [...], "sentence2": [...], "labels": [...]})
                                     reranking           {"query", "positive": [...], "negative": [...]}
    DATA/{dataset}/corpus.jsonl, queries.jsonl, qrels/{split}.tsv      retrieval (BeIR)

Every file may also be ``.jsonl.gz`` or ``.parquet``.
"""

from __future__ import annotations

import glob
import os
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.errors import BadRowError, InputError
from ..core.files import open_npz
from ..core.rows import Row
from ..core.sources import read_rows
from .layouts import beir_join, get_beir_document, get_beir_query, read_qrels

TASK_TYPES = {
    "classification": "Classification",
    "clustering": "Clustering",
    "retrieval": "Retrieval",
    "sts": "STS",
    "reranking": "Reranking",
    "pair_classification": "PairClassification",
}
SPLIT_ORDER = ("train", "validation", "dev", "test")
TRAIN_SPLITS = ("train", "validation", "dev", "val")  # what "train" means when datasets are combined
STS_SCALE = 5.0  # STS scores are on 0-5; finetune_data writes them divided by this (CoSENT's [0, 1])
NOT_SPLITS = {"corpus", "queries", "source"}  # the other files of a dataset folder (source.json: see mteb_hub)


@dataclass(frozen=True)
class TaskRef:
    """A dataset of one task type: its MTEB name and the folder name used for outputs."""

    task_type: str
    name: str  # as the user gave it (the output folder)
    mteb_name: str | None  # the registry's name, when mteb is installed


def registry(task_type: str) -> dict[str, str]:
    """``{lower-case alias: MTEB task name}`` of a task type: task names and dataset path suffixes.

    Raises:
        ImportError: without the ``mteb`` package.
    """
    import mteb

    names: dict[str, str] = {}
    tasks = [*mteb.get_tasks(task_types=[TASK_TYPES[task_type]]),  # current tasks first, then superseded ones
             *mteb.get_tasks(task_types=[TASK_TYPES[task_type]], exclude_superseded=False)]
    for task in tasks:
        meta = task.metadata
        names.setdefault(meta.name.lower(), meta.name)
        path = (meta.dataset or {}).get("path", "")
        if path:
            names.setdefault(path.split("/")[-1].lower(), meta.name)
    return names


def english_text_tasks(task_type: str) -> list[str]:
    """What ``--dataset_name=all`` means without ``--data_path``: the registry's current (not
    superseded) text tasks of the type with an English subset, aggregates left out (their parts are
    tasks of their own)."""
    import mteb

    tasks = mteb.get_tasks(task_types=[TASK_TYPES[task_type]], languages=["eng"])
    return sorted(t.metadata.name for t in tasks if list(t.metadata.modalities) == ["text"] and not t.is_aggregate)


def seeded_rng(seed: int, label: str) -> np.random.Generator:
    """A generator for one named draw (a dataset, a split): independent of every other draw."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def dataset_folder(data_path: str, name: str) -> str:
    folder = os.path.join(data_path, name)
    if not os.path.isdir(folder):
        raise InputError(f"no folder {folder} for dataset {name!r}")
    return folder


def beir_table(folder: str, name: str) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a retrieval dataset's ``corpus`` (title and text joined) or ``queries``."""
    rows = read_rows(split_file(folder, name))
    if name == "corpus":
        docs = [get_beir_document(r) for r in rows]
        return [d[0] for d in docs], [beir_join(d[1], d[2]) for d in docs]
    queries = [get_beir_query(r) for r in rows]
    return [q[0] for q in queries], [q[1] for q in queries]


def resolve_tasks(task_type: str, dataset_name: str | Sequence[str], data_path: str | None) -> list[TaskRef]:
    """The datasets to run, checked against MTEB's registry (and, with ``data_path``, the folder).

    ``dataset_name='all'``: every current English text task of the type (with ``data_path``: every
    dataset folder there in the type's layout).

    Raises:
        ValueError: an unknown task type, or a name the registry does not know (valid names listed).
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"--task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    if isinstance(dataset_name, (list, tuple)):  # fire reads "a,b" as a tuple
        dataset_name = ",".join(map(str, dataset_name))
    local = [n for n in str(dataset_name).split(",") if n]
    if data_path and dataset_name != "all" and all(os.path.isdir(os.path.join(data_path, n)) for n in local):
        return [TaskRef(task_type, n, None) for n in local]  # local folders: no registry to consult (~3 s)
    try:
        known = registry(task_type)
    except ImportError:
        known = None
    if dataset_name == "all":
        if data_path:
            names = sorted(d for d in os.listdir(data_path) if os.path.isdir(os.path.join(data_path, d))
                           and has_layout(os.path.join(data_path, d), task_type))
            if not names:
                raise InputError(f"--data_path {data_path}: no dataset folder in the {task_type} layout (rows with "
                                 f"{' or '.join('+'.join(sorted(c)) for c in REQUIRED_COLUMNS[task_type])})")
        elif known is not None:
            names = english_text_tasks(task_type)
        else:
            raise ValueError("--dataset_name=all needs the mteb package (pip install mteb) or --data_path")
    else:
        names = [n for n in str(dataset_name).split(",") if n]
    refs = []
    for name in names:
        mteb_name = None
        if known is not None:
            mteb_name = known.get(name.lower())
            if mteb_name is None and not data_path:
                other = next((t for t in TASK_TYPES if t != task_type and name.lower() in registry(t)), None)
                if other:
                    raise ValueError(f"{name!r} is a {other} task of the MTEB registry, not {task_type}: "
                                     f"pass --task_type={other}")
                import difflib

                valid = sorted(set(known.values()))
                close = difflib.get_close_matches(name, valid, n=5, cutoff=0.0)
                raise ValueError(f"{name!r} is not a {task_type} task of the MTEB registry; the closest of its "
                                 f"{len(valid)} {task_type} tasks: {', '.join(close)}")
        refs.append(TaskRef(task_type, name, mteb_name))
    return refs


REQUIRED_COLUMNS = {
    "classification": ({"text", "label"},),
    "clustering": ({"sentences", "labels"},),
    "sts": ({"sentence1", "sentence2", "score"},),
    "pair_classification": ({"sentence1", "sentence2", "label"}, {"sentence1", "sentence2", "labels"}),
    "reranking": ({"query", "positive", "negative"},),
}


def has_layout(folder: str, task_type: str) -> bool:
    """Whether a local dataset folder is in ``task_type``'s layout (judged by its first row)."""
    if task_type == "retrieval":
        return os.path.isdir(os.path.join(folder, "qrels")) and _find(folder, "corpus") is not None
    for split in local_splits(folder, task_type):  # the first row of the first split that has one
        rows = read_rows(split_file(folder, split))
        if rows:  # (an empty split is named when it is read, not a reason to pass the folder by)
            first = rows[0].value
            return isinstance(first, dict) and any(cols <= set(first) for cols in REQUIRED_COLUMNS[task_type])
    return False


def _find(folder: str, stem: str) -> str | None:
    for suffix in (".jsonl", ".jsonl.gz", ".parquet", ".json"):
        path = os.path.join(folder, stem + suffix)
        if os.path.exists(path):
            return path
    return None


def local_splits(folder: str, task_type: str) -> list[str]:
    """The splits present in a local dataset folder, in train, validation, dev, test order."""
    if task_type == "retrieval":
        found = {os.path.basename(p).rsplit(".", 1)[0] for p in glob.glob(os.path.join(folder, "qrels", "*.tsv"))}
    else:
        found = {os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(folder, "*.*"))}
    return sorted(found & set(SPLIT_ORDER), key=SPLIT_ORDER.index) + sorted(found - set(SPLIT_ORDER) - NOT_SPLITS)


def split_file(folder: str, stem: str) -> str:
    path = _find(folder, stem)
    if path is None:
        raise InputError(f"{folder}: no {stem}.jsonl / .jsonl.gz / .parquet")
    return path


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _field(row: Row, key: str) -> Any:
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    if not isinstance(row.value, dict) or key not in row.value:
        raise BadRowError(row.source, row.line, f"missing column {key!r}")
    return row.value[key]


def _text(row: Row, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRowError(row.source, row.line, f"{key!r} must be a non-empty string, got {value!r:.60}")
    return value


def _label(row: Row, key: str, value: Any) -> Any:
    """A class label: an integer or a non-empty string (null, a list or a float is a bad row)."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip())):
        raise BadRowError(row.source, row.line, f"{key!r} must be an integer or a string label, got {value!r:.60}")
    return value


def _number(row: Row, key: str, value: Any, kind: type = float) -> Any:
    """A score (float) or a 0/1 label (int): a number, or a string that reads as one ("high" is a bad row)."""
    try:
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise ValueError
        number = float(value)
        if kind is int and number != int(number):
            raise ValueError
        return int(number) if kind is int else number
    except (TypeError, ValueError):
        raise BadRowError(row.source, row.line, f"{key!r} must be a {'number' if kind is float else 'whole number'}, "
                          f"got {value!r:.60}") from None


def load_split(folder: str, task_type: str, split: str) -> dict[str, Any]:
    """One split of a local dataset as flat columns (texts, labels, scores, offsets)."""
    if task_type == "retrieval":
        judged, bad = read_qrels(os.path.join(folder, "qrels", f"{split}.tsv"))
        if bad:
            raise bad[0]
        pairs = [(q.query_id, q.doc_id) for q in judged if q.score > 0]
        return {"query_id": np.array([p[0] for p in pairs]), "corpus_id": np.array([p[1] for p in pairs])}
    rows = read_rows(split_file(folder, split))
    if not rows:
        raise InputError(f"{folder}: split {split!r} is empty")
    out: dict[str, list] = {}
    if task_type == "classification":
        out = {"text": [_text(r, "text", _field(r, "text")) for r in rows],
               "label": [_label(r, "label", _field(r, "label")) for r in rows]}
    elif task_type == "clustering":
        out = {"text": [], "label": []}
        for r in rows:
            sentences, labels = as_list(_field(r, "sentences")), as_list(_field(r, "labels"))
            if len(sentences) != len(labels):
                raise BadRowError(r.source, r.line, f"{len(sentences)} sentences but {len(labels)} labels")
            out["text"] += [_text(r, "sentences", s) for s in sentences]
            out["label"] += [_label(r, "labels", label) for label in labels]
    elif task_type in ("sts", "pair_classification"):
        target = "score" if task_type == "sts" else "label"
        out = {"sentence1": [], "sentence2": [], target: []}
        for r in rows:
            s1, s2 = as_list(_field(r, "sentence1")), as_list(_field(r, "sentence2"))
            t = as_list(_field(r, target if target in (r.value or {}) else target + "s"))
            if not len(s1) == len(s2) == len(t):
                raise BadRowError(r.source, r.line, "sentence1, sentence2 and the targets differ in length")
            out["sentence1"] += [_text(r, "sentence1", s) for s in s1]
            out["sentence2"] += [_text(r, "sentence2", s) for s in s2]
            out[target] += [_number(r, target, x, float if target == "score" else int) for x in t]
    elif task_type == "reranking":
        out = {"query": [], "positive": [], "negative": [], "positive_offsets": [0], "negative_offsets": [0]}
        for r in rows:
            out["query"].append(_text(r, "query", _field(r, "query")))
            for key in ("positive", "negative"):
                texts = [_text(r, key, t) for t in as_list(_field(r, key))]
                out[key] += texts
                out[f"{key}_offsets"].append(out[f"{key}_offsets"][-1] + len(texts))
    return out


# ---------------------------------------------------------------- the npz layouts CSRv2 reads

VALIDATION_NAMES = ("validation", "dev", "val")


def npz_split_name(task_type: str, split: str, splits: Sequence[str]) -> str:
    """The file name (without ``.npz``) CSRv2's loaders read for ``split``: a validation split is
    ``val`` for retrieval and ``validation`` otherwise (unless another split has that name)."""
    if split not in VALIDATION_NAMES:
        return split
    target = "val" if task_type == "retrieval" else "validation"
    return target if split == target or target not in splits else split


RERANKING_LAYOUTS = ("csrv2", "offsets")
_LAYOUT_KEY, _OBJECT_LAYOUT = "layout", "dist_data:csrv2-object-arrays"


def reranking_arrays(query: np.ndarray, positive: np.ndarray, negative: np.ndarray, positive_offsets: Sequence[int],
                     negative_offsets: Sequence[int], layout: str) -> dict[str, np.ndarray]:
    """A reranking split's arrays. ``csrv2`` (CSRv2's layout): ``positive`` and ``negative`` are
    object arrays holding one ``(n_i, d)`` array per query (``(0, d)`` for none). ``offsets``:
    flat ``(N, d)`` arrays with ``positive_offsets``/``negative_offsets`` (no pickles at all)."""
    if layout == "offsets":
        return {"query": query, "positive": positive, "negative": negative,
                "positive_offsets": np.asarray(positive_offsets, dtype=np.int64),
                "negative_offsets": np.asarray(negative_offsets, dtype=np.int64)}

    def per_query(flat: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
        out = np.empty(len(offsets) - 1, dtype=object)  # never a 3-D array, even when all n_i are equal
        for i in range(len(offsets) - 1):
            out[i] = np.ascontiguousarray(flat[offsets[i]:offsets[i + 1]])
        return out

    return {"query": query, "positive": per_query(positive, positive_offsets),
            "negative": per_query(negative, negative_offsets), _LAYOUT_KEY: np.array(_OBJECT_LAYOUT)}


def load_reranking(path: str) -> dict[str, np.ndarray]:
    """A reranking split in either layout as flat arrays with offsets. Object arrays are unpickled
    only from files dist_data wrote (they carry its layout marker): a pickle can run code.

    Raises:
        InputError: object arrays in a file dist_data did not write.
    """
    with open_npz(path) as z:
        files = set(z.files)
        if "positive_offsets" in files:
            return {k: z[k] for k in ("query", "positive", "negative", "positive_offsets", "negative_offsets")}
        marked = _LAYOUT_KEY in files and str(z[_LAYOUT_KEY]) == _OBJECT_LAYOUT
    if not marked:
        raise InputError(f"{path}: its positive/negative arrays are pickled objects and the file was not written by "
                         f"dist_data; refusing to unpickle it (a pickle can run code). Embed the dataset with "
                         f"dist_data.embed_mteb")
    with np.load(path, allow_pickle=True) as z:
        query = z["query"]
        out = {"query": query}
        for key in ("positive", "negative"):
            parts = [np.asarray(p, dtype=np.float32).reshape(-1, query.shape[1]) for p in z[key]]
            out[key] = np.concatenate(parts) if parts else np.zeros((0, query.shape[1]), np.float32)
            out[f"{key}_offsets"] = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return out
