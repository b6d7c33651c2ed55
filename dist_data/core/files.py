"""Reading whole files: JSON, lines, ``.npz``, the end of a tar; a missing or damaged file is one
line naming it."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import InputError

def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def open_npz(path: str, allow_pickle: bool = False) -> Any:
    """``np.load`` of an ``.npz`` (arrays read on access); a missing, truncated or corrupt file is one
    line naming it, not a zipfile traceback."""
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), read now (a member cut short is named too)."""
    with open_npz(path) as z:
        try:
            return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None


def require_complete_tar(tar: Any, path: str) -> None:
    """After every member of ``tar`` (a ``tarfile.TarFile``) was read: a tar cut short at a member
    boundary reads without a word from ``tarfile``, but lacks the two zero blocks that end every tar.

    Raises:
        InputError: naming the file and where it stops.
    """
    with open(path, "rb") as f:
        f.seek(tar.offset)
        tail = f.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        raise InputError(f"{path}: truncated tar (it stops after byte {tar.offset} without the end-of-archive "
                         f"marker): a copy or download cut short; the samples after that point are missing")


def require_dir(path: str, flag: str) -> str:
    """``path`` when it is a folder, else :class:`InputError` naming the flag."""
    if not os.path.isdir(path):
        raise InputError(f"--{flag}: no such folder: {path}")
    return path


def read_lines(paths: Sequence[str]) -> Iterator[str]:
    """The lines of ``paths`` in order, without their line ends."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")
