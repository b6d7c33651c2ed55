"""ImageNet preparation helpers: annotations from bounding-box XML, PyTorch-style folders, FFCV files.

    python -m dist_data.imagenet annotations --xml_dir=val_xml/ --output_file=val/annotations.txt
    python -m dist_data.imagenet to_pytorch_style --split_path=val/     # val/images/* -> val/{wnid}/
    python -m dist_data.imagenet write_ffcv --split=train --data_dir=imagenet/train --write_dir=ffcv/ \\
        --max_resolution=500 --compress_probability=0.5 --jpeg_quality=90
        # -> ffcv/train_500_0.5_90.ffcv, read by dist_data.embed_images --train_data_ffcv=...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .core.cli import Options, at_least, flag, non_empty, one_of, required
from .core.options import ResultOptions
from .core.paths import INPUT_DIR, OUTPUT_DIR, OUTPUT_FILE
from .core.run import run_main, with_flags
from .core.log import logger
from .image import imagenet


@dataclass(frozen=True, kw_only=True)
class AnnotationsOptions(ResultOptions):
    """One '{image id} {wnid}' line per bounding-box XML file (its first <object>)."""

    xml_dir: str = required("a folder of ImageNet bounding-box .xml files (searched recursively)", non_empty,
                            path=INPUT_DIR)
    output_file: str = flag("annotations.txt", "the annotations file to write", non_empty, path=OUTPUT_FILE)

    def results(self) -> list[str]:
        return [self.output_file]


@dataclass(frozen=True, kw_only=True)
class PytorchStyleOptions(Options):
    """Move {split_path}/images/* into {split_path}/{wnid}/ folders (train and val names)."""

    split_path: str = required("a split folder holding images/ and annotations.txt", non_empty, path=INPUT_DIR)
    annotations: str = flag("annotations.txt", "the annotations file (relative to --split_path, or absolute)",
                            non_empty)


@dataclass(frozen=True, kw_only=True)
class WriteFfcvOptions(ResultOptions):
    """Write an ImageFolder split into {write_dir}/{split}_{res}_{p}_{q}.ffcv with FFCV's writer."""

    split: str = required("the split's name (train, val), used in the file name", non_empty)
    data_dir: str = required("the split's ImageFolder tree ({wnid}/ folders)", non_empty, path=INPUT_DIR)
    write_dir: str = flag(".", "where the .ffcv file is written", non_empty, path=OUTPUT_DIR)
    max_resolution: int = flag(500, "longest image side stored", at_least(1))
    write_mode: str = flag("proportion", "FFCV write mode: raw, jpg, smart or proportion (JPEG with probability "
                           "--compress_probability)", one_of("raw", "jpg", "smart", "proportion"))
    compress_probability: float = flag(0.5, "proportion mode: share of images stored as JPEG")
    jpeg_quality: int = flag(90, "JPEG quality of compressed images", at_least(1))
    num_workers: int = flag(min(8, os.cpu_count() or 1), "writer processes", at_least(1), result=False)
    chunk_size: int = flag(100, "images per writer chunk", at_least(1), result=False)
    max_rows: int | None = flag(None, "write only the first N images", at_least(1))

    def results(self) -> list[str]:
        return [os.path.join(self.write_dir, imagenet.ffcv_name(self.split, self.max_resolution,
                                                                self.compress_probability, self.jpeg_quality))]

    def problems(self) -> list[str]:
        return [] if 0 <= self.compress_probability <= 1 else [
            f"--compress_probability must be in [0, 1], got {self.compress_probability}"]


def annotations(xml_dir: str, output_file: str) -> None:
    counts = imagenet.write_annotations(xml_dir, output_file)
    logger.info("%s: %d XML file(s), %d annotation(s) written, %d without an <object>%s", output_file, counts.files,
                counts.written, len(counts.without_object),
                f" (e.g. {', '.join(counts.without_object[:3])})" if counts.without_object else "")


def to_pytorch_style(split_path: str, annotations: str) -> None:
    counts = imagenet.to_pytorch_style(split_path, annotations)
    logger.info("%s: %d annotation(s): %d image(s) moved, %d already in place, %d not found", split_path,
                counts.lines, counts.moved, counts.already, len(counts.missing))
    if counts.missing:
        logger.warning("images not found in %s/images for: %s%s", split_path, ", ".join(counts.missing[:10]),
                       " ..." if len(counts.missing) > 10 else "")


def write_ffcv(split: str, data_dir: str, write_dir: str, max_resolution: int, compress_probability: float,
               jpeg_quality: int, **kwargs: Any) -> None:
    os.makedirs(write_dir, exist_ok=True)
    path = os.path.join(write_dir, imagenet.ffcv_name(split, max_resolution, compress_probability, jpeg_quality))
    imagenet.write_ffcv(data_dir, path, max_resolution, compress_probability=compress_probability,
                        jpeg_quality=jpeg_quality, **kwargs)


COMMANDS = {
    "annotations": (AnnotationsOptions, with_flags(annotations)),
    "to_pytorch_style": (PytorchStyleOptions, with_flags(to_pytorch_style)),
    "write_ffcv": (WriteFfcvOptions, with_flags(write_ffcv)),
}


def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.imagenet COMMAND --flag=value ...`` (``--help`` lists the commands)."""
    run_main(COMMANDS, __doc__, "dist_data.imagenet", argv)


if __name__ == "__main__":
    main()
