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
or ``[query, positive]`` (optionally ``--corpus`` adds candidate documents); or BeIR mode
(``--queries --corpus --qrels``): one item per judged-positive (query, document), title and text
joined by a space as BeIR does.

Output ``mined.jsonl[.gz]`` in ``--output_format``: ``triplet`` (anchor, positive, negative; one
row per negative), ``n-tuple`` (anchor, positive, negative_1..n), ``labeled-pair`` (anchor,
positive, label), ``labeled-list`` (anchor, documents, labels), ``nomic`` (query, document,
negatives), ``tevatron`` (query_id, query, positive_passages, negative_passages of {docid, title,
text}). ``--output_scores`` adds the scores.
"""

from __future__ import annotations

import json
import time

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed, index
from .core.embed import BATCHES_PER_BLOCK, DEFAULT_MODEL
from .core.log import logger, progress
from .text.mining import (PositiveSets, embed_stage, fetch_records, format_rows, pair_scores, read_beir, read_pairs,
                     rerank_stage)
from .core.pipeline import Stats, common_flag_problems, fmt_rows, merge_outputs, open_run, run_entry_point, write_parts
from .core.select import PAD_ID, canonical_topk, select_negatives
from .text.wordnet import SAMPLE_PAIRS

RESULT_NAME = "mined.jsonl"
FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list", "nomic", "tevatron")


def run_mine(info: distributed.DistInfo, args: dict, *, dataset: str | None, corpus: str | None, corpus_key: str,
             queries: str | None, qrels: str | None, output_dir: str, query_key: str, document_key: str,
             num_negatives: int, range_min: int, range_max: int | None, max_score: float | None,
             min_score: float | None, absolute_margin: float | None, relative_margin: float | None,
             sampling_strategy: str, seed: int, cross_encoder: str | None, output_format: str, output_scores: bool,
             too_few: str, model_name: str, batch_size: int, max_rows: int | None, index_mode: str,
             query_prompt: str, document_prompt: str, max_seq_length: int | None, dtype: str, on_bad_rows: str,
             compress: bool, overwrite: bool, show_progress: bool, revision: str | None, split: str) -> dict | None:
    """The mining pipeline on this rank; returns the merged stats on rank 0."""
    start = time.perf_counter()
    run, done = open_run(info, output_dir, args, RESULT_NAME, overwrite)
    if done is not None:
        return done
    stats = Stats()
    block_rows = BATCHES_PER_BLOCK * batch_size
    if qrels:
        items, docs, rejects = read_beir(info, stats, queries=queries, corpus=corpus, qrels=qrels, split=split,
                                         corpus_key=corpus_key, max_rows=max_rows, seed=seed, block_rows=block_rows,
                                         on_bad_rows=on_bad_rows)
    else:
        items, docs, rejects = read_pairs(info, stats, dataset=dataset or SAMPLE_PAIRS, split=split,
                                          query_key=query_key, document_key=document_key, corpus=corpus,
                                          corpus_key=corpus_key, max_rows=max_rows, seed=seed,
                                          block_rows=block_rows, on_bad_rows=on_bad_rows)
    if info.is_main:
        run.write_args()
    emb = embed_stage(info, stats, run, items, docs, model_name=model_name, revision=revision, dtype=dtype,
                      max_seq_length=max_seq_length, batch_size=batch_size, block_rows=block_rows,
                      query_prompt=query_prompt, document_prompt=document_prompt, show_progress=show_progress)

    n = len(items.queries)
    with stats.stage("search", rows=len(emb.query_keys)):
        pos_rep = emb.doc_reps.lookup(items.positive_keys, docs.owners)[:, 0]
        query_rep = emb.query_reps
        positives = PositiveSets.gather(query_rep[emb.item_query], pos_rep)
        if range_max is not None:
            window_end = range_max
        else:  # sentence-transformers' default: wider when filters will remove candidates
            filters = any(v is not None for v in (absolute_margin, relative_margin, max_score, min_score))
            window_end = range_min + num_negatives * (10 if filters else 1) + positives.max_count
        pool = window_end + positives.max_count  # room for the positives on top of the window
        with progress(len(emb.query_keys), "search", show_progress and info.is_main, unit="queries") as bar:
            cand_scores, cand_ids, timings = index.search(
                emb.query_vectors, emb.doc_vectors.vectors, emb.doc_vectors.keys, pool, index_mode, info.device,
                fp16=dtype == "float16", on_progress=bar.update)
    stats.record("index", sum(distributed.all_gather_object(len(emb.doc_vectors.keys))), timings["index_seconds"])

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

    if cross_encoder:
        cand_scores, flat_scores, own_score = rerank_stage(
            info, stats, cross_encoder, items, docs, emb, cand_ids, flat_item, flat_doc, pos_rep,
            batch_size=batch_size, block_rows=block_rows, show_progress=show_progress)
        cand_scores, cand_ids = canonical_topk(cand_scores, cand_ids, cand_ids.shape[1])
    # The margins use the hardest (lowest-scoring) positive of the query, as sentence-transformers.
    hardest = np.full(n, np.inf)
    np.minimum.at(hardest, flat_item, flat_scores)

    with stats.stage("select", rows=n):
        seeds = (np.int64(seed) * np.int64(1_000_003) + items.seed_keys) % np.int64(2**62)
        neg_ids, neg_scores, removed = select_negatives(
            cand_ids[emb.item_query], cand_scores[emb.item_query], pos_lists, hardest, num_negatives=num_negatives,
            range_min=range_min, range_max=window_end, max_score=max_score, min_score=min_score,
            absolute_margin=absolute_margin, relative_margin=relative_margin, sampling=sampling_strategy, seeds=seeds)
        for rule, count in removed.items():
            stats.add("candidates_removed", count, reason=rule)

    with stats.stage("write") as rec:
        found = (neg_ids != PAD_ID).sum(axis=1)
        full = found == num_negatives
        keep = full | ((too_few == "keep") & (output_format != "n-tuple") & (found > 0))
        records = fetch_records(docs, np.concatenate([neg_ids[keep][neg_ids[keep] != PAD_ID],
                                                      items.positive_keys[keep]]))
        lines = []
        for i in range(n):
            stats.add("queries")
            stats.add("with_all_negatives" if full[i] else "too_few_negatives")
            if not keep[i]:
                stats.add("dropped", reason="too_few_negatives")
                continue
            negatives = [records[int(d)] for d in neg_ids[i, : found[i]]]
            query_id = items.query_ids[i] if items.query_ids else str(query_rep[emb.item_query[i]])
            for out in format_rows(output_format, items.queries[i], query_id,
                                   records[int(items.positive_keys[i])], negatives, own_score[i],
                                   neg_scores[i, : found[i]].tolist(), output_scores):
                lines.append(json.dumps(out, ensure_ascii=False))
        stats.add("kept", len(lines))
        rec["rows"] = len(lines)
        write_parts(run, info.rank, lines, None, rejects)
    merged = merge_outputs(run, info.rank, info.world_size, stats, compress, False)
    if merged is not None:
        c = merged["counts"]
        removed_total = c.get("candidates_removed", {})
        logger.info("mined %s (query, positive) pairs: %s with all %d negatives, %s with fewer (%s dropped); "
                    "candidates removed: %s; %s rows written, rejected %s, in %.0f s -> %s",
                    fmt_rows(c.get("queries", 0)), fmt_rows(c.get("with_all_negatives", 0)), num_negatives,
                    fmt_rows(c.get("too_few_negatives", 0)), fmt_rows(c.get("dropped", {}).get("too_few_negatives", 0)),
                    ", ".join(f"{k} {fmt_rows(v)}" for k, v in sorted(removed_total.items())) or "none",
                    fmt_rows(c.get("kept", 0)), fmt_rows(sum(c.get("rejected", {}).values())),
                    time.perf_counter() - start, run.file(merged["outputs"]["result"]))
    return merged


@record
def main(
    output_dir: str,
    dataset: str | None = None,
    query_key: str = "query",
    document_key: str = "document",
    corpus: str | None = None,
    corpus_key: str = "text",
    queries: str | None = None,
    qrels: str | None = None,
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    sampling_strategy: str = "top",
    seed: int = 42,
    cross_encoder: str | None = None,
    output_format: str = "triplet",
    output_scores: bool = False,
    too_few: str = "keep",
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 64,
    max_rows: int | None = None,
    index: str = "gather",
    query_prompt: str = "",
    document_prompt: str = "",
    max_seq_length: int | None = None,
    dtype: str = "float32",
    on_bad_rows: str = "error",
    compress: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
    split: str = "train",
    timeout_minutes: int = 120,
) -> None:
    """Mine hard negatives; see the module docstring.

    Args:
        dataset: (query, positive) rows: ``{query_key, document_key}``, ``{query_key, "pos": [...]}``,
            ``{"set": [query, positive, ...]}`` or ``[query, positive]`` lists, in jsonl(.gz),
            parquet, csv, folders, globs, save_to_disk folders or Hugging Face names. Default: the
            shipped WordNet sample.
        corpus: extra candidate documents (``corpus_key``, plus ``title`` when present, joined as
            BeIR does); the positives are always candidates too.
        queries, qrels: BeIR mode, with ``corpus``: queries.jsonl, corpus.jsonl and a qrels TSV;
            one output row per judged-positive (query, document).
        num_negatives: negatives per (query, positive).
        range_min, range_max: the rank window among the remaining candidates (0-based, end
            excluded); range_max defaults to sentence-transformers' choice.
        max_score, min_score: drop candidates scoring above / below.
        absolute_margin, relative_margin: drop candidates with score + margin > positive score, or
            score > positive - |positive| * margin, against the query's hardest positive.
        sampling_strategy: ``top`` or ``random`` (seeded by ``--seed`` and the row, whatever the ranks).
        cross_encoder: a CrossEncoder name or path that rescores candidates and positives first.
        output_format: triplet, n-tuple, labeled-pair, labeled-list, nomic or tevatron.
        too_few: ``keep`` the pairs with fewer negatives than asked (n-tuple cannot) or ``drop``
            them; counted either way.
        index: ``gather`` (every rank searches all documents) or ``sharded`` (each rank indexes its
            documents; per-shard top-k merged). Same output.
    """
    args = dict(locals())
    problems = common_flag_problems(batch_size, max_rows, on_bad_rows, dtype)
    for name, value, low in [("num_negatives", num_negatives, 1), ("range_min", range_min, 0)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"--{name} must be an integer >= {low}, got {value!r}")
    if range_max is not None and (not isinstance(range_max, int) or range_max <= range_min):
        problems.append(f"--range_max must be an integer > range_min={range_min}, got {range_max!r}")
    elif range_max is not None and isinstance(range_min, int) and num_negatives > range_max - range_min:
        problems.append(f"cannot mine {num_negatives} negatives from ranks {range_min}..{range_max}")
    if sampling_strategy not in ("top", "random"):
        problems.append(f"--sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    if output_format not in FORMATS:
        problems.append(f"--output_format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    if too_few not in ("keep", "drop"):
        problems.append(f"--too_few must be 'keep' or 'drop', got {too_few!r}")
    if index not in ("gather", "sharded"):
        problems.append(f"--index must be 'gather' or 'sharded', got {index!r}")
    if queries or qrels:
        if not (queries and qrels and corpus):
            problems.append("BeIR mode needs all of --queries, --corpus and --qrels")
        if dataset:
            problems.append("give either --dataset (pairs) or --queries/--corpus/--qrels (BeIR), not both")
    run_entry_point(problems, timeout_minutes, lambda info: run_mine(
        info, args, dataset=None if dataset is None else str(dataset), corpus=None if corpus is None else str(corpus),
        corpus_key=str(corpus_key), queries=None if queries is None else str(queries),
        qrels=None if qrels is None else str(qrels), output_dir=str(output_dir), query_key=str(query_key),
        document_key=str(document_key), num_negatives=num_negatives, range_min=range_min, range_max=range_max,
        max_score=max_score, min_score=min_score, absolute_margin=absolute_margin, relative_margin=relative_margin,
        sampling_strategy=sampling_strategy, seed=seed, cross_encoder=cross_encoder, output_format=output_format,
        output_scores=bool(output_scores), too_few=too_few, model_name=model_name, batch_size=batch_size,
        max_rows=max_rows, index_mode=index, query_prompt=query_prompt or "", document_prompt=document_prompt or "",
        max_seq_length=max_seq_length, dtype=dtype, on_bad_rows=on_bad_rows, compress=bool(compress),
        overwrite=bool(overwrite), show_progress=bool(progress), revision=revision, split=split))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
