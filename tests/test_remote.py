"""Inputs by URL (:mod:`dist_data.core.remote`) against real servers, not mocks of a client: moto's
S3 server on a local port (s3fs pointed at it by ``AWS_ENDPOINT_URL``), Python's ``http.server``
over a folder, and ``file://``. The same rows and order as the local copy: the same bytes out."""

import functools
import gzip
import http.server
import json
import os
import shutil
import threading

import pytest

from conftest import bucket_files, run_cli, wordnet_pairs

pytest.importorskip("s3fs")
pytest.importorskip("moto")

BUCKET = "pairs-bucket"
OUT = "out-bucket"
FLAGS = ["--k=2", "--batch_size=32", "--noprogress"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """300 WordNet pairs as contrastors' layout: three gzipped jsonl shards and counts.json."""
    root = tmp_path_factory.mktemp("shards")
    rows = wordnet_pairs(300, seed=21)
    folder = root / "pairs"
    os.makedirs(folder)
    for i in range(3):
        with gzip.open(folder / f"shard-{i:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[i * 100:(i + 1) * 100])
    (folder / "counts.json").write_text(json.dumps({f"shard-{i:05d}.jsonl.gz": 100 for i in range(3)}))
    return root, rows


@pytest.fixture(scope="module")
def s3(shards, s3_server):
    """The shards under ``s3://BUCKET/pairs/``, and an empty bucket OUT for outputs."""
    client = s3_server
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=OUT)
    root, _ = shards
    for name in sorted(os.listdir(root / "pairs")):
        client.upload_file(str(root / "pairs" / name), BUCKET, f"pairs/{name}")
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                      "AWS_ENDPOINT_URL")}
    return env, client


@pytest.fixture(scope="module")
def local_run(shards):
    root, _ = shards
    out = root / "local"
    run_cli("dist_data.filter", f"--dataset={root / 'pairs'}", f"--output_dir={out}", *FLAGS, nproc=0)
    return out


@pytest.mark.parametrize("nproc, dataset", [(0, f"s3://{BUCKET}/pairs/"), (2, f"s3://{BUCKET}/pairs/shard-*.jsonl.gz")])
def test_filter_from_bucket_to_bucket_gives_the_bytes_of_the_local_run(nproc, dataset, s3, local_run):
    """Input and output in the store; at 2 ranks each rank stages in its own folder (as on two hosts):
    rank 1's parts reach rank 0 through the store."""
    env, client = s3
    prefix = f"filter-{nproc}"
    proc = run_cli("dist_data.filter", f"--dataset={dataset}", f"--output_dir=s3://{OUT}/{prefix}", *FLAGS,
                   nproc=nproc)  # the fixture set the environment: a plain process runs in this one
    stored = bucket_files(client, OUT, prefix)
    assert stored["filtered.jsonl"] == (local_run / "filtered.jsonl").read_bytes()
    assert {"_SUCCESS", "stats.json", "args.json", "manifest.json", "README.md", "rejects.jsonl"} <= set(stored)
    assert not any(k.startswith("cache/") or k.endswith(".lock") or ".tmp" in k for k in stored), sorted(stored)
    assert {f"parts/part-{r:05d}.jsonl" for r in range(max(nproc, 1))} <= set(stored)
    assert "300 rows in 3 file(s)" in proc.stderr  # counts.json is not rows
    assert f"-> s3://{OUT}/{prefix}/filtered.jsonl" in proc.stderr
    card = stored["README.md"].decode()
    assert dataset in card and "testing" not in card
    # the same command again, from a host that never saw the run: complete, nothing written
    again = run_cli("dist_data.filter", f"--dataset={dataset}", f"--output_dir=s3://{OUT}/{prefix}", *FLAGS, nproc=0,
                    env={"DIST_DATA_STAGING": str(local_run.parent / f"elsewhere-{nproc}")})
    assert "already complete" in again.stderr
    assert bucket_files(client, OUT, prefix) == stored
    fetched = {p.name for p in (local_run.parent / f"elsewhere-{nproc}").rglob("*") if p.is_file()}
    assert "_SUCCESS" in fetched and "filtered.jsonl" not in fetched  # a complete run's result is not fetched


def test_a_run_killed_before_publishing_resumes_from_the_bucket_with_the_same_bytes(s3, local_run, tmp_path):
    """Killed at its first embedded block, then again (resumed from the node's cache) after every part was
    written and uploaded, before anything was published: the store holds the parts and no result, no
    _SUCCESS. The same command on a host with nothing staged (the node was
    lost) takes over the dead run's lock, fetches the parts and publishes the same bytes."""
    env, client = s3
    flags = [f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir=s3://{OUT}/killed", *FLAGS]
    for point in ("embedded", "merge"):  # killed at its first cached block, then (resumed there) before publishing
        killed = run_cli("dist_data.filter", *flags, nproc=0, check=False,
                         env={"DIST_DATA_FAULT": f"kill:{point}", "DIST_DATA_STAGING": str(tmp_path / "node-a")})
        assert killed.returncode != 0
    stored = bucket_files(client, OUT, "killed")
    assert json.loads(stored["parts/stats-00000.json"])["counts"]["cached_blocks"] >= 1  # resumed from the cache
    assert "parts/part-00000.jsonl" in stored and ".dist_data.lock" in stored
    assert "_SUCCESS" not in stored and "filtered.jsonl" not in stored
    again = run_cli("dist_data.filter", *flags, nproc=0, env={"DIST_DATA_STAGING": str(tmp_path / "node-b")})
    assert "taking over the lock of a dead run" in again.stderr and "file(s) of an earlier run fetched" in again.stderr
    stored = bucket_files(client, OUT, "killed")
    assert stored["filtered.jsonl"] == (local_run / "filtered.jsonl").read_bytes() and "_SUCCESS" in stored
    assert ".dist_data.lock" not in stored
    # other flags: refused, the store as it was; with --overwrite the earlier run leaves the store first
    other = run_cli("dist_data.filter", *flags[:2], "--k=1", *FLAGS[1:], nproc=0, check=False,
                    env={"DIST_DATA_STAGING": str(tmp_path / "node-b")})
    assert other.returncode == 2 and "--k" in other.stderr.strip().splitlines()[-1]
    assert bucket_files(client, OUT, "killed") == stored
    run_cli("dist_data.filter", *flags[:2], "--k=1", *FLAGS[1:], "--overwrite", nproc=0,
            env={"DIST_DATA_STAGING": str(tmp_path / "node-c")})
    replaced = bucket_files(client, OUT, "killed")
    assert json.loads(replaced["args.json"])["k"] == 1 and "_SUCCESS" in replaced
    assert len(replaced["filtered.jsonl"].splitlines()) < len(stored["filtered.jsonl"].splitlines())


def test_a_bucket_run_folder_locked_by_another_host_is_refused_and_left_alone(s3, tmp_path):
    env, client = s3
    holder = {"host": "node-17", "pid": 4242, "started": "2026-01-01T00:00:00", "command": "x"}
    client.put_object(Bucket=OUT, Key="locked/.dist_data.lock", Body=json.dumps(holder).encode())
    proc = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir=s3://{OUT}/locked", *FLAGS,
                   nproc=0, check=False, env={"DIST_DATA_STAGING": str(tmp_path)})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "is being written by another dist_data run" in last and "node-17" in last, last
    assert f"delete s3://{OUT}/locked/.dist_data.lock" in last
    assert bucket_files(client, OUT, "locked") == {".dist_data.lock": json.dumps(holder).encode()}


def test_a_changed_object_makes_the_run_again(s3, shards, tmp_path):
    """A changed object is never served as complete: one of another size, and one of the same size (two
    rows swapped: only its ETag tells)."""
    env, client = s3
    root, rows = shards
    body = "".join(json.dumps(r) + "\n" for r in rows[:100]).encode()
    client.put_object(Bucket=BUCKET, Key="changing/rows.jsonl", Body=body)
    flags = [f"--dataset=s3://{BUCKET}/changing/", f"--output_dir={tmp_path / 'out'}", *FLAGS]
    run_cli("dist_data.filter", *flags, nproc=0)
    swapped = "".join(json.dumps(r) + "\n" for r in [rows[1], rows[0], *rows[2:100]]).encode()
    assert len(swapped) == len(body) and swapped != body
    client.put_object(Bucket=BUCKET, Key="changing/rows.jsonl", Body=swapped)
    again = run_cli("dist_data.filter", *flags, nproc=0)
    assert "already complete" not in again.stderr and "changed since the run" in again.stderr
    client.put_object(Bucket=BUCKET, Key="changing/rows.jsonl",
                      Body="".join(json.dumps(r) + "\n" for r in rows[:50]).encode())
    again = run_cli("dist_data.filter", *flags, nproc=0)
    assert "already complete" not in again.stderr and "50 rows in 1 file(s)" in again.stderr


def test_credentials_are_never_recorded_and_failures_are_one_line(s3, tmp_path):
    env, _ = s3
    secret = "sEcReT-kEy-123"
    opts = json.dumps({"key": "testing", "secret": secret})
    proc = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir={tmp_path / 'out'}",
                   f"--storage_options={opts}", *FLAGS, nproc=0, env={k: v for k, v in env.items()
                                                                      if not k.startswith("AWS_SECRET")})
    for name in os.listdir(tmp_path / "out"):
        if os.path.isfile(tmp_path / "out" / name):
            assert secret not in (tmp_path / "out" / name).read_text(errors="replace"), name
    assert secret not in proc.stderr
    cases = {"s3://no-such-bucket-x/pairs/": "no such file, folder or bucket",
             f"s3://{BUCKET}/pairs/*.parquet": "matches no input files"}
    for url, message in cases.items():
        bad = run_cli("dist_data.filter", f"--dataset={url}", f"--output_dir={tmp_path / 'bad'}", *FLAGS, nproc=0,
                      check=False)
        assert bad.returncode == 2 and message in bad.stderr.strip().splitlines()[-1], bad.stderr[-500:]
        assert not os.path.exists(tmp_path / "bad" / "_SUCCESS")
    no_creds = {**{k: "" for k in env}, "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"], "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    bad = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir={tmp_path / 'nc'}", *FLAGS,
                  nproc=0, env=no_creds, check=False)
    assert bad.returncode == 2 and "no credentials" in bad.stderr.strip().splitlines()[-1], bad.stderr[-500:]
    out = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir=s3://{BUCKET}/pairs/out",
                  *FLAGS, nproc=0, check=False)
    assert out.returncode == 2 and "overlap" in out.stderr.strip().splitlines()[-1]
    nowhere = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", "--output_dir=s3://no-such-bucket-x/run",
                      *FLAGS, nproc=0, check=False)
    last = nowhere.stderr.strip().splitlines()[-1]
    assert nowhere.returncode == 2 and "s3://no-such-bucket-x/run" in last and "no such file, folder or bucket" in last
    collection = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir=s3://{OUT}/c",
                         "--per_dataset", *FLAGS, nproc=0, check=False)
    assert collection.returncode == 2 and "a collection is written to a local or shared folder" in collection.stderr


def test_http_folder_and_file_url_read_the_same_rows(shards, local_run, tmp_path):
    root, _ = shards
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pairs/"
        run_cli("dist_data.filter", f"--dataset={url}", f"--output_dir={tmp_path / 'http'}", *FLAGS, nproc=0)
    finally:
        server.shutdown()
    assert (tmp_path / "http" / "filtered.jsonl").read_bytes() == (local_run / "filtered.jsonl").read_bytes()
    shutil.copytree(root / "pairs", tmp_path / "copy")
    run_cli("dist_data.filter", f"--dataset=file://{tmp_path / 'copy'}", f"--output_dir={tmp_path / 'file'}", *FLAGS,
            nproc=0)
    assert (tmp_path / "file" / "filtered.jsonl").read_bytes() == (local_run / "filtered.jsonl").read_bytes()


@pytest.mark.parametrize("module, flags, result, nproc", [
    ("dist_data.mine", ["--num_negatives=2", "--range_max=10", "--batch_size=32", "--output_format=nomic"], "mined", 2),
    ("dist_data.dedup", ["--on=document", "--threshold=0.9", "--batch_size=32"], "deduplicated.jsonl", 2),
    ("dist_data.pretokenize", ["--text_key=document", "--seq_len=64", "--block_docs=32", "--output_format=parquet"],
     "data", 2)])
def test_every_row_verb_from_bucket_to_bucket_gives_the_local_bytes(module, flags, result, nproc, s3, shards, tmp_path):
    """At 2 ranks, each staging apart as on two hosts: the result (a file, or a folder: contrastors' nomic
    layout, a parquet dataset) in the store has the bytes of the local one-process run's."""
    env, client = s3
    root, _ = shards
    run_cli(module, f"--dataset={root / 'pairs'}", f"--output_dir={tmp_path / 'local'}", *flags, "--noprogress", nproc=0)
    prefix = module.split(".")[-1]
    run_cli(module, f"--dataset=s3://{BUCKET}/pairs/", f"--output_dir=s3://{OUT}/{prefix}", *flags, "--noprogress",
            nproc=nproc)
    stored = bucket_files(client, OUT, prefix)
    local = tmp_path / "local" / result
    names = sorted(str(p.relative_to(tmp_path / "local")) for p in ([local] if local.is_file() else local.rglob("*"))
                   if p.is_file())
    def text(data: bytes, name: str) -> bytes:  # the nomic index names its shards where they are read
        data = gzip.decompress(data) if name.endswith(".gz") else data
        return data.replace(f"{tmp_path.name}/local/".encode(), f"{OUT}/{prefix}/".encode())

    assert names and {n: text(stored[n], n) for n in names} == {n: text((tmp_path / "local" / n).read_bytes(), n)
                                                                 for n in names}
    assert "_SUCCESS" in stored
    if result == "mined":
        counts = json.loads(stored["mined/counts.json"])["count_per_file"]
        assert list(counts) == [f"{OUT}/{prefix}/mined/shard-00000.jsonl.gz"]  # contrastors' key of the URL


def test_a_hub_dataset_is_streamed_by_rank_with_the_rows_of_the_local_copy(shards, local_run, tmp_path):
    """``--dataset=ORG/NAME`` on a Hub (a local server speaking its API: tests/fake_hub.py): the split's
    parquet files are found through datasets and read in byte ranges, each rank its row groups; the
    result has the bytes of the run on the same rows from local files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fake_hub import serve

    _, rows = shards
    repo = tmp_path / "hub" / "org" / "pairs" / "data"
    repo.mkdir(parents=True)
    for i, (a, b) in enumerate([(0, 180), (180, 300)]):
        pq.write_table(pa.Table.from_pylist(rows[a:b]), repo / f"train-{i:05d}-of-00002.parquet", row_group_size=30)
    pq.write_table(pa.Table.from_pylist(rows[:20]), repo / "test-00000-of-00001.parquet")
    server, log = serve(str(tmp_path / "hub"))
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_OFFLINE": "0",
           "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    try:
        proc = run_cli("dist_data.filter", "--dataset=org/pairs", f"--output_dir={tmp_path / 'out'}", *FLAGS, nproc=2,
                       env=env)
        same = run_cli("dist_data.filter", "--dataset=org/pairs", f"--output_dir={tmp_path / 'out'}", *FLAGS, nproc=0,
                       env=env)
        server.sha = "1" * 40  # a new commit on the Hub: the run is made again
        changed = run_cli("dist_data.filter", "--dataset=org/pairs", f"--output_dir={tmp_path / 'out'}", *FLAGS,
                          nproc=0, env=env)
        missing = run_cli("dist_data.filter", "--dataset=org/pairs", "--split=validation",
                          f"--output_dir={tmp_path / 'bad'}", *FLAGS, nproc=0, env=env, check=False)
    finally:
        server.shutdown()
    local = local_run.parent / "hub-local"
    run_cli("dist_data.filter", f"--dataset={repo}/train-0000*-of-00002.parquet", f"--output_dir={local}", *FLAGS,
            nproc=0)
    assert (tmp_path / "out" / "filtered.jsonl").read_bytes() == (local / "filtered.jsonl").read_bytes()
    assert "300 rows in 2 file(s)" in proc.stderr
    reads = [(path, rng) for method, path, rng in log if method == "GET" and path.endswith(".parquet")]
    assert reads and all(rng for _, rng in reads), reads  # byte ranges: nothing downloaded whole
    assert not any("test-00000" in path for path, _ in reads)  # only the split asked for
    assert "already complete" in same.stderr
    assert "already complete" not in changed.stderr and "org/pairs changed since the run" in changed.stderr
    assert missing.returncode == 2 and "has no split 'validation' (has ['test', 'train'])" in missing.stderr

