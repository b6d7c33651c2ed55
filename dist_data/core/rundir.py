"""The output folder of a run: who may write it, what it holds, and what a rerun may do to it.

One rerun policy for every entry point:

- the same flags resume an unfinished run, or say "already complete";
- flags that change the result are refused, naming them, unless ``--overwrite``;
- ``--overwrite`` removes only what a dist_data run wrote (its ``manifest.json``; a user's own
  files stay, and a folder whose run files no manifest lists is refused), and only once the new
  run's inputs and model have been checked;
- a run that failed or was killed before it cached any work (a bad flag, a missing input, a wrong
  key, a model not found, a kill during reading) leaves nothing in the way of the next command;
- two jobs never write one folder at once: a lock file names the holder (host, pid, start, job); a
  lock left by a dead process on this host, by an earlier attempt of the same job (a torchrun
  restart, a requeued SLURM job, on any host), or an empty one (the lock is created whole, so an
  empty lock was never held), is taken over with a notice.

The folder::

    .dist_data.lock    the running job (host, pid, start, command); removed when it ends
    manifest.json      every file and folder the run wrote (what --overwrite removes)
    args.json          the flags that determine the result
    cache/  parts/     resumable work and rank-local parts (removed with the run)
    <result>, stats.json, rejects.jsonl, _SUCCESS (last)
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import glob
import json
import os
import shutil
import socket
import sys
from typing import Any, Callable, Iterable, Iterator

from .errors import RunConflictError
from .card import CARD, card_is_ours, write_results_card
from .paths import path_signature
from .files import read_json
from .write import write_json
from .log import logger

LOCK_NAME = ".dist_data.lock"
MANIFEST = "manifest.json"
SCORES_PLOT = "scores.png"  # the histograms of a verb's scores (dist_data.core.report.report_scores)
# what the engine itself may write in every run folder (besides the result, and the card: see card_is_ours)
ENGINE_FILES = ("args.json", "stats.json", "_SUCCESS", "rejects.jsonl", "parts", "cache", SCORES_PLOT)


def flag_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``--name=new (was old)`` for every flag that differs, sorted by name."""
    names = sorted(set(old) | set(new))
    return [f"--{k}={new.get(k)!r} (was {old.get(k)!r})" for k in names if old.get(k) != new.get(k)]


def refuse_other_flags(path: str, what: str, diff: list[str]) -> RunConflictError:
    return RunConflictError(f"{path} holds {what} with other flags: {', '.join(diff)}; rerun with the same flags "
                            f"to resume, use another output folder, or pass --overwrite (removes only what dist_data "
                            f"wrote there)")


def remove_paths(root: str, names: Iterable[str]) -> list[str]:
    """Remove ``names`` (files or folders, relative to ``root``) where they exist; the removed ones."""
    removed = []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def remove_stale_temporaries(root: str, owned: Iterable[str]) -> int:
    """Temporary files of a killed write (``<name>.tmp-<pid>``, ``<name>.tmp``) of the ``owned`` names
    under ``root`` (inside an owned folder: any); how many. A user's own ``*.tmp`` files stay."""
    stale = []
    for name in owned:
        path = os.path.join(root, name)
        stale += glob.glob(glob.escape(path) + ".tmp-*") + glob.glob(glob.escape(path) + ".tmp")
        if os.path.isdir(path):
            stale += [p for pattern in ("*.tmp-*", "*.tmp")
                      for p in glob.glob(os.path.join(glob.escape(path), "**", pattern), recursive=True)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    return len(stale)


# ---------------------------------------------------------------- the lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: set["FolderLock"] = set()  # the locks this process holds


def job_id() -> str | None:
    """The job this process belongs to, the same over its restarts: SLURM's job id (a requeued job keeps
    it), or torchrun's run id (the same for every restart of one launch)."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}"
    return None


def release_held_locks() -> None:
    """Release every lock this process holds: the way out of every run, finished or failed."""
    for lock in list(_HELD):
        lock.release()


class FolderLock:
    """An exclusive lock on a folder, held by this process until :meth:`release` (or exit). The lock is
    a file created whole or not at all; :class:`dist_data.core.mirror.StoreLock` is the same lock in an
    object store (its primitives ``_create``, ``_holder``, ``_remove`` are the store's)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunConflictError` naming its holder.

        A lock whose holder is a dead process on this host is taken over (with a notice); a lock
        from another host cannot be checked from here, so the message says how to clear it.
        """
        job = job_id()
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              **({"job": job} if job else {})}
        for _ in range(2):
            if self._create(me):
                self.held = True
                _HELD.add(self)
                atexit.register(self.release)
                return
            holder = self._holder()
            if not holder:  # every lock is created whole (see _create): an empty one was never taken
                logger.warning("taking over the empty or unreadable lock %s (left by a run that could not write "
                               "it, e.g. on a full disk)", self.path)
                self._remove()
                continue
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:  # this process's own
                self._remove()
                continue
            if holder.get("job") and holder.get("job") == me.get("job"):  # a restarted or requeued job's own
                logger.warning("taking over the lock of an earlier attempt of this job in %s (%s, pid %s on %s)",
                               self.folder, holder["job"], holder.get("pid"), holder.get("host"))
                self._remove()
                continue
            if holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1))):
                logger.warning("taking over the lock of a dead run in %s (pid %s, started %s)",
                               self.folder, holder.get("pid"), holder.get("started"))
                self._remove()
                continue
            where = "this host" if holder.get("host") == me["host"] else f"host {holder.get('host')}"
            raise RunConflictError(
                f"{self.folder} is being written by another dist_data run (pid {holder.get('pid')} "
                f"on {where}, started {holder.get('started')}); wait for it to end, or use another --output_dir"
                + ("" if where == "this host" else f". If that run is dead, delete {self.path} and rerun"))
        raise RunConflictError(f"could not take the lock {self.path}")

    def _create(self, holder: dict[str, Any]) -> bool:
        """Create the lock with its contents in one step (written aside, then hard-linked into
        place): it appears whole or not at all, so a full disk never leaves an empty lock.
        False if a lock is there already."""
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(holder, f)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)

    def _holder(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _remove(self) -> None:
        os.remove(self.path)

    def release(self) -> None:
        _HELD.discard(self)
        if self.held:
            self.held = False
            try:
                holder = self._holder()
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    self._remove()
            except OSError:
                pass


@contextlib.contextmanager
def locked_folders(folders: Iterable[str]) -> Iterator[None]:
    """Hold the lock of each output folder while a one-process command writes it (created if need be,
    and removed again if it is still empty when the command fails)."""
    created, locks = [], []
    try:
        for folder in dict.fromkeys(os.path.abspath(f) for f in folders):
            if not os.path.isdir(folder):
                os.makedirs(folder)
                created.append(folder)
            locks.append(FolderLock(folder))
            locks[-1].acquire()
        yield
    finally:
        for lock in locks:
            lock.release()
        for folder in created:
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


@contextlib.contextmanager
def locked_by_main(is_main: bool, folders: Iterable[str]) -> Iterator[None]:
    """Rank 0 holds the lock of each folder (:func:`locked_folders`) while every rank runs the block;
    when rank 0 cannot lock, every rank raises its error."""
    from . import distributed

    with contextlib.ExitStack() as held:
        error = None
        if is_main and folders:
            try:
                held.enter_context(locked_folders(folders))
            except (RunConflictError, OSError) as e:
                error = e
        distributed.raise_if_any_failed(error)
        yield


# ---------------------------------------------------------------- the run folder

class RunDir:
    """The output folder of one run: args identity, part files, markers, caches, final outputs."""

    def __init__(self, path: str, args: dict[str, Any], result_name: str, outputs: Iterable[str] = (),
                 inputs: dict[str, list[int]] | None = None,
                 canonical: Callable[[dict[str, Any]], dict[str, Any]] = dict):
        self.path = path
        self.args = dict(sorted(args.items()))
        self.canonical = canonical  # the options' canonical_args: an earlier run's flags compared alike
        self.result_name = result_name
        # every name the run may write here (a file of the user's at one of them is refused) ...
        self.outputs = list(dict.fromkeys([result_name, result_name + ".gz", *ENGINE_FILES, *outputs]))
        self.inputs = inputs  # ... and what its inputs looked like (None: not compared)
        self.parts_dir = os.path.join(path, "parts")
        self.cache_dir = os.path.join(path, "cache")
        self.lock = FolderLock(path)
        self.replace = False  # set by prepare: the earlier run's files go at start()
        self.keep_cache = False  # set by prepare when only the inputs changed: the content-keyed cache stays
        self.begun = False  # set once start() ran on rank 0 and every rank knows

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def part(self, name: str, rank: int) -> str:
        return os.path.join(self.parts_dir, f"{name}-{rank:05d}.jsonl")


    def has_work(self) -> bool:
        """Whether an unfinished run cached anything worth resuming (embedding or token blocks, parts)."""
        for folder in (self.cache_dir, self.parts_dir):
            for _, _, files in os.walk(folder):
                if any(".tmp" not in f for f in files):
                    return True
        return False

    def prepare(self, overwrite: bool) -> None:
        """Rank 0, first thing: take the lock, clear a killed write's temporaries, apply the rerun policy.

        Raises:
            RunConflictError: the folder is locked, or holds a run with other flags (without --overwrite).
        """
        os.makedirs(self.path, exist_ok=True)
        self.lock.acquire()
        try:
            self._check_rerun(overwrite)
        except BaseException:
            self.lock.release()  # a refused run leaves the folder as it found it
            raise

    def _check_rerun(self, overwrite: bool) -> None:
        listed = self._manifest()
        stale = remove_stale_temporaries(self.path, listed or ())
        if stale:
            logger.info("removed %d temporary file(s) of an interrupted write in %s", stale, self.path)
        self._refuse_users_files(self.outputs, listed or (), overwrite)
        if listed is None:
            return
        diff = self.other_flags()
        if not diff:
            changed = self.changed_inputs()
            if changed:
                logger.warning("%s changed since the run in %s was made (size or modification time): it is made "
                               "again (the cache of embeddings, keyed by content, is kept)", ", ".join(changed),
                               self.path)
                self.replace, self.keep_cache = True, True
            return
        if self.blocks(diff, overwrite):
            raise refuse_other_flags(self.path, "a finished run" if self.is_complete() else "an unfinished run", diff)
        if not self.is_complete() and not self.has_work():
            logger.info("%s holds an unfinished run that cached nothing (%s); starting over", self.path,
                        ", ".join(diff))
        self.replace = True

    def _refuse_users_files(self, names: Iterable[str], owned: Iterable[str], overwrite: bool) -> None:
        """Refuse the run when a file or folder it may write (``names``) is there and no manifest of ours
        lists it (``owned``): it is the user's own, and is never replaced or removed."""
        owned = set(owned)
        theirs = [n for n in dict.fromkeys(names) if n not in owned and os.path.lexists(self.file(n))]
        if theirs:
            even = " (not even with --overwrite)" if overwrite else ""
            raise RunConflictError(
                f"{self.path} holds {', '.join(theirs)}, which this run would write and no dist_data manifest "
                f"({MANIFEST}) lists: they are not a run of ours, so nothing was removed{even}; move them or give "
                f"another --output_dir")

    def changed_inputs(self) -> list[str]:
        """The inputs whose signature differs from the one the run here recorded (none when either run
        has no signature)."""
        old = (read_manifest(self.path) or {}).get("inputs")
        if old is None or self.inputs is None:
            return []
        return [p for p in sorted(set(old) | set(self.inputs)) if old.get(p) != self.inputs.get(p)]

    def other_flags(self) -> list[str]:
        """The flags by which the run already here differs from this one (none: no run, or one stopped
        before it recorded its flags)."""
        old = read_json(self.file("args.json"))
        return [] if old is None else flag_diff(self.canonical(old), self.args)

    def blocks(self, diff: list[str], overwrite: bool) -> bool:
        """Whether an earlier run here with other flags (``diff``) stops this one: unless ``--overwrite``,
        or it is an unfinished run that cached nothing (started over)."""
        return bool(diff) and not overwrite and (self.is_complete() or self.has_work())

    def _manifest(self) -> list[str] | None:
        """The paths the manifest lists, or None (no manifest, or one that cannot be read)."""
        return (read_manifest(self.path) or {}).get("paths")

    def owned(self) -> list[str]:
        """What a dist_data run wrote here, as its manifest lists it (no manifest: nothing)."""
        return sorted(set(self._manifest() or ()))

    def start(self) -> None:
        """Rank 0, once the inputs were read and the model loaded: replace an earlier run if asked,
        record the flags and the manifest, create ``parts/`` and ``cache/``."""
        if self.replace:
            kept = [n for n in self.owned() if n == "cache" and self.keep_cache]
            removed = remove_paths(self.path, [n for n in self.owned() if n not in kept])
            logger.warning("removed the earlier run's files in %s: %s (nothing else touched)", self.path,
                           ", ".join(removed) or "none")
            if kept:
                write_manifest(self.path, {"paths": sorted({*kept, MANIFEST})})  # still ours
            self.replace = False
        self.record(["args.json", "parts", "cache"])
        os.makedirs(self.parts_dir, exist_ok=True)
        os.makedirs(self.cache_dir, exist_ok=True)
        write_json(self.file("args.json"), self.args)
        if self.inputs is not None:
            write_manifest(self.path, {**(read_manifest(self.path) or {}), "inputs": self.inputs})

    def record(self, names: Iterable[str]) -> None:
        """Add ``names`` to the manifest (before they are written: a killed write is still owned).

        Raises:
            RunConflictError: one of them is there and no manifest lists it (the user's own file; an
                output the command did not declare, which the start could not check).
        """
        names = list(names)
        manifest = read_manifest(self.path) or {}
        # the card has its own rule (card_is_ours: a README.md of the user's is kept and the card left out)
        self._refuse_users_files([n for n in names if n != CARD], manifest.get("paths") or (), False)
        manifest["paths"] = sorted(set(manifest.get("paths") or ()) | set(names) | {MANIFEST})
        write_manifest(self.path, manifest)

    def is_complete(self) -> bool:
        return os.path.exists(self.file("_SUCCESS"))

    def complete_with_same_flags(self) -> bool:
        """Whether the folder holds a complete run with these flags and inputs (nothing to do)."""
        return self.is_complete() and not self.other_flags() and not self.changed_inputs()


# ---------------------------------------------------------------- the manifest, and results in shared folders

def read_manifest(folder: str) -> dict[str, Any] | None:
    """A folder's ``manifest.json`` (what dist_data wrote there), or None (none, or unreadable)."""
    try:
        manifest = read_json(os.path.join(folder, MANIFEST))
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(folder: str, manifest: dict[str, Any]) -> None:
    write_json(os.path.join(folder, MANIFEST), {**manifest, "written_by": "dist_data"})


class Results:
    """The results a command writes into folders it shares with other runs (combine's sets, imagenet's
    annotations and ``.ffcv`` files, embed_images' stacked arrays): each result path is recorded in its
    folder's manifest with the command and the flags it was made with, before it is written and again
    once it is complete. The same rerun policy as a run folder follows from that record:

    - every result there, complete, made by this command with these flags from inputs that have not
      changed since (:meth:`ResultOptions.inputs_signature`): "already complete";
    - a result made with other flags: refused naming them, unless ``--overwrite`` (the new result
      then replaces it when it is written, so a run that fails keeps the old one);
    - a path that no manifest lists is the user's own: refused, even with ``--overwrite``.
    """

    def __init__(self, command: str, paths: Iterable[str], args: dict[str, Any],
                 inputs: dict[str, Any] | None = None):
        self.command = command
        self.paths = [os.path.abspath(p) for p in dict.fromkeys(paths)]
        self.args = dict(sorted(args.items()))
        self.inputs = inputs or {}

    def folders(self) -> list[str]:
        """The folders the results go in (what the command locks)."""
        return list(dict.fromkeys(os.path.dirname(p) for p in self.paths))

    def _entry(self, path: str) -> tuple[dict[str, Any] | None, bool]:
        """(the manifest's record of ``path``, whether a dist_data run wrote it at all)."""
        manifest = read_manifest(os.path.dirname(path)) or {}
        name = os.path.basename(path)
        entry = (manifest.get("results") or {}).get(name)
        return entry, entry is not None or name in (manifest.get("paths") or ())

    def check(self, overwrite: bool) -> bool:
        """True when there is nothing to do (every result complete, same command and flags).

        Raises:
            RunConflictError: a result made with other flags (without ``overwrite``), or a path
                that is not ours.
        """
        complete = True
        for path in self.paths:
            entry, ours = self._entry(path)
            if not os.path.lexists(path):
                complete = False
                continue
            if not ours:
                even = " (not even with --overwrite)" if overwrite else ""
                raise RunConflictError(f"{path} is there and no dist_data manifest ({MANIFEST}) lists it: it is not a "
                                       f"result of ours, so it is left alone{even}; move it or write elsewhere")
            diff = flag_diff((entry or {}).get("args", {}), self.args) if entry else []
            if entry and entry.get("command") != self.command:
                diff = ["the command"] + diff
            if diff and not overwrite:
                raise refuse_other_flags(path, "a result", diff)
            complete = (complete and not diff and bool(entry and entry.get("complete"))
                        and (entry or {}).get("inputs", {}) == self.inputs
                        and (entry or {}).get("made", path_signature(path)) == path_signature(path))
        if complete and self.paths:
            logger.info("%s: already complete (same flags); nothing to do", ", ".join(self.paths))
        return complete and bool(self.paths)

    def record(self, complete: bool) -> None:
        """Before the results are written (``complete=False``): each path is listed as ours (a killed write
        is still ours) and this run's intent is recorded beside the record of the result already there,
        which stays as it is; once they are written (``complete=True``): each result's record is
        replaced by this run's, with the result's own signature (size and time: a result changed since is
        not "complete")."""
        for folder in self.folders():
            manifest = read_manifest(folder) or {}
            results = dict(manifest.get("results") or {})
            pending = dict(manifest.get("pending") or {})
            for path in self.paths:
                if os.path.dirname(path) != folder:
                    continue
                name = os.path.basename(path)
                intent = {"command": self.command, "args": self.args, "inputs": self.inputs}
                if complete:
                    results[name] = {**intent, "complete": True, "made": path_signature(path)}
                    pending.pop(name, None)
                else:
                    pending[name] = intent
            manifest["results"] = dict(sorted(results.items()))
            manifest["pending"] = dict(sorted(pending.items()))
            if not manifest["pending"]:
                del manifest["pending"]
            ours = card_is_ours(folder, manifest.get("paths") or ()) if complete else False
            names = {os.path.basename(p) for p in self.paths if os.path.dirname(p) == folder}
            listed = set(manifest.get("paths") or ()) | names | {MANIFEST} | ({CARD} if ours else set())
            manifest["paths"] = sorted(listed)
            write_manifest(folder, manifest)  # the card is listed before it is written
            if ours:
                write_results_card(folder, manifest)

    def withdraw(self) -> None:
        """A run that failed: its intent is taken back, every earlier result's record stays as it was."""
        for folder in self.folders():
            manifest = read_manifest(folder)
            if not manifest or not manifest.get("pending"):
                continue
            pending = {k: v for k, v in manifest["pending"].items()
                       if os.path.join(folder, k) not in self.paths}
            manifest = {k: v for k, v in manifest.items() if k != "pending"}
            write_manifest(folder, {**manifest, **({"pending": pending} if pending else {})})


def io_failure(path: str, error: OSError) -> RunConflictError | None:
    """A full disk or a read-only folder as one line: where, and that nothing was published."""
    if error.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM):
        return RunConflictError(f"cannot write {getattr(error, 'filename', None) or path}: "
                                f"{os.strerror(error.errno)}; nothing was published; free space or fix the "
                                f"permissions, then rerun the same command to resume")
    return None

