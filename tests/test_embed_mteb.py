"""``dist_data.embed_mteb`` on local MTEB-shaped datasets built from WordNet: every task type's
npz layout, row by row against a single-process ``SentenceTransformer.encode``; 2 ranks via torchrun
(classification here, and the resume test against one process)."""

import json
import os
import random

import numpy as np
import pytest

from conftest import run_cli, run_killed, write_jsonl
from dist_data.text.wordnet import iter_synsets

POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "r": "adverb"}


def build(root) -> dict:
    """One dataset per task type, real WordNet text."""
    rng = random.Random(0)
    synsets = rng.sample([s for s in iter_synsets() if s.examples], 400)
    d = {}

    def folder(name):
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        return path

    # classification: definition -> part of speech (string labels); a label only in test
    f = folder("wn_pos")
    write_jsonl(os.path.join(f, "train.jsonl"), [{"text": s.definition, "label": POS_NAME[s.pos]} for s in synsets[:150]
                                                  if s.pos != "r"])
    write_jsonl(os.path.join(f, "test.jsonl"), [{"text": s.definition, "label": POS_NAME[s.pos]} for s in synsets[150:250]])
    # a second classification dataset with a test split only: usage example -> lexicographer file
    f = folder("wn_lex")
    write_jsonl(os.path.join(f, "test.jsonl"), [{"text": s.examples[0], "label": s.lexfile % 5} for s in synsets[:120]])
    # clustering: rows of sentences with their lexicographer-file labels, test only
    f = folder("wn_lexfile")
    write_jsonl(os.path.join(f, "test.jsonl"), [{"sentences": [s.definition for s in synsets[i : i + 40]],
                                                 "labels": [s.lexfile for s in synsets[i : i + 40]]}
                                                for i in range(0, 200, 40)])
    # retrieval: lemma -> definition
    f = folder("wn_lemma")
    write_jsonl(os.path.join(f, "corpus.jsonl"), [{"_id": s.id, "title": "", "text": s.definition} for s in synsets[:120]])
    write_jsonl(os.path.join(f, "queries.jsonl"), [{"_id": f"q{i}", "text": s.lemmas[0]} for i, s in enumerate(synsets[:60])])
    os.makedirs(os.path.join(f, "qrels"), exist_ok=True)
    with open(os.path.join(f, "qrels", "test.tsv"), "w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines(f"q{i}\t{s.id}\t1\n" for i, s in enumerate(synsets[:60]))
    # sts: a definition and an example of the same synset (5) or of another: 4 in the same lexicographer
    # file (a close topic), 2 with the same part of speech, else the lemma overlap
    f = folder("wn_sts")
    rows = []
    for i, s in enumerate(synsets[:80]):
        other = synsets[(i * 7 + 3) % 400] if i % 2 else s
        overlap = len(set(s.lemmas) & set(other.lemmas)) / len(set(s.lemmas) | set(other.lemmas))
        score = 5.0 if other is s else 4.0 if other.lexfile == s.lexfile else 2.0 if other.pos == s.pos else \
            round(5 * overlap, 2)
        rows.append({"sentence1": s.definition, "sentence2": other.examples[0], "score": score})
    write_jsonl(os.path.join(f, "test.jsonl"), rows)
    # pair classification in MTEB's list layout
    f = folder("wn_pairs")
    write_jsonl(os.path.join(f, "test.jsonl"), [{"sentence1": [r["sentence1"] for r in rows],
                                                 "sentence2": [r["sentence2"] for r in rows],
                                                 "labels": [int(r["score"] == 5) for r in rows]}])
    # reranking: a lemma, its definition, and definitions of other synsets
    f = folder("wn_rerank")
    write_jsonl(os.path.join(f, "test.jsonl"), [{"query": s.lemmas[0], "positive": [s.definition],
                                                 "negative": [synsets[(i + k) % 400].definition for k in (1, 2, 3)][: 1 + i % 3]}
                                                for i, s in enumerate(synsets[:50])])
    d["synsets"] = synsets
    return d


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("mteb")
    data = build(root / "data")
    out = root / "out"
    for task_type, name in [("classification", "wn_pos,wn_lex"), ("clustering", "wn_lexfile"), ("retrieval", "wn_lemma"),
                            ("sts", "wn_sts"), ("pair_classification", "wn_pairs"), ("reranking", "wn_rerank")]:
        run_cli("dist_data.embed_mteb", f"--task_type={task_type}", f"--dataset_name={name}",
                f"--data_path={root / 'data'}", f"--save_root_path={out}", "--batch_size=16", "--progress=False",
                nproc=2 if task_type == "classification" else 0)  # 2 ranks once (and in the resume test)
    return root / "data", out / "sentence-transformers_all-MiniLM-L6-v2", data


def close(model, texts, got):
    ref = model.encode(texts, batch_size=16, normalize_embeddings=True)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-6)


def rows(path):
    return [json.loads(line) for line in open(path)]


def test_classification_labels_over_all_splits(embedded, model):
    data, out, _ = embedded
    mapping = json.load(open(out / "wn_pos" / "label_mapping.json"))
    assert list(mapping) == sorted(mapping) and set(mapping) == {"adjective", "adverb", "noun", "verb"}
    for split in ("train", "test"):
        z = np.load(out / "wn_pos" / f"{split}.npz")
        src = rows(data / "wn_pos" / f"{split}.jsonl")
        close(model, [r["text"] for r in src], z["data"])
        assert z["label"].tolist() == [mapping[r["label"]] for r in src]
    # the run's account: rows per split, every text embedded by one of the 2 ranks, nothing from a cache
    stats = json.load(open(out / "wn_pos" / "stats.json"))
    n = {s: len(rows(data / "wn_pos" / f"{s}.jsonl")) for s in ("train", "test")}
    assert stats["counts"]["rows"] == n and stats["counts"]["embedded"] == sum(n.values())
    assert stats["counts"]["cached_blocks"] == 0 and len(stats["ranks"]) == 2
    assert 0 < stats["counts"]["texts_encoded"] <= sum(n.values())


def test_clustering_rows_flattened(embedded, model):
    data, out, _ = embedded
    z = np.load(out / "wn_lexfile" / "test.npz")
    src = rows(data / "wn_lexfile" / "test.jsonl")
    close(model, [t for r in src for t in r["sentences"]], z["data"])
    labels = sorted({x for r in src for x in r["labels"]})  # numbers: numeric order, one space for all splits
    assert z["label"].tolist() == [labels.index(x) for r in src for x in r["labels"]]
    assert json.load(open(out / "wn_lexfile" / "label_mapping.json")) == {str(x): i for i, x in enumerate(labels)}


def test_retrieval_corpus_queries_qrels(embedded, model):
    data, out, _ = embedded
    corpus = rows(data / "wn_lemma" / "corpus.jsonl")
    z = np.load(out / "wn_lemma" / "corpus.npz")
    close(model, [(c["title"] + " " + c["text"]).strip() for c in corpus], z["data"])
    assert z["id"].tolist() == [c["_id"] for c in corpus]
    q = np.load(out / "wn_lemma" / "queries.npz")
    assert q["id"].tolist() == [f"q{i}" for i in range(60)]
    qrels = np.load(out / "wn_lemma" / "test.npz")
    assert qrels["query_id"].tolist()[:2] == ["q0", "q1"] and len(qrels["corpus_id"]) == 60


def test_sts_pair_classification_reranking(embedded, model):
    data, out, _ = embedded
    src = rows(data / "wn_sts" / "test.jsonl")
    z = np.load(out / "wn_sts" / "test.npz")
    close(model, [r["sentence1"] for r in src], z["sentence1"])
    close(model, [r["sentence2"] for r in src], z["sentence2"])
    np.testing.assert_allclose(z["score"], [r["score"] for r in src], rtol=1e-6)
    p = np.load(out / "wn_pairs" / "test.npz")
    assert p["label"].tolist() == [int(r["score"] == 5) for r in src]
    np.testing.assert_array_equal(p["sentence1"], z["sentence1"])


def csrv2_reranking_classes(path):
    """CSRv2's reading of a reranking split (its combine's contract, written here): per query i,
    ``positive[i]`` and ``negative[i]`` are (n_i, d) arrays; the query and its positives form one
    class, every negative its own."""
    z = np.load(path, allow_pickle=True)
    data, labels, c = [], [], 0
    for q, pos, neg in zip(z["query"], z["positive"], z["negative"]):
        data.append(q)
        labels.append(c)
        for p in pos:
            assert p.shape == q.shape
            data.append(p)
            labels.append(c)
        c += 1
        for n in neg:
            data.append(n)
            labels.append(c)
            c += 1
    return np.array(data), np.array(labels)


def test_reranking_npz_is_csrv2s_layout_and_offsets_on_request(embedded, model, tmp_path):
    from dist_data.core.errors import InputError
    from dist_data.text.tasks import load_reranking

    data, out, _ = embedded
    rr = rows(data / "wn_rerank" / "test.jsonl")
    path = out / "wn_rerank" / "test.npz"
    r = np.load(path, allow_pickle=True)
    close(model, [x["query"] for x in rr], r["query"])
    assert r["positive"].dtype == object and r["positive"].shape == r["negative"].shape == (len(rr),)
    for x, pos, neg in zip(rr, r["positive"], r["negative"]):  # one (n_i, d) array per query, its own texts
        assert pos.shape == (len(x["positive"]), 384) and neg.shape == (len(x["negative"]), 384)
    close(model, [t for x in rr for t in x["negative"]], np.concatenate(list(r["negative"])))
    # CSRv2's combine reads it: a class per query (+ its positive), one per negative
    vectors, labels = csrv2_reranking_classes(path)
    assert len(vectors) == sum(1 + len(x["positive"]) + len(x["negative"]) for x in rr)
    assert len(set(labels.tolist())) == sum(1 + len(x["negative"]) for x in rr)
    # the offsets layout on request; our reader gives the same arrays from both, and no pickle is in it
    run_cli("dist_data.embed_mteb", "--task_type=reranking", "--dataset_name=wn_rerank", f"--data_path={data}",
            f"--save_root_path={tmp_path}", "--batch_size=16", "--reranking_layout=offsets", "--noprogress", nproc=0)
    flat_path = tmp_path / "sentence-transformers_all-MiniLM-L6-v2" / "wn_rerank" / "test.npz"
    flat = np.load(flat_path)  # allow_pickle=False
    assert np.diff(flat["negative_offsets"]).tolist() == [len(x["negative"]) for x in rr]
    assert flat["positive_offsets"].tolist() == list(range(51))
    ours = load_reranking(str(path))
    for key in ("query", "positive", "negative", "positive_offsets", "negative_offsets"):
        np.testing.assert_array_equal(ours[key], flat[key])
    # object arrays in a file dist_data did not write are never unpickled
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, query=r["query"], positive=r["positive"], negative=r["negative"])
    with pytest.raises(InputError, match="refusing to unpickle"):
        load_reranking(str(foreign))


def test_validation_split_file_names_are_csrv2s():
    from dist_data.text.tasks import npz_split_name

    assert npz_split_name("retrieval", "dev", ["train", "dev", "test"]) == "val"
    assert npz_split_name("retrieval", "validation", ["validation", "test"]) == "val"
    assert npz_split_name("classification", "dev", ["train", "dev", "test"]) == "validation"
    assert npz_split_name("sts", "validation", ["validation"]) == "validation"
    assert npz_split_name("sts", "dev", ["dev", "validation"]) == "dev"  # the name is taken: kept as it is
    assert npz_split_name("classification", "test", ["test"]) == "test"


def test_existing_split_is_skipped_and_bad_names_are_clear(embedded, tmp_path):
    data, out, _ = embedded
    before = os.path.getmtime(out / "wn_pos" / "test.npz")
    proc = run_cli("dist_data.embed_mteb", "--task_type=classification", "--dataset_name=wn_pos", f"--data_path={data}",
                   f"--save_root_path={out.parent}", "--batch_size=16", "--progress=False", nproc=2)
    assert os.path.getmtime(out / "wn_pos" / "test.npz") == before and "splits_skipped 2" in proc.stderr
    assert json.load(open(out / "wn_pos" / "stats.json"))["counts"]["splits_skipped"] == 2  # once, not per rank
    proc = run_cli("dist_data.embed_mteb", "--task_type=classify", f"--save_root_path={tmp_path}", nproc=0, check=False)
    assert proc.returncode == 2 and "--task_type must be one of classification" in proc.stderr
    proc = run_cli("dist_data.embed_mteb", "--task_type=sts", "--dataset_name=nope", f"--data_path={data}",
                   f"--save_root_path={tmp_path}", nproc=0, check=False)
    assert proc.returncode == 2 and "no folder" in proc.stderr


def test_resume_after_a_killed_rank_gives_the_same_bytes(tmp_path):
    synsets = random.Random(3).sample(list(iter_synsets()), 2000)
    os.makedirs(tmp_path / "data" / "wn_big")
    write_jsonl(tmp_path / "data" / "wn_big" / "test.jsonl", [{"text": s.definition, "label": s.pos} for s in synsets])
    flags = ["--task_type=classification", "--dataset_name=wn_big", f"--data_path={tmp_path / 'data'}",
             "--batch_size=8", "--progress=False"]
    model_dir = "sentence-transformers_all-MiniLM-L6-v2"
    killed = tmp_path / "killed"
    run_killed("dist_data.embed_mteb", *flags, f"--save_root_path={killed}", out=str(killed),
               cache=str(killed / model_dir / ".cache"), after_blocks=3)
    assert not os.path.exists(killed / model_dir / "wn_big" / "test.npz")
    run_cli("dist_data.embed_mteb", *flags, f"--save_root_path={killed}")
    run_cli("dist_data.embed_mteb", *flags, f"--save_root_path={tmp_path / 'clean'}", nproc=0)
    resumed, clean = (open(d / model_dir / "wn_big" / "test.npz", "rb").read() for d in (killed, tmp_path / "clean"))
    assert resumed == clean
    assert json.load(open(killed / model_dir / "wn_big" / "stats.json"))["counts"]["cached_blocks"] >= 3


def test_task_names_are_checked_against_the_mteb_registry(tmp_path):
    proc = run_cli("dist_data.embed_mteb", "--task_type=classification", "--dataset_name=Banking77Clasification",
                   f"--save_root_path={tmp_path}", nproc=0, check=False)
    assert proc.returncode == 2
    assert "'Banking77Clasification' is not a classification task of the MTEB registry" in proc.stderr
    assert "Banking77Classification" in proc.stderr  # the closest valid names are listed
    line = next(x for x in proc.stderr.splitlines() if "is not a classification task" in x)
    assert "the closest of its" in line and line.count(", ") == 4 and len(line) < 400  # 5 names, not thousands

    from dist_data.text.tasks import resolve_tasks

    assert resolve_tasks("classification", "banking77", None)[0].mteb_name.startswith("Banking77Classification")
    assert resolve_tasks("sts", "STSBenchmark", None)[0].mteb_name == "STSBenchmark"
    with pytest.raises(ValueError, match="'banking77' is a classification task of the MTEB registry, not sts"):
        resolve_tasks("sts", "banking77", None)
    # all: current English text tasks; superseded versions and aggregates are left out
    names = {r.name for r in resolve_tasks("classification", "all", None)}
    assert "Banking77Classification.v2" in names and "Banking77Classification" not in names
    names = {r.name for r in resolve_tasks("retrieval", "all", None)}
    assert "CQADupstackAndroidRetrieval" in names and "CQADupstackRetrieval" not in names and "SciFact" in names


TYPES = ["classification", "clustering", "retrieval", "sts", "pair_classification", "reranking"]


@pytest.fixture(scope="module")
def combined(embedded, tmp_path_factory):
    _, out, _ = embedded
    root = tmp_path_factory.mktemp("combined")
    for task_type in TYPES:
        run_cli("dist_data.combine", "embeddings", f"--task_type={task_type}", f"--embedding_path={out}",
                f"--save_root_path={root}", nproc=0)
    return root


def test_combine_one_label_space_test_only_split_and_unseen_labels(embedded, combined):
    _, out, _ = embedded
    root = combined / "classification"
    assert json.load(open(root / "datasets.json")) == ["wn_lex", "wn_pos"]
    stats = json.load(open(root / "stats.json"))["datasets"]
    assert stats["wn_lex"]["label_offset"] == 0 and stats["wn_pos"]["label_offset"] == stats["wn_lex"]["classes"]
    assert stats["wn_lex"]["train_from"] == "80/20 of test" and stats["wn_pos"]["train_from"] == "train"
    train, test = np.load(root / "train.npz"), np.load(root / "test.npz")
    for d, name in enumerate(["wn_lex", "wn_pos"]):  # each dataset in its own label range
        lo, n = stats[name]["label_offset"], stats[name]["classes"]
        assert ((train["label"][train["dataset"] == d] >= lo) & (train["label"][train["dataset"] == d] < lo + n)).all()
    assert set(test["label"].tolist()) <= set(train["label"].tolist())
    # wn_pos: the train split as is; "adverb" occurs only in test and is dropped, counted
    src = np.load(out / "wn_pos" / "train.npz")
    np.testing.assert_array_equal(train["data"][train["dataset"] == 1], src["data"])
    mapping = json.load(open(out / "wn_pos" / "label_mapping.json"))
    src_test = np.load(out / "wn_pos" / "test.npz")
    assert stats["wn_pos"]["test_dropped_unseen_label"] == int((src_test["label"] == mapping["adverb"]).sum()) > 0
    # wn_lex: 80/20 stratified by label
    lex = np.load(out / "wn_lex" / "test.npz")["label"]
    lex_train = train["label"][train["dataset"] == 0]
    for c in np.unique(lex):
        assert (lex_train == c).sum() == round(0.8 * (lex == c).sum())


def test_combine_class_rules_for_pairs_retrieval_and_reranking(embedded, combined):
    from dist_data.text.combine import dataset_rows
    from dist_data.text.tasks import load_reranking

    _, out, _ = embedded
    sts = np.load(out / "wn_sts" / "test.npz")
    rows, _, _ = dataset_rows(str(out / "wn_sts"), "sts", ["test"])
    _, label = rows["test"].arrays(384)
    n = len(sts["score"])
    assert ((label[:n] == label[n:]) == (sts["score"] >= 3.0)).all() and (sts["score"] >= 3.0).any()
    pairs = np.load(out / "wn_pairs" / "test.npz")
    rows, _, _ = dataset_rows(str(out / "wn_pairs"), "pair_classification", ["test"])
    _, label = rows["test"].arrays(384)
    assert ((label[:n] == label[n:]) == (pairs["label"] == 1)).all()
    rr = load_reranking(str(out / "wn_rerank" / "test.npz"))
    rows, _, n_classes = dataset_rows(str(out / "wn_rerank"), "reranking", ["test"])
    _, label = rows["test"].arrays(384)
    n_q, n_p = len(rr["query"]), len(rr["positive"])
    assert (label[n_q : n_q + n_p] == label[:n_q]).all()  # one positive per query here
    negatives = label[n_q + n_p :]
    assert len(set(negatives.tolist())) == len(negatives) and not set(negatives.tolist()) & set(label[:n_q].tolist())
    rows, lone, n_classes = dataset_rows(str(out / "wn_lemma"), "retrieval", ["test"])
    _, label = rows["test"].arrays(384)
    half = len(label) // 2
    assert (label[:half] == label[half:]).all() and half == 60  # a (query, document) row pair per qrel
    _, lone_label = lone.arrays(384)
    assert len(lone_label) == 60 and len(set(lone_label.tolist())) == 60  # unjudged documents: singletons
    for task_type in TYPES:
        train, test = np.load(combined / task_type / "train.npz"), np.load(combined / task_type / "test.npz")
        np.testing.assert_array_equal(train["labels"], train["label"])  # CSRv2 trains on "labels"
        assert train["data"].shape[1] == 384 and len(train["label"]) == len(train["dataset"])
        stats = json.load(open(combined / task_type / "stats.json"))["datasets"]
        if task_type in ("classification", "clustering"):  # test rows of unseen labels are dropped
            assert set(test["label"].tolist()) <= set(train["label"].tolist())
        else:  # CSRv2 keeps the pair tasks' test rows: their classes (new queries, new pairs) are their own
            assert len(test["label"]) > 0 and not set(test["label"].tolist()) & set(train["label"].tolist())
            assert all(s["test_dropped_unseen_label"] == 0 and s["test_rows"] > 0 for s in stats.values())
            assert sum(s["test_rows_of_new_classes"] for s in stats.values()) == len(test["label"])
    # reranking split 80/20 by class: each of the 50 queries keeps its positive on its side
    train, test = (np.load(combined / "reranking" / f"{k}.npz") for k in ("train", "test"))
    n_q = 50
    assert ((np.unique(train["label"], return_counts=True)[1] == 2).sum()
            + (np.unique(test["label"], return_counts=True)[1] == 2).sum()) == n_q


@pytest.fixture(scope="module")
def finetune(embedded, tmp_path_factory):
    data, _, _ = embedded
    root = tmp_path_factory.mktemp("finetune")
    for task_type, nproc in [("classification", 2), ("sts", 0), ("pair_classification", 0), ("retrieval", 0),
                             ("reranking", 0)]:
        run_cli("dist_data.finetune_data", f"--task_type={task_type}", f"--data_path={data}", f"--save_root={root}",
                "--max_samples_per_dataset=300", nproc=nproc)
    return data, root


def test_finetune_pairs_follow_each_rule(finetune):
    import datasets

    data, root = finetune
    load = lambda name: datasets.load_from_disk(str(root / name))  # noqa: E731
    # classification: two different texts with the same label, quotas by label share, caps
    label_of = {r["text"]: r["label"] for split in ("train", "test") for r in rows(data / "wn_pos" / f"{split}.jsonl")}
    train, test = load("wn_pos_train"), load("wn_pos_test")
    assert 0 < len(train) <= 300 and 0 < len(test) <= 60
    for r in [*train, *test]:
        assert r["sentence1"] != r["sentence2"] and label_of[r["sentence1"]] == label_of[r["sentence2"]]
    src = rows(data / "wn_pos" / "train.jsonl")
    shares = {y: sum(r["label"] == y for r in src) / len(src) for y in {r["label"] for r in src}}
    got = {y: sum(label_of[r["sentence1"]] == y for r in train) for y in shares}
    for y, share in shares.items():  # proportional, rounded by largest remainder: never over the cap
        n = sum(r["label"] == y for r in src)
        assert got[y] <= n * (n - 1) // 2 and abs(got[y] - min(n * (n - 1) // 2, 300 * share)) < 1
    assert sum(got.values()) == 300
    # a test-only dataset is split 80/20 first
    lex_train, lex_test = load("wn_lex_train"), load("wn_lex_test")
    assert not {r["sentence1"] for r in lex_train} & {r["sentence1"] for r in lex_test}
    # sts: score >= 1, scaled to [0, 1]
    sts_src = {(r["sentence1"], r["sentence2"]): r["score"] for r in rows(data / "wn_sts" / "test.jsonl")}
    sts = [*load("wn_sts_train"), *load("wn_sts_test")]
    assert sts and all(0 <= r["score"] <= 1 for r in sts)
    assert all(abs(r["score"] - sts_src[(r["sentence1"], r["sentence2"])] / 5) < 1e-6 for r in sts)
    assert len(sts) == sum(s >= 1.0 for s in sts_src.values())
    # pair classification: label-1 pairs only
    pairs = [*load("wn_pairs_train"), *load("wn_pairs_test")]
    assert len(pairs) == sum(s == 5 for s in sts_src.values()) and all(r["sentence1"] and r["sentence2"] for r in pairs)
    # retrieval: (query, judged document); reranking: (query, positive)
    lemma = {r["_id"]: r["text"] for r in rows(data / "wn_lemma" / "queries.jsonl")}
    docs = {r["_id"]: r["text"] for r in rows(data / "wn_lemma" / "corpus.jsonl")}
    judged = {(lemma[f"q{i}"], docs[d]) for i, d in enumerate(list(docs)[:60])}
    ret = [*load("wn_lemma_train"), *load("wn_lemma_test")]
    assert len(ret) == 60 and {(r["sentence1"], r["sentence2"]) for r in ret} == judged
    rr = {(r["query"], r["positive"][0]) for r in rows(data / "wn_rerank" / "test.jsonl")}
    assert {(r["sentence1"], r["sentence2"]) for r in [*load("wn_rerank_train"), *load("wn_rerank_test")]} == rr


def test_finetune_data_is_reproducible_for_any_world_size(finetune, tmp_path):
    import datasets

    data, root = finetune
    run_cli("dist_data.finetune_data", "--task_type=classification", f"--data_path={data}", f"--save_root={tmp_path}",
            "--max_samples_per_dataset=300", nproc=0)
    for name in ("wn_pos_train", "wn_lex_test"):
        assert datasets.load_from_disk(str(tmp_path / name)).to_dict() == datasets.load_from_disk(str(root / name)).to_dict()
    # the folder's dataset card: each result a config, so load_dataset(DIR, NAME) reads exactly its rows
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "config_name: \"wn_pos_train\"" in card and "--task_type=classification" in card
    got = datasets.load_dataset(str(tmp_path), "wn_lex_test", split="train", cache_dir=str(tmp_path / ".hf"))
    assert got.to_dict() == datasets.load_from_disk(str(tmp_path / "wn_lex_test")).to_dict()


def test_combine_finetune_and_all(finetune, tmp_path):
    import datasets

    _, root = finetune
    out = tmp_path / "combined"
    run_cli("dist_data.combine", "finetune", "--task_type=classification", f"--data_dir={root}",
            f"--save_root_path={out}", "--max_rows_per_dataset=100", nproc=0)
    run_cli("dist_data.combine", "finetune", "--task_type=sts", f"--data_dir={root}", f"--save_root_path={out}", nproc=0)
    train = datasets.load_from_disk(str(out / "finetune" / "classification" / "train"))
    # only the trainer's columns: a "dataset" column would be a third text input (read as a hard negative)
    assert train.column_names == ["sentence1", "sentence2"]
    prov = json.load(open(out / "finetune" / "classification" / "provenance.json"))
    names = [prov["datasets"][i] for i in prov["train"]]
    # exact names: wn_pos and wn_lex, each capped at 100; nothing from other task types
    assert len(names) == len(train) and sorted(set(names)) == ["wn_lex", "wn_pos"]
    assert all(names.count(n) <= 100 for n in ("wn_lex", "wn_pos"))
    sts = datasets.load_from_disk(str(out / "finetune" / "sts" / "train"))
    assert sts.column_names == ["sentence1", "sentence2", "score"]
    # the folder's card: each result a config, its train/ and test/ folders its splits
    loaded = datasets.load_dataset(str(out / "finetune"), "sts", cache_dir=str(tmp_path / ".hf"))
    assert sorted(loaded) == ["test", "train"] and loaded["train"].to_dict() == sts.to_dict()
    coll = tmp_path / "coll"
    coll.mkdir()
    write_jsonl(coll / "pairs.jsonl", [["a query", "its passage"], ["another query", "another passage"]] * 5)
    # a mined triplet file: its (anchor, positive) repeats once per negative
    words = [s.lemmas[0] for s in iter_synsets()][:40]
    write_jsonl(coll / "triplets.jsonl", [{"anchor": a, "positive": a.upper(), "negative": n}
                                          for a in words[:20] for n in words[20:23]])
    run_cli("dist_data.combine", "collection", f"--data_dir={coll}", f"--save_root_path={out}",
            "--max_pairs_per_dataset=15", nproc=0)
    cstats = json.load(open(out / "collection" / "stats.json"))["datasets"]
    assert cstats["triplets"] == {"schema": "3-column", "pairs": 60, "duplicates": 40, "kept": 15}
    assert cstats["pairs"]["kept"] == 2 and cstats["pairs"]["duplicates"] == 8
    ctrain, ctest = (datasets.load_from_disk(str(out / "collection" / s)) for s in ("train", "test"))
    both = [*zip(ctrain["anchor"], ctrain["positive"]), *zip(ctest["anchor"], ctest["positive"])]
    assert len(both) == len(set(both)) == 17  # caps are exact; no duplicates
    run_cli("dist_data.combine", "all", f"--save_root_path={out}", nproc=0)
    joined = datasets.load_from_disk(str(out / "all" / "train"))
    assert joined.column_names == ["anchor", "positive"]
    # STS pairs are positives only from 4.0 / 5 up; the rest are counted, not turned into positives
    positives = sum(s * 5 >= 4.0 - 1e-9 for s in sts["score"])
    all_stats = json.load(open(out / "all" / "stats.json"))
    assert 0 < positives < len(sts) and all_stats["sts_below_threshold"] >= len(sts) - positives
    assert len(joined) == len(train) + positives + len(ctrain)
    prov = json.load(open(out / "all" / "provenance.json"))
    assert {"wn_pos", "wn_lex", "wn_sts", "pairs", "triplets"} == {prov["datasets"][i] for i in prov["train"]}
    low = {(a, b) for a, b, s in zip(sts["sentence1"], sts["sentence2"], sts["score"]) if s * 5 < 4.0}
    assert not low & set(zip(joined["anchor"], joined["positive"]))


def test_rerun_policy_of_embed_mteb_and_finetune_data(embedded, tmp_path):
    import shutil

    data, _, _ = embedded
    small = tmp_path / "data"
    shutil.copytree(data / "wn_sts", small / "wn_sts")
    flags = ["--task_type=sts", "--dataset_name=wn_sts", f"--data_path={small}", f"--save_root_path={tmp_path / 'e'}",
             "--batch_size=16", "--noprogress"]
    run_cli("dist_data.embed_mteb", *flags, nproc=0)
    out = tmp_path / "e" / "sentence-transformers_all-MiniLM-L6-v2" / "wn_sts"
    (out / "my_notes.txt").write_text("kept")
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    # another prompt: refused, naming it; the vectors and meta.json of the first run stay as they were
    proc = run_cli("dist_data.embed_mteb", *flags, "--prompt=query: ", nproc=0, check=False)
    assert proc.returncode == 2 and "--prompt='query: ' (was None)" in proc.stderr
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    proc = run_cli("dist_data.embed_mteb", *flags, "--prompt=query: ", "--overwrite", nproc=0)
    assert json.load(open(out / "meta.json"))["args"]["prompt"] == "query: "
    assert (out / "my_notes.txt").read_text() == "kept"
    assert (out / "test.npz").read_bytes() != before["test.npz"]  # made again, with the prompt

    ft = ["--task_type=sts", f"--data_path={small}", f"--save_root={tmp_path / 'ft'}", "--noprogress"]
    run_cli("dist_data.finetune_data", *ft, "--max_samples_per_dataset=50", nproc=0)
    first = json.load(open(tmp_path / "ft" / "finetune_sts_stats.json"))
    proc = run_cli("dist_data.finetune_data", *ft, "--max_samples_per_dataset=50", nproc=0)
    assert "already complete" in proc.stderr
    proc = run_cli("dist_data.finetune_data", *ft, "--max_samples_per_dataset=20", nproc=0, check=False)
    assert proc.returncode == 2 and "--max_samples_per_dataset=20 (was 50)" in proc.stderr
    assert json.load(open(tmp_path / "ft" / "finetune_sts_stats.json")) == first
    run_cli("dist_data.finetune_data", *ft, "--max_samples_per_dataset=20", "--overwrite", nproc=0)
    assert json.load(open(tmp_path / "ft" / "finetune_sts_stats.json"))["wn_sts_train"]["cap"] == 20
    # --overwrite from data whose row 6 lacks its score: one line, and the finished results and their
    # records stay exactly as they were (the first command is still complete, not refused)
    bad = tmp_path / "data2"
    shutil.copytree(small, bad)
    lines = (bad / "wn_sts" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    row = json.loads(lines[5])
    del row["score"]
    lines[5] = json.dumps(row) + "\n"
    (bad / "wn_sts" / "test.jsonl").write_text("".join(lines), encoding="utf-8")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ft").iterdir() if p.is_file()}
    proc = run_cli("dist_data.finetune_data", "--task_type=sts", f"--data_path={bad}", f"--save_root={tmp_path / 'ft'}",
                   "--max_samples_per_dataset=20", "--overwrite", "--noprogress", nproc=0, check=False)
    assert proc.returncode == 2 and "test.jsonl:6" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "ft").iterdir() if p.is_file()} == before
    proc = run_cli("dist_data.finetune_data", *ft, "--max_samples_per_dataset=20", nproc=0)
    assert "already complete" in proc.stderr
    proc = run_cli("dist_data.finetune_data", "--task_type=sts", f"--data_path={tmp_path / 'nope'}",
                   f"--save_root={tmp_path / 'ft2'}", nproc=0, check=False)
    assert proc.returncode == 2 and "--data_path: no such file or folder" in proc.stderr
    proc = run_cli("dist_data.combine", "finetune", "--task_type=sts", f"--data_dir={tmp_path / 'nope'}",
                   f"--save_root_path={tmp_path / 'c'}", nproc=0, check=False)
    assert proc.returncode == 2 and "--data_dir: no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("task_type,row", [
    ("classification", {"text": "a domestic cat", "label": None}),
    ("classification", {"text": "a domestic cat", "label": ["noun", "verb"]}),
    ("sts", {"sentence1": "a domestic cat", "sentence2": "a house cat", "score": "high"}),
    ("pair_classification", {"sentence1": "a domestic cat", "sentence2": "a house cat", "label": "yes"}),
])
def test_a_value_of_the_wrong_type_is_a_bad_row_named_by_file_and_line(task_type, row, tmp_path):
    synsets = [s for s in iter_synsets(pos="n") if s.examples][:5]
    good = {"classification": lambda s: {"text": s.definition, "label": s.lexfile},
            "sts": lambda s: {"sentence1": s.definition, "sentence2": s.examples[0], "score": 4.0},
            "pair_classification": lambda s: {"sentence1": s.definition, "sentence2": s.examples[0], "label": 1}}
    folder = tmp_path / "data" / "wn_bad"
    folder.mkdir(parents=True)
    write_jsonl(str(folder / "train.jsonl"), [good[task_type](s) for s in synsets[:2]] + [row])
    write_jsonl(str(folder / "test.jsonl"), [good[task_type](s) for s in synsets[2:]])
    proc = run_cli("dist_data.finetune_data", f"--task_type={task_type}", f"--data_path={tmp_path / 'data'}",
                   f"--save_root={tmp_path / 'out'}", nproc=0, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{folder / 'train.jsonl'}:3:" in proc.stderr and "must be" in proc.stderr, proc.stderr


@pytest.mark.parametrize("task_type,damage", [("classification", "truncated"), ("retrieval", "not_a_zip")])
def test_a_damaged_npz_is_one_line_naming_it(embedded, task_type, damage, tmp_path):
    import shutil

    _, out, _ = embedded
    copy = tmp_path / "emb"
    shutil.copytree(out, copy)
    folder = next(p for p in sorted(copy.iterdir()) if p.is_dir() and not p.name.startswith(".")
                  and json.load(open(p / "meta.json"))["task_type"] == task_type)
    victim = sorted(folder.glob("*.npz"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a zip file at all")
    proc = run_cli("dist_data.combine", "embeddings", f"--task_type={task_type}", f"--embedding_path={copy}",
                   f"--save_root_path={tmp_path / 'c'}", nproc=0, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{victim}: not a readable .npz" in proc.stderr, proc.stderr


def test_an_empty_split_or_no_dataset_of_the_type_is_one_line_not_an_empty_success(tmp_path):
    synsets = [s for s in iter_synsets(pos="n") if s.examples][:6]
    (tmp_path / "data" / "wn_x").mkdir(parents=True)
    (tmp_path / "data" / "wn_x" / "train.jsonl").write_bytes(b"")
    write_jsonl(str(tmp_path / "data" / "wn_x" / "test.jsonl"), [{"text": s.definition, "label": s.lexfile}
                                                                  for s in synsets])
    for verb, out_flag in (("finetune_data", "--save_root"), ("embed_mteb", "--save_root_path")):
        proc = run_cli(f"dist_data.{verb}", "--task_type=classification", f"--data_path={tmp_path / 'data'}",
                       f"{out_flag}={tmp_path / verb}", nproc=0, check=False)
        assert proc.returncode == 2 and "split 'train' is empty" in proc.stderr, proc.stderr
        proc = run_cli(f"dist_data.{verb}", "--task_type=sts", f"--data_path={tmp_path / 'data'}",
                       f"{out_flag}={tmp_path / verb}", nproc=0, check=False)
        assert proc.returncode == 2 and "no dataset folder in the sts layout" in proc.stderr, proc.stderr
