"""Catalogue mining: ``dist_data.pairs`` (brand-synonym candidates), ``dist_data.triplets`` (category
triplets) and ``dist_data.catalog clean``, on real text: WordNet synonyms stand in for brand synonyms
(lemmas of one synset), WordNet lexicographer files for product categories, and WordNet lemmas
written in Cyrillic (by a table in this file) for a Russian catalogue.
"""

from __future__ import annotations

import csv
import collections
import json
import random

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from dist_data.product.names import char_ratio, normalize_name, transliterations
from dist_data.core.wordnet import iter_synsets

MIN_SCORE = 0.8


def write_csv(path, header: list[str], rows: list[list], delimiter: str = ",") -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, delimiter=delimiter)
        out.writerow(header)
        out.writerows(rows)
    return str(path)


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def synonym_names(n_synsets: int = 700, seed: int = 0) -> tuple[list[str], set[frozenset[str]]]:
    """Lemmas of sampled noun synsets with at least two lemmas (as written, ``_`` as space), plus a few
    spellings that normalise to an earlier one; the synonym pairs are the ground truth."""
    synsets = [s for s in iter_synsets(pos="n") if len(s.lemmas) >= 2]
    chosen = random.Random(seed).sample(synsets, n_synsets)
    names, truth = [], set()
    for s in chosen:
        lemmas = [lemma.replace("_", " ") for lemma in s.lemmas]
        names.extend(lemmas)
        truth.update(frozenset((a, b)) for i, a in enumerate(lemmas) for b in lemmas[i + 1 :] if
                     normalize_name(a) != normalize_name(b))
    names += [names[0].upper(), f"  {names[3]}!", names[5].replace(" ", "-")] + [names[7].upper() + "\u2122"] * 2
    return names, truth


@pytest.fixture(scope="module")
def brands(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brands")
    names, truth = synonym_names()
    path = write_csv(folder / "brands.csv", ["brand_id", "brandname"], [[i, n] for i, n in enumerate(names)])
    flags = [f"--dataset={path}", "--text_key=brandname", f"--min_score={MIN_SCORE}"]
    # two ranks search one neighbour deep at first: the names whose one slot is above --min_score are searched
    # again deeper, so their pairs are the same as with 200 (test_pairs_are_exact_whatever_max_neighbors)
    for tag, nproc, index, depth in (("one", 0, "gather", 200), ("two", 2, "sharded", 1)):
        run_cli("dist_data.pairs", *flags, f"--index={index}", f"--max_neighbors={depth}",
                f"--output_dir={folder / tag}", nproc=nproc)
    return folder, names, truth


# ---------------------------------------------------------------- pairs

def test_pairs_equal_brute_force_numpy(brands, model):
    folder, names, truth = brands
    got = read_csv(folder / "one" / "pairs.csv")
    stats = json.loads((folder / "one" / "stats.json").read_text())["counts"]
    assert stats["searched_deeper"] == 0  # 200 neighbours hold every pair above the threshold

    # the reference: each normal form's most frequent spelling (ties: the smallest), its first row, and a
    # full cosine matrix in numpy
    spellings: dict[str, collections.Counter] = {}
    first: dict[str, int] = {}
    for row, n in enumerate(names):
        spellings.setdefault(normalize_name(n), collections.Counter())[n] += 1
        first.setdefault(normalize_name(n), row)
    norms = sorted(first, key=first.get)
    rows = [first[n] for n in norms]
    texts = [min(spellings[n], key=lambda t: (-spellings[n][t], t)) for n in norms]
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True).astype(np.float64)
    sims = emb @ emb.T
    i, j = np.triu_indices(len(rows), k=1)
    above = sims[i, j] >= MIN_SCORE
    borderline = np.abs(sims[i, j] - MIN_SCORE) < 1e-5
    want = {frozenset((rows[a], rows[b])) for a, b in zip(i[above & ~borderline], j[above & ~borderline])}
    found = {frozenset((int(r["row_a"]), int(r["row_b"]))) for r in got}
    assert borderline.sum() <= 2
    assert want <= found and len(found - want) <= borderline.sum()
    assert len(found) == len(got) == stats["kept"]  # each pair once
    ref = {frozenset((rows[a], rows[b])): sims[a, b] for a, b in zip(i[above], j[above])}
    text_of = dict(zip(rows, texts))
    for r in got[:200]:
        assert abs(float(r["score"]) - ref[frozenset((int(r["row_a"]), int(r["row_b"])))]) < 1e-5
        assert r["name_a"] == text_of[int(r["row_a"])] and r["name_b"] == text_of[int(r["row_b"])]
        assert r["name_a"] < r["name_b"] and r["source"] == "model"
    assert any(text_of[r] != names[r] for r in rows)  # a name whose first row is not its most frequent spelling
    # recall of the synonym pairs: the same from both
    def recall(pairs):
        hits = {frozenset(names[r] for r in pair) for pair in pairs}
        return len(truth & hits) / len(truth)
    print(f"recall of {len(truth)} synonym pairs at {MIN_SCORE}: {recall(found):.3f}; {len(found)} pairs")
    assert recall(found) == recall(want) and 0 < recall(found) < 1
    # review order: score, highest first
    scores = [float(r["score"]) for r in got]
    assert scores == sorted(scores, reverse=True)


def test_pairs_same_for_one_and_two_ranks_gather_or_sharded_and_any_max_neighbors(brands):
    """The two-rank run searched one neighbour deep at first (the one-rank run 200): the same bytes."""
    folder, names, _ = brands
    for name in ("pairs.jsonl", "pairs.csv", "duplicates.jsonl"):
        one = (folder / "one" / name).read_bytes()
        assert one == (folder / "two" / name).read_bytes(), name
    stats = json.loads((folder / "two" / "stats.json").read_text())
    assert stats["index"]["mode"] == "sharded" and stats["world_size"] == 2
    assert stats["counts"]["searched_deeper"] > 0  # names whose one slot was above --min_score went deeper
    # the exact duplicates after normalisation: their own groups, rows in input order
    groups = [json.loads(line) for line in (folder / "one" / "duplicates.jsonl").read_text().splitlines()]
    by_norm: dict[str, list[int]] = {}
    for row, n in enumerate(names):
        by_norm.setdefault(normalize_name(n), []).append(row)
    assert [g["rows"] for g in groups] == sorted(r for r in by_norm.values() if len(r) > 1)
    assert all(g["names"] == [names[r] for r in g["rows"]] for g in groups)
    c = stats["counts"]
    assert c["names"] == len(by_norm) and c["duplicate_rows"] == len(names) - len(by_norm)
    assert c["duplicate_groups"] == len(groups) >= 3


# names a catalogue spells several ways: symbols that make a name, trademark signs, fullwidth forms, case
SPELLINGS = ["C", "C++", "C#", "A+", "1+1", "A", "c", "c++", "Samsung", "Samsung\u2122", "SAMSUNG\u00ae", "samsung",
             "samsung", "\uff2e\uff29\uff2b\uff25", "Nike", "nike", "NIKE", "Nike", "Coca-Cola", "Coca Cola",
             "coca-cola", "coca-cola", "Coca-Cola\u00ae", "Pepsi", "PEPSI", "Pepsi-Cola", "\uff30\uff45\uff50\uff53\uff49"]


def test_normal_forms_keep_the_signs_that_make_a_name_and_drop_trademark_signs():
    assert len({normalize_name(n) for n in ["C", "C++", "C#", "A+", "1+1", "A", "1 1"]}) == 7
    assert normalize_name("Samsung\u2122") == normalize_name("SAMSUNG\u00ae") == normalize_name("samsung \u00a9")
    assert normalize_name("\uff23\uff0b\uff0b") == "c++" and normalize_name("A + B") == normalize_name("A B")
    assert normalize_name("  Coca-Cola\u00a0ZERO! ") == "coca cola zero"  # as before: punctuation is a space
    # signs set apart by spaces are still the name's (docs/catalog.md): "C ++" is C++, never C
    assert normalize_name("C ++") == normalize_name("C++") != normalize_name("C")
    assert normalize_name("C #") == "c#" and normalize_name("A +") == "a+" and normalize_name("1 + 1") == "1 1"


def test_a_pair_score_is_a_cosine_never_past_one():
    from dist_data.product.pairs import make_pairs

    pairs = make_pairs(np.array([0, 3]), np.array([1, 2]), np.array([1.0000001, -1.0000002]), 1)
    assert pairs["score"].tolist() == [1.0, -1.0] and pairs["a"].tolist() == [0, 2]


def test_pairs_do_not_depend_on_the_order_of_the_rows(tmp_path):
    names, _ = synonym_names(120, seed=3)
    names += SPELLINGS
    outputs = []
    for shuffle in range(4):
        rows = list(names)
        if shuffle:
            random.Random(shuffle).shuffle(rows)
        path = write_csv(tmp_path / f"names{shuffle}.csv", ["brandname"], [[n] for n in rows])
        out = tmp_path / f"out{shuffle}"
        run_cli("dist_data.pairs", f"--dataset={path}", "--text_key=brandname", "--min_score=0.75",
                "--batch_size=4", f"--output_dir={out}", nproc=0)
        lines = [json.loads(line) for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
        for r in lines:  # the rows are the input's; every other byte must be the same
            assert normalize_name(rows[r.pop("row_a")]) == normalize_name(r["name_a"])
            assert normalize_name(rows[r.pop("row_b")]) == normalize_name(r["name_b"])
        outputs.append([json.dumps(r, ensure_ascii=False) for r in lines])
        stats = json.loads((out / "stats.json").read_text())["counts"]
        spellings: dict[str, set] = {}
        for n in rows:
            spellings.setdefault(normalize_name(n), set()).add(n)
        assert stats["names"] == len(spellings)
        assert stats["names_of_several_spellings"] == sum(len(v) > 1 for v in spellings.values())
        assert stats["spellings_merged"] == sum(len(v) - 1 for v in spellings.values()) > 10
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3] and len(outputs[0]) > 20
    groups = {g["normalized"]: g for g in map(json.loads, (tmp_path / "out2" / "duplicates.jsonl").read_text(
        encoding="utf-8").splitlines())}
    assert groups["nike"]["name"] == "Nike" and groups["coca cola"]["name"] == "coca-cola"  # the most frequent
    assert groups["samsung"]["name"] == "samsung" and len(groups["samsung"]["rows"]) == 5  # ™ and ® dropped
    assert groups["pepsi"]["name"] == "PEPSI"  # a tie: the smallest
    written = {n for line in outputs[0] for n in (json.loads(line)["name_a"], json.loads(line)["name_b"])}
    assert not written & {"NIKE", "nike", "\uff2e\uff29\uff2b\uff25", "Samsung\u2122", "Coca-Cola", "Pepsi"}


def test_ambiguous_first_order_and_resume(brands, tmp_path):
    folder, _, _ = brands
    path = folder / "brands.csv"
    flags = [f"--dataset={path}", "--text_key=brandname", f"--min_score={MIN_SCORE}", "--max_neighbors=200",
             "--sort=ambiguous_first", f"--output_dir={tmp_path / 'amb'}"]
    run_cli("dist_data.pairs", *flags, nproc=0)
    rows = read_csv(tmp_path / "amb" / "pairs.csv")
    dist = [float(r["distance_to_threshold"]) for r in rows]
    assert dist == sorted(dist) and dist[0] < 0.01
    assert sorted((r["row_a"], r["row_b"]) for r in rows) == sorted(
        (r["row_a"], r["row_b"]) for r in read_csv(folder / "one" / "pairs.csv"))
    again = run_cli("dist_data.pairs", *flags, nproc=0)
    assert "already complete" in again.stderr
    bad = run_cli("dist_data.pairs", f"--dataset={path}", "--text_kye=brandname", f"--output_dir={tmp_path / 'x'}",
                  nproc=0, check=False)
    assert bad.returncode == 2 and "--text_key" in bad.stderr


# ---------------------------------------------------------------- Cyrillic and transliteration

# A reading of Latin letters in Cyrillic, written for this test (not the package's table): one
# choice per letter, some of them the package's second or third option (c -> ц, g -> дж, x -> кс).
TEST_TABLE = {"a": "а", "b": "б", "c": "ц", "d": "д", "e": "е", "f": "ф", "g": "дж", "h": "х", "i": "и",
              "j": "дж", "k": "к", "l": "л", "m": "м", "n": "н", "o": "о", "p": "п", "q": "к", "r": "р", "s": "с",
              "t": "т", "u": "у", "v": "в", "w": "в", "x": "кс", "y": "и", "z": "з"}
PACKAGE_FIRST = {"c": "к", "g": "г", "x": "кс", "y": "и", "w": "в", "j": "дж"}


def to_cyrillic(word: str) -> str:
    return "".join(TEST_TABLE.get(ch, ch) for ch in word)


def cyrillic_words(n: int = 60) -> list[str]:
    """Single-word WordNet noun lemmas, letters only, with at most one letter the test table reads
    otherwise than the package's first choice (so the reading is among the first variants)."""
    out = []
    for s in iter_synsets(pos="n"):
        w = s.lemmas[0]
        if not (w.isalpha() and w.isascii() and w.islower() and 4 <= len(w) <= 8):
            continue
        if sum(ch in PACKAGE_FIRST and TEST_TABLE[ch] != PACKAGE_FIRST[ch] for ch in w) != 1:
            continue
        if any(ch in "ch sh zh ts kh ph th oo ee ya yu yo ck" for ch in (w[i : i + 2] for i in range(len(w) - 1))):
            continue
        if w not in out:
            out.append(w)
        if len(out) == n:
            break
    return out


def test_transliteration_variants_against_the_test_table():
    for w in cyrillic_words():
        assert to_cyrillic(w) in transliterations(w, 32), w
    assert transliterations("zara", 2) == ["зара", "цара"]
    assert transliterations("адидас", 1) == ["adidas"] and "zara" in transliterations("зара")
    assert normalize_name("  Кока-Кола\u00a0ZERO! ") == "кока кола zero"
    assert len(transliterations("exxonmobil", 5)) == 5
    assert char_ratio("Adidas", "adidas!") == 1.0 and char_ratio("abc", "xyz") == 0.0


def test_cyrillic_csv_round_trip_and_transliteration_pairs(tmp_path):
    words = cyrillic_words()
    rows = [[w.capitalize()] for w in words] + [[to_cyrillic(w).capitalize()] for w in words] + [["Кока-Кола"],
                                                                                                  ["кока кола"]]
    path = write_csv(tmp_path / "brands.tsv", ["brandname"], rows, delimiter="\t")
    run_cli("dist_data.pairs", f"--dataset={path}", "--text_key=brandname", "--min_score=0.95", "--transliterate",
            f"--output_dir={tmp_path / 'out'}", nproc=2)
    got = read_csv(tmp_path / "out" / "pairs.csv")
    translit = {(r["name_a"], r["name_b"]) for r in got if "transliteration" in r["source"]}
    assert translit == {(w.capitalize(), to_cyrillic(w).capitalize()) for w in words}
    n = len(words)
    assert all((int(r["row_a"]), int(r["row_b"])) in {(i, i + n) for i in range(n)} for r in got
               if "transliteration" in r["source"])
    dup = [json.loads(line) for line in (tmp_path / "out" / "duplicates.jsonl").read_text(encoding="utf-8").splitlines()]
    assert dup == [{"normalized": "кока кола", "name": "Кока-Кола", "rows": [2 * n, 2 * n + 1],
                    "names": ["Кока-Кола", "кока кола"]}]  # a tie: the smaller spelling names the group
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert stats["pairs_transliteration"] == n and stats["transliteration_variants"] > n
    # the same Cyrillic names as CSV through clean: written back byte for byte
    csv_path = write_csv(tmp_path / "brands.csv", ["brandname"], rows)
    run_cli("dist_data.catalog", "clean", f"--dataset={csv_path}", f"--output_dir={tmp_path / 'c'}", nproc=0)
    assert (tmp_path / "c" / "cleaned.csv").read_bytes() == open(csv_path, "rb").read().replace(b"\r\n", b"\n")


# ---------------------------------------------------------------- triplets

def goods(n: int = 900, seed: int = 1) -> list[dict]:
    """WordNet noun synsets as catalogue items: title = first lemma, description = definition,
    category = the lexicographer file (noun.animal, noun.artifact, ...)."""
    synsets = random.Random(seed).sample(list(iter_synsets(pos="n")), n)
    return [{"title": s.lemmas[0].replace("_", " "), "description": s.definition, "parentname": f"noun.{s.lexfile}",
             "isdeleted": "1" if i % 40 == 7 else "0"} for i, s in enumerate(synsets)]


@pytest.fixture(scope="module")
def triplet_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("goods")
    items = goods()
    path = write_csv(folder / "goods.csv", list(items[0]), [list(r.values()) for r in items])
    base = [f"--dataset={path}", "--text_keys=title,description", "--category_key=parentname"]
    runs = {
        "hard1": ([*base, "--positives=nearest_same_category", "--relative_margin=0.05", "--depth=1000"], 0),
        "hard2": ([*base, "--positives=nearest_same_category", "--relative_margin=0.05", "--depth=1000",
                   "--index=sharded"], 2),
        "rand1": ([*base, "--positives=random_same_category", "--negatives=random_other_category"], 0),
        "rand2": ([*base, "--positives=random_same_category", "--negatives=random_other_category"], 2),
        "seed7": ([*base, "--positives=random_same_category", "--negatives=random_other_category", "--seed=7"], 0),
    }
    for tag, (flags, nproc) in runs.items():
        run_cli("dist_data.triplets", *flags, f"--output_dir={folder / tag}", nproc=nproc)
    return folder, items


def item_text(r: dict) -> str:
    return f"{r['title']} {r['description']}"


def test_triplet_invariants_against_brute_force(triplet_runs, model):
    folder, items = triplet_runs
    cat = {item_text(r): r["parentname"] for r in items}
    trip = [json.loads(line) for line in (folder / "hard1" / "triplets.jsonl").read_text().splitlines()]
    review = read_csv(folder / "hard1" / "review.csv")
    assert len(trip) == len(review) > 800
    for t in trip:
        assert list(t) == ["anchor", "positive", "negative"]
        assert cat[t["positive"]] == cat[t["anchor"]] != cat[t["negative"]] and t["positive"] != t["anchor"]
    for r in review:
        assert float(r["negative_score"]) <= float(r["positive_score"]) - abs(float(r["positive_score"])) * 0.05 + 1e-12
        t = trip[int(r["triplet"])]
        assert t["anchor"] == item_text(items[int(r["anchor_row"])])
        assert t["positive"] == item_text(items[int(r["positive_row"])])
        assert t["negative"] == item_text(items[int(r["negative_row"])])
        assert r["category"] == items[int(r["anchor_row"])]["parentname"]
        assert abs(float(r["positive_char_ratio"]) - char_ratio(t["anchor"], t["positive"])) < 1e-12
    margins = [float(r["margin"]) for r in review]
    assert margins == sorted(margins)  # ambiguous first

    # the reference: numpy over sentence-transformers' own embeddings of every item
    texts = [item_text(r) for r in items]
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True).astype(np.float64)
    sims = emb @ emb.T
    cats = np.array([r["parentname"] for r in items])
    by_anchor = {int(r["anchor_row"]): r for r in review}
    checked, differ = 0, 0
    for a in range(len(items)):
        same = (cats == cats[a]) & (np.arange(len(items)) != a)
        if a not in by_anchor or not same.any():
            continue
        p = int(np.flatnonzero(same)[np.argmax(sims[a, same])])
        pos = sims[a, p]
        other = (cats != cats[a]) & (sims[a] <= pos - abs(pos) * 0.05)
        n = int(np.flatnonzero(other)[np.argmax(sims[a, other])])
        r = by_anchor[a]
        assert abs(float(r["positive_score"]) - sims[a, int(r["positive_row"])]) < 1e-5
        assert abs(float(r["negative_score"]) - sims[a, int(r["negative_row"])]) < 1e-5
        if np.ptp(np.sort(sims[a, same])[-2:]) > 1e-5 and np.ptp(np.sort(sims[a, other])[-2:]) > 1e-5:  # no near-ties
            checked += 1
            differ += (int(r["positive_row"]), int(r["negative_row"])) != (p, n)
    print(f"hardest negatives checked {checked}, differ {differ}")
    assert checked > 700 and differ <= 2  # a candidate within float rounding of the margin may go either way


def test_triplets_seeded_and_same_for_any_world_size(triplet_runs):
    folder, items = triplet_runs
    for one, two in (("hard1", "hard2"), ("rand1", "rand2")):
        for name in ("triplets.jsonl", "review.csv"):
            assert (folder / one / name).read_bytes() == (folder / two / name).read_bytes(), (one, name)
    assert (folder / "rand1" / "triplets.jsonl").read_bytes() != (folder / "seed7" / "triplets.jsonl").read_bytes()
    cat = {item_text(r): r["parentname"] for r in items}
    trip = [json.loads(line) for line in (folder / "rand1" / "triplets.jsonl").read_text().splitlines()]
    assert all(cat[t["positive"]] == cat[t["anchor"]] != cat[t["negative"]] for t in trip)
    # random picks spread over the category, not always its first member
    assert len({t["positive"] for t in trip}) > 0.5 * len(trip)
    stats = json.loads((folder / "rand2" / "stats.json").read_text())["counts"]
    assert stats["kept"] == len(trip) and stats["kept"] + sum(stats["dropped"].values()) == len(items)


def test_triplets_train_sentence_transformers_as_written(triplet_runs, tmp_path):
    import datasets
    import torch
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)

    from dist_data.core.models import resolve_model

    folder, _ = triplet_runs
    ds = datasets.load_dataset("json", data_files=str(folder / "hard1" / "triplets.jsonl"), split="train")
    assert ds.column_names == ["anchor", "positive", "negative"]
    torch.manual_seed(0)
    model = SentenceTransformer(resolve_model(None), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st"), max_steps=2,
                                                per_device_train_batch_size=4, report_to=[], save_strategy="no",
                                                use_cpu=True)
    result = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds.select(range(8)),
                                        loss=losses.TripletLoss(model)).train()
    assert np.isfinite(result.training_loss)


def test_triplets_bad_category_names_file_and_line(tmp_path):
    path = write_csv(tmp_path / "g.csv", ["title", "description", "parentname"],
                     [["pen", "a writing tool", "office"], ["cup", "", ""], ["ink", "a dye", "office"]])
    proc = run_cli("dist_data.triplets", f"--dataset={path}", "--category_key=parentname",
                   f"--output_dir={tmp_path / 'o'}", nproc=0, check=False)
    assert proc.returncode == 2 and f"{path}:3" in proc.stderr and "parentname" in proc.stderr
    assert not (tmp_path / "o" / "triplets.jsonl").exists()


# ---------------------------------------------------------------- clean

def test_clean_against_pandas(tmp_path):
    items = goods(600, seed=4)
    items += [dict(items[3], title=items[3]["title"].upper()), dict(items[10]), dict(items[11], isdeleted="true")]
    path = write_csv(tmp_path / "goods.csv", list(items[0]), [list(r.values()) for r in items])
    flags = [f"--dataset={path}", "--dedup_keys=title,description", "--drop_if=isdeleted", "--lowercase"]
    run_cli("dist_data.catalog", "clean", *flags, f"--output_dir={tmp_path / 'all'}", nproc=0)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[~df["isdeleted"].str.lower().isin(["1", "true"])].copy()
    for col in ("title", "description"):
        df[col] = df[col].str.lower()
    want = df.drop_duplicates(subset=["title", "description"], keep="first")
    got = pd.read_csv(tmp_path / "all" / "cleaned.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    stats = json.loads((tmp_path / "all" / "stats.json").read_text())["counts"]
    assert stats["dropped"]["flagged_isdeleted"] == len(items) - len(df)
    assert stats["dropped"]["duplicate"] == len(df) - len(want) >= 2
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["read"] == len(items)

    run_cli("dist_data.catalog", "clean", *flags, "--sample=100", f"--output_dir={tmp_path / 's'}", nproc=0)
    run_cli("dist_data.catalog", "clean", *flags, "--sample=100", "--output_format=parquet",
            f"--output_dir={tmp_path / 'p'}", nproc=0)
    sampled = pd.read_csv(tmp_path / "s" / "cleaned.csv", dtype=str, keep_default_na=False)
    assert len(sampled) == 100 and sampled.merge(want).shape[0] == 100
    positions = [want.index.get_loc(want[(want.title == t) & (want.description == d)].index[0])
                 for t, d in zip(sampled.title, sampled.description)]
    assert positions == sorted(positions)  # input order kept
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p" / "cleaned.parquet").astype(str), sampled)
