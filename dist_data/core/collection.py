"""Collections: many datasets in one job, each its own corpus.

A collection is a manifest (``--collection=collection.yaml``, YAML or JSON) or a folder whose files
or sub-folders are the datasets (``--dataset=folder/ --per_dataset``)::

    datasets:
      - name: agnews                # default: the file's stem
        path: data/agnews.jsonl.gz  # relative to the manifest's folder
        max_rows: 1000              # any flag of the command: overrides the command line for this dataset
      - path: data/altlex.jsonl.gz

Each dataset runs as the command would run alone with its flags (the command line's, then the
dataset's overrides) into ``OUTPUT_DIR/{name}/``: its own corpus, index, sample and seed stream,
and its own run folder (lock, manifest, resume, rerun policy), so its output is byte-identical to
a standalone run. One launch loads the model once (the engine keeps the last model) and shards
each dataset across every rank; the index of one dataset is freed before the next.

Before any work, every dataset's flags and paths are checked and every earlier run with other
flags is found: a problem stops the job with one line naming the dataset (with
``--on_dataset_error=skip`` the dataset is listed as failed in ``collection.json`` instead). A
dataset that fails while it runs (a bad row under ``--on_bad_rows=error``) does the same.
``OUTPUT_DIR/collection.json`` and a printed table give each dataset's rows read, kept, dropped by
reason, rejected and seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import distributed
from .cli import UsageError, flag, one_of, with_values
from .errors import BadRowError, InputError
from .log import logger
from .paths import INPUT
from .errors import RunConflictError
from .rundir import MANIFEST, RunDir, locked_by_main, read_manifest, write_manifest
from .stats import fmt_rows
from .write import write_json
from .manifests import COLLECTION_FILE, Dataset, read_collection

# flags a manifest entry may not set: where the dataset is and where it goes are the collection's to say
_NOT_PER_DATASET = {"collection", "per_dataset", "on_dataset_error", "output_dir", "dataset", "overwrite"}


@dataclass(frozen=True, kw_only=True)
class CollectionOptions:
    """Flags of the verbs that run a collection of datasets in one job (filter, mine, pairs, triplets)."""

    collection: str | None = flag(None, "a YAML/JSON manifest of datasets (name, path, per-dataset flags); each runs "
                                  "as alone into OUTPUT_DIR/{name}/", path=INPUT)
    per_dataset: bool = flag(False, "--dataset is a folder: each file or sub-folder is one dataset (named by its stem)")
    on_dataset_error: str = flag("error", "error: a dataset that fails stops the job, naming it; skip: listed as "
                                 "failed in collection.json, the others go on", one_of("error", "skip"), result=False)

    def collection_problems(self) -> list[str]:
        """The cross-flag checks of a collection (the engine calls them with the verb's own ``problems``)."""
        default = next((f.default for f in dataclasses.fields(self) if f.name == "dataset"), None)
        dataset = getattr(self, "dataset", None)
        given = dataset is not None and dataset != default  # filter's default is the shipped sample
        beir = getattr(self, "queries", None) or getattr(self, "qrels", None)
        if beir and self.is_collection:
            return ["BeIR mode (--queries/--corpus/--qrels) is one dataset a run: give a collection of pair files"]
        if beir:
            return []
        if not self.is_collection and dataset is None and getattr(self, "dataset_required", False):
            return ["--dataset is required (or --collection, a manifest of datasets)"]
        if self.collection and self.per_dataset:
            return ["give --collection (a manifest) or --per_dataset (a folder of datasets), not both"]
        if self.collection and given:
            return ["--collection names the datasets: drop --dataset (a dataset's path is its manifest entry)"]
        if self.per_dataset and not (dataset and os.path.isdir(dataset)):
            return [f"--per_dataset needs --dataset to be a folder of datasets, got {dataset!r}"]
        return []

    @property
    def is_collection(self) -> bool:
        return bool(self.collection or self.per_dataset)


def dataset_options(opts: Any, ds: Dataset) -> Any:
    """The options of one dataset: the command line's, its manifest overrides, its path and folder;
    checked as a command line is.

    Raises:
        UsageError: a flag the entry may not set, or a value or path that does not pass.
    """
    bad = sorted(set(ds.overrides) & _NOT_PER_DATASET)
    if bad:
        raise UsageError(f"{', '.join(bad)} cannot be set per dataset")
    base = dataclasses.replace(opts, collection=None, per_dataset=False, dataset=ds.path,
                               output_dir=os.path.join(opts.output_dir, ds.name))
    return with_values(base, ds.overrides)


@dataclass
class Outcome:
    name: str
    path: str
    status: str  # done, already complete, failed
    seconds: float = 0.0
    stats: dict[str, Any] | None = None
    reason: str | None = None


def run_collection(info: distributed.DistInfo, opts: Any,
                   body: Callable[[Any], tuple[dict[str, Any] | None, bool]]) -> None:
    """Every dataset of the collection through ``body(dataset_options)`` (which opens its run and runs
    the verb; it returns the run's stats on rank 0 and whether the run was complete already), then
    ``collection.json`` and the table."""
    if os.path.exists(os.path.join(opts.output_dir, "args.json")):
        raise RunConflictError(f"{opts.output_dir} holds a single run (args.json): give the collection a folder of "
                               f"its own (each dataset gets OUTPUT_DIR/{{name}}/)")
    with locked_by_main(info.is_main, [opts.output_dir]):  # one collection job a folder (and a lock a dataset)
        _run_datasets(info, opts, body)


def _claim_summary(folder: str) -> None:
    """List ``collection.json`` in the folder's manifest before any work, or refuse a file of the user's
    there (one no manifest lists; a summary an earlier version wrote, without a manifest, is ours)."""
    path = os.path.join(folder, COLLECTION_FILE)
    manifest = read_manifest(folder) or {}
    if COLLECTION_FILE in (manifest.get("paths") or ()):
        return
    if os.path.lexists(path) and not _is_a_summary(path):
        raise RunConflictError(f"{folder} holds {COLLECTION_FILE}, which no dist_data manifest lists: it is not a "
                               f"collection of ours, so it is left alone; move it or give another --output_dir")
    manifest["paths"] = sorted(set(manifest.get("paths") or ()) | {COLLECTION_FILE, MANIFEST})
    write_manifest(folder, manifest)


def _is_a_summary(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) == {"datasets", "done", "failed"}


def _run_datasets(info: distributed.DistInfo, opts: Any,
                  body: Callable[[Any], tuple[dict[str, Any] | None, bool]]) -> None:
    skip = opts.on_dataset_error == "skip"
    outcomes: list[Outcome] = []
    planned: list[tuple[Dataset, Any]] = []
    conflicts: dict[str, list[str]] = {}
    for ds in read_collection(opts):  # every check before any work
        try:
            sub = dataset_options(opts, ds)
        except (UsageError, InputError) as e:
            if not skip:
                raise InputError(f"{ds.source}: {e}") from None
            outcomes.append(Outcome(ds.name, ds.path, "failed", reason=str(e)))
            continue
        diff = _earlier_run_diff(sub)
        if diff:
            conflicts.setdefault(", ".join(diff), []).append(ds.name)
        planned.append((ds, sub))
    if conflicts:  # as for one run: refused (naming the datasets and the flags) unless --overwrite
        which = "; ".join(f"{', '.join(names)} ({diff})" for diff, names in conflicts.items())
        raise RunConflictError(f"{opts.output_dir}: dataset(s) hold runs with other flags: {which}; rerun with the "
                               f"same flags, or pass --overwrite (removes only what dist_data wrote there)")
    error = None
    if info.is_main:  # every check passed: the summary's name is claimed before any work
        try:
            _claim_summary(opts.output_dir)
        except RunConflictError as e:
            error = e
    distributed.raise_if_any_failed(error)
    if info.is_main:
        logger.info("collection: %d dataset(s) to run%s -> %s", len(planned),
                    f", {len(outcomes)} failed their checks" if outcomes else "", opts.output_dir)
    for ds, sub in planned:
        start = time.perf_counter()
        try:
            merged, complete = body(sub)
        except (ValueError, InputError, BadRowError, RunConflictError) as e:  # raised on every rank alike
            if not skip:
                raise InputError(f"{ds.source}: {e}") from None
            outcomes.append(Outcome(ds.name, ds.path, "failed", time.perf_counter() - start, reason=str(e)))
            if info.is_main:
                logger.warning("%s failed (--on_dataset_error=skip: the others go on): %s", ds.name, e)
            continue
        outcomes.append(Outcome(ds.name, ds.path, "already complete" if complete else "done",
                                time.perf_counter() - start, merged))
    if info.is_main:
        order = {ds.name: i for i, ds in enumerate(read_collection(opts))}
        outcomes.sort(key=lambda o: order[o.name])
        write_json(os.path.join(opts.output_dir, COLLECTION_FILE), _summary(opts, outcomes))
        logger.info("collection:\n%s", table(outcomes))


def _earlier_run_diff(sub: Any) -> list[str]:
    """The flags by which a dataset's earlier run differs, when they stop it (the run folder's own rule:
    none with --overwrite, nor for an unfinished run that cached nothing)."""
    run = RunDir(sub.output_dir, sub.result_args(), sub.result_file(), canonical=sub.canonical_args)
    diff = run.other_flags()
    return diff if run.blocks(diff, sub.overwrite) else []


def _summary(opts: Any, outcomes: list[Outcome]) -> dict[str, Any]:
    rows = []
    for o in outcomes:
        counts = (o.stats or {}).get("counts", {})
        rows.append({"name": o.name, "path": o.path, "output": os.path.join(opts.output_dir, o.name),
                     "status": o.status, "seconds": round(o.seconds, 3), "rows": counts.get("input_rows"),
                     "read": counts.get("read"),
                     "kept": counts.get("kept"), "dropped": counts.get("dropped"), "rejected": counts.get("rejected"),
                     **({"reason": o.reason} if o.reason else {})})
    return {"datasets": rows, "done": sum(o.status != "failed" for o in outcomes),
            "failed": [o.name for o in outcomes if o.status == "failed"]}


def _total(bucket: Any) -> int:
    return sum(bucket.values()) if isinstance(bucket, dict) else int(bucket or 0)


def table(outcomes: list[Outcome]) -> str:
    """One line per dataset: input rows, rows read (sampled), kept, dropped (by reason), rejected, seconds,
    status."""
    head = ("dataset", "rows", "read", "kept", "dropped", "rejected", "seconds", "status")
    lines = []
    for o in outcomes:
        c = (o.stats or {}).get("counts", {})
        dropped = c.get("dropped", {})
        reasons = ", ".join(f"{why} {fmt_rows(n)}" for why, n in dropped.items() if n) if isinstance(dropped, dict) \
            else ""
        lines.append((o.name, fmt_rows(c.get("input_rows", c.get("read", 0))), fmt_rows(c.get("read", 0)),
                      fmt_rows(c.get("kept", 0)),
                      f"{fmt_rows(_total(dropped))}" + (f" ({reasons})" if reasons else ""),
                      fmt_rows(_total(c.get("rejected"))), f"{o.seconds:.1f}",
                      o.status + (f": {o.reason}" if o.reason else "")))
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *lines])
