"""Scores a user can look at: quantile tables (as sentence-transformers prints them after mining)
and ``scores.png`` histograms, so thresholds and margins are chosen by looking at the data.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .write import atomic_open

from . import distributed
from .log import logger
from .rundir import SCORES_PLOT, RunDir
from .stats import Stats

if TYPE_CHECKING:
    from .index import IndexSpec

QUANTILES = (("min", 0.0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75), ("max", 1.0))


def describe(values: np.ndarray) -> dict[str, float]:
    """count, mean, std (n-1, as torch.std), min, quartiles, max of ``values``; empty: count 0 only."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    out = {"count": int(values.size), "mean": float(values.mean()),
           "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}
    out.update({name: float(np.quantile(values, q)) for name, q in QUANTILES})
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def score_table(columns: dict[str, dict[str, float]]) -> str:
    """The quantile tables side by side, one metric a line."""
    names = list(columns)
    lines = [f"{'':<6}" + "".join(f"{n:>14}" for n in names)]
    for metric in ("count", "mean", "std", *(q for q, _ in QUANTILES)):
        cells = []
        for n in names:
            v = columns[n].get(metric)
            cells.append("" if v is None else (f"{v:,}" if metric == "count" else f"{v:.4f}"))
        lines.append(f"{metric:<6}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def write_histograms(path: str, title: str, panels: Sequence[tuple[str, dict[str, np.ndarray], str]],
                     lines: dict[str, float] | None = None) -> None:
    """``path`` (a PNG) with one panel per ``(title, {label: values}, x label)``: overlaid histograms
    on shared bins, and a vertical line at each of ``lines`` (``{label: x}``, e.g. a threshold).
    Written atomically; the same values give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (panel_title, series, xlabel) in zip(axes[0], panels):
        finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in series.values()]
        joined = np.concatenate(finite) if finite else np.zeros(0)
        bins = np.histogram_bin_edges(joined, bins=50) if joined.size else 10
        for (label, _), values in zip(series.items(), finite):
            ax.hist(values, bins=bins, alpha=0.55, label=f"{label} (n={values.size:,})")
        for i, (label, x) in enumerate((lines or {}).items()):
            ax.axvline(x, color=f"C{3 + i}", linestyle="--", label=f"{label} {x:g}")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def _save(fig, path: str) -> None:
    """A figure as PNG, atomically; no time or version stamps, so the same plot gives the same bytes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def write_class_frequency_plot(path: str, title: str, counts: Sequence[int], target: Sequence[int] | None = None,
                               marked: Sequence[int] = (), marked_label: str = "") -> None:
    """``path`` (a PNG): rows per class, classes sorted by count (most first), log scale, as the
    class-frequency tail is read. ``target`` draws a second curve and sorts the classes by it
    (match_freq: target vs achieved); ``marked`` classes are drawn as points (trim_tail: the trimmed
    tail)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(counts, dtype=np.int64)
    order = np.lexsort((-counts, -np.asarray(target if target is not None else counts, dtype=np.int64)))
    x = np.arange(1, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(x, np.maximum(counts[order], 0.8), drawstyle="steps-mid", label=f"rows per class (total {counts.sum():,})")
    if target is not None:
        target = np.asarray(target, dtype=np.int64)
        ax.plot(x, np.maximum(target[order], 0.8), drawstyle="steps-mid", linestyle="--",
                label=f"target (total {target.sum():,})")
    if len(marked):
        where = np.flatnonzero(np.isin(order, np.asarray(marked, dtype=np.int64)))
        ax.scatter(x[where], np.maximum(counts[order][where], 0.8), s=10, color="C3", zorder=3,
                   label=f"{marked_label} ({len(marked):,} classes)")
    empty = int((counts == 0).sum())
    ax.set_yscale("log")
    ax.set_xlabel(f"class rank by {'target' if target is not None else 'rows'} ({len(counts):,} classes{f', {empty:,} empty (drawn at 0.8)' if empty else ''})")
    ax.set_ylabel("rows (log)")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)



# ---------------------------------------------------------------- the search

def record_search(info: distributed.DistInfo, stats: Stats, spec: "IndexSpec", timings: dict[str, Any],
                  own_documents: int, depth: int) -> None:
    """The index stage (this rank's documents) and, in ``stats.index``, the index used and, for an
    approximate one, its recall@k against exact search; logged on rank 0."""
    stats.record("index", own_documents, timings["index_seconds"])
    stats.index = {"mode": spec.mode, "depth": depth, "backend": timings["backend"],
                   **({"nlist": spec.nlist or "auto", "nprobe": spec.nprobe} if spec.mode == "ivf" else {}),
                   **({"hnsw_m": spec.hnsw_m, "ef_search": spec.ef_search} if spec.mode == "hnsw" else {}),
                   **({"recall": timings["recall"]} if "recall" in timings else {})}
    if not info.is_main:
        return
    if timings.get("cached"):
        logger.info("search: results read back from the cache (same vectors, k=%d)", depth)
    if "recall" in timings:
        recall = timings["recall"]
        logger.info("index: %s recall against exact search on %d sampled queries: %s", spec.mode,
                    recall["recall_queries"], ", ".join(f"{k} {v:.4f}" for k, v in recall.items() if k != "recall_queries"))


# ---------------------------------------------------------------- what the scores look like

REPORT_ROWS = 1_000_000  # rows of each score column rank 0 holds for the quantiles and histograms


def report_scores(info: distributed.DistInfo, run: RunDir, stats: Stats, title: str,
                  columns: dict[str, np.ndarray], panels: Sequence[tuple[str, Sequence[str], str]],
                  extra: dict[str, np.ndarray] | None = None, lines: dict[str, float] | None = None) -> None:
    """Quantile tables of ``columns`` over all ranks into ``stats.json`` (``scores``), logged as a
    table, and ``scores.png``: one histogram panel per ``(title, column names, x label)``.
    ``extra`` columns are plotted but not tabled (e.g. ranks). Collective; rank 0 writes.

    Up to :data:`REPORT_ROWS` rows of a column are exact; past that every rank sends every
    ``step``-th of its rows (``sampled_1_in`` in the table), so rank 0's memory stays bounded.
    """
    from .report import describe, score_table, write_histograms

    gathered = {}
    for name, values in {**columns, **(extra or {})}.items():
        step = max(1, -(-sum(distributed.all_gather_object(len(values))) // REPORT_ROWS))
        gathered[name] = (distributed.gather_array(np.asarray(values, dtype=np.float32)[::step]), step)
    if not info.is_main:
        return
    stats.scores = {n: {**describe(gathered[n][0]), **({"sampled_1_in": gathered[n][1]} if gathered[n][1] > 1 else {})}
                    for n in columns}
    logger.info("scores:\n%s", score_table(stats.scores))
    run.record([SCORES_PLOT])
    write_histograms(run.file(SCORES_PLOT), title,
                     [(t, {n: gathered[n][0] for n in cols}, x) for t, cols, x in panels], lines)
