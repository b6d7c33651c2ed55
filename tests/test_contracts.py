"""Each output read the way its consumer reads it. The consumers' contracts are written here from
their code (contrastors' text loader, offsets_count.py and filter_rows.py; sentence-transformers'
cross-encoder trainer; tevatron's and FlagEmbedding's training data), never imported from them."""

import glob
import gzip
import json
import os
from collections import defaultdict

import numpy as np
import pytest

from conftest import run_cli, wordnet_beir, wordnet_pairs, write_jsonl

FLAGS = ["--num_negatives=3", "--range_max=30", "--batch_size=32", "--noprogress"]


# ---------------------------------------------------------------- contrastors

def contrastors_key(url: str) -> str:
    """How contrastors' loader names a shard in counts.json / offsets.json.gz: no scheme, the last
    3 path parts (4 when the URL has 6 or more '/'-separated parts)."""
    parts = url.split("/")
    return "/".join(parts[-4:] if len(parts) >= 6 else parts[-3:]).replace("s3://", "")


def contrastors_read(folder: str, columns=("query", "document", "negatives"), kd: bool = False,
                     url: str | None = None) -> list[dict]:
    """The rows of a triplet dataset as contrastors' streaming loader gets them: counts and offsets
    looked up by the shard's key, each row read at its offsets from the decompressed byte stream,
    its columns checked against the row's metadata, negatives appended to the document."""
    counts = json.load(open(os.path.join(folder, "counts.json")))
    per_file = counts["count_per_file"]
    assert counts["total_count"] == sum(per_file.values())
    with gzip.open(os.path.join(folder, "offsets.json.gz"), "rb") as f:
        offsets = json.load(f)
    out = []
    for shard in sorted(glob.glob(os.path.join(folder, "shard-*.jsonl.gz"))):
        key = contrastors_key(f"{url or folder}/{os.path.basename(shard)}")
        spans = offsets[key]
        assert len(spans) == per_file[key]
        with gzip.open(shard, "rb") as stream:
            for i in range(per_file[key]):
                start, end = spans[str(i)]
                stream.seek(start)
                data = json.loads(stream.read(end - start).decode())
                valid = data["metadata"]["objective"]["triplet"]  # KeyError 'metadata' was the old failure
                assert list(columns) in valid
                row = {"query": data[columns[0]], "document": [data[columns[1]]] + data[columns[2]]}
                if kd:
                    row["kd_scores"] = [data["document_score"]] + data["negatives_scores"]
                out.append(row)
    return out


@pytest.fixture(scope="module")
def nomic(tmp_path_factory):
    root = tmp_path_factory.mktemp("nomic")
    rows = wordnet_pairs(240, seed=31)
    for r in rows[::7]:  # text beyond ASCII: offsets must still land on the rows
        r["document"] = "café – " + r["document"]
    path = write_jsonl(root / "pairs.jsonl", rows)
    flags = [f"--dataset={path}", *FLAGS, "--output_scores"]
    run_cli("dist_data.mine", *flags, "--output_format=nomic", "--shard_rows=100", f"--output_dir={root / 'a'}",
            nproc=0)
    run_cli("dist_data.mine", *flags, "--output_format=nomic", "--shard_rows=100", f"--output_dir={root / 'b'}",
            "--shard_url=s3://my-bucket/wordnet", nproc=2)
    run_cli("dist_data.mine", *flags, "--output_format=n-tuple", f"--output_dir={root / 'n'}", nproc=0)
    return root, rows


def test_nomic_folder_is_what_contrastors_streams(nomic):
    root, rows = nomic
    folder = str(root / "a" / "mined")
    got = contrastors_read(folder, kd=True)
    ntuple = [json.loads(line) for line in open(root / "n" / "mined.jsonl")]
    assert len(got) == len(ntuple) and len(got) > 200
    for g, n in zip(got, ntuple):  # the same mined rows as the n-tuple layout, scores for distillation
        assert g["query"] == n["anchor"]
        assert g["document"] == [n["positive"]] + [n[f"negative_{i}"] for i in (1, 2, 3)]
        assert g["kd_scores"] == n["scores"]
    assert any("café" in d for g in got for d in g["document"])
    assert sorted(os.listdir(folder)) == ["counts.json", "offsets.json.gz", "shard-00000.jsonl.gz",
                                          "shard-00001.jsonl.gz", "shard-00002.jsonl.gz"]
    # the same bytes from 2 ranks; --shard_url names the shards where the trainer will find them
    for name in ("shard-00000.jsonl.gz", "shard-00002.jsonl.gz"):
        assert (root / "a" / "mined" / name).read_bytes() == (root / "b" / "mined" / name).read_bytes()
    keys = json.load(open(root / "b" / "mined" / "counts.json"))["count_per_file"]
    assert sorted(keys) == [f"my-bucket/wordnet/shard-0000{i}.jsonl.gz" for i in range(3)]  # offsets_count.py's names
    assert contrastors_read(str(root / "b" / "mined"), kd=True, url="s3://my-bucket/wordnet") == got


def test_nomic_folder_read_back_and_filter_ids_as_filter_rows_reads_them(nomic, tmp_path):
    root, _ = nomic
    folder = root / "a" / "mined"
    out = tmp_path / "f"
    run_cli("dist_data.filter", f"--dataset={folder}", "--query_key=query", "--document_key=document", "--write_ids",
            "--batch_size=32", f"--output_dir={out}", "--noprogress", nproc=2)
    stats = json.load(open(out / "stats.json"))["counts"]
    counts = json.load(open(folder / "counts.json"))
    assert stats["input_rows"] == stats["read"] == counts["total_count"]  # counts.json/offsets.json.gz are no rows
    # filter_rows.py: every ids_to_keep_*.json of the folder; ids over the shards in sorted order
    keep = set()
    for path in glob.glob(str(out / "ids_to_keep_*.json")):
        keep.update(json.load(open(path)))
    kept, gid = [], 0
    for key in sorted(counts["count_per_file"]):
        with gzip.open(folder / os.path.basename(key), "rt") as f:
            for line in f:
                if gid in keep:
                    kept.append(json.loads(line))
                gid += 1
    assert gid == counts["total_count"]
    filtered = [json.loads(line) for line in open(out / "filtered.jsonl")]
    assert kept == filtered and 0 < len(kept) == stats["kept"] < gid


# ---------------------------------------------------------------- sentence-transformers' list losses

def test_labeled_list_scores_replace_labels_and_list_losses_train(tmp_path):
    import datasets
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import ListNetLoss

    from dist_data.core.models import resolve_model

    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(60, seed=3, synonyms=False))
    run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--output_format=labeled-list", "--output_scores",
            f"--output_dir={tmp_path / 's'}", nproc=0)
    run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--output_format=labeled-list",
            f"--output_dir={tmp_path / 'l'}", nproc=0)
    scored = datasets.load_dataset("json", data_files=str(tmp_path / "s" / "mined.jsonl"), split="train")
    labeled = datasets.load_dataset("json", data_files=str(tmp_path / "l" / "mined.jsonl"), split="train")
    assert scored.column_names == ["anchor", "documents", "scores"]  # scores instead of labels, not beside them
    assert labeled.column_names == ["anchor", "documents", "labels"] and labeled[0]["labels"] == [1, 0, 0, 0]
    torch.manual_seed(0)
    model = CrossEncoder(resolve_model(None), num_labels=1, device="cpu")
    args = CrossEncoderTrainingArguments(output_dir=str(tmp_path / "ce"), max_steps=2, per_device_train_batch_size=4,
                                         report_to=[], save_strategy="no", use_cpu=True)
    for ds in (scored, labeled):  # "expects two inputs, got 3" was the old failure
        result = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=ListNetLoss(model)).train()
        assert np.isfinite(result.training_loss)


# ---------------------------------------------------------------- one row per query: tevatron, FlagEmbedding

@pytest.fixture(scope="module")
def per_query(tmp_path_factory):
    root = tmp_path_factory.mktemp("perquery")
    data = wordnet_beir(root / "wn", 300, seed=1)
    p = data["paths"]
    beir = [f"--queries={p['queries']}", f"--corpus={p['corpus']}", f"--qrels={p['qrels']}", *FLAGS, "--output_scores"]
    for fmt, nproc in (("tevatron", 2), ("flagembedding", 0), ("triplet", 0)):  # rows grouped over 2 ranks, and 1
        run_cli("dist_data.mine", *beir, f"--output_format={fmt}", f"--output_dir={root / fmt}", nproc=nproc)
    return data, root


def test_tevatron_and_flagembedding_hold_every_positive_of_a_query_in_one_row(per_query):
    data, root = per_query
    positives = defaultdict(set)
    for q, d, score in data["qrels"]:
        if score > 0:
            positives[q].add(d)
    text = {c["_id"]: (c["title"] + " " + c["text"]).strip() for c in data["corpus"]}
    queries = {q["_id"]: q["text"] for q in data["queries"] if positives[q["_id"]]}
    tev = [json.loads(line) for line in open(root / "tevatron" / "mined.jsonl")]
    flag = [json.loads(line) for line in open(root / "flagembedding" / "mined.jsonl")]
    assert [r["query_id"] for r in tev] == list(queries) and len(flag) == len(tev)
    assert any(len(r["positive_passages"]) > 1 for r in tev)
    for t, f in zip(tev, flag):
        # tevatron's training data: query, positive_passages / negative_passages of {docid, title, text}
        assert {p["docid"] for p in t["positive_passages"]} == positives[t["query_id"]]
        assert not {n["docid"] for n in t["negative_passages"]} & positives[t["query_id"]]
        assert len(t["negative_passages"]) == 3
        # FlagEmbedding's: query, pos, neg (texts) and the scores its distillation reads, aligned
        assert set(f) == {"query", "pos", "neg", "pos_scores", "neg_scores"} and f["query"] == t["query"]
        assert f["pos"] == [text[p["docid"]] for p in t["positive_passages"]]
        assert f["neg"] == [text[n["docid"]] for n in t["negative_passages"]]
        assert f["pos_scores"] == [p["score"] for p in t["positive_passages"]]
        assert len(f["neg_scores"]) == len(f["neg"]) and f["neg_scores"] == sorted(f["neg_scores"], reverse=True)
    # the negatives of a row are those mined for the query's first (query, positive) pair
    triplets = defaultdict(list)
    for line in open(root / "triplet" / "mined.jsonl"):
        r = json.loads(line)
        triplets[(r["anchor"], r["positive"])].append(r["negative"])
    for f in flag:
        assert triplets[(f["query"], f["pos"][0])] == f["neg"]


# ---------------------------------------------------------------- past mine_hard_negatives' options

def test_include_positives_agrees_with_sentence_transformers(model, tmp_path):
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    rows = wordnet_pairs(150, seed=9, synonyms=False)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run_cli("dist_data.mine", f"--dataset={path}", "--num_negatives=4", "--batch_size=32", "--include_positives",
            "--output_format=n-tuple", f"--output_dir={tmp_path / 'o'}", "--noprogress", nproc=0)
    ref = mine_hard_negatives(datasets.Dataset.from_dict({"q": [r["query"] for r in rows],
                                                          "d": [r["document"] for r in rows]}),
                              model, num_negatives=4, include_positives=True, output_format="n-tuple",
                              batch_size=32, verbose=False)
    ours = [json.loads(line) for line in open(tmp_path / "o" / "mined.jsonl")]
    assert len(ours) == len(ref)
    same = sum([o[f"negative_{i}"] for i in range(1, 5)] == [r[f"negative_{i}"] for i in range(1, 5)]
               for o, r in zip(ours, ref))
    assert same >= 0.97 * len(ref)
    assert sum(o["positive"] in [o[f"negative_{i}"] for i in range(1, 5)] for o in ours) > 0.3 * len(ours)
    proc = run_cli("dist_data.mine", f"--dataset={path}", "--include_positives", f"--output_dir={tmp_path / 'x'}",
                   nproc=0, check=False)
    assert proc.returncode == 2 and "--include_positives writes n-tuple rows" in proc.stderr


def test_input_negatives_join_the_candidates_against_brute_force(model, tmp_path):
    import random

    from dist_data.text.wordnet import iter_synsets

    rng = random.Random(6)
    synsets = rng.sample([s for s in iter_synsets(pos="n") if s.examples], 160)
    # each query brings a usage example of another synset as its own negative: text found nowhere else
    rows = [{"query": s.lemmas[0], "pos": [s.definition], "neg": [synsets[(i + 1) % 120].examples[0]]}
            for i, s in enumerate(synsets[:120])]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    flags = [f"--dataset={path}", "--num_negatives=2", "--range_max=10", "--batch_size=32", "--output_format=n-tuple",
             "--noprogress"]
    run_cli("dist_data.mine", *flags, "--use_input_negatives", f"--output_dir={tmp_path / 'with'}", nproc=2)
    run_cli("dist_data.mine", *flags, f"--output_dir={tmp_path / 'without'}", nproc=0)
    docs = list(dict.fromkeys([r["pos"][0] for r in rows] + [r["neg"][0] for r in rows]))
    q = model.encode([r["query"] for r in rows], batch_size=32, normalize_embeddings=True)
    d = model.encode(docs, batch_size=32, normalize_embeddings=True)
    with_neg = [json.loads(line) for line in open(tmp_path / "with" / "mined.jsonl")]
    without = [json.loads(line) for line in open(tmp_path / "without" / "mined.jsonl")]
    agree = 0
    for i, r in enumerate(rows):
        scores = q[i] @ d.T
        ranked = [docs[j] for j in sorted(range(len(docs)), key=lambda j: (-scores[j], j)) if docs[j] != r["pos"][0]]
        agree += [with_neg[i]["negative_1"], with_neg[i]["negative_2"]] == ranked[:2]
    assert agree >= 0.97 * len(rows)
    given = {r["neg"][0] for r in rows}
    assert any(o[k] in given for o in with_neg for k in ("negative_1", "negative_2"))
    assert not any(o[k] in given for o in without for k in ("negative_1", "negative_2"))
    assert json.load(open(tmp_path / "with" / "stats.json"))["counts"]["input_negatives"] == 120


def test_prompt_names_and_lengths_per_role(tmp_path):
    import shutil

    from dist_data.core.models import resolve_model

    prompted = tmp_path / "model"
    shutil.copytree(resolve_model(None), prompted)
    config = json.load(open(prompted / "config_sentence_transformers.json"))
    config["prompts"] = {"query": "query: ", "document": "passage: ", "short": "q: "}
    json.dump(config, open(prompted / "config_sentence_transformers.json", "w"))
    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(80, seed=2, synonyms=False))
    flags = [f"--dataset={path}", *FLAGS, "--output_scores"]
    # the model's own prompts by default (as encode_query / encode_document), or the same texts given raw
    run_cli("dist_data.mine", *flags, f"--model_name={prompted}", f"--output_dir={tmp_path / 'a'}", nproc=0)
    run_cli("dist_data.mine", *flags, "--query_prompt=query: ", "--document_prompt=passage: ",
            f"--output_dir={tmp_path / 'b'}", nproc=0)
    assert (tmp_path / "a" / "mined.jsonl").read_bytes() == (tmp_path / "b" / "mined.jsonl").read_bytes()
    run_cli("dist_data.mine", *flags, f"--model_name={prompted}", "--query_prompt_name=short",
            f"--output_dir={tmp_path / 'd'}", nproc=0)
    run_cli("dist_data.mine", *flags, "--query_prompt=q: ", "--document_prompt=passage: ",
            f"--output_dir={tmp_path / 'e'}", nproc=0)
    d = (tmp_path / "d" / "mined.jsonl").read_bytes()
    assert d == (tmp_path / "e" / "mined.jsonl").read_bytes() != (tmp_path / "a" / "mined.jsonl").read_bytes()
    proc = run_cli("dist_data.mine", *flags, f"--model_name={prompted}", "--query_prompt_name=nope",
                   f"--output_dir={tmp_path / 'x'}", nproc=0, check=False)
    assert proc.returncode == 2 and "defines no such prompt (it has: document, query, short)" in proc.stderr
    # queries cut to 4 tokens, documents not: the positive's score is that of those two vectors
    from sentence_transformers import SentenceTransformer

    run_cli("dist_data.mine", *flags, "--query_max_seq_length=4", f"--output_dir={tmp_path / 'f'}", nproc=0)
    row = json.loads(open(tmp_path / "f" / "mined.jsonl").readline())
    st = SentenceTransformer(resolve_model(None), device="cpu")
    d = st.encode([row["positive"]], normalize_embeddings=True)[0]
    st.max_seq_length = 4
    q = st.encode([row["anchor"]], normalize_embeddings=True)[0]
    assert abs(float(q @ d) - row["scores"][0]) < 1e-5


def test_a_sweep_with_a_shared_cache_embeds_and_searches_once(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(200, seed=12))
    shared = tmp_path / "shared"
    first = run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--absolute_margin=0.0", f"--cache_dir={shared}",
                    f"--output_dir={tmp_path / 'm0'}", nproc=2)
    assert "read back from the cache" not in first.stderr
    later = run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--range_min=2", f"--cache_dir={shared}",
                    f"--output_dir={tmp_path / 'r'}", nproc=2)
    # the later run of the sweep: nothing embedded, nothing searched
    assert "served from the cache" in later.stderr and "read back from the cache" in later.stderr
    assert json.load(open(tmp_path / "r" / "stats.json"))["counts"]["cached_blocks"] > 0
    assert not os.listdir(tmp_path / "r" / "cache")  # the run folder's own cache stays empty
    # the cache never changes a result: the same bytes as the run on its own
    run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--range_min=2", f"--output_dir={tmp_path / 'alone'}",
            nproc=0)
    assert (tmp_path / "r" / "mined.jsonl").read_bytes() == (tmp_path / "alone" / "mined.jsonl").read_bytes()


# ---------------------------------------------------------------- scores a user can look at

def test_score_quantiles_and_plots_match_the_rows(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(150, seed=13))
    run_cli("dist_data.mine", f"--dataset={path}", *FLAGS, "--output_scores", "--output_format=n-tuple",
            f"--output_dir={tmp_path / 'm'}", nproc=2)
    rows = [json.loads(line) for line in open(tmp_path / "m" / "mined.jsonl")]
    stats = json.load(open(tmp_path / "m" / "stats.json"))["scores"]
    pos = np.array([r["scores"][0] for r in rows])
    neg = np.array([s for r in rows for s in r["scores"][1:]])
    diff = np.array([r["scores"][0] - s for r in rows for s in r["scores"][1:]])
    for name, values in (("positive", pos), ("negative", neg), ("difference", diff)):
        assert stats[name]["count"] == len(values)
        for q, key in ((0.25, "25%"), (0.5, "50%"), (0.75, "75%")):
            assert abs(stats[name][key] - np.quantile(values, q)) < 2e-6
        assert abs(stats[name]["mean"] - values.mean()) < 2e-6 and abs(stats[name]["std"] - values.std(ddof=1)) < 2e-6
    assert (tmp_path / "m" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_cli("dist_data.filter", f"--dataset={path}", "--batch_size=32", f"--output_dir={tmp_path / 'f'}",
            "--noprogress", nproc=2)
    fstats = json.load(open(tmp_path / "f" / "stats.json"))
    kept = fstats["counts"]["kept"]
    own = fstats["scores"]["own_document"]
    assert own["count"] == fstats["counts"]["read"] and fstats["scores"]["margin"]["count"] == own["count"]
    assert 0 < kept < own["count"] and (tmp_path / "f" / "scores.png").stat().st_size > 10_000


def test_nomic_rows_are_fixed_width(tmp_path):
    # 6 pairs: at most 5 candidates a query, fewer than the 6 negatives asked; contrastors batches
    # 1 + num_negatives documents a query, so such rows are dropped (and counted), never written short
    path = write_jsonl(tmp_path / "pairs.jsonl", wordnet_pairs(6, seed=5, synonyms=False))
    run_cli("dist_data.mine", f"--dataset={path}", "--num_negatives=6", "--output_format=nomic", "--noprogress",
            f"--output_dir={tmp_path / 'o'}", nproc=0)
    counts = json.load(open(tmp_path / "o" / "stats.json"))["counts"]
    assert counts["pairs"] == counts["dropped"]["too_few_negatives"] == 6 and counts["rows_written"] == 0
    assert json.load(open(tmp_path / "o" / "mined" / "counts.json"))["total_count"] == 0
