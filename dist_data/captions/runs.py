"""Publishing a caption table from one process: the table, its class-frequency file, rejects,
stats and ``_SUCCESS``, through the run folder every verb uses (lock, manifest, rerun policy)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..core import distributed
from ..core.pipeline import Stats, merge_outputs, open_run, write_parts
from ..core.rundir import RunDir
from .classes import write_class_frequency
from .tables import write_tsv

FREQUENCY_NAME = "class_frequency.txt"


def open_table_run(info: distributed.DistInfo, opts: Any, command: str,
                   *buckets: str) -> tuple[RunDir, Stats, dict[str, Any] | None]:
    """The run folder of a one-process command, its stats (``input_rows``, ``read``, ``kept``,
    ``dropped``, ``rejected`` and ``buckets``), and the stats of a complete earlier run with the same
    flags (then there is nothing to do)."""
    if info.world_size > 1:
        raise ValueError(f"{command} works on one table in one process: run it with python -m dist_data.captions "
                         f"{command} (torchrun is for label)")
    run, done = open_run(info, opts, f"{command}.tsv")  # the table's name is set once its rows are known
    return run, Stats.with_keys("input_rows", "read", "kept", buckets=("dropped", "rejected", *buckets)), done


def publish_table(run: RunDir, stats: Stats, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                  class_names: Sequence[str], counts: Sequence[int], rejects: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``name`` (the table) and ``class_frequency.txt`` in the run folder, then stats and
    ``_SUCCESS``; returns the merged stats."""
    run.result_name = name

    def write() -> str:
        run.record([FREQUENCY_NAME])
        with stats.stage("write") as rec:
            rec["rows"] = write_tsv(run.file(name), columns, rows)
            write_class_frequency(run.file(FREQUENCY_NAME), class_names, counts)
        return name

    write_parts(run, 0, [], None, rejects)
    merged = merge_outputs(run, 0, 1, stats, False, False, merge_result=write)
    merged["outputs"]["class_frequency"] = FREQUENCY_NAME
    return merged
