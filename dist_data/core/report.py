"""Scores a user can look at: quantile tables (as sentence-transformers prints them after mining)
and ``scores.png`` histograms, so thresholds and margins are chosen by looking at the data.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from .io import atomic_open

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


def write_histograms(path: str, title: str, panels: Sequence[tuple[str, dict[str, np.ndarray], str]]) -> None:
    """``path`` (a PNG) with one panel per ``(title, {label: values}, x label)``: overlaid histograms
    on shared bins. Written atomically; the same values give the same bytes."""
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
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
