"""A run folder at a URL (``--output_dir=s3://bucket/prefix``, any fsspec store): the run works in a
local staging folder and publishes to the store.

- The staging folder is the same for the same URL on a host (under ``$DIST_DATA_STAGING``, default
  ``{tmp}/dist_data-staging``): a relaunch there resumes from its cache of embeddings, which stays
  local (said in the log). Before the rerun policy, rank 0 fetches what the store holds (the lock and
  the cache excepted), so that a relaunch on another machine resumes from the parts already there.
- Each rank uploads its parts as soon as they are written, each object whole (one PUT, or a multipart
  upload that appears at its completion), so that rank 0 on another host merges them and a killed
  run resumes from them.
- At the start, what the run replaces is removed from the store, the completion marker first; at the
  end rank 0 uploads the result and every other output, then ``stats.json``, the card and the
  manifest, and ``_SUCCESS`` last: a reader who finds ``_SUCCESS`` finds everything it vouches for.
- The lock is an object created with the store's conditional write (create-if-absent: S3's
  ``If-None-Match: *``), with the stale-lock rules of a local folder (:class:`FolderLock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any

from .card import CARD
from .errors import InputError
from .files import read_json
from .remote import filesystem, open_binary, problem
from .rundir import LOCK_NAME, MANIFEST, FolderLock, read_manifest
from .write import atomic_open, write_json

RECORD = ".dist_data.mirror.json"  # in the staging folder: what the store held at the last sync
LAST = ("stats.json", CARD, MANIFEST, "_SUCCESS")  # uploaded last, in this order
STATE = ("args.json", "stats.json", MANIFEST, "_SUCCESS")  # what the rerun policy reads of a complete run
LOCAL_ONLY = ("cache",)  # folders that stay in the staging folder
_RANKED = re.compile(r"-\d{5}\.")  # a part file of one rank: <name>-<rank:05d>.<ext>


def staging_folder(url: str) -> str:
    """The local folder a run at ``url`` works in on this host (the same one for the same URL), under
    ``$DIST_DATA_STAGING`` (``{host}`` and ``{rank}`` in it are this host's name and this process's
    rank: a folder on a shared file system per node, or per rank) or ``{tmp}/dist_data-staging``."""
    base = os.environ.get("DIST_DATA_STAGING") or os.path.join(tempfile.gettempdir(), "dist_data-staging")
    base = base.replace("{host}", socket.gethostname()).replace("{rank}", os.environ.get("RANK", "0"))
    name = url.rstrip("/").rsplit("/", 1)[-1] or "run"
    return os.path.join(base, f"{name}-{hashlib.sha1(url.rstrip('/').encode()).hexdigest()[:12]}")


class StoreLock(FolderLock):
    """:class:`FolderLock` as an object in a store, created with its conditional write."""

    def __init__(self, url: str):
        super().__init__(url)
        self.fs, root = filesystem(url)
        self.path = f"{url.rstrip('/')}/{LOCK_NAME}"
        self._key = f"{root.rstrip('/')}/{LOCK_NAME}"

    def _create(self, holder: dict[str, Any]) -> bool:
        data = json.dumps(holder).encode()
        try:
            self.fs.pipe_file(self._key, data, mode="create")
            return True
        except FileExistsError:
            return False
        except TypeError:  # a store without a conditional write: checked, then written
            if self.fs.exists(self._key):
                return False
            self.fs.pipe_file(self._key, data)
            return True
        except Exception as e:  # noqa: BLE001 - the store's errors, as one line
            if "PreconditionFailed" in str(e) or "412" in str(e):
                return False
            raise problem(self.path, e, "written") from None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self._key))
        except Exception:  # noqa: BLE001 - none, or unreadable: no holder
            return {}

    def _remove(self) -> None:
        try:
            self.fs.rm_file(self._key)
        except FileNotFoundError:
            pass


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _etag(info: dict[str, Any]) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or
               info.get("size"))


class Mirror:
    """The store's copy of a run folder at ``url`` and its local staging folder (:attr:`local`)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, root = filesystem(self.url)
        self.root = root.rstrip("/")
        self.local = staging_folder(self.url)
        self.lock = StoreLock(self.url)
        self.there: set[str] = set()  # what the store held at the last pull

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _listing(self) -> dict[str, dict[str, Any]]:
        """``{name relative to the run folder: the store's info}`` of what the store holds (the lock
        and the local-only folders left out)."""
        try:
            self.fs.invalidate_cache()
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as e:  # noqa: BLE001 - the store's errors, as one line
            raise problem(self.url, e) from None
        out = {}
        for path, info in found.items():
            name = path[len(self.root):].lstrip("/") if path.startswith(self.root) else ""
            if name and name != LOCK_NAME and name.split("/")[0] not in LOCAL_ONLY and info.get("type") != "directory":
                out[name] = info
        return out

    def _here(self) -> list[str]:
        """The files of the staging folder that belong in the store."""
        names = []
        for folder, dirs, files in os.walk(self.local):
            rel = os.path.relpath(folder, self.local)
            if rel == ".":
                dirs[:] = [d for d in dirs if d not in LOCAL_ONLY]
            for f in files:
                name = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                if name not in (LOCK_NAME, RECORD) and ".tmp" not in f:
                    names.append(name)
        return sorted(names)

    def _record(self) -> dict[str, dict[str, Any]]:
        try:
            return read_json(os.path.join(self.local, RECORD)) or {}
        except (OSError, ValueError):
            return {}

    def _save_record(self, record: dict[str, dict[str, Any]]) -> None:
        write_json(os.path.join(self.local, RECORD), record)

    def _download(self, name: str) -> None:
        """``name`` fetched into the staging folder, streamed, written atomically."""
        path = os.path.join(self.local, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open_binary(f"{self.url}/{name}") as src, atomic_open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - the store's errors, as one line
            raise problem(f"{self.url}/{name}", e) from None

    def _upload(self, name: str) -> None:
        try:
            self.fs.put_file(os.path.join(self.local, name), self._key(name))
        except Exception as e:  # noqa: BLE001 - the store's errors, as one line
            raise problem(f"{self.url}/{name}", e, "written") from None

    def pull(self, only: tuple[str, ...] | None = None) -> int:
        """Rank 0, before the rerun policy: the staging folder made to hold what the store holds (a
        file fetched once; one removed from the store since is removed here), or ``only`` those names
        (:data:`STATE`: enough to tell a complete run with the same flags, which needs nothing else).
        How many files were fetched; :attr:`there` is what the store held."""
        os.makedirs(self.local, exist_ok=True)
        there, record = self._listing(), self._record()
        self.there = set(there)
        fetched = 0
        for name, info in there.items():
            if only is not None and name not in only:
                continue
            seen = record.get(name, {})
            if seen.get("etag") == _etag(info) and seen.get("stamp") == _stamp(os.path.join(self.local, name)):
                continue
            self._download(name)
            record[name] = {"etag": _etag(info), "stamp": _stamp(os.path.join(self.local, name))}
            fetched += 1
        for name in [n for n in record if n not in there]:
            path = os.path.join(self.local, name)
            if os.path.exists(path):
                os.remove(path)
            del record[name]
        self._save_record(record)
        return fetched

    def push(self) -> int:
        """Rank 0: the store made to hold what the staging folder holds. First what the run removed here
        (a file fetched or published before, or one under a name the manifest owns) is removed there
        (``_SUCCESS`` first); a user's own object stays; then each changed file is uploaded, the ones that vouch
        for the others last (:data:`LAST`). How many were uploaded."""
        there, record, here = self._listing(), self._record(), self._here()
        owned = set((read_manifest(self.local) or {}).get("paths") or ())  # what runs of ours wrote here
        gone = sorted((n for n in there if n not in here and (n in record or n.split("/")[0] in owned)),
                      key=lambda n: n != "_SUCCESS")
        for name in gone:
            try:
                self.fs.rm_file(self._key(name))
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001 - the store's errors, as one line
                raise problem(f"{self.url}/{name}", e, "written") from None
            record.pop(name, None)

        def changed(name: str) -> bool:
            stamp = _stamp(os.path.join(self.local, name))
            if name not in there:
                return True
            if name in record:
                return record[name].get("stamp") != stamp
            return int(there[name].get("size") or -1) != (stamp or [None])[0]  # a rank's part, uploaded by it

        uploads = sorted((n for n in here if changed(n)), key=lambda n: LAST.index(n) + 1 if n in LAST else 0)
        for name in uploads:
            self._upload(name)
        after = self._listing() if uploads or any(n not in record for n in here) else there
        for name in here:  # what the store now holds of the staging folder, as it holds it
            if name in after and (name in uploads or name not in record):
                record[name] = {"etag": _etag(after[name]), "stamp": _stamp(os.path.join(self.local, name))}
        self._save_record(record)
        return len(uploads)

    def push_rank(self, parts_dir: str, rank: int) -> None:
        """This rank's part files (``parts/<name>-<rank>.<ext>``), each uploaded whole."""
        mark = f"-{rank:05d}."
        for f in sorted(os.listdir(parts_dir)) if os.path.isdir(parts_dir) else []:
            if mark in f and ".tmp" not in f:
                self._upload(self._name(parts_dir, f))

    def push_unmarked(self, parts_dir: str) -> None:
        """The part files that name no rank (embed_images' blocks) and the store lacks: uploaded by one
        rank per host, once every rank there has written its own."""
        there = self._listing()
        for f in sorted(os.listdir(parts_dir)) if os.path.isdir(parts_dir) else []:
            if not _RANKED.search(f) and ".tmp" not in f and self._name(parts_dir, f) not in there:
                self._upload(self._name(parts_dir, f))

    def _name(self, folder: str, f: str) -> str:
        return f"{os.path.relpath(folder, self.local)}/{f}".replace(os.sep, "/")

    def fetch_parts(self, parts_dir: str, prefix: str | None = None) -> int:
        """Rank 0: the part files other hosts' ranks uploaded and it lacks, fetched: the ranked ones
        (``<name>-<rank>.<ext>``), or those whose name starts with ``prefix`` (one split's blocks)."""
        folder = os.path.relpath(parts_dir, self.local).replace(os.sep, "/") + "/"
        missing = [n for n in self._listing() if n.startswith(folder)
                   and (n[len(folder):].startswith(prefix) if prefix else bool(_RANKED.search(n[len(folder):])))
                   and not os.path.exists(os.path.join(self.local, n))]
        for name in missing:
            self._download(name)
        return len(missing)

    def describe(self) -> str:
        return (f"--output_dir={self.url}: the run works in {self.local} (embeddings cached there, on this "
                f"host) and publishes to the store: parts as they are written, the result at the end, "
                f"_SUCCESS last")

