"""Hard-negative mining for (query, positive) pairs, with sentence-transformers' semantics.

For each (query, positive): rank the corpus by similarity to the query, remove the query's
positives (every document paired with the same query text, and anything identical to one), the
candidates too close to the hardest positive (margins) or outside the score bounds, then take the
rank window ``[range_min, range_max)`` and pick ``num_negatives`` from it (top, or seeded random).
With ``--cross_encoder`` the candidates and positives are rescored by it first.

    torchrun --standalone --nproc-per-node=2 -m dist_data.mine --output_dir=out/mine
    python -m dist_data.mine --dataset=pairs.jsonl --output_dir=out/mine --num_negatives=15
    torchrun --nproc-per-node=8 -m dist_data.mine --dataset=pairs/ --output_dir=out/m \\
        --range_min=2 --range_max=100 --num_negatives=16 --sampling_strategy=random --seed=0
    torchrun --nproc-per-node=8 -m dist_data.mine --queries=msmarco/queries.jsonl \\
        --corpus=msmarco/corpus.jsonl --qrels=msmarco/qrels/train.tsv --output_format=tevatron --output_dir=out/t

Inputs: ``--dataset`` rows ``{query, document}``, ``{query, pos: [...]}``, ``{set: [query, pos, ...]}``
or ``[query, positive]`` (optionally ``--corpus`` adds candidate documents, ``--use_input_negatives``
the rows' own negatives); or BeIR mode (``--queries --corpus --qrels``): one item per
judged-positive (query, document), title and text joined by a space as BeIR does.

Output ``mined.jsonl[.gz]`` in ``--output_format`` (see :mod:`dist_data.text.formats`): per pair
``triplet``, ``n-tuple``, ``labeled-pair``, ``labeled-list`` (sentence-transformers) or ``nomic``
(contrastors: the folder ``mined/`` of shards, ``counts.json``, ``offsets.json.gz``); per query
``tevatron`` or ``flagembedding``. ``--output_scores`` adds the scores. Every run also writes
``scores.png`` and score quantiles in ``stats.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, cosine, flag, non_empty, one_of
from .core.paths import INPUT, INPUT_SPEC
from .core.write import write_folder_atomically
from .core.files import read_lines
from .core.options import PairOptions
from .core.collection import CollectionOptions
from .core.run import Output, Run, run_main
from .text.formats import FORMATS, QUERY_FORMATS, dumps, pair_rows, query_row, write_nomic_folder
from .text.mining import (PositiveSets, embed_stage, fetch_records, join_input_negatives, pair_scores, read_beir,
                          read_pairs, rerank_stage)
from .core.select import PAD_ID, canonical_topk, select_negatives
from .text.wordnet import SAMPLE_PAIRS

RESULT_NAME = "mined.jsonl"
NOMIC_FOLDER = "mined"  # --output_format=nomic: contrastors' shard folder
FIXED_WIDTH = ("n-tuple", "nomic")  # formats whose rows hold exactly --num_negatives negatives


@dataclass(frozen=True, kw_only=True)
class MineOptions(PairOptions, CollectionOptions):
    """Mine hard negatives for (query, positive) pairs."""

    counts = ("pairs", "rows_written", "with_all_negatives", "too_few_negatives", "merged_into_query_row",
              "input_negatives", "unique_queries", "unique_documents")
    count_buckets = ("candidates_removed",)
    summary = ("pairs", "with_all_negatives", "too_few_negatives", "merged_into_query_row", "candidates_removed",
               "rows_written")
    kept_unit = "items"

    dataset: str | None = flag(None, "(query, positive) rows in any sentence-transformers training-data layout "
                               "(default: the shipped WordNet sample)", non_empty, path=INPUT_SPEC)
    corpus: str | None = flag(None, "extra candidate documents (BeIR mode: the corpus)", non_empty, path=INPUT_SPEC)
    corpus_key: str = flag("text", "the corpus text field (a title field is joined by a space)", non_empty)
    queries: str | None = flag(None, "BeIR mode: queries.jsonl (with --corpus and --qrels)", non_empty, path=INPUT_SPEC)
    qrels: str | None = flag(None, "BeIR mode: a qrels TSV (query-id, corpus-id, score)", non_empty, path=INPUT)
    num_negatives: int = flag(3, "negatives per (query, positive)", at_least(1))
    range_min: int = flag(0, "skip this many top candidates (0-based rank window start)", at_least(0))
    range_max: int | None = flag(None, "rank window end, excluded (default: sentence-transformers' choice)",
                                 at_least(1))
    max_score: float | None = flag(None, "drop candidates scoring above this")
    min_score: float | None = flag(None, "drop candidates scoring below this")
    absolute_margin: float | None = flag(None, "drop candidates with score + margin > the hardest positive's")
    relative_margin: float | None = flag(None, "drop candidates with score > positive - |positive| * margin")
    sampling_strategy: str = flag("top", "top, or random (seeded by --seed and the row)", one_of("top", "random"))
    cross_encoder: str | None = flag(None, "a CrossEncoder (name or path) that rescores candidates and positives "
                                     "(--trust_remote_code applies to it too)", non_empty)
    cross_encoder_max_length: int | None = flag(None, "--cross_encoder: truncate each (query, document) pair to this "
                                                "many tokens (default: the cross-encoder's own)", at_least(1))
    include_positives: bool = flag(False, "keep the query's positives among the candidates, in rank order "
                                   "(reranking evaluation sets; with --output_format=n-tuple)")
    use_input_negatives: bool = flag(False, "the rows' own negatives (neg, negative, negative_N, list items after "
                                     "the positive) join their query's candidates, and the corpus")
    output_format: str = flag("triplet", ", ".join(FORMATS), one_of(*FORMATS))
    output_scores: bool = flag(False, "also write the scores (nomic: document_score, negatives_scores)")
    too_few: str = flag("keep", "keep or drop the pairs with fewer negatives than asked (counted either way; "
                        "n-tuple and nomic always drop them)",
                        one_of("keep", "drop"))
    shard_rows: int = flag(100_000, "nomic: rows per shard-XXXXX.jsonl.gz", at_least(1))
    shard_url: str | None = flag(None, "nomic: where the trainer will read the shards from (e.g. s3://bucket/mined); "
                                 "names them in counts.json and offsets.json.gz (default: the shard folder)",
                                 non_empty)

    def result_file(self) -> str:
        return self.result_name

    def side_outputs(self) -> list[str]:
        return [NOMIC_FOLDER]

    def models(self) -> list[tuple[str, str | None, str | None]]:
        return super().models() + ([("cross_encoder", self.cross_encoder, None)] if self.cross_encoder else [])

    def problems(self) -> list[str]:
        problems = []
        if self.range_max is not None and self.range_max <= self.range_min:
            problems.append(f"--range_max must be > --range_min={self.range_min}, got {self.range_max}")
        elif self.range_max is not None and self.num_negatives > self.range_max - self.range_min:
            problems.append(f"cannot mine --num_negatives={self.num_negatives} from ranks "
                            f"{self.range_min}..{self.range_max}")
        if self.queries or self.qrels:
            if not (self.queries and self.qrels and self.corpus):
                problems.append("BeIR mode needs all of --queries, --corpus and --qrels")
            if self.dataset:
                problems.append("give either --dataset (pairs) or --queries/--corpus/--qrels (BeIR), not both")
            if self.use_input_negatives:
                problems.append("--use_input_negatives reads the negatives of --dataset rows; BeIR mode has none")
        for name in ("max_score", "min_score"):  # a cross-encoder's scores are its own; the bi-encoder's are cosines
            problem = None if self.cross_encoder else cosine(getattr(self, name))
            if problem:
                problems.append(f"--{name} {problem} (a --cross_encoder's scores may lie outside)")
        if self.include_positives and self.output_format != "n-tuple":
            problems.append(f"--include_positives writes n-tuple rows (the positives keep their rank among the "
                            f"candidates); got --output_format={self.output_format}")
        return problems

    @property
    def result_name(self) -> str:
        return NOMIC_FOLDER if self.output_format == "nomic" else RESULT_NAME


def run_mine(info: distributed.DistInfo, opts: MineOptions, run: Run) -> dict | None:
    """The mining pipeline on this rank; returns the merged stats on rank 0."""
    stats = run.stats
    if opts.qrels:
        items, docs, rejects = read_beir(run)
    else:
        items, docs, rejects = read_pairs(run, opts.dataset or SAMPLE_PAIRS, opts.use_input_negatives)
    run.begin()
    emb = embed_stage(run, items, docs)

    n = len(items.queries)
    with stats.stage("candidates", rows=len(emb.query_keys)):
        pos_rep = emb.doc_reps.lookup(items.positive_keys, docs.owners)[:, 0]
        query_rep = emb.query_reps
        positives = PositiveSets.gather(query_rep[emb.item_query], pos_rep)
        if opts.range_max is not None:
            window_end = opts.range_max
        else:  # sentence-transformers' default: wider when filters will remove candidates
            filters = any(v is not None for v in (opts.absolute_margin, opts.relative_margin, opts.max_score)) or \
                (opts.cross_encoder is not None and opts.min_score is not None)
            window_end = opts.range_min + opts.num_negatives * (10 if filters else 1) + positives.max_count
        # room for the positives and the query's own text on top of the window, as sentence-transformers 6.3
        pool = window_end + positives.max_count + 1
        cand_scores, cand_ids, _ = run.search(emb.query_vectors, emb.doc_vectors.vectors, emb.doc_vectors.keys, pool)
        if items.negative_keys is not None:
            cand_scores, cand_ids = join_input_negatives(emb, docs, items, cand_scores, cand_ids)

    with stats.stage("positives", rows=n):
        pos_lists = [positives.of(int(query_rep[q])) for q in emb.item_query]
        # Every (item, positive) pair, scored against the positive's vector from its rank.
        flat_item = np.repeat(np.arange(n), [len(p) for p in pos_lists])
        flat_doc = np.concatenate(pos_lists) if n else np.zeros(0, dtype=np.int64)
        wanted = np.unique(np.concatenate([flat_doc, pos_rep]))
        vectors = emb.doc_vectors.lookup(wanted, docs.owners)
        flat_scores = pair_scores(emb.query_vectors,
                                  np.stack([emb.item_query[flat_item], np.searchsorted(wanted, flat_doc)], 1), vectors)
        own_score = pair_scores(emb.query_vectors, np.stack([emb.item_query, np.searchsorted(wanted, pos_rep)], 1),
                                vectors)

    if opts.cross_encoder:
        cand_scores, flat_scores, own_score = rerank_stage(run, items, docs, emb, cand_ids, flat_item, flat_doc, pos_rep)
        cand_scores, cand_ids = canonical_topk(cand_scores, cand_ids, cand_ids.shape[1])
    # The margins use the hardest (lowest-scoring) positive of the query, as sentence-transformers.
    hardest = np.full(n, np.inf)
    np.minimum.at(hardest, flat_item, flat_scores)

    with stats.stage("select", rows=n):
        seeds = (np.int64(opts.seed) * np.int64(1_000_003) + items.seed_keys) % np.int64(2**62)
        neg_ids, neg_scores, removed = select_negatives(
            cand_ids[emb.item_query], cand_scores[emb.item_query], pos_lists, hardest,
            # no more negatives can be found than there are candidates: a huge flag allocates nothing
            num_negatives=max(1, min(opts.num_negatives, cand_ids.shape[1])), range_min=opts.range_min,
            range_max=window_end, max_score=opts.max_score,
            min_score=opts.min_score, absolute_margin=opts.absolute_margin, relative_margin=opts.relative_margin,
            sampling=opts.sampling_strategy, seeds=seeds, exclude_positives=not opts.include_positives,
            query_doc_ids=emb.query_as_doc[emb.item_query])
        for rule, count in removed.items():
            stats.add("candidates_removed", count, reason=rule)

    found = (neg_ids != PAD_ID).sum(axis=1)
    selected = neg_ids != PAD_ID
    run.report_scores(f"dist_data.mine: {n_label(opts)}",
                      {"positive": own_score, "negative": neg_scores[selected],
                       "difference": np.repeat(own_score, found) - neg_scores[selected]},
                      [("positive vs selected negative scores", ["positive", "negative"], "score"),
                       ("positive - negative", ["difference"], "score difference")])

    with stats.stage("rows") as rec:
        grouped = opts.output_format in QUERY_FORMATS
        units = np.arange(n)
        if grouped:  # one row per query: its first (query, positive) item leads, the others merge into it
            qk = items.query_keys
            first = np.ones(n, dtype=bool)
            first[1:] = qk[1:] != qk[:-1]
            units = np.flatnonzero(first & (query_rep[emb.item_query] == qk))
            stats.add("merged_into_query_row", n - len(units))
        full = found[units] == opts.num_negatives
        # n-tuple columns and contrastors' batches (1 + num_negatives documents a query) are fixed-width
        keep = full | ((opts.too_few == "keep") & (opts.output_format not in FIXED_WIDTH) & (found[units] > 0))
        kept_units = units[run.select(keep, "too_few_negatives")]  # pairs = kept + dropped + merged_into_query_row
        bounds = np.searchsorted(flat_item, np.arange(n + 1))  # item i's positives: flat[bounds[i]:bounds[i + 1]]
        lead_pos = [flat_doc[bounds[i]:bounds[i + 1]] for i in kept_units.tolist()] if grouped else []
        records = fetch_records(docs, np.concatenate([neg_ids[kept_units][selected[kept_units]],
                                                      items.positive_keys[kept_units], *lead_pos]))
        stats.add("with_all_negatives", int(full.sum()))
        stats.add("too_few_negatives", int((~full).sum()))
        lines = []
        for j, i in enumerate(kept_units.tolist()):
            negatives = [records[int(d)] for d in neg_ids[i, : found[i]]]
            neg_sc = neg_scores[i, : found[i]].tolist()
            if grouped:
                query_id = items.query_ids[i] if items.query_ids else str(query_rep[emb.item_query[i]])
                out = [query_row(opts.output_format, items.queries[i], query_id, [records[int(d)] for d in lead_pos[j]],
                                 negatives, flat_scores[bounds[i]:bounds[i + 1]].tolist(), neg_sc, opts.output_scores)]
            else:
                out = pair_rows(opts.output_format, items.queries[i], records[int(items.positive_keys[i])], negatives,
                                own_score[i], neg_sc, opts.output_scores)
            lines += [dumps(r, opts.output_format) for r in out]
        stats.add("rows_written", len(lines))  # output lines (a triplet row per negative, ...)
        rec["rows"] = len(lines)
    run.write_parts(lines, rejects)
    if opts.output_format != "nomic":
        return run.merge(opts.compress)

    def nomic_folder(path: str) -> None:
        parts = [run.part("part", r) for r in range(info.world_size)]
        write_folder_atomically(path, lambda tmp: write_nomic_folder(
            read_lines(parts), tmp, opts.shard_rows, opts.shard_url or run.location(NOMIC_FOLDER)))

    return run.merge(result=Output(NOMIC_FOLDER, write=nomic_folder))


def n_label(opts: MineOptions) -> str:
    return (f"{opts.num_negatives} negatives, ranks {opts.range_min}..{opts.range_max or 'auto'}, "
            f"{opts.sampling_strategy}" + (f", cross-encoder {opts.cross_encoder}" if opts.cross_encoder else ""))


COMMANDS = {None: (MineOptions, run_mine)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.mine --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.mine", argv)


if __name__ == "__main__":
    main()
