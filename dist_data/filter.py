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
``ids_to_keep_0.json`` (with ``--write_ids``), ``scores.png``, ``rejects.jsonl``, ``stats.json``, ``args.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed, index
from .core.cli import at_least, flag, non_empty
from .core.paths import INPUT_SPEC
from .core.embed import BATCHES_PER_BLOCK, check_model
from .core.log import logger, progress
from .core.embed import cache_root, embed_pairs
from .core.options import PairOptions
from .core.read import read_stage
from .core.report import record_search, report_scores
from .core.collection import CollectionOptions
from .core.run import IDS_NAME, Run, run_main
from .core.stats import fmt_rows, Stats
from .core.keys import KeyedVectors, Owners
from .core.select import consistency_keep
from .text.wordnet import SAMPLE_PAIRS

RESULT_NAME = "filtered.jsonl"
RANK_DEPTH = 10  # neighbours searched at least, so that scores.png shows where the own document ranks


@dataclass(frozen=True, kw_only=True)
class FilterOptions(PairOptions, CollectionOptions):
    """Consistency-filter (query, document) pairs."""

    dataset: str = flag(SAMPLE_PAIRS, "jsonl(.gz)/parquet/csv file, folder, glob, comma list, save_to_disk folder "
                        "or hub name (default: the shipped WordNet sample)", non_empty, path=INPUT_SPEC)
    k: int = flag(2, "keep a pair iff its document is among the top-k neighbours of its query", at_least(1))
    write_ids: bool = flag(False, f"also write {IDS_NAME}: the kept global line ids (contrastors' filter_rows.py "
                           "reads ids_to_keep_*.json)")

    def result_file(self) -> str:
        return RESULT_NAME

    def side_outputs(self) -> list[str]:
        return [IDS_NAME]


def run_filter(info: distributed.DistInfo, opts: FilterOptions, run: Run) -> dict | None:
    """The filter pipeline on this rank; returns the merged stats on rank 0."""
    start = time.perf_counter()
    rank = info.rank
    stats = Stats.with_keys("input_rows", "read", "kept", "unique_documents", "cached_blocks",
                            buckets=("dropped", "rejected"))

    block_rows = BATCHES_PER_BLOCK * opts.batch_size
    check_model(opts.model_name, opts.revision, "model_name")
    shard = read_stage(info, stats, opts.dataset, opts.split, [opts.query_key, opts.document_key], opts.max_rows,
                       opts.seed, block_rows, opts.on_bad_rows)
    run.begin()

    queries, documents = shard.column(0), shard.column(1)
    emb = embed_pairs(info, stats, run, shard, queries, documents, opts, block_rows)
    doc_ids, is_first = emb.doc_ids, emb.is_first
    k = opts.k

    with stats.stage("search", rows=len(queries)) as rec:
        n_docs = distributed.all_gather_object(int(is_first.sum()))
        if info.is_main and k > sum(n_docs):
            logger.warning("k=%d is larger than the %d unique documents: every pair is kept", k, sum(n_docs))
        depth = max(k, RANK_DEPTH)  # a few more neighbours than k: where the own document ranks, for scores.png
        with progress(len(queries), "search", opts.progress and info.is_main, unit="queries") as bar:
            neighbor_scores, neighbor_ids, timings = index.cached_search(
                cache_root(run, opts), emb.query_emb, emb.doc_emb, shard.positions[is_first], depth,
                opts.index_spec(), info.device, fp16=opts.dtype == "float16", on_progress=bar.update)
    record_search(info, stats, opts, timings, n_docs[rank], depth)

    hit = neighbor_ids == doc_ids[:, None]
    own_rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, depth + 1)  # 1 = the top neighbour
    other = np.where(hit, -np.inf, neighbor_scores).max(axis=1)
    own_vectors = KeyedVectors(shard.positions[is_first], emb.doc_emb).lookup(doc_ids, Owners.gather([(shard.lo, shard.hi)]))
    own = np.einsum("ij,ij->i", emb.query_emb.astype(np.float64), own_vectors.astype(np.float64))
    report_scores(info, run, stats, f"dist_data.filter: k={k}",
                  {"own_document": own, "best_other": other, "margin": own - other},
                  [("own document vs best other document", ["own_document", "best_other"], "score"),
                   (f"rank of the own document (kept: <= {k}; {depth + 1} = below {depth})", ["own_rank"], "rank")],
                  extra={"own_rank": own_rank})

    with stats.stage("write") as rec:
        keep = consistency_keep(neighbor_ids, doc_ids, min(k, neighbor_ids.shape[1]))  # k > documents: all
        stats.add("kept", int(keep.sum()))
        stats.add("dropped", int((~keep).sum()), reason="not_in_top_k")
        stats.add("unique_documents", int(is_first.sum()))
        kept_rows = np.flatnonzero(keep)
        rec["rows"] = len(kept_rows)
        run.write_parts([shard.records[i] for i in kept_rows],
                        shard.gids[kept_rows].tolist() if opts.write_ids else None, shard.rejects)
    merged = run.merge(stats, opts.compress, opts.write_ids)
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


COMMANDS = {None: (FilterOptions, run_filter)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.filter --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.filter", argv)


if __name__ == "__main__":
    main()
