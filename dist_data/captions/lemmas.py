"""Caption -> ImageNet classes by WordNet lemmas, all lemmas in one pass.

The rule (clip-beyond-tail's YFCC15M-Cls / CC12M-Cls, LAIONet's with ``unique_only``): a caption
belongs to a class when one of the class synset's lemmas occurs in it as a whole word or phrase,
case-insensitively. Precisely, with :func:`normalize` (lowercase; every run of characters that are
not letters or digits, punctuation and ``_`` included, is one space):

    class c matches caption t  iff  " " + normalize(lemma) + " " occurs in " " + normalize(t) + " "
                                    for some lemma of c

so "Jack-o'-lantern!" matches the lemma "jack-o'-lantern", "hot dogs" does not match "hot dog",
and "siberian husky" matches both Siberian husky and husky (Eskimo dog): every class whose lemma
occurs counts, overlapping or not, as a search per synset would find them.

``unique_only`` (LAIONet): only lemmas that belong to exactly one of the classes count (after
normalisation, so "Cardigan" the corgi and "cardigan" the sweater are one shared lemma).

The automaton (``pyahocorasick``, Aho-Corasick over the normalised lemmas with their spaces) finds
every occurrence of every lemma in time linear in the caption, whatever the number of lemmas: the
cost per caption is one lowercase, one regex substitution and one scan.
"""

from __future__ import annotations

import re
from typing import Sequence

_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Lowercase, every run of non-alphanumeric characters -> one space, stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def lemma_classes(class_lemmas: Sequence[Sequence[str]]) -> dict[str, tuple[int, ...]]:
    """Normalised lemma -> the classes (indices into ``class_lemmas``) it belongs to, sorted."""
    out: dict[str, set[int]] = {}
    for c, lemmas in enumerate(class_lemmas):
        for lemma in lemmas:
            key = normalize(lemma)
            if key:
                out.setdefault(key, set()).add(c)
    return {k: tuple(sorted(v)) for k, v in sorted(out.items())}


class LemmaMatcher:
    """All classes whose lemmas occur in a caption.

    Example:
        >>> m = LemmaMatcher([["Siberian husky"], ["husky", "Eskimo dog"], ["crane"], ["crane"]])
        >>> m.match("A Siberian HUSKY, next to a crane.")
        (0, 1, 2, 3)
        >>> LemmaMatcher([["crane"], ["crane"], ["hen"]], unique_only=True).match("a crane and a hen")
        (2,)
    """

    def __init__(self, class_lemmas: Sequence[Sequence[str]], unique_only: bool = False):
        try:
            import ahocorasick
        except ImportError:
            raise ImportError("caption labelling needs pyahocorasick: pip install 'dist_data[captions]'") from None

        table = lemma_classes(class_lemmas)
        self.shared = {k: v for k, v in table.items() if len(v) > 1}
        self.lemmas = {k: v for k, v in table.items() if not unique_only or len(v) == 1}
        self._automaton = ahocorasick.Automaton()
        for key, classes in self.lemmas.items():
            self._automaton.add_word(f" {key} ", classes)
        if self.lemmas:
            self._automaton.make_automaton()

    def match(self, caption: str) -> tuple[int, ...]:
        """The sorted classes whose lemmas occur in ``caption`` (empty when none)."""
        if not self.lemmas:
            return ()
        found = None
        for _, classes in self._automaton.iter(f" {_NON_WORD.sub(' ', caption.lower()).strip()} "):
            if found is None:
                found = set(classes)
            else:
                found.update(classes)
        return tuple(sorted(found)) if found else ()
