"""Rows with their file and line, and what makes one bad: the text checks every verb's parser uses,
and the one rule for a bad row (an error naming file and line, or a counted reject with
``--on_bad_rows=skip``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import BadRowError
from .stats import Stats

@dataclass
class Row:
    gid: int  # global row id over all sources
    source: str
    line: int  # 1-based physical line (jsonl, csv) or item number (json, parquet, hf)
    value: Any  # the parsed record (dict or list); None when it could not be parsed
    raw: str | None  # the record as written in the input, when the input is a text line
    error: str | None = None  # why it could not be parsed

    def as_json(self) -> str:
        """The record itself for output: the original line where there is one."""
        if self.raw is not None:
            return self.raw
        return json.dumps(self.value, ensure_ascii=False, default=str)


def bad_unicode(value: Any) -> str | None:
    """Where ``value`` holds text that is not valid Unicode (undecodable bytes kept as lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"at character {e.start}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = bad_unicode(item)
        if where:
            return f"in {key!r} {where}"
    return None


def checked_text(row: Row, name: str, text: Any) -> str:
    """``text`` checked: a non-empty string of valid Unicode, or a :class:`BadRowError` naming the row.

    A lone surrogate (``"\\ud800"`` is valid JSON) would crash the tokenizer on whichever rank
    embeds it; it is a bad row here, at read time.
    """
    if not isinstance(text, str):
        raise BadRowError(row.source, row.line, f"{name!r} is {type(text).__name__}, expected a string")
    if not text.strip():
        raise BadRowError(row.source, row.line, f"{name!r} is empty")
    where = bad_unicode(text)
    if where:
        raise BadRowError(row.source, row.line, f"{name!r} is not valid Unicode (a lone surrogate {where})")
    return text


def row_value(row: Row) -> Any:
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    return row.value


def get_texts(row: Row, keys: Sequence[str]) -> list[str]:
    """The text fields ``keys`` of a row (a dict by key, or a JSON list by position).

    Raises:
        BadRowError: naming file, line and what is wrong (missing key, non-string, empty text).
    """
    value = row_value(row)
    texts = []
    for pos, key in enumerate(keys):
        if isinstance(value, dict):
            if key not in value:
                raise BadRowError(row.source, row.line, f"missing key {key!r} (has {sorted(value)[:8]})")
            text = value[key]
        elif isinstance(value, list):
            if pos >= len(value):
                raise BadRowError(row.source, row.line, f"list row has {len(value)} items, expected at least {len(keys)}")
            text = value[pos]
        else:
            raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object or a list")
        texts.append(checked_text(row, key, text))
    return texts


Parse = Callable[[Row], Any]


REJECTED = object()


def reject_reason(reason: str) -> str:
    """The kind of a bad row, for counting: its reason without the details after "(" or ":"."""
    return reason.split(" (")[0].split(":")[0]


def parse_or_reject(row: Row, parse: Parse, on_bad_rows: str, rejects: list[dict[str, Any]], stats: Stats) -> Any:
    """``parse(row)``; a bad row raises (``on_bad_rows='error'``) or is set aside and counted (:data:`REJECTED`).
    A row the reader found bad (malformed JSON, invalid UTF-8, a lone surrogate) is that, with the
    reader's reason, whatever the verb's ``parse`` would make of it."""
    try:
        if row.error is not None:
            raise BadRowError(row.source, row.line, row.error)
        return parse(row)
    except BadRowError as e:
        if on_bad_rows == "error":
            raise
        rejects.append({"file": row.source, "line": row.line, "reason": e.reason,
                        "row": row.raw if row.raw is not None else row.value})
        stats.add("rejected", reason=reject_reason(e.reason))
        return REJECTED
