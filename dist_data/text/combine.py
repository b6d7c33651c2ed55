"""The rules of combining datasets (:mod:`dist_data.combine` is the verb): one global label space per
task type (what makes two rows one class), the 80/20 split of a test-only dataset, the (anchor,
positive) pairs of a collection, and the text sets' on-disk layout."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import BadRowError, InputError
from ..core.files import load_npz, read_json
from ..core.sources import read_rows
from ..core.write import save_to_disk, write_folder_atomically, write_json
from .tasks import load_reranking, seeded_rng

STS_SAME_CLASS = 3.0
OWN_TEST_CLASSES = ("retrieval", "sts", "reranking", "pair_classification")  # test rows keep classes unseen in train
STS_POSITIVE = 4.0  # combine all: an STS pair is a (anchor, positive) pair from this score (0-5 scale) up


class Rows:
    """Vectors and local class ids of one split, grown by :meth:`add`."""

    def __init__(self):
        self.data: list[np.ndarray] = []
        self.label: list[np.ndarray] = []

    def add(self, data: np.ndarray, label: np.ndarray) -> None:
        self.data.append(np.asarray(data, dtype=np.float32))
        self.label.append(np.asarray(label, dtype=np.int64))

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.data:
            return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate(self.data), np.concatenate(self.label)


def _pair_classes(same: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Classes of (sentence1, sentence2) rows: one shared class where ``same``, else one each."""
    n = len(same)
    c1 = start + np.arange(n) * 2
    c2 = np.where(same, c1, c1 + 1)
    return c1, c2, start + 2 * n


def dataset_rows(folder: str, task_type: str, splits: list[str]) -> tuple[dict[str, Rows], Rows, int]:
    """Each split of one embedded dataset as rows with local class ids (classes are shared
    between splits only where the labels themselves are: classification, clustering, retrieval),
    the rows that always go to train (retrieval's unjudged singletons), and the number of classes."""
    out: dict[str, Rows] = {}
    always_train = Rows()
    next_class = 0
    if task_type == "retrieval":
        corpus, queries = (load_npz(os.path.join(folder, f"{n}.npz")) for n in ("corpus", "queries"))
        q_row = {q: i for i, q in enumerate(queries["id"].tolist())}
        d_row = {d: i for i, d in enumerate(corpus["id"].tolist())}
        judged_q, judged_d = set(), set()
        for split in splits:
            qrels = load_npz(os.path.join(folder, f"{split}.npz"))
            rows = out.setdefault(split, Rows())
            qs, ds = qrels["query_id"].tolist(), qrels["corpus_id"].tolist()
            missing = [x for x in qs if x not in q_row] + [x for x in ds if x not in d_row]
            if missing:
                raise InputError(f"{folder}: qrels of {split} name unknown ids, e.g. {missing[0]!r}")
            # the class of a judged query is its row in queries.npz: the same in every split
            cls = np.array([q_row[q] for q in qs], dtype=np.int64)
            rows.add(queries["data"][[q_row[q] for q in qs]], cls)
            rows.add(corpus["data"][[d_row[d] for d in ds]], cls)
            judged_q.update(qs)
            judged_d.update(ds)
        next_class = len(q_row)
        lone_q = [i for q, i in q_row.items() if q not in judged_q]
        lone_d = [i for d, i in d_row.items() if d not in judged_d]
        always_train.add(queries["data"][lone_q], np.array(lone_q, dtype=np.int64))
        always_train.add(corpus["data"][lone_d], next_class + np.arange(len(lone_d)))
        return out, always_train, next_class + len(lone_d)
    for split in splits:
        z = load_npz(os.path.join(folder, f"{split}.npz")) if task_type != "reranking" else None
        rows = out.setdefault(split, Rows())
        if task_type in ("classification", "clustering"):
            rows.add(z["data"], z["label"])
            next_class = max(next_class, int(z["label"].max()) + 1 if len(z["label"]) else 0)
        elif task_type in ("sts", "pair_classification"):
            same = z["score"] >= STS_SAME_CLASS if task_type == "sts" else z["label"] == 1
            c1, c2, next_class = _pair_classes(same, next_class)
            rows.add(z["sentence1"], c1)
            rows.add(z["sentence2"], c2)
        elif task_type == "reranking":
            z = load_reranking(os.path.join(folder, f"{split}.npz"))
            n_q = len(z["query"])
            q_cls = next_class + np.arange(n_q)
            pos_of = np.repeat(np.arange(n_q), np.diff(z["positive_offsets"]))
            rows.add(z["query"], q_cls)
            rows.add(z["positive"], q_cls[pos_of])
            n_neg = len(z["negative"])
            rows.add(z["negative"], next_class + n_q + np.arange(n_neg))
            next_class += n_q + n_neg
        else:
            raise ValueError(f"unknown task type {task_type!r}")
    return out, always_train, next_class


def split_80_20(data: np.ndarray, label: np.ndarray, seed: int, name: str,
                how: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A seeded 80/20 split: ``rows`` by row, ``stratified`` by row within each label, ``classes``
    by whole classes (a query with its documents, a similar pair: never cut apart)."""
    rng = seeded_rng(seed, name)
    if how == "classes":
        classes = rng.permutation(np.unique(label))
        train_classes = classes[: int(round(0.8 * len(classes)))]
        in_train = np.isin(label, train_classes)
        return (data[in_train], label[in_train]), (data[~in_train], label[~in_train])
    groups = [np.flatnonzero(label == c) for c in np.unique(label)] if how == "stratified" else [np.arange(len(label))]
    train, test = [], []
    for g in groups:
        g = rng.permutation(g)
        cut = int(round(0.8 * len(g)))
        train.append(g[:cut])
        test.append(g[cut:])
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return (data[tr], label[tr]), (data[te], label[te])


def collection_pairs(path: str) -> tuple[str, list[tuple[str, str]]]:
    """A sentence-transformers training-data file as (anchor, positive) pairs, by its schema
    (detected on the first row, every row checked):

    - ``{"query", "pos": [...], ("neg")}``: one pair per positive;
    - ``{"set": [...]}``: every i < j pair;
    - 3 columns (a list or a 3-key object: anchor, positive, negative): (anchor, positive);
    - 2 columns: the pair itself.

    Raises:
        BadRowError: a row that does not follow the file's schema (file and line named).
    """

    rows = read_rows(path)
    if not rows:
        raise InputError(f"{path} is empty")

    def schema_of(row) -> str:
        v = row.value
        if isinstance(v, dict) and "set" in v:
            return "set"
        if isinstance(v, dict) and "query" in v and "pos" in v:
            return "query-pos"
        width = len(v) if isinstance(v, (list, dict)) else 0
        if width in (2, 3):
            return f"{width}-column"
        raise BadRowError(row.source, row.line, f"unknown layout {str(v)[:80]!r}")

    def text(row, t) -> str:
        if not isinstance(t, str) or not t.strip():
            raise BadRowError(row.source, row.line, f"expected a non-empty text, got {t!r:.60}")
        return t

    if rows[0].error:
        raise BadRowError(rows[0].source, rows[0].line, rows[0].error)
    schema = schema_of(rows[0])
    pairs = []
    for row in rows:
        if row.error or schema_of(row) != schema:
            raise BadRowError(row.source, row.line, row.error or f"row does not follow the file's {schema} layout")
        v = row.value
        if schema == "set":
            if not isinstance(v["set"], list):  # a string would be taken letter by letter
                raise BadRowError(row.source, row.line, f"'set' is a {type(v['set']).__name__} "
                                  f"({v['set']!r:.40}), expected a list of texts")
            items = [text(row, t) for t in v["set"]]
            pairs += [(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items))]
        elif schema == "query-pos":
            q = text(row, v["query"])
            pairs += [(q, text(row, p)) for p in (v["pos"] if isinstance(v["pos"], list) else [v["pos"]])]
        else:
            cols = list(v.values()) if isinstance(v, dict) else v
            pairs.append((text(row, cols[0]), text(row, cols[1])))
    return schema, pairs


def cap_rows(ds, n: int | None, seed: int, name: str):
    if n and len(ds) > n:
        ds = ds.select(np.sort(seeded_rng(seed, name).choice(len(ds), n, replace=False)).tolist())
    return ds


def save_text_sets(out: str, splits: dict[str, dict[str, list]]) -> None:
    """``out/{split}`` (``save_to_disk``) with the trainer's columns only, and ``out/provenance.json``
    naming each row's dataset (the ``dataset`` entry of each split's columns)."""
    import datasets

    names = sorted({d for columns in splits.values() for d in columns["dataset"]})
    index = {n: i for i, n in enumerate(names)}

    def fill(tmp: str) -> None:  # every split, or none: never a train/ without its test/
        os.makedirs(tmp)
        for split, columns in splits.items():
            save_to_disk(datasets.Dataset.from_dict({k: v for k, v in columns.items() if k != "dataset"}),
                         os.path.join(tmp, split))
        write_json(os.path.join(tmp, "provenance.json"),
                   {"datasets": names, **{split: [index[d] for d in c["dataset"]] for split, c in splits.items()}})

    write_folder_atomically(out, fill)


def load_text_set(folder: str, split: str) -> tuple[Any, list[str]]:
    """A split written by :func:`save_text_sets` and its rows' dataset names."""
    import datasets

    prov = read_json(os.path.join(folder, "provenance.json"))
    if prov is None:
        raise InputError(f"{folder} has no provenance.json: rerun dist_data.combine on it")
    ds = datasets.load_from_disk(os.path.join(folder, split))
    return ds, [prov["datasets"][i] for i in prov[split]]
