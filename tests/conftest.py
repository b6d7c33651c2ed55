"""Shared fixtures: real WordNet text, the shipped MiniLM, and a CLI runner (torchrun or plain)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Sequence

import pytest

from dist_data.text.wordnet import iter_synsets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The libraries our results are compared with (parity tests) or fed to (contract tests): a failing
# test names the versions it ran against, so an upstream change is diagnosed in one read.
REFERENCES = ("sentence-transformers", "transformers", "tokenizers", "datasets", "faiss-cpu", "torch", "numpy",
              "open_clip_torch", "mteb")


def reference_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return ", ".join(f"{name} {installed(name)}" for name in REFERENCES)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        report.sections.append(("compared with", reference_versions()))


def wordnet_pairs(n: int, seed: int = 0, synonyms: bool = True) -> list[dict]:
    """(lemma, definition) pairs from ``n`` random WordNet synsets.

    With ``synonyms``, a synset's second lemma gives a second row with the same definition:
    real duplicate documents, as a filter must treat them.
    """
    synsets = list(iter_synsets(pos="nv"))
    rng = random.Random(seed)
    rows = []
    for s in sorted(rng.sample(synsets, n), key=lambda s: (s.pos, s.offset)):
        rows.append({"query": s.lemmas[0], "document": s.definition, "id": s.id})
        if synonyms and len(s.lemmas) > 1 and rng.random() < 0.3:
            rows.append({"query": s.lemmas[1], "document": s.definition, "id": s.id + "-2"})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def run_cli(module: str, *flags: str, nproc: int = 2, timeout: int = 600, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node=nproc -m module flags`` (``nproc=0``: one process).

    A one-process run of a registered command with no environment of its own runs in this process
    (as ``python -m module`` would, exit status and output captured): the suite then pays the
    interpreter's start and the model's load once, not once per run.
    """
    if not nproc and env is None and module in IN_PROCESS:
        proc = run_here(module, flags)
        if check and proc.returncode != 0:
            raise AssertionError(f"python -m {module} {' '.join(flags)} exited {proc.returncode}\n{proc.stderr[-8000:]}")
        return proc
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", module, *flags]
    else:
        cmd = [sys.executable, "-m", module, *flags]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    if check and proc.returncode != 0:
        # a crash's list of loaded extension modules is one long line that would hide its stack
        err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("Extension modules:"))
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{err[-8000:]}")
    return proc


def _in_process_modules() -> dict[str, str]:
    from dist_data.registry import VERBS

    return {module: module for module in VERBS.values()}


IN_PROCESS = _in_process_modules()


def run_here(module: str, flags: Sequence[str]) -> subprocess.CompletedProcess:
    """``python -m module flags`` in this process: stdout, stderr and the exit status as a subprocess's."""
    import contextlib
    import importlib
    import io
    import traceback

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    os.chdir(REPO)
    sys.argv = [module, *flags]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(IN_PROCESS[module]).main(list(flags))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - what a crashed process would print
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
    return subprocess.CompletedProcess([sys.executable, "-m", module, *flags], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def model():
    from sentence_transformers import SentenceTransformer

    from dist_data.core.models import resolve_model

    # a model of the tests' own (not the one runs in this process share), float32 whatever the stored weights are
    return SentenceTransformer(resolve_model(None), device="cpu").float().eval()


def run_killed(module: str, *flags: str, out: str, nproc: int = 2, after_blocks: int = 2, cache: str | None = None) -> str:
    """Start a torchrun job, SIGKILL one rank once ``after_blocks`` blocks (embeddings, tokens) are cached
    (under ``cache``, by default ``out/cache``).

    Asserts the job failed and published nothing; returns its stderr.
    """
    import psutil

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
           module, *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    cache = cache or os.path.join(out, "cache")
    while time.time() < deadline:
        blocks = [f for _, _, fs in os.walk(cache) for f in fs if f.endswith((".npy", ".npz"))] if os.path.isdir(cache) else []
        if len(blocks) >= after_blocks:
            break
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "no ranks to kill"
    os.kill(workers[-1].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert not os.path.exists(os.path.join(out, "_SUCCESS"))
    return err.decode()


def wordnet_beir(folder, n: int, seed: int = 0) -> dict:
    """A BeIR folder from ``n`` WordNet synsets: documents are definitions (title: the lexical
    file's number for half of them), queries are lemmas, and every sampled synset holding a
    lemma is a judged positive of that lemma (so some queries have several positives).

    Adds what a real qrels file holds besides positives: a score-0 judgement and unjudged queries.
    Returns the paths and the judgements.
    """
    rng = random.Random(seed)
    synsets = rng.sample(list(iter_synsets(pos="nv")), n)
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    corpus = [{"_id": s.id, "title": f"lexfile {s.lexfile}" if i % 2 else "", "text": s.definition}
              for i, s in enumerate(synsets)]
    by_lemma = defaultdict(list)
    for s in synsets:
        for lemma in dict.fromkeys(s.lemmas[:2]):
            by_lemma[lemma].append(s.id)
    lemmas = sorted(by_lemma)
    rng.shuffle(lemmas)
    judged = lemmas[: n // 2]
    queries = [{"_id": f"q{i}", "text": lemma} for i, lemma in enumerate(lemmas[: n // 2 + 20])]
    qid = {q["text"]: q["_id"] for q in queries}
    qrels = [(qid[lemma], doc, 1) for lemma in judged for doc in by_lemma[lemma]]
    qrels.append((qid[judged[0]], corpus[-1]["_id"], 0))
    write_jsonl(os.path.join(folder, "corpus.jsonl"), corpus)
    write_jsonl(os.path.join(folder, "queries.jsonl"), queries)
    with open(os.path.join(folder, "qrels", "train.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    return {"corpus": corpus, "queries": queries, "qrels": qrels,
            "paths": {k: os.path.join(folder, v) for k, v in
                      [("corpus", "corpus.jsonl"), ("queries", "queries.jsonl"), ("qrels", "qrels/train.tsv")]}}


MATPLOTLIB_COLORS = {"C0": (31, 119, 180), "C1": (255, 127, 14), "C3": (214, 39, 40)}


def assert_plot(path, *colors: str, base: str | None = "C0") -> None:
    """A PNG we wrote, read back: a real figure (not blank, the size we draw), with ``base`` (the first
    curve; None for translucent histograms) and each of ``colors`` (matplotlib's cycle names: C1 a
    second curve, C3 the marked points or a threshold line) somewhere in it."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        assert rgb.size[0] >= 600 and rgb.size[1] >= 300, rgb.size
        pixels = set(rgb.get_flattened_data() if hasattr(rgb, "get_flattened_data") else rgb.getdata())
    assert len(pixels) > 50, f"{path}: {len(pixels)} colours: an empty figure"
    for name in ((base,) if base else ()) + colors:
        want = MATPLOTLIB_COLORS[name]
        assert any(max(abs(a - b) for a, b in zip(p, want)) < 12 for p in pixels), f"{path}: nothing drawn in {name}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3 server, not a mock of the client: moto's on a local port, with s3fs and boto3 pointed at it
    by ``AWS_ENDPOINT_URL`` (the environment a user sets), and ``DIST_DATA_STAGING`` per rank (each
    rank stages a run at a URL in its own folder, as ranks on different hosts do). Yields a boto3 client."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from bench.common import moto_server

    server, env = moto_server()
    env["DIST_DATA_STAGING"] = str(tmp_path_factory.mktemp("staging") / "rank-{rank}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    yield boto3.client("s3")
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def bucket_files(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """``{key under prefix: bytes}`` of what a bucket holds under ``prefix``."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix.rstrip("/")) + 1:]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out
