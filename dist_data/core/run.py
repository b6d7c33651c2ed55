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
import heapq
import json
import os
import socket
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import distributed
from .card import CARD, card_is_ours, write_card
from .cli import CommonOptions, Options, dispatch, tell_launcher
from .collection import CollectionOptions, run_collection
from .errors import BadRowError, InputError, RunConflictError
from .fault import fault
from .files import read_lines
from .log import logger
from .mirror import STATE, Mirror
from .models import check_models
from .options import ResultOptions, RunFolderOptions
from .paths import inputs_signature, output_dirs
from .remote import is_url, set_storage_options
from .report import report_scores
from .rundir import Results, RunDir, io_failure, locked_by_main, release_held_locks
from .stages import Stages
from .stats import Stats, summary_line
from .write import merge_files, write_json, write_json_list, write_lines

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
    set_storage_options(json.loads(opts.storage_options) if getattr(opts, "storage_options", None) else None)
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
    return body(info, run.opts, run), False  # run.opts: a URL's run folder is its local staging folder


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


def with_flags(fn: Callable[..., Any]) -> Body:
    """A one-process command's body from a function of its flags (``fn(**flags)``; the engine's own
    flags, such as ``--overwrite``, are not passed)."""
    engine = {f.name for f in dataclasses.fields(ResultOptions)}
    return lambda info, opts, run: fn(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
                                         if f.name not in engine})


# ---------------------------------------------------------------- the run folder

@dataclasses.dataclass(frozen=True)
class Output:
    """A file of the run folder besides the result, written on rank 0 at merge time: from every
    rank's ``part`` (:meth:`Run.write_parts`), concatenated in rank order, k-way merged by ``key``,
    or as one JSON list (``json_list``); or by ``write(path)``; or ``written`` already by a stage
    (recorded before the stage wrote it; named here so that stats.json lists it)."""

    name: str
    part: str | None = None
    key: Callable[[str], Any] | None = None
    json_list: bool = False
    write: Callable[[str], Any] | None = None
    written: bool = False

    def make(self, run: "Run") -> int | None:
        path = run.file(self.name)
        if self.written:
            return None
        if self.write is not None:
            rows = self.write(path)
            return rows if isinstance(rows, int) else None
        parts = [run.part(self.part, r) for r in range(run.info.world_size)]
        if self.json_list:
            write_json_list(path, read_lines(parts))
            return None
        if self.key is not None:
            return write_lines(path, heapq.merge(*(read_lines([p]) for p in parts), key=self.key))
        merge_files(parts, path, self.name.endswith(".gz"))
        return None


class Run(Stages, RunDir):
    """A run-folder command's run, from the lock to ``_SUCCESS``: opened on every rank by :meth:`open`
    (rank 0 takes the folder's lock and applies the rerun policy; ``done`` holds the stats of a
    complete run with the same flags, and then there is nothing to do; the models the flags name are
    checked), the stages (:class:`~dist_data.core.stages.Stages`: read, embed, search, select) into
    :attr:`stats`, :meth:`begin` once the inputs are read and checked, then :meth:`merge`
    (rank-local parts) or :meth:`publish` (one result written by rank 0), which writes the stats and
    ``_SUCCESS`` last and logs the run's summary line."""

    def __init__(self, info: distributed.DistInfo, opts: RunFolderOptions, result_name: str, command: str = "",
                 mirror: Mirror | None = None):
        super().__init__(opts.output_dir, opts.result_args(), result_name, opts.outputs(),
                         canonical=opts.canonical_args)
        self.info = info
        self.opts = opts
        self.command = command or type(opts).__name__
        self.done: dict[str, Any] | None = None
        self.started = time.perf_counter()
        self.stats = Stats.for_command(opts.counts, opts.count_buckets)
        self.mirror = mirror  # --output_dir at a URL: the store's copy (opts.output_dir is the staging folder)

    @classmethod
    def open(cls, info: distributed.DistInfo, opts: RunFolderOptions, result_name: str, command: str = "") -> "Run":
        """The run folder, locked and checked (rank 0). Every rank raises the same error when a model a
        flag names cannot be found (before the folder is created) or the folder is refused."""
        if opts.one_process and info.world_size > 1:
            raise ValueError(f"{command or type(opts).__name__} works on one table in one process: run it with "
                             f"python -m (torchrun is for the commands that embed or label)")
        mirror = Mirror(opts.output_dir) if is_url(opts.output_dir) else None
        if mirror is not None:
            opts = dataclasses.replace(opts, output_dir=mirror.local)
        run = cls(info, opts, result_name, command, mirror)
        with distributed.same_error_on_every_rank(InputError, RunConflictError, OSError):
            if info.is_main:  # the models first: a model that cannot be found creates nothing
                check_models(opts)
                run.inputs = inputs_signature(opts, exclude=[opts.output_dir])
                if mirror is not None:
                    mirror.lock.acquire()
                    fetched = mirror.pull(STATE)  # a complete run with the same flags: nothing else is fetched
                    if not run.complete_with_same_flags():
                        fetched += mirror.pull()
                    logger.info("%s%s", mirror.describe(), f"; {fetched} file(s) of an earlier run fetched" * bool(fetched))
                run.prepare(opts.overwrite)
        complete = run.is_complete() and not run.replace
        if mirror is not None:  # ranks on other hosts have their own staging folder: rank 0 decides
            complete = distributed.broadcast_object(complete)
        if complete:
            if info.is_main:
                logger.info("%s is already complete (same flags); nothing to do", run.where())
                if mirror is not None and "_SUCCESS" not in mirror.there:
                    mirror.push()  # a publish cut short (its _SUCCESS still only here) is finished
                    mirror.lock.release()
                run.lock.release()
            done = None
            if info.is_main or mirror is None:
                with open(run.file("stats.json"), encoding="utf-8") as f:
                    done = json.load(f)
            run.done = distributed.broadcast_object(done) if mirror is not None else done
        return run

    def location(self, name: str) -> str:
        """Where a reader finds a file of the run once published: its URL, or its absolute path."""
        return self.where(name) if self.mirror is not None else os.path.abspath(self.file(name))

    def where(self, name: str = "") -> str:
        """The run folder (or a file of it) as the user named it: the URL of a run at one."""
        if self.mirror is not None:
            return f"{self.mirror.url}/{name}" if name else self.mirror.url
        return self.file(name) if name else self.path

    def begin(self) -> None:
        """After the inputs were read: rank 0 records the run and removes an earlier one it replaces;
        nothing of an earlier run is lost before this point. Parts are written only after it
        (:meth:`write_parts` refuses earlier); :meth:`publish` begins the run itself, so an earlier
        run is replaced only once the new result is ready."""
        if self.begun:
            return
        with distributed.same_error_on_every_rank(OSError, InputError):
            if self.info.is_main:
                self.start()
                if self.mirror is not None:
                    self.mirror.push()  # what the run replaces leaves the store too, _SUCCESS first
            elif self.mirror is not None:  # a rank on another host: its own staging folder
                os.makedirs(self.parts_dir, exist_ok=True)
                os.makedirs(self.cache_dir, exist_ok=True)
        self.begun = True

    def _require_begun(self, what: str) -> None:
        if not self.begun:
            raise RuntimeError(f"Run.{what} before Run.begin(): the run is not recorded, so an earlier run's "
                               f"files could be mixed with this one's")

    def write_parts(self, result_lines: Sequence[str], rejects: Sequence[dict[str, Any]],
                    **sidecars: Iterable[str]) -> None:
        """This rank's result, rejects and each sidecar part (``name=lines``), each atomically (the
        ``write`` stage)."""
        self._require_begun("write_parts")
        with self.stats.stage("write") as rec:
            rec["rows"] = self._write_parts(result_lines, rejects, sidecars)

    def _write_parts(self, result_lines: Sequence[str], rejects: Sequence[dict[str, Any]],
                     sidecars: dict[str, Iterable[str]]) -> int:
        rank = self.info.rank
        rows = write_lines(self.part("part", rank), result_lines)
        write_lines(self.part("rejects", rank), (json.dumps(r, ensure_ascii=False, default=str) for r in rejects))
        for name, lines in sidecars.items():
            write_lines(self.part(name, rank), lines)
        return rows

    def merge(self, compress: bool = False, outputs: Sequence[Output] = (), result: Output | None = None,
              sections: dict[str, Any] | None = None, complete: bool = True) -> dict[str, Any] | None:
        """After every rank wrote its parts, rank 0 writes the result (the ranks' ``part`` files in
        rank (= input) order, gzipped with ``compress``; or ``result``) and each of ``outputs``, then
        the rejects, ``stats.json`` (with the verb's own ``sections``, e.g. embed_images' per-split
        account) and ``_SUCCESS`` (last; not when the run is not ``complete``: embed_images --nostack
        leaves its blocks to ``stack``), releases the lock and logs the summary.

        Returns the run's merged stats on rank 0 (also written to stats.json), None elsewhere.
        """
        self._require_begun("merge")
        stats = self.stats
        rank, world_size = self.info.rank, self.info.world_size
        write_json(os.path.join(self.parts_dir, f"stats-{rank:05d}.json"), stats.to_dict())
        self.share_parts()
        distributed.barrier()
        merged = None
        if rank == 0:
            fault("merge")
            result = result or Output(self.result_name + (".gz" if compress else ""), part="part")
            with stats.stage("merge") as rec:
                self.record([result.name, "rejects.jsonl", "stats.json", "_SUCCESS", *(o.name for o in outputs)])
                # a result written here (publish) is its own stage; parts merged are the merge's
                with stats.stage("write") if result.write is not None else contextlib.nullcontext({}) as written:
                    rows = result.make(self)
                    written["rows"] = rows or 0
                    for output in outputs:
                        output.make(self)
                merge_files([self.part("rejects", r) for r in range(world_size)], self.file("rejects.jsonl"))
                per_rank = []
                for r in range(world_size):
                    with open(os.path.join(self.parts_dir, f"stats-{r:05d}.json"), encoding="utf-8") as f:
                        per_rank.append(json.load(f))
                rec["rows"] = rows if rows is not None else sum(p["counts"].get("kept", 0) for p in per_rank)
            per_rank[0] = stats.to_dict()
            merged = Stats.merge(per_rank)
            merged["world_size"] = world_size
            merged["outputs"] = {"result": result.name, "rejects": "rejects.jsonl",
                                 **{o.name.split(".")[0]: o.name for o in outputs}}
            merged.update(sections or {})
            self._write_card(merged)
            write_json(self.file("stats.json"), merged)
            if complete:
                with open(self.file("_SUCCESS"), "w", encoding="utf-8"):
                    pass
            if self.mirror is not None:
                self.mirror.push()  # the result and outputs, then stats, card, manifest, _SUCCESS last
                self.mirror.lock.release()
            self.lock.release()
            logger.info("%s", summary_line(self.command, merged, self.opts, time.perf_counter() - self.started,
                                           self.where(result.name) if complete else self.parts_dir))
        distributed.barrier()
        return merged

    def share_parts(self, prefix: str | None = None) -> None:
        """With the run folder in a store, every rank's part files reach rank 0's staging folder: each
        rank uploads its own (the first rank of each staging folder those that name no rank), then
        rank 0 fetches what it lacks of them: the ranked parts, or the files named ``prefix*`` (a
        stage's own, e.g. one split's blocks). Collective; nothing to do for a local or shared folder."""
        if self.mirror is None:
            return
        with distributed.same_error_on_every_rank(InputError):  # collective: every upload is done after it
            self.mirror.push_rank(self.parts_dir, self.info.rank)
        places = distributed.all_gather_object((socket.gethostname(), self.mirror.local))
        with distributed.same_error_on_every_rank(InputError):  # the first rank of each staging folder
            if places.index(places[self.info.rank]) == self.info.rank:
                self.mirror.push_unmarked(self.parts_dir)
        with distributed.same_error_on_every_rank(InputError):
            if self.info.is_main:
                self.mirror.fetch_parts(self.parts_dir, prefix)

    def _write_card(self, merged: dict[str, Any]) -> None:
        """``README.md``, the folder's dataset card (:mod:`dist_data.core.card`), unless the user has a
        README.md of their own there."""
        if not card_is_ours(self.path, self.owned() or []):
            return
        self.record([CARD])
        write_card(self.path, self.command, self.opts, self.args, merged)
        merged["outputs"]["card"] = CARD

    def publish(self, name: str, write_result: Callable[[str], int], rejects: Sequence[dict[str, Any]],
                extra: Sequence[tuple[str, Callable[[str], Any]]] = ()) -> dict[str, Any] | None:
        """After every rank is done: rank 0 writes the result (``write_result(path)`` returns its rows)
        as ``name`` and each ``extra`` file (``(name, write(path))``) in the run folder, then the
        rejects, stats and ``_SUCCESS``. Returns the merged stats on rank 0 (``outputs`` names every
        file), None elsewhere."""
        self.result_name = name
        self.begin()
        self._write_parts([], rejects, {})
        return self.merge(result=Output(name, write=write_result),
                          outputs=[Output(n, write=write) for n, write in extra])

    def report_scores(self, title: str, columns: dict[str, Any], panels: Sequence[tuple[str, Sequence[str], str]],
                      extra: dict[str, Any] | None = None, lines: dict[str, float] | None = None) -> None:
        """Quantile tables of ``columns`` into the stats and ``scores.png``
        (:func:`dist_data.core.report.report_scores`). Collective."""
        report_scores(self.info, self, self.stats, title, columns, panels, extra, lines)
