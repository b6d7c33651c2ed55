"""The run lifecycle every verb goes through: the entry point (process group, one-line errors, the lock
released on every exit path), the run folder opened and begun (:mod:`dist_data.core.rundir`), and the
outputs published (rank-local parts merged in rank order = input order, ``stats.json``,
``rejects.jsonl``, ``_SUCCESS`` last)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator, Sequence

from . import distributed
from .cli import CommonOptions
from .errors import BadRowError, InputError
from .log import logger
from .options import RunFolderOptions, RunOptions
from .paths import output_dirs
from .rundir import RunConflictError, RunDir, io_failure, locked_folders, release_held_locks
from .stats import Stats
from .write import merge_files, read_lines, write_json, write_json_list, write_lines

# contrastors' filter_rows.py reads every ``ids_to_keep_*.json`` of a folder (one per writer)
IDS_NAME = "ids_to_keep_0.json"


def open_run(info: distributed.DistInfo, opts: "RunOptions", result_name: str) -> tuple[RunDir, dict[str, Any] | None]:
    """The run folder, locked and checked (rank 0); with the stats of a complete run with the same
    flags (then nothing to do). Every rank raises the same error when the folder is refused."""
    run = RunDir(opts.output_dir, opts.result_args(), result_name)
    error = None
    if info.is_main:
        try:
            run.prepare(opts.overwrite)
        except (RunConflictError, OSError) as e:
            error = e
    distributed.raise_if_any_failed(error)
    if not run.is_complete() or run.replace:
        return run, None
    if info.is_main:
        logger.info("%s is already complete (same flags); nothing to do", opts.output_dir)
        run.lock.release()
    with open(run.file("stats.json"), encoding="utf-8") as f:
        return run, json.load(f)


def begin_run(info: distributed.DistInfo, run: RunDir) -> None:
    """After the inputs were read (and the model found): rank 0 records the run and removes an
    earlier one it replaces; nothing of an earlier run is lost before this point. A command that
    writes nothing before its result need not call it: :func:`publish_outputs` begins the run, so
    an earlier run is replaced only once the new result is ready."""
    _begin(info.is_main, run)


def _begin(is_main: bool, run: RunDir) -> None:
    if run.begun:
        return
    error = None
    if is_main:
        try:
            run.begin()
        except OSError as e:
            error = e
    distributed.raise_if_any_failed(error)
    run.begun = True


def run_entry_point(opts: CommonOptions, body: Callable[[distributed.DistInfo], Any]) -> None:
    """Init the process group and logging, run ``body(info)``.

    User errors (bad input, a refused folder, a full disk) print one line on rank 0 and exit 2;
    Ctrl-C prints one line and exits 130; SIGTERM (torchrun stopping the ranks) exits 143 after
    the same clean-up (the folder lock is released).
    """
    import signal
    import sys

    from .log import quiet_progress, setup_logging

    def terminated(signum, frame):  # noqa: ARG001 - torchrun stops the other ranks with SIGTERM
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    if not opts.progress or int(os.environ.get("LOCAL_RANK", "0") or 0) != 0:  # bars on local rank 0 only
        quiet_progress()
    try:
        with distributed.process_group(opts.timeout_minutes) as info:
            setup_logging(info.rank, info.local_rank, info.world_size)
            try:
                with _locked_outputs(info, opts):
                    body(info)
            except (ValueError, InputError, BadRowError, RunConflictError) as e:
                if info.is_main:
                    logger.error("%s", e)
                sys.exit(2)
            except OSError as e:
                problem = io_failure(", ".join(output_dirs(opts)), e)
                if problem is None:
                    raise
                if info.is_main:  # the same error on every rank (raise_if_any_failed): said once
                    logger.error("%s", problem)
                sys.exit(2)
            finally:
                release_held_locks()  # every exit path: a failed run leaves its folder unlocked at once
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except InputError as e:  # raised while the process group starts (body's own are handled above)
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        # A torchrun rank whose work is done and whose process group is torn down leaves now:
        # native libraries' exit-time destructors (thread pools) have been seen to abort a rank
        # ("terminate called without an active exception") after a complete run, which torchrun
        # then reports as a failed job. Every output is already closed and renamed.
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@contextlib.contextmanager
def _locked_outputs(info: distributed.DistInfo, opts: CommonOptions) -> Iterator[None]:
    """Rank 0 holds the lock of every output folder of a command that has no run folder of its own
    (a :class:`RunFolderOptions` command's run folder is locked by :meth:`RunDir.prepare`)."""
    folders = [] if isinstance(opts, RunFolderOptions) else output_dirs(opts)
    with contextlib.ExitStack() as held:
        error = None
        if info.is_main and folders:
            try:
                held.enter_context(locked_folders(folders))
            except (RunConflictError, OSError) as e:
                error = e
        distributed.raise_if_any_failed(error)  # every rank stops when rank 0 could not lock
        yield


def run_commands(table: dict[str, tuple[type[CommonOptions], Callable[[distributed.DistInfo, Any], Any]]], doc: str | None,
                 prog: str, argv: Sequence[str] | None = None) -> None:
    """``prog COMMAND --flags`` where each command is ``(options class, body(info, opts))`` run by
    :func:`run_entry_point` (the verbs with subcommands: captions, laionet)."""
    from .cli import main_with_commands

    def entry(body):
        return lambda o: run_entry_point(o, lambda info: body(info, o))

    main_with_commands({name: (cls, entry(body)) for name, (cls, body) in table.items()}, doc, prog, argv)


# ---------------------------------------------------------------- publishing

def write_parts(run: RunDir, rank: int, result_lines: Sequence[str], ids: Sequence[int] | None,
                rejects: Sequence[dict[str, Any]]) -> None:
    """This rank's result, rejects and (when given) kept ids, each atomically."""
    write_lines(run.part("part", rank), result_lines)
    write_lines(run.part("rejects", rank), (json.dumps(r, ensure_ascii=False, default=str) for r in rejects))
    if ids is not None:
        write_lines(run.part("ids", rank), (str(i) for i in ids))


def merge_outputs(run: RunDir, rank: int, world_size: int, stats: Stats, gzip_output: bool,
                  write_ids: bool, merge_result: Callable[[], str] | None = None) -> dict[str, Any] | None:
    """After every rank wrote its parts, rank 0 merges them in rank (= input) order.

    ``merge_result`` replaces the concatenation of the jsonl parts for results that are not jsonl
    (it returns the result's name in the run folder).

    Returns the run's merged stats on rank 0 (also written to stats.json), None elsewhere.
    """
    stats_part = os.path.join(run.parts_dir, f"stats-{rank:05d}.json")
    write_json(stats_part, stats.to_dict())
    run.mark_part_done(rank, world_size)
    distributed.barrier()
    merged = None
    if rank == 0:
        with stats.stage("merge") as rec:
            result_name = run.result_name + (".gz" if gzip_output and merge_result is None else "")
            run.record([result_name, "rejects.jsonl", "stats.json", "_SUCCESS"] + ([IDS_NAME] if write_ids else []))
            if merge_result is not None:
                result = merge_result()
            else:
                result = result_name
                merge_files([run.part("part", r) for r in range(world_size)], run.file(result), gzip_output)
            merge_files([run.part("rejects", r) for r in range(world_size)], run.file("rejects.jsonl"))
            if write_ids:
                write_json_list(run.file(IDS_NAME), read_lines([run.part("ids", r) for r in range(world_size)]))
            per_rank = []
            for r in range(world_size):
                with open(os.path.join(run.parts_dir, f"stats-{r:05d}.json"), encoding="utf-8") as f:
                    per_rank.append(json.load(f))
            rec["rows"] = sum(p["counts"].get("kept", 0) for p in per_rank)
        per_rank[0] = stats.to_dict()
        merged = Stats.merge(per_rank)
        merged["world_size"] = world_size
        merged["outputs"] = {"result": result, "rejects": "rejects.jsonl"}
        write_json(run.file("stats.json"), merged)
        with open(run.file("_SUCCESS"), "w", encoding="utf-8"):
            pass
        run.lock.release()
    distributed.barrier()
    return merged


def publish_outputs(run: RunDir, rank: int, world_size: int, stats: Stats, name: str,
                    write_result: Callable[[str], int], rejects: Sequence[dict[str, Any]],
                    extra: Sequence[tuple[str, Callable[[str], Any]]] = ()) -> dict[str, Any] | None:
    """After every rank is done: rank 0 writes the result (``write_result(path)`` returns its rows) as
    ``name`` and each ``extra`` file (``(name, write(path))``) in the run folder, then the rejects,
    stats and ``_SUCCESS``. Returns the merged stats on rank 0 (``outputs`` names every file), None
    elsewhere."""
    run.result_name = name

    def write() -> str:
        run.record([n for n, _ in extra])
        with stats.stage("write") as rec:
            rec["rows"] = write_result(run.file(name))
            for extra_name, write_extra in extra:
                write_extra(run.file(extra_name))
        return name

    _begin(rank == 0, run)
    write_parts(run, rank, [], None, rejects)
    merged = merge_outputs(run, rank, world_size, stats, False, False, merge_result=write)
    if merged is not None:
        for extra_name, _ in extra:
            merged["outputs"][extra_name.split(".")[0]] = extra_name
    return merged
