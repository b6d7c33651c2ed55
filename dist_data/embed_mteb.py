"""Embed MTEB datasets once, in the layout that heads trained on frozen embeddings read.

    torchrun --nproc-per-node=8 -m dist_data.embed_mteb --task_type=classification \\
        --dataset_name=banking77 --model_name=NAME --batch_size=256 --save_root_path=DIR
    python -m dist_data.embed_mteb --task_type=sts --dataset_name=all --data_path=local/ --save_root_path=DIR

Without ``--data_path`` each task is loaded through ``mteb`` from the hub once and kept in the
local layout under ``--cache_dir`` (see :mod:`dist_data.mteb_hub`).

Output ``DIR/{model name, / -> _}/{dataset}/`` (vectors L2-normalised, rows in dataset order):

- classification, clustering: ``{split}.npz`` {data [N, D], label [N]}; string labels are mapped
  to ints by sorted order over the union of all splits, saved as ``label_mapping.json``;
  clustering rows (lists of sentences and labels) are flattened.
- retrieval: ``corpus.npz`` {data, id} (title and text joined by a space), ``queries.npz``
  {data, id}, ``{split}.npz`` {query_id, corpus_id} from the qrels (score > 0).
- sts: ``{split}.npz`` {sentence1, sentence2, score}; pair_classification: {sentence1,
  sentence2, label}; reranking: {query [Q, D], positive [Q] and negative [Q]: object arrays of
  per-query (n_i, D) arrays} as CSRv2 reads them; ``--reranking_layout=offsets`` writes flat
  {positive, negative, positive_offsets, negative_offsets} instead (no pickles; the positives of
  query i are ``positive[positive_offsets[i]:positive_offsets[i+1]]``).
- a validation split is written as ``val.npz`` (retrieval) or ``validation.npz`` (the others), the
  names CSRv2's loaders read.

A split whose file exists is skipped (resume). Each split's texts are sorted by length once and
embedded in fixed blocks of that order, dealt to the ranks in turn, so the vectors are the same for
any number of ranks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import CommonOptions, flag, non_empty, one_of, required
from .core.paths import INPUT_DIR, OUTPUT_DIR
from .core.embed import BlockEmbedder, load_model, spec_for
from .core.models import DEFAULT_MODEL, check_models
from .core.errors import InputError
from .core.files import read_json
from .core.write import save_npz, write_json
from .core.log import logger
from .core.options import ModelOptions
from .core.run import run_main
from .core.stages import CommandStages
from .core.stats import Stats
from .core.errors import RunConflictError
from .core.rundir import FolderLock, flag_diff, refuse_other_flags, remove_paths
from .text.mteb_hub import dataset_dirs
from .text.tasks import (RERANKING_LAYOUTS, TASK_TYPES, TaskRef, beir_table, load_split, local_splits, npz_split_name,
                         reranking_arrays, resolve_tasks)


TEXT_COLUMNS = {"sentence1", "sentence2", "query", "positive", "negative"}  # embedded; the rest kept as numbers


@dataclass(frozen=True, kw_only=True)
class EmbedMtebOptions(CommonOptions, ModelOptions):
    """Embed MTEB datasets to npz layouts."""

    counts: ClassVar[tuple[str, ...]] = ("embedded", "texts_encoded", "splits_skipped")
    count_buckets: ClassVar[tuple[str, ...]] = ("rows",)
    summary: ClassVar[tuple[str, ...]] = ("rows", "embedded", "texts_encoded", "splits_skipped")

    task_type: str = required("classification, clustering, retrieval, sts, reranking or pair_classification",
                              one_of(*TASK_TYPES))
    save_root_path: str = required("where DIR/{model}/{dataset}/ folders are written", non_empty, path=OUTPUT_DIR)
    dataset_name: str = flag("all", "an MTEB task name (or its dataset's, e.g. banking77), a comma list, or all",
                             non_empty)
    data_path: str | None = flag(None, "a folder of dataset folders in MTEB's layout (default: load through "
                                 "mteb from the hub)", non_empty, path=INPUT_DIR)
    cache_dir: str | None = flag(None, "where hub tasks are kept in the local layout "
                                 "(default ~/.cache/dist_data/mteb)", non_empty)
    hf_subset: str | None = flag(None, "the subset of a multilingual task (default: its English one)", non_empty)
    prompt: str | None = flag(None, "an instruction prefix for every text, or a JSON file {dataset: prompt}")
    reranking_layout: str = flag("csrv2", "reranking npz: csrv2 (object arrays of per-query (n_i, d) arrays, as CSRv2 "
                                 "reads them) or offsets (flat arrays + offsets, no pickles)", one_of(*RERANKING_LAYOUTS))
    overwrite: bool = flag(False, "replace vectors made with other flags (only the files embed_mteb wrote)",
                           result=False)


def model_folder(model_name: str) -> str:
    return (model_name or DEFAULT_MODEL).replace("/", "_")


def embed_texts(stages: CommandStages, embedder: BlockEmbedder, texts: Sequence[str], role: str) -> np.ndarray | None:
    """All ``texts`` embedded (each rank its blocks) as the stage ``role``, gathered in order on rank 0
    (None elsewhere).

    The texts are put in one global order, longest first (ties by position), before they are cut
    into blocks: batches hold texts of similar length, as in a single ``encode`` of everything
    (blocks of the unsorted order padded ~25% more tokens on WordNet definitions), and a
    text's batch depends only on the split, so the vectors are the same for any number of ranks.
    Blocks are dealt to the ranks in turn, so each rank gets its share of long and short texts.
    """
    info, block_rows = stages.info, stages.block_rows
    order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    starts = range(0, len(texts), block_rows)

    def rows_of(rank: int) -> np.ndarray:  # blocks dealt in turn: every rank gets long and short texts
        return np.concatenate([order[s:s + block_rows] for s in starts[rank::info.world_size]]
                              or [np.zeros(0, dtype=np.int64)])

    here = rows_of(info.rank)
    blocks = np.concatenate([np.full(len(order[s:s + block_rows]), s // block_rows, dtype=np.int64)
                             for s in starts[info.rank::info.world_size]] or [np.zeros(0, dtype=np.int64)])
    with stages.embedding(len(here), {"text": embedder}, name=role) as embed:
        mine = embed(here, [texts[i] for i in here], role, blocks=blocks)
    stages.stats.add("embedded", len(mine))
    gathered = distributed.gather_array(mine)  # on rank 0 (which writes): its blocks, then rank 1's, ...
    if gathered is None:
        return None
    rows = np.concatenate([rows_of(r) for r in range(info.world_size)])
    vectors = np.empty_like(gathered)
    vectors[rows] = gathered
    return vectors


def label_mapping(labels: Sequence[Any]) -> dict[Any, int]:
    """Labels -> ints by sorted order (strings alphabetically, numbers numerically)."""
    unique = set(labels)
    if all(isinstance(v, str) for v in unique) or all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in unique):
        order = sorted(unique)
    else:
        order = sorted(unique, key=json.dumps)
    return {v: i for i, v in enumerate(order)}


def embed_dataset(stages: CommandStages, ref: TaskRef, folder: str, out_dir: str, embedder: BlockEmbedder,
                  args: dict[str, Any] | None = None, reranking_layout: str = "csrv2") -> None:
    """Every split of one dataset (skipping those already written).

    ``stages.stats`` gets this rank's counts: ``rows`` per split, ``read`` and ``kept`` (the rows
    written) and ``splits_skipped`` (rank 0), texts ``embedded`` in this rank's blocks,
    ``texts_encoded`` (not from the cache), ``cached_blocks``.
    """
    info, stats = stages.info, stages.stats

    def wrote(split: str, rows: int) -> None:
        stats.add("rows", rows, reason=split)
        stats.add("read", rows)
        stats.add("kept", rows)

    os.makedirs(out_dir, exist_ok=True)
    splits = local_splits(folder, ref.task_type)
    if not splits:
        raise InputError(f"{folder}: no splits found for a {ref.task_type} dataset")
    names = {s: npz_split_name(ref.task_type, s, splits) for s in splits}  # the file names CSRv2 reads
    if info.is_main:  # what dist_data.combine reads to find a task type's datasets (only after the rerun check)
        write_json(os.path.join(out_dir, "meta.json"), {"task_type": ref.task_type, "dataset": ref.name,
                                                        "mteb_name": ref.mteb_name, "splits": [names[s] for s in splits],
                                                        "split_sources": names, "source": folder, "args": args or {}})
    todo = [s for s in splits if not os.path.exists(os.path.join(out_dir, f"{names[s]}.npz"))]
    if info.is_main:  # counted once: the stats of all ranks are summed
        stats.add("splits_skipped", len(splits) - len(todo))
    if ref.task_type in ("classification", "clustering"):
        data = {s: load_split(folder, ref.task_type, s) for s in splits}  # labels: union of all splits
        mapping = label_mapping([v for d in data.values() for v in d["label"]])
        if info.is_main:
            write_json(os.path.join(out_dir, "label_mapping.json"), {str(k): v for k, v in mapping.items()})
        for s in todo:
            vectors = embed_texts(stages, embedder, data[s]["text"], f"{ref.name}-{s}")
            if info.is_main:
                save_npz(os.path.join(out_dir, f"{names[s]}.npz"), data=vectors,
                         label=np.array([mapping[v] for v in data[s]["label"]], dtype=np.int64))
                wrote(s, len(vectors))
    elif ref.task_type == "retrieval":
        for name in ("corpus", "queries"):
            path = os.path.join(out_dir, f"{name}.npz")
            if os.path.exists(path):
                continue
            ids, texts = beir_table(folder, name)
            vectors = embed_texts(stages, embedder, texts, f"{ref.name}-{name}")
            if info.is_main:
                save_npz(path, data=vectors, id=np.array(ids))
                wrote(name, len(vectors))
        for s in todo:
            if info.is_main:
                qrels = load_split(folder, "retrieval", s)
                save_npz(os.path.join(out_dir, f"{names[s]}.npz"), **qrels)
                wrote(s, len(qrels["query_id"]))
    else:
        for s in todo:
            d = load_split(folder, ref.task_type, s)
            arrays = {}
            for key, value in d.items():
                if key in TEXT_COLUMNS:
                    arrays[key] = embed_texts(stages, embedder, value, f"{ref.name}-{s}-{key}")
                else:
                    arrays[key] = np.asarray(value, dtype=np.float32 if key == "score" else np.int64)
            if info.is_main:
                if ref.task_type == "reranking":
                    arrays = reranking_arrays(**arrays, layout=reranking_layout)
                save_npz(os.path.join(out_dir, f"{names[s]}.npz"), **arrays)
                wrote(s, len(arrays["query"] if "query" in arrays else next(iter(arrays.values()))))
    stats.add("texts_encoded", embedder.texts_embedded)


def prompts_for(prompt: str | None) -> dict[str, str] | str:
    """``--prompt``: a string for every dataset, or a JSON file ``{dataset: prompt}``."""
    if prompt and os.path.isfile(prompt) and prompt.endswith(".json"):
        with open(prompt, encoding="utf-8") as f:
            return json.load(f)
    return prompt or ""


OUR_FILES = ("meta.json", "stats.json", "label_mapping.json")  # beside the {split}.npz files


def check_rerun(out_dir: str, args: dict[str, Any], overwrite: bool) -> None:
    """The rerun policy for one dataset folder: vectors made with other flags are never mixed with new
    ones, and ``meta.json`` never describes flags the vectors were not made with.

    Raises:
        RunConflictError: the folder holds vectors of other flags (without ``overwrite``).
    """
    meta = read_json(os.path.join(out_dir, "meta.json"))
    if meta is None:
        return
    old = {k: v for k, v in meta.get("args", {}).items() if k in args}
    diff = flag_diff(old, args)
    if not diff:
        return
    if not overwrite:
        raise refuse_other_flags(out_dir, "vectors", diff)
    removed = remove_paths(out_dir, sorted(f for f in os.listdir(out_dir) if f.endswith(".npz") or f in OUR_FILES))
    logger.warning("--overwrite: removed %s from %s (made with %s)", ", ".join(removed), out_dir, ", ".join(diff))


def run_embed_mteb(info: distributed.DistInfo, opts: EmbedMtebOptions, run: None = None) -> Stats:
    task_type, model_name = opts.task_type, opts.model_name
    refs = resolve_tasks(task_type, opts.dataset_name, opts.data_path)
    model_dir = os.path.join(opts.save_root_path, model_folder(model_name))
    load = opts.load_kwargs()
    args = {"task_type": task_type, "model_name": model_name or DEFAULT_MODEL, "revision": opts.revision,
            "batch_size": opts.batch_size, **({"batch_tokens": opts.batch_tokens} if opts.batch_tokens else {}),
            "prompt": opts.prompt, "max_seq_length": opts.max_seq_length,
            "dtype": opts.dtype, "hf_subset": opts.hf_subset,
            **({"reranking_layout": opts.reranking_layout} if task_type == "reranking" else {}), **load}
    lock = FolderLock(model_dir)
    with distributed.same_error_on_every_rank(InputError, RunConflictError, OSError):
        if info.is_main:  # every refusal before anything is loaded or written; the model first
            check_models(opts)
            os.makedirs(model_dir, exist_ok=True)
            lock.acquire()
            for ref in refs:
                check_rerun(os.path.join(model_dir, ref.name), args, opts.overwrite)
    folders = dataset_dirs(info, refs, opts.data_path, opts.cache_dir, opts.hf_subset)
    all_datasets = CommandStages(info, opts, os.path.join(model_dir, ".cache"))
    with all_datasets.stats.stage("model", done="loaded"):
        model = load_model(model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision, load=load)
    prompts = prompts_for(opts.prompt)
    for ref, folder in zip(refs, folders):
        out_dir = os.path.join(model_dir, ref.name)
        stages = CommandStages(info, opts, all_datasets.cache_dir)
        prompt = prompts.get(ref.name, "") if isinstance(prompts, dict) else prompts
        embedder = BlockEmbedder(model, spec_for(model, model_name, opts.revision, prompt or None, opts.dtype,
                                                 opts.batch_size, batch_tokens=opts.batch_tokens, load=load),
                                 stages.cache_root)
        embed_dataset(stages, ref, folder, out_dir, embedder, {**args, "world_size": info.world_size},
                      opts.reranking_layout)
        merged = stages.finish(f"dist_data.embed_mteb {ref.name}", out_dir)
        if info.is_main:  # summed over the ranks already: rank 0 holds the totals
            all_datasets.stats.add_counts(merged["counts"])
            write_json(os.path.join(out_dir, "stats.json"), {"dataset": ref.name, "task_type": task_type, **merged})
    total = all_datasets.finish(f"dist_data.embed_mteb ({len(refs)} {task_type} dataset(s))", model_dir)
    lock.release()
    return Stats(counts=total["counts"])


COMMANDS = {None: (EmbedMtebOptions, run_embed_mteb)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.embed_mteb --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.embed_mteb", argv)


if __name__ == "__main__":
    main()
