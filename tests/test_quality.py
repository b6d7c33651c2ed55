"""``bench/quality.py`` end to end on a tiny slice: recipes made by our verbs train with
sentence-transformers' trainer, the scores are those of an independent brute-force ranking, the JSON
and the plot are written, and planted contamination scores above its decontaminated twin."""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import quality  # noqa: E402


def brute_force(model, data) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 of one relevant document per query, by numpy over encode's vectors."""
    ids = list(data["corpus"])
    docs = model.encode([data["corpus"][i] for i in ids], normalize_embeddings=True, convert_to_numpy=True)
    queries = model.encode([r["query"] for r in data["test"]], normalize_embeddings=True, convert_to_numpy=True)
    scores = queries @ docs.T
    own = np.array([ids.index(r["id"]) for r in data["test"]])
    rank = (scores > scores[np.arange(len(own)), own][:, None]).sum(axis=1) + 1  # 1-based
    return {"ndcg@10": float(np.where(rank <= 10, 1 / np.log2(rank + 1), 0).mean()),
            "mrr@10": float(np.where(rank <= 10, 1 / rank, 0).mean()),
            "recall@100": float((rank <= 100).mean())}


def test_quick_mode_trains_scores_and_shows_contamination(tmp_path):
    from sentence_transformers import SentenceTransformer

    from dist_data.core.models import resolve_model

    size = dict(n_train=64, n_test=32, n_distractors=200)
    report = quality.main(["--quick", "--recipes=base,contaminated,decontaminated", "--steps=8", "--batch_size=16",
                           "--lr=1e-4", "--contamination=1.0", f"--plot={tmp_path / 'quality.png'}",
                           "--report=quality_test", f"--log={tmp_path / 'quality.jsonl'}", *[f"--{k}={v}" for k, v in size.items()]])
    by = {r["recipe"]: r for r in report["results"]}
    data = quality.task_data("lemma", **size)
    ours = brute_force(SentenceTransformer(resolve_model(None), device="cpu").float(), data)
    for metric, value in ours.items():
        assert abs(by["base"][metric] - value) < 1e-3, (metric, by["base"][metric], value)
    # every test pair planted in training scores higher than the same set after dedup --against=TEST
    assert by["contaminated"]["rows"] == 64 + 32 and by["decontaminated"]["rows"] <= 64
    assert by["contaminated"]["ndcg@10"] > by["decontaminated"]["ndcg@10"] + 0.02
    assert (tmp_path / "quality.png").stat().st_size > 0
    # each result was logged as made: the same command again reuses them (a killed run resumes)
    again = quality.main(["--quick", "--recipes=base,contaminated,decontaminated", f"--log={tmp_path / 'quality.jsonl'}",
                          f"--plot={tmp_path / 'quality.png'}", "--report=quality_test",
                          *[f"--{k}={v}" for k, v in size.items()]])
    assert again["results"] == report["results"]
    saved = json.load(open(os.path.join(quality.HERE, "results", "quality_test.json")))
    assert [r["recipe"] for r in saved["summary"]] == ["base", "contaminated", "decontaminated"]
