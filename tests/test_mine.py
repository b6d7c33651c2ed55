"""``dist_data.mine``: selection rules against a brute-force reference, parity with
sentence-transformers' ``mine_hard_negatives`` on real WordNet text, and torchrun end to end."""

import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli, wordnet_beir, wordnet_pairs, write_jsonl
from dist_data.text.layouts import beir_join
from dist_data.core.select import canonical_topk, select_negatives
from dist_data.text.wordnet import iter_synsets


def reference_negatives(scores, positives, pos_score, num_negatives, range_min, range_max, abs_margin, max_score,
                        query_doc=-1):
    """One query, by hand: rank all documents, drop the query's own text, positives and filtered ones,
    slice the window."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    kept = [j for j in order if j not in positives and j != query_doc
            and not (abs_margin is not None and scores[j] + abs_margin > pos_score)
            and not (max_score is not None and scores[j] > max_score)]
    return kept[range_min:range_max][:num_negatives]


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 30), st.integers(1, 4), st.integers(0, 3), st.integers(1, 10), st.integers(0, 2**31 - 1),
       st.sampled_from([None, 0.0, 0.1]), st.sampled_from([None, 0.5]), st.booleans())
def test_top_selection_matches_brute_force(n_docs, num_neg, range_min, width, seed, abs_margin, max_score,
                                           query_text_in_corpus):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(-1, 1, size=(4, n_docs)), 1)  # many exact ties
    positives = [rng.choice(n_docs, size=rng.integers(1, 3), replace=False) for _ in range(4)]
    pos_score = np.array([scores[i, p].min() for i, p in enumerate(positives)])
    range_max = range_min + width
    ids = np.tile(np.arange(n_docs), (4, 1))
    # the document whose text is the query's (-1: none), sometimes also one of its positives
    query_doc = rng.integers(-1, n_docs, size=4) if query_text_in_corpus else None
    cand_scores, cand_ids = canonical_topk(scores, ids, n_docs)
    neg_ids, neg_scores, removed = select_negatives(
        cand_ids, cand_scores, positives, pos_score, num_negatives=num_neg, range_min=range_min,
        range_max=range_max, absolute_margin=abs_margin, max_score=max_score, query_doc_ids=query_doc)
    for i in range(4):
        ref = reference_negatives(scores[i], set(positives[i].tolist()), pos_score[i], num_neg, range_min,
                                  range_max, abs_margin, max_score, -1 if query_doc is None else query_doc[i])
        assert [j for j in neg_ids[i].tolist() if j >= 0] == ref
    own = 0 if query_doc is None else int((query_doc >= 0).sum())
    assert removed.get("query_text", 0) == own  # counted under its own reason, before the positives
    assert removed["positive"] == sum(len(p) for p in positives) - sum(
        int(query_doc[i] in positives[i]) for i in range(4) if query_doc is not None)


def test_the_query_is_never_its_own_negative_unless_it_is_its_own_positive():
    ids = np.array([[5, 7, 9, 11]] * 2)
    scores = np.array([[0.9, 0.8, 0.7, 0.6]] * 2)
    positives = [np.array([7]), np.array([5])]  # the second query's text is its own positive
    args = dict(num_negatives=4, exclude_positives=False, query_doc_ids=np.array([5, 5]))
    neg_ids, _, removed = select_negatives(ids, scores, positives, np.zeros(2), **args)
    assert neg_ids[0].tolist() == [7, 9, 11, -1] and neg_ids[1].tolist() == [5, 7, 9, 11]
    assert removed == {"query_text": 1}


def test_random_sampling_is_seeded_per_query_and_stays_in_the_window():
    scores = np.linspace(1, 0, 50)[None, :].repeat(3, axis=0)
    ids = np.tile(np.arange(50), (3, 1))
    args = dict(num_negatives=5, range_min=2, range_max=30, sampling="random")
    a = select_negatives(ids, scores, [np.array([0])] * 3, np.ones(3), seeds=np.array([1, 2, 1]), **args)[0]
    b = select_negatives(ids, scores, [np.array([0])] * 3, np.ones(3), seeds=np.array([1, 2, 1]), **args)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], a[2])  # same seed, same draw
    assert not np.array_equal(a[0], a[1])
    assert ((a >= 3) & (a < 31)).all() and (np.diff(a, axis=1) > 0).all()  # window after the positive, sorted


def assert_same_negatives(ours: dict, ref: dict, name: str, min_agreement: float = 0.99) -> None:
    """``{(query, positive): [(negative, score), ...]}`` equal, but for swaps of tied scores (1e-5)."""
    assert set(ours) == set(ref)
    agree = tie = 0
    for key, negs in ref.items():
        mine = ours[key]
        if [n for n, _ in mine] == [n for n, _ in negs]:
            agree += 1
        else:  # a swap is allowed only between candidates whose scores tie (up to float rounding)
            assert len(mine) == len(negs), (key, mine, negs)
            for (a, sa), (b, sb) in zip(mine, negs):
                assert a == b or abs(sa - sb) < 1e-5, (key, mine, negs)
            tie += 1
    print(f"agreement with {name}: {agree}/{len(ref)} identical, {tie} differing only in ties")
    assert agree / len(ref) >= min_agreement


def read_triplets(path) -> dict:
    out = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        out[(r["anchor"], r["positive"])].append((r["negative"], r["scores"][1]))
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    rows = wordnet_pairs(500, seed=11)
    return rows, write_jsonl(tmp_path_factory.mktemp("mine") / "pairs.jsonl", rows)


MINE_FLAGS = ["--num_negatives=3", "--range_min=1", "--range_max=20", "--absolute_margin=0.05",
              "--batch_size=32", "--output_format=triplet", "--output_scores=True", "--progress=False"]


def reference_mining(model, pairs: list[tuple[str, str]], use_faiss: bool, **settings) -> dict:
    """``mine_hard_negatives`` with :data:`MINE_FLAGS`' settings (or ``settings``), as
    ``{(query, positive): [(neg, score)]}``."""
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    ds = datasets.Dataset.from_dict({"query": [q for q, _ in pairs], "document": [p for _, p in pairs]})
    settings = {"range_min": 1, "range_max": 20, "absolute_margin": 0.05, "num_negatives": 3, **settings}
    mined = mine_hard_negatives(ds, model, anchor_column_name="query", positive_column_name="document",
                                sampling_strategy="top", output_format="triplet", output_scores=True,
                                batch_size=32, use_faiss=use_faiss, verbose=False, **settings)
    ref = defaultdict(list)
    for r in mined:
        ref[(r["query"], r["document"])].append((r["negative"], r["scores"][1]))
    return ref


def test_parity_with_sentence_transformers_mine_hard_negatives(pairs_file, model, tmp_path):
    rows, path = pairs_file
    out = tmp_path / "ours"
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={out}", *MINE_FLAGS, nproc=0)
    ref = reference_mining(model, [(r["query"], r["document"]) for r in rows], use_faiss=False)
    assert_same_negatives(read_triplets(out / "mined.jsonl"), ref, "mine_hard_negatives")


def test_mine_is_identical_for_any_world_size_with_random_sampling(pairs_file, tmp_path):
    _, path = pairs_file
    flags = ["--num_negatives=4", "--range_min=2", "--range_max=30", "--sampling_strategy=random", "--seed=7",
             "--batch_size=32", "--output_format=n-tuple", "--too_few=keep", "--progress=False"]
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'a'}", *flags, nproc=0)
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'b'}", *flags, nproc=2)
    a = (tmp_path / "a" / "mined.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "mined.jsonl").read_bytes()
    rows = [json.loads(line) for line in a.decode().splitlines()]
    rows = [{"document": r["positive"], "negatives": [r[f"negative_{i}"] for i in range(1, 5)]} for r in rows]
    stats = json.load(open(tmp_path / "b" / "stats.json"))
    c = stats["counts"]
    assert c["pairs"] == c["kept"] + c["dropped"]["too_few_negatives"] and c["kept"] == c["rows_written"] == len(rows)
    for r in rows:
        assert r["document"] not in r["negatives"] and len(set(r["negatives"])) == len(r["negatives"])


def layout_rows(n: int, seed: int) -> tuple[list, list[tuple[str, str]]]:
    """WordNet rows in the four training-data layouts, and the (query, positive) pairs they mean.

    A synset's lemma is the query; its definition and usage examples are its positives.
    """
    import random

    rng = random.Random(seed)
    synsets = rng.sample([s for s in iter_synsets(pos="nv") if s.examples], n)
    rows, pairs = [], []
    for i, s in enumerate(synsets):
        q, positives = s.lemmas[0], [s.definition, *s.examples[: 1 + i % 2]]
        if i % 4 == 0:
            rows.append({"query": q, "document": s.definition})
            positives = positives[:1]
        elif i % 4 == 1:
            rows.append([q, s.definition, "a given negative, not used"])
            positives = positives[:1]
        elif i % 4 == 2:
            rows.append({"query": q, "pos": positives, "neg": ["not used"]})
        else:
            rows.append({"set": [q, *positives]})
        pairs += [(q, p) for p in positives]
    return rows, pairs


def test_training_data_layouts_match_mine_hard_negatives_on_the_same_pairs(model, tmp_path):
    rows, pairs = layout_rows(400, seed=5)
    path = write_jsonl(tmp_path / "layouts.jsonl", rows)
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'ours'}", *MINE_FLAGS, nproc=2)
    ref = reference_mining(model, pairs, use_faiss=True)
    assert len(pairs) > len(rows) * 1.3  # many rows hold several positives
    assert_same_negatives(read_triplets(tmp_path / "ours" / "mined.jsonl"), ref,
                          "mine_hard_negatives (training-data layouts)")
    stats = json.load(open(tmp_path / "ours" / "stats.json"))
    assert stats["counts"]["pairs"] == len(pairs)


RECIPE = ["--range_min=2", "--range_max=100", "--num_negatives=16", "--sampling_strategy=random", "--seed=3",
          "--batch_size=32", "--output_format=tevatron", "--output_scores=True", "--progress=False"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """The common recipe with a separate corpus: plain process/gather, 2 ranks/sharded, 2 ranks/gather."""
    root = tmp_path_factory.mktemp("recipe")
    rows = wordnet_pairs(300, seed=21)
    pairs = write_jsonl(root / "pairs.jsonl", rows)
    import random

    extra = random.Random(2).sample([s for s in iter_synsets(pos="n") if s.examples], 400)
    corpus = write_jsonl(root / "corpus.jsonl", [{"_id": s.id, "title": s.lemmas[0], "text": s.examples[0]}
                                                 for s in extra])
    flags = [f"--dataset={pairs}", f"--corpus={corpus}", *RECIPE]
    outs = {}
    for name, nproc, mode in [("ws1", 0, "gather"), ("ws2_sharded", 2, "sharded"), ("ws2", 2, "gather")]:
        outs[name] = root / name
        run_cli("dist_data.mine", *flags, f"--output_dir={outs[name]}", f"--index={mode}", nproc=nproc)
    return {"rows": rows, "extra": extra, "flags": flags, "outs": outs}


def test_recipe_is_byte_identical_for_any_world_size_and_index_mode(recipe):
    outs = recipe["outs"]
    ref = (outs["ws1"] / "mined.jsonl").read_bytes()
    assert ref == (outs["ws2_sharded"] / "mined.jsonl").read_bytes()
    assert ref == (outs["ws2"] / "mined.jsonl").read_bytes()


def test_recipe_negatives_come_from_ranks_3_to_100_of_an_independent_ranking(recipe, model):
    rows = recipe["rows"]
    docs = list(dict.fromkeys([beir_join(s.lemmas[0], s.examples[0]) for s in recipe["extra"]]
                              + [r["document"] for r in rows]))
    out = [json.loads(line) for line in open(recipe["outs"]["ws2"] / "mined.jsonl")]
    assert len(out) == len(rows)
    positives = defaultdict(set)
    for r in rows:
        positives[r["query"]].add(r["document"])
    q_emb = model.encode([r["query"] for r in out], batch_size=32, normalize_embeddings=True)
    d_emb = model.encode(docs, batch_size=32, normalize_embeddings=True)
    scores = q_emb @ d_emb.T
    for i, r in enumerate(out):
        ranked = np.sort([s for s, d in zip(scores[i], docs) if d not in positives[r["query"]]])[::-1]
        negs = r["negative_passages"]
        assert len(negs) == 16 and len({n["docid"] for n in negs}) == 16
        assert not {beir_join(n["title"], n["text"]) for n in negs} & positives[r["query"]]
        for n in negs:  # inside the window [2, 100) of the ranking without positives
            assert ranked[99] - 1e-5 <= n["score"] <= ranked[2] + 1e-5
        assert r["positive_passages"][0]["text"] == rows[i]["document"]


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    root = tmp_path_factory.mktemp("beir")
    data = wordnet_beir(root / "wn", 300, seed=1)
    p = data["paths"]
    out = root / "out"
    run_cli("dist_data.mine", f"--queries={p['queries']}", f"--corpus={p['corpus']}", f"--qrels={p['qrels']}",
            f"--output_dir={out}", "--num_negatives=3", "--batch_size=32", "--output_format=tevatron",
            "--output_scores=True", "--index=sharded", "--progress=False", nproc=2)
    return data, out


def test_qrels_mode_one_row_per_judged_positive_against_brute_force(beir, model):
    data, out = beir
    rows = [json.loads(line) for line in open(out / "mined.jsonl")]
    positives = defaultdict(list)
    for q, d, score in data["qrels"]:
        if score > 0:
            positives[q].append(d)
    # tevatron's datasets: one row per query, holding all its judged positives
    assert [(r["query_id"], [p["docid"] for p in r["positive_passages"]]) for r in rows] == \
        [(q["_id"], sorted(positives[q["_id"]], key=[c["_id"] for c in data["corpus"]].index))
         for q in data["queries"] if positives[q["_id"]]]
    assert any(len(r["positive_passages"]) > 1 for r in rows)  # queries with several judged positives
    expected = [(q["_id"], d) for q in data["queries"] for d in positives[q["_id"]]]
    first = {}
    for qid, d in expected:
        first.setdefault(qid, d)
    expected = list(first.items())  # the negatives of a row are mined for its query (its first pair's draw)

    corpus = data["corpus"]
    by_id = {c["_id"]: c for c in corpus}
    text = {q["_id"]: q["text"] for q in data["queries"]}
    d_emb = model.encode([beir_join(c["title"], c["text"]) for c in corpus], batch_size=32, normalize_embeddings=True)
    q_emb = model.encode([text[q] for q, _ in expected], batch_size=32, normalize_embeddings=True)
    ours, ref = {}, {}
    for i, (r, (qid, pid)) in enumerate(zip(rows, expected)):
        scores = q_emb[i] @ d_emb.T
        order = sorted(range(len(corpus)), key=lambda j: (-scores[j], j))
        ref[(qid, pid)] = [(corpus[j]["_id"], scores[j]) for j in order if corpus[j]["_id"] not in positives[qid]][:3]
        ours[(qid, pid)] = [(n["docid"], n["score"]) for n in r["negative_passages"]]
        assert r["query"] == text[qid]
        for passage in r["positive_passages"]:
            doc = by_id[passage["docid"]]
            assert (passage["title"], passage["text"]) == (doc["title"], doc["text"])
            assert abs(passage["score"] - scores[corpus.index(doc)]) < 1e-5
    assert_same_negatives(ours, ref, "brute force (BeIR qrels)")
    counts = json.load(open(out / "stats.json"))["counts"]
    assert counts["queries_without_positives"] == 20 and counts["qrels_not_positive"] == 1
    assert counts["with_all_negatives"] == counts["kept"] == len(rows) == len(expected)
    assert counts["pairs"] == counts["kept"] + counts["merged_into_query_row"] == sum(map(len, positives.values()))


def test_qrels_mode_bad_judgements_error_or_rejects(beir, tmp_path):
    data, _ = beir
    p = data["paths"]
    lines = open(p["qrels"]).read().splitlines()
    lines[3] = lines[3].split("\t")[0] + "\tno-such-doc\t1"
    lines.insert(5, "q1 n000 1")
    bad = tmp_path / "train.tsv"
    bad.write_text("\n".join(lines) + "\n")
    flags = [f"--queries={p['queries']}", f"--corpus={p['corpus']}", f"--qrels={bad}", "--batch_size=32",
             "--progress=False"]
    proc = run_cli("dist_data.mine", *flags, f"--output_dir={tmp_path / 'a'}", nproc=2, check=False)
    assert proc.returncode != 0
    assert f"{bad}:" in proc.stderr and ("no-such-doc" in proc.stderr or "3 tab-separated" in proc.stderr)
    assert not (tmp_path / "a" / "mined.jsonl").exists()
    run_cli("dist_data.mine", *flags, f"--output_dir={tmp_path / 'b'}", "--on_bad_rows=skip", nproc=2)
    rejects = [json.loads(line) for line in open(tmp_path / "b" / "rejects.jsonl")]
    assert sorted((r["line"], r["reason"].split(" ")[0]) for r in rejects) == [(4, "corpus-id"), (6, "expected")]


def test_bad_pair_rows_error_names_file_and_line_or_are_rejected(tmp_path):
    rows = wordnet_pairs(60, seed=4, synonyms=False)
    rows[10] = {"query": "a query", "pos": []}
    rows[20] = {"set": ["a lonely query"]}
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'a'}", "--progress=False",
                   nproc=2, check=False)
    assert proc.returncode != 0 and f"{path}:11: 'pos' must be a non-empty list" in proc.stderr
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'b'}", "--on_bad_rows=skip",
            "--progress=False", nproc=2)
    rejects = [json.loads(line) for line in open(tmp_path / "b" / "rejects.jsonl")]
    assert [r["line"] for r in rejects] == [11, 21]
    assert sum(1 for _ in open(tmp_path / "b" / "mined.jsonl")) == 3 * 58


def scoring_cross_encoder(folder: str, **kwargs):
    """A cross-encoder head over the shipped MiniLM (seeded), saved in ``folder`` and loaded back with
    ``kwargs``: scores that differ from the bi-encoder's."""
    import torch
    from sentence_transformers import CrossEncoder

    from dist_data.core.models import resolve_model

    torch.manual_seed(0)
    ce = CrossEncoder(resolve_model(None), num_labels=1, device="cpu")
    with torch.no_grad():
        ce.model.classifier.weight.mul_(30)
    ce.save(folder)
    return CrossEncoder(folder, device="cpu", **kwargs)


def test_cross_encoder_rescoring_matches_mine_hard_negatives(model, tmp_path):
    ce = scoring_cross_encoder(str(tmp_path / "ce"))
    rows = wordnet_pairs(120, seed=8, synonyms=False)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run_cli("dist_data.mine", f"--dataset={path}", f"--output_dir={tmp_path / 'out'}", f"--cross_encoder={tmp_path / 'ce'}",
            "--num_negatives=2", "--range_max=8", "--output_scores=True", "--batch_size=32", "--progress=False",
            nproc=2)
    ours = read_triplets(tmp_path / "out" / "mined.jsonl")
    # sentence-transformers >= 6.3 rescores with a cross-encoder whenever one is given: its scores
    # order the candidates and are the scores written
    ref = reference_mining(model, [(r["query"], r["document"]) for r in rows], use_faiss=False, cross_encoder=ce,
                           range_min=0, range_max=8, absolute_margin=None, num_negatives=2)
    assert sum(map(len, ref.values())) > len(ref)  # negatives were found
    assert_same_negatives(ours, ref, "mine_hard_negatives with a cross-encoder", min_agreement=0.95)
