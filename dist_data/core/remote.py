"""Inputs where users keep them: a URL (``s3://``, ``gs://``, ``az://``, ``hf://``, ``http(s)://``,
``file://``) names a file, a folder (a prefix) or a glob, read through fsspec, streamed.

Credentials and endpoints come the standard way (the AWS environment variables, ``AWS_ENDPOINT_URL``
included, ``~/.aws``, gcloud's and Azure's own) or from ``--storage_options`` (JSON: keyword arguments
of the filesystem, e.g. ``{"anon": true}``, or ``{"s3": {...}, "gs": {...}}`` per protocol); they are
never written into ``args.json``, the card or a log. Every failure is one line naming the URL.
"""

from __future__ import annotations

import hashlib
import re
from typing import IO, Any

from .errors import InputError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_OPTIONS: dict[str, Any] = {}  # --storage_options of this process's command


def is_url(path: Any) -> bool:
    return isinstance(path, str) and bool(_URL.match(path.strip()))


def set_storage_options(options: dict[str, Any] | None) -> None:
    """This command's ``--storage_options`` (the engine sets them before any input is read)."""
    _OPTIONS.clear()
    _OPTIONS.update(options or {})


def _options_for(protocol: str) -> dict[str, Any]:
    if any(isinstance(v, dict) for v in _OPTIONS.values()):  # per protocol
        return dict(_OPTIONS.get(protocol, {}))
    return dict(_OPTIONS)


def filesystem(url: str):
    """``(fs, path)`` of ``url`` (its protocol's filesystem, with the storage options)."""
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url, **_options_for(protocol))
    except ImportError as e:
        raise InputError(f"{url}: reading {protocol}:// needs {e.name or 'its fsspec package'} "
                         f"(pip install 'dist_data[cloud]')") from None
    except ValueError as e:
        raise InputError(f"{url}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    """The first line of an error's text (its type's name where it has none): one line for a message."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def problem(url: str, e: BaseException, doing: str = "read") -> InputError:
    """One line for a failure on ``url`` (``doing``: read or written): no such key or bucket, no
    credentials, access denied, the store unreachable (after the filesystem's own retries)."""
    text = first_line(e)
    name = type(e).__name__
    if isinstance(e, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text or "404" in text:
        return InputError(f"{url}: no such file, folder or bucket")
    if "NoCredentials" in name or "credentials" in text.lower():
        return InputError(f"{url}: no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or "
                          f"--storage_options)")
    if isinstance(e, PermissionError) or "AccessDenied" in text or "403" in text:
        return InputError(f"{url}: access denied ({text})")
    return InputError(f"{url}: cannot be {doing} ({name}: {text})")


def list_files(url: str) -> list[str]:
    """The files ``url`` names, as URLs, sorted: itself (a file), every file under it (a folder or
    prefix) or the matches of a glob.

    Raises:
        InputError: nothing there, or it cannot be listed (one line).
    """
    return sorted(_listing(url))


def _listing(url: str) -> dict[str, dict[str, Any]]:
    """``{file URL: the store's info (size, etag...)}`` of what ``url`` names, from one listing (no
    request per object)."""
    fs, path = filesystem(url)
    try:
        fs.invalidate_cache()  # a long-lived process (a collection) lists what is there now
        if any(c in path for c in "*?["):
            found = fs.glob(path, detail=True)
            if not any(i.get("type") != "directory" for i in found.values()):
                raise InputError(f"glob {url} matches no input files")
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
        elif fs.isfile(path):
            return {url: fs.info(path)}
        else:
            raise InputError(f"{url}: no such file, folder or bucket")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the store's errors, as one line
        raise problem(url, e) from None
    http = url.split("://", 1)[0] in ("http", "https")  # the HTTP filesystem lists full URLs
    return {(p if http else fs.unstrip_protocol(p)): info for p, info in found.items()
            if info.get("type") != "directory"}


def open_binary(url: str) -> IO[bytes]:
    """``url`` opened for reading, streamed (the store's ranges, not a whole download)."""
    fs, path = filesystem(url)
    try:
        return fs.open(path, "rb")
    except Exception as e:  # noqa: BLE001 - the store's errors, as one line
        raise problem(url, e) from None


def signature(url: str) -> list[Any] | None:
    """What ``url`` looked like: ``[files, bytes, digest of their sizes and etags or mtimes]`` over the
    files it names, from the same one listing (None where nothing is there): a changed object makes
    the run again."""
    try:
        files = _listing(url)
    except InputError:
        return None
    h = hashlib.blake2b(digest_size=8)
    for f, info in sorted(files.items()):
        stamp = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
        h.update(f"{f}\0{info.get('size')}\0{stamp}\n".encode())
    return [len(files), sum(int(i.get("size") or 0) for i in files.values()), h.hexdigest()]


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_name(value: str) -> bool:
    """Whether ``value`` reads as a Hugging Face Hub dataset name (``NAME`` or ``ORG/NAME``) rather than a
    path: no local file or folder by that name, no URL, no file suffix."""
    import os

    value = value.strip()
    return (bool(_HUB_NAME.match(value)) and not os.path.exists(value) and not is_url(value)
            and os.path.splitext(value)[1].lower() not in (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".gz",
                                                           ".zst", ".ndjson"))


def hub_signature(name: str) -> list[Any] | None:
    """The commit the Hub serves for dataset ``name`` (a new commit makes the run again); None where the
    Hub cannot be asked (offline: then the name is not compared)."""
    try:
        from huggingface_hub import HfApi

        return [HfApi().dataset_info(name).sha]
    except Exception:  # noqa: BLE001 - no hub, no such dataset: nothing to compare (the reader says why)
        return None

