"""Build the sample datasets shipped in dist_data/data/ from the WordNet 3.0 database.

    python scripts/make_sample_data.py    # writes dist_data/data/wordnet_pairs.jsonl.gz, wordnet_text.jsonl.gz
                                          # and imagenet_classes.json

wordnet_pairs: each row is a (query, document) pair: a synset's first lemma and its definition,
with the synset id and part of speech. 5,000 synsets are drawn with a fixed seed across all parts
of speech.

wordnet_text: 2,000 documents ``{"id", "text"}`` for pretokenization, each a run of consecutive
synsets of one part of speech written as "lemma, lemma: definition; "example"." lines; runs of
1 to 80 synsets give documents from a few tokens to a few thousand.

imagenet_classes: the 1,000 ILSVRC classes (label, wnid, CLIP class name from ``imagenet-classes``,
WordNet lemmas and definition), one class per line; see dist_data.caption.classes.

All are reproducible byte for byte. WordNet's license is in dist_data/data/WORDNET_LICENSE.
"""

import gzip
import json
import random

from dist_data.caption.classes import CLASS_TABLE, build_class_table
from dist_data.text.wordnet import SAMPLE_PAIRS, SAMPLE_TEXT, iter_synsets

N_PAIRS = 5000
N_DOCS = 2000


def write_gz(path: str, rows) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def text_documents():
    rng = random.Random(1)
    synsets = list(iter_synsets(pos="nvar"))
    start = 0
    for i in range(N_DOCS):
        n = min(80, int(rng.expovariate(1 / 12)) + 1)
        start = (start + rng.randrange(200)) % (len(synsets) - n)
        lines = []
        for s in synsets[start : start + n]:
            examples = "".join(f' "{e}".' for e in s.examples)
            lines.append(f"{', '.join(s.lemmas)}: {s.definition}.{examples}")
        start += n
        yield {"id": i, "text": "\n".join(lines)}


def main() -> None:
    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    picked = sorted(random.Random(0).sample(range(len(synsets)), N_PAIRS))
    write_gz(SAMPLE_PAIRS, ({"query": synsets[i].lemmas[0], "document": synsets[i].definition,
                             "synset": synsets[i].id, "pos": synsets[i].pos} for i in picked))
    print(f"wrote {N_PAIRS} pairs from {len(synsets)} synsets to {SAMPLE_PAIRS}")
    write_gz(SAMPLE_TEXT, text_documents())
    print(f"wrote {N_DOCS} documents to {SAMPLE_TEXT}")
    table = build_class_table()
    with open(CLASS_TABLE, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in table) + "\n]\n")
    print(f"wrote {len(table)} ImageNet classes to {CLASS_TABLE}")


if __name__ == "__main__":
    main()
