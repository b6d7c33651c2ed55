"""Catalogue table steps (one process): ``clean``, before ``dist_data.pairs`` / ``dist_data.triplets``.

    python -m dist_data.catalog clean --dataset=goods.csv --dedup_keys=title,description --drop_if=isdeleted \\
        --sample=100000 --seed=42 --lowercase --output_dir=DIR

Writes ``cleaned.{csv,tsv,jsonl,parquet}`` (the input's format unless ``--output_format``; every column
kept, input order), ``stats.json`` (rows read, kept, dropped by reason: ``flagged_<column>``,
``duplicate``, ``not_sampled``; rejected), ``rejects.jsonl`` and ``args.json`` in ``--output_dir``.
This module is the entry point of the package :mod:`dist_data.catalog`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import flag, non_empty, one_of, required
from .core.paths import INPUT_SPEC
from .core.blocks import build_catalog
from .core.sources import resolve_sources
from .core.write import atomic_open, write_parquet
from .core.options import RunOptions
from .core.rows import parse_or_reject, REJECTED
from .core.run import Run, run_main
from .product.clean import clean_rows, prepare

FORMATS = ("csv", "tsv", "jsonl", "parquet")


@dataclass(frozen=True, kw_only=True)
class CleanOptions(RunOptions):
    """Drop flagged rows and exact duplicates, lowercase, sample: the catalogue's cleaning step, counted."""

    one_process = True

    dataset: str = required("the table: csv/tsv/parquet/jsonl file, folder, glob or comma list", non_empty,
                            path=INPUT_SPEC)
    dedup_keys: str = flag("", "comma list of the fields whose equal values make rows duplicates (the first kept)")
    drop_if: str = flag("", "comma list of flag columns (1/0, true/false, yes/no): a row with any set is dropped")
    lowercase: bool = flag(False, "lowercase the --dedup_keys fields (before comparing them)")
    sample: int | None = flag(None, "keep a seeded sample of this many of the remaining rows (input order kept)")
    output_format: str | None = flag(None, f"{', '.join(FORMATS)} (default: the input's)", one_of(*FORMATS))

    def result_file(self) -> str:
        sources = resolve_sources(self.dataset, self.split)
        return f"cleaned.{self.output_format or (sources[0].kind if sources[0].kind in FORMATS else 'jsonl')}"

    @staticmethod
    def _list(text: str) -> list[str]:
        return [k.strip() for k in text.split(",") if k.strip()]

    @property
    def dedup(self) -> list[str]:
        return self._list(self.dedup_keys)

    @property
    def flags(self) -> list[str]:
        return self._list(self.drop_if)

    def problems(self) -> list[str]:
        problems = ["--sample must be >= 1"] if self.sample is not None and self.sample < 1 else []
        if self.max_rows is not None:  # clean reads every row (duplicates are found over all of them)
            problems.append(f"--max_rows={self.max_rows}: clean reads every row; --sample={self.max_rows} keeps a "
                            f"seeded sample of the cleaned rows")
        return problems


def run_clean(info: distributed.DistInfo, opts: CleanOptions, run: Run) -> dict | None:
    stats = run.stats
    name = run.result_name
    fmt = name.split(".", 1)[1]
    catalog = build_catalog(resolve_sources(opts.dataset, opts.split))
    rejects: list[dict] = []
    with stats.stage("clean", rows=catalog.total):
        def prepared():
            for row in catalog.read_range(0, catalog.total):
                stats.add("read")
                got = parse_or_reject(row, lambda r: prepare(r, opts.dedup, opts.flags, opts.lowercase),
                                      opts.on_bad_rows, rejects, stats)
                if got is not REJECTED:
                    yield got

        cleaned = clean_rows(prepared(), opts.flags, opts.sample, opts.seed)
    stats.add("input_rows", catalog.total)
    for why, n in cleaned.dropped.items():
        stats.add("dropped", n, reason=why)
    stats.add("kept", len(cleaned.rows))
    return run.publish(name, lambda path: _write(cleaned.rows, path, fmt), rejects)


def _write(rows: list[dict], path: str, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow as pa

        write_parquet(path, pa.Table.from_pylist(rows))
    elif fmt == "jsonl":
        with atomic_open(path) as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    else:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_open(path) as f:
            out = csv.DictWriter(f, fieldnames=columns, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            out.writeheader()
            out.writerows(rows)
    return len(rows)


COMMANDS = {"clean": (CleanOptions, run_clean)}


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.catalog COMMAND --flag=value ...`` (``--help`` lists the commands)."""
    run_main(COMMANDS, __doc__, "dist_data.catalog", argv)


if __name__ == "__main__":
    main()
