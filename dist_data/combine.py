"""Combine the embedded datasets of one task type into one labelled training set.

    python -m dist_data.combine embeddings --task_type=classification \\
        --embedding_path=DIR/sentence-transformers_all-MiniLM-L6-v2 --save_root_path=OUT
    python -m dist_data.combine collection --data_dir=st_training_data/ --max_pairs_per_dataset=100000 \\
        --save_root_path=OUT
    python -m dist_data.combine finetune --task_type=sts --data_dir=FT --max_rows_per_dataset=20000 --save_root_path=OUT
    python -m dist_data.combine all --save_root_path=OUT      # finetune/* + collection as (anchor, positive)

Writes ``OUT/{task_type}/train.npz`` and ``test.npz`` with ``data`` [N, D], ``label`` [N] (one
global label space: each dataset's labels are offset so datasets never collide; also as ``labels``,
the key CSRv2's training dataset reads) and ``dataset`` [N] (the row's dataset, an index into
``datasets.json``), plus ``stats.json``.

Rules (as CSRv2's combine): train = train + validation (+ dev); a dataset with only a test split
is split 80/20 (seeded; by row, stratified for classification; by whole classes for the pair
tasks, so a query keeps its documents). Classification and clustering drop (and count) test rows
whose label never occurs in train; retrieval, sts, reranking and pair_classification keep their
test rows, whose classes are their own. Classes: classification and clustering keep their labels;
retrieval: a judged query and its relevant documents form one class, one (query, document) row
pair per qrel, unjudged queries and documents are singletons in train; sts: score >= 3.0 (0-5
scale) puts both sentences in one class, else two; pair_classification: label 1 puts both in one
class, else two; reranking: a query and its positives share a class, negatives are singletons.

The text sets (``collection``, ``finetune``, ``all``) hold only the trainer's columns; which
dataset each row came from is beside them, in ``provenance.json`` (``{"datasets": [names],
"train": [index per row], "test": [...]}``): a trainer takes every column as an input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .core.manifests import dataset_name
from .core.errors import InputError
from .core.files import load_npz, read_json, require_dir
from .core.write import save_npz, save_to_disk, write_folder_atomically, write_json
from .core.cli import at_least, flag, non_empty, one_of, required
from .core.options import ResultOptions
from .core.paths import INPUT_DIR, OUTPUT_DIR
from .core.run import run_main, with_flags
from .text.tasks import STS_SCALE, TASK_TYPES, TRAIN_SPLITS, load_reranking, seeded_rng
from .core.log import logger

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


def combine_embeddings(task_type: str, embedding_path: str, save_root_path: str, seed: int = 42) -> dict[str, Any]:
    """Combine every dataset of ``task_type`` under ``embedding_path``; returns the stats."""
    metas = []
    for name in sorted(os.listdir(require_dir(embedding_path, "embedding_path"))):
        path = os.path.join(embedding_path, name, "meta.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta["task_type"] == task_type:
                metas.append(meta)
    if not metas:
        raise InputError(f"{embedding_path} holds no {task_type} datasets (looked for */meta.json "
                         f"written by dist_data.embed_mteb)")
    parts = {"train": ([], [], []), "test": ([], [], [])}
    stats: dict[str, Any] = {"datasets": {}}
    offset, dim = 0, None
    for d_id, meta in enumerate(metas):
        name = meta["dataset"]
        per_split, always_train, n_classes = dataset_rows(os.path.join(embedding_path, name), task_type,
                                                          meta["splits"])
        dim = dim or next(r.data[0].shape[1] for r in [*per_split.values(), always_train] if r.data)
        merged = {k: per_split[k].arrays(dim) for k in per_split}
        train_keys = [k for k in merged if k in TRAIN_SPLITS]
        if train_keys:
            train = tuple(np.concatenate([merged[k][i] for k in train_keys]) for i in range(2))
            test = merged.get("test", (np.zeros((0, dim), np.float32), np.zeros(0, np.int64)))
            how = "+".join(train_keys)
        elif "test" in merged:
            train, test = split_80_20(*merged["test"], seed, name, "classes" if task_type in OWN_TEST_CLASSES else
                                      "stratified" if task_type == "classification" else "rows")
            how = "80/20 of test"
        else:
            raise InputError(f"{name}: neither a train nor a test split ({sorted(merged)})")
        extra = always_train.arrays(dim)
        train = (np.concatenate([train[0], extra[0]]), np.concatenate([train[1], extra[1]]))
        # Classification and clustering test a classifier of the training labels: rows of other labels go.
        # The pair tasks' test classes are their own (new queries, new pairs), as CSRv2 keeps them.
        seen = np.isin(test[1], train[1]) | (task_type in OWN_TEST_CLASSES)
        test = (test[0][seen], test[1][seen])
        for key, (data, label) in (("train", train), ("test", test)):
            parts[key][0].append(data)
            parts[key][1].append(label + offset)
            parts[key][2].append(np.full(len(label), d_id, dtype=np.int64))
        stats["datasets"][name] = {"label_offset": offset, "classes": n_classes, "train_rows": len(train[1]),
                                   "test_rows": len(test[1]), "test_dropped_unseen_label": int((~seen).sum()),
                                   "test_rows_of_new_classes": int((~np.isin(test[1], train[1])).sum()),
                                   "train_from": how}
        offset += n_classes
    out_dir = os.path.join(save_root_path, task_type)
    os.makedirs(out_dir, exist_ok=True)
    for key, (data, label, dataset) in parts.items():
        label = np.concatenate(label)  # CSRv2's combine writes "label", its training dataset reads "labels"
        save_npz(os.path.join(out_dir, f"{key}.npz"), data=np.concatenate(data), label=label, labels=label,
                 dataset=np.concatenate(dataset))
    write_json(os.path.join(out_dir, "datasets.json"), [m["dataset"] for m in metas])
    stats["classes"] = offset
    write_json(os.path.join(out_dir, "stats.json"), stats)
    logger.info("combined %d %s dataset(s): %s train rows, %s test rows (%s dropped: label unseen in train), "
                "%s classes -> %s", len(metas), task_type, sum(len(x) for x in parts["train"][1]),
                sum(len(x) for x in parts["test"][1]),
                sum(s["test_dropped_unseen_label"] for s in stats["datasets"].values()), offset, out_dir)
    return stats


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
    from .core.errors import BadRowError
    from .core.sources import read_rows

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


def combine_collection(data_dir: str, save_root_path: str, max_pairs_per_dataset: int | None = None,
                       seed: int = 42) -> dict[str, Any]:
    """Every ``*.jsonl(.gz)`` of ``data_dir`` as (anchor, positive) rows (duplicates once): capped per file
    (seeded sample), shuffled, split 80/20, saved as ``collection/{train,test}`` (``save_to_disk``)."""
    import glob

    require_dir(data_dir, "data_dir")
    files = sorted(glob.glob(os.path.join(data_dir, "*.jsonl")) + glob.glob(os.path.join(data_dir, "*.jsonl.gz")))
    if not files:
        raise InputError(f"{data_dir} holds no *.jsonl or *.jsonl.gz files")
    rows: list[tuple[str, str, str]] = []
    stats: dict[str, Any] = {"datasets": {}}
    names = [dataset_name(path) for path in files]  # the whole file name minus the format suffixes
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InputError(f"{files[i]} and {files[names.index(name)]} would both be the dataset {name!r}: "
                             f"rename one")
    for path, name in zip(files, names):
        schema, all_pairs = collection_pairs(path)
        pairs = list(dict.fromkeys(all_pairs))  # a mined triplet file repeats its (anchor, positive) per negative
        kept = pairs
        if max_pairs_per_dataset and len(pairs) > max_pairs_per_dataset:
            rng = seeded_rng(seed, name)
            kept = [pairs[i] for i in np.sort(rng.choice(len(pairs), max_pairs_per_dataset, replace=False))]
        rows += [(a, p, name) for a, p in kept]
        stats["datasets"][name] = {"schema": schema, "pairs": len(all_pairs), "duplicates": len(all_pairs) - len(pairs),
                                   "kept": len(kept)}
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(round(0.8 * len(rows)))
    out = os.path.join(save_root_path, "collection")
    splits = {}
    for split, idx in (("train", order[:cut]), ("test", order[cut:])):
        picked = [rows[i] for i in idx]
        splits[split] = {"anchor": [r[0] for r in picked], "positive": [r[1] for r in picked],
                         "dataset": [r[2] for r in picked]}
        stats[f"{split}_rows"] = len(picked)
    save_text_sets(out, splits)
    write_json(os.path.join(out, "stats.json"), stats)
    logger.info("collection: %d file(s), %d pairs -> %d train, %d test in %s", len(files), len(rows),
                stats["train_rows"], stats["test_rows"], out)
    return stats


def _cap(ds, n: int | None, seed: int, name: str):
    if n and len(ds) > n:
        ds = ds.select(np.sort(seeded_rng(seed, name).choice(len(ds), n, replace=False)).tolist())
    return ds


def combine_finetune(task_type: str, data_dir: str, save_root_path: str, max_rows_per_dataset: int | None = None,
                     seed: int = 42) -> dict[str, Any]:
    """The ``finetune_data`` datasets of one task type (by their exact names, as that run listed
    them) as ``finetune/{task_type}/{train,test}`` with a ``dataset`` column; STS scores kept."""
    import datasets

    listing = os.path.join(require_dir(data_dir, "data_dir"), f"finetune_{task_type}_stats.json")
    if not os.path.exists(listing):
        raise InputError(f"{data_dir} holds no {task_type} datasets of dist_data.finetune_data ({listing} is missing)")
    with open(listing, encoding="utf-8") as f:
        names = sorted({k.rsplit("_", 1)[0] for k in json.load(f)})
    stats: dict[str, Any] = {}
    splits = {}
    for split in ("train", "test"):
        parts = []
        for name in names:
            ds = _cap(datasets.load_from_disk(os.path.join(data_dir, f"{name}_{split}")), max_rows_per_dataset, seed,
                      f"{name}/{split}")
            parts.append(ds)
            stats[f"{name}_{split}"] = len(ds)
        joined = datasets.concatenate_datasets(parts)
        splits[split] = {**joined.to_dict(), "dataset": [n for n, p in zip(names, parts) for _ in range(len(p))]}
    out = os.path.join(save_root_path, "finetune", task_type)
    save_text_sets(out, splits)
    write_json(os.path.join(out, "stats.json"), stats)
    logger.info("finetune %s: %d dataset(s) -> %s", task_type, len(names), out)
    return stats


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


def combine_all(save_root_path: str, min_sts_score: float = STS_POSITIVE) -> dict[str, Any]:
    """Every ``finetune/*`` and the ``collection`` as one (anchor, positive) set per split (provenance
    beside it). STS pairs are positives only from ``min_sts_score`` (0-5 scale) up; the rest are counted."""
    import glob

    collection = os.path.join(save_root_path, "collection")
    folders = [f.rstrip(os.sep) for f in sorted(glob.glob(os.path.join(save_root_path, "finetune", "*", "")))]
    folders += [collection] if os.path.isdir(collection) else []
    if not folders:
        raise InputError(f"{save_root_path} holds neither finetune/*/train nor collection/train")
    stats: dict[str, Any] = {"min_sts_score": min_sts_score, "sts_below_threshold": 0}
    splits = {}
    for split in ("train", "test"):
        anchors, positives, sources = [], [], []
        for folder in folders:
            ds, names = load_text_set(folder, split)
            cols = ds.to_dict()
            first, second = ("anchor", "positive") if "anchor" in cols else ("sentence1", "sentence2")
            keep = [True] * len(ds)
            if "score" in cols:  # finetune_data's STS scores are on [0, 1] (score / 5)
                keep = [s * STS_SCALE >= min_sts_score - 1e-9 for s in cols["score"]]
                stats["sts_below_threshold"] += keep.count(False)
            anchors += [a for a, k in zip(cols[first], keep) if k]
            positives += [p for p, k in zip(cols[second], keep) if k]
            sources += [n for n, k in zip(names, keep) if k]
        splits[split] = {"anchor": anchors, "positive": positives, "dataset": sources}
        stats[f"{split}_rows"] = len(anchors)
    out = os.path.join(save_root_path, "all")
    save_text_sets(out, splits)
    write_json(os.path.join(out, "stats.json"), stats)
    logger.info("all: %d train, %d test rows (%d STS pairs below %.1f/5 left out) -> %s", stats["train_rows"],
                stats["test_rows"], stats["sts_below_threshold"], min_sts_score, out)
    return stats


@dataclass(frozen=True, kw_only=True)
class EmbeddingsOptions(ResultOptions):
    """One labelled set from the embedded datasets of a task type (npz)."""

    task_type: str = required("the task type embed_mteb wrote", one_of(*TASK_TYPES))
    embedding_path: str = required("DIR/{model} of dist_data.embed_mteb", non_empty, path=INPUT_DIR)
    save_root_path: str = required("where {task_type}/{train,test}.npz are written", non_empty, path=OUTPUT_DIR)
    seed: int = flag(42, "seed of the 80/20 splits", at_least(0))

    def results(self) -> list[str]:
        return [os.path.join(self.save_root_path, self.task_type)]


@dataclass(frozen=True, kw_only=True)
class CollectionOptions(ResultOptions):
    """(anchor, positive) rows from a folder of sentence-transformers training-data files."""

    data_dir: str = required("a folder of *.jsonl(.gz) training-data files", non_empty, path=INPUT_DIR)
    save_root_path: str = required("where collection/{train,test} are written", non_empty, path=OUTPUT_DIR)
    max_pairs_per_dataset: int | None = flag(None, "cap per file (seeded sample)", at_least(1))
    seed: int = flag(42, "seed of caps, shuffle and split", at_least(0))

    def results(self) -> list[str]:
        return [os.path.join(self.save_root_path, "collection")]


@dataclass(frozen=True, kw_only=True)
class FinetuneSetsOptions(ResultOptions):
    """finetune_data's datasets of one task type joined (provenance.json beside them)."""

    task_type: str = required("the task type finetune_data wrote", one_of(*TASK_TYPES))
    data_dir: str = required("the --save_root of dist_data.finetune_data", non_empty, path=INPUT_DIR)
    save_root_path: str = required("where finetune/{task_type}/{train,test} are written", non_empty, path=OUTPUT_DIR)
    max_rows_per_dataset: int | None = flag(None, "cap per dataset (seeded sample)", at_least(1))
    seed: int = flag(42, "seed of the caps", at_least(0))

    def results(self) -> list[str]:
        return [os.path.join(self.save_root_path, "finetune", self.task_type)]


@dataclass(frozen=True, kw_only=True)
class AllOptions(ResultOptions):
    """Every finetune/* set and the collection as (anchor, positive); STS pairs from a score up."""

    save_root_path: str = required("the folder holding finetune/ and collection/", non_empty, path=INPUT_DIR)
    min_sts_score: float = flag(STS_POSITIVE, "an STS pair is a positive from this score (0-5 scale) up")

    def results(self) -> list[str]:
        return [os.path.join(self.save_root_path, "all")]


COMMANDS = {
    "embeddings": (EmbeddingsOptions, with_flags(combine_embeddings)),
    "collection": (CollectionOptions, with_flags(combine_collection)),
    "finetune": (FinetuneSetsOptions, with_flags(combine_finetune)),
    "all": (AllOptions, with_flags(combine_all)),
}


def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.combine COMMAND --flag=value ...`` (``--help`` lists the commands)."""
    run_main(COMMANDS, __doc__, "dist_data.combine", argv)


if __name__ == "__main__":
    main()
