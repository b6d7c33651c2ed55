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
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, cosine, flag, non_empty, one_of, required
from .core.components import connected_components
from .core.keys import Owners, global_first
from .core.log import logger
from .core.options import IndexOptions, ModelOptions, RunOptions
from .core.paths import INPUT_SPEC, spec_paths
from .core.run import Output, Run, run_main
from .core.stats import fmt_rows
from .core.write import write_json
from .text.dedup import Texts, components, decontaminate, edges, identity, read_eval
from .text.evalsets import EvalSet, eval_sets

RESULT_NAME = "deduplicated.jsonl"
REPORT_NAME = "report.json"
DUPLICATES_NAME = "duplicates.jsonl"
LEAKAGE_NAME = "leakage.json"
LEAKS_NAME = "leaks.jsonl"
KEEP_RULES = ("first", "longest", "central")
ON = ("text", "query", "document", "pair")
REPORT_THRESHOLDS = tuple(round(0.80 + 0.01 * i, 2) for i in range(20))


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


def run_dedup(info: distributed.DistInfo, opts: DedupOptions, run: Run) -> dict | None:
    stats = run.stats
    shard = run.read(opts.keys())
    evals = [(e.name, read_eval(run, e, shard.rejects)) for e in opts.eval_sets()]
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
    a, b, s, nearest = edges(run, nodes, low)
    run.report_scores(f"dist_data.dedup: threshold={opts.threshold}", {"nearest_other": nearest},
                      [(f"each text's nearest other text (threshold {opts.threshold})", ["nearest_other"], "cosine")],
                      lines={"threshold": opts.threshold})
    if opts.report_only:
        return _report(run, shard, nodes, owners, a, b, s)

    leaked, leak_rows, leakage = decontaminate(run, embed.embedders, nodes, owners, evals)
    removed_leaks = leaked if opts.mode == "remove" else np.zeros(len(nodes.ids), dtype=bool)
    labels, rounds = connected_components(nodes.ids, a, b, owners)
    stats.add("rounds", rounds if info.is_main else 0)
    kept_node, records = components(run, nodes, owners, labels, a, b, removed_leaks, shard, rep, first)

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


# ---------------------------------------------------------------- components and the row kept


# ---------------------------------------------------------------- evaluation sets


# ---------------------------------------------------------------- --report_only

def _report(run: Run, shard, nodes: Texts, owners: Owners, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> dict | None:
    """For each candidate threshold: the rows it would remove (exact duplicates, plus every text of a
    component but one). Collective; rank 0 writes report.json."""
    stats = run.stats
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
    if run.info.is_main:
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
