"""MTEB datasets from the Hugging Face hub, through the ``mteb`` package, kept in the local layout.

Without ``--data_path``, ``embed_mteb`` and ``finetune_data`` load a registry task with
``mteb.get_task(name).load_data()`` (the dataset revision pinned by mteb's own metadata, and the
task's own transforms applied) and write it once, atomically, as the folder layout that
:mod:`dist_data.tasks` reads::

    {cache_dir}/{MTEB task name}/{hf subset}/   {split}.jsonl | corpus.jsonl, queries.jsonl, qrels/{split}.tsv
                                                source.json (task, subset, revision, splits)

Every later run (and every other rank) reads that folder, so there is one input path for local
and hub data. How mteb's in-memory shapes map to the layout:

- classification, clustering, pair_classification: the task's own column names
  (``input_column_name``, ``label_column_name``, ...) renamed to the layout's; hierarchical
  clustering labels (a list per sentence) keep their top level (counted in ``source.json``);
- sts: ``sentence1, sentence2, score`` with the score moved onto the 0-5 scale the combine and
  finetune rules use when the task's range (``min_score``, ``max_score``) differs;
- retrieval: the splits' corpora and queries joined by id (first occurrence kept), qrels per split
  in query order, then corpus order;
- reranking (retrieval-shaped in mteb 2): one row per query, positives = judged documents with
  score > 0, negatives = the query's other ``top_ranked`` documents (judged score-0 ones when the
  task has no ranking).

Multilingual tasks: ``--hf_subset`` picks the subset; by default the English one (``en`` when
there are several), and a task without English subsets asks for the flag, listing its subsets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

from ..core import distributed
from ..core.errors import InputError
from ..core.write import write_json
from .layouts import beir_join
from ..core.log import logger
from .tasks import SPLIT_ORDER, TaskRef, dataset_folder

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "dist_data", "mteb")
STS_SCALE = (0.0, 5.0)  # the scale of the combine / finetune STS rules


def get_task(mteb_name: str, hf_subsets: list[str] | None = None) -> Any:
    """``mteb.get_task`` (the one place this module touches the registry; tests replace it)."""
    import mteb

    return mteb.get_task(mteb_name, hf_subsets=hf_subsets)


def pick_subset(task: Any, requested: str | None) -> str:
    """The hf subset to read: ``requested``, the only one, or the English one."""
    subsets = list(task.hf_subsets)
    name = task.metadata.name
    if requested:
        if requested not in subsets:
            raise InputError(f"{name} has no subset {requested!r}; its subsets: {', '.join(subsets)}")
        return requested
    if len(subsets) == 1:
        return subsets[0]
    langs = task.metadata.hf_subsets_to_langscripts
    english = [s for s in subsets if any(str(lang).startswith("eng") for lang in langs.get(s, []))]
    for preferred in ("en", "eng", "default"):
        if preferred in english:
            return preferred
    if english:
        return english[0]
    raise InputError(f"{name} is multilingual with no English subset; pass --hf_subset=one of {', '.join(subsets)}")


def dataset_dir(ref: TaskRef, data_path: str | None, cache_dir: str | None, hf_subset: str | None = None,
                fetch: bool = True) -> str:
    """The local folder of one dataset: under ``data_path``, or the cached copy of the MTEB task.

    With ``fetch`` (one process per machine), a task not cached yet is loaded through mteb and
    written first; without it the folder must already be there (the other ranks, after a barrier).

    Raises:
        InputError: no such local folder, a name outside the registry, or the hub unreachable.
    """
    if data_path:
        return dataset_folder(data_path, ref.name)
    if ref.mteb_name is None:
        raise InputError(f"{ref.name!r}: reading MTEB tasks from the hub needs the mteb package (pip install mteb); "
                         "or pass --data_path with the local layout")
    task = get_task(ref.mteb_name)
    subset = pick_subset(task, hf_subset)
    folder = os.path.join(cache_dir or DEFAULT_CACHE, ref.mteb_name, subset)
    if os.path.isfile(os.path.join(folder, "source.json")) or not fetch:
        return folder
    task = get_task(ref.mteb_name, [subset])
    logger.info("loading %s (%s) through mteb ...", ref.mteb_name, subset)
    try:
        task.load_data()
    except Exception as e:  # datasets / hub errors of every kind: one line saying what to do
        raise InputError(f"could not load MTEB task {ref.mteb_name} from the hub ({type(e).__name__}: "
                         f"{str(e)[:200]}); without the hub, pass --data_path with the local layout") from e
    export(task, subset, ref.task_type, folder)
    return folder


def dataset_dirs(info: distributed.DistInfo, refs: list[TaskRef], data_path: str | None, cache_dir: str | None,
                 hf_subset: str | None) -> list[str]:
    """Every dataset's folder, on every rank: one process per machine fetches the missing hub tasks
    (``dataset_dir``) while the others wait; a failure is raised on every rank."""
    folders = None
    with distributed.same_error_on_every_rank(InputError, ValueError):
        if info.local_rank == 0:
            folders = [dataset_dir(ref, data_path, cache_dir, hf_subset) for ref in refs]
    return folders or [dataset_dir(ref, data_path, cache_dir, hf_subset, fetch=False) for ref in refs]


def _subset_data(task: Any, subset: str) -> Mapping:
    data = task.dataset
    if isinstance(data, Mapping) and subset in data and subset not in SPLIT_ORDER:
        data = data[subset]  # multilingual tasks, and every retrieval task ({"default": {split: ...}})
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"{task.metadata.name}: mteb loaded no splits for subset {subset!r}")
    return data


def _columns(ds: Any, names: list[str]) -> Iterator[tuple]:
    """Rows of a Hugging Face dataset as tuples of ``names``, read in column batches."""
    missing = [n for n in names if n not in ds.column_names]
    if missing:
        raise InputError(f"the dataset has no column(s) {missing}; it has {ds.column_names}")
    for batch in ds.select_columns(names).iter(batch_size=4096):
        yield from zip(*(batch[n] for n in names))


def _text_column(task: Any, attr: str, default: str) -> str:
    col = getattr(task, attr, default)
    if not isinstance(col, str):
        raise InputError(f"{task.metadata.name}: multimodal inputs ({col}) are not text; dist_data embeds text tasks")
    return col


def _write_jsonl(path: str, records: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str))
            f.write("\n")
            n += 1
    return n


def export(task: Any, subset: str, task_type: str, folder: str) -> dict[str, Any]:
    """Write a loaded mteb task's ``subset`` as the local layout, atomically (a folder rename).

    Returns:
        What was written (also ``source.json``): task, subset, revision, splits and row counts.
    """
    data = _subset_data(task, subset)
    tmp = f"{folder}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    info: dict[str, Any] = {"mteb_name": task.metadata.name, "subset": subset, "task_type": task_type,
                            "revision": (task.metadata.dataset or {}).get("revision"), "rows": {}}
    if task_type in ("retrieval", "reranking") and all(isinstance(v, Mapping) for v in data.values()):
        _export_retrieval(data, task_type, tmp, info)
    else:
        for split, ds in data.items():
            info["rows"][split] = _write_jsonl(os.path.join(tmp, f"{split}.jsonl"),
                                               _records(task, task_type, ds, info))
    info["splits"] = sorted(info["rows"], key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))
    write_json(os.path.join(tmp, "source.json"), info)
    os.makedirs(os.path.dirname(folder) or ".", exist_ok=True)
    try:
        os.rename(tmp, folder)
    except OSError:  # another machine sharing the cache finished first: its copy is the same
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s (%s): %s -> %s", task.metadata.name, subset,
                ", ".join(f"{s} {n:,} rows" for s, n in info["rows"].items()), folder)
    return info


def _records(task: Any, task_type: str, ds: Any, info: dict[str, Any]) -> Iterator[dict]:
    """One split of a non-retrieval task in the layout's column names."""
    if task_type == "classification":
        text, label = _text_column(task, "input_column_name", "text"), getattr(task, "label_column_name", "label")
        for t, y in _columns(ds, [text, label]):
            yield {"text": t, "label": y}
    elif task_type == "clustering":
        text = _text_column(task, "input_column_name", "sentences")
        for s, y in _columns(ds, [text, getattr(task, "label_column_name", "labels")]):
            if isinstance(s, str) and isinstance(y, (list, tuple)):  # hierarchical labels: the top level
                info["hierarchical_labels_top_level_kept"] = info.get("hierarchical_labels_top_level_kept", 0) + 1
                y = y[0]
            yield {"sentences": s, "labels": y}
    elif task_type == "sts":
        c1, c2 = getattr(task, "column_names", ("sentence1", "sentence2"))
        if not isinstance(c1, str) or not isinstance(c2, str):
            raise InputError(f"{task.metadata.name}: multimodal inputs ({c1}, {c2}) are not text")
        lo, hi = float(getattr(task, "min_score", 0)), float(getattr(task, "max_score", 5))
        if (lo, hi) != STS_SCALE:
            info["score_range"] = [lo, hi]
        scale = (STS_SCALE[1] - STS_SCALE[0]) / (hi - lo)
        for a, b, score in _columns(ds, [c1, c2, "score"]):
            yield {"sentence1": a, "sentence2": b, "score": (float(score) - lo) * scale + STS_SCALE[0]}
    elif task_type == "pair_classification":
        c1 = _text_column(task, "input1_column_name", "sentence1")
        c2 = _text_column(task, "input2_column_name", "sentence2")
        for a, b, y in _columns(ds, [c1, c2, getattr(task, "label_column_name", "labels")]):
            yield {"sentence1": a, "sentence2": b, "labels": y}
    elif task_type == "reranking":  # the pre-2.0 row layout, should a task still load that way
        for q, pos, neg in _columns(ds, ["query", "positive", "negative"]):
            yield {"query": q, "positive": pos, "negative": neg}
    else:
        raise InputError(f"{task.metadata.name}: no export for task type {task_type!r}")


def _export_retrieval(data: Mapping, task_type: str, folder: str, info: dict[str, Any]) -> None:
    """Retrieval-shaped splits ({corpus, queries, relevant_docs, top_ranked}) to BeIR files or reranking rows."""
    corpus: dict[str, dict] = {}  # id -> record, first occurrence over the splits
    queries: dict[str, str] = {}
    for split in data.values():
        has_title = "title" in split["corpus"].column_names
        for doc_id, text, title in _columns(split["corpus"], ["id", "text", "title" if has_title else "id"]):
            corpus.setdefault(str(doc_id), {"_id": str(doc_id), "title": title if has_title and title else "",
                                            "text": text})
        for query_id, text in _columns(split["queries"], ["id", "text"]):
            queries.setdefault(str(query_id), text)
    position = {doc_id: i for i, doc_id in enumerate(corpus)}
    query_position = {query_id: i for i, query_id in enumerate(queries)}

    def queries_in_order(ids: Iterable[str]) -> list[str]:
        return sorted(ids, key=lambda q: (query_position.get(str(q), len(queries)), str(q)))

    def docs_in_order(docs: Iterable[str]) -> list[str]:
        return sorted(docs, key=lambda d: (position.get(str(d), len(corpus)), str(d)))

    if task_type == "retrieval":
        info["corpus"] = _write_jsonl(os.path.join(folder, "corpus.jsonl"), corpus.values())
        info["queries"] = _write_jsonl(os.path.join(folder, "queries.jsonl"),
                                       ({"_id": q, "text": t} for q, t in queries.items()))
        os.makedirs(os.path.join(folder, "qrels"))
        for name, split in data.items():
            relevant = split["relevant_docs"]
            lines = [f"{q}\t{d}\t{int(relevant[q][d])}\n" for q in queries_in_order(relevant)
                     for d in docs_in_order(relevant[q])]
            with open(os.path.join(folder, "qrels", f"{name}.tsv"), "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                f.writelines(lines)
            info["rows"][name] = len(lines)
        return

    def text_of(doc_id: str, split_name: str) -> str:
        if doc_id not in corpus:
            raise InputError(f"reranking split {split_name!r}: document {doc_id!r} is ranked or judged but not in the corpus")
        return beir_join(corpus[doc_id]["title"], corpus[doc_id]["text"])

    for name, split in data.items():
        relevant, ranked = split["relevant_docs"], split.get("top_ranked") or {}
        rows = []
        for q in queries_in_order(set(relevant) | set(ranked)):
            if str(q) not in queries:
                raise InputError(f"reranking split {name!r}: query {q!r} is judged but not in the queries")
            judged = {str(d): s for d, s in relevant.get(q, {}).items()}
            order = [str(d) for d in ranked[q]] if q in ranked else docs_in_order(judged)
            positive = docs_in_order(d for d, s in judged.items() if s > 0)
            negative = [d for d in order if judged.get(d, 0) <= 0]
            rows.append({"query": queries[str(q)], "positive": [text_of(d, name) for d in positive],
                         "negative": [text_of(d, name) for d in negative]})
        info["rows"][name] = _write_jsonl(os.path.join(folder, f"{name}.jsonl"), rows)
