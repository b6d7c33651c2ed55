"""Global keys: which rank holds a key, the first occurrence of a text, and lookups by key.

A *key* is an int64 that names one row (or one text slot of a row) across all ranks; it is a
function of the input alone (never of the number of ranks), so everything ordered or seeded by
keys is the same for any world size. Each rank holds whole key ranges; :class:`Owners` maps a key
to its rank, and :func:`distributed.fetch` asks that rank for the key's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import distributed
from .dedup import first_occurrence, text_hashes


@dataclass(frozen=True)
class Owners:
    """Which rank holds each key: sorted ``[start, end)`` key ranges and their ranks."""

    starts: np.ndarray
    ends: np.ndarray
    ranks: np.ndarray

    @classmethod
    def gather(cls, ranges: Sequence[tuple[int, int]]) -> "Owners":
        """Every rank passes the key ranges it holds; all ranks get the whole map."""
        rows = [(lo, hi, r) for r, part in enumerate(distributed.all_gather_object(list(ranges)))
                for lo, hi in part if hi > lo]
        rows.sort()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return cls(arr[:, 0], arr[:, 1], arr[:, 2])

    def of(self, keys: np.ndarray) -> np.ndarray:
        """The rank holding each key.

        Raises:
            KeyError: for a key no rank holds (a bug, never a user error).
        """
        keys = np.asarray(keys, dtype=np.int64)
        i = np.searchsorted(self.starts, keys, side="right") - 1
        bad = (i < 0) | (keys >= self.ends[np.maximum(i, 0)]) if len(self.starts) else np.ones(len(keys), bool)
        if bad.any():
            raise KeyError(f"no rank holds key {int(keys[bad][0])}")
        return self.ranks[i]


def global_first(keys: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """For each of this rank's ``(key, text)``, the lowest key (on any rank) with the same text.

    Texts are compared by their normalised 128-bit hash. Each hash has a home rank (the hash
    modulo the world size) that sees every occurrence of it: a rank sends 24 bytes a row to the
    homes and holds O(rows / world) of them, never the whole corpus's hashes. Collective.
    """
    keys = np.asarray(keys, dtype=np.int64)
    hashes = text_hashes(texts)
    world = distributed.get_world_size()
    if world == 1:
        return first_occurrence(hashes, keys)
    home = (hashes.view(np.uint64).reshape(-1, 2)[:, 0] % np.uint64(world)).astype(np.int64)
    row = np.empty(len(keys), dtype=[("hash", hashes.dtype), ("key", np.int64)])
    row["hash"], row["key"] = hashes, keys
    order, received = distributed.route(row, home)
    here = np.concatenate(received)
    return distributed.unroute(order, received, first_occurrence(here["hash"].copy(), here["key"].copy()))


@dataclass
class KeyedVectors:
    """This rank's rows of a distributed table: sorted keys and one vector per key."""

    keys: np.ndarray  # (m,) int64 ascending
    vectors: np.ndarray  # (m, d)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.keys, keys)
        if len(keys) and (np.any(i >= len(self.keys)) or np.any(self.keys[np.minimum(i, len(self.keys) - 1)] != keys)):
            raise KeyError("asked for a key this rank does not hold")
        return i

    def serve(self, keys: np.ndarray) -> np.ndarray:
        return self.vectors[self.rows(keys)]

    def lookup(self, keys: np.ndarray, owners: Owners) -> np.ndarray:
        """Vectors of any keys, from whichever rank holds them (collective: every rank must call)."""
        keys = np.asarray(keys, dtype=np.int64)
        return distributed.fetch(keys, owners.of(keys), self.serve).reshape((len(keys),) + self.vectors.shape[1:])


def fetch_held(want: np.ndarray, owners: Owners, held: np.ndarray, texts: Sequence[str],
               values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The text and value of each wanted key, from whichever rank holds it (collective).

    Every rank passes the keys it holds (``held``, ascending) with one text and one value each."""
    want = np.asarray(want, dtype=np.int64)
    dest = owners.of(want)
    got_texts = distributed.fetch_strings(want, dest, lambda keys: [texts[i] for i in np.searchsorted(held, keys)])
    got_values = distributed.fetch(want, dest, lambda keys: values[np.searchsorted(held, keys)])
    return got_texts, got_values
