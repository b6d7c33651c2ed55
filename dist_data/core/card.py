"""The dataset card of a run folder: ``README.md`` in the Hugging Face convention.

Written by the engine (:meth:`dist_data.core.run.Run.merge`) into every run folder, just before
``_SUCCESS``, so no verb can leave it out. Its YAML front matter names the result file(s) under
``configs``/``data_files``, so ``datasets.load_dataset(DIR)`` and the Hub's viewer read the result
and nothing else (not the caches, parts, stats or rejects). The body says how the folder was made:
the exact command, the model and its revision, the inputs' content hash, the counts of
``stats.json``, the score quantiles and the plots.

A ``README.md`` the run does not own (the user's own file in the output folder) is never replaced:
the card is then left out, with a warning (:meth:`dist_data.core.run.Run._write_card`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
from typing import Any, Iterable, Sequence

from .log import logger
from .paths import INPUT_ROLES
from .write import atomic_open

CARD = "README.md"
# result files datasets can load, by suffix: (builder, extra builder parameters)
TABLE_FORMATS = {".jsonl": ("json", {}), ".jsonl.gz": ("json", {}), ".parquet": ("parquet", {}),
                 ".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"}), ".arrow": ("arrow", {})}
HASH_LIMIT = int(os.environ.get("DIST_DATA_CARD_HASH_BYTES", str(20 * 2**30)))  # inputs hashed up to this size
PLOTS = ("scores.png", "class_frequency.png")
RUN_COUNTS = {"cached_blocks"}
MAX_BUCKET_ROWS = 20
# the Hub's task of each verb's output
TASKS = {"filter": "sentence-similarity", "mine": "sentence-similarity", "pairs": "sentence-similarity",
         "triplets": "sentence-similarity", "finetune_data": "sentence-similarity", "pretokenize": "fill-mask",
         "embed_mteb": "feature-extraction", "embed_images": "image-feature-extraction",
         "captions": "zero-shot-image-classification", "laionet": "zero-shot-image-classification"}
# an input read from the package's own data (the WordNet sample) carries WordNet's license
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
WORDNET_LICENSE = "https://wordnet.princeton.edu/license-and-commercial-use"


def table_format(name: str) -> tuple[str, dict[str, str]] | None:
    """The ``datasets`` builder of a result file (None: not a table datasets reads)."""
    for suffix, fmt in TABLE_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def input_files(opts: Any) -> list[tuple[str, list[str]]]:
    """``(flag, files)`` for every input flag that names files on this machine (a hub name: none)."""
    from .sources import resolve_sources

    out = []
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if f.metadata.get("path") not in INPUT_ROLES or not value or not isinstance(value, str):
            continue
        if os.path.isfile(value):
            files = [value]
        elif os.path.isdir(value):
            files = sorted(os.path.join(root, n) for root, _, names in os.walk(value) for n in names)
        else:
            try:
                files = [s for s in resolve_sources(value, getattr(opts, "split", "train")) if os.path.isfile(s)]
            except Exception:  # noqa: BLE001 - a hub dataset: named, not hashed
                files = []
        out.append((f.name, files))
    return out


def content_hash(files: Sequence[str]) -> tuple[str | None, int]:
    """blake2b-128 over the files' names (relative order) and bytes, and their total size; the hash
    is None past :data:`HASH_LIMIT` bytes (reading them again would cost more than the card is worth)."""
    total = sum(os.path.getsize(p) for p in files)
    if total > HASH_LIMIT:
        return None, total
    h = hashlib.blake2b(digest_size=16)
    for path in files:
        h.update(os.path.basename(path).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest(), total


def model_code(model_name: str, revision: str | None) -> str | None:
    """Which revision of a model's own code ran: the content hash of a local folder's ``.py`` files, or
    the commit of the Hugging Face cache snapshot it was loaded from; None when neither is known."""
    from .models import resolve_model

    path = resolve_model(model_name)
    if not os.path.isdir(path):
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(path, revision=revision, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the cache: nothing to name
            return None
        return f"commit `{os.path.basename(path.rstrip(os.sep))}` of `{model_name}`"
    files = sorted(os.path.join(d, n) for d, _, names in os.walk(path) for n in names if n.endswith(".py"))
    digest, _ = content_hash(files)
    return f"{len(files)} Python file(s) in the model folder, content hash (blake2b-128) `{digest}`" if files else None


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML string


def data_files(folder: str, result: str | None) -> list[str]:
    """The result's table files, relative to ``folder``: the result itself, or the table files of one
    format inside a result folder (``save_to_disk``'s ``.arrow`` files, parquet shards, ...)."""
    if not result:
        return []
    path = os.path.join(folder, result)
    if os.path.isfile(path):
        return [result] if table_format(result) else []
    found = sorted(os.path.relpath(os.path.join(root, n), folder) for root, _, names in os.walk(path) for n in names
                   if table_format(n) and not n.startswith("."))
    kinds = {table_format(n) and next(x for x in TABLE_FORMATS if n.endswith(x)) for n in found}
    return found if len(kinds) == 1 else []


def render(command: str, args: dict[str, Any], stats: dict[str, Any], files: Sequence[str],
           inputs: Sequence[tuple[str, list[str]]], hashes: dict[str, tuple[str | None, int]],
           data: Sequence[str] = (), code: str | None = None) -> str:
    """The card's text (pure, for the tests); ``code``: the revision of the model's own code that ran
    (:func:`model_code`, with ``--trust_remote_code``)."""
    lines = ["---"]
    if data:
        _, extra = table_format(data[0])
        lines += ["configs:", "- config_name: default", "  data_files:", "  - split: train", "    path:"]
        lines += [f"    - {_yaml_str(p)}" for p in data]
        lines += [f"  {k}: {_yaml_str(v)}" for k, v in extra.items()]
    verb = command.split()[0].replace("dist_data.", "")
    if verb in TASKS:
        lines += ["task_categories:", f"- {TASKS[verb]}"]
    if any(p.startswith(SHIPPED) for _, paths in inputs for p in map(os.path.abspath, paths)):
        lines += ["license: other", "license_name: wordnet-3.0", f"license_link: {_yaml_str(WORDNET_LICENSE)}"]
    lines += ["tags:", "- dist_data", f"- {_yaml_str(verb)}", "---", ""]
    lines += [f"# {command}", "", "Made by `dist_data` with these flags (those that decide the result; the same "
              "command in this folder says it is complete, in a new folder makes the same bytes):", ""]
    flags = " ".join(_flag(k, v) for k, v in args.items() if v is not None)
    lines += [f"    python -m {command} {flags}".rstrip(), ""]
    if args.get("model_name"):
        lines += [f"Model: `{args['model_name']}`" + (f" at revision `{args['revision']}`" if args.get("revision")
                                                     else " (no revision pinned)"), ""]
    if args.get("trust_remote_code"):
        lines += [f"The model's own code ran (`--trust_remote_code`): {code or 'its revision is unknown'}.", ""]
    if inputs:
        lines += ["| input | files | bytes | content hash (blake2b-128) |", "|---|---:|---:|---|"]
        for name, paths in inputs:
            digest, size = hashes.get(name, (None, 0))
            shown = digest or ("not hashed (hub dataset)" if not paths else f"not hashed: over {HASH_LIMIT:,} bytes")
            lines.append(f"| `--{name}={args.get(name, '')}` | {len(paths):,} | {size:,} | {shown} |")
        lines.append("")
    if data:
        lines += ["```python", "from datasets import load_dataset", "", 'rows = load_dataset("path/to/this/folder",'
                  ' split="train")', "```", ""]
    lines += ["## Counts (`stats.json`)", "", "| count | value |", "|---|---:|"]
    for key, value in _flat(stats.get("counts", {})):
        if key not in RUN_COUNTS:  # how this run went, not what the data is: a resumed run says otherwise
            lines.append(f"| {key} | {value:,} |")
    lines.append("")
    scores = stats.get("scores") or {}
    if scores:
        metrics = [m for m in ("count", "mean", "min", "25%", "50%", "75%", "max") if any(m in s for s in scores.values())]
        lines += ["## Scores", "", "| | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        for name, s in scores.items():
            lines.append(f"| {name} | " + " | ".join(_num(s.get(m)) for m in metrics) + " |")
        lines.append("")
    plots = [p for p in PLOTS if p in files]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Files", ""] + [f"- `{n}`" for n in sorted(files)] + [""]
    return "\n".join(lines)


def _flag(name: str, value: Any) -> str:
    if value is True:
        return f"--{name}"
    if value is False:
        return f"--no{name}"
    return f"--{name}={shlex.quote(str(value))}"


def _flat(counts: dict[str, Any], prefix: str = "") -> list[tuple[str, int]]:
    """``(key, count)`` rows: nested buckets as ``bucket.reason`` in key order; a bucket of more than
    :data:`MAX_BUCKET_ROWS` reasons (per class: 1,000) as its total."""
    out = []
    for key, value in counts.items():
        if isinstance(value, dict):
            if len(value) > MAX_BUCKET_ROWS:
                out.append((f"{prefix}{key} (total of {len(value):,}; each in stats.json)",
                            sum(v for v in value.values() if isinstance(v, (int, float)))))
            else:
                out += _flat(dict(sorted(value.items())), f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", value))
    return out


def _num(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def write_card(folder: str, command: str, opts: Any, args: dict[str, Any], stats: dict[str, Any]) -> None:
    """Write ``folder/README.md`` (rank 0, after the result and stats; the caller has checked that
    the file is not the user's)."""
    inputs = input_files(opts)
    hashes = {name: content_hash(paths) for name, paths in inputs}
    data = data_files(folder, stats.get("outputs", {}).get("result"))
    code = model_code(args["model_name"], args.get("revision")) if args.get("trust_remote_code") else None
    files = sorted({n for n in os.listdir(folder) if n not in (CARD, "_SUCCESS", "parts", "cache", "manifest.json")
                    and not n.startswith(".")} | {"stats.json"})
    with atomic_open(os.path.join(folder, CARD)) as f:
        f.write(render(command, args, stats, files, inputs, hashes, data, code))


def card_is_ours(folder: str, owned: Iterable[str]) -> bool:
    """Whether ``folder/README.md`` may be written: the folder's manifest lists it (``owned``), or
    there is none. A README.md of the user's is never replaced: the card is then left out, said once."""
    path = os.path.join(folder, CARD)
    if CARD in owned or not os.path.exists(path):
        return True
    logger.warning("%s is not this run's: the dataset card is left out (the file is kept)", path)
    return False


def write_results_card(folder: str, manifest: dict[str, Any]) -> None:
    """The card of a folder of named results (:class:`dist_data.core.rundir.Results`: combine,
    finetune_data, imagenet, embed_images stack): each result with the command and flags that made
    it; each table result a config of its own (``load_dataset(DIR, NAME)``; the first is the
    default). The caller has checked that a README.md there is not the user's."""
    results = manifest.get("results") or {}
    configs = [(name, data_files(folder, name)) for name in results]
    configs = [(name, files) for name, files in configs if files]
    lines = ["---"]
    if configs:
        lines.append("configs:")
        for i, (name, files) in enumerate(configs):
            lines += [f"- config_name: {_yaml_str(name)}"] + (["  default: true"] if i == 0 else [])
            lines.append("  data_files:")
            for split, paths in _splits(name, files).items():
                lines += [f"  - split: {split}", "    path:"] + [f"    - {_yaml_str(p)}" for p in paths]
            lines += [f"  {k}: {_yaml_str(v)}" for k, v in table_format(files[0])[1].items()]
    lines += ["tags:", "- dist_data", "---", "", "# Results made by dist_data", ""]
    for name, entry in results.items():
        state = "complete" if entry.get("complete") else "not complete (a run was stopped; rerun its command)"
        flags = " ".join(_flag(k, v) for k, v in (entry.get("args") or {}).items() if v is not None)
        lines += [f"## `{name}`", "", f"{state}; made with:", "", f"    python -m {entry.get('command', '?')} {flags}", ""]
    with atomic_open(os.path.join(folder, CARD)) as f:
        f.write("\n".join(lines))


SPLITS = ("train", "validation", "test")


def _splits(result: str, files: Sequence[str]) -> dict[str, list[str]]:
    """A result folder's files by split: its ``train/``, ``validation/``, ``test/`` sub-folders (as
    combine and finetune_data write them) each a split; anything else is ``train``."""
    out: dict[str, list[str]] = {}
    for path in files:
        parts = os.path.relpath(path, result).split(os.sep)
        split = parts[0] if len(parts) > 1 and parts[0] in SPLITS else "train"
        out.setdefault(split, []).append(path)
    return dict(sorted(out.items(), key=lambda kv: SPLITS.index(kv[0])))
