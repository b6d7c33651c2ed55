"""Benchmark semantic deduplication (``dist_data.dedup``) against what users run today.

    python bench/dedup.py                       # 20,000, 100,000 and 300,000 rows
    python bench/dedup.py --sizes=20000 --threshold=0.9

Rows: WordNet glosses and example sentences (``lemma: gloss`` and the examples as they are), a
seeded sample, plus 10% near-duplicates made by known edits (case, punctuation, a dropped word) and
WordNet's own repeated glosses (past 165,906 rows, WordNet's glosses and examples run out: each
synset's other lemmas with its gloss and the bare glosses join them, real near-duplicates of their
synset's gloss, so the 300,000-row set is denser in duplicates). The same rows and encoder (the shipped all-MiniLM-L6-v2) for every
method; whole commands, wall time with start-up and peak RSS (``/usr/bin/time -v``):

- floor: load the model and encode every distinct text (what any method must compute);
- SemHash (``pip install semhash``), given our encoder: exact duplicates, then its ANN threshold
  query (usearch) and greedy selection;
- NeMo-Curator's SemDeDup rule, simulated: k-means over the embeddings with its defaults (1,000
  clusters, 100 iterations; faiss), pairs compared only inside a cluster;
- dist_data.dedup, one process and torchrun with 2 ranks (``--index=sharded``).

Quality, against exact search over all pairs (faiss' exact range search on the same vectors): the
pairs at or above the threshold whose two rows both survive ("missed pairs"; 0 means every
duplicate found) and the rows removed. Prints a table per size and writes bench/results/dedup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np
from common import HERE, fresh_output, run_all, table, write_report

sys.path.insert(0, os.path.dirname(HERE))

SEMHASH = "SemHash 0.5 (our encoder)"
NEMO = "NeMo SemDeDup rule (k-means, pairs inside clusters)"


def rows(n: int, seed: int = 0) -> list[str]:
    from dist_data.core.wordnet import iter_synsets

    texts, more = [], []
    for s in iter_synsets(pos="nvar"):
        texts.append(f"{s.lemmas[0].replace('_', ' ')}: {s.definition}")
        texts += s.examples
        more += [f"{lemma.replace('_', ' ')}: {s.definition}" for lemma in s.lemmas[1:]] + [s.definition]
    if int(n * 0.9) > len(texts):  # past WordNet's 165,906 glosses and examples: the other lemmas, bare glosses
        texts += more
    rng = random.Random(seed)
    base = rng.sample(texts, int(n * 0.9))
    edits = []
    for i, t in enumerate(rng.sample(base, n - len(base))):
        words = t.split()
        if i % 3 == 0:
            edits.append(t.upper())
        elif i % 3 == 1:
            edits.append(t.rstrip(".") + "!")
        elif len(words) > 4:
            del words[rng.randrange(1, len(words))]
            edits.append(" ".join(words))
        else:
            edits.append(t + " .")
    out = base + edits
    rng.shuffle(out)
    return out


def encoder(vectors: str | None = None):
    """The shipped MiniLM (normalised vectors); with ``vectors`` (the floor's file), a table look-up
    of the floor's vectors instead, so that a method's time is its own work without the encoding."""
    if vectors:
        with np.load(vectors) as z:
            emb = z["emb"]
        with open(vectors + ".texts.json", encoding="utf-8") as f:
            table = {t: i for i, t in enumerate(json.load(f))}

        class Lookup:
            def encode(self, inputs, **kwargs):
                return emb[[table[t] for t in inputs]]

        return Lookup()
    import torch

    from dist_data.core.embed import load_model

    model = load_model(None, torch.device("cpu"))

    class Encoder:  # SemHash's protocol: encode(inputs) -> (n, d) array
        def encode(self, inputs, **kwargs):
            return model.encode(list(inputs), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    return Encoder()


def read(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def floor(path: str, out: str) -> None:
    texts = read(path)
    distinct = list(dict.fromkeys(texts))
    emb = encoder().encode(distinct)
    np.savez(out, emb=emb.astype(np.float32))
    with open(out + ".texts.json", "w", encoding="utf-8") as f:
        json.dump(distinct, f)


def semhash(path: str, out: str, threshold: float, vectors: str | None = None) -> None:
    from semhash import SemHash

    texts = read(path)
    result = SemHash.from_records(texts, model=encoder(vectors)).self_deduplicate(threshold=threshold)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(list(result.selected), f)


def nemo(path: str, out: str, threshold: float, vectors: str | None = None) -> None:
    """NeMo-Curator's SemDeDup, as its defaults run it: k-means (1,000 clusters, 100 iterations) over
    the normalised embeddings, then inside each cluster every pair >= threshold (eps = 1 - threshold):
    of each such group one row is kept (the first); rows of different clusters are never compared."""
    import faiss

    texts = read(path)
    distinct = list(dict.fromkeys(texts))
    emb = encoder(vectors).encode(distinct).astype(np.float32)
    k = min(1000, len(distinct))
    km = faiss.Kmeans(emb.shape[1], k, niter=100, seed=1234, spherical=True)
    km.train(emb)
    _, assign = km.index.search(emb, 1)
    keep = np.ones(len(distinct), dtype=bool)
    for c in range(k):
        members = np.flatnonzero(assign[:, 0] == c)
        if len(members) < 2:
            continue
        sims = emb[members] @ emb[members].T
        for i in range(len(members)):  # greedy: a row similar to an earlier kept row of its cluster goes
            if keep[members[i]] and i:
                earlier = members[:i][keep[members[:i]]]
                if len(earlier) and (sims[i, np.searchsorted(members, earlier)] >= threshold).any():
                    keep[members[i]] = False
    with open(out, "w", encoding="utf-8") as f:
        json.dump([t for t, k_ in zip(distinct, keep) if k_], f)


def pairs_at(emb: np.ndarray, threshold: float) -> np.ndarray:
    """Every pair (i < j) of rows whose cosine is >= threshold, by faiss' exact range search."""
    import faiss

    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, _, ids = index.range_search(emb, threshold)
    q = np.repeat(np.arange(len(emb)), np.diff(lims.astype(np.int64)))
    both = np.stack([q, ids.astype(np.int64)], axis=1)
    return both[both[:, 1] > both[:, 0]]


def missed_pairs(pairs: np.ndarray, distinct: list[str], kept: set[str]) -> tuple[int, int]:
    """(pairs >= threshold in all, pairs whose both texts were kept)."""
    alive = np.asarray([t in kept for t in distinct])
    return len(pairs), int((alive[pairs[:, 0]] & alive[pairs[:, 1]]).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,100000,300000")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--reuse_vectors", action="store_true",
                        help="encode once: SemHash and the NeMo rule look up the floor's vectors, the 2-rank run "
                             "reads the 1-process run's embedding cache (their times are then without encoding)")
    parser.add_argument("--_vectors", help=argparse.SUPPRESS)
    parser.add_argument("--_floor", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_semhash", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_nemo", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._floor:
        return floor(*args._floor)
    if args._semhash:
        return semhash(*args._semhash, args.threshold, args._vectors)
    if args._nemo:
        return nemo(*args._nemo, args.threshold, args._vectors)

    report = {"model": "sentence-transformers/all-MiniLM-L6-v2", "threshold": args.threshold, "sizes": []}
    reused = " (floor's vectors)" if args.reuse_vectors else ""
    for n in [int(s) for s in args.sizes.split(",")]:
        work = tempfile.mkdtemp(prefix="bench-dedup-")
        try:
            data = os.path.join(work, "rows.jsonl")
            with open(data, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t}) + "\n" for t in rows(n))
            vectors = os.path.join(work, "floor.npz")
            ours = ["-m", "dist_data.dedup", f"--dataset={data}", f"--threshold={args.threshold}", "--noprogress"]
            given = [f"--_vectors={vectors}"] if args.reuse_vectors else []
            if args.reuse_vectors:
                ours.append(f"--cache_dir={os.path.join(work, 'cache')}")
            commands = {
                "floor: encode every distinct text": [sys.executable, __file__, "--_floor", data, vectors],
                SEMHASH + reused: [sys.executable, __file__, f"--threshold={args.threshold}", *given, "--_semhash",
                                   data, os.path.join(work, "semhash.json")],
                NEMO + reused: [sys.executable, __file__, f"--threshold={args.threshold}", *given, "--_nemo", data,
                                os.path.join(work, "nemo.json")],
                "dist_data.dedup, 1 process": [sys.executable, *ours],
                "dist_data.dedup, torchrun 2 ranks sharded" + (" (1 process's embedding cache)" if reused else ""):
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *ours,
                     "--index=sharded"],
            }
            results = run_all(commands, args.repeats, fresh_output(work))
            rows_ = table(results, "floor: encode every distinct text", f"dedup at >= {args.threshold}, {n:,} rows")
            with np.load(vectors) as z:
                emb = z["emb"]
            with open(vectors + ".texts.json", encoding="utf-8") as f:
                distinct = json.load(f)
            kept = {"dist_data.dedup": set(read_out(os.path.join(work, "out", "deduplicated.jsonl")))}
            for name, file in ((SEMHASH + reused, "semhash.json"), (NEMO + reused, "nemo.json")):
                with open(os.path.join(work, file), encoding="utf-8") as f:
                    kept[name] = set(json.load(f))
            quality = {}
            pairs = pairs_at(emb, args.threshold)
            for name, survivors in kept.items():
                total, missed = missed_pairs(pairs, distinct, survivors)
                quality[name] = {"pairs_at_threshold": total, "missed_pairs": missed,
                                 "pair_recall": round(1 - missed / max(total, 1), 4),
                                 "texts_kept": len(survivors)}
                print(f"{name}: {missed:,} of {total:,} pairs >= {args.threshold} left with both texts "
                      f"(recall {quality[name]['pair_recall']:.4f}); {len(survivors):,} texts kept")
            report["sizes"].append({"rows": n, "commands": rows_, "quality": quality})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report["sizes"] = merged_sizes(report)
    path = write_report("dedup", report)
    print(f"\nwrote {path}")


def merged_sizes(report: dict) -> list[dict]:
    """This run's sizes with the earlier result's other sizes (same model and threshold), by rows."""
    path = os.path.join(HERE, "results", "dedup.json")
    earlier = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if (old.get("model"), old.get("threshold")) == (report["model"], report["threshold"]):
            earlier = old.get("sizes", [])
    done = {s["rows"] for s in report["sizes"]}
    return sorted([s for s in earlier if s["rows"] not in done] + report["sizes"], key=lambda s: s["rows"])


def read_out(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


if __name__ == "__main__":
    main()
