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

from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, flag, non_empty
from .core.collection import CollectionOptions
from .core.keys import KeyedVectors, Owners
from .core.log import logger
from .core.options import PairOptions
from .core.paths import INPUT_SPEC
from .core.run import Output, Run, run_main
from .core.select import consistency_keep
from .text.wordnet import SAMPLE_PAIRS

RESULT_NAME = "filtered.jsonl"
IDS_NAME = "ids_to_keep_0.json"  # contrastors' filter_rows.py reads every ids_to_keep_*.json of a folder
RANK_DEPTH = 10  # neighbours searched at least, so that scores.png shows where the own document ranks


@dataclass(frozen=True, kw_only=True)
class FilterOptions(PairOptions, CollectionOptions):
    """Consistency-filter (query, document) pairs."""

    counts = ("unique_documents",)
    summary = ("unique_documents",)

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
    shard = run.read([opts.query_key, opts.document_key])
    run.begin()
    queries, documents = shard.column(0), shard.column(1)
    emb = run.embed_pairs(shard, queries, documents)
    n_docs = sum(distributed.all_gather_object(int(emb.is_first.sum())))
    if info.is_main and opts.k > n_docs:
        logger.warning("k=%d is larger than the %d unique documents: every pair is kept", opts.k, n_docs)
    depth = max(opts.k, RANK_DEPTH)  # a few more neighbours than k: where the own document ranks, for scores.png
    scores, ids, _ = run.search(emb.query_emb, emb.doc_emb, shard.positions[emb.is_first], depth)

    hit = ids == emb.doc_ids[:, None]
    own_rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, depth + 1)  # 1 = the top neighbour
    other = np.where(hit, -np.inf, scores).max(axis=1)
    own_vectors = KeyedVectors(shard.positions[emb.is_first], emb.doc_emb).lookup(
        emb.doc_ids, Owners.gather([(shard.lo, shard.hi)]))
    own = np.einsum("ij,ij->i", emb.query_emb.astype(np.float64), own_vectors.astype(np.float64))
    run.report_scores(f"dist_data.filter: k={opts.k}", {"own_document": own, "best_other": other, "margin": own - other},
                      [("own document vs best other document", ["own_document", "best_other"], "score"),
                       (f"rank of the own document (kept: <= {opts.k}; {depth + 1} = below {depth})", ["own_rank"],
                        "rank")], extra={"own_rank": own_rank})

    kept = run.select(consistency_keep(ids, emb.doc_ids, min(opts.k, ids.shape[1])), "not_in_top_k")
    run.stats.add("unique_documents", int(emb.is_first.sum()))
    run.write_parts([shard.records[i] for i in kept], shard.rejects, ids=(str(g) for g in shard.gids[kept]))
    return run.merge(opts.compress, [Output(IDS_NAME, part="ids", json_list=True)] if opts.write_ids else [])


COMMANDS = {None: (FilterOptions, run_filter)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.filter --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.filter", argv)


if __name__ == "__main__":
    main()
