"""The stages of hard-negative mining, each rank on its own slice of rows.

Inputs become :class:`Items` (one per (query, positive) pair, in output order) and
:class:`Documents` (every document occurrence this rank read). Identity is by text: a query or a
document that occurs several times is embedded once, by the rank that read its first occurrence
(its *representative* key), in the embedding block of that occurrence, so its vector is the same
for any number of ranks. Everything a rank needs from another rank (a representative, a vector, a
text) is fetched from the rank that holds it, by key.

Key spaces: document keys are corpus positions ``[0, n_corpus)`` followed by the positive slots of
the pair rows (``n_corpus + position * stride + slot``); query keys are positions of the pair
rows (or of the BeIR queries file).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..core import distributed
from ..core.dedup import text_hashes
from ..core.errors import BadRowError
from .layouts import beir_join, get_beir_document, get_beir_query, get_query_positives_negatives, read_qrels
from ..core.keys import KeyedVectors, Owners, global_first
from ..core.log import logger
from ..core.rows import reject_reason
from ..core.run import Run
from ..core.stats import Stats
from ..core.select import PAD_ID, canonical_topk, exact_scores


@dataclass
class Documents:
    """Document occurrences read by this rank, in ascending key order."""

    keys: np.ndarray  # (m,) int64
    block_pos: np.ndarray  # (m,) int64 the position that picks the embedding block
    roles: list[str]  # "corpus" or "document": block namespace
    ids: list[str]  # docid for output (corpus _id, or the key)
    titles: list[str]
    texts: list[str]
    owners: Owners = field(default=None)  # type: ignore[assignment]

    @property
    def model_texts(self) -> list[str]:
        """What the model embeds: title and text joined as BeIR does."""
        return [beir_join(t, x) for t, x in zip(self.titles, self.texts)]

    def records(self, keys: np.ndarray) -> list[str]:
        """``[docid, title, text]`` of own keys as JSON (served to other ranks)."""
        rows = np.searchsorted(self.keys, keys)
        return [json.dumps([self.ids[i], self.titles[i], self.texts[i]], ensure_ascii=False) for i in rows.tolist()]


@dataclass
class Items:
    """This rank's (query, positive) pairs, in output order."""

    queries: list[str]
    query_keys: np.ndarray  # (n,) int64 key of the query's occurrence
    positive_keys: np.ndarray  # (n,) int64 key of the positive's occurrence (on any rank)
    seed_keys: np.ndarray  # (n,) int64 seeds random sampling
    query_owners: Owners = field(default=None)  # type: ignore[assignment]
    query_ids: list[str] | None = None  # the input's query ids (BeIR); else the query's key
    negative_keys: list[np.ndarray] | None = None  # the input row's own negatives (--use_input_negatives)


# ---------------------------------------------------------------- reading

def _documents(rows: list[tuple[int, int, str, str, str, str]], owners: Owners) -> Documents:
    rows.sort()
    return Documents(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                     [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows], owners)


def read_pairs(run: Run, dataset: str, input_negatives: bool = False) -> tuple[Items, Documents, list[dict]]:
    """Pair rows (any sentence-transformers layout: ``--query_key``, ``--document_key``) and,
    optionally, a separate corpus of negatives (``--corpus``).

    With ``input_negatives`` the rows' own negatives are documents too (candidates of every
    query), and each item remembers those of its row.
    """
    opts, stats = run.opts, run.stats
    shard = run.read(lambda row: get_query_positives_negatives(row, opts.query_key, opts.document_key,
                                                               input_negatives), dataset)
    rejects = list(shard.rejects)
    docs: list[tuple] = []
    ranges = []
    n_corpus = 0
    if opts.corpus:
        cshard = run.read(lambda row: get_beir_document(row, opts.corpus_key), opts.corpus, name="corpus")
        rejects += cshard.rejects
        n_corpus = cshard.n_processed
        docs += [(int(p), int(p), "corpus", rid, title, text)
                 for p, (rid, title, text) in zip(cshard.positions.tolist(), cshard.values)]
        ranges.append((cshard.lo, cshard.hi))
    stride = 1 + distributed.all_reduce_max(max((len(v[1]) + len(v[2]) for v in shard.values), default=1))
    queries, query_keys, positive_keys, seed_keys, negative_keys = [], [], [], [], []
    for pos, gid, (query, positives, negatives) in zip(shard.positions.tolist(), shard.gids.tolist(), shard.values):
        neg_keys = np.array([n_corpus + pos * stride + slot
                             for slot in range(len(positives) + 1, len(positives) + 1 + len(negatives))], dtype=np.int64)
        for key, text in zip(neg_keys.tolist(), negatives):
            docs.append((key, pos, "document", str(key), "", text))
        for slot, text in enumerate(positives, start=1):
            key = n_corpus + pos * stride + slot
            docs.append((key, pos, "document", str(key), "", text))
            queries.append(query)
            query_keys.append(pos)
            positive_keys.append(key)
            seed_keys.append(gid * stride + slot)
            negative_keys.append(neg_keys)
        stats.add("input_negatives", len(negatives))
    ranges.append((n_corpus + shard.lo * stride, n_corpus + shard.hi * stride))
    items = Items(queries, np.array(query_keys, dtype=np.int64), np.array(positive_keys, dtype=np.int64),
                  np.array(seed_keys, dtype=np.int64), Owners.gather([(shard.lo, shard.hi)]),
                  negative_keys=negative_keys if input_negatives else None)
    stats.add("pairs", len(queries))
    return items, _documents(docs, Owners.gather(ranges)), rejects


def read_beir(run: Run) -> tuple[Items, Documents, list[dict]]:
    """A BeIR folder's queries, corpus and qrels (``--queries``, ``--corpus``, ``--qrels``): one item
    per judged-positive (query, document).

    Every rank reads the (small) qrels file whole; queries and corpus rows are sharded.
    """
    info, opts, stats = run.info, run.opts, run.stats
    queries, corpus, qrels, on_bad_rows = opts.queries, opts.corpus, opts.qrels, opts.on_bad_rows
    judged, bad = read_qrels(qrels)  # a missing file is an InputError on every rank alike
    rejects = _bad_rows(bad if info.is_main else [], on_bad_rows, stats)
    positives: dict[str, list] = defaultdict(list)
    for q in judged:
        if q.score > 0:
            positives[q.query_id].append(q)
    if info.is_main:
        stats.add("qrels", len(judged))
        stats.add("qrels_not_positive", sum(q.score <= 0 for q in judged))
    qshard = run.read(get_beir_query, queries)
    cshard = run.read(lambda row: get_beir_document(row, opts.corpus_key), corpus, name="corpus")
    rejects += qshard.rejects + cshard.rejects
    docs = [(int(p), int(p), "corpus", rid, title, text)
            for p, (rid, title, text) in zip(cshard.positions.tolist(), cshard.values)]
    id_keys = _corpus_id_table(cshard, stats)
    stride = 1 + max((len(v) for v in positives.values()), default=1)
    items_q, query_keys, wanted, seed_keys, used_lines = [], [], [], [], []
    for pos, (qid, text) in zip(qshard.positions.tolist(), qshard.values):
        judged_here = positives.get(qid, [])
        if not judged_here:
            stats.add("queries_without_positives")
        for slot, q in enumerate(judged_here, start=1):
            items_q.append(text)
            query_keys.append(pos)
            wanted.append(q)
            seed_keys.append(pos * stride + slot)
            used_lines.append(q.line)
    # Judged documents missing from the corpus, and judged queries missing from the queries file.
    keys = id_keys(text_hashes([q.doc_id for q in wanted]))
    problems = [BadRowError(qrels, q.line, f"corpus-id {q.doc_id!r} is not in {corpus}")
                for q, k in zip(wanted, keys) if k < 0]
    all_used = set(distributed.all_gather_array(np.array(used_lines, dtype=np.int64)).tolist())
    if not opts.max_rows:
        problems += [BadRowError(qrels, q.line, f"query-id {q.query_id!r} is not in {queries}")
                     for qs in positives.values() for q in qs if q.line not in all_used and info.is_main]
    rejects += _bad_rows(problems, on_bad_rows, stats)
    keep = keys >= 0
    items = Items([t for t, k in zip(items_q, keep) if k], np.array(query_keys, dtype=np.int64)[keep],
                  keys[keep], np.array(seed_keys, dtype=np.int64)[keep], Owners.gather([(qshard.lo, qshard.hi)]),
                  [q.query_id for q, k in zip(wanted, keep) if k])
    stats.add("pairs", len(items.queries))
    return items, _documents(docs, Owners.gather([(cshard.lo, cshard.hi)])), rejects


def _bad_rows(errors: Sequence[BadRowError], on_bad_rows: str, stats: Stats) -> list[dict]:
    """Raise the first (on every rank) with ``error``; with ``skip``, the rejects records, counted."""
    distributed.raise_if_any_failed(errors[0] if errors and on_bad_rows == "error" else None)
    for e in errors:
        stats.add("rejected", reason=reject_reason(e.reason).split(" '")[0])
    return [{"file": e.source, "line": e.line, "reason": e.reason, "row": None} for e in errors]


def _corpus_id_table(cshard, stats: Stats) -> Callable[[np.ndarray], np.ndarray]:
    """Corpus ``_id`` -> key over all ranks (hashes of the ids are gathered, 24 bytes a document)."""
    hashes = distributed.all_gather_array(text_hashes([v[0] for v in cshard.values]))
    keys = distributed.all_gather_array(cshard.positions)
    as_int = hashes.view(np.dtype([("hi", "<u8"), ("lo", "<u8")]))
    order = np.lexsort((keys, as_int["lo"], as_int["hi"]))
    hashes, keys = hashes[order], keys[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    if distributed.get_rank() == 0 and (~first).sum():
        stats.add("duplicate_corpus_ids", int((~first).sum()))
        logger.warning("corpus: %d duplicate _id(s); the first occurrence of each is used", int((~first).sum()))
    hashes, keys = hashes[first], keys[first]
    sortable = hashes.view(np.dtype([("hi", "<u8"), ("lo", "<u8")]))

    def lookup(wanted: np.ndarray) -> np.ndarray:
        w = wanted.view(np.dtype([("hi", "<u8"), ("lo", "<u8")]))
        i = np.searchsorted(sortable, w)
        found = (i < len(sortable)) & (sortable[np.minimum(i, len(sortable) - 1)] == w) if len(sortable) else \
            np.zeros(len(w), dtype=bool)
        return np.where(found, keys[np.minimum(i, max(len(keys) - 1, 0))] if len(keys) else -1, -1)

    return lookup


# ---------------------------------------------------------------- identity and embedding

@dataclass
class Embedded:
    """Representatives and vectors: what the search and the scores need."""

    doc_reps: KeyedVectors  # key -> representative key, for every occurrence this rank read
    doc_vectors: KeyedVectors  # representative key -> vector, for the representatives read here
    query_keys: np.ndarray  # (u,) this rank's distinct query occurrence keys
    query_reps: np.ndarray  # (u,) their representatives (first occurrence of the text, any rank)
    query_vectors: np.ndarray  # (u, d) their vectors (fetched from the representative's rank)
    item_query: np.ndarray  # (n,) row of each item in query_keys
    query_as_doc: np.ndarray  # (u,) the representative of the document whose text is the query's, or PAD_ID


def embed_stage(run: Run, items: Items, docs: Documents) -> Embedded:
    """Deduplicate queries and documents over all ranks and embed each distinct text once."""
    stats = run.stats
    doc_texts = docs.model_texts
    query_keys, first_item, item_query = np.unique(items.query_keys, return_index=True, return_inverse=True)
    query_texts = [items.queries[i] for i in first_item]
    # One pass over documents and queries (queries keyed above every document): a document's
    # representative, and the document (if any) whose text is a query's, never its negative.
    offset = distributed.all_reduce_max(int(docs.keys.max()) + 1 if len(docs.keys) else 0)
    reps = global_first(np.concatenate([docs.keys, query_keys + offset]), doc_texts + query_texts)
    doc_rep = reps[: len(docs.keys)]
    query_as_doc = np.where(reps[len(docs.keys):] < offset, reps[len(docs.keys):], PAD_ID)
    own_doc = np.flatnonzero(doc_rep == docs.keys)
    query_rep = global_first(query_keys, query_texts)
    own_query = np.flatnonzero(query_rep == query_keys)
    with run.embed(len(own_doc) + len(own_query), roles="pairs") as embed:
        q_vec = embed(query_keys[own_query], [query_texts[i] for i in own_query], "query")
        parts = []
        for role in ("corpus", "document"):
            rows = [i for i in own_doc.tolist() if docs.roles[i] == role]
            if rows:
                parts.append(embed(docs.block_pos[rows], [doc_texts[i] for i in rows], role, as_role="document"))
        d_vec = np.concatenate(parts) if parts else embed(np.zeros(0, dtype=np.int64), [], "document")
    stats.add("unique_queries", len(own_query))
    stats.add("unique_documents", len(own_doc))
    own_queries = KeyedVectors(query_keys[own_query], q_vec)
    query_vectors = own_queries.lookup(query_rep, items.query_owners)
    # The corpus rows come first in key order, so the documents' vectors are in key order too.
    return Embedded(KeyedVectors(docs.keys, doc_rep[:, None]), KeyedVectors(docs.keys[own_doc], d_vec),
                    query_keys, query_rep, query_vectors, item_query, query_as_doc)


@dataclass
class PositiveSets:
    """The positives of this rank's queries, over all ranks: query representative -> sorted unique
    document representatives (each query's list is assembled on a home rank, query mod world, and
    sent back to the ranks that ask: no rank holds the pairs of the whole corpus)."""

    query_reps: np.ndarray  # sorted, with repeats
    doc_reps: np.ndarray  # aligned, unique per query
    max_count: int  # the most (query, positive) rows of any query text, repeats included (all ranks)

    @classmethod
    def gather(cls, item_query_rep: np.ndarray, item_pos_rep: np.ndarray) -> "PositiveSets":
        """Collective: every rank passes its (query rep, positive rep) items."""
        world = distributed.get_world_size()
        pairs = np.stack([np.asarray(item_query_rep, dtype=np.int64), np.asarray(item_pos_rep, dtype=np.int64)], 1)
        _, received = distributed.route(pairs, pairs[:, 0] % world)
        rows = np.concatenate(received)  # every (query, positive) row of the queries homed here
        home = _unique_pairs(rows)
        # sentence-transformers sizes its candidate pool by the rows of a query, repeats included
        counts = np.unique(rows[:, 0], return_counts=True)[1] if len(rows) else np.ones(1, dtype=np.int64)
        max_count = distributed.all_reduce_max(int(counts.max()))
        wanted = np.unique(pairs[:, 0])
        _, asked = distributed.route(wanted, wanted % world)
        answers = []
        for keys in asked:  # each asker gets the pairs of the queries it asked for
            lo, hi = np.searchsorted(home[:, 0], keys), np.searchsorted(home[:, 0], keys, side="right")
            answers.append(np.concatenate([home[a:b] for a, b in zip(lo.tolist(), hi.tolist())])
                           if len(keys) else home[:0])
        mine = _unique_pairs(np.concatenate(distributed.exchange(answers)))
        return cls(mine[:, 0].copy(), mine[:, 1].copy(), max_count)

    def of(self, query_rep: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.query_reps, [query_rep, query_rep + 1])
        return self.doc_reps[lo:hi]


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """``(n, 2)`` int64 rows sorted by (first, second), repeats removed."""
    pairs = pairs.reshape(-1, 2)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    return pairs[first]


def join_input_negatives(emb: Embedded, docs: Documents, items: Items, cand_scores: np.ndarray,
                         cand_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's candidates with its input row's own negatives added (scored like any
    candidate, deduplicated by text, canonical order). Collective."""
    per_query = [items.negative_keys[i] for i in np.searchsorted(items.query_keys, emb.query_keys).tolist()]
    flat = np.concatenate(per_query) if per_query else np.zeros(0, dtype=np.int64)
    reps = emb.doc_reps.lookup(flat, docs.owners)[:, 0]
    wanted = np.unique(reps)
    vectors = emb.doc_vectors.lookup(wanted, docs.owners)
    rows = np.repeat(np.arange(len(per_query)), [len(k) for k in per_query])
    scores = pair_scores(emb.query_vectors, np.stack([rows, np.searchsorted(wanted, reps)], 1), vectors)
    width = max((len(k) for k in per_query), default=0)
    extra_ids = np.full((len(per_query), width), PAD_ID, dtype=np.int64)
    extra_scores = np.full((len(per_query), width), -np.inf)
    start = 0
    for r, keys in enumerate(per_query):  # a negative the search found already, or listed twice, counts once
        seen = set(cand_ids[r].tolist())
        for c, (rep, score) in enumerate(zip(reps[start:start + len(keys)].tolist(), scores[start:start + len(keys)])):
            if rep not in seen:
                extra_ids[r, c], extra_scores[r, c] = rep, score
                seen.add(rep)
        start += len(keys)
    ids = np.concatenate([cand_ids, extra_ids], axis=1)
    return canonical_topk(np.concatenate([cand_scores, extra_scores], axis=1), ids, ids.shape[1])


def pair_scores(query_vectors: np.ndarray, rows: np.ndarray, doc_vectors: np.ndarray) -> np.ndarray:
    """Float64 inner products of ``query_vectors[rows[:, 0]]`` with ``doc_vectors[rows[:, 1]]``."""
    if len(rows) == 0:
        return np.zeros(0)
    return exact_scores(query_vectors[rows[:, 0]], doc_vectors, rows[:, 1:2])[:, 0]


def cross_encoder_scores(cross_encoder, pairs: Sequence[tuple[str, str]], groups: np.ndarray,
                               batch_size: int) -> np.ndarray:
    """Cross-encoder scores of (query, document) pairs, one ``predict`` call per group.

    Groups are embedding blocks of queries: a score never depends on which rank computed it.
    """
    out = np.zeros(len(pairs), dtype=np.float64)
    bounds = np.flatnonzero(np.diff(groups)) + 1
    for chunk in np.split(np.arange(len(pairs)), bounds):
        if len(chunk):
            out[chunk] = np.asarray(cross_encoder.predict([pairs[i] for i in chunk], batch_size=batch_size,
                                                          show_progress_bar=False, convert_to_numpy=True),
                                    dtype=np.float64).reshape(-1)
    return out


def rerank_stage(run: Run, items: Items, docs: Documents, emb: Embedded, cand_ids: np.ndarray, flat_item: np.ndarray,
                 flat_doc: np.ndarray, pos_rep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescore every candidate and every positive with ``--cross_encoder`` (replacing the
    bi-encoder's scores), ``--batch_size`` pairs a call.

    Returns the candidates' scores (``-inf`` at padding), those of the (item, positive) pairs
    ``(flat_item, flat_doc)``, and those of each item's own positive.
    """
    from sentence_transformers import CrossEncoder

    batch_size, block_rows = run.opts.batch_size, run.block_rows
    with run.stats.stage("rerank") as rec:
        opts = run.opts
        model = CrossEncoder(opts.cross_encoder, device=str(run.info.device), trust_remote_code=opts.trust_remote_code,
                             **({"max_length": opts.cross_encoder_max_length} if opts.cross_encoder_max_length else {}))
        texts = fetch_records(docs, np.concatenate([cand_ids[cand_ids != PAD_ID], flat_doc, pos_rep]))
        doc = {k: beir_join(title, text) for k, (_, title, text) in texts.items()}
        query_text: dict[int, str] = {}
        for i, q in enumerate(emb.item_query.tolist()):
            query_text.setdefault(q, items.queries[i])
        groups = emb.query_keys // block_rows  # one predict call per query block
        rows, cols = np.nonzero(cand_ids != PAD_ID)
        pairs = [(query_text[r], doc[int(cand_ids[r, c])]) for r, c in zip(rows.tolist(), cols.tolist())]
        rec["rows"] = len(pairs) + len(flat_doc) + len(pos_rep)
        with run.progress(rec["rows"], "rerank", unit="pairs") as bar:
            scores = np.full(cand_ids.shape, -np.inf)
            scores[rows, cols] = cross_encoder_scores(model, pairs, groups[rows], batch_size)
            bar.update(len(pairs))
            flat_scores = cross_encoder_scores(
                model, [(items.queries[i], doc[int(d)]) for i, d in zip(flat_item.tolist(), flat_doc.tolist())],
                groups[emb.item_query[flat_item]], batch_size)
            own = cross_encoder_scores(model, [(q, doc[int(d)]) for q, d in zip(items.queries, pos_rep.tolist())],
                                       groups[emb.item_query], batch_size)
            bar.update(len(flat_doc) + len(pos_rep))
    return scores, flat_scores, own


def fetch_records(docs: Documents, keys: np.ndarray) -> dict[int, tuple[str, str, str]]:
    """``key -> (docid, title, text)`` for documents held by any rank (collective)."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    texts = distributed.fetch_strings(keys, docs.owners.of(keys), docs.records)
    return {int(k): tuple(json.loads(t)) for k, t in zip(keys.tolist(), texts)}
