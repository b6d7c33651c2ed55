"""Build the sample dataset shipped in dist_data/data/ from the WordNet 3.0 database.

    python scripts/make_sample_data.py            # writes dist_data/data/wordnet_pairs.jsonl.gz

Each row is a (query, document) pair: a synset's first lemma and its definition, with the synset
id and part of speech. 5,000 synsets are drawn with a fixed seed across all parts of speech, so
the file is reproducible byte for byte. WordNet's license is in dist_data/data/WORDNET_LICENSE.
"""

import gzip
import json
import random

from dist_data.wordnet import SAMPLE_PAIRS, iter_synsets

N_PAIRS = 5000


def main() -> None:
    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    picked = sorted(random.Random(0).sample(range(len(synsets)), N_PAIRS))
    with open(SAMPLE_PAIRS, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for i in picked:
            s = synsets[i]
            row = {"query": s.lemmas[0], "document": s.definition, "synset": s.id, "pos": s.pos}
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"wrote {N_PAIRS} pairs from {len(synsets)} synsets to {SAMPLE_PAIRS}")


if __name__ == "__main__":
    main()
