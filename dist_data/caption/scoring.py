"""Scoring LAION captions with a text model over all ranks: LAIONet's ``similarity`` (each labelled
caption against its class's "{name} which is {definition}") and ``search_similar`` (each reference
caption's top-k captions, each claiming the first unclaimed one).

Both read this rank's blocks of rows once (:func:`read_accepted`), keep the rows the parser
accepted by their global id, embed and score them, and write one parquet block per input block in
a second streamed pass (:func:`write_blocks`) that looks at the accepted rows only: a row set aside
in the first pass (``--on_bad_rows=skip``) is never parsed again. Rank 0 joins the blocks in order,
so the table does not depend on the number of ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..core import distributed
from ..core.errors import BadRowError, InputError
from ..core.keys import global_first
from ..core.blocks import BlockSlice
from ..core.rows import parse_or_reject, REJECTED, Row
from ..core.run import Run
from ..core.write import join_parquet, save_npz, write_parquet
from . import laion as steps
from . import label as labelling
from .classes import imagenet_classes, wnid_to_label
from .laion_io import laion_table, read_references
from .runs import publish_table

SIMILARITY_TABLE = "laion_similarity.parquet"
SIMILAR_TABLE = "laion_similar.parquet"


# ---------------------------------------------------------------- the two passes over the rows

def read_accepted(run: Run, plan: BlockSlice, parse: Callable[[Row], Any], rejects: list[dict[str, Any]],
                  keep: Callable[[Row, Any], bool]) -> dict[int, int]:
    """One streamed pass over this rank's blocks: every row counted (``read``), parsed (a bad row
    rejected, or an error on every rank), and offered to ``keep(row, parsed)``. Returns the global
    ids of the rows kept, each with its order among them. Collective."""
    accepted: dict[int, int] = {}
    with run.stats.stage("read") as rec, distributed.same_error_on_every_rank():
        for _, rows in plan.blocks():
            run.stats.add("read", len(rows))
            rec["rows"] += len(rows)
            for row in rows:
                parsed = parse_or_reject(row, parse, run.opts.on_bad_rows, rejects, run.stats)
                if parsed is not REJECTED and keep(row, parsed):
                    accepted[row.gid] = len(accepted)
    return accepted


def write_blocks(run: Run, plan: BlockSlice, folder: str, accepted: dict[int, int],
                 record: Callable[[dict[str, Any], int], dict[str, Any] | None],
                 float_columns: tuple[str, ...]) -> list[str]:
    """The second pass: for each accepted row, ``record(its parsed row, its order)`` (None: left
    out), one parquet block per input block under the run's ``folder``. Returns the paths of every
    block of the run (all ranks'), in order, for rank 0 to join."""
    out_dir = os.path.join(run.cache_dir, folder)
    os.makedirs(out_dir, exist_ok=True)
    text_key = run.opts.text_key
    with run.stats.stage("rows") as rec:
        for b, rows in plan.blocks():
            records = []
            for row in rows:
                j = accepted.get(row.gid)
                if j is None:  # rejected or dropped in the first pass: never parsed again
                    continue
                got = record(steps.parse_laion_row(row, text_key)[0], j)
                if got is not None:
                    records.append(got)
            rec["rows"] += len(records)
            write_parquet(os.path.join(out_dir, f"block-{b:07d}.parquet"), laion_table(records, float_columns))
    return [os.path.join(out_dir, f"block-{b:07d}.parquet") for b in range(-(-plan.n // plan.block_rows))]


# ---------------------------------------------------------------- similarity

def _parse_labelled(row: Row, text_key: str, known: dict[str, int]) -> tuple[str | None, list[int]]:
    record_, caption = steps.parse_laion_row(row, text_key)
    found = record_.get(steps.WNIDS)
    if not isinstance(found, (list, tuple)) or not all(isinstance(w, str) for w in found):
        raise BadRowError(row.source, row.line, f"{steps.WNIDS!r} must be a list of wnids, got "
                                    f"{found!r:.60}")
    unknown = [w for w in found if w not in known]
    if unknown:
        raise BadRowError(row.source, row.line, f"{steps.WNIDS!r} holds {unknown[0]!r}, not an "
                                    f"ImageNet-1k wnid")
    return caption, [known[w] for w in found]


def similarity(run: Run, class_names: list[str]) -> dict | None:
    """Each caption of one class scored against its class text; several-class, no-class and empty
    captions dropped (counted). Returns the merged stats on rank 0. Collective."""
    opts, stats = run.opts, run.stats
    classes, known = imagenet_classes(), wnid_to_label()
    plan = run.plan(opts.df_path)
    if plan.n == 0:  # before the 1,000 class texts are embedded, and before the folder is touched
        raise InputError(f"--df_path {opts.df_path}: no rows to score")
    run.begin()
    rejects: list[dict[str, Any]] = []
    texts, labels = [], []

    def one_class(row: Row, parsed: tuple[str | None, list[int]]) -> bool:
        caption, found = parsed
        if len(found) != 1:
            stats.add("dropped", reason="several_classes" if found else "no_class")
            return False
        if caption is None or not caption.strip():
            stats.add("dropped", reason="empty_caption")
            return False
        texts.append(caption)
        labels.append(found[0])
        return True

    accepted = read_accepted(run, plan, lambda r: _parse_labelled(r, opts.text_key, known), rejects, one_class)
    keys = np.fromiter(accepted, dtype=np.int64, count=len(accepted))
    labels_arr = np.asarray(labels, dtype=np.int64)
    # a caption is scored against one class: (class, caption) is what is embedded once
    first = global_first(keys, [f"{classes[c].wnid} {t}" for c, t in zip(labels, texts)])
    is_first = first == keys
    first_rows = np.flatnonzero(is_first)
    with run.embed(len(first_rows), checkpoint=opts.checkpoint) as embed:
        class_emb = embed.one_block([steps.query_text(c) for c in classes], "name_def")
        caption_emb = embed(keys[is_first], [texts[i] for i in first_rows], "caption")
        stats.add("texts_embedded", embed.texts_embedded)
    sims = np.einsum("nd,nd->n", caption_emb.astype(np.float64),
                     class_emb[labels_arr[is_first]].astype(np.float64)).astype(np.float32)
    all_keys, all_sims = distributed.all_gather_array(keys[is_first]), distributed.all_gather_array(sims)
    row_sims = all_sims[np.searchsorted(all_keys, first)] if len(first) else np.zeros(0, np.float32)
    for c in labels:
        stats.add("per_class", reason=classes[c].wnid)
    stats.add("kept", len(keys))
    blocks = write_blocks(run, plan, "similarity", accepted, lambda record, j: {
        **record, steps.QUERY_WNID: classes[labels[j]].wnid, steps.SIMILARITY: float(row_sims[j])},
        (steps.SIMILARITY,))
    counts = labelling.class_counts(run, [c.wnid for c in classes]).tolist()
    return publish_table(run, SIMILARITY_TABLE, lambda path: join_parquet(blocks, path), class_names, counts, rejects)


# ---------------------------------------------------------------- search_similar

@dataclass
class _Claimed:
    """The LAION rows claimed by a reference (sorted by ``laion_index``), gathered on every rank."""

    laion_ids: np.ndarray
    reference: np.ndarray  # the claiming reference of each (an index into the gathered references)
    score: np.ndarray

    def of(self, laion_index: int) -> int | None:
        j = int(np.searchsorted(self.laion_ids, laion_index))
        return j if j < len(self.laion_ids) and self.laion_ids[j] == laion_index else None


def search_similar(run: Run, class_names: list[str],
                   extra: list[tuple[str, Callable[[str], Any]]]) -> dict | None:
    """Each reference caption's top-k LAION captions; each claims the first unclaimed one
    (:func:`dist_data.caption.laion.claim`); ``extra`` files are written beside the table. Returns the
    merged stats on rank 0. Collective."""
    opts, stats = run.opts, run.stats
    classes, known = imagenet_classes(), wnid_to_label()
    run.begin()
    rejects: list[dict[str, Any]] = []
    refs = read_references(run, known, rejects)
    plan = run.plan(opts.laion)
    doc_keys, doc_texts = [], []

    def with_caption(row: Row, parsed: tuple[dict[str, Any], str | None]) -> bool:
        record_, caption = parsed
        if caption is None or not caption.strip():
            stats.add("dropped", reason="empty_caption")
            return False
        doc_keys.append(record_[steps.INDEX])
        doc_texts.append(caption)
        return True

    accepted = read_accepted(run, plan, lambda r: steps.parse_laion_row(r, opts.text_key), rejects, with_caption)
    doc_gids = np.fromiter(accepted, dtype=np.int64, count=len(accepted))
    with run.embed(len(refs.texts) + len(doc_texts), checkpoint=opts.checkpoint) as embed:
        ref_emb = embed(refs.keys, refs.texts, "reference")
        doc_emb = embed(doc_gids, doc_texts, "laion")
    scores, ids, _ = run.search(ref_emb, doc_emb, np.asarray(doc_keys, dtype=np.int64), opts.topk, bar=False)
    all_ids, all_scores = distributed.all_gather_array(ids), distributed.all_gather_array(scores)
    all_labels, all_ref_keys = distributed.all_gather_array(refs.labels), distributed.all_gather_array(refs.keys)
    claims = steps.claim(all_ids, all_scores)  # the same on every rank: reference order
    stats.add("unclaimed_references", len(claims.unclaimed) if run.info.is_main else 0)
    order = np.argsort(claims.laion_ids)
    claimed = _Claimed(claims.laion_ids[order], claims.reference[order], claims.score[order])

    def claimed_row(record_: dict[str, Any], _: int) -> dict[str, Any] | None:
        j = claimed.of(record_[steps.INDEX])
        if j is None:
            return None
        r = int(claimed.reference[j])
        wnid = classes[int(all_labels[r])].wnid
        stats.add("per_class", reason=wnid)
        stats.add("kept")
        return {**record_, steps.WNID: wnid, "reference_index": int(all_ref_keys[r]),
                "text_to_text_similarity": float(claimed.score[j])}

    blocks = write_blocks(run, plan, "similar", accepted, claimed_row, ("text_to_text_similarity",))
    counts = labelling.class_counts(run, [c.wnid for c in classes]).tolist()

    def topk(path: str) -> None:
        save_npz(path, reference_index=all_ref_keys, wnid_label=all_labels, laion_index=all_ids, score=all_scores)

    return publish_table(run, SIMILAR_TABLE, lambda path: join_parquet(blocks, path), class_names, counts, rejects,
                         [*extra, ("topk.npz", topk)])
