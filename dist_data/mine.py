"""Hard-negative mining for (query, positive) pairs, with sentence-transformers' semantics.

For each pair: rank the corpus (the unique documents of the dataset) by similarity to the query,
remove the query's positives (every document paired with the same query, and anything identical
to one), the candidates too close to the positive (margins) or outside the score bounds, then take
the rank window ``[range_min, range_max)`` and pick ``num_negatives`` from it (top or seeded random).

    torchrun --standalone --nproc-per-node=2 -m dist_data.mine --output_dir=out/mine
    python -m dist_data.mine --dataset=pairs.jsonl --output_dir=out/mine --num_negatives=15
    torchrun --nproc-per-node=8 -m dist_data.mine --dataset=pairs/ --output_dir=out/m \\
        --range_min=2 --range_max=100 --num_negatives=16 --sampling_strategy=random --seed=0

Output ``mined.jsonl[.gz]`` in ``--output_format``: ``triplet`` (anchor, positive, negative; one
row per negative), ``n-tuple`` (anchor, positive, negative_1..n), ``labeled-pair`` (anchor,
positive, label), ``labeled-list`` (anchor, documents, labels), ``nomic`` (query, document,
negatives). ``--output_scores`` adds the scores.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from . import distributed, index
from .embed import BATCHES_PER_BLOCK, DEFAULT_MODEL
from .log import logger, progress
from .pipeline import (Stats, common_flag_problems, embed_pairs, fmt_rows, global_text_ids, merge_outputs, open_run, read_stage,
                       run_entry_point, write_parts)
from .select import PAD_ID, exact_scores, select_negatives
from .wordnet import SAMPLE_PAIRS

RESULT_NAME = "mined.jsonl"
FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list", "nomic")


def positives_by_query(query_ids: np.ndarray, doc_ids: np.ndarray) -> dict[int, np.ndarray]:
    """All ranks' (query id, document id) pairs grouped: query id -> sorted unique positive ids."""
    all_q = distributed.all_gather_array(query_ids)
    all_d = distributed.all_gather_array(doc_ids)
    order = np.lexsort((all_d, all_q))
    all_q, all_d = all_q[order], all_d[order]
    bounds = np.flatnonzero(np.diff(all_q)) + 1
    return {int(q[0]): np.unique(d) for q, d in zip(np.split(all_q, bounds), np.split(all_d, bounds)) if len(q)}


def format_rows(fmt: str, query: str, positive: str, negatives: list[str], pos_score: float,
                neg_scores: list[float], with_scores: bool) -> Iterator[dict[str, Any]]:
    """Output records of one (query, positive) pair in one of :data:`FORMATS`."""
    scores = [round(float(pos_score), 6)] + [round(float(s), 6) for s in neg_scores]
    if fmt == "triplet":
        for neg, score in zip(negatives, scores[1:]):
            yield {"anchor": query, "positive": positive, "negative": neg,
                   **({"scores": [scores[0], score]} if with_scores else {})}
    elif fmt == "n-tuple":
        yield {"anchor": query, "positive": positive,
               **{f"negative_{i}": neg for i, neg in enumerate(negatives, start=1)},
               **({"scores": scores} if with_scores else {})}
    elif fmt == "labeled-pair":
        for text, label, score in zip([positive, *negatives], [1] + [0] * len(negatives), scores):
            yield {"anchor": query, "positive": text, **({"score": score} if with_scores else {"label": label})}
    elif fmt == "labeled-list":
        yield {"anchor": query, "documents": [positive, *negatives], "labels": [1] + [0] * len(negatives),
               **({"scores": scores} if with_scores else {})}
    else:  # nomic
        yield {"query": query, "document": positive, "negatives": negatives,
               **({"scores": scores} if with_scores else {})}


def run_mine(info: distributed.DistInfo, args: dict, *, dataset: str, output_dir: str, query_key: str,
             document_key: str, num_negatives: int, range_min: int, range_max: int | None,
             max_score: float | None, min_score: float | None, absolute_margin: float | None,
             relative_margin: float | None, sampling_strategy: str, seed: int, output_format: str,
             output_scores: bool, too_few: str, model_name: str, batch_size: int, max_rows: int | None,
             query_prompt: str, document_prompt: str, max_seq_length: int | None, dtype: str, on_bad_rows: str,
             compress: bool, overwrite: bool, show_progress: bool, revision: str | None, split: str) -> dict | None:
    start = time.perf_counter()
    run, done = open_run(info, output_dir, args, RESULT_NAME, overwrite)
    if done is not None:
        return done
    stats = Stats()
    block_rows = BATCHES_PER_BLOCK * batch_size
    shard = read_stage(info, stats, dataset, split, [query_key, document_key], max_rows, seed, block_rows,
                       on_bad_rows)
    if info.is_main:
        run.write_args()
    queries, documents = shard.texts[query_key], shard.texts[document_key]

    query_ids = global_text_ids(shard.positions, queries)
    emb = embed_pairs(info, stats, run, shard, queries, documents, model_name=model_name, revision=revision,
                      dtype=dtype, max_seq_length=max_seq_length, batch_size=batch_size, block_rows=block_rows,
                      query_prompt=query_prompt, document_prompt=document_prompt, show_progress=show_progress)
    doc_ids, is_first, query_emb, first_docs = emb.doc_ids, emb.is_first, emb.query_emb, emb.first_docs

    with stats.stage("search", rows=len(queries)):
        positives = positives_by_query(query_ids, doc_ids)
        max_positives = max((len(p) for p in positives.values()), default=1)
        if range_max is not None:
            window_end = range_max
        else:  # sentence-transformers' default: wider when filters will remove candidates
            filters = any(v is not None for v in (absolute_margin, relative_margin, max_score))
            window_end = range_min + num_negatives * (10 if filters else 1) + max_positives
        # As sentence-transformers: room for the positives on top of the window.
        pool = window_end + max_positives
        all_doc_emb = distributed.all_gather_array(emb.doc_emb)
        all_doc_ids = distributed.all_gather_array(shard.positions[is_first])
        with progress(len(queries), "search", show_progress and info.is_main, unit="queries") as bar:
            cand_scores, cand_ids, timings = index.search(query_emb, emb.doc_emb, shard.positions[is_first], pool,
                                                          "gather", info.device, fp16=dtype == "float16",
                                                          on_progress=bar.update)
        row_of_doc = {int(d): i for i, d in enumerate(all_doc_ids)}
        pos_lists = [positives[int(q)] for q in query_ids]
        pos_score = np.empty(len(queries))
        for i, pos in enumerate(pos_lists):
            rows = np.array([[row_of_doc[int(d)] for d in pos]])
            pos_score[i] = exact_scores(query_emb[i : i + 1], all_doc_emb, rows).min()
        own_score = exact_scores(query_emb, all_doc_emb,
                                 np.array([[row_of_doc[int(d)]] for d in doc_ids]).reshape(-1, 1))[:, 0]
    stats.record("index", len(all_doc_ids), timings["index_seconds"])

    with stats.stage("select", rows=len(queries)):
        seeds = (np.int64(seed) * np.int64(1_000_003) + shard.gids) % np.int64(2**62)
        neg_ids, neg_scores, removed = select_negatives(
            cand_ids, cand_scores, pos_lists, pos_score, num_negatives=num_negatives, range_min=range_min,
            range_max=window_end, max_score=max_score, min_score=min_score, absolute_margin=absolute_margin,
            relative_margin=relative_margin, sampling=sampling_strategy, seeds=seeds)
        for rule, n in removed.items():
            stats.add("candidates_removed", n, reason=rule)

    with stats.stage("write") as rec:
        # Negatives are named by document id; their texts come from the rank that holds them.
        doc_text = dict(zip(all_doc_ids.tolist(),
                            [t for part in distributed.all_gather_object(first_docs) for t in part]))
        lines = []
        for i in range(len(queries)):
            found = int((neg_ids[i] != PAD_ID).sum())
            full = found == num_negatives
            stats.add("queries")
            stats.add("with_all_negatives" if full else "too_few_negatives")
            if not full and (too_few == "drop" or output_format == "n-tuple" or found == 0):
                stats.add("dropped", reason="too_few_negatives")
                continue
            negatives = [doc_text[int(d)] for d in neg_ids[i, :found]]
            for out in format_rows(output_format, queries[i], documents[i], negatives, own_score[i],
                                   neg_scores[i, :found].tolist(), output_scores):
                lines.append(json.dumps(out, ensure_ascii=False))
        stats.add("kept", len(lines))
        rec["rows"] = len(lines)
        write_parts(run, info.rank, lines, None, shard.rejects)
    merged = merge_outputs(run, info.rank, info.world_size, stats, compress, False)
    if merged is not None:
        c = merged["counts"]
        logger.info("mined %s queries: %s with all %d negatives, %s with fewer (%s dropped), %s rows written, "
                    "rejected %s, in %.0f s -> %s", fmt_rows(c.get("queries", 0)),
                    fmt_rows(c.get("with_all_negatives", 0)), num_negatives, fmt_rows(c.get("too_few_negatives", 0)),
                    fmt_rows(c.get("dropped", {}).get("too_few_negatives", 0)), fmt_rows(c.get("kept", 0)),
                    fmt_rows(sum(c.get("rejected", {}).values())), time.perf_counter() - start,
                    run.file(merged["outputs"]["result"]))
    return merged


@record
def main(
    output_dir: str,
    dataset: str = SAMPLE_PAIRS,
    query_key: str = "query",
    document_key: str = "document",
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    sampling_strategy: str = "top",
    seed: int = 42,
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
        num_negatives: negatives per query.
        range_min, range_max: the rank window among the remaining candidates (0-based, end excluded);
            range_max defaults to range_min + num_negatives + the largest number of positives.
        max_score, min_score: drop candidates scoring above / below.
        absolute_margin, relative_margin: drop candidates with score + margin > positive score, or
            score > positive - |positive| * margin (false-negative protection).
        sampling_strategy: ``top`` or ``random`` (seeded per query by ``--seed`` and its line id).
        too_few: ``keep`` the queries with fewer negatives than asked (n-tuple cannot) or ``drop``
            them; counted either way.
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
    if index != "gather":
        problems.append("--index=sharded is not available for mine yet; use --index=gather")
    run_entry_point(problems, timeout_minutes, lambda info: run_mine(
        info, args, dataset=str(dataset), output_dir=str(output_dir), query_key=query_key,
        document_key=document_key, num_negatives=num_negatives, range_min=range_min, range_max=range_max,
        max_score=max_score, min_score=min_score, absolute_margin=absolute_margin, relative_margin=relative_margin,
        sampling_strategy=sampling_strategy, seed=seed, output_format=output_format,
        output_scores=bool(output_scores), too_few=too_few, model_name=model_name, batch_size=batch_size,
        max_rows=max_rows, query_prompt=query_prompt or "", document_prompt=document_prompt or "",
        max_seq_length=max_seq_length, dtype=dtype, on_bad_rows=on_bad_rows, compress=bool(compress),
        overwrite=bool(overwrite), show_progress=bool(progress), revision=revision, split=split))

if __name__ == "__main__":
    import fire

    fire.Fire(main)
