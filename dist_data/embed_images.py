"""Embed images once with a pretrained visual backbone: ``{split}.npz`` {data [N, D], label [N]}.

    torchrun --nproc-per-node=8 -m dist_data.embed_images --train_data_ffcv=train.ffcv \\
        --eval_data_ffcv=val.ffcv --model_name=resnet50d.ra4_e3600_r224_in1k --output_dir=DIR
    python -m dist_data.embed_images --train_data=imagenet/train --eval_data=imagenet/val \\
        --model_name=tf_efficientnet_lite0 --checkpoint=lite0.pth --output_dir=DIR --output_dtype=float16
    python -m dist_data.embed_images --eval_data='shards/{00000..00099}.tar' --label_key=label ...
    python -m dist_data.embed_images stack --dir=DIR        # join the blocks of a --nostack run
    multi-node: launch/slurm.sh or launch/ssh.sh with the same flags

Inputs (``--train_data`` / ``--eval_data``, or the FFCV-only ``--*_data_ffcv`` names): an FFCV
file (``.ffcv``/``.beton``), an ImageFolder tree, or webdataset ``.tar`` shards as img2dataset
writes them. Backbones (``--model_name``): a timm model, ``open_clip:ARCH[/TAG]``, or
``module:function`` (see :mod:`dist_data.image.backbones`); weights from ``--checkpoint`` or the hub.

The vector is the backbone's pre-logits feature (timm: ``forward_head(forward_features(x),
pre_logits=True)``), under autocast on GPU. Images get the model's own eval transform (resize, centre
crop, normalise from its pretrained config); ``--train_transform=augment`` gives train a seeded
random resized crop and flip instead.

Output in ``DIR``: ``{split}.npz`` {data, label, index (dataset position of each row)} in dataset
order, ``classes.json`` (ImageFolder class names per split), ``rejects.jsonl`` (images that could
not be read, with ``--on_bad_rows=skip``), ``stats.json`` (images, rejected by reason, seconds and
images/s per stage, per rank), ``args.json``. The same bytes for any number of ranks; a killed run
resumes block by block with the same command.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, flag, non_empty, one_of, required
from .core.options import ResultOptions, RunFolderOptions
from .core.paths import INPUT, INPUT_SPEC, OUTPUT_DIR
from .core.embed import BATCHES_PER_BLOCK
from .core.errors import InputError
from .core.files import read_json
from .core.write import write_json
from .core.log import logger
from .core.run import Output, Run, run_main
from .core.stats import Stats, peak_rss_mib
from .core.rundir import remove_paths
from .image.embed import (EmbedSettings, SplitCounts, embed_split, list_parts, log_split, part_path, reason_key,
                          stack_parts, write_split_meta)
from .image.sources import ImageSource, open_source

DEFAULT_IMAGE_MODEL = "resnet50d.ra4_e3600_r224_in1k"
SPLITS = ("train", "eval")


@dataclass(frozen=True, kw_only=True)
class EmbedImagesOptions(RunFolderOptions):
    """Embed images (FFCV, ImageFolder, webdataset) with a visual backbone to {split}.npz."""

    kept_unit: ClassVar[str] = "images"

    output_dir: str = required("the run folder: {split}.npz, stats.json, rejects.jsonl", non_empty, result=False,
                               path=OUTPUT_DIR)
    train_data: str | None = flag(None, "train images: an FFCV file, an ImageFolder tree or webdataset .tar shards "
                                  "(a folder, glob or {00000..00009} pattern)", non_empty, path=INPUT_SPEC)
    eval_data: str | None = flag(None, "eval images, as --train_data", non_empty, path=INPUT_SPEC)
    train_data_ffcv: str | None = flag(None, "train FFCV file (.ffcv/.beton); same as --train_data", non_empty,
                                       path=INPUT)
    eval_data_ffcv: str | None = flag(None, "eval FFCV file (.ffcv/.beton); same as --eval_data", non_empty, path=INPUT)
    model_name: str = flag(DEFAULT_IMAGE_MODEL, "a timm model, open_clip:ARCH[/TAG] or module:function", non_empty)
    checkpoint: str | None = flag(None, "the backbone's weights: a state dict file or a folder (default: the "
                                  "pretrained weights through timm / open_clip from the hub)", non_empty, path=INPUT)
    batch_size: int = flag(256, "images per forward pass", at_least(1))
    num_workers: int = flag(min(8, os.cpu_count() or 1), "DataLoader (or FFCV) workers decoding images",
                            at_least(0), result=False)
    output_dtype: str = flag("float32", "dtype of the stored vectors", one_of("float32", "float16"))
    autocast: str = flag("float16", "autocast dtype of the forward pass on GPU (none: float32); CPU is float32",
                         one_of("float16", "bfloat16", "none"))
    train_transform: str = flag("eval", "eval: train gets the eval transform (reproducible); augment: seeded random "
                                "resized crop + flip, as the original pipeline", one_of("eval", "augment"))
    label_key: str | None = flag(None, "webdataset: the label field of each sample's .json (default: its .cls "
                                 "file, else -1)", non_empty)
    seed: int = flag(42, "seed of --train_transform=augment", at_least(0))
    on_bad_rows: str = flag("error", "an image that cannot be read: error (named) or skip (to rejects.jsonl)",
                            one_of("error", "skip"))
    stack: bool = flag(True, "join the blocks into {split}.npz at the end (--nostack: run `stack` later)",
                       result=False)
    keep_parts: bool = flag(False, "keep the per-block files after stacking", result=False)
    overwrite: bool = flag(False, "replace a run with other flags (only files dist_data wrote are removed)",
                           result=False)

    def result_file(self) -> str:
        return "train.npz"

    def side_outputs(self) -> list[str]:
        return [f"{s}.npz" for s in SPLITS] + ["classes.json"]

    def inputs(self) -> dict[str, str]:
        return {split: path for split, path in (("train", self.train_data or self.train_data_ffcv),
                                                ("eval", self.eval_data or self.eval_data_ffcv)) if path}

    def problems(self) -> list[str]:
        out = [f"--{s}_data and --{s}_data_ffcv name the same split; give one" for s in SPLITS
               if getattr(self, f"{s}_data") and getattr(self, f"{s}_data_ffcv")]
        out += [f"--{s}_data_ffcv must be an .ffcv or .beton file, got {getattr(self, f'{s}_data_ffcv')!r}"
                for s in SPLITS if getattr(self, f"{s}_data_ffcv")
                and not getattr(self, f"{s}_data_ffcv").endswith((".ffcv", ".beton"))]
        if not self.inputs():
            out.append("nothing to embed: give --train_data and/or --eval_data (or --*_data_ffcv)")
        return out


def _open_sources(info: distributed.DistInfo, opts: EmbedImagesOptions) -> dict[str, ImageSource]:
    """Every split's images, listed once on rank 0 and sent to all ranks (one walk of the tree)."""
    sources = None
    with distributed.same_error_on_every_rank(InputError, OSError):
        if info.is_main:
            sources = {split: open_source(path, opts.label_key) for split, path in opts.inputs().items()}
            missing = [m for s in sources.values() for m in s.missing]
            if missing and opts.on_bad_rows == "error":
                raise InputError(f"{missing[0]['file']}:{missing[0]['key']}: {missing[0]['reason']} "
                                 f"({len(missing)} such sample(s)); --on_bad_rows=skip sets them aside")
    return distributed.broadcast_object(sources)


def _merge_counts(per_rank: list[SplitCounts]) -> dict[str, Any]:
    rejected: dict[str, int] = {}
    for c in per_rank:
        for reason, n in c.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    seconds = {k: round(sum(c.seconds[k] for c in per_rank), 3) for k in ("decode",)}
    seconds.update({k: round(max(c.seconds[k] for c in per_rank), 3) for k in ("wait", "forward", "write")})
    return {"images": sum(c.images for c in per_rank), "embedded": sum(c.embedded for c in per_rank),
            "cached_blocks": sum(c.cached_blocks for c in per_rank), "rejected": rejected, "seconds": seconds}


def _remove_blocks(parts_dir: str, split: str) -> None:
    remove_paths(parts_dir, [os.path.basename(part_path(parts_dir, split, b)) for b in list_parts(parts_dir, split)])


def _finish_split(run, split: str, source: ImageSource, opts: EmbedImagesOptions, block_rows: int) -> dict[str, Any]:
    """Rank 0: the blocks stacked into ``{split}.npz`` (and removed), the split's rejects named."""
    start = time.perf_counter()
    run.record([f"{split}.npz"])
    result = stack_parts(run.parts_dir, split, run.file(f"{split}.npz"), -(-source.n // block_rows))
    for r in result["rejects"]:
        r["file"] = source.locator(r["index"])
    if not opts.keep_parts:
        _remove_blocks(run.parts_dir, split)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def run_embed_images(info: distributed.DistInfo, opts: EmbedImagesOptions, run: Run) -> dict[str, Any] | None:
    from .image.backbones import load_backbone

    start = time.perf_counter()
    sources = _open_sources(info, opts)
    with run.stats.stage("model", done="loaded"):
        backbone = load_backbone(opts.model_name, opts.checkpoint, info.device)
    run.begin()
    block_rows = run.block_rows
    if info.is_main:
        logger.info("backbone: %s; eval transform %s", backbone.describe, backbone.config.as_dict())
        for split, source in sources.items():
            logger.info("%s: %s", split, source.describe())
            write_split_meta(run.parts_dir, split, source, block_rows)
        run.record(["classes.json"])
        write_json(run.file("classes.json"), {s: src.classes for s, src in sources.items() if src.classes is not None})
    splits: dict[str, Any] = {}
    rejects: list[dict[str, Any]] = []
    for split, source in sources.items():
        if info.is_main:
            run.stats.add("input_rows", source.n + len(source.missing))
        rejects.extend({"split": split, **m} for m in source.missing)
        if os.path.exists(run.file(f"{split}.npz")):
            if info.is_main:
                logger.info("%s: %s.npz is already there (an earlier run of this command)", split, split)
                _remove_blocks(run.parts_dir, split)
                previous = (read_json(run.file("stats.json")) or {}).get("splits", {}).get(split)
                splits[split] = previous or {"note": "stacked by an earlier run"}
            continue
        settings = EmbedSettings(opts.batch_size, BATCHES_PER_BLOCK, opts.num_workers, opts.output_dtype,
                                 opts.autocast, split == "train" and opts.train_transform == "augment", opts.seed,
                                 opts.on_bad_rows, run.show_progress)
        split_start = time.perf_counter()
        counts = None
        with distributed.same_error_on_every_rank(InputError):
            counts = embed_split(info, backbone, source, split, run.parts_dir, settings)
        if opts.stack:
            run.share_parts(f"{split}-")  # a run folder in a store: every rank's blocks to rank 0 to stack
        _count(run.stats, counts, source.missing if info.is_main else [])
        per_rank = distributed.all_gather_object(counts)
        wall = time.perf_counter() - split_start
        if info.is_main:
            merged = _merge_counts(per_rank)
            for m in source.missing:  # samples without an image are set aside too: the split's counts add up
                reason = reason_key(m["reason"])
                merged["rejected"][reason] = merged["rejected"].get(reason, 0) + 1
            merged["seconds"]["wall"] = round(wall, 3)
            merged["images_per_s"] = round(merged["embedded"] / wall, 1) if wall > 0 else 0.0
            merged["ranks"] = [{"images": c.images, "embedded": c.embedded, "seconds": c.seconds,
                                "peak_rss_mib": r} for c, r in zip(per_rank, distributed.all_gather_object(peak_rss_mib()))]
            log_split(split, merged, wall, opts.num_workers)
            if opts.stack:
                result = _finish_split(run, split, source, opts, block_rows)
                merged["seconds"]["stack"] = result["seconds"]
                merged.update(rows=result["rows"], dim=result["dim"])
                rejects.extend(result["rejects"])
                logger.info("%s: wrote %s (%s x %d, %s)", split, run.file(f"{split}.npz"), f"{result['rows']:,}",
                            result["dim"], opts.output_dtype)
            splits[split] = merged
        else:
            distributed.all_gather_object(peak_rss_mib())
        distributed.barrier()
    if not opts.stack and info.is_main:
        logger.info("--nostack: the blocks are in %s; `python -m dist_data.embed_images stack --dir=%s` joins them",
                    run.parts_dir, opts.output_dir)
    run.write_parts([], rejects if info.is_main else [])
    names = [f"{s}.npz" for s in sources] if opts.stack else []
    return run.merge(result=Output(names[0] if names else "parts", written=True),
                     outputs=[Output(n, written=True) for n in names[1:] + ["classes.json"]],
                     sections={"model": backbone.describe, "transform": backbone.config.as_dict(), "splits": splits,
                               "rejected": len(rejects), "seconds": round(time.perf_counter() - start, 3)},
                     complete=opts.stack)


def _count(stats: Stats, counts: SplitCounts, missing: list[dict[str, Any]]) -> None:
    """One split's images into the run's counts (``missing``: the samples without an image, rank 0's)."""
    stats.add("read", counts.images + len(missing))
    stats.add("kept", counts.embedded)
    stats.add("cached_blocks", counts.cached_blocks)
    for reason, n in counts.rejected.items():
        stats.add("rejected", n, reason=reason)
    for m in missing:
        stats.add("rejected", 1, reason=reason_key(m["reason"]))


# ---------------------------------------------------------------- stack

@dataclass(frozen=True, kw_only=True)
class StackOptions(ResultOptions):
    """Join a run's per-block files into {split}.npz (block order = dataset order; gaps are errors)."""

    dir: str = required("the --output_dir of an embed_images run (its parts/ folder holds the blocks)", non_empty,
                        path=OUTPUT_DIR)
    split: str | None = flag(None, "one split (default: every split with blocks)", non_empty)

    def splits(self) -> list[str]:
        parts_dir = os.path.join(self.dir, "parts")
        if self.split:
            return [self.split]
        names = os.listdir(parts_dir) if os.path.isdir(parts_dir) else []
        return sorted({name.rsplit("-", 1)[0] for name in names if name.endswith(".npz")})

    def results(self) -> list[str]:
        return [os.path.join(self.dir, f"{name}.npz") for name in self.splits()]

    def inputs_signature(self) -> dict[str, list[int]]:
        """The blocks (a resumed run adds some; a lost one must be said): stacked again when they changed."""
        parts_dir = os.path.join(self.dir, "parts")
        names = sorted(os.listdir(parts_dir)) if os.path.isdir(parts_dir) else []
        return {name: [os.stat(os.path.join(parts_dir, name)).st_size, os.stat(os.path.join(parts_dir, name)).st_mtime_ns]
                for name in names if name.endswith(".npz")}


def run_stack(info: distributed.DistInfo, opts: StackOptions, run: None) -> None:  # noqa: ARG001 - one process
    """Join the per-block files of ``dir/parts`` into ``dir/{split}.npz`` for one split or all."""
    parts_dir = os.path.join(opts.dir, "parts")
    splits = opts.splits()
    if not splits:
        raise InputError(f"{parts_dir}: no block files to stack")
    for name in splits:
        path = os.path.join(opts.dir, f"{name}.npz")
        result = stack_parts(parts_dir, name, path)
        logger.info("%s: %d block(s) -> %s (%s rows x %d; %d image(s) set aside)", name, result["blocks"], path,
                    f"{result['rows']:,}", result["dim"], len(result["rejects"]))


COMMANDS = {None: (EmbedImagesOptions, run_embed_images), "stack": (StackOptions, run_stack)}  # the registry's


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.embed_images --flag=value ...``, or ``... stack --dir=DIR``."""
    run_main(COMMANDS, __doc__, "dist_data.embed_images", argv)


if __name__ == "__main__":
    main()
