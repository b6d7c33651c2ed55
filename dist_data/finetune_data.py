"""Finetuning pairs from MTEB-shaped datasets (Hugging Face datasets, ``save_to_disk``).

    torchrun --nproc-per-node=2 -m dist_data.finetune_data --task_type=classification \\
        --data_path=mteb_local/ --save_root=OUT --max_samples_per_dataset=20000
    python -m dist_data.finetune_data --task_type=sts --dataset_name=STSBenchmark --save_root=OUT   # via mteb, from the hub

Writes ``OUT/{dataset}_train`` and ``OUT/{dataset}_test`` with ``sentence1``, ``sentence2`` (and
``score`` for STS):

- classification, clustering: pairs of two different texts with the same label; each label's
  quota is proportional to its share of the split (train: ``max_samples_per_dataset``; test:
  0.2 x that);
- retrieval: (query, judged-relevant document) pairs; reranking: (query, positive) pairs;
- sts: the rows with score >= 1.0, the score divided by 5 (in [0, 1], for CoSENT);
- pair_classification: the label-1 pairs.

train = train + validation (+ dev); a dataset with only a test split is split 80/20 by row first.
Every draw is seeded (``--seed`` and the dataset name): the same output for any number of ranks
(rank 0 writes; the work is reading and sampling, not model compute).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core.cli import at_least, flag, non_empty, one_of, required
from .core.options import ResultOptions
from .core.paths import INPUT_DIR, OUTPUT_DIR
from .core.errors import InputError
from .core.files import require_dir
from .core.write import save_dataset, write_json
from .core.log import logger
from .core.run import run_main
from .text.mteb_hub import dataset_dir
from .text.tasks import STS_SCALE, TASK_TYPES, TRAIN_SPLITS, beir_table, load_split, local_splits, resolve_tasks, seeded_rng

TEST_SHARE = 0.2
STS_MIN_SCORE = 1.0


def label_quotas(sizes: list[int], possible: list[int], cap: int) -> list[int]:
    """Pairs per label, proportional to the label's share of the rows and never more than it can
    give; the shares are rounded by largest remainder, so they sum to at most ``cap``."""
    total = sum(sizes)
    ideal = np.array([cap * s / total if total else 0.0 for s in sizes])
    quotas = np.floor(ideal).astype(np.int64)
    for i in np.argsort(-(ideal - quotas), kind="stable")[: cap - int(quotas.sum())]:
        quotas[i] += 1
    return np.minimum(quotas, possible).tolist()


def same_label_pairs(texts: list[str], labels: list, cap: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Pairs of two different texts sharing a label; label quotas proportional to label shares."""
    by_label: dict[str, list[str]] = {}
    for t, y in zip(texts, labels):
        by_label.setdefault(repr(y), []).append(t)
    keys = sorted(by_label)
    members_of = {key: list(dict.fromkeys(by_label[key])) for key in keys}  # different texts only
    quotas = label_quotas([len(by_label[k]) for k in keys], [len(m) * (len(m) - 1) // 2 for m in members_of.values()],
                          cap)
    pairs: list[tuple[str, str]] = []
    for key, quota in zip(keys, quotas):
        members = members_of[key]
        n = len(members)
        possible = n * (n - 1) // 2
        if quota == 0:
            continue
        if possible <= 4_000_000:
            ii, jj = np.triu_indices(n, 1)
            chosen = np.sort(rng.choice(possible, size=quota, replace=False))
            picked = zip(ii[chosen].tolist(), jj[chosen].tolist())
        else:  # many members: draw pairs until enough distinct ones (quota is far below possible)
            seen: set[tuple[int, int]] = set()
            while len(seen) < quota:
                a, b = rng.integers(0, n, size=2).tolist()
                if a != b:
                    seen.add((min(a, b), max(a, b)))
            picked = sorted(seen)
        pairs += [(members[a], members[b]) for a, b in picked]
    return pairs


def split_rows(folder: str, task_type: str, seed: int, name: str) -> dict[str, dict[str, list]]:
    """``{"train": columns, "test": columns}`` with train = train + validation (+ dev), or 80/20 of test."""
    splits = local_splits(folder, task_type)
    data = {s: _columns(folder, task_type, s) for s in splits}
    train_keys = [s for s in splits if s in TRAIN_SPLITS]
    if train_keys:
        train = {k: [v for s in train_keys for v in data[s][k]] for k in data[train_keys[0]]}
        return {"train": train, "test": data.get("test", {k: [] for k in train})}
    if "test" not in data:
        raise InputError(f"{folder}: neither a train nor a test split ({splits})")
    test = data["test"]
    n = len(next(iter(test.values())))
    order = seeded_rng(seed, f"{name}/80/20").permutation(n)
    cut = int(round(0.8 * n))
    pick = {"train": np.sort(order[:cut]), "test": np.sort(order[cut:])}
    return {s: {k: [v[i] for i in idx] for k, v in test.items()} for s, idx in pick.items()}


def _columns(folder: str, task_type: str, split: str) -> dict[str, list]:
    """One split as row-aligned columns of texts (retrieval and reranking: (query, document) rows)."""
    if task_type == "retrieval":
        queries = dict(zip(*beir_table(folder, "queries")))
        corpus = dict(zip(*beir_table(folder, "corpus")))
        qrels = load_split(folder, "retrieval", split)
        return {"sentence1": [queries[q] for q in qrels["query_id"].tolist()],
                "sentence2": [corpus[d] for d in qrels["corpus_id"].tolist()]}
    d = load_split(folder, task_type, split)
    if task_type == "reranking":
        offsets = d["positive_offsets"]
        return {"sentence1": [q for i, q in enumerate(d["query"]) for _ in range(offsets[i + 1] - offsets[i])],
                "sentence2": list(d["positive"])}
    return {k: list(v) for k, v in d.items()}


def finetune_pairs(task_type: str, columns: dict[str, list], cap: int, rng: np.random.Generator) -> dict[str, list]:
    """The pairs of one split, by the task type's rule, at most ``cap``."""
    if task_type in ("classification", "clustering"):
        pairs = same_label_pairs(columns["text"], columns["label"], cap, rng)
        return {"sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs]}
    if task_type == "sts":
        keep = [i for i, s in enumerate(columns["score"]) if s >= STS_MIN_SCORE]
        out = {"sentence1": [columns["sentence1"][i] for i in keep], "sentence2": [columns["sentence2"][i] for i in keep],
               "score": [min(1.0, max(0.0, columns["score"][i] / STS_SCALE)) for i in keep]}
    elif task_type == "pair_classification":
        keep = [i for i, y in enumerate(columns["label"]) if y == 1]
        out = {"sentence1": [columns["sentence1"][i] for i in keep], "sentence2": [columns["sentence2"][i] for i in keep]}
    else:  # retrieval, reranking: (query, relevant document) rows
        out = {"sentence1": columns["sentence1"], "sentence2": columns["sentence2"]}
    n = len(out["sentence1"])
    if n > cap:
        idx = np.sort(rng.choice(n, size=cap, replace=False))
        out = {k: [v[i] for i in idx] for k, v in out.items()}
    return out


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions(ResultOptions):
    """Write finetuning pair datasets per task type."""

    task_type: str = required("classification, clustering, retrieval, sts, reranking or pair_classification",
                              one_of(*TASK_TYPES))
    save_root: str = required("where {dataset}_train and {dataset}_test are written", non_empty, path=OUTPUT_DIR)
    data_path: str | None = flag(None, "a folder of dataset folders in MTEB's layout (default: load through mteb "
                                 "from the hub)", non_empty, path=INPUT_DIR)
    dataset_name: str = flag("all", "an MTEB task name, a comma list, or all", non_empty)
    max_samples_per_dataset: int = flag(20000, "pairs per dataset for train (test: 0.2 x this)", at_least(1))
    seed: int = flag(42, "seed of every draw", at_least(0))
    cache_dir: str | None = flag(None, "where hub tasks are kept in the local layout", non_empty)
    hf_subset: str | None = flag(None, "the subset of a multilingual task (default: its English one)", non_empty)
    progress: bool = flag(True, "progress bars", result=False)

    def tasks(self) -> list[Any]:
        if self.data_path is not None:
            require_dir(self.data_path, "data_path")
        return resolve_tasks(self.task_type, self.dataset_name, self.data_path)

    def results(self) -> list[str]:
        """``{dataset}_{train,test}`` per dataset, and ``finetune_{task_type}_stats.json``."""
        return [os.path.join(self.save_root, f"{ref.name}_{split}") for ref in self.tasks()
                for split in ("train", "test")] + [os.path.join(self.save_root, f"finetune_{self.task_type}_stats.json")]


def run_finetune_data(info: Any, opts: FinetuneOptions, run: None = None) -> dict[str, Any]:  # noqa: ARG001
    """Every dataset of the task type as finetuning pairs; the stats (also ``finetune_{task}_stats.json``).
    The engine keeps the rerun policy (:class:`~dist_data.core.rundir.Results`)."""
    import datasets

    task_type, save_root = opts.task_type, opts.save_root
    refs = opts.tasks()
    os.makedirs(save_root, exist_ok=True)
    stats: dict[str, Any] = {}
    for ref in refs:
        folder = dataset_dir(ref, opts.data_path, opts.cache_dir, opts.hf_subset)
        rows = split_rows(folder, task_type, opts.seed, ref.name)
        cap_train = opts.max_samples_per_dataset
        for split, cap in (("train", cap_train), ("test", int(TEST_SHARE * cap_train))):
            out = finetune_pairs(task_type, rows[split], cap, seeded_rng(opts.seed, f"{ref.name}/{split}"))
            path = os.path.join(save_root, f"{ref.name}_{split}")
            save_dataset(datasets.Dataset.from_dict(out), path)
            stats[f"{ref.name}_{split}"] = {"rows_in": len(next(iter(rows[split].values()), [])),
                                            "pairs": len(out["sentence1"]), "cap": cap}
            logger.info("%s %s: %d pairs (cap %d) -> %s", ref.name, split, len(out["sentence1"]), cap, path)
    write_json(os.path.join(save_root, f"finetune_{task_type}_stats.json"), stats)
    return stats


COMMANDS = {None: (FinetuneOptions, run_finetune_data)}  # what dist_data.registry lists


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.finetune_data --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.finetune_data", argv)


if __name__ == "__main__":
    main()
