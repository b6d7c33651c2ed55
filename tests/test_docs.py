"""What a user reads: the README's commands run as written, the docs site builds with
``mkdocs build --strict``, and every flag of every command is on its verb's page, generated from
the options classes (``python -m dist_data.registry docs``), so the pages cannot drift from ``--help``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from dist_data import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def code_lines(text: str) -> list[str]:
    """The indented command lines of a Markdown page, comments cut."""
    return [line.strip().split("  #")[0].strip() for line in text.splitlines()
            if line.startswith("    ") and line.strip() and not line.strip().startswith(("kept ", "|"))]


def as_run(command: str) -> list[str]:
    """A command as the page writes it, run by this interpreter (``torchrun`` is torch's module)."""
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"not a python or torchrun command: {command}")


def test_readme_is_short_and_links_every_verb_page():
    text = readme()
    assert len(text.splitlines()) <= 200
    for verb, page in registry.PAGES.items():
        assert f"`dist_data.{verb}`" in text and f"(docs/{page})" in text, verb
    for link in re.findall(r"\]\((docs/[^)#]+)\)", text):
        assert os.path.exists(os.path.join(ROOT, link)), link


def test_readme_first_example_runs_as_written(tmp_path):
    """The first example with torchrun as written, and the load_dataset line on its output."""
    lines = code_lines(readme().split("## First example")[1].split("## ")[0])
    torchrun = next(line for line in lines if line.startswith("torchrun"))
    load = next(line for line in lines if line.startswith("python -c"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    proc = subprocess.run(as_run(torchrun), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "filter"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["read"] == 5000 and stats["world_size"] == 2
    n_lines = sum(1 for _ in open(out / "filtered.jsonl"))
    assert n_lines == stats["counts"]["kept"] and 0 < n_lines < 5000
    assert "dist_data.filter: kept " in proc.stderr and "; index: faiss-cpu;" in proc.stderr
    assert {"filtered.jsonl", "stats.json", "rejects.jsonl", "scores.png", "args.json", "README.md"} <= set(
        os.listdir(out))
    # its plain-process twin is named; that it gives these bytes is test_filter_e2e's (any world size)
    assert "python -m dist_data.filter --output_dir=out/filter" in readme()
    proc = subprocess.run(as_run(load), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and f"num_rows: {n_lines}" in proc.stdout, proc.stderr[-2000:]


def test_every_flag_of_every_command_is_on_its_page_as_help_has_it():
    assert registry.docs(DOCS, check_only=True) == [], "run: python -m dist_data.registry docs"
    for cmd in registry.commands():
        with open(os.path.join(DOCS, registry.PAGES[cmd.verb]), encoding="utf-8") as f:
            page = f.read()
        for field in dataclasses.fields(cmd.options):
            assert f"| `--{field.name}` |" in page, (cmd.name, field.name)


def test_every_page_is_in_the_site_and_it_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    import yaml

    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    assert sorted(pages(config["nav"])) == sorted(n for n in os.listdir(DOCS) if n.endswith(".md"))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", os.path.join(ROOT, "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in registry.PAGES.values():
        html = (tmp_path / "site" / page.removesuffix(".md") / "index.html").read_text(encoding="utf-8")
        assert "<table>" in html and "<code>--" in html, page
