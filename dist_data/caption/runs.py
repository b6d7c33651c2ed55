"""Publishing a caption table from one process: the table, its class-frequency file, rejects,
stats and ``_SUCCESS``, through the run folder every verb uses (lock, manifest, rerun policy)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..core.report import write_class_frequency_plot
from ..core.run import Run
from .classes import FREQUENCY_NAME, PLOT_NAME, write_class_frequency


def publish_table(run: Run, name: str,
                  write_table: Callable[[str], int], class_names: Sequence[str] | None, counts: Sequence[int] | None,
                  rejects: list[dict[str, Any]],
                  extra: Sequence[tuple[str, Callable[[str], None]]] = (), target: Sequence[int] | None = None,
                  marked: Sequence[int] = (), marked_label: str = "") -> dict[str, Any] | None:
    """:meth:`Run.publish` of a caption table, with ``class_frequency.txt`` and its plot
    ``class_frequency.png`` (:func:`dist_data.core.report.write_class_frequency_plot`: ``target``
    and ``marked`` classes drawn too) when ``class_names`` are given. Returns the merged stats on
    rank 0, None elsewhere."""
    title = f"{run.command}: {name}"
    frequency = [] if class_names is None else [
        (FREQUENCY_NAME, lambda path: write_class_frequency(path, class_names, counts)),
        (PLOT_NAME, lambda path: write_class_frequency_plot(path, title, counts, target, marked, marked_label))]
    return run.publish(name, write_table, rejects, [*frequency, *extra])
