"""Consistency filtering of (query, document) pairs.

Keeps pair i iff document i is among the top-k neighbours of query i over all (unique) documents
of the dataset. A document that appears several times is one document.

Run it (the embedded default: the shipped WordNet sample and all-MiniLM-L6-v2, no download)::

    torchrun --standalone --nproc-per-node=2 -m dist_data.filter --output_dir=out/filter
    python -m dist_data.filter --output_dir=out/filter                    # one plain process
    torchrun --nproc-per-node=8 -m dist_data.filter --dataset=shards/ --output_dir=out/f \\
        --query_key=query --document_key=document --k=2 --batch_size=512 --dtype=float16
    # many nodes: launch/slurm.sh or launch/multi_host.sh

Outputs in ``--output_dir``: ``filtered.jsonl[.gz]`` (the kept records, input order),
``ids_to_keep.json`` (with ``--write_ids``), ``rejects.jsonl``, ``stats.json``, ``args.json``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from . import distributed, index
from .embed import BATCHES_PER_BLOCK, DEFAULT_MODEL, BlockEmbedder, load_model, spec_for
from .io import BadRowError, InputError
from .log import logger, progress, setup_logging
from .pipeline import (RunConflictError, RunDir, Stats, embed_by_block, fmt_rows, global_text_ids, merge_outputs,
                       read_stage, write_parts)
from .select import consistency_keep
from .wordnet import SAMPLE_PAIRS

RESULT_NAME = "filtered.jsonl"


def run_filter(info: distributed.DistInfo, args: dict, *, dataset: str, output_dir: str, query_key: str,
               document_key: str, k: int, model_name: str, batch_size: int, max_rows: int | None, seed: int,
               index_mode: str, query_prompt: str, document_prompt: str, max_seq_length: int | None, dtype: str,
               on_bad_rows: str, write_ids: bool, compress: bool, overwrite: bool, show_progress: bool,
               revision: str | None, split: str) -> dict | None:
    """The filter pipeline on this rank; returns the merged stats on rank 0."""
    start = time.perf_counter()
    rank, world = info.rank, info.world_size
    run = RunDir(output_dir, args, RESULT_NAME)
    run.prepare(overwrite, info.is_main)
    if run.is_complete():
        if info.is_main:
            logger.info("%s is already complete (same flags); nothing to do", output_dir)
        with open(run.file("stats.json"), encoding="utf-8") as f:
            return json.load(f)
    stats = Stats()

    block_rows = BATCHES_PER_BLOCK * batch_size
    shard = read_stage(info, stats, dataset, split, [query_key, document_key], max_rows, seed, block_rows,
                       on_bad_rows)
    if info.is_main:
        run.write_args()

    queries, documents = shard.texts[query_key], shard.texts[document_key]
    with stats.stage("embed") as rec:
        doc_ids = global_text_ids(shard.positions, documents)
        is_first = doc_ids == shard.positions
        model = load_model(model_name, info.device, dtype, max_seq_length, revision)
        q_embedder = BlockEmbedder(model, spec_for(model, model_name, revision, query_prompt, dtype, batch_size),
                                   run.cache_dir)
        d_embedder = BlockEmbedder(model, spec_for(model, model_name, revision, document_prompt, dtype, batch_size),
                                   run.cache_dir)
        n_embed = len(queries) + int(is_first.sum())
        with progress(n_embed, "embed", show_progress and info.is_main) as bar:
            query_emb = embed_by_block(q_embedder, shard.positions, queries, block_rows, "query", bar.update)
            first_docs = [documents[i] for i in np.flatnonzero(is_first)]
            doc_emb = embed_by_block(d_embedder, shard.positions[is_first], first_docs, block_rows, "document",
                                     bar.update)
        rec["rows"] = n_embed
        cached = sum(distributed.all_gather_object(q_embedder.cache_hits + d_embedder.cache_hits))
        stats.add("cached_blocks", q_embedder.cache_hits + d_embedder.cache_hits)
        if cached:
            logger.info("embed: %d block(s) served from the cache in %s", cached, run.cache_dir)

    with stats.stage("search", rows=len(queries)) as rec:
        n_docs = distributed.all_gather_object(int(is_first.sum()))
        if info.is_main and k > sum(n_docs):
            logger.warning("k=%d is larger than the %d unique documents: every pair is kept", k, sum(n_docs))
        with progress(len(queries), "search", show_progress and info.is_main, unit="queries") as bar:
            neighbor_scores, neighbor_ids, timings = index.search(
                query_emb, doc_emb, shard.positions[is_first], k, index_mode, info.device,
                fp16=dtype == "float16", on_progress=bar.update)
    stats.record("index", sum(n_docs), timings["index_seconds"])

    with stats.stage("write") as rec:
        keep = consistency_keep(neighbor_ids, doc_ids, k)
        stats.add("kept", int(keep.sum()))
        stats.add("dropped", int((~keep).sum()), reason="not_in_top_k")
        stats.add("unique_documents", int(is_first.sum()))
        kept_rows = np.flatnonzero(keep)
        rec["rows"] = len(kept_rows)
        write_parts(run, rank, [shard.records[i] for i in kept_rows],
                    shard.gids[kept_rows].tolist() if write_ids else None, shard.rejects)
    merged = merge_outputs(run, rank, world, stats, compress, write_ids)
    if merged is not None:
        counts = merged["counts"]
        processed = counts.get("read", 0)
        rejected = sum(counts.get("rejected", {}).values())
        logger.info("kept %s / %s (%.1f%%), dropped %s not in top-%d, rejected %s, in %.0f s (index: %s) -> %s",
                    fmt_rows(counts.get("kept", 0)), fmt_rows(processed),
                    100.0 * counts.get("kept", 0) / max(processed, 1),
                    fmt_rows(counts.get("dropped", {}).get("not_in_top_k", 0)), k, fmt_rows(rejected),
                    time.perf_counter() - start, timings["backend"], run.file(merged["outputs"]["result"]))
    return merged


@record
def main(
    output_dir: str,
    dataset: str = SAMPLE_PAIRS,
    query_key: str = "query",
    document_key: str = "document",
    k: int = 2,
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 64,
    max_rows: int | None = None,
    seed: int = 42,
    index: str = "gather",
    query_prompt: str = "",
    document_prompt: str = "",
    max_seq_length: int | None = None,
    dtype: str = "float32",
    on_bad_rows: str = "error",
    write_ids: bool = False,
    compress: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
    split: str = "train",
    timeout_minutes: int = 120,
) -> None:
    """Consistency-filter (query, document) pairs; see the module docstring for the commands.

    Args:
        output_dir: where results go (refused if it holds another run's results).
        dataset: jsonl/jsonl.gz/parquet/csv file, folder or glob of them, save_to_disk folder or
            Hugging Face dataset name. Default: the shipped WordNet sample.
        query_key, document_key: the text fields (a JSON-list row ``[query, document]`` works too).
        k: keep a pair iff its document is among the top-k neighbours of its query.
        max_rows: process a seeded sample of at most this many rows (input order kept).
        index: ``gather`` (one index of all documents on every rank) or ``sharded`` (per-rank index
            shards, merged top-k). Same results.
        query_prompt, document_prompt: prefixes for e5/bge-style models (e.g. ``"query: "``).
        dtype: ``float32``, or ``float16``/``bfloat16`` on GPU.
        on_bad_rows: ``error`` (stop, naming file and line) or ``skip`` (to rejects.jsonl, counted).
        write_ids: also write the kept global line ids to ids_to_keep.json.
        compress: gzip the merged output (filtered.jsonl.gz).
    """
    args = dict(locals())
    problems = []
    if not output_dir:
        problems.append("--output_dir is required")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        problems.append(f"--k must be an integer >= 1, got {k!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"--batch_size must be an integer >= 1, got {batch_size!r}")
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        problems.append(f"--max_rows must be an integer >= 1, got {max_rows!r}")
    if index not in ("gather", "sharded"):
        problems.append(f"--index must be 'gather' or 'sharded', got {index!r}")
    if on_bad_rows not in ("error", "skip"):
        problems.append(f"--on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
    if dtype not in ("float32", "float16", "bfloat16"):
        problems.append(f"--dtype must be float32, float16 or bfloat16, got {dtype!r}")
    with distributed.process_group(timeout_minutes) as info:
        setup_logging(info.rank, info.local_rank, info.world_size)
        try:
            if problems:
                raise ValueError("; ".join(problems))
            run_filter(info, args, dataset=str(dataset), output_dir=str(output_dir), query_key=str(query_key),
                       document_key=str(document_key), k=k, model_name=model_name, batch_size=batch_size,
                       max_rows=max_rows, seed=seed, index_mode=index, query_prompt=query_prompt or "",
                       document_prompt=document_prompt or "", max_seq_length=max_seq_length, dtype=dtype,
                       on_bad_rows=on_bad_rows, write_ids=bool(write_ids), compress=bool(compress),
                       overwrite=bool(overwrite), show_progress=bool(progress), revision=revision, split=split)
        except (ValueError, InputError, BadRowError, RunConflictError) as e:
            if info.is_main:
                logger.error("%s", e)
            sys.exit(2)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
