"""The WordNet 3.0 database (Debian's ``wordnet-base``: /usr/share/wordnet), read directly.

Real English text for the shipped samples, tests and benchmarks (:mod:`dist_data.text.wordnet`),
and the lemmas and definitions of the ImageNet synsets (:mod:`dist_data.caption.classes`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator

WORDNET_DIR = os.environ.get("WORDNET_DIR", "/usr/share/wordnet")
POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}


@dataclass(frozen=True)
class Synset:
    offset: str
    pos: str
    lexfile: int
    lemmas: tuple[str, ...]
    definition: str  # the gloss up to its first ";" (what the shipped samples use)
    examples: tuple[str, ...]
    gloss: str = ""  # the whole definition: the gloss without its quoted examples (nltk's definition())

    @property
    def id(self) -> str:
        return f"{self.pos}{self.offset}"


def iter_synsets(wordnet_dir: str = WORDNET_DIR, pos: str = "nvar") -> Iterator[Synset]:
    """Every synset of the given parts of speech, in file order."""
    if not os.path.isdir(wordnet_dir):
        raise FileNotFoundError(f"WordNet not found at {wordnet_dir}: `apt-get install wordnet-base` "
                                f"(or set WORDNET_DIR)")
    for p in pos:
        with open(os.path.join(wordnet_dir, POS_FILES[p]), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # license header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n_words = int(fields[3], 16)
                lemmas = tuple(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2])
                parts = [g.strip() for g in gloss.strip().split(";")]
                definition = parts[0]
                examples = tuple(g.strip('"') for g in parts[1:] if g.startswith('"'))
                whole = re.sub(r'".*?"', "", gloss).strip().strip("; ")
                yield Synset(fields[0], fields[2].replace("s", "a"), int(fields[1]), lemmas, definition, examples,
                             whole)
