"""Text-domain row layouts: (query, positives[, negatives]) in every sentence-transformers training-data
layout, BeIR corpus and queries rows, and qrels files."""

from __future__ import annotations

import os
from dataclasses import dataclass


from ..core.errors import BadRowError, InputError
from ..core.rows import checked_text, Row, row_value

def get_query_positives(row: Row, query_key: str, document_key: str) -> tuple[str, list[str]]:
    """A query and its positives from any of the pair layouts of sentence-transformers' training data.

    - ``{query_key: q, document_key: d}`` (one positive);
    - ``{query_key: q, "pos": [d, ...]}`` (``"neg"``: see :func:`get_query_positives_negatives`);
    - ``{"set": [q, d, ...]}``: the first item is the query, the rest its positives;
    - ``[q, d, ...]``: a list row; the first item is the query, the second its positive (further
      items, the negatives of a triplet, are not used).
    """
    return get_query_positives_negatives(row, query_key, document_key, False)[:2]


def get_query_positives_negatives(row: Row, query_key: str, document_key: str,
                                  with_negatives: bool = True) -> tuple[str, list[str], list[str]]:
    """:func:`get_query_positives` and the row's own negatives (``neg``, ``negative``,
    ``negative_N``, or a list row's items after the positive); none when ``with_negatives`` is off."""
    value = row_value(row)
    if isinstance(value, list):
        if len(value) < 2:
            raise BadRowError(row.source, row.line, f"list row has {len(value)} item(s), expected [query, positive, ...]")
        negatives = [checked_text(row, f"item {i}", t) for i, t in enumerate(value[2:], 2)] if with_negatives else []
        return checked_text(row, "item 0", value[0]), [checked_text(row, "item 1", value[1])], negatives
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object or a list")
    query, positives = _dict_query_positives(row, value, query_key, document_key)
    return query, positives, _input_negatives(row, value) if with_negatives else []


def _dict_query_positives(row: Row, value: dict, query_key: str, document_key: str) -> tuple[str, list[str]]:
    if "set" in value and query_key not in value:
        items = value["set"]
        if not isinstance(items, list) or len(items) < 2:
            raise BadRowError(row.source, row.line, "'set' must be a list of at least 2 texts [query, positive, ...]")
        return checked_text(row, "set[0]", items[0]), [checked_text(row, f"set[{i}]", t) for i, t in enumerate(items[1:], 1)]
    if query_key not in value:
        raise BadRowError(row.source, row.line, f"missing key {query_key!r} (has {sorted(value)[:8]})")
    query = checked_text(row, query_key, value[query_key])
    if document_key in value:
        return query, [checked_text(row, document_key, value[document_key])]
    if "pos" in value:
        pos = value["pos"]
        if isinstance(pos, str):  # e.g. a part-of-speech column named pos: never a positive
            raise BadRowError(row.source, row.line, f"'pos' is a string ({pos[:40]!r}), expected a list of "
                                                    f"positive texts; is --document_key={document_key!r} right?")
        if not isinstance(pos, list) or not pos:
            raise BadRowError(row.source, row.line, "'pos' must be a non-empty list of texts")
        return query, [checked_text(row, f"pos[{i}]", t) for i, t in enumerate(pos)]
    raise BadRowError(row.source, row.line, f"missing key {document_key!r} (or 'pos') (has {sorted(value)[:8]})")


def _input_negatives(row: Row, value: dict) -> list[str]:
    """The negatives a row brings: ``neg`` (a list or one text), ``negative``, ``negative_1``, ..."""
    if "neg" in value:
        neg = value["neg"]
        items = [neg] if isinstance(neg, str) else neg
        if not isinstance(items, list):
            raise BadRowError(row.source, row.line, "'neg' must be a list of texts")
        return [checked_text(row, f"neg[{i}]", t) for i, t in enumerate(items)]
    keys = (["negative"] if "negative" in value else []) + sorted(
        (k for k in value if k.startswith("negative_") and k[9:].isdigit()), key=lambda k: int(k[9:]))
    return [checked_text(row, k, value[k]) for k in keys]


def _row_id(row: Row, value: dict) -> str:
    if "_id" not in value:
        raise BadRowError(row.source, row.line, f"missing key '_id' (has {sorted(value)[:8]})")
    rid = value["_id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
        raise BadRowError(row.source, row.line, f"'_id' must be a non-empty string or integer, got {rid!r}")
    return str(rid)


def get_beir_document(row: Row, text_key: str = "text") -> tuple[str, str, str]:
    """``(id, title, text)`` of a BeIR corpus row ``{"_id", "title", "text"}`` (``_id`` optional).

    The text a model sees is ``beir_join(title, text)``. A row without ``_id`` gets its line number.
    """
    value = row_value(row)
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    rid = _row_id(row, value) if "_id" in value else str(row.gid)
    if text_key not in value:
        raise BadRowError(row.source, row.line, f"missing key {text_key!r} (has {sorted(value)[:8]})")
    text, title = value[text_key], value.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise BadRowError(row.source, row.line, "'title' and the text must be strings")
    checked_text(row, "title + text", beir_join(title, text))
    return rid, title, text


def beir_join(title: str, text: str) -> str:
    """A BeIR document as models embed it: title and text joined by a space, stripped."""
    return f"{title} {text}".strip()


def get_beir_query(row: Row) -> tuple[str, str]:
    """``(id, text)`` of a BeIR queries row ``{"_id", "text"}``."""
    value = row_value(row)
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    return _row_id(row, value), checked_text(row, "text", value.get("text"))


@dataclass(frozen=True)
class Qrel:
    line: int
    query_id: str
    doc_id: str
    score: float


def read_qrels(path: str) -> tuple[list[Qrel], list[BadRowError]]:
    """A BeIR qrels TSV (``query-id  corpus-id  score``, header optional): its judgements, and its
    malformed lines as errors naming file and line.

    Raises:
        InputError: when the file is missing.
    """
    if not os.path.isfile(path):
        raise InputError(f"no such qrels file: {path}")
    out, bad = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            if lineno == 1 and cols[-1].strip().lower() == "score":
                continue
            if len(cols) != 3 or not cols[0] or not cols[1]:
                bad.append(BadRowError(path, lineno, "expected 3 tab-separated columns query-id, corpus-id, score "
                                                     f"(got {line.strip()[:80]!r})"))
                continue
            try:
                out.append(Qrel(lineno, cols[0], cols[1], float(cols[2])))
            except ValueError:
                bad.append(BadRowError(path, lineno, f"score {cols[2]!r} is not a number"))
    return out, bad
