"""The cleaning step of a catalogue table: rows flagged as deleted out, text lowercased, exact
duplicates out, a seeded sample. Pure: rows in, kept rows and counts out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..core.errors import BadRowError
from ..core.rows import Row
from ..core.blocks import sample_positions

TRUE = frozenset({"1", "true", "t", "yes", "y"})
FALSE = frozenset({"0", "false", "f", "no", "n", ""})


def truthy(row: Row, key: str) -> bool:
    """A flag column's value as a boolean (1/0, true/false, yes/no, empty or null = false).

    Raises:
        BadRowError: the column is missing or holds something else.
    """
    if key not in row.value:
        raise BadRowError(row.source, row.line, f"missing flag column {key!r} (has {sorted(row.value)[:8]})")
    value = row.value[key]
    if value is None or isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value == value and value != 0
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise BadRowError(row.source, row.line, f"flag column {key!r} holds {value!r:.40}, expected 1/0, true/false "
                                            "or yes/no")


@dataclass
class Cleaned:
    rows: list[dict[str, Any]]
    dropped: dict[str, int] = field(default_factory=dict)


def dedup_key(value: dict[str, Any], keys: Sequence[str], row: Row) -> bytes:
    """The identity of a row: its ``keys`` fields, whitespace collapsed (a null field is empty)."""
    h = hashlib.blake2b(digest_size=16)
    for key in keys:
        if key not in value:
            raise BadRowError(row.source, row.line, f"missing dedup key {key!r} (has {sorted(value)[:8]})")
        text = value[key]
        h.update(("" if text is None else " ".join(str(text).split())).encode("utf-8"))
        h.update(b"\x00")
    return h.digest()


def prepare(row: Row, dedup_keys: Sequence[str], drop_if: Sequence[str],
            lowercase: bool) -> tuple[str | None, dict[str, Any], bytes | None]:
    """``(the first drop_if flag set or None, the row with its dedup_keys fields lowercased when asked,
    its identity or None without dedup_keys)``.

    Raises:
        BadRowError: a row that is not an object, a missing column, a flag that is not a boolean.
    """
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    if not isinstance(row.value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(row.value).__name__}, expected an object")
    flagged = next((k for k in drop_if if truthy(row, k)), None)
    value = {k: v.lower() if lowercase and isinstance(v, str) and k in dedup_keys else v
             for k, v in row.value.items()}
    return flagged, value, dedup_key(value, dedup_keys, row) if dedup_keys else None


def clean_rows(prepared: Iterable[tuple[str | None, dict[str, Any], bytes | None]], drop_if: Sequence[str],
               sample: int | None, seed: int) -> Cleaned:
    """In this order: rows with a ``drop_if`` flag set are dropped (``flagged_<column>``); a row whose
    identity equals an earlier kept row's is dropped (``duplicate``); ``sample`` of the rest are drawn
    (seeded, input order kept; ``not_sampled``)."""
    dropped: dict[str, int] = {f"flagged_{k}": 0 for k in drop_if}
    dropped.update(duplicate=0, not_sampled=0)
    kept: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for flagged, value, key in prepared:
        if flagged is not None:
            dropped[f"flagged_{flagged}"] += 1
            continue
        if key is not None:
            if key in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(key)
        kept.append(value)
    chosen = sample_positions(len(kept), sample, seed)
    if chosen is not None:
        dropped["not_sampled"] = len(kept) - len(chosen)
        kept = [kept[i] for i in chosen]
    return Cleaned(kept, dropped)
