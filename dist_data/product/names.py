"""Product and brand names: their normal form, Latin <-> Cyrillic transliteration variants, and a
character-level likeness. Pure functions, no files and no torch."""

from __future__ import annotations

import difflib
import itertools
import re
import unicodedata
from typing import Sequence

# Trademark signs are not part of a name: dropped before NFKC, which would spell "™" as "TM".
_MARKS = str.maketrans("", "", "\u2122\u00ae\u00a9\u2120")  # ™ ® © ℠
# Punctuation is a space, except "+" and "#" attached to a letter, digit or each other: they make
# names ("C++", "C#", "A+", "1+1"); alone ("A + B") they are spaces too.
_PUNCT = re.compile(r"[^\w\s+#]|_", re.UNICODE)
_LONE_SIGNS = re.compile(r"(?<![\w+#])[+#]+(?![\w+#])", re.UNICODE)
# Signs set apart from the word before them by spaces ("C ++", "C #"): read as attached (_attach_signs).
_SPACED_SIGNS = re.compile(r"([\w+#])\s+([+#]+)(?=\s|$)", re.UNICODE)

# Per-letter options, the most common reading first. Latin letters read as Cyrillic ones the way
# brand names are written in Russian (c -> к or ц, g -> г or дж, s -> с or з, x -> кс or з).
LATIN_TO_CYRILLIC: dict[str, tuple[str, ...]] = {
    "a": ("а", "э"), "b": ("б",), "c": ("к", "ц", "с"), "d": ("д",), "e": ("е", "э", ""), "f": ("ф",),
    "g": ("г", "дж"), "h": ("х", ""), "i": ("и", "ай"), "j": ("дж", "й"), "k": ("к",), "l": ("л",),
    "m": ("м",), "n": ("н",), "o": ("о",), "p": ("п",), "q": ("к",), "r": ("р",), "s": ("с", "з"),
    "t": ("т",), "u": ("у", "ю", "а"), "v": ("в",), "w": ("в", "у"), "x": ("кс", "з"), "y": ("и", "й", "ы"),
    "z": ("з", "ц"),
}
# Latin letter pairs read as one Cyrillic letter (tried before the single letters).
LATIN_PAIRS: dict[str, tuple[str, ...]] = {
    "sh": ("ш",), "ch": ("ч", "к"), "zh": ("ж",), "ts": ("ц",), "kh": ("х",), "ph": ("ф",), "th": ("т",),
    "oo": ("у",), "ee": ("и",), "ya": ("я",), "yu": ("ю",), "yo": ("ё", "йо"), "ck": ("к",),
}
CYRILLIC_TO_LATIN: dict[str, tuple[str, ...]] = {
    "а": ("a",), "б": ("b",), "в": ("v", "w"), "г": ("g",), "д": ("d",), "е": ("e",), "ё": ("e", "yo"),
    "ж": ("zh", "j"), "з": ("z", "s"), "и": ("i",), "й": ("y", "i"), "к": ("k", "c"), "л": ("l",), "м": ("m",),
    "н": ("n",), "о": ("o",), "п": ("p",), "р": ("r",), "с": ("s", "c"), "т": ("t",), "у": ("u",),
    "ф": ("f",), "х": ("h", "kh"), "ц": ("ts", "c"), "ч": ("ch",), "ш": ("sh",), "щ": ("shch", "sch"),
    "ъ": ("",), "ы": ("y",), "ь": ("",), "э": ("e",), "ю": ("yu", "u"), "я": ("ya",),
}


def normalize_name(text: str) -> str:
    """The identity of a name: trademark signs (™ ® © ℠) dropped, Unicode NFKC, case folded,
    punctuation as space except ``+`` and ``#`` that belong to a word, whitespace collapsed.

    >>> normalize_name("  Coca-Cola\\u00a0ZERO! "), normalize_name("Samsung\\u2122"), normalize_name("C++ / C#")
    ('coca cola zero', 'samsung', 'c++ c#')
    >>> normalize_name("A + B"), normalize_name("\\uff23\\uff0b\\uff0b"), normalize_name("C ++"), normalize_name("C")
    ('a b', 'c++', 'c++', 'c')
    """
    text = _PUNCT.sub(" ", unicodedata.normalize("NFKC", text.translate(_MARKS)).casefold())
    return " ".join(_LONE_SIGNS.sub(" ", _SPACED_SIGNS.sub(_attach_signs, text)).split())


def _attach_signs(m: re.Match) -> str:
    """``C ++``, ``F #``, ``A +`` (at the end): the signs are the name's, as in ``C++``; a lone ``+``
    between two words (``A + B``) is not."""
    signs, rest = m.group(2), m.string[m.end():]
    if len(signs) > 1 or "#" in signs or not rest.strip():
        return m.group(1) + signs
    return m.group(0)


def most_frequent_spelling(counts: dict[str, int]) -> str:
    """The spelling a name is embedded and written as: its most frequent one, ties to the smallest
    (code point order), so it depends on the rows, not on their order.

    >>> most_frequent_spelling({"Nike": 2, "NIKE": 1, "nike": 2})
    'Nike'
    """
    return min(counts, key=lambda s: (-counts[s], s))


def _options(name: str, table: dict[str, tuple[str, ...]],
             pairs: dict[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Each position's readings: a letter pair of ``pairs`` is one position; other characters stay."""
    out, i = [], 0
    while i < len(name):
        two = name[i : i + 2]
        if len(two) == 2 and two in pairs:
            out.append(pairs[two] + tuple(a + b for a in table.get(two[0], (two[0],))
                                          for b in table.get(two[1], (two[1],)))[:1])
            i += 2
            continue
        out.append(table.get(name[i], (name[i],)))
        i += 1
    return out


def _fewest_changes_first(options: list[tuple[str, ...]]):
    """Every combination of one reading per position, ordered by how many positions leave their first reading."""
    ambiguous = [i for i, o in enumerate(options) if len(o) > 1]
    for n_changed in range(len(ambiguous) + 1):
        for where in itertools.combinations(ambiguous, n_changed):
            for alternatives in itertools.product(*(options[i][1:] for i in where)):
                combo = [o[0] for o in options]
                for i, alt in zip(where, alternatives):
                    combo[i] = alt
                yield combo


def transliterations(name: str, max_variants: int = 32) -> list[str]:
    """Latin <-> Cyrillic readings of a normalised name, at most ``max_variants``, the name itself
    excluded, in a fixed order: every position's most common reading first, then the readings that
    change one position (left to right), two positions, and so on.

    A name with Latin letters gets Cyrillic readings, one with Cyrillic letters Latin ones (a mixed
    name gets both, each script converted on its own). Characters of neither script stay as they are.

    >>> transliterations("nike", 4)
    ['нике', 'найке', 'никэ', 'ник']
    """
    variants: list[str] = []
    seen = {name}
    for table, pairs in ((LATIN_TO_CYRILLIC, LATIN_PAIRS), (CYRILLIC_TO_LATIN, {})):
        if not any(c in table for c in name):
            continue
        for combo in _fewest_changes_first(_options(name, table, pairs)):
            text = " ".join("".join(combo).split())
            if text not in seen:
                seen.add(text)
                variants.append(text)
                if len(variants) >= max_variants:
                    return variants
    return variants


def char_ratio(a: str, b: str) -> float:
    """Character-level likeness in [0, 1] (difflib's ratio of the normalised texts)."""
    return difflib.SequenceMatcher(None, normalize_name(a), normalize_name(b), autojunk=False).ratio()


def char_ratios(pairs: Sequence[tuple[str, str]]) -> list[float]:
    return [char_ratio(a, b) for a, b in pairs]
