"""Packing token streams into fixed-length sequences (pure numpy: no files, no torch.distributed).

The packed stream is every document's tokens in input order, each wrapped in the tokenizer's
special tokens when ``specials='document'``. Sequence ``k`` is the stream's tokens
``[k * C, (k + 1) * C)``, where the content length ``C`` is ``seq_len``, or ``seq_len`` minus the
special tokens when ``specials='sequence'`` (each sequence is then wrapped instead). A document
shorter than a sequence is thus followed by the next ones until the sequence is full, a longer one
runs over several sequences, and only the very last sequence can be partial (padded, or dropped).

A rank holding the stream's slice ``[g0, g1)`` writes the sequences that *start* in it: it skips
the tokens before its first sequence start (the previous owner takes them) and completes its last
sequence with the heads of the following ranks' slices. So the sequences do not depend on how the
stream is cut between ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

SPECIALS = ("document", "sequence", "none")


@dataclass(frozen=True)
class Layout:
    """How sequences are built: length, content length, special and padding ids."""

    seq_len: int
    specials: str
    prefix: tuple[int, ...]  # e.g. (CLS,)
    suffix: tuple[int, ...]  # e.g. (SEP,)
    pad_id: int

    def __post_init__(self):
        if self.specials not in SPECIALS:
            raise ValueError(f"specials must be one of {', '.join(SPECIALS)}, got {self.specials!r}")
        n_special = len(self.prefix) + len(self.suffix)
        if self.specials != "none" and self.seq_len <= n_special:
            raise ValueError(f"seq_len={self.seq_len} leaves no room for content next to the "
                             f"{n_special} special token(s) of each {self.specials}")
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")

    @property
    def content_len(self) -> int:
        if self.specials == "sequence":
            return self.seq_len - len(self.prefix) - len(self.suffix)
        return self.seq_len

    def document_stream(self, docs: Sequence[Sequence[int]]) -> np.ndarray:
        """Documents' tokens concatenated (wrapped in specials with ``specials='document'``)."""
        if not docs:
            return np.zeros(0, dtype=np.int32)
        if self.specials != "document":
            return np.concatenate([np.asarray(d, dtype=np.int32) for d in docs])
        prefix, suffix = np.asarray(self.prefix, dtype=np.int32), np.asarray(self.suffix, dtype=np.int32)
        parts = []
        for d in docs:
            parts += [prefix, np.asarray(d, dtype=np.int32), suffix]
        return np.concatenate(parts)


@dataclass
class PackStats:
    sequences: int = 0
    tokens_out: int = 0  # non-padding tokens written (content + sequence specials)
    padding: int = 0
    sequence_specials: int = 0
    dropped_tokens: int = 0  # content of a dropped last partial sequence


@dataclass
class Packed:
    """A batch of sequences, ``(n, seq_len)`` each."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    special_tokens_mask: np.ndarray


def _emit(chunks: list[np.ndarray], layout: Layout, special_ids: np.ndarray, stats: PackStats) -> Packed:
    """Turn content chunks (each <= content_len) into padded sequences."""
    n, L = len(chunks), layout.seq_len
    ids = np.full((n, L), layout.pad_id, dtype=np.int32)
    mask = np.zeros((n, L), dtype=np.int8)
    for i, c in enumerate(chunks):
        row = np.concatenate([layout.prefix, c, layout.suffix]).astype(np.int32) if layout.specials == "sequence" else c
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    special = np.where(mask == 0, 1, 0).astype(np.int8)
    if layout.specials == "sequence":
        for i, c in enumerate(chunks):
            special[i, : len(layout.prefix)] = 1
            special[i, len(layout.prefix) + len(c) : len(layout.prefix) + len(c) + len(layout.suffix)] = 1
    elif layout.specials == "document":
        special |= np.isin(ids, special_ids).astype(np.int8) & mask
    stats.sequences += n
    stats.tokens_out += int(mask.sum())
    stats.padding += int(n * L - mask.sum())
    if layout.specials == "sequence":
        stats.sequence_specials += n * (len(layout.prefix) + len(layout.suffix))
    return Packed(ids, mask, special)


def pack_slice(blocks: Iterable[np.ndarray], start: int, continuation: np.ndarray, layout: Layout,
               drop_last: bool, stats: PackStats, batch: int = 4096) -> Iterator[Packed]:
    """The sequences that start in one rank's slice of the stream.

    Args:
        blocks: the slice's tokens, in order, a block at a time (memory stays one block).
        start: the slice's global offset ``g0`` in the stream.
        continuation: the stream's tokens right after the slice (at least ``content_len`` of them,
            or all that remain), to complete the slice's last sequence.
        drop_last: drop the stream's last sequence when it is partial (else pad it).

    Yields:
        batches of at most ``batch`` sequences.
    """
    C = layout.content_len
    special_ids = np.array(sorted({*layout.prefix, *layout.suffix}), dtype=np.int32)
    skip = (-start) % C  # tokens before the first sequence start: the previous owner's
    carry = np.zeros(0, dtype=np.int32)
    chunks: list[np.ndarray] = []
    for block in blocks:
        if skip:
            cut = min(skip, len(block))
            block, skip = block[cut:], skip - cut
        carry = np.concatenate([carry, block]) if len(carry) else block
        n_full = len(carry) // C
        chunks.extend(carry[i * C : (i + 1) * C] for i in range(n_full))
        carry = carry[n_full * C :]
        while len(chunks) >= batch:
            yield _emit(chunks[:batch], layout, special_ids, stats)
            chunks = chunks[batch:]
    if len(carry) and not skip:  # the last sequence starting here runs into the next slices
        last = np.concatenate([carry, continuation[: C - len(carry)]])
        if len(last) == C or not drop_last:
            chunks.append(last)
        else:
            stats.dropped_tokens += len(last)
    if chunks:
        yield _emit(chunks, layout, special_ids, stats)


def reference_pack(docs: Sequence[Sequence[int]], layout: Layout, drop_last: bool) -> list[list[int]]:
    """The same packing written the obvious way (for tests): un-padded sequences."""
    stream = [t for t in layout.document_stream(docs).tolist()]
    C = layout.content_len
    out = [stream[i : i + C] for i in range(0, len(stream), C)]
    if out and drop_last and len(out[-1]) < C:
        out.pop()
    if layout.specials == "sequence":
        out = [[*layout.prefix, *c, *layout.suffix] for c in out]
    return out



