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

``unique_only``: only lemmas that belong to exactly one of the classes count (after normalisation,
so "Cardigan" the corgi and "cardigan" the sweater are one shared lemma).

:class:`LaionetMatcher` is LAIONet's own rule, exactly as its ``label_laion.py`` labels (for users
who reproduce its tables): the caption's ASCII punctuation (``string.punctuation``) becomes spaces,
nothing else changes (no lowercasing; other characters, tabs and line breaks stay), and a lemma
matches when ``" " + lemma + " "`` occurs in ``" " + caption + " "``. Its lemmas are those written
exactly once in its class list (so "Cardigan" and "cardigan" are two unique lemmas), and a lemma
holding ASCII punctuation ("T-shirt", "jack-o'-lantern", "R.V.") can never match.

The automaton (``pyahocorasick``, Aho-Corasick over the normalised lemmas with their spaces) finds
every occurrence of every lemma in time linear in the caption, whatever the number of lemmas: the
cost per caption is one lowercase, one regex substitution and one scan.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Lowercase, every run of non-alphanumeric characters -> one space, stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


ASCII_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def _automaton(keys: dict[str, object]):
    try:
        import ahocorasick
    except ImportError:
        raise ImportError("caption labelling needs pyahocorasick: pip install 'dist_data[captions]'") from None
    automaton = ahocorasick.Automaton()
    for key, value in keys.items():
        automaton.add_word(key, value)
    if keys:
        automaton.make_automaton()
    return automaton


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
        table = lemma_classes(class_lemmas)
        self.shared = {k: v for k, v in table.items() if len(v) > 1}
        self.lemmas = {k: v for k, v in table.items() if not unique_only or len(v) == 1}
        self._automaton = _automaton({f" {key} ": classes for key, classes in self.lemmas.items()})

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


class LaionetMatcher:
    """LAIONet's ``label_laion.py`` rule (see the module's docstring): case-sensitive, ASCII
    punctuation the only separator besides the space, lemmas written once in the class list.

    ``class_lemmas`` is the class list, one lemma list per class; a class absent from LAIONet's list
    has an empty one.

    Example:
        >>> m = LaionetMatcher([["Cardigan", "corgi"], ["cardigan"], ["T-shirt", "tee shirt"], ["crane"]])
        >>> m.match("a cardigan, a Corgi, a crane."), m.match("a T-shirt"), m.match("a Cardigan\u2019s tee  shirt")
        ((1, 3), (), ())
    """

    def __init__(self, class_lemmas: Sequence[Sequence[str]]):
        written = Counter(lemma for lemmas in class_lemmas for lemma in lemmas)
        self.lemmas = {lemma: c for c, lemmas in enumerate(class_lemmas) for lemma in lemmas if written[lemma] == 1}
        self.shared = sorted(lemma for lemma, n in written.items() if n > 1)
        # never found: the caption's ASCII punctuation is gone before the search
        self.never = sorted(lemma for lemma in self.lemmas if lemma.translate(ASCII_PUNCTUATION) != lemma)
        never = set(self.never)
        self._automaton = _automaton({f" {lemma} ": c for lemma, c in self.lemmas.items() if lemma not in never})
        self._searched = len(self.lemmas) > len(never)

    def match(self, caption: str) -> tuple[int, ...]:
        """The sorted classes whose lemmas ``label_laion.py`` finds in ``caption`` (empty when none)."""
        if not self._searched:
            return ()
        return tuple(sorted({c for _, c in self._automaton.iter(f" {caption.translate(ASCII_PUNCTUATION)} ")}))
