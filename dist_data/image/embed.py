"""Embedding one split of images in blocks, and stacking the blocks into ``{split}.npz``.

Images are cut into fixed blocks of global positions (``block_rows`` = a whole number of batches);
each rank takes a contiguous run of blocks (:func:`distributed.shard_range`). A batch therefore
holds the same images for any number of ranks, so the vectors are the same bits, and a finished
block is written at once (``parts/{split}-{block:07d}.npz``, atomically): a killed run resumes at
the first block it had not finished. :func:`stack_parts` (also ``embed_images stack``) joins the
blocks in block order (= dataset order) and checks that none is missing.

A block file holds ``data`` (n, D), ``label`` (n,), ``index`` (n,) (dataset positions of the
rows), and the images it set aside: ``rejected`` (positions) and ``reasons``.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..core import distributed
from ..core.errors import InputError
from ..core.write import save_npz, write_json
from ..core.log import logger, progress
from .backbones import Backbone, pil_transform
from .sources import DecodedImages, ImageSource, ffcv_batches

PART_RE = re.compile(r"^(?P<split>.+)-(?P<block>\d{7})\.npz$")


def part_path(parts_dir: str, split: str, block: int) -> str:
    return os.path.join(parts_dir, f"{split}-{block:07d}.npz")


@dataclass
class SplitCounts:
    """What one rank did on one split."""

    images: int = 0  # images of this rank's blocks (cached blocks included)
    embedded: int = 0  # rows written
    cached_blocks: int = 0  # blocks found done (resume)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    rejects: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "wait": 0.0, "forward": 0.0,
                                                                "write": 0.0})


def reason_key(message: str) -> str:
    """The reason an image is counted under: its message without the detail in parentheses."""
    return message.split(" (")[0]


@dataclass(frozen=True)
class EmbedSettings:
    batch_size: int
    batches_per_block: int
    num_workers: int
    output_dtype: str  # float32 | float16
    autocast: str  # float16 | bfloat16 | none (CUDA only)
    augment: bool
    seed: int
    on_bad_rows: str  # error | skip
    show_progress: bool

    @property
    def block_rows(self) -> int:
        return self.batch_size * self.batches_per_block


def _worker_context(dataset: DecodedImages):
    """Where DataLoader workers start: a fork server, not a fork of this process.

    This process has threads by the time it decodes (gloo's, pyarrow's jemalloc background
    thread, tqdm's monitor), and forking a threaded process can deadlock on a lock one of them
    held (a CI run hung inside ``os.fork()``). The server starts once per process, single
    threaded, with the modules that unpickling ``dataset`` needs (its own, its transform's)
    imported, so each worker forks from it ready.
    """
    transforms = [dataset.transform, *getattr(dataset.transform, "transforms", [])]
    modules = [type(dataset).__module__, *dict.fromkeys(type(t).__module__ for t in transforms)]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(modules)
    return context


def _batches(source: ImageSource, indices: np.ndarray, backbone: Backbone, s: EmbedSettings
             ) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray, list[str], float]]:
    """``(normalised images, labels, indices, errors, decode seconds)`` per batch, in ``indices`` order."""
    cfg = backbone.config
    if source.kind == "ffcv":
        mean = torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
        for images, labels, idx in ffcv_batches(source.path, indices, s.batch_size, max(1, s.num_workers), cfg.size,
                                                cfg.crop_pct, s.augment, s.seed):
            yield (images.float() - mean) / std, labels.numpy().astype(np.int64), idx, [""] * len(idx), 0.0
        return
    dataset = DecodedImages(source, indices, pil_transform(cfg, s.augment), cfg.size, s.seed if s.augment else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch_size, shuffle=False, num_workers=s.num_workers,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=False,
                                         prefetch_factor=4 if s.num_workers else None,
                                         multiprocessing_context=_worker_context(dataset) if s.num_workers else None)
    for images, labels, idx, errors, seconds in loader:
        yield images, labels.numpy().astype(np.int64), idx.numpy().astype(np.int64), list(errors), float(seconds.sum())


def _autocast(device: torch.device, autocast: str):
    if device.type != "cuda" or autocast == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype={"float16": torch.float16, "bfloat16": torch.bfloat16}[autocast])


def embed_split(info: distributed.DistInfo, backbone: Backbone, source: ImageSource, split: str, parts_dir: str,
                s: EmbedSettings) -> SplitCounts:
    """This rank's blocks of ``source`` embedded into ``parts_dir`` (blocks already there skipped).

    Raises:
        InputError: with ``on_bad_rows='error'``, the first image that cannot be read (named).
    """
    counts = SplitCounts()
    n_blocks = -(-source.n // s.block_rows)
    lo, hi = distributed.shard_range(n_blocks, info.rank, info.world_size)
    todo = []
    for b in range(lo, hi):
        rows = min(source.n, (b + 1) * s.block_rows) - b * s.block_rows
        counts.images += rows
        if os.path.exists(part_path(parts_dir, split, b)):
            counts.cached_blocks += 1
        else:
            todo.append(b)
    indices = (np.concatenate([np.arange(b * s.block_rows, min(source.n, (b + 1) * s.block_rows)) for b in todo])
               if todo else np.zeros(0, dtype=np.int64))
    device = next(backbone.model.parameters()).device
    out_dtype = np.float16 if s.output_dtype == "float16" else np.float32
    pending: dict[str, list] = {"data": [], "label": [], "index": [], "rejected": [], "reasons": []}
    block_iter = iter(todo)
    block = next(block_iter, None)
    filled = 0
    with progress(len(indices), split, s.show_progress, unit="img") as bar:  # the run's: rank 0, --progress
        batches = _batches(source, indices, backbone, s)
        while True:
            start = time.perf_counter()
            item = next(batches, None)
            counts.seconds["wait"] += time.perf_counter() - start
            if item is None:
                break
            images, labels, idx, errors, decode_seconds = item
            counts.seconds["decode"] += decode_seconds
            ok = np.array([not e for e in errors])
            for i, error in zip(idx[~ok], (e for e in errors if e)):
                if s.on_bad_rows == "error":
                    raise InputError(f"{source.locator(int(i))}: {error}; --on_bad_rows=skip sets such images "
                                     f"aside in rejects.jsonl")
                reason = reason_key(error)
                counts.rejected[reason] = counts.rejected.get(reason, 0) + 1
                counts.rejects.append({"split": split, "index": int(i), "file": source.locator(int(i)), "reason": error})
            start = time.perf_counter()
            with torch.inference_mode(), _autocast(device, s.autocast):
                vectors = backbone.features(images.to(device, non_blocking=True)
                                            .contiguous(memory_format=torch.channels_last))
            vectors = vectors.float().cpu().numpy().astype(out_dtype)
            counts.seconds["forward"] += time.perf_counter() - start
            pending["data"].append(vectors[ok])
            pending["label"].append(labels[ok])
            pending["index"].append(idx[ok])
            pending["rejected"].append(idx[~ok])
            pending["reasons"].extend(e for e in errors if e)
            filled += len(idx)
            bar.update(len(idx))
            block_rows = min(source.n, (block + 1) * s.block_rows) - block * s.block_rows
            if filled == block_rows:  # batches never straddle blocks: a block is whole batches
                start = time.perf_counter()
                save_npz(part_path(parts_dir, split, block), data=np.concatenate(pending["data"]),
                         label=np.concatenate(pending["label"]), index=np.concatenate(pending["index"]),
                         rejected=np.concatenate(pending["rejected"]).astype(np.int64),
                         reasons=np.array(pending["reasons"], dtype=str))
                counts.seconds["write"] += time.perf_counter() - start
                counts.embedded += int(sum(len(d) for d in pending["data"]))
                pending = {k: [] for k in pending}
                filled = 0
                block = next(block_iter, None)
    return counts


def list_parts(parts_dir: str, split: str) -> list[int]:
    return sorted(int(m.group("block")) for p in glob.glob(os.path.join(parts_dir, f"{split}-*.npz"))
                  if (m := PART_RE.match(os.path.basename(p))) and m.group("split") == split)


def stack_parts(parts_dir: str, split: str, out_path: str, n_blocks: int | None = None) -> dict[str, Any]:
    """``{split}.npz`` {data (N, D), label (N,), index (N,)} from the block files, in block order.

    Checks that blocks ``0..n_blocks-1`` are all there (``n_blocks`` from ``{split}.json`` when not
    given), so a missing block is an error, never a silent gap. Returns counts and the rejects.

    Raises:
        InputError: no blocks, or a missing block (named).
    """
    blocks = list_parts(parts_dir, split)
    if n_blocks is None:
        meta_path = os.path.join(parts_dir, f"{split}.json")
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                n_blocks = int(json.load(f)["blocks"])
    if not blocks:
        raise InputError(f"{parts_dir}: no blocks of split {split!r} ({split}-NNNNNNN.npz)")
    expected = range(n_blocks if n_blocks is not None else blocks[-1] + 1)
    absent = sorted(set(expected) - set(blocks))
    if absent:
        raise InputError(f"{parts_dir}: split {split!r} misses block(s) {', '.join(map(str, absent[:10]))} of "
                         f"{len(expected)}; rerun the embedding command to finish them")
    arrays: dict[str, list[np.ndarray]] = {"data": [], "label": [], "index": []}
    rejects = []
    for b in expected:
        with np.load(part_path(parts_dir, split, b), allow_pickle=False) as z:
            for key in arrays:
                arrays[key].append(z[key])
            rejects.extend({"split": split, "index": int(i), "reason": str(r)} for i, r in zip(z["rejected"], z["reasons"]))
    stacked = {k: np.concatenate(v) for k, v in arrays.items()}
    save_npz(out_path, **stacked)
    return {"rows": int(len(stacked["label"])), "dim": int(stacked["data"].shape[1]) if stacked["data"].ndim == 2 else 0,
            "blocks": len(expected), "rejects": rejects}


def write_split_meta(parts_dir: str, split: str, source: ImageSource, block_rows: int) -> None:
    write_json(os.path.join(parts_dir, f"{split}.json"),
               {"split": split, "source": source.describe(), "images": source.n, "block_rows": block_rows,
                "blocks": -(-source.n // block_rows)})


def log_split(split: str, merged: dict[str, Any], wall: float, workers: int) -> None:
    c = merged
    rate = lambda n, s: f"{n / s:,.0f}" if s > 0 else "-"  # noqa: E731
    logger.info("%s: %s images, %s embedded, %s rejected, %d block(s) from an earlier run; %.1f s (%s images/s); "
                "decode %s images/s per worker, forward %s images/s", split, f"{c['images']:,}", f"{c['embedded']:,}",
                f"{sum(c['rejected'].values()):,}", c["cached_blocks"], wall, rate(c["embedded"], wall),
                rate(c["embedded"], c["seconds"]["decode"]) if workers and c["seconds"]["decode"] else "-",
                rate(c["embedded"], c["seconds"]["forward"]))
