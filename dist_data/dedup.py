"""Semantic deduplication and train/test decontamination over all ranks, exact where others sample.

    torchrun --nproc-per-node=8 -m dist_data.dedup --dataset=corpus.jsonl --text_key=text --threshold=0.95 \\
        --output_dir=DIR
    python -m dist_data.dedup --dataset=pairs.jsonl --on=pair --keep=central --against=mteb_sts.jsonl,beir/ \\
        --output_dir=DIR
    python -m dist_data.dedup --dataset=corpus.jsonl --report_only --output_dir=DIR   # choose --threshold

1. Exact duplicates first: rows whose normalised text (NFKC, case folded, whitespace collapsed) is
   an earlier row's, found by hash with no embedding.
2. Each distinct text is embedded once and searched against all others (``--index``: exact by
   default; ``sharded`` keeps 1/world of the vectors per rank, nothing holds an N x N matrix). Every
   pair scoring >= ``--threshold`` is an edge: a text whose ``--max_neighbors`` slots are all above
   the threshold is searched again, four times deeper, until its list ends below it, so no edge is
   missed by the depth.
3. Connected components of the edges over all ranks (:mod:`dist_data.core.components`: no rank
   holds all edges), one row kept per component by ``--keep``: ``first`` (the earliest row),
   ``longest`` (the longest text, ties to the earliest) or ``central`` (the highest mean cosine with
   the other members, exact: ``v_i . (sum - v_i) / (m - 1)``).
4. ``--against``: every training text within ``--threshold`` of a text of an evaluation set (or
   equal to one after normalisation) is removed, or only listed with ``--mode=flag``. An evaluation
   set is a file, folder or glob of rows, a collection manifest, a BeIR folder (its queries and its
   corpus, two sets) or an MTEB data folder (each evaluation split a set, every text of a row):
   :mod:`dist_data.text.evalsets`.

Outputs in ``--output_dir``: ``deduplicated.jsonl`` (the kept rows as read, in input order),
``duplicates.jsonl`` (per component: ``component``, ``kept`` row, ``removed`` rows with their
cosine to the kept one and whether they were exact copies), ``leakage.json`` (per evaluation set:
its items with a near-twin in the training data, the worst examples, the threshold), ``leaks.jsonl``
(``--mode=flag``), ``scores.png`` (each text's nearest other text, the threshold drawn),
``stats.json``, ``rejects.jsonl``, ``args.json``, ``README.md``. ``--report_only`` writes
``report.json`` instead: for each threshold 0.80 ... 0.99, the rows it would remove.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed, index
from .core.cli import at_least, cosine, flag, non_empty, one_of, required
from .core.components import connected_components
from .core.keys import Owners, fetch_held, global_first
from .core.log import logger
from .core.options import IndexOptions, ModelOptions, RunOptions
from .core.paths import INPUT_SPEC, spec_paths
from .core.run import Output, Run, run_main
from .core.select import PAD_ID, seeded_uniform
from .core.stats import Stats, fmt_rows
from .text.evalsets import EvalSet, eval_sets
from .core.write import write_json

RESULT_NAME = "deduplicated.jsonl"
REPORT_NAME = "report.json"
DUPLICATES_NAME = "duplicates.jsonl"
LEAKAGE_NAME = "leakage.json"
LEAKS_NAME = "leaks.jsonl"
KEEP_RULES = ("first", "longest", "central")
ON = ("text", "query", "document", "pair")
REPORT_THRESHOLDS = tuple(round(0.80 + 0.01 * i, 2) for i in range(20))
WORST_SHOWN = 10
SIZE_BUCKETS = ((2, 2), (3, 5), (6, 10), (11, 100), (101, None))


@dataclass(frozen=True, kw_only=True)
class DedupOptions(RunOptions, ModelOptions, IndexOptions):
    """Exact and semantic duplicates removed (one row kept per component), and evaluation sets' twins."""

    counts = ("texts", "exact_duplicates", "near_duplicates", "leaked", "edges", "components", "rounds",
              "searched_deeper")
    count_buckets = ("component_sizes",)
    summary = ("texts", "components", "leaked")

    dataset: str = required("rows: jsonl(.gz)/parquet/csv file, folder, glob, comma list or hub name", non_empty,
                            path=INPUT_SPEC)
    text_key: str = flag("text", "the text field (--on=text)", non_empty)
    on: str = flag("text", "what is compared: text (--text_key); query, document or pair (both, joined by a line "
                   "break) of a pair dataset (--query_key, --document_key)", one_of(*ON))
    query_key: str = flag("query", "--on=query/pair: the query field", non_empty)
    document_key: str = flag("document", "--on=document/pair: the document field", non_empty)
    threshold: float = flag(0.95, "two texts whose cosine is >= this are duplicates", cosine)
    keep: str = flag("first", "the row kept per component: first (earliest row), longest (longest text) or central "
                     "(highest mean cosine with the others)", one_of(*KEEP_RULES))
    max_neighbors: int = flag(32, "neighbours searched per text at first; a text with all of them above --threshold "
                              "is searched again deeper, so every pair above it is found (the same result for any "
                              "value)", at_least(1), result=False)
    against: str | None = flag(None, "evaluation sets, comma separated: files, folders, globs, collection manifests, "
                               "BeIR folders, MTEB data folders (embed_mteb's --data_path); training rows within "
                               "--threshold of one of their texts are removed (--mode=flag: listed)", non_empty,
                               path=INPUT_SPEC)
    against_key: str | None = flag(None, "the evaluation sets' text field (default: the training one)", non_empty)
    mode: str = flag("remove", "--against: remove the leaked training rows, or flag them (leaks.jsonl) and keep them",
                     one_of("remove", "flag"))
    report_only: bool = flag(False, "write report.json (rows each threshold 0.80 ... 0.99 would remove) and "
                             "scores.png, no dataset")

    def result_file(self) -> str:
        return REPORT_NAME if self.report_only else RESULT_NAME

    def keys(self) -> list[str]:
        return {"text": [self.text_key], "query": [self.query_key], "document": [self.document_key],
                "pair": [self.query_key, self.document_key]}[self.on]

    def eval_sets(self) -> list[EvalSet]:
        """The evaluation sets of ``--against`` (see :mod:`dist_data.text.evalsets`)."""
        items = [s.strip() for s in (self.against or "").split(",") if s.strip()]
        return eval_sets(items, self.against_key or self.keys()[-1])

    def side_outputs(self) -> list[str]:
        return [RESULT_NAME, REPORT_NAME, DUPLICATES_NAME, LEAKAGE_NAME, LEAKS_NAME]

    def problems(self) -> list[str]:
        if self.report_only and self.against:
            return ["--report_only looks at the data's own duplicates: run --against without it"]
        if self.mode == "flag" and not self.against:
            return ["--mode=flag lists the rows near an evaluation text: give the evaluation sets (--against)"]
        same = _same_files(self.dataset, self.against)
        if same:
            return [f"--against names the training data --dataset itself ({same}): every row would be its own "
                    f"evaluation twin and be removed; give the evaluation sets"]
        return []


def _same_files(dataset: str, against: str | None) -> str | None:
    """A file that ``--dataset`` and ``--against`` (or a manifest it names) both name, or None."""
    def files(spec: str) -> set[str]:
        out = set()
        for path in spec_paths(spec):
            if os.path.isdir(path):
                out |= {os.path.join(root, f) for root, _, names in os.walk(path) for f in names}
            else:
                out.add(path)
        return out

    both = files(dataset) & files(against) if against else set()
    return min(both) if both else None


@dataclass
class Texts:
    """This rank's distinct texts (nodes): id = the position of their first row."""

    ids: np.ndarray
    texts: list[str]
    first_rows: np.ndarray  # global line id of each node's first row
    emb: np.ndarray


def run_dedup(info: distributed.DistInfo, opts: DedupOptions, run: Run) -> dict | None:
    stats = run.stats
    shard = run.read(opts.keys())
    evals = [(e.name, _read_eval(run, e, shard.rejects)) for e in opts.eval_sets()]
    run.begin()

    texts = ["\n".join(v) for v in shard.values]
    rep = global_first(shard.positions, [identity(t) for t in texts])  # exact duplicates: the first row alike
    first = rep == shard.positions
    at = np.flatnonzero(first)
    distinct = [texts[i] for i in at]
    with run.embed(len(at)) as embed:
        emb = embed(shard.positions[at], distinct, "text")
    nodes = Texts(shard.positions[at], distinct, shard.gids[at], emb)
    owners = Owners.gather([(shard.lo, shard.hi)])
    stats.add("texts", len(at))
    stats.add("exact_duplicates", int((~first).sum()))

    low = min(REPORT_THRESHOLDS) if opts.report_only else opts.threshold
    a, b, s, nearest = _edges(run, nodes, low)
    run.report_scores(f"dist_data.dedup: threshold={opts.threshold}", {"nearest_other": nearest},
                      [(f"each text's nearest other text (threshold {opts.threshold})", ["nearest_other"], "cosine")],
                      lines={"threshold": opts.threshold})
    if opts.report_only:
        return _report(info, stats, run, shard, nodes, owners, a, b, s)

    leaked, leak_rows, leakage = _decontaminate(run, embed.embedders, nodes, owners, evals)
    removed_leaks = leaked if opts.mode == "remove" else np.zeros(len(nodes.ids), dtype=bool)
    labels, rounds = connected_components(nodes.ids, a, b, owners)
    stats.add("rounds", rounds if info.is_main else 0)
    kept_node, records = _components(info, stats, opts, nodes, owners, labels, a, b, removed_leaks, shard, rep, first)

    keep, dropped_leaks = np.zeros(len(first), dtype=bool), np.zeros(len(first), dtype=bool)
    keep[at], dropped_leaks[at] = kept_node, removed_leaks  # the nodes are this rank's first rows, in order
    # the distinct texts near an evaluation text (removed, or flagged with --mode=flag): their exact copies
    # are exact duplicates, counted once there, so that the reasons add up to the rows read
    stats.add("leaked", int(leaked.sum()))
    reasons = np.where(~first, "exact_duplicate", np.where(dropped_leaks, "near_an_evaluation_text", "near_duplicate"))
    kept = run.select(keep, reasons, known=("exact_duplicate", "near_an_evaluation_text", "near_duplicate"))
    stats.add("near_duplicates", int((first & ~keep & ~dropped_leaks).sum()))
    run.write_parts([shard.records[i] for i in kept], shard.rejects,
                    duplicates=(json.dumps(r, ensure_ascii=False) for r in records),
                    leaks=(json.dumps(r, ensure_ascii=False) for r in leak_rows))
    outputs = [Output(DUPLICATES_NAME, part="duplicates", key=_component_key)]
    if evals:
        outputs.append(Output(LEAKAGE_NAME, write=lambda path: write_json(path, leakage)))
    if evals and opts.mode == "flag":
        outputs.append(Output(LEAKS_NAME, part="leaks", key=lambda line: json.loads(line)["row"]))
    return run.merge(outputs=outputs)


def _component_key(line: str) -> int:
    return json.loads(line)["component"]


# ---------------------------------------------------------------- every pair above the threshold

def _edges(run: Run, nodes: Texts, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


# ---------------------------------------------------------------- components and the row kept

def _components(info: distributed.DistInfo, stats: Stats, opts: DedupOptions, nodes: Texts, owners: Owners,
                labels: np.ndarray, a: np.ndarray, b: np.ndarray, removed: np.ndarray, shard, rep: np.ndarray,
                first: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Which of this rank's texts are kept, and the records of the components whose home is this rank
    (the rank holding the component's label). Only texts with an edge, an exact copy or a leak travel
    (with their vectors): a text alone in its component is kept where it is. Collective."""
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
        kept = _kept(opts.keep, here, here_vectors, live) if len(live) else None
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


# ---------------------------------------------------------------- evaluation sets

def _read_eval(run: Run, e: EvalSet, rejects: list) -> "EvalItems":
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


def _decontaminate(run: Run, embedders: dict, nodes: Texts, owners: Owners,
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


# ---------------------------------------------------------------- --report_only

def _report(info: distributed.DistInfo, stats: Stats, run: Run, shard, nodes: Texts, owners: Owners, a: np.ndarray,
            b: np.ndarray, s: np.ndarray) -> dict | None:
    """For each candidate threshold: the rows it would remove (exact duplicates, plus every text of a
    component but one). Collective; rank 0 writes report.json."""
    exact = sum(distributed.all_gather_object(int(stats.counts["exact_duplicates"])))
    rows = sum(distributed.all_gather_object(len(shard.positions)))
    texts = sum(distributed.all_gather_object(len(nodes.ids)))
    table = []
    for t in REPORT_THRESHOLDS:
        keep = s >= t
        labels, _ = connected_components(nodes.ids, a[keep], b[keep], owners)
        roots = sum(distributed.all_gather_object(int((labels == nodes.ids).sum())))
        table.append({"threshold": t, "rows_removed": exact + texts - roots, "near_duplicates": texts - roots,
                      "fraction_removed": round((exact + texts - roots) / max(rows, 1), 6)})
    stats.add("kept", len(shard.positions))
    if info.is_main:
        for r in table:
            logger.info("threshold %.2f would remove %s rows (%.1f%%)", r["threshold"], fmt_rows(r["rows_removed"]),
                        100 * r["fraction_removed"])
    return run.publish(REPORT_NAME, lambda path: write_json(path, {"rows": rows, "exact_duplicates": exact,
                                                                         "thresholds": table}) or len(table),
                       shard.rejects)


COMMANDS = {None: (DedupOptions, run_dedup)}  # what dist_data.registry lists


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.dedup --flag=value ...`` (``--help`` lists the flags)."""
    run_main(COMMANDS, __doc__, "dist_data.dedup", argv)


if __name__ == "__main__":
    main()
