"""What a path flag may name, checked once for every verb right after its flags are parsed.

A flag declares its role (``flag(..., path=INPUT)``); the engine then holds every verb to the same
rules, before any rank, lock or model is touched, so a mistake is one line and nothing is written:

- an input exists, is not a link loop, is not an empty file or folder, is a folder where one is
  expected, and a pattern matches a file;
- an output folder is not ``/``, not above the working folder, not an input, not inside an input
  folder (an ImageFolder tree would gain classes), and holds no input where it writes its files;
- an output name is a plain name inside the output folder (``../x`` is refused).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any

from . import remote
from .manifests import manifest_paths

INPUT = "input"  # a file or folder that must exist
INPUT_DIR = "input_dir"  # a folder that must exist (a file there is refused)
INPUT_SPEC = "input_spec"  # a file, folder, glob, brace pattern or comma list; or a name resolved elsewhere (hub)
OUTPUT_DIR = "output_dir"  # a folder the command writes
OUTPUT_FILE = "output_file"  # a file the command writes
OUTPUT_NAME = "output_name"  # a file name inside the output folder
CACHE_DIR = "cache_dir"  # a folder of caches shared by runs (not locked): never an input, nor inside one
INPUT_ROLES = (INPUT, INPUT_DIR, INPUT_SPEC)

_PATTERN_CHARS = "*?[{"
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".gz", ".zst", ".npz", ".npy", ".tar",
                  ".ffcv", ".beton", ".xml", ".pt", ".pth", ".bin", ".safetensors", ".arrow")


def _looks_like_path(text: str) -> bool:
    """Whether a name that does not exist was meant as a path (not a hub name like ``org/name``)."""
    return (text.startswith(("/", "./", "../", "~")) or text.endswith(os.sep)
            or text.lower().endswith(_DATA_SUFFIXES))


def _input_problem(name: str, value: str, spec: bool, folder: bool = False) -> str | None:
    parts = [value]
    if spec and "," in value and not os.path.lexists(value):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    for raw in parts:
        part = os.path.expanduser(raw)
        if remote.is_url(part):
            if not spec:
                return f"--{name}: {raw} is a URL; this flag reads a local file or folder (row inputs take URLs)"
            continue  # listed (and named when missing) by the reader, on rank 0
        if spec and any(c in part for c in _PATTERN_CHARS) and not os.path.lexists(part):
            if "{" not in part and not glob.glob(part):
                return f"--{name}: {raw!r} matches no file"
            continue  # a brace pattern: expanded and checked by its reader
        if not os.path.lexists(part):
            if spec and not _looks_like_path(part):
                continue  # a hub dataset: resolved (and named if unknown) by the reader
            return f"--{name}: no such file or folder: {raw}"
        try:
            info = os.stat(part)
        except OSError as e:  # a link loop (ELOOP), a dangling link, no permission
            return f"--{name}: cannot read {raw}: {e.strerror}"
        if os.path.isdir(part):
            if not os.listdir(part):
                return f"--{name}: {raw} is an empty folder"
        elif folder:
            return f"--{name}: {raw} is a file; a folder is expected"
        elif info.st_size == 0:
            return f"--{name}: {raw} is empty (0 bytes): no rows to read"
    return None


def spec_paths(value: str) -> list[str]:
    """The existing paths (real) an input flag's value names: the value, or each item of a comma list;
    a pattern's matches; and the paths a manifest among them names (a collection's or ``--against``'s
    datasets are inputs too). A hub name names none."""

    out = []
    for part in [value] if os.path.lexists(value) else value.split(","):
        part = os.path.expanduser(part.strip())
        if not part:
            continue
        matches = [part] if os.path.exists(part) else \
            sorted(glob.glob(part)) if any(c in part for c in _PATTERN_CHARS) else []
        for path in matches:
            out.append(os.path.realpath(path))
            out += [os.path.realpath(p) for p in manifest_paths(path) if os.path.exists(p)]
    return list(dict.fromkeys(out))


def _existing_inputs(values: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    """``(flag, real path)`` of every existing path the input flags name (:func:`spec_paths`)."""
    return [(name, path) for name, role, value in values if role in INPUT_ROLES and isinstance(value, str)
            for path in spec_paths(value)]


def input_files(opts: Any) -> list[str]:
    """Every existing input path ``opts`` names (:func:`spec_paths` of each input flag), in flag order:
    what :func:`inputs_signature` looks at."""
    values = [(f.name, f.metadata["path"], getattr(opts, f.name)) for f in dataclasses.fields(opts)
              if f.metadata.get("path") in INPUT_ROLES and getattr(opts, f.name) not in (None, "")]
    return list(dict.fromkeys(path for _, path in _existing_inputs(values)))


def inputs_signature(opts: Any, exclude: list[str] = ()) -> dict[str, list[int]]:
    """What the inputs looked like: per input file ``[size, mtime_ns]``; per input folder ``[files,
    bytes, newest mtime_ns]`` of the files below it (hidden ones and the ``exclude`` paths, the
    command's own outputs, left out); per URL its objects' count, bytes and a digest of their etags;
    per Hub dataset name the commit the Hub serves. A run or result made from inputs with another
    signature is not served as "already complete"."""
    skip = [os.path.realpath(e) for e in exclude]
    signatures = {path: path_signature(path, skip) for path in input_files(opts)}
    for f in dataclasses.fields(opts):  # URLs: their objects' sizes and etags (remote.signature)
        value = getattr(opts, f.name)
        if f.metadata.get("path") in INPUT_ROLES and isinstance(value, str):
            for part in value.split(","):
                if remote.is_url(part.strip()):
                    signatures[part.strip()] = remote.signature(part.strip())
                elif f.metadata["path"] == INPUT_SPEC and remote.is_hub_name(part):  # the Hub's commit
                    signatures[part.strip()] = remote.hub_signature(part.strip())
    return signatures


def path_signature(path: str, skip: list[str] = ()) -> list[int] | None:
    """A file's ``[size, mtime_ns]``, a folder's ``[files, bytes, newest mtime_ns]`` of the files below it
    (hidden ones, and the ``skip`` files and folders, left out); None where nothing is there."""
    if os.path.isfile(path):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    if not os.path.isdir(path):
        return None
    files = size = newest = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(root, d) not in skip)
        for n in names:
            if n.startswith(".") or os.path.join(root, n) in skip:
                continue
            try:
                st = os.stat(os.path.join(root, n))
            except OSError:
                continue
            files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return [files, size, newest]


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _output_problem(name: str, value: str, inputs: list[tuple[str, str]], opts: Any = None,
                    urls: list[tuple[str, str]] = ()) -> str | None:
    if remote.is_url(value):
        if getattr(opts, "is_collection", False):
            return (f"--{name}={value}: a collection is written to a local or shared folder (one dataset, a run "
                    f"folder, may be written to a URL)")
        if not getattr(type(opts), "url_output", False) or name != "output_dir":
            return (f"--{name}={value}: this command writes to a local or shared folder (a run folder, "
                    f"--output_dir, may be at a URL); copy the folder there after the run")
        out = value.rstrip("/") + "/"
        for flag_name, url in urls:
            if url.rstrip("/") + "/" == out or url.startswith(out) or out.startswith(url.rstrip("/") + "/"):
                return f"--{name}={value} and the input --{flag_name}={url} overlap: write to another prefix"
        return None
    out = os.path.realpath(os.path.expanduser(value))
    if out == os.sep:
        return f"--{name}=/ is the root folder: give the run a folder of its own"
    if _inside(os.path.realpath(os.getcwd()), out):
        return f"--{name}={value} is above the working folder: give the run a folder of its own"
    if os.path.isfile(out):
        return f"--{name}={value} is a file; it must be a folder"
    for flag_name, path in inputs:
        if out == path:
            return f"--{name}={value} is the input --{flag_name}: write to another folder"
        if os.path.isdir(path) and _inside(out, path):
            return (f"--{name}={value} is inside the input folder --{flag_name}={path}: what the run writes "
                    f"would become input; write to a folder outside it")
        inner = os.path.relpath(path, out).split(os.sep) if _inside(path, out) else []
        # a file where the run writes its own files could be replaced by one of them
        if (len(inner) == 1 and not os.path.isdir(path)) or inner[:1] in (["parts"], ["cache"]):
            return (f"--{name}={value} holds the input --{flag_name}={path}: a result could replace it; "
                    f"write to another folder")
    return None


def _cache_problem(name: str, value: str, inputs: list[tuple[str, str]]) -> str | None:
    """A cache folder is written by every run that shares it: never an input, nor inside an input folder
    (a ``--per_dataset`` folder would gain a dataset named ``cache``)."""
    out = os.path.realpath(os.path.expanduser(value))
    for flag_name, path in inputs:
        if out == path or (os.path.isdir(path) and _inside(out, path)):
            where = "is" if out == path else "is inside"
            return (f"--{name}={value} {where} the input --{flag_name}={path}: the cache would become input; "
                    f"keep it outside")
    return None


def path_problems(opts: Any) -> list[str]:
    """One line per path flag of ``opts`` (a parsed options dataclass) that breaks a rule above."""
    values = [(f.name, f.metadata["path"], getattr(opts, f.name)) for f in dataclasses.fields(opts)
              if f.metadata.get("path") and getattr(opts, f.name) not in (None, "")]
    problems = [_input_problem(name, value, role == INPUT_SPEC, role == INPUT_DIR) for name, role, value in values
                if role in INPUT_ROLES]
    inputs = _existing_inputs(values)
    urls = [(name, v) for name, role, value in values if role in INPUT_ROLES
            for v in str(value).split(",") if remote.is_url(v.strip())]
    for name, role, value in values:
        if role == OUTPUT_DIR:
            problems.append(_output_problem(name, value, inputs, opts, urls))
        elif role == CACHE_DIR:
            problems.append(_cache_problem(name, value, inputs))
        elif role == OUTPUT_FILE:
            out = os.path.realpath(os.path.expanduser(value))
            clash = [flag_name for flag_name, path in inputs if path == out]
            problems.append(f"--{name}={value} is the input --{clash[0]}: write to another file" if clash else None)
        elif role == OUTPUT_NAME:
            plain = value not in (".", "..") and os.sep not in value and (os.altsep or os.sep) not in value
            problems.append(None if plain else f"--{name} must be a file name inside the output folder, got {value!r}")
    return [p for p in problems if p]


def output_dirs(opts: Any) -> list[str]:
    """The folders ``opts`` (parsed options) names as outputs: what a command locks while it writes."""
    return [getattr(opts, f.name) for f in dataclasses.fields(opts)
            if f.metadata.get("path") == OUTPUT_DIR and getattr(opts, f.name)]
