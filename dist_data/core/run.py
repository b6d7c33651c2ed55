"""The run lifecycle every command goes through, in one fixed order:

1. flags parsed and checked, paths included (:mod:`dist_data.core.cli`, :mod:`dist_data.core.paths`);
2. :func:`execute`: the process group (or one process), the lock of every output folder, the rerun
   policy of the results a one-process command names (:class:`~dist_data.core.rundir.Results`);
3. the body: for a run-folder command, :class:`Run` (rank 0 locks the folder and checks the rerun;
   the inputs are read and checked; :meth:`Run.begin` records the run and only then removes an
   earlier one it replaces; parts, :meth:`Run.merge` or :meth:`Run.publish`: the result, rejects,
   stats and ``_SUCCESS`` last);
4. every exit path: the locks released, a user error said in one line (exit 2), Ctrl-C 130, SIGTERM 143.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from . import distributed
from .card import CARD, card_is_ours, write_card
from .cli import CommonOptions, Options, tell_launcher
from .collection import CollectionOptions, run_collection
from .errors import BadRowError, InputError
from .log import logger
from .options import ResultOptions, RunFolderOptions
from .paths import inputs_signature, output_dirs
from .rundir import Results, RunConflictError, RunDir, fault, io_failure, locked_by_main, release_held_locks
from .stats import Stats
from .write import merge_files, read_lines, write_json, write_json_list, write_lines

# contrastors' filter_rows.py reads every ``ids_to_keep_*.json`` of a folder (one per writer)
IDS_NAME = "ids_to_keep_0.json"

Body = Callable[[distributed.DistInfo, Any, "Run | None"], Any]  # (info, options, the run folder or None)


# ---------------------------------------------------------------- running a command

def execute(opts: Options, body: Body, command: str = "") -> None:
    """Run ``body(info, opts, run)``: the one way every command runs.

    A :class:`CommonOptions` command runs on every rank of a process group (torchrun's, or one plain
    process); any other runs in one process (under torchrun, rank 0 alone). Rank 0 holds the lock of
    every output folder (a run folder's own lock is :class:`Run`'s) and applies the rerun policy to
    a :class:`ResultOptions` command's results before the body and records them after it.

    User errors (bad input, a refused folder, a full disk) print one line on rank 0 and exit 2;
    Ctrl-C prints one line and exits 130; SIGTERM (torchrun stopping the ranks) exits 143 after
    the same clean-up: every lock this process holds is released on every exit path.
    """
    import signal

    from .log import quiet_progress, setup_logging

    def terminated(signum, frame):  # noqa: ARG001 - torchrun stops the other ranks with SIGTERM
        raise SystemExit(128 + signum)

    ranks = isinstance(opts, CommonOptions)
    if not ranks and _env_rank("RANK") != 0:
        return  # a one-process command under torchrun: rank 0 does it
    signal.signal(signal.SIGTERM, terminated)
    if not getattr(opts, "progress", True) or _env_rank("LOCAL_RANK") != 0:  # bars on local rank 0 only
        quiet_progress()
    group = distributed.process_group(opts.timeout_minutes) if ranks else contextlib.nullcontext(
        distributed.DistInfo(0, 1, 0, distributed.torch.device("cpu")))
    try:
        with group as info:
            setup_logging(info.rank, info.local_rank, info.world_size)
            try:
                with _locked_outputs(info, opts, command) as results:
                    _run_body(info, opts, body, results, command)
            except (ValueError, InputError, BadRowError, RunConflictError) as e:
                if info.is_main:
                    logger.error("%s", e)
                tell_launcher(str(e))
                sys.exit(2)
            except OSError as e:
                problem = io_failure(getattr(e, "filename", None) or ", ".join(output_dirs(opts)), e)
                if problem is None:
                    raise
                if info.is_main:  # the same error on every rank (raise_if_any_failed): said once
                    logger.error("%s", problem)
                tell_launcher(str(problem))
                sys.exit(2)
            finally:
                release_held_locks()  # every exit path: a failed run leaves its folder unlocked at once
    except KeyboardInterrupt:
        if _env_rank("RANK") == 0:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except InputError as e:  # raised while the process group starts (body's own are handled above)
        if _env_rank("RANK") == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if ranks and os.environ.get("TORCHELASTIC_RUN_ID"):
        # A torchrun rank whose work is done and whose process group is torn down leaves now:
        # native libraries' exit-time destructors (thread pools) have been seen to abort a rank
        # ("terminate called without an active exception") after a complete run, which torchrun
        # then reports as a failed job. Every output is already closed and renamed.
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _run_body(info: distributed.DistInfo, opts: Options, body: Body, results: Results | None,
              command: str = "") -> None:
    """``body(info, opts, run)`` unless there is nothing to do: a run-folder command gets its
    :class:`Run` (opened and checked here: complete with the same flags, the body does not run); a
    collection runs it once per dataset (:mod:`dist_data.core.collection`); a command of named
    results runs unless they are complete, and they are recorded around it."""
    if isinstance(opts, CollectionOptions) and opts.is_collection:
        run_collection(info, opts, lambda sub: _in_run_folder(info, sub, body, command))
        return
    if isinstance(opts, RunFolderOptions):
        _in_run_folder(info, opts, body, command)
        return
    if results is not None and results.check(opts.overwrite):
        return
    if results is not None:
        results.record(complete=False)
    try:
        fault("body")
        body(info, opts, None)
    except BaseException:
        if results is not None:
            results.withdraw()  # a failed run leaves every earlier result's record as it was
        raise
    if results is not None:
        results.record(complete=True)


def _in_run_folder(info: distributed.DistInfo, opts: RunFolderOptions, body: Body,
                   command: str = "") -> tuple[Any, bool]:
    """The body in its run folder: (the run's stats on rank 0, whether it was complete already)."""
    run = Run.open(info, opts, opts.result_file(), command)
    if run.done is not None:
        return run.done, True
    return body(info, opts, run), False


def _env_rank(name: str) -> int:
    return int(os.environ.get(name, "0") or 0)


@contextlib.contextmanager
def _locked_outputs(info: distributed.DistInfo, opts: Options, command: str) -> Iterator[Results | None]:
    """Rank 0 holds the lock of every output folder of a command that has no run folder of its own
    (a :class:`RunFolderOptions` command's folder is locked by :class:`Run`); yields the
    :class:`Results` of a :class:`ResultOptions` command (None for any other)."""
    results = Results(command or type(opts).__name__, opts.results(), opts.result_args(),
                      opts.inputs_signature()) if isinstance(opts, ResultOptions) else None
    folders = [] if isinstance(opts, RunFolderOptions) else output_dirs(opts) + (results.folders() if results else [])
    with locked_by_main(info.is_main, folders):
        yield results


def run_main(commands: dict[str | None, tuple[type[Options], Body]], doc: str | None, prog: str,
             argv: Sequence[str] | None = None) -> None:
    """``python -m prog [COMMAND] --flags``: parse the flags of the command (``None``: the verb's own,
    when it has them) and :func:`execute` its body."""
    dispatch(commands, doc, prog, argv, execute)


def dispatch(commands: dict[str | None, tuple[type[Options], Body]], doc: str | None, prog: str,
             argv: Sequence[str] | None, act: Callable[[Options, Body, str], Any]) -> None:
    """Pick the command ``argv`` names, parse its flags (one line and exit 2 on a problem) and call
    ``act(options, body, command name)``: :func:`execute` (:func:`run_main`), or nothing (the launch
    scripts' pre-flight check, ``python -m dist_data.registry check``)."""
    from .cli import main, main_with_commands

    argv = list(sys.argv[1:] if argv is None else argv)

    def runner(body: Body, command: str) -> Callable[[Options], Any]:
        return lambda opts: act(opts, body, command)

    named = {name: (cls, runner(body, f"{prog} {name}")) for name, (cls, body) in commands.items() if name}
    if argv and argv[0] in named or None not in commands:
        main_with_commands(named, doc, prog, argv)
        return
    cls, body = commands[None]
    main(cls, runner(body, prog), doc, prog, argv)


def with_flags(fn: Callable[..., Any]) -> Body:
    """A one-process command's body from a function of its flags (``fn(**flags)``; the engine's own
    flags, such as ``--overwrite``, are not passed)."""
    engine = {f.name for f in dataclasses.fields(ResultOptions)}
    return lambda info, opts, run: fn(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
                                         if f.name not in engine})


# ---------------------------------------------------------------- the run folder

def table_stats(info: distributed.DistInfo, command: str, *buckets: str) -> Stats:
    """The stats of a one-process table command: ``input_rows``, ``read``, ``kept``, ``dropped``,
    ``rejected`` and ``buckets``."""
    if info.world_size > 1:
        raise ValueError(f"{command} works on one table in one process: run it with python -m (torchrun is for "
                         f"the commands that embed or label)")
    return Stats.with_keys("input_rows", "read", "kept", buckets=("dropped", "rejected", *buckets))



class Run(RunDir):
    """A run-folder command's run, from the lock to ``_SUCCESS``: opened on every rank by :meth:`open`
    (rank 0 takes the folder's lock and applies the rerun policy; ``done`` holds the stats of a
    complete run with the same flags, and then there is nothing to do), :meth:`begin` once the
    inputs are read and checked, then :meth:`merge` (rank-local parts) or :meth:`publish` (one
    result written by rank 0)."""

    def __init__(self, info: distributed.DistInfo, opts: RunFolderOptions, result_name: str, command: str = ""):
        super().__init__(opts.output_dir, opts.result_args(), result_name, opts.outputs(),
                         canonical=opts.canonical_args)
        self.info = info
        self.opts = opts
        self.command = command or type(opts).__name__
        self.done: dict[str, Any] | None = None

    @classmethod
    def open(cls, info: distributed.DistInfo, opts: RunFolderOptions, result_name: str, command: str = "") -> "Run":
        """The run folder, locked and checked (rank 0). Every rank raises the same error when the
        folder is refused."""
        run = cls(info, opts, result_name, command)
        error = None
        if info.is_main:
            try:
                run.inputs = inputs_signature(opts, exclude=[opts.output_dir])
                run.prepare(opts.overwrite)
            except (RunConflictError, OSError) as e:
                error = e
        distributed.raise_if_any_failed(error)
        if run.is_complete() and not run.replace:
            if info.is_main:
                logger.info("%s is already complete (same flags); nothing to do", opts.output_dir)
                run.lock.release()
            with open(run.file("stats.json"), encoding="utf-8") as f:
                run.done = json.load(f)
        return run

    def begin(self) -> None:
        """After the inputs were read (and the model found): rank 0 records the run and removes an
        earlier one it replaces; nothing of an earlier run is lost before this point. A command that
        writes nothing before its result need not call it: :meth:`publish` begins the run, so an
        earlier run is replaced only once the new result is ready."""
        if self.begun:
            return
        error = None
        if self.info.is_main:
            try:
                self.start()
            except OSError as e:
                error = e
        distributed.raise_if_any_failed(error)
        self.begun = True

    def write_parts(self, result_lines: Sequence[str], ids: Sequence[int] | None,
                    rejects: Sequence[dict[str, Any]]) -> None:
        """This rank's result, rejects and (when given) kept ids, each atomically."""
        rank = self.info.rank
        write_lines(self.part("part", rank), result_lines)
        write_lines(self.part("rejects", rank), (json.dumps(r, ensure_ascii=False, default=str) for r in rejects))
        if ids is not None:
            write_lines(self.part("ids", rank), (str(i) for i in ids))

    def merge(self, stats: Stats, gzip_output: bool, write_ids: bool,
              merge_result: Callable[[], str] | None = None) -> dict[str, Any] | None:
        """After every rank wrote its parts, rank 0 merges them in rank (= input) order, then writes
        the rejects, ``stats.json`` and ``_SUCCESS`` (last) and releases the lock.

        ``merge_result`` replaces the concatenation of the jsonl parts for results that are not jsonl
        (it returns the result's name in the run folder).

        Returns the run's merged stats on rank 0 (also written to stats.json), None elsewhere.
        """
        rank, world_size = self.info.rank, self.info.world_size
        write_json(os.path.join(self.parts_dir, f"stats-{rank:05d}.json"), stats.to_dict())
        self.mark_part_done(rank, world_size)
        distributed.barrier()
        merged = None
        if rank == 0:
            fault("merge")
            with stats.stage("merge") as rec:
                result_name = self.result_name + (".gz" if gzip_output and merge_result is None else "")
                self.record([result_name, "rejects.jsonl", "stats.json", "_SUCCESS"]
                            + ([IDS_NAME] if write_ids else []))
                if merge_result is not None:
                    result = merge_result()
                else:
                    result = result_name
                    merge_files([self.part("part", r) for r in range(world_size)], self.file(result), gzip_output)
                merge_files([self.part("rejects", r) for r in range(world_size)], self.file("rejects.jsonl"))
                if write_ids:
                    write_json_list(self.file(IDS_NAME), read_lines([self.part("ids", r) for r in range(world_size)]))
                per_rank = []
                for r in range(world_size):
                    with open(os.path.join(self.parts_dir, f"stats-{r:05d}.json"), encoding="utf-8") as f:
                        per_rank.append(json.load(f))
                rec["rows"] = sum(p["counts"].get("kept", 0) for p in per_rank)
            per_rank[0] = stats.to_dict()
            merged = Stats.merge(per_rank)
            merged["world_size"] = world_size
            merged["outputs"] = {"result": result, "rejects": "rejects.jsonl"}
            self._write_card(merged)
            write_json(self.file("stats.json"), merged)
            with open(self.file("_SUCCESS"), "w", encoding="utf-8"):
                pass
            self.lock.release()
        distributed.barrier()
        return merged

    def _write_card(self, merged: dict[str, Any]) -> None:
        """``README.md``, the folder's dataset card (:mod:`dist_data.core.card`), unless the user has a
        README.md of their own there."""
        if not card_is_ours(self.path, self.owned() or []):
            return
        self.record([CARD])
        write_card(self.path, self.command, self.opts, self.args, merged)
        merged["outputs"]["card"] = CARD

    def publish(self, stats: Stats, name: str, write_result: Callable[[str], int], rejects: Sequence[dict[str, Any]],
                extra: Sequence[tuple[str, Callable[[str], Any]]] = ()) -> dict[str, Any] | None:
        """After every rank is done: rank 0 writes the result (``write_result(path)`` returns its rows)
        as ``name`` and each ``extra`` file (``(name, write(path))``) in the run folder, then the
        rejects, stats and ``_SUCCESS``. Returns the merged stats on rank 0 (``outputs`` names every
        file), None elsewhere."""
        self.result_name = name

        def write() -> str:
            self.record([n for n, _ in extra])
            with stats.stage("write") as rec:
                rec["rows"] = write_result(self.file(name))
                for extra_name, write_extra in extra:
                    write_extra(self.file(extra_name))
            return name

        self.begin()
        self.write_parts([], None, rejects)
        merged = self.merge(stats, False, False, merge_result=write)
        if merged is not None:
            for extra_name, _ in extra:
                merged["outputs"][extra_name.split(".")[0]] = extra_name
        return merged
