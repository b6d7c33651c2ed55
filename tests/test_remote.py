"""Inputs by URL (:mod:`dist_data.core.remote`) against real servers, not mocks of a client: moto's
S3 server on a local port (s3fs pointed at it by ``AWS_ENDPOINT_URL``), Python's ``http.server``
over a folder, and ``file://``. The same rows and order as the local copy: the same bytes out."""

import functools
import gzip
import http.server
import json
import os
import shutil
import socket
import threading

import pytest

from conftest import run_cli, wordnet_pairs

pytest.importorskip("s3fs")
pytest.importorskip("moto")

BUCKET = "pairs-bucket"
FLAGS = ["--k=2", "--batch_size=32", "--noprogress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def s3(shards):
    """A moto S3 server with the shards under ``s3://BUCKET/pairs/``; the environment a user sets."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    root, _ = shards
    for name in sorted(os.listdir(root / "pairs")):
        client.upload_file(str(root / "pairs" / name), BUCKET, f"pairs/{name}")
    yield env, client
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def local_run(shards):
    root, _ = shards
    out = root / "local"
    run_cli("dist_data.filter", f"--dataset={root / 'pairs'}", f"--output_dir={out}", *FLAGS, nproc=0)
    return out


@pytest.mark.parametrize("nproc, dataset", [(0, f"s3://{BUCKET}/pairs/"), (2, f"s3://{BUCKET}/pairs/shard-*.jsonl.gz")])
def test_filter_reads_a_bucket_with_the_bytes_of_the_local_copy(nproc, dataset, s3, local_run, tmp_path):
    env, _ = s3
    proc = run_cli("dist_data.filter", f"--dataset={dataset}", f"--output_dir={tmp_path / 'out'}", *FLAGS,
                   nproc=nproc)  # the fixture set the environment: a plain process runs in this one
    assert (tmp_path / "out" / "filtered.jsonl").read_bytes() == (local_run / "filtered.jsonl").read_bytes()
    assert "300 rows in 3 file(s)" in proc.stderr  # counts.json is not rows
    card = (tmp_path / "out" / "README.md").read_text()
    assert dataset in card and "testing" not in card
    # the same command again: complete; an object changed: made again, with a warning naming the input
    if nproc:
        again = run_cli("dist_data.filter", f"--dataset={dataset}", f"--output_dir={tmp_path / 'out'}", *FLAGS, nproc=0)
        assert "already complete" in again.stderr


def test_a_changed_object_makes_the_run_again(s3, shards, tmp_path):
    env, client = s3
    root, rows = shards
    client.upload_file(str(root / "pairs" / "shard-00000.jsonl.gz"), BUCKET, "changing/shard-00000.jsonl.gz")
    flags = [f"--dataset=s3://{BUCKET}/changing/", f"--output_dir={tmp_path / 'out'}", *FLAGS]
    run_cli("dist_data.filter", *flags, nproc=0)
    client.put_object(Bucket=BUCKET, Key="changing/shard-00000.jsonl.gz",
                      Body=gzip.compress("".join(json.dumps(r) + "\n" for r in rows[:50]).encode()))
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
    out = run_cli("dist_data.filter", f"--dataset=s3://{BUCKET}/pairs/", "--output_dir=s3://out-bucket/run", *FLAGS,
                  nproc=0, check=False)
    assert out.returncode == 2 and "outputs are written to a local or shared folder" in out.stderr


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


@pytest.mark.parametrize("module, flags, result", [
    ("dist_data.mine", ["--num_negatives=2", "--range_max=10", "--batch_size=32"], "mined.jsonl"),
    ("dist_data.dedup", ["--on=document", "--threshold=0.9", "--batch_size=32"], "deduplicated.jsonl"),
    ("dist_data.pretokenize", ["--text_key=document", "--seq_len=64", "--block_docs=32", "--output_format=parquet"],
     "data")])
def test_every_row_verb_reads_the_bucket_with_the_local_bytes(module, flags, result, s3, shards, tmp_path):
    root, _ = shards
    for name, dataset in (("local", str(root / "pairs")), ("s3", f"s3://{BUCKET}/pairs/")):
        run_cli(module, f"--dataset={dataset}", f"--output_dir={tmp_path / name}", *flags, "--noprogress", nproc=0)
    local, bucket = tmp_path / "local" / result, tmp_path / "s3" / result
    if local.is_dir():
        names = sorted(os.listdir(local))
        assert names and names == sorted(os.listdir(bucket))
        for n in names:
            assert (local / n).read_bytes() == (bucket / n).read_bytes(), n
    else:
        assert local.read_bytes() == bucket.read_bytes()
