"""``dist_data.filter`` end to end through torchrun, on real WordNet text with the shipped MiniLM."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli, run_killed, wordnet_pairs, write_jsonl
from dist_data.core.dedup import first_occurrence, text_hashes

K = 2
COMMON = ["--batch_size=32", f"--k={K}", "--progress=False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("filter")
    rows = wordnet_pairs(700, seed=3)
    # A duplicate document that differs only in whitespace is the same document.
    rows.append({"query": rows[0]["query"] + " again", "document": "  " + rows[0]["document"].replace(" ", "  "),
                 "id": "whitespace-variant"})
    return root, rows, write_jsonl(root / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def runs(data):
    root, _, path = data
    out = {}
    for name, nproc, index in [("ws1", 0, "gather"), ("ws2", 2, "gather"), ("ws2_sharded", 2, "sharded")]:
        out[name] = str(root / name)
        run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={out[name]}", f"--index={index}",
                "--write_ids=True", *COMMON, nproc=nproc)
    return out


def reference_keep(model, rows, k, roles: bool = False):
    """Single process: encode everything (``roles``: ``encode_query`` / ``encode_document``), brute-force
    canonical top-k over unique documents."""
    queries = [r["query"] for r in rows]
    docs = [r["document"] for r in rows]
    rep = first_occurrence(text_hashes(docs), np.arange(len(docs)))
    uniq = np.unique(rep)
    encode_q, encode_d = (model.encode_query, model.encode_document) if roles else (model.encode, model.encode)
    q = encode_q(queries, batch_size=32, normalize_embeddings=True).astype(np.float64)
    d = encode_d([docs[i] for i in uniq], batch_size=32, normalize_embeddings=True).astype(np.float64)
    scores = q @ d.T
    pos_col = np.searchsorted(uniq, rep)
    order = np.lexsort((np.tile(uniq, (len(rows), 1)), -scores), axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    keep = (order[:, :k] == pos_col[:, None]).any(axis=1)
    pos_score = scores[np.arange(len(rows)), pos_col]
    boundary = np.where(keep, ranked[:, k] if ranked.shape[1] > k else -np.inf, ranked[:, k - 1])
    return keep, np.abs(pos_score - boundary)


def test_kept_set_equals_brute_force_reference(runs, data, model):
    _, rows, _ = data
    keep, margin = reference_keep(model, rows, K)
    with open(os.path.join(runs["ws2"], "ids_to_keep_0.json")) as f:
        ids = json.load(f)
    got = np.zeros(len(rows), dtype=bool)
    got[ids] = True
    decided = margin > 1e-5  # closer calls are decided by float rounding, not by the data
    assert decided.mean() > 0.99
    assert (got[decided] == keep[decided]).all(), np.flatnonzero(got != keep)
    assert 0.1 < keep.mean() < 0.95  # the filter is doing real work on this data
    # The duplicate synonym rows share their document: both can be kept.
    with open(os.path.join(runs["ws2"], "filtered.jsonl")) as f:
        kept = [json.loads(line) for line in f]
    assert [r["id"] for r in kept] == [rows[i]["id"] for i in ids]
    stats = json.load(open(os.path.join(runs["ws2"], "stats.json")))
    c = stats["counts"]
    assert c["read"] == len(rows) and c["kept"] == len(ids)
    assert c["kept"] + c["dropped"]["not_in_top_k"] == len(rows)
    assert c["unique_documents"] == len(set(" ".join(r["document"].split()) for r in rows))
    assert {"read", "embed", "index", "search", "write"} <= set(stats["stages"])


def test_identical_bytes_for_any_world_size_and_index_mode(runs):
    outputs = {name: open(os.path.join(d, "filtered.jsonl"), "rb").read() for name, d in runs.items()}
    assert outputs["ws1"] == outputs["ws2"] == outputs["ws2_sharded"]
    ids = {name: open(os.path.join(d, "ids_to_keep_0.json"), "rb").read() for name, d in runs.items()}
    assert ids["ws1"] == ids["ws2"] == ids["ws2_sharded"]


def test_rerun_of_a_complete_run_does_nothing(runs, data):
    _, _, path = data
    before = open(os.path.join(runs["ws1"], "filtered.jsonl"), "rb").read()
    proc = run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={runs['ws1']}", "--index=gather",
                   "--write_ids=True", *COMMON, nproc=0)
    assert "already complete" in proc.stderr
    assert open(os.path.join(runs["ws1"], "filtered.jsonl"), "rb").read() == before


def test_resume_after_a_rank_is_killed_mid_embedding(runs, data, tmp_path):
    _, _, path = data
    out = str(tmp_path / "killed")
    flags = [f"--dataset={path}", f"--output_dir={out}", "--write_ids=True", *COMMON]
    run_killed("dist_data.filter", *flags, out=out)
    assert not os.path.exists(os.path.join(out, "filtered.jsonl"))

    resumed = run_cli("dist_data.filter", *flags, nproc=2)
    assert "served from the cache" in resumed.stderr
    for name in ("filtered.jsonl", "ids_to_keep_0.json"):
        assert open(os.path.join(out, name), "rb").read() == open(os.path.join(runs["ws1"], name), "rb").read()


def test_bad_rows_error_names_file_and_line_and_publishes_nothing(data, tmp_path):
    _, rows, _ = data
    path = write_jsonl(tmp_path / "bad.jsonl", rows[:300] + ['{"query": "dog", "document": '] + rows[300:400])
    out = tmp_path / "out"
    proc = run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={out}", *COMMON, nproc=2, check=False)
    assert proc.returncode != 0
    assert f"{path}:301: malformed JSON" in proc.stderr
    assert not (out / "filtered.jsonl").exists() and not (out / "stats.json").exists()


def test_bad_rows_skipped_into_rejects_with_reasons(data, tmp_path):
    _, rows, _ = data
    bad = ['{"query": "dog", "document": ', json.dumps({"query": "cat"}), json.dumps({"query": 7, "document": "x"}),
           json.dumps({"query": "owl", "document": ""})]
    lines = rows[:100] + bad[:2] + rows[100:250] + bad[2:] + rows[250:300]
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)
    out = tmp_path / "out"
    run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={out}", "--on_bad_rows=skip", *COMMON, nproc=2)
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert [(r["line"], r["reason"].split(" (")[0]) for r in rejects] == [
        (101, "malformed JSON"), (102, "missing key 'document'"), (253, "'query' is int, expected a string"),
        (254, "'document' is empty")]
    stats = json.load(open(out / "stats.json"))
    assert sum(stats["counts"]["rejected"].values()) == 4
    assert stats["counts"]["read"] == 304
    assert stats["counts"]["kept"] + stats["counts"]["dropped"]["not_in_top_k"] == 300


@pytest.mark.parametrize("flags,message", [
    (["--k=0"], "--k must be >= 1, got 0"),
    (["--dataset=/nonexistent/pairs.jsonl"], "no such file or folder: /nonexistent/pairs.jsonl"),
    (["--index=ivfpq"], "--index must be one of gather, sharded, ivf, hnsw, got 'ivfpq'"),
])
def test_flag_errors_are_one_clear_line(tmp_path, flags, message):
    proc = run_cli("dist_data.filter", f"--output_dir={tmp_path / 'o'}", *flags, nproc=0, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_output_dir_of_another_run_is_refused(runs, data):
    _, _, path = data
    proc = run_cli("dist_data.filter", f"--dataset={path}", f"--output_dir={runs['ws1']}", "--k=3",
                   "--batch_size=32", nproc=0, check=False)
    assert proc.returncode == 2
    assert "holds a finished run with other flags" in proc.stderr and "--k=3 (was 2)" in proc.stderr


@pytest.mark.parametrize("point", ["embedded"])  # at merge too, by hand: the same (parts are kept)
def test_a_lost_rank_restarts_by_itself_under_max_restarts(point, runs, data, tmp_path):
    """A rank killed once (a preempted node): ``torchrun --max-restarts=1`` starts the ranks again and
    the job finishes by itself, re-embedding only what was not cached, with the bytes of a clean run."""
    import subprocess
    import sys

    _, _, path = data
    out = tmp_path / "restarted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DIST_DATA_FAULT": f"kill:{point}",
           "DIST_DATA_FAULT_ONCE": str(tmp_path / "killed-once")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "--max-restarts=1", "-m", "dist_data.filter", f"--dataset={path}", f"--output_dir={out}",
                           "--write_ids=True", *COMMON], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(tmp_path / "killed-once")  # the fault happened
    assert "restart" in proc.stderr.lower() or "served from the cache" in proc.stderr
    for name in ("filtered.jsonl", "ids_to_keep_0.json"):
        assert (out / name).read_bytes() == open(os.path.join(runs["ws1"], name), "rb").read()
