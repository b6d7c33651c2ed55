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

import time

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed, index
from .core.embed import BATCHES_PER_BLOCK, DEFAULT_MODEL
from .core.log import logger, progress
from .core.pipeline import (Stats, common_flag_problems, embed_pairs, fmt_rows, merge_outputs, open_run, read_stage,
                       run_entry_point, write_parts)
from .core.select import consistency_keep
from .text.wordnet import SAMPLE_PAIRS

RESULT_NAME = "filtered.jsonl"


def run_filter(info: distributed.DistInfo, args: dict, *, dataset: str, output_dir: str, query_key: str,
               document_key: str, k: int, model_name: str, batch_size: int, max_rows: int | None, seed: int,
               index_mode: str, query_prompt: str, document_prompt: str, max_seq_length: int | None, dtype: str,
               on_bad_rows: str, write_ids: bool, compress: bool, overwrite: bool, show_progress: bool,
               revision: str | None, split: str) -> dict | None:
    """The filter pipeline on this rank; returns the merged stats on rank 0."""
    start = time.perf_counter()
    rank, world = info.rank, info.world_size
    run, done = open_run(info, output_dir, args, RESULT_NAME, overwrite)
    if done is not None:
        return done
    stats = Stats()

    block_rows = BATCHES_PER_BLOCK * batch_size
    shard = read_stage(info, stats, dataset, split, [query_key, document_key], max_rows, seed, block_rows,
                       on_bad_rows)
    if info.is_main:
        run.write_args()

    queries, documents = shard.column(0), shard.column(1)
    emb = embed_pairs(info, stats, run, shard, queries, documents, model_name=model_name, revision=revision,
                      dtype=dtype, max_seq_length=max_seq_length, batch_size=batch_size, block_rows=block_rows,
                      query_prompt=query_prompt, document_prompt=document_prompt, show_progress=show_progress)
    doc_ids, is_first = emb.doc_ids, emb.is_first

    with stats.stage("search", rows=len(queries)) as rec:
        n_docs = distributed.all_gather_object(int(is_first.sum()))
        if info.is_main and k > sum(n_docs):
            logger.warning("k=%d is larger than the %d unique documents: every pair is kept", k, sum(n_docs))
        with progress(len(queries), "search", show_progress and info.is_main, unit="queries") as bar:
            neighbor_scores, neighbor_ids, timings = index.search(
                emb.query_emb, emb.doc_emb, shard.positions[is_first], k, index_mode, info.device,
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
    problems = common_flag_problems(batch_size, max_rows, on_bad_rows, dtype)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        problems.append(f"--k must be an integer >= 1, got {k!r}")
    if index not in ("gather", "sharded"):
        problems.append(f"--index must be 'gather' or 'sharded', got {index!r}")
    run_entry_point(problems, timeout_minutes, lambda info: run_filter(
        info, args, dataset=str(dataset), output_dir=str(output_dir), query_key=str(query_key),
        document_key=str(document_key), k=k, model_name=model_name, batch_size=batch_size, max_rows=max_rows,
        seed=seed, index_mode=index, query_prompt=query_prompt or "", document_prompt=document_prompt or "",
        max_seq_length=max_seq_length, dtype=dtype, on_bad_rows=on_bad_rows, write_ids=bool(write_ids),
        compress=bool(compress), overwrite=bool(overwrite), show_progress=bool(progress), revision=revision,
        split=split))

if __name__ == "__main__":
    import fire

    fire.Fire(main)
