"""Benchmark ``dist_data.pretokenize`` against the floor (the fast tokenizer's own batched
``__call__`` on the same texts) and the usual ``datasets.map(batched=True, num_proc=2)`` packing.

    python bench/pretokenize.py                     # 30,000 WordNet documents
    python bench/pretokenize.py --n_docs=100000 --repeats=3

Each command is its own process under ``/usr/bin/time -v`` (wall time including start-up, peak RSS
of the largest process); tokens/s = the dataset's tokens / wall. A second size (4x the documents)
shows that pretokenize's memory does not grow with the dataset. Prints tables, writes
bench/results/pretokenize.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from common import run_all, table, write_report

FLOOR = r"""
import json, sys
from dist_data.pretokenize import load_tokenizer
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
tok = load_tokenizer(None, None)
n = 0
for s in range(0, len(texts), 1000):
    n += sum(len(i) for i in tok(texts[s : s + 1000], add_special_tokens=False)["input_ids"])
print(json.dumps({"tokens": n}))
"""
DATASETS_MAP = r"""
import sys
import datasets
from dist_data.pretokenize import load_tokenizer
path, out, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = load_tokenizer(None, None)
ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=out + "/cache")
ds = ds.map(lambda b: tok(b["text"]), batched=True, num_proc=2, remove_columns=ds.column_names)

def group(batch):  # the run_mlm recipe: concatenate, cut into seq_len blocks
    ids = [t for row in batch["input_ids"] for t in row]
    n = len(ids) // seq_len * seq_len
    return {"input_ids": [ids[i : i + seq_len] for i in range(0, n, seq_len)],
            "attention_mask": [[1] * seq_len for _ in range(0, n, seq_len)]}

ds = ds.map(group, batched=True, num_proc=2, remove_columns=ds.column_names)
ds.save_to_disk(out + "/dataset")
"""


def make_docs(n_docs: int, path: str) -> None:
    """WordNet documents: runs of 1-40 consecutive synsets, cycling over the whole database."""
    import random

    from dist_data.text.wordnet import iter_synsets

    rng = random.Random(0)
    synsets = list(iter_synsets())
    at = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            k = rng.randint(1, 40)
            run = [synsets[(at + j) % len(synsets)] for j in range(k)]
            at += k
            text = "\n".join(f"{', '.join(s.lemmas)}: {s.definition}." for s in run)
            f.write(json.dumps({"text": text}) + "\n")


def main(n_docs: int = 30000, seq_len: int = 512, repeats: int = 1) -> None:
    work = tempfile.mkdtemp(prefix="bench-tok-")
    py = sys.executable
    report = {"seq_len": seq_len, "sizes": []}
    for size in (n_docs, 4 * n_docs):
        data = os.path.join(work, f"docs-{size}.jsonl")
        make_docs(size, data)
        out = os.path.join(work, "out")
        ours = ["-m", "dist_data.pretokenize", f"--dataset={data}", f"--seq_len={seq_len}", "--progress=False"]
        commands = {
            "floor: fast tokenizer __call__ (1 process)": [py, "-c", FLOOR, data],
            "datasets.map(batched, num_proc=2) + group_texts": [py, "-c", DATASETS_MAP, data, out, str(seq_len)],
            "dist_data.pretokenize, 1 process": [py, *ours],
            "dist_data.pretokenize, torchrun 2 ranks": [py, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc-per-node=2", *ours],
        }
        if size != n_docs:  # the larger size: memory only
            commands = {k: v for k, v in commands.items() if "dist_data" in k}

        def prepare(name, cmd):
            shutil.rmtree(out, ignore_errors=True)
            return cmd + [f"--output_dir={out}"] if "dist_data" in name else cmd

        results = run_all(commands, repeats, prepare)
        tokens = json.loads(run_all({"count": [py, "-c", FLOOR, data]}, 1)["count"][0]["stdout"])["tokens"]
        first = next(iter(commands))
        rows = table(results, first, f"pretokenize: {size:,} WordNet documents, {tokens:,} tokens, seq_len {seq_len}")
        for r in rows:
            r["tokens_per_s"] = round(tokens / r["wall_s"])
            print(f"  {r['command']}: {r['tokens_per_s']:,} tokens/s")
        report["sizes"].append({"n_docs": size, "tokens": tokens, "rows": rows})
    path = write_report("pretokenize", report)
    print(f"\nwrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
