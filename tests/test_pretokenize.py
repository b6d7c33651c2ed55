"""``dist_data.pretokenize`` end to end: torchrun with 2 ranks on real WordNet text, against an
independent packing of the tokenizer's own output; world-size independence, resume, bad input."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli, run_killed, write_jsonl
from dist_data.text.pack import reference_pack
from dist_data.pretokenize import load_tokenizer, special_layout
from dist_data.text.wordnet import iter_synsets

FLAGS = ["--seq_len=128", "--block_docs=32", "--progress=False"]


def wordnet_documents(n: int) -> list[str]:
    """``n`` documents of varied length: runs of 1 to 24 consecutive noun synsets."""
    synsets = list(iter_synsets(pos="n"))
    docs, i = [], 0
    for k in range(n):
        size = 1 + (k * 7) % 24
        docs.append("\n".join(f"{', '.join(s.lemmas)}: {s.definition}." for s in synsets[i : i + size]))
        i += size
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    texts = wordnet_documents(300)
    path = write_jsonl(root / "docs.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    outs = {}
    for name, nproc, extra in [("ws2", 2, ["--special_tokens_mask=True", "--hf_save_name=someone/wordnet-packed"]),
                               ("ws1", 0, ["--special_tokens_mask=True"]),
                               ("ws2_parquet", 2, ["--output_format=parquet", "--rows_per_shard=40"]),
                               ("ws1_parquet", 0, ["--output_format=parquet", "--rows_per_shard=40"])]:
        outs[name] = root / name
        proc = run_cli("dist_data.pretokenize", f"--dataset={path}", f"--output_dir={outs[name]}", *FLAGS, *extra,
                       nproc=nproc)
        outs[name + "_stderr"] = proc.stderr
    return texts, path, outs


def test_sequences_equal_an_independent_packing_of_the_tokenizer_output(corpus):
    import datasets

    texts, _, outs = corpus
    tok = load_tokenizer(None, None)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    expected = reference_pack(ids, special_layout(tok, 128, "document"), drop_last=False)
    ds = datasets.load_from_disk(str(outs["ws2"] / "dataset"))
    assert ds.column_names == ["input_ids", "attention_mask", "special_tokens_mask"]
    got = [[t for t, m in zip(r["input_ids"], r["attention_mask"]) if m] for r in ds]
    assert got == expected
    assert all(len(r["input_ids"]) == 128 for r in ds)
    first = ds[0]
    assert first["input_ids"][0] == tok.cls_token_id and first["special_tokens_mask"][0] == 1
    counts = json.load(open(outs["ws2"] / "stats.json"))["counts"]
    n_tokens = sum(len(i) for i in ids)
    assert counts["documents"] == len(texts) and counts["tokens_in"] == n_tokens
    assert counts["document_specials"] == 2 * len(texts)
    assert counts["tokens_out"] == n_tokens + 2 * len(texts)  # nothing lost, nothing repeated
    assert counts["sequences"] == len(ds) and counts["padding"] == 128 * len(ds) - counts["tokens_out"]
    assert "could not push to the hub as someone/wordnet-packed" in outs["ws2_stderr"]


def test_identical_output_for_any_world_size(corpus):
    import datasets

    _, _, outs = corpus
    a, b = (datasets.load_from_disk(str(outs[n] / "dataset")) for n in ("ws1", "ws2"))
    assert a.to_dict() == b.to_dict()
    files = sorted(os.listdir(outs["ws1_parquet"] / "data"))
    assert files == sorted(os.listdir(outs["ws2_parquet"] / "data")) and len(files) > 1
    for f in files:
        assert (outs["ws1_parquet"] / "data" / f).read_bytes() == (outs["ws2_parquet"] / "data" / f).read_bytes()
    parquet = datasets.load_dataset("parquet", data_dir=str(outs["ws2_parquet"] / "data"), split="train")
    assert parquet["input_ids"] == a["input_ids"]


def test_resume_after_a_rank_is_killed(corpus, tmp_path):
    import datasets

    texts = wordnet_documents(3000)
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    out = str(tmp_path / "killed")
    flags = [f"--dataset={path}", f"--output_dir={out}", "--seq_len=256", "--block_docs=16", "--progress=False"]
    run_killed("dist_data.pretokenize", *flags, out=out, after_blocks=4)
    run_cli("dist_data.pretokenize", *flags, nproc=2)
    counts = json.load(open(os.path.join(out, "stats.json")))["counts"]
    assert counts["cached_blocks"] >= 1
    run_cli("dist_data.pretokenize", *flags[:1], f"--output_dir={tmp_path / 'clean'}", *flags[2:], nproc=0)
    a = datasets.load_from_disk(os.path.join(out, "dataset"))
    b = datasets.load_from_disk(str(tmp_path / "clean" / "dataset"))
    assert a["input_ids"] == b["input_ids"]


def test_text_files_parquet_and_bad_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = wordnet_documents(40)
    lines = [t.replace("\n", " ") for t in texts]
    txt = tmp_path / "docs.txt"
    txt.write_bytes(("\n".join(lines[:10]) + "\n").encode() + b"caf\xe9 au lait\n" + ("\n".join(lines[10:]) + "\n").encode())
    proc = run_cli("dist_data.pretokenize", f"--dataset={txt}", f"--output_dir={tmp_path / 'a'}", *FLAGS, nproc=2,
                   check=False)
    assert proc.returncode != 0 and f"{txt}:11: invalid UTF-8" in proc.stderr
    assert not (tmp_path / "a" / "dataset").exists()
    run_cli("dist_data.pretokenize", f"--dataset={txt}", f"--output_dir={tmp_path / 'b'}", "--on_bad_rows=skip",
            *FLAGS, nproc=2)
    rejects = [json.loads(line) for line in open(tmp_path / "b" / "rejects.jsonl")]
    assert [(r["line"], r["reason"].split(" (")[0]) for r in rejects] == [(11, "invalid UTF-8")]

    pq.write_table(pa.table({"text": lines[:20] + [None] + lines[20:]}), tmp_path / "docs.parquet")
    proc = run_cli("dist_data.pretokenize", f"--dataset={tmp_path / 'docs.parquet'}",
                   f"--output_dir={tmp_path / 'c'}", *FLAGS, nproc=0, check=False)
    assert proc.returncode == 2 and "docs.parquet:21: 'text' is NoneType, expected a string" in proc.stderr
    run_cli("dist_data.pretokenize", f"--dataset={tmp_path / 'docs.parquet'}", f"--output_dir={tmp_path / 'd'}",
            "--on_bad_rows=skip", *FLAGS, nproc=0)
    counts = json.load(open(tmp_path / "d" / "stats.json"))["counts"]
    assert counts["documents"] == 40 and counts["rejected"] == {"'text' is NoneType, expected a string": 1}
    tok = load_tokenizer(None, None)
    assert counts["tokens_in"] == sum(len(i) for i in tok(lines, add_special_tokens=False)["input_ids"])


def test_seq_len_without_room_for_specials_is_a_clear_error(tmp_path):
    proc = run_cli("dist_data.pretokenize", f"--output_dir={tmp_path}", "--seq_len=2", nproc=0, check=False)
    assert proc.returncode == 2 and "seq_len=2 leaves no room" in proc.stderr


def test_shipped_default(tmp_path):
    import datasets

    run_cli("dist_data.pretokenize", f"--output_dir={tmp_path}", "--progress=False", nproc=2)
    ds = datasets.load_from_disk(str(tmp_path / "dataset"))
    counts = json.load(open(tmp_path / "stats.json"))["counts"]
    assert counts["documents"] == 2000 and len(ds) == counts["sequences"] and len(ds[0]["input_ids"]) == 512
    assert np.mean([sum(m) for m in ds["attention_mask"][:-1]]) == 512
