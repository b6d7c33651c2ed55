"""Every command through the same careless-user and faulty-machine cases.

The commands come from :mod:`dist_data.registry`: a verb or subcommand added there is in every
case below by that fact. The cases run in this process (a refused command stops before any rank,
model or row is touched), so the whole matrix takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import assert_plot
from dist_data.core import cli, paths
from dist_data.core.collection import CollectionOptions
from dist_data.core.options import ModelOptions, ResultOptions, RunFolderOptions
from dist_data.core.errors import RunConflictError
from dist_data.core.rundir import LOCK_NAME, SCORES_PLOT, FolderLock, Results, RunDir
from dist_data.registry import VERBS, Command, commands

COMMANDS = commands()
# required flags that are not paths: a valid value each
CHOICES = {"task_type": "classification", "split": "train", "image_root": "images"}
# flags without which a command's own cross-flag checks refuse it
EXTRA = {"captions variants": {"use_title": "True"}, "captions subsets": {"n": "1"}, "embed_images stack": {"split": "train"},
         "embed_images": {"train_data": paths.INPUT_SPEC}, "pairs": {"dataset": paths.INPUT_SPEC},
         "triplets": {"dataset": paths.INPUT_SPEC}}
INPUT_ROLES = paths.INPUT_ROLES


def roles(cmd: Command, *wanted: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cmd.options) if f.metadata.get("path") in wanted]


def valid_flags(cmd: Command, tmp) -> dict[str, str]:
    """The command's required flags, filled so that they parse (input paths exist; nothing is read)."""
    data = tmp / "in" / "rows.jsonl"
    data.parent.mkdir(exist_ok=True)
    data.write_text('{"query": "dog", "document": "a domestic canine"}\n', encoding="utf-8")
    by_role = {paths.INPUT: str(data), paths.INPUT_SPEC: str(data), paths.INPUT_DIR: str(data.parent),
               paths.OUTPUT_DIR: str(tmp / "out"), paths.OUTPUT_FILE: str(tmp / "out" / "file"),
               paths.OUTPUT_NAME: "name.tsv"}
    flags = {f.name: by_role.get(f.metadata.get("path"), CHOICES.get(f.name, "x"))
             for f in dataclasses.fields(cmd.options) if f.default is dataclasses.MISSING}
    extra = {name: by_role.get(value, value) for name, value in EXTRA.get(cmd.name, {}).items()}  # a role: its path
    return {**flags, **extra}


def invoke(cmd: Command, flags: dict[str, str], capsys, *extra: str) -> tuple[int, str, str]:
    """Run the command in this process: (exit status, stdout, stderr)."""
    try:
        cmd.main(*[f"--{k}={v}" for k, v in flags.items()], *extra)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_refusal(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    # the one line of the refusal (a log line at INFO, e.g. this machine's torchvision notice, is not one)
    lines = [line for line in err.splitlines() if line.strip() and not re.match(r"\d\d:\d\d:\d\d INFO ", line)]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def matrix(role_set: tuple[str, ...], cases: tuple[str, ...]) -> list:
    return [pytest.param(c, name, case, id=f"{c.name}--{name}-{case}")
            for c in COMMANDS for name in roles(c, *role_set) for case in cases]


# ---------------------------------------------------------------- the registry

def test_every_verb_module_is_registered():
    package = os.path.dirname(os.path.dirname(cli.__file__))
    verbs = {f[:-3] for f in os.listdir(package) if f.endswith(".py") and f[:-3] not in ("__init__", "registry")}
    assert verbs == set(VERBS), "a verb module missing from dist_data.registry.VERBS (or listed but gone)"
    # the domain packages hold no entry point: every verb is a module at the top (python -m dist_data.VERB)
    assert not [d for d in os.listdir(package) if os.path.isfile(os.path.join(package, d, "__main__.py"))]
    assert len(COMMANDS) >= 29


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name)
def test_help_lists_every_flag(cmd, capsys):
    code, out, _ = invoke(cmd, {}, capsys, "--help")
    assert code == 0
    for f in dataclasses.fields(cmd.options):
        assert f"--{f.name}" in out, f.name


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name)
def test_misspelled_flag_is_one_line_with_the_right_name(cmd, tmp_path, capsys):
    flags = valid_flags(cmd, tmp_path)
    name = next(iter(flags), None) or dataclasses.fields(cmd.options)[-1].name
    value = flags.pop(name, "1")
    code, _, err = invoke(cmd, {**flags, name[:-1]: value}, capsys)
    assert_one_line_refusal(code, err, f"unknown flag --{name[:-1]}; did you mean --{name}?")
    assert not (tmp_path / "out").exists()


COSINE_FLAGS = [pytest.param(c, f.name, id=f"{c.name}--{f.name}") for c in COMMANDS
                for f in dataclasses.fields(c.options) if f.metadata.get("check") is cli.cosine]


@pytest.mark.parametrize("cmd,name", COSINE_FLAGS + [pytest.param(
    next(c for c in COMMANDS if c.name == "mine"), "min_score", id="mine--min_score")])
@pytest.mark.parametrize("value", ["1.5", "-2"])
def test_a_cosine_threshold_outside_minus_one_to_one_is_refused(cmd, name, value, tmp_path, capsys):
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), name: value}, capsys)
    assert_one_line_refusal(code, err, f"--{name}", "[-1, 1]")


def test_every_cosine_threshold_is_checked():
    assert {p.values[1] for p in COSINE_FLAGS} >= {"min_score", "max_score", "similarity_th", "thresh"}


CHOICE_FLAGS = [pytest.param(c, f.name, id=f"{c.name}--{f.name}") for c in COMMANDS
                for f in dataclasses.fields(c.options) if hasattr(f.metadata.get("check"), "choices")]


@pytest.mark.parametrize("cmd,name", CHOICE_FLAGS)
def test_a_value_outside_a_flags_choices_is_one_line_naming_them(cmd, name, tmp_path, capsys):
    choices = next(f for f in dataclasses.fields(cmd.options) if f.name == name).metadata["check"].choices
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), name: choices[0] + "x"}, capsys)
    assert_one_line_refusal(code, err, f"--{name}", f"must be one of {', '.join(choices)}")
    assert not (tmp_path / "out").exists()


def test_the_choice_flags_are_found():
    assert {f"{p.values[0].name}--{p.values[1]}" for p in CHOICE_FLAGS} >= {
        "laionet label--rule", "filter--on_bad_rows", "laionet similarity--query_type"}


# ---------------------------------------------------------------- inputs

def make_bad_input(tmp, case: str) -> str:
    path = tmp / f"bad-{case}"
    if case == "missing":
        return str(path) + ".jsonl"
    if case == "symlink_loop":
        os.symlink(path, path)
    elif case == "empty_file":
        path.write_bytes(b"")
    elif case == "empty_folder":
        path.mkdir()
    return str(path)


@pytest.mark.parametrize("cmd,name,case", matrix(INPUT_ROLES, ("missing", "symlink_loop", "empty_file",
                                                                  "empty_folder")))
def test_a_bad_input_path_is_one_line_naming_the_flag(cmd, name, case, tmp_path, capsys):
    flags = {**valid_flags(cmd, tmp_path), name: make_bad_input(tmp_path, case)}
    code, _, err = invoke(cmd, flags, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"--{name}:" in err and "bad-" in err, err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the output folder

def output_case(cmd: Command, name: str, case: str, tmp) -> dict[str, str] | None:
    """The flags of one misplaced output folder, or None where the command has no input to clash with."""
    flags = valid_flags(cmd, tmp)
    inputs = roles(cmd, *INPUT_ROLES)
    tree = tmp / "tree"
    (tree / "cls").mkdir(parents=True)
    (tree / "cls" / "rows.jsonl").write_text('{"query": "a", "document": "b"}\n', encoding="utf-8")
    if case == "root":
        return {**flags, name: "/"}
    if case == "above_cwd":
        (tmp / "work").mkdir()
        os.chdir(tmp / "work")
        return {**flags, name: str(tmp)}
    if not inputs:
        return None
    if case == "the_input":
        return {**flags, inputs[0]: str(tree), name: str(tree)}
    if case == "inside_the_input":  # an ImageFolder tree would gain cache/ and parts/ as classes
        return {**flags, inputs[0]: str(tree), name: str(tree / "out")}
    if case == "holds_the_input":  # catalog clean --dataset=D/cleaned.csv --output_dir=D
        return {**flags, inputs[0]: str(tree / "cls" / "rows.jsonl"), name: str(tree / "cls")}
    if case == "holds_a_manifests_input":  # dedup --against=m.yaml (listing D/leaks.jsonl) --output_dir=D
        listing = roles(cmd, paths.INPUT, paths.INPUT_SPEC)
        if not listing:
            return None
        manifest = tmp / "m.yaml"
        manifest.write_text(f"datasets:\n  - path: {tree / 'cls' / 'rows.jsonl'}\n", encoding="utf-8")
        return {**flags, listing[-1]: str(manifest), name: str(tree / "cls")}
    raise ValueError(case)


@pytest.mark.parametrize("cmd,name,case", matrix((paths.OUTPUT_DIR,), (
    "root", "above_cwd", "the_input", "inside_the_input", "holds_the_input", "holds_a_manifests_input")))
def test_a_misplaced_output_folder_is_refused_before_anything_is_written(cmd, name, case, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = output_case(cmd, name, case, tmp_path)
    if flags is None:
        pytest.skip(f"{cmd.name} reads no input path that --{name} could clash with")
    before = sorted(p for p in tmp_path.rglob("*"))
    code, _, err = invoke(cmd, flags, capsys)
    assert_one_line_refusal(code, err, f"--{name}=")
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("cmd,name", [pytest.param(c, n, id=f"{c.name}--{n}") for c in COMMANDS
                                      for n in roles(c, paths.OUTPUT_DIR)
                                      if not (n == "output_dir" and issubclass(c.options, RunFolderOptions))])
def test_a_url_for_a_folder_that_is_not_a_run_folder_is_one_line(cmd, name, tmp_path, capsys):
    """Only a run folder (--output_dir of a run-folder command) is published to a store; any other output
    folder at a URL is refused before anything is written."""
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), name: "s3://bucket/out"}, capsys)
    assert_one_line_refusal(code, err, f"--{name}=s3://bucket/out", "writes to a local or shared folder")


@pytest.mark.parametrize("cmd,name", [pytest.param(c, n, id=f"{c.name}--{n}") for c in COMMANDS
                                      for n in roles(c, paths.OUTPUT_NAME)])
@pytest.mark.parametrize("value", ["../escaped.tsv", "/tmp/abs.tsv", "..", "sub/name.tsv"])
def test_an_output_name_stays_inside_the_output_folder(cmd, name, value, tmp_path, capsys):
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), name: value}, capsys)
    assert_one_line_refusal(code, err, f"--{name} must be a file name inside the output folder")


# ---------------------------------------------------------------- the run folder (lock, overwrite)

RUN_FOLDER_COMMANDS = [c for c in COMMANDS if issubclass(c.options, RunFolderOptions)]


class Place:
    """A run folder where the case puts it: a local folder, or a prefix of a bucket in an S3 server
    (``--output_dir=s3://...``, :mod:`dist_data.core.mirror`): files planted there and listed back."""

    def __init__(self, where: str, tmp, request):
        self.where, self.tmp = where, tmp
        if where == "bucket":
            self.client = request.getfixturevalue("s3_server")
            self.bucket = "conformance"
            self.client.create_bucket(Bucket=self.bucket)
            self.prefix = f"{tmp.name}/out"
            self.flag = f"s3://{self.bucket}/{self.prefix}"
        else:
            self.flag = str(tmp / "out")
            (tmp / "out").mkdir()

    def plant(self, name: str, text: str) -> None:
        if self.where == "bucket":
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=text.encode())
        else:
            os.makedirs(os.path.dirname(self.tmp / "out" / name), exist_ok=True)
            (self.tmp / "out" / name).write_text(text, encoding="utf-8")

    def files(self) -> dict[str, str]:
        if self.where == "bucket":
            from conftest import bucket_files

            return {k: v.decode() for k, v in bucket_files(self.client, self.bucket, self.prefix).items()}
        out = self.tmp / "out"
        return {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}


PLACES = ["folder", "bucket"]


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if roles(c, paths.OUTPUT_DIR)], ids=lambda c: c.name)
def test_a_folder_locked_by_a_live_run_is_refused_and_left_alone(cmd, where, tmp_path, capsys, request):
    if where == "bucket" and cmd not in RUN_FOLDER_COMMANDS:
        pytest.skip(f"{cmd.name} writes a local or shared folder (its URL is refused: tested with the paths)")
    place = Place(where, tmp_path, request)
    flags = {**valid_flags(cmd, tmp_path), **{name: place.flag if where == "folder" or name == "output_dir" else
                                              str(tmp_path / name) for name in roles(cmd, paths.OUTPUT_DIR)}}
    holder = {"host": os.uname().nodename, "pid": os.getppid(), "started": "2026-01-01T00:00:00", "command": "x"}
    place.plant(LOCK_NAME, json.dumps(holder))
    quiet = ["--noprogress"] if "progress" in {f.name for f in dataclasses.fields(cmd.options)} else []
    code, _, err = invoke(cmd, flags, capsys, *quiet)
    assert code == 2 and "Traceback" not in err, err
    assert "is being written by another dist_data run" in err and f"pid {os.getppid()}" in err, err
    assert place.files() == {LOCK_NAME: json.dumps(holder)}


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("cmd", RUN_FOLDER_COMMANDS, ids=lambda c: c.name)
def test_overwrite_never_removes_files_no_manifest_lists(cmd, where, tmp_path, capsys, request):
    place = Place(where, tmp_path, request)
    flags = {**valid_flags(cmd, tmp_path), "output_dir": place.flag}
    mine = {"args.json": '{"my": "experiment"}', "notes/keep.txt": "keep me", "stats.json": "{}"}
    for name, text in mine.items():
        place.plant(name, text)
    code, _, err = invoke(cmd, flags, capsys, "--overwrite", "--noprogress")
    assert code == 2 and "Traceback" not in err, err
    assert "no dist_data manifest" in err and "nothing was removed" in err, err
    assert place.files() == mine  # and the lock released on the way out


RESULT_COMMANDS = [c for c in COMMANDS if issubclass(c.options, ResultOptions)]


def result_flags(cmd: Command, tmp) -> dict[str, str]:
    """Flags of a one-process command whose results can be named (finetune_data: one local dataset)."""
    flags = valid_flags(cmd, tmp)
    flags.update({name: str(tmp / "out") for name in roles(cmd, paths.OUTPUT_DIR)})  # defaults too (never ".")
    flags.update({name: str(tmp / "out" / "file") for name in roles(cmd, paths.OUTPUT_FILE)})
    if cmd.verb == "finetune_data":
        (tmp / "mteb" / "wn").mkdir(parents=True, exist_ok=True)
        flags.update(data_path=str(tmp / "mteb"), dataset_name="wn")
    if cmd.name == "combine all":  # it writes all/ beside the finetune/ and collection/ it reads
        flags["save_root_path"] = str(tmp / "in")
    return flags


def plant_results(cmd: Command, flags: dict[str, str], args_change: dict) -> dict:
    """Stand-ins at every result path, recorded in the manifest as made by ``cmd`` with its flags
    changed by ``args_change`` (None: not recorded at all: the user's own files). Their bytes."""
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    planted = {}
    assert opts.results(), "a command of named results names at least one"
    for path in opts.results():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"made before: {os.path.basename(path)}")
        planted[path] = open(path, encoding="utf-8").read()
    if args_change is not None:
        command = " ".join(filter(None, [cmd.module, cmd.subcommand]))
        Results(command, opts.results(), {**opts.result_args(), **args_change},
                opts.inputs_signature()).record(complete=True)
    return planted


def still_there(planted: dict) -> bool:
    return all(open(p, encoding="utf-8").read() == text for p, text in planted.items())


@pytest.mark.parametrize("cmd", RESULT_COMMANDS, ids=lambda c: c.name)
def test_a_result_made_with_other_flags_is_refused_naming_them(cmd, tmp_path, capsys):
    flags = result_flags(cmd, tmp_path)
    changed = next(f.name for f in dataclasses.fields(cmd.options) if f.metadata.get("result", True))
    planted = plant_results(cmd, flags, {changed: "another value"})
    code, _, err = invoke(cmd, flags, capsys)
    assert_one_line_refusal(code, err, "with other flags", f"--{changed}=", "(was 'another value')", "--overwrite")
    assert still_there(planted)


@pytest.mark.parametrize("cmd", RESULT_COMMANDS, ids=lambda c: c.name)
def test_a_complete_result_with_the_same_flags_is_not_made_again(cmd, tmp_path, capsys):
    flags = result_flags(cmd, tmp_path)
    planted = plant_results(cmd, flags, {})
    code, _, err = invoke(cmd, flags, capsys)
    assert code == 0 and "already complete (same flags); nothing to do" in err, err
    assert still_there(planted)
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    results = Results(" ".join(filter(None, [cmd.module, cmd.subcommand])), opts.results(), opts.result_args(),
                      opts.inputs_signature())
    assert results.check(overwrite=False)
    path = next(iter(planted))  # a result changed since it was recorded (by hand, or a failed run): made again
    with open(path, "a", encoding="utf-8") as f:
        f.write(" and changed")
    assert not results.check(overwrite=False)
    for name in roles(cmd, *INPUT_ROLES):  # an input changed since: made again (whatever the body says then)
        if flags.get(name) and os.path.isfile(flags[name]):
            os.utime(flags[name], ns=(1, 1))
            _, _, err = invoke(cmd, flags, capsys)
            assert "already complete" not in err, err


@pytest.mark.parametrize("cmd", RESULT_COMMANDS, ids=lambda c: c.name)
def test_a_users_file_where_a_result_goes_is_never_replaced(cmd, tmp_path, capsys):
    flags = result_flags(cmd, tmp_path)
    planted = plant_results(cmd, flags, None)
    code, _, err = invoke(cmd, flags, capsys, "--overwrite")
    assert_one_line_refusal(code, err, "no dist_data manifest", "not even with --overwrite")
    assert still_there(planted)


@pytest.mark.parametrize("cmd", RESULT_COMMANDS, ids=lambda c: c.name)
def test_a_failed_overwrite_leaves_every_record_of_the_earlier_results_as_it_was(cmd, tmp_path, capsys, monkeypatch):
    """``--overwrite`` that fails (a bad row found while it runs: ``DIST_DATA_FAULT=error:body``, once its
    results are recorded as about to be written) keeps the earlier results and their records, byte for
    byte: the command that made them is still "already complete", not refused for the failed flags."""
    flags = result_flags(cmd, tmp_path)
    changed = next(f.name for f in dataclasses.fields(cmd.options) if f.metadata.get("result", True))
    planted = plant_results(cmd, flags, {changed: "another value"})
    manifests = sorted({os.path.join(os.path.dirname(p), "manifest.json") for p in planted})
    before = {m: open(m, encoding="utf-8").read() for m in manifests}
    monkeypatch.setenv("DIST_DATA_FAULT", "error:body")
    code, _, err = invoke(cmd, flags, capsys, "--overwrite")
    assert_one_line_refusal(code, err, "an injected error at body")
    assert {m: open(m, encoding="utf-8").read() for m in manifests} == before
    assert still_there(planted)
    monkeypatch.delenv("DIST_DATA_FAULT")  # the earlier command's flags: still its complete result
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    results = Results(" ".join(filter(None, [cmd.module, cmd.subcommand])), list(planted),
                      {**opts.result_args(), changed: "another value"}, opts.inputs_signature())
    assert results.check(overwrite=False)


def test_a_run_folders_overwrite_removes_another_commands_result_recorded_there(tmp_path):
    """embed_images --nostack, then ``embed_images stack`` (its result recorded in the run folder), then
    the first command with other flags and --overwrite: the stacked file goes with the run it came from."""
    out = tmp_path / "out"
    first = RunDir(str(out), {"output_dtype": "float32"}, "train.npz")
    first.prepare(overwrite=False)
    first.start()
    first.lock.release()
    stacked = Results("dist_data.embed_images stack", [str(out / "eval.npz")], {"split": None})
    stacked.record(complete=False)
    (out / "eval.npz").write_bytes(b"float32 vectors")
    stacked.record(complete=True)
    (out / "mine.txt").write_text("the user's own")
    again = RunDir(str(out), {"output_dtype": "float16"}, "train.npz")
    again.prepare(overwrite=True)
    again.start()
    again.lock.release()
    assert not (out / "eval.npz").exists() and (out / "mine.txt").read_text() == "the user's own"


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("cmd", RUN_FOLDER_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("earlier", ["no run here", "an unfinished run here"])
def test_a_users_file_at_any_name_the_run_may_write_is_refused_and_kept(cmd, earlier, where, tmp_path, capsys, request):
    """Every name a command declares (result, sidecars, plots, lists; rejects and scores.png of the engine),
    whether or not a run of ours is in the folder already: a file of the user's there stops the run before
    anything is read, named, and stays as it was (not even --overwrite removes it)."""
    place = Place(where, tmp_path, request)
    flags = {**valid_flags(cmd, tmp_path), "output_dir": place.flag}
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    names = list(dict.fromkeys([*opts.outputs(), "rejects.jsonl", SCORES_PLOT]))
    for n in names:
        place.plant(n, f"the user's {n}")
    if earlier != "no run here":
        place.plant("args.json", json.dumps(opts.result_args(), default=str))
        place.plant("manifest.json", json.dumps({"paths": ["args.json", "manifest.json"]}))
    before = place.files()
    code, _, err = invoke(cmd, flags, capsys, "--overwrite", "--noprogress")
    assert_one_line_refusal(code, err, "no dist_data manifest", "nothing was removed", *names)
    assert place.files() == before  # and the lock released on the way out


@pytest.mark.parametrize("cmd", RUN_FOLDER_COMMANDS + RESULT_COMMANDS, ids=lambda c: c.name)
def test_every_input_is_in_the_signature_a_rerun_compares(cmd, tmp_path):
    """A changed input is never served as "already complete": every input path a command names (and every
    path a manifest among them names) is in the signature its run records."""
    flags = valid_flags(cmd, tmp_path)
    listed = tmp_path / "listed.jsonl"
    listed.write_text('{"query": "cat", "document": "a feline"}\n', encoding="utf-8")
    manifest = tmp_path / "in" / "m.yaml"
    manifest.write_text(f"datasets:\n  - path: {listed}\n", encoding="utf-8")
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    signature = paths.inputs_signature(opts)
    given = [flags[n] for n in roles(cmd, *INPUT_ROLES) if n in flags]
    assert all(os.path.realpath(p) in signature for p in given), (given, signature)
    for name in roles(cmd, paths.INPUT, paths.INPUT_SPEC)[-1:]:  # a path named by a manifest given as the input
        try:
            opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in {**flags, name: str(manifest)}.items()])
        except cli.UsageError:  # a flag that takes no manifest (mine's BeIR --qrels needs its two others)
            continue
        assert os.path.realpath(listed) in paths.inputs_signature(opts), name


@pytest.mark.parametrize("cmd,name", [pytest.param(c, n, id=f"{c.name}--{n}") for c in COMMANDS
                                      for n in roles(c, paths.CACHE_DIR)])
@pytest.mark.parametrize("case", ["inside_the_input", "the_input"])
def test_a_cache_folder_inside_an_input_is_refused_at_the_start(cmd, name, case, tmp_path, capsys):
    """``--dataset=folder/ --per_dataset --cache_dir=folder/cache`` would make the cache a dataset of the
    next run (and fail after every dataset ran): refused before anything runs, naming --cache_dir."""
    flags = valid_flags(cmd, tmp_path)
    inputs = roles(cmd, paths.INPUT, paths.INPUT_SPEC)
    folder = tmp_path / "in"
    value = str(folder / "cache") if case == "inside_the_input" else str(folder)
    code, _, err = invoke(cmd, {**flags, inputs[0]: str(folder), name: value}, capsys)
    assert_one_line_refusal(code, err, f"--{name}=", f"the input --{inputs[0]}")
    assert not (folder / "cache").exists() and not (tmp_path / "out").exists()


def test_the_commands_with_a_cache_folder():
    assert {c.name for c in COMMANDS if roles(c, paths.CACHE_DIR)} >= {
        "filter", "mine", "pairs", "triplets", "dedup", "laionet similarity", "laionet search_similar"}


@pytest.mark.parametrize("suffix,text,needle", [
    (".yaml", "datasets:\n  - path: data/part0.jsonl\n    seed: 1\n    seed: 2\n", ":4: the key 'seed' is given twice"),
    (".json", '{"datasets": [{"path": "data/part0.jsonl", "seed": 1, "seed": 2}]}', "the key 'seed' is given twice")])
def test_a_manifest_with_a_repeated_key_is_refused_not_read_as_its_last_value(suffix, text, needle, row_inputs,
                                                                             tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "filter")
    _collection(tmp_path, row_inputs["filter"][0])
    manifest = tmp_path / f"m{suffix}"
    manifest.write_text(text, encoding="utf-8")
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}")
    assert_one_line_refusal(code, err, str(manifest), needle)
    assert not (tmp_path / "c").exists()


def test_every_command_that_writes_has_a_rerun_policy():
    """A run folder (:class:`Run`) or named results (:class:`Results`): nothing else writes."""
    writers = [c for c in COMMANDS if roles(c, paths.OUTPUT_DIR, paths.OUTPUT_FILE)]
    unruled = [c.name for c in writers if not issubclass(c.options, (RunFolderOptions, ResultOptions))]
    # embed_mteb keeps one record per dataset folder (meta.json); to_pytorch_style moves files in place
    assert unruled == ["embed_mteb"], unruled


def test_an_empty_lock_is_stale_and_taken_over(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_bytes(b"")
    lock = FolderLock(str(tmp_path))
    lock.acquire()
    assert "empty or unreadable lock" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_lock_from_another_process_is_refused(tmp_path):
    holder = {"host": os.uname().nodename, "pid": os.getppid(), "started": "then"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    with pytest.raises(RunConflictError, match=f"pid {os.getppid()} on this host"):
        RunDir(str(tmp_path), {"a": 1}, "result.jsonl").prepare(overwrite=True)


@pytest.mark.parametrize("where", PLACES)
def test_a_lock_of_an_earlier_attempt_of_the_same_job_is_taken_over_from_any_host(where, tmp_path, monkeypatch,
                                                                                  caplog, request):
    """A requeued SLURM job (or a torchrun restart) may start on another node: its own earlier lock is
    taken over there; another job's lock from another host is not."""
    from dist_data.core.mirror import StoreLock

    place = Place(where, tmp_path, request)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    other = {"host": "node-3", "pid": 12, "started": "then", "job": "slurm:778"}
    place.plant(LOCK_NAME, json.dumps(other))
    lock = StoreLock(place.flag) if where == "bucket" else FolderLock(place.flag)
    with pytest.raises(RunConflictError, match="host node-3"):
        lock.acquire()
    place.plant(LOCK_NAME, json.dumps({**other, "job": "slurm:777"}))
    lock.acquire()
    assert "earlier attempt of this job" in caplog.text
    assert json.loads(place.files()[LOCK_NAME])["pid"] == os.getpid()
    lock.release()
    assert LOCK_NAME not in place.files()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs, where this machine lets the test mount one (root in a namespace that allows it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'mount failed'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def fill_disk(disk) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte (unbuffered: nothing is left to flush at close)
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_at_start_leaves_no_lock_and_the_rerun_goes_ahead(tiny_disk):
    fill_disk(tiny_disk)
    run = RunDir(str(tiny_disk / "run"), {"a": 1}, "result.jsonl")
    with pytest.raises(OSError):
        run.prepare(overwrite=False)
    assert not os.path.lexists(tiny_disk / "run" / LOCK_NAME)
    assert [p for p in os.listdir(tiny_disk / "run") if p.startswith(LOCK_NAME)] == []
    os.remove(tiny_disk / "filler")
    run.prepare(overwrite=False)  # space again: the same folder is taken at once
    assert json.loads((tiny_disk / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    run.lock.release()


def test_a_registered_command_runs_as_users_type_it(tmp_path):
    """``python -m MODULE SUBCOMMAND`` refuses as the in-process call does (one subprocess: a smoke check)."""
    cmd = next(c for c in COMMANDS if c.name == "captions label")
    flags = [f"--{k}={v}" for k, v in valid_flags(cmd, tmp_path).items()]
    proc = subprocess.run([sys.executable, "-m", cmd.module, *cmd.argv(*flags, "--output_name=../x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--output_name must be a file name inside" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- bounds (real runs on WordNet text)

HUGE = str(10**9)
# the flags that size an allocation, with the flags of a tiny valid run of their command
BOUNDS = {
    "filter": (["k"], []),
    "mine": (["num_negatives", "range_max"], ["--output_format=labeled-list"]),
    "pairs": (["max_neighbors"], ["--min_score=0.5"]),
    "triplets": (["depth"], []),
}


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    """24 WordNet synsets in the layouts of the verbs with bounds (pairs, names, categorised items)."""
    from dist_data.text.wordnet import iter_synsets

    synsets = [s for s in iter_synsets(pos="n") if s.examples][:24]
    root = tmp_path_factory.mktemp("tiny")
    files = {"pairs": [{"query": s.lemmas[0], "document": s.definition} for s in synsets],
             "names": [{"name": lemma} for s in synsets for lemma in s.lemmas[:2]],
             "items": [{"title": s.lemmas[0], "description": s.definition, "category": s.lexfile} for s in synsets]}
    out = {}
    for name, rows in files.items():
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"filter": out["pairs"], "mine": out["pairs"], "pairs": out["names"], "triplets": out["items"]}


@pytest.mark.parametrize("verb,name", [(v, n) for v, (names, _) in BOUNDS.items() for n in names])
def test_a_huge_bound_is_clamped_to_the_data_with_a_notice(verb, name, tiny_rows, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == verb)
    flags = {"dataset": str(tiny_rows[verb]), "output_dir": str(tmp_path / "out"), name: HUGE}
    code, _, err = invoke(cmd, flags, capsys, "--noprogress", "--batch_size=8", *BOUNDS[verb][1])
    assert code == 0, err
    assert f"k={int(HUGE) + (1 if name == 'max_neighbors' else 0)}" in err or "is more than the" in err, err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["counts"]["read"] > 0


def test_a_bound_that_grows_exponentially_is_refused(capsys, tmp_path, tiny_rows):
    cmd = next(c for c in COMMANDS if c.name == "pairs")
    code, _, err = invoke(cmd, {"dataset": str(tiny_rows["pairs"]), "output_dir": str(tmp_path / "o"),
                                "transliterate": "True", "max_variants": HUGE}, capsys)
    assert_one_line_refusal(code, err, "--max_variants must be in [1, 4096]")


def test_a_readme_of_the_users_in_the_output_folder_is_kept_and_the_card_left_out(tiny_rows, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "filter")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# my notes about this folder\n", encoding="utf-8")
    code, _, err = invoke(cmd, {"dataset": str(tiny_rows["filter"]), "output_dir": str(out)}, capsys, "--noprogress")
    assert code == 0 and "is not this run's: the dataset card is left out" in err, err
    assert (out / "README.md").read_text(encoding="utf-8") == "# my notes about this folder\n"
    assert "card" not in json.loads((out / "stats.json").read_text())["outputs"]
    code, _, err = invoke(cmd, {"dataset": str(tiny_rows["filter"]), "output_dir": str(out), "k": "3"}, capsys,
                          "--noprogress", "--overwrite")
    assert code == 0 and (out / "README.md").read_text(encoding="utf-8") == "# my notes about this folder\n", err


# ---------------------------------------------------------------- --overwrite with a mistake keeps the finished run

def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def table_inputs(tmp_path_factory):
    """Real captions (WordNet glosses that name an ImageNet class's lemma) in the layouts of the table commands."""
    from dist_data.caption.classes import imagenet_classes

    root = tmp_path_factory.mktemp("tables")
    classes = imagenet_classes()[:30]
    captions = [{"caption": f"a photo of a {c.name} on the grass", "filepath": f"{c.wnid}/{i}.jpg", "TEXT":
                 f"{c.name} in the wild", "URL": f"http://x/{i}.jpg"} for i, c in enumerate(classes)]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in captions), encoding="utf-8")
    (root / "table.tsv").write_text("filepath\tlabel\n" + "".join(f"{i}.jpg\t{i % 7}\n" for i in range(30)),
                                    encoding="utf-8")
    (root / "names.csv").write_text("name,category\n" + "".join(f"{c.name},{c.wnid[:4]}\n" for c in classes),
                                    encoding="utf-8")
    return root


# command, flags of a valid run (inputs under the fixture's folder), the mistake made on the rerun
OVERWRITE_MISTAKES = [
    ("captions label", ["--captions={root}/captions.jsonl"], "--caption_key=captoin"),
    ("laionet label", ["--laion={root}/captions.jsonl"], "--text_key=TXET"),
    ("captions subsets", ["--df_path={root}/table.tsv", "--n=5"], "--n=500"),
    ("captions trim_tail", ["--df_path={root}/table.tsv", "--lastk=2"], "--lastk=5000"),
    ("catalog clean", ["--dataset={root}/names.csv", "--dedup_keys=category"], "--dedup_keys=categroy"),
]


@pytest.mark.parametrize("name,flags,mistake", OVERWRITE_MISTAKES, ids=[m[0] for m in OVERWRITE_MISTAKES])
def test_overwrite_with_a_mistake_keeps_the_finished_run_and_the_users_files(name, flags, mistake, table_inputs,
                                                                            tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    flags = [f.format(root=table_inputs) for f in flags] + [f"--output_dir={tmp_path / 'out'}", "--noprogress"]
    code, _, err = invoke(cmd, {}, capsys, *flags)
    assert code == 0, err
    assert_the_card_loads_the_result(tmp_path / "out", tmp_path)
    if (tmp_path / "out" / "class_frequency.txt").exists():
        assert_plot(tmp_path / "out" / "class_frequency.png")
    (tmp_path / "out" / "my_notes.txt").write_text("the user's own file")
    finished = _files(tmp_path / "out")
    code, _, err = invoke(cmd, {}, capsys, *flags, mistake, "--overwrite")
    assert code == 2 and "Traceback" not in err, err
    assert _files(tmp_path / "out") == finished


# ---------------------------------------------------------------- bad rows: file:line, or counted rejects

def _row_inputs(tmp, synsets) -> dict[str, tuple[list[dict], list[str]]]:
    """Per command: valid rows of real text and the flags that read them."""
    from dist_data.caption.classes import imagenet_classes

    classes = imagenet_classes()[:len(synsets)]
    refs = tmp / "references.jsonl"
    refs.write_text("".join(json.dumps({"TEXT": f"a photo of a {c.name}", "wnid": c.wnid}) + "\n" for c in classes),
                    encoding="utf-8")
    return {
        "filter": ([{"query": s.lemmas[0], "document": s.definition} for s in synsets], []),
        "mine": ([{"query": s.lemmas[0], "document": s.definition} for s in synsets], ["--output_format=labeled-list"]),
        "pretokenize": ([{"text": s.definition} for s in synsets], ["--seq_len=16"]),
        "pairs": ([{"name": s.lemmas[0]} for s in synsets], []),
        "triplets": ([{"title": s.lemmas[0], "description": s.definition, "category": s.lexfile} for s in synsets],
                     []),
        "catalog clean": ([{"name": s.lemmas[0], "category": s.lexfile} for s in synsets], []),
        "captions label": ([{"caption": f"a {c.name} seen from above", "filepath": f"{i}.jpg"}
                            for i, c in enumerate(classes)], []),
        "laionet label": ([{"TEXT": f"a {c.name} seen from above"} for c in classes], []),
        "dedup": ([{"text": s.definition} for s in synsets] + [{"text": synsets[0].definition.upper()}], []),
        "laionet similarity": ([{"TEXT": f"a {c.name} seen from above", "wnids": [c.wnid]} for c in classes], []),
        "laionet search_similar": ([{"TEXT": f"a {c.name} seen from above"} for c in classes],
                                   [f"--references={refs}", "--reference_key=TEXT", "--topk=3"]),
    }


BAD_ROWS = {"malformed_json": b'{"query": "a", \n', "invalid_utf8": b'{"x": "\xff\xfe"}\n',
            "lone_surrogate": b'{"x": "\\ud800"}\n'}
ROW_COMMANDS = ["filter", "mine", "pretokenize", "pairs", "triplets", "catalog clean", "captions label",
                "laionet label", "dedup"]


@pytest.fixture(scope="module")
def row_inputs(tmp_path_factory):
    from dist_data.text.wordnet import iter_synsets

    synsets = [s for s in iter_synsets(pos="n") if s.examples][100:112]
    return _row_inputs(tmp_path_factory.mktemp("rows"), synsets)


def _write_with_bad_rows(path, rows: list[dict], bad: list[bytes]) -> None:
    """The rows as jsonl with the bad lines at lines 3, 5, ... (each bad line replaces nothing)."""
    lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows]
    for i, b in enumerate(bad):
        lines.insert(2 + 2 * i, b.replace(b'"x"', b'"' + next(iter(rows[0])).encode() + b'"'))
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("name", ROW_COMMANDS)
@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_a_bad_row_stops_the_run_naming_file_and_line(name, kind, row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    path = tmp_path / "rows.jsonl"
    _write_with_bad_rows(path, rows, [BAD_ROWS[kind]])
    flag = {"captions label": "captions", "laionet label": "laion"}.get(name, "dataset")
    code, _, err = invoke(cmd, {flag: str(path), "output_dir": str(tmp_path / "out")}, capsys, "--noprogress", *extra)
    assert code == 2 and "Traceback" not in err, err
    assert f"{path}:3" in err, err
    assert not (tmp_path / "out" / "_SUCCESS").exists()


@pytest.mark.parametrize("name", ROW_COMMANDS)
def test_bad_rows_are_set_aside_and_counted_with_skip(name, row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    path = tmp_path / "rows.jsonl"
    _write_with_bad_rows(path, rows, list(BAD_ROWS.values()))
    flag = {"captions label": "captions", "laionet label": "laion"}.get(name, "dataset")
    code, _, err = invoke(cmd, {flag: str(path), "output_dir": str(tmp_path / "out")}, capsys, "--noprogress",
                          "--on_bad_rows=skip", *extra)
    assert code == 0, err
    rejects = [json.loads(line) for line in open(tmp_path / "out" / "rejects.jsonl", encoding="utf-8")]
    assert sorted(r["line"] for r in rejects) == [3, 5, 7], rejects
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert sum(counts["rejected"].values()) == 3, counts
    reasons = " ".join(counts["rejected"])  # the reader's own reasons, whatever the verb parses
    assert "malformed JSON" in reasons and "invalid UTF-8" in reasons and "lone surrogate" in reasons, reasons
    # stats add up: every row read is accounted for, by the command's own units
    accounted = sum(value(counts, key) for key in ACCOUNTED[name])
    assert counts["read"] == accounted + 3 == len(rows) + 3, (ACCOUNTED[name], counts)
    # the run's last line is the engine's, one format for every verb, with the numbers of stats.json
    last = [line for line in err.splitlines() if f"dist_data.{name}: kept " in line]
    assert len(last) == 1, err
    assert re.search(rf"kept {counts['kept']:,} \S.* of {counts['read']:,} rows read.*; rejected 3 \(", last[0]), last
    if name in EMBEDDING_COMMANDS:  # a stage without rows says what it did, not "0 rows"
        assert re.search(r"model loaded in \d", err) and "model   0 rows" not in err, err


def value(counts: dict, key: str) -> int:
    """``kept`` or ``dropped.empty_text`` (a reason of a bucket); a whole bucket without its not-sampled rows."""
    bucket, _, reason = key.partition(".")
    found = counts.get(bucket, 0)
    if isinstance(found, dict):
        return found.get(reason, 0) if reason else sum(v for k, v in found.items() if k != "not_sampled")
    return found


# what each row read becomes, besides a reject
ACCOUNTED = {"filter": ["kept", "dropped"], "mine": ["pairs"], "pretokenize": ["documents"],
             "pairs": ["names", "duplicate_rows", "dropped"],
             "triplets": ["items", "dropped.duplicate_item", "dropped.empty_text"], "catalog clean": ["kept", "dropped"],
             "captions label": ["captions_matched", "dropped"], "laionet label": ["captions_matched", "dropped"],
             "dedup": ["kept", "dropped"]}


INPUT_FLAG = {"captions label": "captions", "laionet label": "laion", "laionet similarity": "df_path",
              "laionet search_similar": "laion"}
PARSED_ROW_COMMANDS = ROW_COMMANDS + ["laionet similarity", "laionet search_similar"]


@pytest.mark.parametrize("name", PARSED_ROW_COMMANDS)
def test_a_row_the_reader_accepts_but_the_verb_rejects_is_set_aside_with_skip(name, row_inputs, tmp_path, capsys):
    """Valid JSON whose text field is an object: the reader reads it, the verb's parser refuses it. With
    ``--on_bad_rows=skip`` the run finishes (no pass over the rows parses it again), the row in
    rejects.jsonl and counted (2 ranks: the next test)."""
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    key = next(iter(rows[0]))
    path = tmp_path / "rows.jsonl"
    # catalog clean keeps any object as it is: for it, a row that is a list
    bad = [list(rows[1].values())] if name == "catalog clean" else [{**rows[1], key: {"not": "a text"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + bad + rows[2:]), encoding="utf-8")
    code, _, err = invoke(cmd, {INPUT_FLAG.get(name, "dataset"): str(path), "output_dir": str(tmp_path / "out")},
                          capsys, "--noprogress", "--on_bad_rows=skip", *extra)
    assert code == 0 and "Traceback" not in err, err
    rejects = [json.loads(line) for line in open(tmp_path / "out" / "rejects.jsonl", encoding="utf-8")]
    assert [(r["line"], r["file"]) for r in rejects] == [(3, str(path))], rejects
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert sum(counts["rejected"].values()) == 1 and counts["read"] == len(rows) + 1, counts


# blocks small enough that rank 1 holds the bad row (the rows' last block)
SMALL_BLOCKS = {"captions label": ["--block_rows=4"], "laionet label": ["--block_rows=4"],
                "laionet similarity": ["--block_rows=4"], "laionet search_similar": ["--block_rows=4"],
                "pretokenize": ["--block_docs=4", "--output_format=parquet"]}  # a datasets folder records its parts
RANKED_ROW_COMMANDS = [n for n in PARSED_ROW_COMMANDS
                       if not next(c for c in COMMANDS if c.name == n).options.one_process]


@pytest.mark.parametrize("name", RANKED_ROW_COMMANDS)
def test_two_ranks_set_aside_a_row_only_the_verb_rejects_and_write_what_one_rank_writes(name, row_inputs, tmp_path,
                                                                                        capsys):
    """The same at two ranks, the bad row in rank 1's block: every rank finishes (none stops alone at
    a collective, none parses it again in a later pass: search_similar and similarity read their rows
    twice) and the outputs are the one-process run's bytes."""
    from conftest import run_cli

    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    key = next(iter(rows[0]))
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(len(lines) - 2, json.dumps({**rows[1], key: {"not": "a text"}}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = [f"--{INPUT_FLAG.get(name, 'dataset')}={path}", "--noprogress", "--on_bad_rows=skip",
             *SMALL_BLOCKS.get(name, ["--batch_size=1"]), *extra]
    code, _, err = invoke(cmd, {}, capsys, *flags, f"--output_dir={tmp_path / 'one'}")
    assert code == 0, err
    run_cli(cmd.module, *cmd.argv(*flags, f"--output_dir={tmp_path / 'two'}"), nproc=2)
    outputs = json.loads((tmp_path / "one" / "stats.json").read_text())["outputs"]
    for kind, output in outputs.items():  # the card says how many ranks ran
        assert kind == "card" or tree_bytes(tmp_path / "one" / output) == tree_bytes(tmp_path / "two" / output), output
    two = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert two["world_size"] == 2 and sum(two["counts"]["rejected"].values()) == 1, two["counts"]
    assert two["ranks"][1]["counts"]["rejected"], two["ranks"]  # rank 1 held it


MODEL_COMMANDS = [c for c in RUN_FOLDER_COMMANDS if issubclass(c.options, ModelOptions)
                  or c.options.models is not RunFolderOptions.models]


@pytest.mark.parametrize("cmd", MODEL_COMMANDS, ids=lambda c: c.name)
def test_a_model_that_cannot_be_found_stops_the_run_when_it_opens(cmd, row_inputs, tmp_path, capsys):
    """Every flag that names a model (``options.models()``) is checked by the engine when the run
    opens: one line naming the flag, before a row is read or the output folder is created."""
    flags = valid_flags(cmd, tmp_path)
    opts = cli.parse(cmd.options, [f"--{k}={v}" for k, v in flags.items()])
    flag = opts.models()[0][0]
    code, _, err = invoke(cmd, {**flags, flag: str(tmp_path / "no-such-model")}, capsys, "--noprogress")
    assert_one_line_refusal(code, err, f"--{flag}: no such folder")
    assert not (tmp_path / "out").exists()


def test_the_commands_that_name_models():
    assert {c.name for c in MODEL_COMMANDS} >= {"filter", "mine", "pretokenize", "pairs", "triplets", "dedup",
                                                 "laionet similarity", "laionet search_similar"}


def test_a_flag_a_command_cannot_honour_is_refused_not_ignored(tmp_path, capsys, table_inputs):
    cmd = next(c for c in COMMANDS if c.name == "catalog clean")
    code, _, err = invoke(cmd, {"dataset": str(table_inputs / "names.csv"), "output_dir": str(tmp_path / "o"),
                                "max_rows": "5"}, capsys)
    assert_one_line_refusal(code, err, "--max_rows=5: clean reads every row; --sample=5")


@pytest.mark.parametrize("name", ["filter", "pairs", "captions label"])
def test_an_input_with_no_rows_is_said_naming_the_file(name, row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    path = tmp_path / "blank.jsonl"
    path.write_text("\n\n", encoding="utf-8")  # not empty on disk, but no row
    flag = {"captions label": "captions"}.get(name, "dataset")
    _, _, err = invoke(cmd, {flag: str(path), "output_dir": str(tmp_path / "out")}, capsys, "--noprogress",
                       *row_inputs[name][1])
    assert f"{path}: no rows" in err, err


def test_a_full_disk_while_publishing_a_set_is_one_line_and_leaves_nothing_half_written(tiny_disk, row_inputs,
                                                                                       tmp_path, capsys):
    data = tmp_path / "collection"
    data.mkdir()
    rows, _ = row_inputs["filter"]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tiny_disk / "out").mkdir()
    fill_disk(tiny_disk)
    cmd = next(c for c in COMMANDS if c.name == "combine collection")
    code, _, err = invoke(cmd, {"data_dir": str(data), "save_root_path": str(tiny_disk / "out")}, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert "No space left on device" in err and str(tiny_disk / "out") in err and "nothing was published" in err, err
    assert sorted(os.listdir(tiny_disk / "out")) == []  # no collection/ without its test/, no .tmp-* folder


@pytest.mark.parametrize("name,extra", [("captions subsets", ["--n=5"]), ("captions trim_tail", ["--lastk=2"])])
def test_invalid_utf8_in_a_caption_table_names_its_line(name, extra, table_inputs, tmp_path, capsys):
    table = tmp_path / "table.tsv"
    lines = (table_inputs / "table.tsv").read_bytes().split(b"\n")
    lines[3] = b"caf\xe9.jpg\t3"
    table.write_bytes(b"\n".join(lines))
    cmd = next(c for c in COMMANDS if c.name == name)
    code, _, err = invoke(cmd, {"df_path": str(table), "output_dir": str(tmp_path / "out")}, capsys, *extra)
    assert_one_line_refusal(code, err, f"{table}:4: invalid UTF-8")


EMBEDDING_COMMANDS = ["filter", "mine", "pairs", "triplets", "dedup"]


@pytest.mark.parametrize("name", ROW_COMMANDS)
def test_a_killed_run_resumes_from_its_cached_blocks_and_parts_to_the_same_bytes(name, row_inputs, tmp_path, capsys):
    """SIGKILL (no clean-up runs, the lock of a dead process stays) once the first texts are embedded
    and cached (``DIST_DATA_FAULT=kill:embedded``), then the same command killed once every part is
    written (``kill:merge``): it embeds nothing again; then the same command once more: it takes
    the lock over, resumes, and publishes the bytes of a run that was never killed. The verbs that
    embed are exactly :data:`EMBEDDING_COMMANDS` (the others never reach ``embedded``)."""
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    flag = {"captions label": "captions", "laionet label": "laion"}.get(name, "dataset")

    def flags(out):
        return [f"--{flag}={path}", f"--output_dir={out}", "--noprogress", *extra]

    code, _, err = invoke(cmd, {}, capsys, *flags(tmp_path / "whole"))
    assert code == 0, err
    assert_the_card_loads_the_result(tmp_path / "whole", tmp_path)
    # every file the run wrote is one it declared (so a user's file at that name is refused at the start)
    declared = RunDir(".", {}, "", cli.parse(cmd.options, flags(tmp_path / "whole")).outputs()).outputs
    assert set(os.listdir(tmp_path / "whole")) <= {*declared, "README.md", "manifest.json"}, declared
    out = tmp_path / "killed"

    def killed_at(point: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DIST_DATA_FAULT": f"kill:{point}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-m", cmd.module, *cmd.argv(*flags(out))], env=env,
                              capture_output=True, text=True, timeout=300)

    if name in EMBEDDING_COMMANDS:
        first = killed_at("embedded")
        assert first.returncode == -9, first.stderr
        assert list((out / "cache").rglob("*.npy")) and not (out / "_SUCCESS").exists()
    killed = killed_at("merge")
    assert killed.returncode == -9, killed.stderr
    assert ("served from the cache" in killed.stderr) == (name in EMBEDDING_COMMANDS), killed.stderr
    assert (out / LOCK_NAME).exists() and not (out / "_SUCCESS").exists()
    code, _, err = invoke(cmd, {}, capsys, *flags(out))
    assert code == 0 and "taking over the lock of a dead run" in err, err
    outputs = json.loads((tmp_path / "whole" / "stats.json").read_text())["outputs"]
    for result in outputs.values():
        assert tree_bytes(out / result) == tree_bytes(tmp_path / "whole" / result), result


def assert_the_card_loads_the_result(folder, tmp) -> None:
    """The folder's README.md is a dataset card whose front matter names the result's table files, so
    ``datasets.load_dataset(folder)`` returns exactly the result's rows (read here by another reader);
    a result that is not a table gets a card without ``configs``."""
    import pyarrow.parquet as pq
    import yaml
    from datasets import load_dataset, load_from_disk

    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:200]
    front = yaml.safe_load(text.split("---\n")[1])
    result = json.loads((folder / "stats.json").read_text())["outputs"]["result"]
    assert f"`{result}`" in text or any(f"`{result}" in line for line in text.splitlines())
    if "configs" not in front:
        assert not (folder / result).is_file() or not result.endswith((".jsonl", ".parquet", ".tsv", ".csv"))
        return
    paths = front["configs"][0]["data_files"][0]["path"]
    if all((folder / p).stat().st_size == 0 for p in paths):
        return  # no rows (datasets cannot read an empty json file): the card still names the result
    got = load_dataset(str(folder), split="train", cache_dir=str(tmp / "hf-cache"))
    if paths[0].endswith(".arrow"):
        want = load_from_disk(str(folder / result)).to_list()
    elif paths[0].endswith(".parquet"):
        want = [r for p in paths for r in pq.read_table(folder / p).to_pylist()]
    elif paths[0].endswith((".tsv", ".csv")):
        frame = pd.concat([pd.read_csv(folder / p, sep="\t" if p.endswith(".tsv") else ",") for p in paths])
        pd.testing.assert_frame_equal(got.to_pandas(), frame.reset_index(drop=True), check_dtype=False)
        return
    else:
        want = [json.loads(line) for p in paths for line in (folder / p).read_text(encoding="utf-8").splitlines()]
    assert got.to_list() == want and len(want) > 0


def tree_bytes(path) -> dict[str, bytes]:
    """A file's bytes, or every file's below a folder (by relative path)."""
    if not path.is_dir():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- collections (many datasets in one job)

COLLECTION_COMMANDS = [c.name for c in COMMANDS if issubclass(c.options, CollectionOptions)]


def test_the_verbs_of_collections():
    assert COLLECTION_COMMANDS == ["filter", "mine", "pairs", "triplets"]


def _collection(tmp, rows: list[dict], manifest_extra: dict | None = None) -> tuple[str, list[str]]:
    """Two datasets of the rows (halves) and a manifest naming them: (manifest, the datasets' files)."""
    files = []
    for i, part in enumerate((rows[:len(rows) // 2], rows[len(rows) // 2:])):
        path = tmp / "data" / f"part{i}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        files.append(str(path))
    entries = [{"name": "first", "path": "data/part0.jsonl"}, {"path": files[1], **(manifest_extra or {})}]
    manifest = tmp / "collection.json"
    manifest.write_text(json.dumps({"datasets": entries}), encoding="utf-8")
    return str(manifest), files


@pytest.mark.parametrize("name", COLLECTION_COMMANDS)
def test_each_dataset_of_a_collection_is_byte_identical_to_a_run_on_it_alone(name, row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    manifest, files = _collection(tmp_path, rows, {"seed": 7})
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}",
                          "--noprogress", *extra)
    assert code == 0, err
    summary = json.loads((tmp_path / "c" / "collection.json").read_text())
    assert [d["name"] for d in summary["datasets"]] == ["first", "part1"] and summary["failed"] == []
    for dataset, path, flags in (("first", files[0], []), ("part1", files[1], ["--seed=7"])):  # its override
        code, _, err = invoke(cmd, {}, capsys, f"--dataset={path}", f"--output_dir={tmp_path / dataset}",
                              "--noprogress", *extra, *flags)
        assert code == 0, err
        alone = json.loads((tmp_path / dataset / "stats.json").read_text())
        for result in alone["outputs"].values():
            assert tree_bytes(tmp_path / "c" / dataset / result) == tree_bytes(tmp_path / dataset / result), result
        row = next(d for d in summary["datasets"] if d["name"] == dataset)
        assert (row["read"], row["kept"]) == (alone["counts"]["read"], alone["counts"].get("kept"))
    # the same command again: every dataset already complete; a flag changed for one: refused, naming it
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}",
                          "--noprogress", *extra)
    assert code == 0 and err.count("already complete") >= 2, err
    _collection(tmp_path, rows, {"seed": 8})
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}",
                          "--noprogress", *extra)
    assert_one_line_refusal(code, err, "part1 (--seed=8 (was 7))", "--overwrite")
    assert "first" not in err.split("other flags:")[1]


COLLECTION_MISTAKES = [
    ("a missing dataset", {"path": "data/nope.jsonl"}, "dataset 3 (nope): --dataset: no such file or folder"),
    ("a misspelt flag", {"path": "data/part0.jsonl", "name": "x", "sed": 3}, "unknown flag 'sed'; did you mean 'seed'?"),
    ("a flag of the collection", {"path": "data/part0.jsonl", "name": "x", "output_dir": "/tmp"},
     "output_dir cannot be set per dataset"),
    ("a name that leaves the folder", {"path": "data/part0.jsonl", "name": "../x"}, "cannot name a folder"),
    ("a repeated name", {"path": "data/part0.jsonl", "name": "first"}, "the name 'first' is already dataset 1"),
    ("a bad value", {"path": "data/part0.jsonl", "name": "x", "seed": -1}, "--seed must be >= 0"),
    ("a name the collection writes", {"path": "data/part0.jsonl", "name": "collection.json"},
     "'collection.json' cannot name a folder of the collection"),
    ("a name a run folder writes", {"path": "data/part0.jsonl", "name": "stats.json"},
     "'stats.json' cannot name a folder of the collection"),
]


@pytest.mark.parametrize("name", COLLECTION_COMMANDS)
@pytest.mark.parametrize("case,entry,needle", COLLECTION_MISTAKES, ids=[m[0] for m in COLLECTION_MISTAKES])
def test_a_mistake_in_a_collection_stops_it_before_any_work_naming_the_dataset(name, case, entry, needle, row_inputs,
                                                                             tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    manifest, _ = _collection(tmp_path, rows)
    data = json.loads(open(manifest).read())
    data["datasets"].append(entry)
    open(manifest, "w").write(json.dumps(data))
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}",
                          "--noprogress", *extra)
    assert_one_line_refusal(code, err, manifest, needle)
    assert not (tmp_path / "c" / "first").exists()  # nothing ran
    if case in ("a missing dataset", "a bad value", "a misspelt flag", "a flag of the collection"):
        code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}",
                              "--noprogress", "--on_dataset_error=skip", *extra)
        assert code == 0, err
        summary = json.loads((tmp_path / "c" / "collection.json").read_text())
        assert len(summary["failed"]) == 1 and needle.split("): ")[-1] in summary["datasets"][-1]["reason"]
        assert (tmp_path / "c" / "first" / "_SUCCESS").exists()


def test_a_users_collection_json_in_the_collections_folder_is_refused_and_kept(row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "filter")
    manifest, _ = _collection(tmp_path, row_inputs["filter"][0])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "collection.json").write_text('{"my": "notes"}', encoding="utf-8")
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}", "--noprogress")
    assert_one_line_refusal(code, err, "holds collection.json, which no dist_data manifest lists")
    assert (tmp_path / "c" / "collection.json").read_text() == '{"my": "notes"}'
    assert sorted(os.listdir(tmp_path / "c")) == ["collection.json"]


def test_per_dataset_takes_each_file_of_a_folder_given_relative_to_the_working_folder(row_inputs, tmp_path, capsys,
                                                                                      monkeypatch):
    cmd = next(c for c in COMMANDS if c.name == "filter")
    rows, _ = row_inputs["filter"]
    _collection(tmp_path, rows)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(cmd, {}, capsys, "--dataset=data", "--per_dataset", "--output_dir=c", "--noprogress")
    assert code == 0, err
    summary = json.loads((tmp_path / "c" / "collection.json").read_text())
    assert [(d["name"], d["path"], d["status"]) for d in summary["datasets"]] == [
        ("part0", str(tmp_path / "data" / "part0.jsonl"), "done"), ("part1", str(tmp_path / "data" / "part1.jsonl"), "done")]


@pytest.mark.parametrize("name", COLLECTION_COMMANDS)
def test_a_collection_flag_given_wrongly_is_one_line(name, row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == name)
    rows, extra = row_inputs[name]
    manifest, files = _collection(tmp_path, rows)
    out = f"--output_dir={tmp_path / 'c'}"
    cases = [([f"--collection={manifest}", "--per_dataset"], "not both"),
             ([f"--collection={manifest}", f"--dataset={files[0]}"], "drop --dataset"),
             ([f"--dataset={files[0]}", "--per_dataset"], "--per_dataset needs --dataset to be a folder"),
             ([f"--collection={files[0]}"], "a .yaml, .yml or .json manifest is expected")]
    for flags, needle in cases:
        code, _, err = invoke(cmd, {}, capsys, *flags, out, "--noprogress", *extra)
        assert_one_line_refusal(code, err, needle)
    assert not (tmp_path / "c").exists()


def test_a_bad_row_in_one_dataset_stops_the_collection_naming_it_or_is_set_aside(row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "filter")
    rows, _ = row_inputs["filter"]
    manifest, files = _collection(tmp_path, rows)
    _write_with_bad_rows(tmp_path / "data" / "part1.jsonl", rows[len(rows) // 2:], [BAD_ROWS["malformed_json"]])
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}", "--noprogress")
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "dataset 2 (part1)" in errors[0] and f"{files[1]}:3" in errors[0], errors
    assert (tmp_path / "c" / "first" / "_SUCCESS").exists()  # the dataset before it is done (and stays done)
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}", "--noprogress",
                          "--on_dataset_error=skip")
    assert code == 0 and "already complete" in err, err
    assert json.loads((tmp_path / "c" / "collection.json").read_text())["failed"] == ["part1"]


def test_a_killed_collection_resumes_inside_the_dataset_it_was_in(row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "pairs")
    rows, _ = row_inputs["pairs"]
    manifest, _ = _collection(tmp_path, rows)
    flags = [f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}", "--noprogress"]
    env = {**os.environ, "DIST_DATA_FAULT": "kill:merge", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-m", cmd.module, *flags], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9 and not (tmp_path / "c" / "first" / "_SUCCESS").exists(), killed.stderr
    code, _, err = invoke(cmd, {}, capsys, *flags)
    assert code == 0 and "taking over the lock of a dead run" in err, err
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'whole'}",
                          "--noprogress")
    assert code == 0, err
    for dataset in ("first", "part1"):
        assert tree_bytes(tmp_path / "c" / dataset / "pairs.jsonl") == tree_bytes(tmp_path / "whole" / dataset /
                                                                                  "pairs.jsonl")


# ---------------------------------------------------------------- the class names a command writes

CLASS_NAME_COMMANDS = [c for c in COMMANDS if "class_names" in {f.name for f in dataclasses.fields(c.options)}]


def test_the_commands_that_write_class_names():
    assert {c.name for c in CLASS_NAME_COMMANDS} == {
        "captions variants", "captions subsets", "captions trim_tail", "captions label", "laionet label",
        "laionet similarity", "laionet filter", "laionet subsets", "laionet search_similar", "laionet match_freq"}


@pytest.mark.parametrize("cmd", CLASS_NAME_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", ["a repeated name", "999 names", "neither list nor file"])
def test_a_class_names_file_that_is_not_1000_unique_names_is_one_line(cmd, case, tmp_path, capsys):
    names = tmp_path / "names.txt"
    lines = {"a repeated name": ["tench"] * 2 + [f"class {i}" for i in range(998)],
             "999 names": [f"class {i}" for i in range(999)], "neither list nor file": []}[case]
    names.write_text("".join(f"{n}\n" for n in lines), encoding="utf-8")
    value = str(names) if lines else "imagenet-classes"
    needle = {"a repeated name": f"{names}:2: 'tench' is also the name on line 1", "999 names": "999 class names",
              "neither list nor file": "must be original or clip"}[case]
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), "class_names": value}, capsys)
    assert_one_line_refusal(code, err, "--class_names", needle)
    assert not (tmp_path / "out").exists()


def test_a_collection_starts_over_an_unfinished_dataset_that_cached_nothing_as_a_run_alone_does(row_inputs, tmp_path,
                                                                                                capsys):
    """The run folder's own rule (RunDir.blocks): an unfinished run with other flags that cached nothing is
    started over, not refused, inside a collection as alone."""
    cmd = next(c for c in COMMANDS if c.name == "filter")
    rows, _ = row_inputs["filter"]
    manifest, _ = _collection(tmp_path, rows)
    first = tmp_path / "c" / "first"
    first.mkdir(parents=True)
    (first / "args.json").write_text(json.dumps({"k": 5}), encoding="utf-8")
    (first / "manifest.json").write_text(json.dumps({"paths": ["args.json", "manifest.json"]}), encoding="utf-8")
    code, _, err = invoke(cmd, {}, capsys, f"--collection={manifest}", f"--output_dir={tmp_path / 'c'}", "--noprogress")
    said = [line for line in err.splitlines() if "holds an unfinished run that cached nothing" in line]
    assert code == 0 and len(said) == 1 and "--k=2 (was 5)" in said[0] and said[0].endswith("starting over"), err
    assert (first / "_SUCCESS").exists()


# ---------------------------------------------------------------- what a run knows: its inputs, its counts

@pytest.fixture(scope="module")
def leak_inputs(tmp_path_factory):
    """Training rows of WordNet glosses, five of them also in a BeIR evaluation corpus (two of those five
    twice more in the training rows, upper-cased: exact duplicates of a leaked text), and an MTEB folder
    that holds only a train split."""
    from dist_data.text.wordnet import iter_synsets

    glosses = [s.definition for s in iter_synsets(pos="n")][2000:2060]
    root = tmp_path_factory.mktemp("leaks")
    train = [{"text": g} for g in glosses[:30]] + [{"text": glosses[0].upper()}, {"text": glosses[1].upper()}]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    corpus = glosses[:5] + glosses[40:50]
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(corpus)), encoding="utf-8")
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": g}) + "\n"
                                                for i, g in enumerate(glosses[50:53])), encoding="utf-8")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i + 5}\t1\n" for i in range(3)), encoding="utf-8")
    (root / "mteb" / "wn").mkdir(parents=True)
    (root / "mteb" / "wn" / "train.jsonl").write_text("".join(json.dumps({"text": g, "label": i % 3}) + "\n"
                                                              for i, g in enumerate(glosses[53:60])), encoding="utf-8")
    return root, glosses


def _summary_numbers(err: str) -> tuple[int, ...]:
    """(kept, read, exact, near, leaked, rejected) from the run's last line (the engine's summary)."""
    line = next(line for line in err.splitlines() if "dist_data.dedup: kept " in line)
    found = re.search(r"kept ([\d,]+) rows of ([\d,]+) rows read .*?; dropped [\d,]+ \((.*?)\); rejected ([\d,]+)",
                      line)
    assert found, line
    reasons = dict((k, int(v.replace(",", ""))) for k, v in re.findall(r"(\w+) ([\d,]+)", found.group(3)))
    number = lambda g: int(g.replace(",", ""))  # noqa: E731
    return (number(found.group(1)), number(found.group(2)), reasons.get("exact_duplicate", 0),
            reasons.get("near_duplicate", 0), reasons.get("near_an_evaluation_text", 0), number(found.group(4)))


def test_dedup_against_an_evaluation_set_counts_add_up_and_a_changed_input_is_made_again(leak_inputs, tmp_path,
                                                                                         capsys):
    root, glosses = leak_inputs
    cmd = next(c for c in COMMANDS if c.name == "dedup")
    beir = tmp_path / "beir"
    import shutil

    shutil.copytree(root / "beir", beir)
    flags = [f"--dataset={root / 'train.jsonl'}", f"--against={beir}", f"--output_dir={tmp_path / 'o'}",
             "--noprogress"]
    code, _, err = invoke(cmd, {}, capsys, *flags)
    assert code == 0, err
    counts = json.loads((tmp_path / "o" / "stats.json").read_text())["counts"]
    dropped = counts["dropped"]
    assert counts["read"] == 32 == counts["kept"] + sum(dropped.values()) + sum(counts["rejected"].values()), counts
    assert dropped["exact_duplicate"] == 2 and dropped["near_an_evaluation_text"] == counts["leaked"] >= 5, counts
    kept, read, exact, near, leaked, rejected = _summary_numbers(err)
    assert read == kept + exact + near + leaked + rejected == 32 and leaked == counts["leaked"], err
    # flags that cannot change the result: the same run, complete
    for same in (["--index=sharded"], ["--max_neighbors=5"]):
        code, _, err = invoke(cmd, {}, capsys, *flags, *same)
        assert code == 0 and "already complete (same flags)" in err, err
    args = json.loads((tmp_path / "o" / "args.json").read_text())  # as a run before `exact` recorded it
    assert args["index"] == "exact" and "nlist" not in args and "max_neighbors" not in args, args
    (tmp_path / "o" / "args.json").write_text(json.dumps({**args, "index": "gather", "nlist": None, "nprobe": 128,
                                                          "hnsw_m": 32, "ef_search": 128, "max_neighbors": 32}))
    code, _, err = invoke(cmd, {}, capsys, *flags, "--index=sharded")
    assert code == 0 and "already complete (same flags)" in err, err
    # a changed evaluation set: made again (said, naming it), not "already complete"
    with open(beir / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "dx", "title": "", "text": glosses[20]}) + "\n")
    code, _, err = invoke(cmd, {}, capsys, *flags)
    assert code == 0 and "already complete" not in err and "changed since the run" in err, err
    again = json.loads((tmp_path / "o" / "stats.json").read_text())["counts"]
    assert again["leaked"] == counts["leaked"] + 1 and again["kept"] == counts["kept"] - 1, again


@pytest.mark.parametrize("extra,needle", [
    (["--mode=flag"], "--mode=flag lists the rows near an evaluation text: give the evaluation sets (--against)"),
    (["--against={root}/train.jsonl"], "--against names the training data --dataset itself"),
    (["--against={root}/mteb/wn"], "has only train"),
])
def test_dedup_refuses_what_would_remove_or_flag_nothing_or_everything(extra, needle, leak_inputs, tmp_path, capsys):
    root, _ = leak_inputs
    cmd = next(c for c in COMMANDS if c.name == "dedup")
    code, _, err = invoke(cmd, {}, capsys, f"--dataset={root / 'train.jsonl'}", f"--output_dir={tmp_path / 'o'}",
                          "--noprogress", *[e.format(root=root) for e in extra])
    assert_one_line_refusal(code, err, needle)
    assert not (tmp_path / "o" / "_SUCCESS").exists()


@pytest.mark.parametrize("verb,rows", [
    ("dedup", ["one row"]), ("dedup", [f"row {i}" for i in range(5)]), ("dedup", ["the same row"] * 200),
    ("pairs", ["one name"]), ("pairs", ["Nike", "NIKE Inc", "Adidas", "Puma", "Reebok"])])
def test_an_ivf_index_over_fewer_texts_than_it_needs_is_an_exact_search_with_a_notice(verb, rows, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == verb)
    key = "text" if verb == "dedup" else "name"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({key: r}) + "\n" for r in rows), encoding="utf-8")
    outputs = {}
    for index in ("ivf", "gather"):
        code, _, err = invoke(cmd, {}, capsys, f"--dataset={data}", f"--output_dir={tmp_path / index}",
                              f"--index={index}", "--nlist=16", "--noprogress")
        assert code == 0 and "Traceback" not in err, err
        assert ("exact search instead" in err) == (index == "ivf"), err
        result = json.loads((tmp_path / index / "stats.json").read_text())["outputs"]["result"]
        outputs[index] = (tmp_path / index / result).read_bytes()
    assert outputs["ivf"] == outputs["gather"]


def test_combine_collection_names_a_dataset_by_its_whole_file_name_and_refuses_a_clash(row_inputs, tmp_path, capsys):
    cmd = next(c for c in COMMANDS if c.name == "combine collection")
    data = tmp_path / "data"
    data.mkdir()
    rows, _ = row_inputs["filter"]
    pairs = [[r["query"], r["document"]] for r in rows]
    (data / "nli.pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[:10]), encoding="utf-8")
    (data / "nli.triplets.jsonl").write_text("".join(json.dumps(p + [rows[(i + 1) % len(rows)]["document"]]) + "\n"
                                                     for i, p in enumerate(pairs)), encoding="utf-8")
    code, _, err = invoke(cmd, {"data_dir": str(data), "save_root_path": str(tmp_path / "out")}, capsys)
    assert code == 0, err
    stats = json.loads((tmp_path / "out" / "collection" / "stats.json").read_text())
    assert {n: d["kept"] for n, d in stats["datasets"].items()} == {"nli.pairs": 10, "nli.triplets": len(rows)}
    assert stats["train_rows"] + stats["test_rows"] == 10 + len(rows)
    import gzip

    with gzip.open(data / "nli.pairs.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(pairs[0]) + "\n")
    code, _, err = invoke(cmd, {"data_dir": str(data), "save_root_path": str(tmp_path / "out2")}, capsys)
    assert_one_line_refusal(code, err, "nli.pairs.jsonl", "nli.pairs.jsonl.gz", "would both be the dataset 'nli.pairs'")


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_laionet_filter_takes_a_wnid_outside_imagenet_as_a_bad_row(on_bad_rows, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dist_data.caption import laion
    from dist_data.caption.classes import imagenet_classes

    classes = imagenet_classes()
    rows = [{laion.INDEX: i, "TEXT": f"a photo of a {c.name}", laion.QUERY_WNID: c.wnid, laion.SIMILARITY: 0.2 * i,
             "NSFW": "UNLIKELY"} for i, c in enumerate(classes[:5])]
    rows[2][laion.QUERY_WNID] = "n99999999"
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    cmd = next(c for c in COMMANDS if c.name == "laionet filter")
    code, _, err = invoke(cmd, {"df_path": str(path), "output_dir": str(tmp_path / "out"), "similarity_th": "0.1",
                                "on_bad_rows": on_bad_rows}, capsys)
    if on_bad_rows == "error":
        assert_one_line_refusal(code, err, f"{path}:3", "'n99999999'", "not an ImageNet-1k wnid")
        return
    assert code == 0, err
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert counts["rejected"] == {"'name_def_wnid' is not an ImageNet-1k wnid": 1}, counts
    assert counts["read"] == 5 == counts["kept"] + sum(counts["dropped"].values()) + sum(counts["rejected"].values())
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["row"][laion.QUERY_WNID]) for r in rejects] == [(3, "n99999999")]


@pytest.mark.parametrize("cmd", CLASS_NAME_COMMANDS[:1], ids=lambda c: c.name)
@pytest.mark.parametrize("line,needle", [("tench\tabc", "is not a name, nor name<TAB>count"),
                                         ("tench\t0\tzz", "is not a name, nor name<TAB>count")])
def test_a_class_names_line_with_a_tab_that_is_not_a_count_is_one_line(cmd, line, needle, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text(line + "\n" + "".join(f"class {i}\n" for i in range(999)), encoding="utf-8")
    code, _, err = invoke(cmd, {**valid_flags(cmd, tmp_path), "class_names": str(names)}, capsys)
    assert_one_line_refusal(code, err, "--class_names", f"{names}:1:", needle)


def test_a_byte_order_mark_is_not_part_of_a_class_name(tmp_path):
    from dist_data.caption.classes import class_names, class_names_problem

    names = tmp_path / "names.txt"
    lines = ["# my names, label order", "tench\t5"] + [f"class {i}" for i in range(1, 1000)]
    names.write_bytes("\ufeff".encode() + "\n".join(lines).encode() + b"\n")
    assert class_names_problem(str(names)) is None
    got = class_names(str(names))
    assert len(got) == 1000 and got[0] == "tench" and got[1] == "class 1"
