"""Image inputs: an FFCV file, an ImageFolder tree, or webdataset tar shards, as one numbered list.

Every input is a list of ``n`` images with a label each, in dataset order; image ``i`` is the
same image whatever the number of ranks, which read contiguous runs of it.

- FFCV (``.ffcv`` / ``.beton``): its RGB image field and int field, decoded by FFCV's own loader
  (:func:`ffcv_batches`); ``indices`` give each rank its own rows (FFCV's ``distributed=True``
  would pad with repeated samples).
- ImageFolder: torchvision's ordering (class folders sorted, files sorted); label = the class's
  position, the class names kept in ``classes``.
- webdataset: ``.tar`` shards (a folder, a glob or a brace pattern ``shard-{00000..00009}.tar``),
  samples grouped by key as img2dataset writes them (``{key}.jpg``, ``.txt``, ``.json``); label from
  ``{key}.cls`` or a field of ``{key}.json`` (``--label_key``), else -1. Shards in sorted order,
  samples in tar order.

Decoding is PIL's, in DataLoader workers (:class:`DecodedImages`); an image that cannot be read
comes back with its reason instead of raising, so the caller decides: stop naming the file, or
set it aside in the rejects.
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import re
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.files import require_complete_tar
from ..core.log import logger
from ..core.compat import import_torchvision

FFCV_SUFFIXES = (".ffcv", ".beton")
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
FFCV_INSTALL = ("FFCV input needs ffcv: apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config, then "
                "pip install 'dist_data[images]' (or pip install ffcv)")


@dataclass
class ImageSource:
    """One split's images: how to read them and their labels."""

    kind: str  # ffcv, folder, webdataset
    path: str
    n: int
    labels: np.ndarray | None = None  # (n,) int64; FFCV labels come with the batches
    classes: list[str] | None = None  # ImageFolder: the class folder of each label
    files: list[str] = field(default_factory=list)  # folder: image paths; webdataset: shard paths
    members: np.ndarray | None = None  # webdataset: (n, 3) int64 shard index, data offset, size
    keys: list[str] = field(default_factory=list)  # webdataset: sample keys
    missing: list[dict[str, Any]] = field(default_factory=list)  # samples without an image (webdataset)

    def locator(self, i: int) -> str:
        """Where image ``i`` lives, for messages and rejects."""
        if self.kind == "folder":
            return self.files[i]
        if self.kind == "webdataset":
            return f"{self.files[int(self.members[i, 0])]}:{self.keys[i]}"
        return f"{self.path}[{i}]"

    def describe(self) -> str:
        extra = f", {len(self.classes)} classes" if self.classes is not None else ""
        return f"{self.kind} {self.path} ({self.n:,} images{extra})"


def _expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> the three names (webdataset's and img2dataset's shard notation)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    return [p for i in range(int(lo), int(hi) + 1)
            for p in _expand_braces(pattern[:m.start()] + str(i).zfill(len(lo)) + pattern[m.end():])]


def _tar_shards(path: str) -> list[str] | None:
    if os.path.isdir(path):
        shards = sorted(glob.glob(os.path.join(path, "*.tar")))
        return shards or None
    if path.endswith(".tar") or "{" in path or any(c in path for c in "*?["):
        return sorted(p for pat in _expand_braces(path) for p in (glob.glob(pat) if any(c in pat for c in "*?[")
                                                                   else [pat]))
    return None


def open_source(path: str, label_key: str | None = None) -> ImageSource:
    """The images at ``path``: the format from what is there (see the module doc).

    Raises:
        InputError: nothing readable at ``path`` (named), or a missing optional dependency.
    """
    if path.endswith(FFCV_SUFFIXES):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such FFCV file")
        return _ffcv_source(path)
    shards = _tar_shards(path)
    if shards is not None:
        absent = [s for s in shards if not os.path.isfile(s)]
        if absent or not shards:
            raise InputError(f"{path}: no such shard(s): {', '.join(absent[:5]) or path}")
        return _webdataset_source(path, shards, label_key)
    if os.path.isdir(path):
        return _folder_source(path)
    raise InputError(f"{path}: not an FFCV file (.ffcv/.beton), an ImageFolder tree or webdataset .tar shards")


def import_ffcv():
    """``import ffcv``, or the install line; torch's thread count is kept (importing ffcv sets it to 1,
    which made the forward pass of a CPU rank 1.5x slower)."""
    threads = torch.get_num_threads()
    try:
        import ffcv
        import ffcv.fields.basics
        import ffcv.fields.rgb_image
        import ffcv.loader
        import ffcv.reader
        import ffcv.transforms
        import ffcv.writer
    except ImportError as e:
        raise InputError(f"{FFCV_INSTALL} ({e})") from None
    finally:
        torch.set_num_threads(threads)
    return ffcv


def _ffcv_source(path: str) -> ImageSource:
    ffcv = import_ffcv()
    try:
        n = int(ffcv.reader.Reader(path).num_samples)
    except Exception as e:  # noqa: BLE001 - any file that is not FFCV's (a JPEG, a cut copy): one line
        raise InputError(f"{path}: not a readable FFCV file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return ImageSource("ffcv", path, n)


def _folder_source(path: str) -> ImageSource:
    import_torchvision()
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(path)
    except FileNotFoundError as e:
        raise InputError(f"{path}: not an ImageFolder tree ({e})") from None
    samples = make_dataset(path, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise InputError(f"{path}: no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    others = sum(1 for c in classes for _, _, fs in os.walk(os.path.join(path, c)) for f in fs
                 if not f.lower().endswith(IMG_EXTENSIONS))
    if others:
        logger.info("%s: %d file(s) without an image extension ignored (as ImageFolder does)", path, others)
    return ImageSource("folder", path, len(samples), labels=np.array([s[1] for s in samples], dtype=np.int64),
                       classes=list(classes), files=[s[0] for s in samples])


def _key_and_ext(name: str) -> tuple[str, str]:
    """webdataset's split of a member name: the key up to the first dot of the base name."""
    folder, base = os.path.split(name)
    key, _, ext = base.partition(".")
    return os.path.join(folder, key), ext.lower()


def _webdataset_source(path: str, shards: Sequence[str], label_key: str | None) -> ImageSource:
    members, keys, labels, missing = [], [], [], []
    for s, shard in enumerate(shards):
        try:
            with tarfile.open(shard, "r:") as tar:
                samples: dict[str, dict[str, tarfile.TarInfo]] = {}
                for info in tar:
                    if info.isfile():
                        key, ext = _key_and_ext(info.name)
                        samples.setdefault(key, {})[ext] = info
                require_complete_tar(tar, shard)
                for key, parts in samples.items():
                    image = next((parts[e] for e in WDS_IMAGE_EXTENSIONS if e in parts), None)
                    if image is None:
                        missing.append({"file": shard, "key": key, "reason": "no image in the sample "
                                        f"(has {', '.join(sorted(parts))})"})
                        continue
                    members.append((s, image.offset_data, image.size))
                    keys.append(key)
                    labels.append(_wds_label(tar, parts, label_key, shard, key))
        except tarfile.TarError as e:
            raise InputError(f"{shard}: not a readable tar file ({e})") from None
    if not members:
        raise InputError(f"{path}: no images in {len(shards)} shard(s)")
    return ImageSource("webdataset", path, len(members), labels=np.array(labels, dtype=np.int64), files=list(shards),
                       members=np.array(members, dtype=np.int64), keys=keys, missing=missing)


def _wds_label(tar: tarfile.TarFile, parts: dict[str, tarfile.TarInfo], label_key: str | None, shard: str,
               key: str) -> int:
    def read(ext: str) -> bytes:
        return tar.extractfile(parts[ext]).read()

    try:
        if label_key:
            if "json" not in parts:
                raise InputError(f"{shard}:{key}: --label_key={label_key} but the sample has no .json")
            value = json.loads(read("json"))
            if label_key not in value:
                raise InputError(f"{shard}:{key}.json has no field {label_key!r}")
            return int(value[label_key])
        if "cls" in parts:
            return int(read("cls").decode().strip())
    except (ValueError, TypeError) as e:
        raise InputError(f"{shard}:{key}: the label is not an integer ({e})") from None
    return -1


# ---------------------------------------------------------------- decoding (DataLoader workers)

class DecodedImages(torch.utils.data.Dataset):
    """Images ``indices`` of a folder or webdataset source, decoded by PIL and transformed.

    Item ``j`` is ``(image (3, S, S) float32, label, index, error, seconds)``; a file that cannot
    be read gives zeros and ``error`` (why) instead of raising. With ``seed`` (augmented
    transforms), image ``i``'s random draw is seeded by ``(seed, i)``: the same for any number of
    ranks or workers.
    """

    def __init__(self, source: ImageSource, indices: np.ndarray, transform, size: int, seed: int | None = None):
        self.source, self.indices, self.transform, self.size, self.seed = source, indices, transform, size, seed
        self._tars: dict[int, Any] = {}  # per worker: open shard files

    def __len__(self) -> int:
        return len(self.indices)

    def _bytes(self, i: int) -> bytes:
        shard, offset, size = (int(v) for v in self.source.members[i])
        f = self._tars.get(shard)
        if f is None:
            f = self._tars[shard] = open(self.source.files[shard], "rb")
        f.seek(offset)
        return f.read(size)

    def __getitem__(self, j: int):
        from PIL import Image

        i = int(self.indices[j])
        label = int(self.source.labels[i])
        start = time.perf_counter()
        try:
            if self.source.kind == "folder":
                with open(self.source.files[i], "rb") as f:
                    image = Image.open(f).convert("RGB")
            else:
                image = Image.open(io.BytesIO(self._bytes(i))).convert("RGB")
            if self.seed is not None:
                torch.manual_seed(self.seed * 1_000_003 + i)
                random.seed(self.seed * 1_000_003 + i)
            tensor, error = self.transform(image), ""
        except Exception as e:  # noqa: BLE001 - any decode failure becomes this image's reason
            tensor = torch.zeros(3, self.size, self.size)
            error = f"cannot read the image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        return tensor, label, i, error, time.perf_counter() - start


def ffcv_batches(path: str, indices: np.ndarray, batch_size: int, num_workers: int, size: int, crop_pct: float,
                 augment: bool, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """``(images (B, 3, S, S) uint8, labels (B,), indices (B,))`` of an FFCV file, in ``indices`` order.

    The pipelines avoid three FFCV pitfalls: images of different sizes need
    ``CenterCropRGBImageDecoder`` (the simple decoder refuses them); ``NormalizeImage`` in a CPU
    pipeline hangs (libffcv/ffcv#396), so the caller normalises in torch; and the loader reuses its
    output buffers, so every batch is copied before the next is asked for.
    """
    import_ffcv()
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    reader = Reader(path)
    names, handlers = reader.field_names, reader.handlers
    image_field = next((n for n in names if type(handlers[n]).__name__ == "RGBImageField"), None)
    label_field = next((n for n in names if type(handlers[n]).__name__ == "IntField"), None)
    if image_field is None:
        raise InputError(f"{path}: no RGB image field (fields: {', '.join(names)})")
    decoder = (RandomResizedCropRGBImageDecoder((size, size)) if augment
               else CenterCropRGBImageDecoder((size, size), ratio=crop_pct))
    pipelines: dict[str, Any] = {image_field: [decoder] + ([RandomHorizontalFlip()] if augment else [])
                                 + [ToTensor(), ToTorchImage()]}
    if label_field is not None:
        pipelines[label_field] = [IntDecoder(), ToTensor()]
    for other in names:
        if other not in pipelines:
            pipelines[other] = None
    if len(indices) == 0:
        return
    loader = Loader(path, batch_size=batch_size, num_workers=num_workers, order=OrderOption.SEQUENTIAL,
                    indices=np.asarray(indices).tolist(), pipelines=pipelines, drop_last=False, os_cache=True,
                    seed=seed)
    pos = 0
    for batch in loader:
        images = batch[0].clone()  # the loader overwrites its buffers on the next batch
        labels = (batch[1].reshape(-1).clone() if label_field is not None
                  else torch.full((len(images),), -1, dtype=torch.int64))
        yield images, labels, np.asarray(indices[pos:pos + len(images)])
        pos += len(images)
