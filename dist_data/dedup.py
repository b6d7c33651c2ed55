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
    """For each row, the position of the first row with the same hash.

    Args:
        hashes: ``(n,) V16`` row hashes.
        positions: ``(n,) int64`` row positions, ascending.

    Returns:
        ``(n,) int64``: the representative position of each row's text (its own if it is the first).
    """
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    # A stable sort keeps the earliest row first among equal hashes.
    _, first_index, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    return positions[first_index][inverse.reshape(-1)].astype(np.int64)


def content_hash(parts: Sequence[str]) -> str:
    """Short hex digest of a sequence of strings (cache keys)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
