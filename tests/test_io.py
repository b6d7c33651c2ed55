"""Input formats, provenance and atomic outputs, on real WordNet rows."""

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import wordnet_pairs, write_jsonl
from dist_data.core.errors import BadRowError, InputError
from dist_data.core.blocks import build_catalog
from dist_data.core.rows import get_texts
from dist_data.core.sources import resolve_sources
from dist_data.core.write import atomic_open, merge_files

KEYS = ["query", "document"]


def read_all(spec, gids=None):
    catalog = build_catalog(resolve_sources(spec))
    gids = np.arange(catalog.total) if gids is None else np.asarray(gids)
    return catalog, list(catalog.read(gids))


@pytest.fixture(scope="module")
def rows():
    return wordnet_pairs(60, seed=1, synonyms=False)


def test_formats_give_the_same_rows(tmp_path, rows):
    pairs = [(r["query"], r["document"]) for r in rows]
    write_jsonl(tmp_path / "a.jsonl", rows)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps([q, d]) + "\n" for q, d in pairs)  # list rows
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=7)
    with open(tmp_path / "d.tsv", "w", encoding="utf-8") as f:
        f.write("query\tdocument\n" + "".join(f"{q}\t{d}\n" for q, d in pairs))
    for name in ["a.jsonl", "b.jsonl.gz", "c.parquet", "d.tsv"]:
        _, got = read_all(str(tmp_path / name))
        assert [tuple(get_texts(r, KEYS)) for r in got] == pairs, name


def test_nomic_shard_folder_glob_and_hf_disk(tmp_path, rows):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        with gzip.open(folder / f"shard-{i:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[i * 20 : (i + 1) * 20])
    catalog, got = read_all(str(folder))
    assert catalog.counts == (20, 20, 20)
    assert [r.value for r in got] == rows
    # A global-id slice crossing files reads exactly those rows, with file and line.
    _, part = read_all(str(tmp_path / "shards" / "shard-*.jsonl.gz"), [5, 19, 20, 41])
    assert [r.value for r in part] == [rows[i] for i in (5, 19, 20, 41)]
    assert (os.path.basename(part[2].source), part[2].line) == ("shard-00001.jsonl.gz", 1)

    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    _, got = read_all(str(tmp_path / "hf"))
    assert [tuple(get_texts(r, KEYS)) for r in got] == [(r["query"], r["document"]) for r in rows]


def test_blank_lines_are_not_rows_and_lines_are_physical(tmp_path, rows):
    path = write_jsonl(tmp_path / "x.jsonl", [rows[0], "", rows[1], "   ", "{broken", rows[2]])
    _, got = read_all(path)
    assert [r.line for r in got] == [1, 3, 5, 6]
    with pytest.raises(BadRowError, match=r"x.jsonl:5: malformed JSON"):
        get_texts(got[2], KEYS)


@pytest.mark.parametrize("row,reason", [
    ({"query": "dog"}, "missing key 'document'"),
    ({"query": "dog", "document": 3}, "'document' is int, expected a string"),
    ({"query": "  ", "document": "a canine"}, "'query' is empty"),
    (["dog"], "list row has 1 items"),
    ("just a string", "row is a str"),
])
def test_bad_rows_name_file_line_and_reason(tmp_path, rows, row, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [rows[0], json.dumps(row)])
    _, got = read_all(path)
    get_texts(got[0], KEYS)
    with pytest.raises(BadRowError) as e:
        get_texts(got[1], KEYS)
    assert str(e.value).startswith(f"{path}:2: ") and reason in str(e.value)


def test_invalid_utf8_is_a_bad_row(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"query": "caf\xe9", "document": "x"}\n')
    _, got = read_all(str(path))
    with pytest.raises(BadRowError, match="u.jsonl:1: invalid UTF-8"):
        get_texts(got[0], KEYS)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_sources(str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match="matches no input files"):
        resolve_sources(str(tmp_path / "*.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no input files"):
        resolve_sources(str(tmp_path / "empty"))


def test_atomic_writes_leave_nothing_on_failure_and_gzip_is_reproducible(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(str(target)) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    parts = []
    for i in range(2):
        parts.append(str(tmp_path / f"p{i}"))
        with open(parts[-1], "w") as f:
            f.write(f"line {i}\n")
    merge_files(parts, str(tmp_path / "m1.gz"), gzip_output=True)
    merge_files(parts, str(tmp_path / "m2.gz"), gzip_output=True)
    assert (tmp_path / "m1.gz").read_bytes() == (tmp_path / "m2.gz").read_bytes()
    assert gzip.decompress((tmp_path / "m1.gz").read_bytes()) == b"line 0\nline 1\n"


# ---------------------------------------------------------------- bad input, named by file and line

def test_truncated_or_non_gzip_files_name_the_file_and_the_last_good_line(tmp_path, rows):
    whole = tmp_path / "whole.jsonl.gz"
    with gzip.open(whole, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(InputError) as e:
        read_all(str(cut))
    msg = str(e.value)
    assert msg.startswith(f"{cut}: truncated or not a valid .gz file") and "the last good line is" in msg
    last_good = int(msg.rsplit(" ", 1)[1])
    assert 0 < last_good < len(rows)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text(json.dumps(rows[0]) + "\n")  # plain text under a .gz name
    with pytest.raises(InputError, match="fake.jsonl.gz: truncated or not a valid .gz file"):
        read_all(str(fake))


def test_invalid_utf8_in_csv_and_json_is_a_bad_row_with_its_line(tmp_path, rows):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_bytes(b"query,document\nbank,a river side\ncaf\xe9,a place for coffee\nsea,salt water\n")
    _, got = read_all(str(csv_path))
    assert [r.line for r in got] == [2, 3, 4]
    assert get_texts(got[0], KEYS) == ["bank", "a river side"] and get_texts(got[2], KEYS)[0] == "sea"
    with pytest.raises(BadRowError, match=r"pairs.csv:3: invalid UTF-8 in 'query'"):
        get_texts(got[1], KEYS)
    json_path = tmp_path / "pairs.json"
    json_path.write_bytes(b'[{"query": "a", "document": "b"}, {"query": "caf\xe9", "document": "c"}]')
    _, got = read_all(str(json_path))
    get_texts(got[0], KEYS)
    with pytest.raises(BadRowError, match=r"pairs.json:2: invalid UTF-8"):
        get_texts(got[1], KEYS)


def test_a_lone_surrogate_is_a_bad_row_at_read_time(tmp_path, rows):
    path = write_jsonl(tmp_path / "s.jsonl", [rows[0], '{"query": "x\\ud800y", "document": "d"}'])
    _, got = read_all(path)
    with pytest.raises(BadRowError, match=r"s.jsonl:2: a lone surrogate in 'query' at character 1"):
        get_texts(got[1], KEYS)


def test_a_csv_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffquery,document\nbank,a river side\n".encode("utf-8"))
    _, got = read_all(str(path))
    assert get_texts(got[0], KEYS) == ["bank", "a river side"]


def test_a_string_pos_is_never_a_positive(tmp_path):
    from dist_data.text.layouts import get_query_positives

    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "benthos", "document": "sea-floor life", "pos": "n"}])
    _, got = read_all(path)
    assert get_query_positives(got[0], "query", "document") == ("benthos", ["sea-floor life"])
    with pytest.raises(BadRowError, match=r"p.jsonl:1: 'pos' is a string \('n'\), expected a list of positive texts; "
                                          r"is --document_key='doc' right\?"):
        get_query_positives(got[0], "query", "doc")
