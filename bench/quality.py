"""Does it train a better model? Each data recipe, made by our verbs as a user runs them, finetunes the
shipped all-MiniLM-L6-v2 with sentence-transformers' own trainer, then retrieval is scored on held-out
synsets with sentence-transformers' ``InformationRetrievalEvaluator``.

    python bench/quality.py --quick                 # one seed, one task: a check
    python bench/quality.py                         # 3 seeds, both tasks (about 70 minutes on 2 cores)
    python bench/quality.py --recipes=raw,noisy,filter_k2 --seeds=0,1,2

Tasks (real WordNet text; held-out synsets never seen in training; the corpus padded with the glosses
of distractor synsets):

- ``lemma``: query = a synset's first lemma, document = its gloss;
- ``example``: query = one of the synset's example sentences, document = its gloss.

Recipes (each a training set written by a verb, in the layout sentence-transformers trains on):

- ``base``: no training (the floor);
- ``raw``: the clean (query, gloss) pairs;
- ``noisy``: the same pairs with ``--noise`` of the positives swapped for another pair's (web pairs);
- ``filter_k1``, ``filter_k2``, ``filter_k5``: the noisy pairs after ``dist_data.filter --k=K``;
- ``mine_top``: raw pairs + 1 mined negative (``dist_data.mine``, top-ranked);
  ``mine_skip``: ``--range_min=3`` (the nearest few skipped); ``mine_margin``: ``--relative_margin=0.05``;
  ``mine_abs``: ``--absolute_margin=0.05``; ``mine_random``: one drawn from ranks 3-30; ``mine_3neg``: three
  negatives (n-tuple); ``mine_ce``: rescored by ``--cross_encoder`` (only when one is given);
- ``raw_cached``: the raw pairs with ``CachedMultipleNegativesRankingLoss`` (only when named);
- ``contaminated``: raw pairs + ``--contamination`` of the test pairs planted in them;
  ``decontaminated``: that set after ``dist_data.dedup --against=TEST`` (the test queries).

The first task runs every recipe, the others :data:`CORE`. Every recipe trains with the same steps,
batch size, learning rate and loss (``MultipleNegativesRankingLoss``; negative columns are its hard
negatives), for each
seed (training order and the noise draw). Reported: nDCG@10, MRR@10 and Recall@100 as mean ± std
over the seeds, the rows used, the training time, and the difference to ``raw`` with its spread
("within noise" when the means differ by less than the larger std). Writes
bench/results/quality.json and docs/quality.png; each result is appended to ``--log`` as it is made
and reused by the same command (a killed run resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from bench.common import write_report  # noqa: E402

MINE = {"mine_top": ["--num_negatives=1"],
        "mine_skip": ["--num_negatives=1", "--range_min=3"],
        "mine_margin": ["--num_negatives=1", "--relative_margin=0.05"],
        "mine_abs": ["--num_negatives=1", "--absolute_margin=0.05"],
        "mine_random": ["--num_negatives=1", "--range_min=3", "--range_max=30", "--sampling_strategy=random"],
        "mine_3neg": ["--num_negatives=3", "--output_format=n-tuple"],
        "mine_ce": ["--num_negatives=1"]}  # + --cross_encoder=PATH, only where one is given
RECIPES = ("base", "raw", "noisy", "filter_k1", "filter_k2", "filter_k5", "mine_top", "mine_skip",
           "mine_margin", "mine_abs", "mine_random", "mine_3neg", "contaminated", "decontaminated")
# raw_cached (CachedMultipleNegativesRankingLoss on the raw pairs: the same objective in mini-batches) runs
# when asked for by name. The second task repeats the recipes behind each headline (filter, mine,
# decontamination) on a second shape of data.
CORE = ("base", "raw", "noisy", "filter_k2", "mine_top", "mine_margin", "contaminated", "decontaminated")
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def task_data(task: str, n_train: int, n_test: int, n_distractors: int, seed: int = 0) -> dict:
    """Train pairs, test queries and the evaluation corpus from WordNet (synsets split once, by seed 0)."""
    from dist_data.text.wordnet import iter_synsets

    synsets = [s for s in iter_synsets(pos="nv") if len(s.definition) > 10]
    if task == "example":
        synsets = [s for s in synsets if s.examples]
    glosses: dict[str, str] = {}
    unique = []
    for s in synsets:  # one synset per gloss: a gloss is one document
        if s.definition not in glosses:
            glosses[s.definition] = s.id
            unique.append(s)
    rng = random.Random(seed)
    rng.shuffle(unique)
    train, test = unique[:n_train], unique[n_train:n_train + n_test]
    distractors = unique[n_train + n_test:n_train + n_test + n_distractors]

    def query(s) -> str:
        return s.lemmas[0].replace("_", " ") if task == "lemma" else s.examples[0]

    return {"task": task, "train": [{"query": query(s), "document": s.definition} for s in train],
            "test": [{"query": query(s), "document": s.definition, "id": s.id} for s in test],
            "corpus": {s.id: s.definition for s in test + distractors}}


def evaluate(model, data: dict) -> dict[str, float]:
    """sentence-transformers' InformationRetrievalEvaluator on the held-out queries."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries = {f"q{i}": r["query"] for i, r in enumerate(data["test"])}
    relevant = {f"q{i}": {r["id"]} for i, r in enumerate(data["test"])}
    evaluator = InformationRetrievalEvaluator(queries, data["corpus"], relevant, name="heldout",
                                              ndcg_at_k=[10], mrr_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[100],
                                              map_at_k=[10], batch_size=64, show_progress_bar=False)
    scores = evaluator(model)
    return {"ndcg@10": scores["heldout_cosine_ndcg@10"], "mrr@10": scores["heldout_cosine_mrr@10"],
            "recall@100": scores["heldout_cosine_recall@100"]}


def _write(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def _verb(module: str, work: str, *flags: str) -> None:
    """Run a verb as a user does; the recipes of one run share its embedding cache (``--cache_dir``), as a
    sweep over settings would."""
    proc = subprocess.run([sys.executable, "-m", module, *flags, f"--cache_dir={work}/cache", "--noprogress"],
                          capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed:\n{proc.stderr[-3000:]}")


def recipe_rows(recipe: str, data: dict, work: str, seed: int, noise: float, contamination: float,
                cross_encoder: str | None = None) -> list[dict]:
    """The training rows of ``recipe`` (written by our verbs where the recipe is a verb's)."""
    rng = random.Random(seed)
    raw = data["train"]
    folder = os.path.join(work, f"{data['task']}-{recipe}-{seed}")
    os.makedirs(folder, exist_ok=True)
    if recipe in ("raw", "raw_cached"):
        return raw
    if recipe == "noisy" or recipe.startswith("filter_"):
        noisy = [dict(r) for r in raw]
        swap = rng.sample(range(len(noisy)), int(noise * len(noisy)))
        docs = [noisy[i]["document"] for i in swap]
        rng.shuffle(docs)
        for i, d in zip(swap, docs):
            noisy[i]["document"] = d
        if recipe == "noisy":
            return noisy
        path = _write(os.path.join(folder, "noisy.jsonl"), noisy)
        _verb("dist_data.filter", work, f"--dataset={path}", f"--output_dir={folder}/out", f"--k={recipe.split('_k')[1]}")
        return [json.loads(line) for line in open(os.path.join(folder, "out", "filtered.jsonl"))]
    if recipe.startswith("mine_"):
        path = _write(os.path.join(folder, "raw.jsonl"), raw)
        extra = MINE[recipe] + ([f"--cross_encoder={cross_encoder}"] if recipe == "mine_ce" else [])
        _verb("dist_data.mine", work, f"--dataset={path}", f"--output_dir={folder}/out", f"--seed={seed}", *extra)
        rows = []
        for r in map(json.loads, open(os.path.join(folder, "out", "mined.jsonl"))):
            negatives = [r[k] for k in sorted(k for k in r if k.startswith("negative"))]
            rows.append({"query": r["anchor"], "document": r["positive"],
                         **{f"negative_{i}": n for i, n in enumerate(negatives, start=1)}})
        return rows
    if recipe in ("contaminated", "decontaminated"):
        planted = rng.sample(data["test"], int(contamination * len(data["test"])))
        rows = raw + [{"query": r["query"], "document": r["document"]} for r in planted]
        rows = [rows[i] for i in rng.sample(range(len(rows)), len(rows))]
        if recipe == "contaminated":
            return rows
        path = _write(os.path.join(folder, "contaminated.jsonl"), rows)
        test = _write(os.path.join(folder, "test.jsonl"), [{"query": r["query"]} for r in data["test"]])
        _verb("dist_data.dedup", work, f"--dataset={path}", f"--output_dir={folder}/out", "--on=query",
              f"--against={test}", "--threshold=0.999")
        return [json.loads(line) for line in open(os.path.join(folder, "out", "deduplicated.jsonl"))]
    raise ValueError(recipe)


def train(rows: list[dict], seed: int, steps: int, batch_size: int, lr: float, work: str, cached: bool = False):
    """The shipped MiniLM finetuned on ``rows`` (MultipleNegativesRankingLoss, or its cached variant with
    ``cached``; ``negative_*`` columns are its hard negatives), ``steps`` steps, seeded."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                   MultipleNegativesRankingLoss)

    from dist_data.core.models import resolve_model

    torch.manual_seed(seed)
    model = SentenceTransformer(resolve_model(None), device="cpu").float()
    columns = ["query", "document"] + sorted(k for k in rows[0] if k.startswith("negative"))
    ds = datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})
    args = SentenceTransformerTrainingArguments(output_dir=os.path.join(work, "trainer"), max_steps=steps,
                                                per_device_train_batch_size=batch_size, learning_rate=lr, seed=seed,
                                                data_seed=seed, report_to=[], save_strategy="no", use_cpu=True,
                                                logging_strategy="no", disable_tqdm=True, dataloader_drop_last=True)
    loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=8) if cached else MultipleNegativesRankingLoss(model)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
    return model


def run(plan: dict[str, list[str]], seeds: list[int], n_train: int, n_test: int, n_distractors: int, steps: int,
        batch_size: int, lr: float, noise: float, contamination: float, work: str, cross_encoder: str | None = None,
        log: str | None = None) -> list[dict]:
    """Every (task, recipe, seed) of ``plan``; each result is appended to ``log`` (JSON lines) as it is made,
    and a result already there is reused: a killed run resumes where it stopped."""
    from sentence_transformers import SentenceTransformer

    from dist_data.core.models import resolve_model

    done = {}
    if log and os.path.exists(log):
        for line in open(log, encoding="utf-8"):
            r = json.loads(line)
            done[(r["task"], r["recipe"], r["seed"])] = r
    results = []
    for task, recipes in plan.items():
        data = task_data(task, n_train, n_test, n_distractors)
        for recipe in recipes:
            for seed in seeds[:1] if recipe == "base" else seeds:  # no training: one seed is every seed
                if (task, recipe, seed) in done:
                    results.append(done[(task, recipe, seed)])
                    continue
                start = time.perf_counter()
                if recipe == "base":
                    model, rows, verbs_s = SentenceTransformer(resolve_model(None), device="cpu").float(), [], 0.0
                else:
                    rows = recipe_rows(recipe, data, work, seed, noise, contamination, cross_encoder)
                    verbs_s = time.perf_counter() - start
                    model = train(rows, seed, steps, batch_size, lr, work, cached=recipe.endswith("_cached"))
                train_s = time.perf_counter() - start - verbs_s
                scores = evaluate(model, data)
                results.append({"task": task, "recipe": recipe, "seed": seed, "rows": len(rows),
                                "verbs_s": round(verbs_s, 1), "train_s": round(train_s, 1),
                                **{m: round(v, 4) for m, v in scores.items()}})
                print(json.dumps(results[-1]), flush=True)
                if log:
                    with open(log, "a", encoding="utf-8") as f:
                        f.write(json.dumps(results[-1]) + "\n")
    return results


def summary(results: list[dict]) -> list[dict]:
    """Mean ± std per (task, recipe), and the difference to ``raw`` with the larger spread of the two."""
    out = []
    for task in dict.fromkeys(r["task"] for r in results):
        by = {}
        for r in results:
            if r["task"] == task:
                by.setdefault(r["recipe"], []).append(r)
        raw = np.array([r["ndcg@10"] for r in by.get("raw", [])])
        for recipe, runs in by.items():
            row = {"task": task, "recipe": recipe, "seeds": len(runs), "rows": int(np.mean([r["rows"] for r in runs])),
                   "verbs_s": round(float(np.mean([r["verbs_s"] for r in runs])), 1),
                   "train_s": round(float(np.mean([r["train_s"] for r in runs])), 1)}
            for m in METRICS:
                v = np.array([r[m] for r in runs])
                row[m] = [round(float(v.mean()), 4), round(float(v.std()), 4)]
            if len(raw) and recipe != "raw":
                v = np.array([r["ndcg@10"] for r in runs])
                diff, spread = float(v.mean() - raw.mean()), max(float(v.std()), float(raw.std()))
                row["vs_raw"] = [round(diff, 4), round(spread, 4)]
                row["within_noise"] = abs(diff) <= spread
            out.append(row)
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        means, stds = [r["ndcg@10"][0] for r in mine], [r["ndcg@10"][1] for r in mine]
        ax.errorbar(range(len(mine)), means, yerr=stds, fmt="o", capsize=4)
        raw = [r["ndcg@10"][0] for r in mine if r["recipe"] == "raw"]
        if raw:
            ax.axhline(raw[0], color="grey", linestyle="--", linewidth=1, label="raw pairs")
            ax.legend(loc="lower right")
        low, high = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
        ax.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
        ax.set_xticks(range(len(mine)), [r["recipe"] for r in mine], rotation=45, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel("nDCG@10 (mean ± std over seeds)")
        ax.set_title(f"task: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, the lemma task, fewer steps")
    parser.add_argument("--tasks", default="lemma,example")
    parser.add_argument("--recipes", default=None,
                        help=f"default: every recipe on the first task, {','.join(CORE)} on the others")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n_train", type=int, default=1280)
    parser.add_argument("--n_test", type=int, default=500)
    parser.add_argument("--n_distractors", type=int, default=2500)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--contamination", type=float, default=0.3)
    parser.add_argument("--cross_encoder", default=None,
                        help="a local cross-encoder: adds the recipe mine_ce (mine --cross_encoder=PATH)")
    parser.add_argument("--log", default=os.path.join(HERE, "results", "quality.jsonl"),
                        help="each result appended as made; a result already there is reused (resume)")
    parser.add_argument("--plot", default=os.path.join(os.path.dirname(HERE), "docs", "quality.png"))
    parser.add_argument("--report", default="quality")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.steps = "lemma", "0", min(args.steps, 30)
    tasks = args.tasks.split(",")
    extra = ["mine_ce"] if args.cross_encoder else []
    plan = {t: (args.recipes.split(",") if args.recipes else list(RECIPES if i == 0 else CORE) + extra)
            for i, t in enumerate(tasks)}
    import dist_data.core.compat  # noqa: F401 - the torchvision workaround before transformers

    work = tempfile.mkdtemp(prefix="bench_quality_")
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    results = run(plan, [int(s) for s in args.seeds.split(",")], args.n_train, args.n_test, args.n_distractors,
                  args.steps, args.batch_size, args.lr, args.noise, args.contamination, work, args.cross_encoder,
                  args.log or None)
    rows = summary(results)
    print(f"\nquality: {args.steps} steps of batch {args.batch_size}, lr {args.lr}, seeds {args.seeds}, "
          f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}")
    print("| task | recipe | rows | nDCG@10 | MRR@10 | Recall@100 | vs raw (nDCG@10) | verbs s | train s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        vs = (f"{r['vs_raw'][0]:+.4f} ± {r['vs_raw'][1]:.4f}" + (" (within noise)" if r["within_noise"] else "")
              if "vs_raw" in r else "")
        print(f"| {r['task']} | {r['recipe']} | {r['rows']:,} | " + " | ".join(
            f"{r[m][0]:.4f} ± {r[m][1]:.4f}" for m in METRICS) + f" | {vs} | {r['verbs_s']} | {r['train_s']} |")
    plot(rows, args.plot)
    report = {"args": vars(args), "results": results, "summary": rows}
    print("wrote", write_report(args.report, report), "and", args.plot)
    return report


if __name__ == "__main__":
    main()
