"""Semantic deduplication's domain steps (:mod:`dist_data.dedup` is the verb): every edge between
texts at or above the threshold (the run's exact deepening search), connected components over
ranks and the row each keeps (first, longest, central), and decontamination against evaluation
sets (exact twins by hash, near twins by vector). Every step is collective."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from ..core import distributed, index
from ..core.keys import Owners, fetch_held, global_first
from ..core.log import logger
from ..core.run import Run
from ..core.select import PAD_ID, seeded_uniform
from ..core.stats import Stats, fmt_rows
from .evalsets import EvalSet

WORST_SHOWN = 10
SIZE_BUCKETS = ((2, 2), (3, 5), (6, 10), (11, 100), (101, None))


@dataclass
class Texts:
    """This rank's distinct texts (nodes): id = the position of their first row."""

    ids: np.ndarray
    texts: list[str]
    first_rows: np.ndarray  # global line id of each node's first row
    emb: np.ndarray


def edges(run: Run, nodes: Texts, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, score, nearest)``: this rank's texts' edges to every other text scoring >= ``threshold``
    (:meth:`Run.threshold_pairs`), and each text's nearest other text. Collective."""
    opts, stats = run.opts, run.stats
    a, b, s, nearest = run.threshold_pairs(nodes.emb, nodes.ids, np.arange(len(nodes.ids)), threshold,
                                           opts.max_neighbors + 1)
    if opts.index_spec().approximate:
        stats.index["edge_recall"] = _edge_recall(run, nodes, threshold, a, b)
    stats.add("edges", int((a < b).sum()))  # every edge is found from both ends (each searches past the threshold)
    return a, b, s, nearest[np.isfinite(nearest)]


def _edge_recall(run: Run, nodes: Texts, threshold: float, a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """The fraction of the duplicate edges (pairs >= threshold) of a seeded sample of about
    ``--recall_queries`` texts that the approximate index found, against exact search. Collective."""
    info, opts = run.info, run.opts
    total = sum(distributed.all_gather_object(len(nodes.ids)))
    pick = np.flatnonzero(seeded_uniform(nodes.ids, opts.seed + 2) < opts.recall_queries / max(total, 1))
    ea, eb, _, _ = run.threshold_pairs(nodes.emb, nodes.ids, pick, threshold, opts.max_neighbors + 1,
                                    lambda todo, depth: index.search(nodes.emb[todo], nodes.emb, nodes.ids, depth,
                                                                     "sharded", info.device))
    exact = set(zip(ea.tolist(), eb.tolist()))
    found = len(exact & set(zip(a.tolist(), b.tolist())))
    hits, wanted = (sum(x) for x in zip(*distributed.all_gather_object((found, len(exact)))))
    recall = {"edge_recall": round(hits / wanted, 4) if wanted else 1.0, "edges_in_sample": wanted,
              "sample_texts": sum(distributed.all_gather_object(len(pick)))}
    if info.is_main:
        logger.info("%s index: %s of the sample's %d duplicate edges found (recall %.4f against exact search)",
                    opts.index, hits, wanted, recall["edge_recall"])
    return recall


def components(run: Run, nodes: Texts, owners: Owners, labels: np.ndarray, a: np.ndarray, b: np.ndarray,
               removed: np.ndarray, shard, rep: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Which of this rank's texts are kept, and the records of the components whose home is this rank
    (the rank holding the component's label). Only texts with an edge, an exact copy or a leak travel
    (with their vectors): a text alone in its component is kept where it is. Collective."""
    stats, keep_rule = run.stats, run.opts.keep
    def mark(keys: np.ndarray) -> np.ndarray:  # this rank's texts some rank names in ``keys``
        _, received = distributed.route(keys, owners.of(keys))
        out = np.zeros(len(nodes.ids), dtype=bool)
        got = np.concatenate(received) if received else keys[:0]
        out[np.searchsorted(nodes.ids, got)] = True
        return out

    copy_of, copy_rows = rep[~first], shard.gids[~first]  # exact copies go to their text's component
    member = mark(np.concatenate([a, b])) | mark(copy_of) | removed
    idx = np.flatnonzero(member)
    travel = np.empty(len(idx), dtype=[("label", np.int64), ("id", np.int64), ("row", np.int64),
                                       ("length", np.int64), ("removed", np.bool_)])
    travel["label"], travel["id"], travel["row"] = labels[idx], nodes.ids[idx], nodes.first_rows[idx]
    travel["length"] = [len(nodes.texts[i]) for i in idx]
    travel["removed"] = removed[idx]
    home = owners.of(labels[idx])
    order, received = distributed.route(travel, home)
    _, vectors = distributed.route(np.ascontiguousarray(nodes.emb[idx], dtype=np.float32), home)
    here = np.concatenate(received) if received else travel[:0]
    here_vectors = np.concatenate(vectors) if vectors else nodes.emb[:0]
    copy_label = distributed.fetch(copy_of, owners.of(copy_of), lambda keys: labels[np.searchsorted(nodes.ids, keys)])
    copies = np.empty(len(copy_of), dtype=[("label", np.int64), ("of", np.int64), ("row", np.int64)])
    copies["label"], copies["of"], copies["row"] = copy_label, copy_of, copy_rows
    _, got = distributed.route(copies, owners.of(copy_label))
    here_copies = np.concatenate(got) if got else copies[:0]

    by_label: dict[int, list[int]] = {}
    for j, lab in enumerate(here["label"].tolist()):
        by_label.setdefault(lab, []).append(j)
    copies_of: dict[int, list[tuple[int, int]]] = {}
    for lab, of, row in here_copies.tolist():
        copies_of.setdefault(lab, []).append((of, row))
    kept_here = np.zeros(len(here), dtype=bool)
    records = []
    for lab in sorted(by_label):
        members = np.asarray(sorted(by_label[lab], key=lambda j: here["row"][j]), dtype=np.int64)
        live = members[~here["removed"][members]]
        kept = _kept(keep_rule, here, here_vectors, live) if len(live) else None
        if kept is not None:
            kept_here[kept] = True
        if len(members) > 1:
            stats.add("components")
            stats.add("component_sizes", reason=_bucket(len(members)))
        kept_vector = here_vectors[kept].astype(np.float64) if kept is not None else None

        def score(j: int | None) -> float | None:
            return None if j is None or kept_vector is None else round(float(here_vectors[j] @ kept_vector), 6)

        removed_rows = [{"row": int(here["row"][j]), "score": score(j), "exact": False,
                         **({"leaked": True} if here["removed"][j] else {})} for j in members.tolist() if j != kept]
        at_id = dict(zip(here["id"][members].tolist(), members.tolist()))
        removed_rows += [{"row": int(row), "score": score(at_id.get(of)) if at_id.get(of) != kept else 1.0,
                          "exact": True} for of, row in copies_of.get(lab, [])]
        if removed_rows:
            records.append({"component": int(lab), "kept": int(here["row"][kept]) if kept is not None else None,
                            "removed": sorted(removed_rows, key=lambda r: r["row"])})
    kept_node = ~removed
    kept_node[idx] = distributed.unroute(order, received, kept_here)
    return kept_node, records


def _bucket(size: int) -> str:
    for lo, hi in SIZE_BUCKETS:
        if size >= lo and (hi is None or size <= hi):
            return f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi else f">{lo - 1}")
    return str(size)


def _kept(rule: str, here: np.ndarray, vectors: np.ndarray, live: np.ndarray) -> int:
    """The member kept: first (earliest row), longest (ties: earliest), central (highest mean cosine with
    the others, exact; ties: earliest). ``live`` is in row order."""
    if rule == "first" or len(live) == 1:
        return int(live[0])
    if rule == "longest":
        return int(live[np.argmax(here["length"][live])])  # argmax: the first of the longest
    v = vectors[live].astype(np.float64)
    mean = (v @ v.sum(axis=0) - np.einsum("ij,ij->i", v, v)) / (len(live) - 1)
    return int(live[np.argmax(np.round(mean, 12))])


def read_eval(run: Run, e: EvalSet, rejects: list) -> "EvalItems":
    """This rank's items of an evaluation set (a row may hold several); its bad rows are counted and
    set aside with the training data's (rejects.jsonl names their file and line)."""
    own = Stats()  # the set's own counts: only its rejects join the run's
    shard = run.read(e.texts, e.dataset, name=f"read {e.name}", stats=own, split=e.split)
    for reason, n in own.counts.get("rejected", {}).items():
        run.stats.add("rejected", n, reason=f"{e.name}: {reason}")
    rejects.extend(shard.rejects)
    texts = [t for v in shard.values for t in v]
    rows = np.repeat(shard.gids, [len(v) for v in shard.values]).astype(np.int64)
    before = distributed.count_before(len(texts))  # items are numbered in row order
    return EvalItems(before + np.arange(len(texts), dtype=np.int64), texts, rows)


@dataclass
class EvalItems:
    """This rank's texts of an evaluation set: item ids (global, in row order), texts, source rows."""

    ids: np.ndarray
    texts: list[str]
    rows: np.ndarray  # each item's global line id in the set's files


def decontaminate(run: Run, embedders: dict, nodes: Texts, owners: Owners,
                   evals: list) -> tuple[np.ndarray, list[dict], dict]:
    """``(leaked (this rank's texts), leak rows (--mode=flag), leakage.json)``: a training text leaks
    when an evaluation text equals it after normalisation (by hash, before any embedding) or scores
    >= the threshold with it. Collective."""
    info, opts = run.info, run.opts
    leaked = np.zeros(len(nodes.ids), dtype=bool)
    leak_rows: list[dict] = []
    report: dict = {"threshold": opts.threshold, "sets": {}}
    train_keys = [identity(t) for t in nodes.texts]
    for n, (name, items) in enumerate(evals):
        texts = items.texts
        eval_keys = [identity(t) for t in texts]
        # exact twins by hash, each hash on its home rank (memory O(rows / world)): the lowest key of a text is
        # an evaluation key when the evaluation keys come first, a training key when they come last
        high = np.int64(1 << 60)
        lowest = global_first(np.concatenate([high + nodes.ids, items.ids]), train_keys + eval_keys)[:len(nodes.ids)]
        exact = lowest < high  # the lowest key of the text is an evaluation item: that item is its twin
        exact_eval = global_first(np.concatenate([nodes.ids, high + items.ids]), train_keys + eval_keys)[
            len(nodes.ids):] < high
        base = (n + 1) * (1 << 40)  # eval ids apart from the training ids (and from each other's)
        with run.embedding(len(texts), embedders, f"embed {name}") as embed:
            emb = embed(items.ids, texts, f"eval{n}")
        eval_ids = base + items.ids
        t_scores, t_ids, _ = run.search(nodes.emb, emb, eval_ids, 1, name=f"search {name}", record=False, bar=False)
        e_scores, e_ids, _ = run.search(emb, nodes.emb, nodes.ids, 1, name=f"search {name} (theirs)", record=False,
                                        bar=False)
        near = (t_ids[:, 0] != PAD_ID) & (t_scores[:, 0] >= opts.threshold) if len(t_ids) else exact[:0]
        hit = exact | near
        leaked |= hit
        partner = np.where(exact, lowest, t_ids[:, 0] - base if len(t_ids) else lowest)[hit]  # the twin named
        eval_owners = Owners.gather([(int(items.ids[0]), int(items.ids[-1]) + 1)] if len(items.ids) else [])
        eval_texts, eval_rows = fetch_held(partner, eval_owners, items.ids, texts, items.rows)  # collective
        for i, text, row in zip(np.flatnonzero(hit).tolist(), eval_texts, eval_rows.tolist()):
            leak_rows.append({"row": int(nodes.first_rows[i]), "set": name, "eval_row": int(row),
                              "eval_text": text[:300], "score": 1.0 if exact[i] else round(float(t_scores[i, 0]), 6),
                              "exact": bool(exact[i])})
        twin = (e_ids[:, 0] != PAD_ID) & (e_scores[:, 0] >= opts.threshold) if len(e_ids) else np.zeros(0, bool)
        twin |= exact_eval
        best = e_scores[:, 0] if len(e_ids) else np.zeros(0)
        worst = np.argsort(-np.where(twin, best, -np.inf), kind="stable")[:WORST_SHOWN]
        worst = worst[twin[worst] & (e_ids[worst, 0] != PAD_ID)] if len(e_ids) else worst[:0]
        partner = e_ids[worst, 0] if len(e_ids) else np.zeros(0, dtype=np.int64)
        train_texts, _ = fetch_held(partner, owners, nodes.ids, nodes.texts, nodes.first_rows)  # collective
        examples = [{"eval_row": int(items.rows[i]), "eval_text": texts[i][:300], "train_text": t[:300],
                     "score": round(float(e_scores[i, 0]), 6)} for i, t in zip(worst.tolist(), train_texts)]
        examples = sorted(sum(distributed.all_gather_object(examples), []), key=lambda e: (-e["score"], e["eval_row"]))
        n_items = sum(distributed.all_gather_object(len(texts)))
        with_twin = sum(distributed.all_gather_object(int(twin.sum())))
        report["sets"][name] = {"items": n_items, "items_with_a_training_twin": with_twin,
                                "fraction": round(with_twin / max(n_items, 1), 6),
                                "training_texts_leaked": sum(distributed.all_gather_object(int(hit.sum()))),
                                "worst": examples[:WORST_SHOWN]}
        if info.is_main:
            logger.info("%s: %s of its %s items have a training twin at >= %.3f", name, fmt_rows(with_twin),
                        fmt_rows(n_items), opts.threshold)
    return leaked, sorted(leak_rows, key=lambda r: (r["row"], r["set"])), report


def identity(text: str) -> str:
    """What makes two texts exact duplicates: equal after NFKC, case folding and whitespace collapsing."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
