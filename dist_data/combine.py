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

from .core.cli import at_least, flag, non_empty, one_of, required
from .core.errors import InputError
from .core.files import require_dir
from .core.log import logger
from .core.manifests import dataset_name
from .core.options import ResultOptions
from .core.paths import INPUT_DIR, OUTPUT_DIR
from .core.run import run_main, with_flags
from .core.write import save_npz, write_json
from .text.combine import (OWN_TEST_CLASSES, STS_POSITIVE, cap_rows, collection_pairs, dataset_rows, load_text_set,
                           save_text_sets, split_80_20)
from .text.tasks import STS_SCALE, TASK_TYPES, TRAIN_SPLITS, seeded_rng


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
            ds = cap_rows(datasets.load_from_disk(os.path.join(data_dir, f"{name}_{split}")), max_rows_per_dataset, seed,
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
