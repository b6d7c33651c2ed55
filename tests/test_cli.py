"""The command line: every flag checked before any work, readable --help, one options object per verb."""

from __future__ import annotations

import os

import pytest

from conftest import run_cli

from dist_data.core import cli
from dist_data.embed_mteb import EmbedMtebOptions
from dist_data.filter import FilterOptions
from dist_data.finetune_data import FinetuneOptions
from dist_data.mine import MineOptions
from dist_data.pretokenize import PretokenizeOptions

VERBS = [FilterOptions, MineOptions, PretokenizeOptions, EmbedMtebOptions, FinetuneOptions]


def problems(cls, *argv):
    with pytest.raises(cli.UsageError) as e:
        cli.parse(cls, list(argv))
    return str(e.value)


def test_fire_style_flags_give_typed_options():
    opts = cli.parse(FilterOptions, ["--output_dir=out", "--k", "3", "--compress", "--noprogress",
                                     "--query-prompt=query: ", "--max_rows=None", "--query_key=1"])
    assert (opts.output_dir, opts.k, opts.compress, opts.progress, opts.query_prompt) == ("out", 3, True, False,
                                                                                         "query: ")
    assert opts.max_rows is None and opts.query_key == "1"  # a str flag keeps the text as typed
    assert cli.parse(MineOptions, ["--output_dir=o", "--max_score=0.9", "--min_score=1"]).min_score == 1.0
    assert "progress" not in opts.result_args() and opts.result_args()["k"] == 3


def test_unknown_and_misspelled_flags_name_the_closest():
    assert "unknown flag --datset; did you mean --dataset?" in problems(FilterOptions, "--output_dir=o", "--datset=x")
    assert "did you mean --document_key?" in problems(MineOptions, "--output_dir=o", "--documnet_key=doc")
    assert "unknown flag --zzz (--help lists the flags)" in problems(FilterOptions, "--output_dir=o", "--zzz=1")
    assert "unexpected argument 'out'" in problems(FilterOptions, "out")


@pytest.mark.parametrize("cls, argv, expected", [
    (FilterOptions, ["--seed=-1"], "--seed must be >= 0, got -1"),
    (FilterOptions, ["--seed=1.5"], "--seed must be an integer, got '1.5'"),
    (FilterOptions, ["--max_seq_length=-1"], "--max_seq_length must be >= 1, got -1"),
    (MineOptions, ["--max_score=abc"], "--max_score must be a number, got 'abc'"),
    (MineOptions, ["--range_min=5", "--range_max=3"], "--range_max must be > --range_min=5"),
    (FilterOptions, ["--index=flat"], "--index must be one of gather, sharded, ivf, hnsw, got 'flat'"),
    (FilterOptions, ["--compress=maybe"], "--compress must be True or False"),
    (FilterOptions, ["--k=2", "--k=3"], "--k is given twice"),
    (PretokenizeOptions, ["--seq_len=0"], "--seq_len must be >= 1, got 0"),
])
def test_bad_values_name_their_flag(cls, argv, expected):
    assert expected in problems(cls, "--output_dir=o", *argv)


def test_empty_output_dir_and_missing_required_flags():
    assert "--output_dir must not be empty" in problems(FilterOptions, "--output_dir=")
    assert "--output_dir is required" in problems(FilterOptions)
    msg = problems(EmbedMtebOptions, "--task_type=classify")
    assert "--task_type must be one of classification" in msg and "--save_root_path is required" in msg


@pytest.mark.parametrize("cls", VERBS)
def test_help_is_one_line_per_flag(cls):
    import dataclasses

    text = cli.usage(cls, "dist_data.x", "Summary line.")
    flag_lines = [line for line in text.splitlines() if line.startswith("  --")]
    names = [line.split()[0][2:] for line in flag_lines]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(cls))  # each flag once, none run together
    for f, line in zip(dataclasses.fields(cls), flag_lines):
        assert line.rstrip().endswith(dict((fl.name, fl.metadata["help"]) for fl in dataclasses.fields(cls))[
            line.split()[0][2:]])  # the whole meaning, not cut
    assert all(fl.metadata.get("help") for fl in dataclasses.fields(cls))


def test_help_and_h_through_the_command_line(tmp_path):
    for flag in ("--help", "-h"):  # -h is help, never an abbreviation of --hf_subset
        proc = run_cli("dist_data.embed_mteb", flag, nproc=0)
        assert "--hf_subset" in proc.stdout and "--task_type" in proc.stdout and proc.returncode == 0
    proc = run_cli("dist_data.combine", "--help", nproc=0)
    for command in ("embeddings", "collection", "finetune", "all"):
        assert f"  {command}" in proc.stdout
    proc = run_cli("dist_data.combine", "collection", "-h", nproc=0)
    assert "--max_pairs_per_dataset" in proc.stdout
    proc = run_cli("dist_data.combine", "colection", nproc=0, check=False)
    assert proc.returncode == 2 and "did you mean 'collection'?" in proc.stderr


def test_a_misspelled_flag_stops_every_rank_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("dist_data.filter", f"--output_dir={out}", "--datset=x", "--max_rows=50", nproc=2, check=False)
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if "did you mean --dataset?" in line]
    # rank 0 says it once; torchrun's failure summary gives it as each failed rank's cause (its error file)
    assert said[0] == "dist_data.filter: error: unknown flag --datset; did you mean --dataset?", proc.stderr
    assert {line.strip() for line in said[1:]} == {"traceback : " + said[0]} and len(said) <= 3, proc.stderr
    assert not os.path.exists(out)  # nothing ran, nothing was written
    proc = run_cli("dist_data.mine", f"--output_dir={out}", "--max_score=abc", nproc=0, check=False)
    assert proc.returncode == 2 and "--max_score must be a number, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.exists(out)
