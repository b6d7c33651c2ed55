"""Where ``laionet label --rule=laionet`` (LAIONet's label_laion.py) and the default rule disagree.

    python scripts/laionet_rule_differences.py [TEXTS.jsonl[.gz] [KEY]]

Labels every text with both rules (the default with its unique lemmas, as ``laionet label`` runs
it) and prints the table in docs/laionet.md: each (text, class) label that one rule gives and the other does
not, counted once under its cause. Without arguments it reads the shipped sample
``dist_data/data/wordnet_text.jsonl.gz`` (2,000 texts of WordNet glosses and examples, with line
breaks). ``tests/test_laionet.py`` checks that the table in docs/laionet.md is this script's output.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from dist_data.caption.classes import LAIONET_ABSENT, imagenet_classes, laionet_class_list  # noqa: E402
from dist_data.caption.lemmas import ASCII_PUNCTUATION, LaionetMatcher, LemmaMatcher, normalize  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(HERE), "dist_data", "data", "wordnet_text.jsonl.gz")
# the causes, in the order a label is attributed to them (the first that explains it)
CAUSES = {
    "class_list": "Class list: 999 classes, no construction crane, so `crane` is the bird's",
    "case_twins": "Lemmas of two classes that differ only in case count: `Cardigan` the corgi, `cardigan` the sweater",
    "punctuated_lemma": "A lemma holding ASCII punctuation (64 of them: `T-shirt`, `jack-o'-lantern`, `R.V.`) never matches",
    "case": "Case-sensitive: `siberian husky` is not `Siberian husky`",
    "separators": "Only ASCII punctuation and one space separate words (not `\u2019`, `\u2014`, a line break, two spaces)",
}


def read_texts(path: str, key: str = "text") -> list[str]:
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def _cause(text: str, lemmas: tuple[str, ...], only_laionet: bool, ours: LemmaMatcher) -> str:
    if only_laionet:  # the default rule finds every lemma LAIONet's finds, so this one it does not count
        return "class_list" if "crane" in lemmas else "case_twins"
    words = f" {normalize(text)} "
    found = [lemma for lemma in lemmas if normalize(lemma) in ours.lemmas and f" {normalize(lemma)} " in words]
    plain = [lemma for lemma in found if lemma.translate(ASCII_PUNCTUATION) == lemma]
    if not plain:
        return "punctuated_lemma"
    if any(f" {lemma.lower()} " in f" {text.translate(ASCII_PUNCTUATION).lower()} " for lemma in plain):
        return "case"
    return "separators"


def differences(texts: list[str]) -> dict:
    """Counts per cause of labels only one rule gives, and the totals."""
    classes = imagenet_classes()
    ours = LemmaMatcher([c.lemmas for c in classes], unique_only=True)
    theirs = LaionetMatcher([lemmas for _, lemmas in laionet_class_list()])
    only_ours, only_laionet, both = Counter(), Counter(), 0
    husky = next(c.label for c in classes if c.wnid == "n02110185")
    husky_rows = 0
    for text in texts:
        a, b = set(ours.match(text)), set(theirs.match(text))
        both += len(a & b)
        husky_rows += husky in b
        for label in a - b:
            only_ours[_cause(text, classes[label].lemmas, False, ours)] += 1
        for label in b - a:
            only_laionet[_cause(text, classes[label].lemmas, True, ours)] += 1
    assert not any(c.wnid == LAIONET_ABSENT and c.label in only_laionet for c in classes)
    return {"texts": len(texts), "both": both, "only_default": dict(only_ours), "only_laionet": dict(only_laionet),
            "siberian_husky_rows": husky_rows}


def table(result: dict) -> str:
    lines = ["| LAIONet's rule differs in | labels only the default gives | labels only LAIONet's gives |",
             "|---|---:|---:|"]
    for key, text in CAUSES.items():
        lines.append(f"| {text} | {result['only_default'].get(key, 0):,} | {result['only_laionet'].get(key, 0):,} |")
    lines.append(f"| Both rules | {result['both']:,} | {result['both']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else SAMPLE
    result = differences(read_texts(path, sys.argv[2] if len(sys.argv) > 2 else "text"))
    print(table(result))
    print(f"\n{result['texts']:,} texts; {result['siberian_husky_rows']:,} labelled Siberian husky, which "
          f"LAIONet's rule writes as n02112837")
