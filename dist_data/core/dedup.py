"""Identity of texts: a document that appears several times is one document.

Texts are compared by a 128-bit hash of their whitespace-normalised form, so ranks can agree on
duplicates by exchanging 16 bytes a row instead of the text itself.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

HASH_DTYPE = np.dtype("V16")


def normalize_text(text: str) -> str:
    """Whitespace-insensitive identity: ``"a  dog\\n"`` and ``"a dog"`` are the same text."""
    return " ".join(text.split())


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """``(n,) V16`` blake2b-128 of each normalised text."""
    out = np.empty(len(texts), dtype=HASH_DTYPE)
    for i, text in enumerate(texts):
        out[i] = np.frombuffer(hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest(),
                               dtype=HASH_DTYPE)[0]
    return out


def first_occurrence(hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each row, the position of the first row (lowest position) with the same hash.

    Args:
        hashes: ``(n,) V16`` row hashes.
        positions: ``(n,) int64`` unique row positions, in any order.

    Returns:
        ``(n,) int64``: the representative position of each row's text (its own if it is the first).
    """
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    order = np.argsort(positions, kind="stable")
    # np.unique's first index is the earliest row of the sorted order among equal hashes.
    _, first_index, inverse = np.unique(hashes[order], return_index=True, return_inverse=True)
    out = np.empty(len(positions), dtype=np.int64)
    out[order] = positions[order][first_index][inverse.reshape(-1)]
    return out


def content_hash(parts: Sequence[str]) -> str:
    """Short hex digest of a sequence of strings (cache keys)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
