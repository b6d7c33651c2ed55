"""``combine collection``: sentence-transformers training-data files of every schema, from WordNet."""

import gzip
import json
import random

import pytest

from conftest import run_cli
from dist_data.text.wordnet import iter_synsets


def write_gz(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    synsets = random.Random(3).sample([s for s in iter_synsets() if len(s.lemmas) >= 3 and s.examples], 300)
    write_gz(root / "querypos.jsonl.gz", [{"query": s.lemmas[0], "pos": [s.definition, s.examples[0]], "neg": ["x"]}
                                          for s in synsets[:50]])
    write_gz(root / "sets.jsonl.gz", [{"set": list(s.lemmas[:3])} for s in synsets[50:100]])
    write_gz(root / "triplets.jsonl.gz", [[s.lemmas[0], s.definition, synsets[i - 1].definition]
                                          for i, s in enumerate(synsets[100:200], start=100)])
    write_gz(root / "pairs.jsonl.gz", [{"anchor": s.lemmas[1], "positive": s.definition} for s in synsets[200:300]])
    return root, synsets


def test_each_schema_and_caps_and_split(folder, tmp_path):
    import datasets

    root, synsets = folder
    run_cli("dist_data.combine", "collection", f"--data_dir={root}", f"--save_root_path={tmp_path}",
            "--max_pairs_per_dataset=120", nproc=0)
    stats = json.load(open(tmp_path / "collection" / "stats.json"))["datasets"]
    assert stats["querypos"] == {"schema": "query-pos", "pairs": 100, "duplicates": 0, "kept": 100}  # one per positive
    assert stats["sets"] == {"schema": "set", "pairs": 150, "duplicates": 0, "kept": 120}  # 3 pairs each, capped
    assert stats["triplets"] == {"schema": "3-column", "pairs": 100, "duplicates": 0, "kept": 100}
    assert stats["pairs"] == {"schema": "2-column", "pairs": 100, "duplicates": 0, "kept": 100}
    train = datasets.load_from_disk(str(tmp_path / "collection" / "train"))
    test = datasets.load_from_disk(str(tmp_path / "collection" / "test"))
    assert len(train) == 336 and len(test) == 84 and train.column_names == ["anchor", "positive"]
    assert sum(d["kept"] for d in stats.values()) == len(train) + len(test)  # the stats add up
    prov = json.load(open(tmp_path / "collection" / "provenance.json"))  # the source of each row, beside the set
    source = {s: [prov["datasets"][i] for i in prov[s]] for s in ("train", "test")}
    rows = {(r["anchor"], r["positive"], d) for split, ds in (("train", train), ("test", test))
            for r, d in zip(ds, source[split])}
    s = synsets[120]  # a triplet keeps (anchor, positive), never the negative
    assert (s.lemmas[0], s.definition, "triplets") in rows
    assert not any(r[1] == synsets[119].definition and r[0] == s.lemmas[0] for r in rows)
    set_pairs = {(a, p) for a, p, d in rows if d == "sets"}
    expected = {(x[i], x[j]) for s in synsets[50:100] for x in [s.lemmas[:3]] for i in range(3) for j in range(i + 1, 3)}
    assert set_pairs <= expected and len(set_pairs) == 120  # every i < j pair of a set, 120 of 150 kept
    run_cli("dist_data.combine", "collection", f"--data_dir={root}", f"--save_root_path={tmp_path / 'again'}",
            "--max_pairs_per_dataset=120", nproc=0)
    again = datasets.load_from_disk(str(tmp_path / "again" / "collection" / "train"))
    assert again.to_dict() == train.to_dict()  # seeded: reproducible


def test_a_row_off_schema_is_named(folder, tmp_path):
    root, _ = folder
    bad = tmp_path / "bad"
    bad.mkdir()
    write_gz(bad / "mixed.jsonl.gz", [{"set": ["a", "b"]}, {"query": "q", "pos": ["p"]}])
    proc = run_cli("dist_data.combine", "collection", f"--data_dir={bad}", f"--save_root_path={tmp_path}", nproc=0,
                   check=False)
    assert proc.returncode == 2 and "mixed.jsonl.gz:2: row does not follow the file's set layout" in proc.stderr


def test_a_set_that_is_a_string_is_a_bad_row_not_its_letters(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_gz(bad / "sets.jsonl.gz", [{"set": ["kitten", "young cat"]}, {"set": "kitten"}])
    proc = run_cli("dist_data.combine", "collection", f"--data_dir={bad}", f"--save_root_path={tmp_path / 'o'}",
                   nproc=0, check=False)
    assert proc.returncode == 2 and "sets.jsonl.gz:2: 'set' is a str ('kitten'), expected a list of texts" in proc.stderr
    assert not (tmp_path / "o" / "collection").exists()


def test_stats_add_up_when_a_mined_triplet_file_repeats_its_pairs(tmp_path):
    """nli-style pairs beside mined triplets (one row per negative): the repeats of a file are counted
    as duplicates, and the rows written are exactly the rows the stats call kept."""
    import datasets

    synsets = [s for s in iter_synsets() if len(s.lemmas) >= 2][:40]
    data = tmp_path / "data"
    data.mkdir()
    write_gz(data / "nli_pairs.jsonl.gz", [[s.lemmas[0], s.definition] for s in synsets[:20]])
    write_gz(data / "nli_triplets.jsonl.gz", [[s.lemmas[1], s.definition, synsets[-1 - n].definition]
                                              for s in synsets[20:30] for n in range(2)])
    run_cli("dist_data.combine", "collection", f"--data_dir={data}", f"--save_root_path={tmp_path}", nproc=0)
    stats = json.load(open(tmp_path / "collection" / "stats.json"))
    assert stats["datasets"]["nli_triplets"] == {"schema": "3-column", "pairs": 20, "duplicates": 10, "kept": 10}
    written = sum(len(datasets.load_from_disk(str(tmp_path / "collection" / s))) for s in ("train", "test"))
    assert written == stats["train_rows"] + stats["test_rows"] == 30
