"""img2dataset's webdataset output back into classes: ``{target}/{wnid}/{laion_index}.jpg`` files,
or tars in class order.

img2dataset names a sample by its shard number and its position in the shard
(:func:`.laion.img2dataset_row`); samples inside a tar are in completion order, not input order,
and each shard's ``{shard}.parquet`` lists every input row with its ``status`` (``success`` or the
failure) and ``error_message``. A sample's ``.json`` carries its ``url``, checked against the
metadata row its key names, so a wrong ``--number_sample_per_shard`` stops with a clear error
instead of misfiling images.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..core import distributed
from ..core.errors import InputError
from ..core.files import require_complete_tar
from ..core.write import atomic_open
from ..core.log import logger, progress
from ..core.stats import Stats
from .classes import wnid_to_label
from .laion import INDEX, TEXT, img2dataset_row

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MAX_ERRORS_SHOWN = 10


def expand_shards(pattern: str) -> list[str]:
    """The tars of ``pattern``: a brace pattern, a glob or a folder; every one must exist."""
    if os.path.isdir(pattern):
        paths = sorted(glob.glob(os.path.join(pattern, "*.tar")))
    elif "{" in pattern:
        from braceexpand import braceexpand

        paths = list(braceexpand(pattern))
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise InputError(f"--dataset_path: {len(missing)} of {len(paths)} tars do not exist (first: {missing[0]})")
    else:
        paths = sorted(glob.glob(pattern))
    if not paths:
        raise InputError(f"--dataset_path {pattern}: no tar files")
    return paths


@dataclass
class Metadata:
    path: str
    table: Any  # pyarrow table, the url_list img2dataset read
    urls: list[str] | None
    wnids: list[str]
    indices: np.ndarray
    texts: list[str] | None

    def __len__(self) -> int:
        return len(self.wnids)


def read_metadata(path: str, wnid_key: str) -> Metadata:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names
    if wnid_key not in names:
        raise InputError(f"{path}: no column {wnid_key!r} (has {', '.join(names[:12])})")
    wnids = table.column(wnid_key).to_pylist()
    known = wnid_to_label()
    bad = next((i for i, w in enumerate(wnids) if w not in known), None)
    if bad is not None:
        raise InputError(f"{path}:{bad + 1}: {wnid_key!r} is {wnids[bad]!r:.40}, not an ImageNet-1k wnid")
    indices = np.asarray(table.column(INDEX).to_pylist(), dtype=np.int64) if INDEX in names else \
        np.arange(len(wnids), dtype=np.int64)
    urls = table.column("URL").to_pylist() if "URL" in names else None
    texts = table.column(TEXT).to_pylist() if TEXT in names else None
    return Metadata(path, table, urls, wnids, indices, texts)


def _samples(tar_path: str) -> Iterator[tuple[str, dict[str, tarfile.TarInfo], tarfile.TarFile]]:
    """``(key, {extension: member}, tar)`` per sample, in the tar's order."""
    with tarfile.open(tar_path) as tar:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        order = []
        everything = tar.getmembers()
        require_complete_tar(tar, tar_path)
        for m in everything:
            if not m.isfile():
                continue
            base = os.path.basename(m.name)
            key, _, ext = base.partition(".")
            if key not in members:
                members[key] = {}
                order.append(key)
            members[key][ext.lower()] = m
        for key in order:
            yield key, members[key], tar


@dataclass
class Placed:
    rows: list[int] = field(default_factory=list)  # metadata rows whose image was placed
    seen: list[int] = field(default_factory=list)  # metadata rows the shards' parquet lists (any status)
    errors: list[str] = field(default_factory=list)


def _shard_status(tar_path: str, per_shard: int, stats: Stats, placed: Placed) -> None:
    """Count each row of the shard's parquet by status (failures as dropped by reason)."""
    import pyarrow.parquet as pq

    stem = os.path.basename(tar_path)[: -len(".tar")]
    status_path = os.path.join(os.path.dirname(tar_path), f"{stem}.parquet")
    if not os.path.exists(status_path):
        logger.warning("%s: no %s.parquet beside it: failed downloads are not counted", tar_path, stem)
        return
    t = pq.read_table(status_path, columns=["key", "status", "error_message"])
    for key, status, message in zip(*(t.column(c).to_pylist() for c in ("key", "status", "error_message"))):
        placed.seen.append(img2dataset_row(str(key), stem, per_shard))
        if status != "success":
            stats.add("dropped", reason=str(status))
            if len(placed.errors) < MAX_ERRORS_SHOWN:
                placed.errors.append(f"{stem}/{key}: {message}")


def _image(members: dict[str, tarfile.TarInfo]) -> tuple[str, tarfile.TarInfo] | None:
    for ext in IMAGE_EXTS:
        if ext in members:
            return ext, members[ext]
    return None


def _checked_row(key: str, stem: str, members, tar, meta: Metadata, per_shard: int, tar_path: str) -> int:
    import json

    row = img2dataset_row(key, stem, per_shard)
    if row >= len(meta):
        raise InputError(f"{tar_path}: sample {key} is row {row} of the metadata, which has {len(meta)} rows "
                         f"(is --metadata_path the url_list img2dataset read?)")
    if "json" in members and meta.urls is not None:
        url = json.loads(tar.extractfile(members["json"]).read()).get("url")
        if url is not None and url != meta.urls[row]:
            raise InputError(f"{tar_path}: sample {key} has url {url!r:.80} but metadata row {row} has "
                             f"{meta.urls[row]!r:.80}: --number_sample_per_shard or --metadata_path is not what "
                             f"img2dataset ran with")
    return row


def _downloaded(tar_path: str, meta: Metadata, per_shard: int, stats: Stats, placed: Placed,
                rec: dict) -> Iterator[tuple[int, str, tarfile.TarInfo, tarfile.TarFile]]:
    """``(metadata row, extension, image member, tar)`` of each downloaded image of one tar; counts
    the shard's failures, the samples read, kept and those without an image."""
    stem = os.path.basename(tar_path)[: -len(".tar")]
    _shard_status(tar_path, per_shard, stats, placed)
    for key, members, tar in _samples(tar_path):
        stats.add("read")
        rec["rows"] += 1
        found = _image(members)
        if found is None:
            stats.add("dropped", reason="sample_without_image")
            continue
        ext, member = found
        row = _checked_row(key, stem, members, tar, meta, per_shard, tar_path)
        yield row, ext, member, tar
        placed.rows.append(row)
        stats.add("kept")


def arrange_files(shards: list[str], meta: Metadata, target: str, per_shard: int, stats: Stats,
                  show_progress: bool) -> Placed:
    """This rank's tars -> ``{target}/{wnid}/{laion_index}.{ext}`` (``jpg`` for JPEG); an image
    already there is kept (a rerun resumes)."""
    placed = Placed()
    with stats.stage("arrange") as rec, progress(len(shards), "arrange", show_progress, unit="tars") as bar:
        for tar_path in shards:
            for row, ext, member, tar in _downloaded(tar_path, meta, per_shard, stats, placed, rec):
                folder = os.path.join(target, meta.wnids[row])
                path = os.path.join(folder, f"{int(meta.indices[row])}.{'jpg' if ext == 'jpeg' else ext}")
                if os.path.exists(path):
                    stats.add("already_there")
                else:
                    os.makedirs(folder, exist_ok=True)
                    with atomic_open(path, "wb") as f:
                        f.write(tar.extractfile(member).read())
            bar.update(1)
    _log_errors(placed)
    return placed


def _log_errors(placed: Placed) -> None:
    if placed.errors:
        logger.info("failed downloads (first %d): %s", len(placed.errors), "; ".join(placed.errors))


def arrange_webdataset(shards: list[str], meta: Metadata, target: str, per_shard: int, stats: Stats,
                       samples_per_tar: int, info: distributed.DistInfo, show_progress: bool,
                       record: Callable[[list[str]], None]) -> Placed:
    """Every rank's tars -> ``{target}/{NNNNN}.tar`` with the samples in class order (label, then
    laion_index), ``samples_per_tar`` each: ``{laion_index}.{jpg,cls,txt}``. ``record`` (rank 0)
    gets the tars' paths before any is written, so that a run replacing this one removes them
    (another --samples_per_tar would otherwise leave old tars beside the new). Collective."""
    placed = Placed()
    where = []  # (row, tar path, offset of the image's bytes, their size, extension)
    with stats.stage("index") as rec:
        for tar_path in shards:
            for row, ext, member, _ in _downloaded(tar_path, meta, per_shard, stats, placed, rec):
                where.append((row, tar_path, member.offset_data, member.size, ext))
    _log_errors(placed)
    every = sorted((w for part in distributed.all_gather_object(where) for w in part))
    known = wnid_to_label()
    every.sort(key=lambda w: (known[meta.wnids[w[0]]], int(meta.indices[w[0]])))
    os.makedirs(target, exist_ok=True)
    n_tars = -(-len(every) // samples_per_tar)
    if info.is_main:
        record([os.path.join(os.path.abspath(target), f"{t:05d}.tar") for t in range(n_tars)])
    distributed.barrier()
    mine = list(range(info.rank, n_tars, info.world_size))
    with stats.stage("write_tars", rows=len(mine)), progress(len(mine), "tars", show_progress, unit="tars") as bar:
        for t in mine:
            path = os.path.join(target, f"{t:05d}.tar")
            if not os.path.exists(path):
                _write_tar(path, every[t * samples_per_tar : (t + 1) * samples_per_tar], meta, known)
            bar.update(1)
    return placed


def _write_tar(path: str, samples: list[tuple], meta: Metadata, known: dict[str, int]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as out:
        for row, tar_path, offset, size, ext in samples:
            with open(tar_path, "rb") as f:
                f.seek(offset)
                image = f.read(size)
            key = str(int(meta.indices[row]))
            parts = [(f"{'jpg' if ext == 'jpeg' else ext}", image), ("cls", str(known[meta.wnids[row]]).encode())]
            if meta.texts is not None and isinstance(meta.texts[row], str):
                parts.append(("txt", meta.texts[row].encode("utf-8")))
            for suffix, data in parts:
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                out.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
