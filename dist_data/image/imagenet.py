"""ImageNet preparation: bounding-box XML to annotations, the PyTorch folder layout, FFCV files.

- :func:`write_annotations`: one line ``{image id} {wnid}`` per XML file (the first
  ``<object><name>``; the image id is the last ``_`` part of ``<filename>``), files sorted; files
  without an object are counted and listed, unreadable XML is an error naming the file.
- :func:`to_pytorch_style`: ``{split}/images/*`` moved into ``{split}/{wnid}/`` following
  ``{split}/annotations.txt``. Train images are named ``{wnid}_{id}.JPEG``; validation images
  ``ILSVRC2012_val_{id}.JPEG`` are found by their id too. Rerunning finishes a partial move.
- :func:`write_ffcv`: an ImageFolder tree into an FFCV file with FFCV's write modes, written under a
  temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..core.errors import InputError
from ..core.write import atomic_open
from ..core.log import logger

WNID = re.compile(r"^n\d{8}$")


@dataclass
class AnnotationCounts:
    files: int = 0
    written: int = 0
    without_object: list[str] = field(default_factory=list)


def image_id(filename: str) -> str:
    """``ILSVRC2012_val_00000001.JPEG`` / ``n01440764_10026`` -> ``00000001`` / ``10026``."""
    return os.path.splitext(os.path.basename(filename))[0].split("_")[-1]


def parse_annotation(path: str) -> tuple[str, str | None]:
    """``(image id, wnid of the first object or None)`` of one ImageNet bounding-box XML file.

    Raises:
        InputError: the file is not XML (named), or has no ``<filename>``.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(f"{path}: not readable XML ({e})") from None
    filename = root.findtext("filename")
    if not filename:
        raise InputError(f"{path}: no <filename>")
    obj = root.find("object")
    name = obj.findtext("name") if obj is not None else None
    return image_id(filename), (name.strip() if name else None)


def write_annotations(xml_dir: str, output_file: str) -> AnnotationCounts:
    """``output_file``: ``{id} {wnid}`` for every XML file under ``xml_dir`` (sorted), atomically."""
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(xml_dir) for f in files if f.endswith(".xml"))
    if not paths:
        raise InputError(f"{xml_dir}: no .xml files")
    counts = AnnotationCounts(files=len(paths))
    with atomic_open(output_file, "w") as out:
        for path in paths:
            ident, wnid = parse_annotation(path)
            if wnid is None:
                counts.without_object.append(path)
                continue
            out.write(f"{ident} {wnid}\n")
            counts.written += 1
    return counts


@dataclass
class MoveCounts:
    lines: int = 0
    moved: int = 0
    already: int = 0  # in its class folder from an earlier run
    missing: list[str] = field(default_factory=list)  # annotation lines whose image is nowhere


def to_pytorch_style(split_path: str, annotations: str = "annotations.txt") -> MoveCounts:
    """Move ``{split_path}/images/*`` into ``{split_path}/{wnid}/`` by ``annotations`` (see the module doc)."""
    images = os.path.join(split_path, "images")
    ann_path = annotations if os.path.isabs(annotations) else os.path.join(split_path, annotations)
    if not os.path.isfile(ann_path):
        raise InputError(f"{ann_path}: no annotations file (python -m dist_data.imagenet annotations writes one)")
    present = os.listdir(images) if os.path.isdir(images) else []
    by_stem = {os.path.splitext(f)[0]: f for f in present}
    by_id: dict[str, list[str]] = {}
    for stem, f in by_stem.items():
        if not WNID.match(stem.split("_")[0]):  # ILSVRC2012_val_*: found by id alone
            by_id.setdefault(image_id(stem), []).append(f)
    counts = MoveCounts()
    with open(ann_path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not WNID.match(fields[1]):
                raise InputError(f"{ann_path}:{number}: expected '{{image id}} {{wnid}}', got {line.strip()!r}")
            ident, wnid = fields
            counts.lines += 1
            target_dir = os.path.join(split_path, wnid)
            name = by_stem.get(f"{wnid}_{ident}") or (by_id.get(ident, [None])[0] if len(by_id.get(ident, [])) == 1
                                                       else None)
            if name is None:
                done = [f for f in (os.listdir(target_dir) if os.path.isdir(target_dir) else [])
                        if image_id(f) == ident]
                if done:
                    counts.already += 1
                else:
                    counts.missing.append(f"{ident} {wnid}")
                continue
            os.makedirs(target_dir, exist_ok=True)
            os.replace(os.path.join(images, name), os.path.join(target_dir, name))
            counts.moved += 1
    return counts


def ffcv_name(split: str, max_resolution: int, compress_probability: float, jpeg_quality: int) -> str:
    """``{split}_{res}_{p}_{q}.ffcv``, the names the original write script gave its files."""
    return f"{split}_{max_resolution}_{compress_probability:g}_{jpeg_quality}.ffcv"


class _CheckedFolder:
    """An ImageFolder for FFCV's writer whose unreadable images never raise in a worker (a worker that
    dies leaves the writer waiting for ever): each is written as a 1x1 placeholder and its path and
    reason appended to ``bad_log``, which the caller reads once the writer is done."""

    def __init__(self, root: str, max_rows: int | None, bad_log: str):
        from ..core.compat import import_torchvision

        import_torchvision()
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(root)
        self.n = min(len(self.folder), max_rows or len(self.folder))
        self.bad_log = bad_log

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            return self.folder.loader(path), label
        except Exception as e:  # noqa: BLE001 - any decode failure: named after the write
            from PIL import Image

            with open(self.bad_log, "a", encoding="utf-8") as f:  # one short line: an atomic append
                f.write(json.dumps({"file": path, "reason": f"{type(e).__name__}: {e}"[:200]}) + "\n")
            return Image.new("RGB", (1, 1)), label


def write_ffcv(data_dir: str, write_path: str, max_resolution: int, write_mode: str = "proportion",
               compress_probability: float = 0.5, jpeg_quality: int = 90, num_workers: int = 8,
               chunk_size: int = 100, max_rows: int | None = None) -> int:
    """Write the ImageFolder ``data_dir`` to the FFCV file ``write_path`` (fields ``image``, ``label``).

    Returns the number of images written.
    """
    from .sources import import_ffcv

    import_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    tmp = f"{write_path}.tmp{os.getpid()}"
    bad_log = f"{tmp}.unreadable"
    dataset = _CheckedFolder(data_dir, max_rows, bad_log)
    writer = DatasetWriter(tmp, {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                                        compress_probability=compress_probability,
                                                        jpeg_quality=jpeg_quality),
                                 "label": IntField()}, num_workers=num_workers)
    try:
        writer.from_indexed_dataset(dataset, chunksize=chunk_size)
        if os.path.exists(bad_log):
            with open(bad_log, encoding="utf-8") as f:
                bad = sorted((json.loads(line) for line in f), key=lambda b: b["file"])
            raise InputError(f"{bad[0]['file']}: cannot read the image ({bad[0]['reason']})"
                             + (f"; {len(bad) - 1} more unreadable image(s)" if len(bad) > 1 else "")
                             + "; nothing was written")
        os.replace(tmp, write_path)
    finally:
        for leftover in (tmp, bad_log):
            if os.path.exists(leftover):
                os.remove(leftover)
    logger.info("wrote %s: %s images of %d classes (%s, max side %d, p %.2f, quality %d)", write_path,
                f"{len(dataset):,}", len(dataset.folder.classes), write_mode, max_resolution, compress_probability,
                jpeg_quality)
    return len(dataset)
