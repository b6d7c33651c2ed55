"""Hub loading through mteb (``dist_data.text.mteb_hub``): real registry tasks carrying WordNet data in
the in-memory shapes mteb 2 gives after ``load_data`` are written in the local layout, and read
back equal to the same data written by hand; end to end, ``embed_mteb`` and ``finetune_data``
without ``--data_path`` read through that path. The hub itself is unreachable here: an offline
run must say so in one line."""

import json
import os
import random

import numpy as np
import pytest

from conftest import run_cli
from test_embed_mteb import build

from dist_data.core import distributed
from dist_data.text import mteb_hub
from dist_data.core.sources import read_rows
from dist_data.text.tasks import beir_table, load_split, local_splits

datasets = pytest.importorskip("datasets")
mteb = pytest.importorskip("mteb")

# local WordNet dataset -> the registry task that carries it, and its type
CASES = {
    "wn_pos": ("Banking77Classification.v2", "classification"),
    "wn_lexfile": ("TwentyNewsgroupsClustering", "clustering"),
    "wn_sts": ("STSBenchmark", "sts"),
    "wn_pairs": ("SprintDuplicateQuestions", "pair_classification"),
    "wn_lemma": ("SciFact", "retrieval"),
    "wn_rerank": ("SciDocsRR", "reranking"),
}


def _jsonl(path):
    return [r.value for r in read_rows(str(path))]


def _split_dict(folder, fn):
    return datasets.DatasetDict({os.path.basename(p).split(".")[0]: datasets.Dataset.from_list(fn(_jsonl(folder / p)))
                                 for p in sorted(os.listdir(folder))})


def as_mteb(local, name):
    """The local dataset ``name`` in the shape mteb 2 holds after ``load_data``."""
    folder = local / name
    if name in ("wn_pos", "wn_lexfile", "wn_pairs"):
        return _split_dict(folder, lambda rows: rows)
    if name == "wn_sts":  # the task's own scale is 0-5
        return _split_dict(folder, lambda rows: rows)
    if name == "wn_lemma":
        corpus = datasets.Dataset.from_list([{"id": r["_id"], "title": r["title"], "text": r["text"]}
                                             for r in _jsonl(folder / "corpus.jsonl")])
        queries = datasets.Dataset.from_list([{"id": r["_id"], "text": r["text"]} for r in _jsonl(folder / "queries.jsonl")])
        lines = open(folder / "qrels" / "test.tsv").read().splitlines()[1:]
        random.Random(1).shuffle(lines)  # mteb groups qrels without keeping their order
        relevant = {}
        for line in lines:
            q, d, s = line.split("\t")
            relevant.setdefault(q, {})[d] = int(s)
        return {"default": {"test": {"corpus": corpus, "queries": queries, "relevant_docs": relevant, "top_ranked": None}}}
    if name == "wn_rerank":  # mteb's own conversion of the old reranking rows: ids, judged 1 / 0, a ranking
        corpus, queries, relevant, ranked = [], [], {}, {}
        for i, r in enumerate(_jsonl(folder / "test.jsonl")):
            q = f"test_query{i}"
            queries.append({"id": q, "text": r["query"]})
            docs = [(f"apositive_{q}_{k:05d}", t, 1) for k, t in enumerate(r["positive"])]
            docs += [(f"negative_{q}_{k:05d}", t, 0) for k, t in enumerate(r["negative"])]
            corpus += [{"id": d, "text": t} for d, t, _ in docs]
            relevant[q] = {d: s for d, _, s in docs}
            ranked[q] = [d for d, _, _ in docs]
        random.Random(2).shuffle(corpus)  # negatives follow the ranking, not the corpus order
        return {"default": {"test": {"corpus": datasets.Dataset.from_list(corpus),
                                     "queries": datasets.Dataset.from_list(queries),
                                     "relevant_docs": relevant, "top_ranked": ranked}}}
    raise KeyError(name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A stand-in for the hub: the registry's real task objects with WordNet data already loaded."""
    local = tmp_path_factory.mktemp("local")
    build(local)
    tasks = {}
    for name, (mteb_name, _) in CASES.items():
        task = mteb.get_task(mteb_name)
        task.dataset, task.data_loaded = as_mteb(local, name), True
        tasks[mteb_name] = task
    return local, tasks


def _same_split(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "score":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
        else:
            assert list(a[key]) == list(b[key]), key


def test_export_reads_back_equal_to_the_local_layout(hub, tmp_path):
    local, tasks = hub
    for name, (mteb_name, task_type) in CASES.items():
        out = tmp_path / mteb_name / "default"
        info = mteb_hub.export(tasks[mteb_name], "default", task_type, str(out))
        assert json.load(open(out / "source.json"))["mteb_name"] == mteb_name
        assert local_splits(str(out), task_type) == local_splits(str(local / name), task_type) == info["splits"]
        for split in info["splits"]:
            _same_split(load_split(str(out), task_type, split), load_split(str(local / name), task_type, split))
        if task_type == "retrieval":
            for table in ("corpus", "queries"):
                assert beir_table(str(out), table) == beir_table(str(local / name), table)
            # the qrels file itself is in query order (mteb's grouping order is not kept)
            assert open(out / "qrels" / "test.tsv").read() == open(local / name / "qrels" / "test.tsv").read()


def test_sts_scores_move_to_the_0_5_scale_and_hierarchical_labels_keep_the_top_level(hub, tmp_path):
    local, _ = hub
    task = mteb.get_task("STSBenchmark")
    rows = _jsonl(local / "wn_sts" / "test.jsonl")
    task.min_score, task.max_score = 1, 3  # a task scored on 1-3
    task.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(
        [{**r, "score": 1 + r["score"] * 2 / 5} for r in rows])})
    info = mteb_hub.export(task, "default", "sts", str(tmp_path / "sts"))
    assert info["score_range"] == [1.0, 3.0]
    np.testing.assert_allclose(load_split(str(tmp_path / "sts"), "sts", "test")["score"], [r["score"] for r in rows],
                               atol=1e-9)

    task = mteb.get_task("TwentyNewsgroupsClustering")
    flat = [{"sentences": s, "labels": [f"top{y % 3}", f"fine{y}"]}  # one sentence per row, two label levels
            for r in _jsonl(local / "wn_lexfile" / "test.jsonl") for s, y in zip(r["sentences"], r["labels"])]
    task.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(flat)})
    info = mteb_hub.export(task, "default", "clustering", str(tmp_path / "clu"))
    got = load_split(str(tmp_path / "clu"), "clustering", "test")
    assert got["text"] == [r["sentences"] for r in flat] and got["label"] == [r["labels"][0] for r in flat]
    assert info["hierarchical_labels_top_level_kept"] == len(flat)


def test_subsets_of_multilingual_tasks():
    task = mteb.get_task("AmazonCounterfactualClassification")  # en-ext, en, de, ja
    assert mteb_hub.pick_subset(task, None) == "en"
    assert mteb_hub.pick_subset(task, "de") == "de"
    with pytest.raises(Exception, match="has no subset 'fr'; its subsets: en-ext, en, de, ja"):
        mteb_hub.pick_subset(task, "fr")
    german = mteb.get_task("AmazonCounterfactualClassification", hf_subsets=["de", "ja"])
    with pytest.raises(Exception, match="no English subset; pass --hf_subset=one of de, ja"):
        mteb_hub.pick_subset(german, None)


def test_embed_mteb_and_finetune_data_without_data_path(hub, tmp_path, monkeypatch, model):
    from dist_data.embed_mteb import EmbedMtebOptions, run_embed_mteb
    from dist_data.finetune_data import FinetuneOptions, run_finetune_data

    local, tasks = hub
    loads = []

    def get_task(name, hf_subsets=None):
        task = tasks[name]
        task.load_data = lambda **_: loads.append(name)  # the data is there already; count the loads
        return task

    monkeypatch.setattr(mteb_hub, "get_task", get_task)
    info = distributed.DistInfo(0, 1, 0, __import__("torch").device("cpu"))
    cache = tmp_path / "cache"
    kw = dict(task_type="classification", dataset_name="banking77", batch_size=16,
              save_root_path=str(tmp_path / "out"), progress=False, cache_dir=str(cache))
    run_embed_mteb(info, EmbedMtebOptions(**kw))
    assert loads == ["Banking77Classification.v2"]
    assert os.path.isfile(cache / "Banking77Classification.v2" / "default" / "source.json")
    out = tmp_path / "out" / "sentence-transformers_all-MiniLM-L6-v2" / "banking77"
    mapping = json.load(open(out / "label_mapping.json"))
    for split in ("train", "test"):
        z, src = np.load(out / f"{split}.npz"), _jsonl(local / "wn_pos" / f"{split}.jsonl")
        np.testing.assert_allclose(z["data"], model.encode([r["text"] for r in src], batch_size=16,
                                                          normalize_embeddings=True), atol=2e-6)
        assert z["label"].tolist() == [mapping[r["label"]] for r in src]

    run_embed_mteb(info, EmbedMtebOptions(**{**kw, "save_root_path": str(tmp_path / "again")}))  # the cached copy: no second load
    assert loads == ["Banking77Classification.v2"]
    # torchrun, 2 ranks, no --data_path: every rank reads the cached copy (offline: a load would fail)
    run_cli("dist_data.embed_mteb", "--task_type=classification", "--dataset_name=banking77", "--batch_size=16",
            f"--save_root_path={tmp_path / 'two'}", f"--cache_dir={cache}", "--progress=False", nproc=2,
            env={"HF_DATASETS_OFFLINE": "1"})
    for split in ("train", "test"):
        one, two = np.load(out / f"{split}.npz"), np.load(str(out / f"{split}.npz").replace("/out/", "/two/"))
        assert np.array_equal(one["data"], two["data"]) and np.array_equal(one["label"], two["label"])

    # finetune pairs from the hub copy == from the same files given with --data_path (draws are seeded by name)
    import shutil

    shutil.copytree(local / "wn_sts", tmp_path / "by_hand" / "STSBenchmark")
    ref = tmp_path / "ft_local"
    ft = dict(task_type="sts", dataset_name="STSBenchmark", max_samples_per_dataset=50, seed=7)
    run_finetune_data(None, FinetuneOptions(**ft, data_path=str(tmp_path / "by_hand"), save_root=str(ref)))
    run_finetune_data(None, FinetuneOptions(**ft, save_root=str(tmp_path / "ft_hub"), cache_dir=str(cache)))
    for split in ("train", "test"):
        a = datasets.load_from_disk(str(ref / f"STSBenchmark_{split}")).to_dict()
        b = datasets.load_from_disk(str(tmp_path / "ft_hub" / f"STSBenchmark_{split}")).to_dict()
        assert a == b and len(a["sentence1"]) > 0


def test_unreachable_hub_is_one_clear_line(tmp_path):
    proc = run_cli("dist_data.embed_mteb", "--task_type=classification", "--dataset_name=banking77",
                   f"--save_root_path={tmp_path}", f"--cache_dir={tmp_path / 'cache'}", nproc=0, check=False,
                   env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "could not load MTEB task Banking77Classification.v2 from the hub" in proc.stderr
    assert "pass --data_path" in proc.stderr and not os.path.exists(tmp_path / "cache")
