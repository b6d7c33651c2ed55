"""ImageNet-Captions caption variants (clip-beyond-tail's ``create_incaps_caption_variants``).

Each input row is ``{filename, wnid, title, tags: [...], description}``. Its caption is the chosen
non-empty fields joined by single spaces (tags joined by spaces), with ``\\n \\r \\t`` -> space;
with ``append_cname`` the class text comes first: ``template(name) + " " + caption`` (the class
text alone when no field is chosen or all are empty). A caption that is empty or only spaces is
dropped and counted.

Randomness is one ``random.Random(seed)`` stream, drawn in this order: the shuffle of all rows
(``shuffle``), then for each row with an ImageNet-1k wnid, in output order, the template (mode
``openai80``: one of CLIP's 80 ImageNet templates) and then the lemma (``use_synset``: a WordNet
lemma of the row's synset instead of the class name). The same seed gives the same table.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from ..core.errors import BadRowError
from ..core.rows import Row
from .classes import imagenet_classes
from .tables import one_line

MODES = ("cname", "a+cname", "photo", "openai80")
_FIXED = {"cname": "{}", "a+cname": "a {}", "photo": "a photo of a {}"}
COLUMNS = ("filepath", "label", "caption")


def templates(mode: str) -> list[Callable[[str], str]]:
    """The class-name templates of ``mode`` (``openai80``: open_clip's copy of CLIP's 80)."""
    if mode in _FIXED:
        return [_FIXED[mode].format]
    if mode != "openai80":
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        from ..core import compat

        compat.prepare_torchvision()  # open_clip imports torchvision
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    except ImportError:
        raise ImportError("--mode=openai80 takes CLIP's templates from open_clip: pip install 'dist_data[captions]'") \
            from None
    return list(OPENAI_IMAGENET_TEMPLATES)


@dataclass(frozen=True)
class Fields:
    use_title: bool
    use_tags: bool
    use_description: bool
    append_cname: bool
    use_synset: bool
    mode: str

    def problems(self) -> list[str]:
        out = []
        if not (self.use_title or self.use_tags or self.use_description or self.append_cname):
            out.append("choose at least one of --use_title, --use_tags, --use_description, --append_cname")
        if self.use_synset and not self.append_cname:
            out.append("--use_synset replaces the class name of --append_cname: give --append_cname too")
        if self.mode != "cname" and not self.append_cname:
            out.append(f"--mode={self.mode} is the template of --append_cname: give --append_cname too")
        return out

    def file_name(self, n_rows: int) -> str:
        """``incaps[_title][_tags][_description][_{mode}][_synset]_{rows}.tsv``."""
        return ("incaps" + "_title" * self.use_title + "_tags" * self.use_tags + "_description" * self.use_description
                + (f"_{self.mode}" if self.append_cname else "") + "_synset" * self.use_synset + f"_{n_rows}.tsv")


@dataclass(frozen=True)
class Record:
    filename: str
    wnid: str
    title: str
    tags: tuple[str, ...]
    description: str


def _text_field(row: Row, value: dict, key: str) -> str:
    if key not in value:
        raise BadRowError(row.source, row.line, f"missing key {key!r} (has {sorted(value)[:8]})")
    text = value[key]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise BadRowError(row.source, row.line, f"{key!r} is {type(text).__name__}, expected a string")
    return text


def parse_record(row: Row) -> Record:
    """An ImageNet-Captions row, checked (``title``/``description`` may be null, ``tags`` a list of strings)."""
    if row.error is not None:
        raise BadRowError(row.source, row.line, row.error)
    value = row.value
    if not isinstance(value, dict):
        raise BadRowError(row.source, row.line, f"row is a {type(value).__name__}, expected an object")
    filename, wnid = _text_field(row, value, "filename"), _text_field(row, value, "wnid")
    if not filename.strip() or not wnid.strip():
        raise BadRowError(row.source, row.line, f"empty {'filename' if not filename.strip() else 'wnid'}")
    if "tags" not in value:
        raise BadRowError(row.source, row.line, f"missing key 'tags' (has {sorted(value)[:8]})")
    tags = value["tags"] or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRowError(row.source, row.line, "'tags' must be a list of strings")
    return Record(filename, wnid, _text_field(row, value, "title"), tuple(tags), _text_field(row, value, "description"))


def join_fields(record: Record, fields: Fields) -> str:
    """The chosen non-empty fields, space-joined, on one line."""
    parts = []
    if fields.use_title and record.title != "":
        parts.append(record.title)
    if fields.use_tags and record.tags:
        parts.append(" ".join(record.tags))
    if fields.use_description and record.description != "":
        parts.append(record.description)
    return one_line(" ".join(parts))


@dataclass
class VariantResult:
    rows: list[tuple[str, int, str]]  # (filepath, label, caption) in output order
    unknown_wnid: int
    empty: int


def make_variants(records: Sequence[Record], fields: Fields, image_root: str, seed: int, shuffle: bool,
                  names: Sequence[str] | None = None) -> VariantResult:
    """The caption table of ``records`` (already parsed) for one variant (``names``: the class names
    ``--append_cname`` writes; default the original ones)."""
    classes = imagenet_classes()
    names = names or [c.name for c in classes]
    label_of = {c.wnid: c.label for c in classes}
    rng = random.Random(seed)
    order = list(records)
    if shuffle:
        rng.shuffle(order)
    choices = templates(fields.mode) if fields.append_cname else []
    rows, unknown, empty = [], 0, 0
    for rec in order:
        label = label_of.get(rec.wnid)
        if label is None:
            unknown += 1
            continue
        caption = join_fields(rec, fields)
        if fields.append_cname:
            template = choices[0] if len(choices) == 1 else rng.choice(choices)
            name = rng.choice(classes[label].lemmas) if fields.use_synset else names[label]
            head = template(name)
            caption = f"{head} {caption}" if caption else head
        if caption.replace(" ", "") == "":
            empty += 1
            continue
        rows.append((os.path.join(image_root, "train", rec.wnid, rec.filename), label, caption))
    return VariantResult(rows, unknown, empty)
