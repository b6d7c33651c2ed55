"""The output layouts of mined data, each for the trainer that reads it.

Per (query, positive) pair: ``triplet``, ``n-tuple``, ``labeled-pair``, ``labeled-list``
(sentence-transformers' training-data layouts, as ``mine_hard_negatives`` writes them) and
``nomic`` (contrastors' triplet rows, written as a folder of shards with ``counts.json`` and
``offsets.json.gz``). Per query (every positive of a query in one row, as their datasets hold
them): ``tevatron`` and ``flagembedding``.

Documents are ``(docid, title, text)``; the text a model sees is title and text joined by a space.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

from ..core.write import atomic_open, write_json
from .layouts import beir_join

PAIR_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list", "nomic")
QUERY_FORMATS = ("tevatron", "flagembedding")
FORMATS = PAIR_FORMATS + QUERY_FORMATS

# contrastors reads a row's columns for an objective from its metadata (text_text_loader.extract_pair).
NOMIC_METADATA = {"objective": {"self": [], "paired": [], "triplet": [["query", "document", "negatives"]]}}
NOMIC_META_FILES = ("counts.json", "offsets.json.gz")  # beside the shards; not rows

Doc = tuple[str, str, str]


def _round(scores: Iterable[float]) -> list[float]:
    return [round(float(s), 6) for s in scores]


def pair_rows(fmt: str, query: str, positive: Doc, negatives: Sequence[Doc], pos_score: float,
              neg_scores: Sequence[float], with_scores: bool) -> list[dict[str, Any]]:
    """Output records of one (query, positive) pair in a per-pair format."""
    scores = _round([pos_score, *neg_scores])
    pos_text = beir_join(positive[1], positive[2])
    neg_texts = [beir_join(d[1], d[2]) for d in negatives]
    if fmt == "triplet":
        return [{"anchor": query, "positive": pos_text, "negative": neg,
                 **({"scores": [scores[0], s]} if with_scores else {})} for neg, s in zip(neg_texts, scores[1:])]
    if fmt == "n-tuple":
        return [{"anchor": query, "positive": pos_text,
                 **{f"negative_{i}": neg for i, neg in enumerate(neg_texts, start=1)},
                 **({"scores": scores} if with_scores else {})}]
    if fmt == "labeled-pair":
        return [{"anchor": query, "positive": text, **({"score": s} if with_scores else {"label": label})}
                for text, label, s in zip([pos_text, *neg_texts], [1] + [0] * len(neg_texts), scores)]
    if fmt == "labeled-list":  # scores replace labels (a trainer takes every other column as an input)
        return [{"anchor": query, "documents": [pos_text, *neg_texts],
                 **({"scores": scores} if with_scores else {"labels": [1] + [0] * len(neg_texts)})}]
    if fmt == "nomic":
        return [{"query": query, "document": pos_text, "negatives": neg_texts,
                 **({"document_score": scores[0], "negatives_scores": scores[1:]} if with_scores else {}),
                 "metadata": NOMIC_METADATA}]
    raise ValueError(f"not a per-pair format: {fmt!r}")


def query_row(fmt: str, query: str, query_id: str, positives: Sequence[Doc], negatives: Sequence[Doc],
              pos_scores: Sequence[float], neg_scores: Sequence[float], with_scores: bool) -> dict[str, Any]:
    """The one record of a query (all its positives) in a per-query format."""
    if fmt == "tevatron":
        def passage(doc: Doc, score: float) -> dict[str, Any]:
            return {"docid": doc[0], "title": doc[1], "text": doc[2], **({"score": score} if with_scores else {})}
        return {"query_id": query_id, "query": query,
                "positive_passages": [passage(d, s) for d, s in zip(positives, _round(pos_scores))],
                "negative_passages": [passage(d, s) for d, s in zip(negatives, _round(neg_scores))]}
    if fmt == "flagembedding":  # FlagEmbedding's fine-tuning data; the scores serve its distillation
        return {"query": query, "pos": [beir_join(d[1], d[2]) for d in positives],
                "neg": [beir_join(d[1], d[2]) for d in negatives],
                "pos_scores": _round(pos_scores), "neg_scores": _round(neg_scores)}
    raise ValueError(f"not a per-query format: {fmt!r}")


def dumps(record: dict[str, Any], fmt: str) -> str:
    """One output line. nomic rows are ASCII (``\\uXXXX`` escapes): contrastors seeks by the
    character offsets of ``offsets.json.gz`` in the byte stream, so the two must be equal."""
    return json.dumps(record, ensure_ascii=fmt == "nomic")


# ---------------------------------------------------------------- contrastors' shard folder

def nomic_key(url: str) -> str:
    """The name under which contrastors' loader looks a shard up in ``counts.json`` and
    ``offsets.json.gz``: the URL without its scheme, cut to its last 3 path parts (last 4 when
    the URL has 6 or more ``/``-separated parts). For ``s3://bucket/data/shard-00000.jsonl.gz``
    that is ``bucket/data/shard-00000.jsonl.gz``, the name its ``offsets_count.py`` writes."""
    parts = url.split("/")
    return "/".join(parts[-4:] if len(parts) >= 6 else parts[-3:]).replace("s3://", "")


def write_nomic_folder(lines: Iterable[str], folder: str, rows_per_shard: int, url: str | None) -> dict[str, int]:
    """``shard-XXXXX.jsonl.gz`` files of ``rows_per_shard`` lines, then ``counts.json``
    (``{"count_per_file": {key: n}, "total_count": N}``) and ``offsets.json.gz``
    (``{key: {"i": [start, end]}}``, offsets in the decompressed stream). Keys name the shards as
    the trainer will find them under ``url`` (default: this folder). Each file is written atomically;
    ``counts.json`` last. Returns the counts per shard file name."""
    os.makedirs(folder, exist_ok=True)
    base = (url or os.path.abspath(folder)).rstrip("/")
    counts: dict[str, int] = {}
    offsets: dict[str, dict[str, list[int]]] = {}
    per_file: dict[str, int] = {}
    shard: list[str] = []

    def flush() -> None:
        name = f"shard-{len(per_file):05d}.jsonl.gz"
        key = nomic_key(f"{base}/{name}")
        pos, spans = 0, {}
        with atomic_open(os.path.join(folder, name), "wb", gzip_output=True) as f:
            for i, line in enumerate(shard):
                data = (line + "\n").encode("ascii")
                f.write(data)
                spans[str(i)] = [pos, pos + len(data)]
                pos += len(data)
        counts[key], offsets[key], per_file[name] = len(shard), spans, len(shard)
        shard.clear()

    for line in lines:
        shard.append(line)
        if len(shard) == rows_per_shard:
            flush()
    if shard or not per_file:
        flush()
    with atomic_open(os.path.join(folder, "offsets.json.gz"), "wb", gzip_output=True) as f:
        f.write(json.dumps(offsets, sort_keys=True).encode("utf-8"))
    write_json(os.path.join(folder, "counts.json"), {"count_per_file": counts, "total_count": sum(counts.values())})
    return per_file
