"""What every stage did: counts (kept, dropped by reason, rejected), seconds and rows/s, per rank and
merged into ``stats.json``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence


from .log import logger

def fmt_rows(n: float) -> str:
    return f"{int(n):,}"


def summary_line(command: str, merged: dict[str, Any], opts: Any, seconds: float, result: str) -> str:
    """The last line of every run, in one format: kept of read, dropped and rejected by reason, the
    verb's own counts (``opts.summary``), the index used, the time and the result."""
    c = merged["counts"]
    read, kept = c.get("read", 0), c.get("kept", 0)
    unit = getattr(opts, "kept_unit", "rows")
    share = f" ({100.0 * kept / max(read, 1):.1f}%)" if unit == "rows" else ""
    parts = [f"kept {fmt_rows(kept)} {unit} of {fmt_rows(read)} rows read{share}",
             f"dropped {_bucket(c.get('dropped', {}), skip=('not_sampled',))}",
             f"rejected {_bucket(c.get('rejected', {}))}"]
    own = []
    for key in getattr(opts, "summary", ()):
        value = c.get(key, 0)
        own.append(f"{key} {_bucket(value) if isinstance(value, dict) else fmt_rows(value)}")
    if own:
        parts.append(", ".join(own))
    if c.get("cached_blocks"):
        parts.append(f"{fmt_rows(c['cached_blocks'])} block(s) from the cache")
    if merged.get("index"):
        parts.append(f"index: {merged['index'].get('backend', merged['index'].get('mode'))}")
    return f"{command}: " + "; ".join(parts) + f"; in {seconds:.1f} s -> {result}"


def _bucket(counts: dict[str, int], skip: Sequence[str] = ()) -> str:
    """``12 (a 10, b 2)``; ``0``."""
    shown = {k: v for k, v in counts.items() if v and k not in skip}
    total = sum(shown.values())
    return fmt_rows(total) + (" (" + ", ".join(f"{k} {fmt_rows(v)}" for k, v in shown.items()) + ")" if shown else "")


# ---------------------------------------------------------------- stats

def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB): each rank's is in stats.json ``ranks``."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


RUN_SECTIONS = ("scores", "index", "examples")  # one value for the whole run (not per rank)
ENGINE_COUNTS = ("input_rows", "read", "kept", "cached_blocks")  # every run's, whatever its verb declares
ENGINE_BUCKETS = ("dropped", "rejected")


@dataclass
class Stats:
    """Counts and stage timings of one rank; :meth:`merge` makes the run's totals."""

    counts: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)  # quantile tables over all ranks (set on rank 0)
    index: dict[str, Any] = field(default_factory=dict)  # the index used, and its recall when approximate
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few rows of a kind, to look at (set on rank 0)

    @classmethod
    def with_keys(cls, *keys: str, buckets: Sequence[str] = ()) -> "Stats":
        """Stats whose counts start at zero for ``keys`` (and ``{}`` for ``buckets``), so that every
        rank and every run has the same keys, whatever happened."""
        return cls(counts={**{k: 0 for k in keys}, **{b: {} for b in buckets}})

    @classmethod
    def for_command(cls, counts: Sequence[str] = (), buckets: Sequence[str] = ()) -> "Stats":
        """A command's stats: the engine's keys (:data:`ENGINE_COUNTS`, :data:`ENGINE_BUCKETS`) and the
        verb's own ``counts`` and ``buckets``, all at zero."""
        return cls.with_keys(*dict.fromkeys(ENGINE_COUNTS + tuple(counts)),
                             buckets=tuple(dict.fromkeys(ENGINE_BUCKETS + tuple(buckets))))

    def add(self, key: str, n: int = 1, reason: str | None = None) -> None:
        if reason is None:
            self.counts[key] = self.counts.get(key, 0) + int(n)
        else:
            bucket = self.counts.setdefault(key, {})
            bucket[reason] = bucket.get(reason, 0) + int(n)

    def add_counts(self, counts: dict[str, Any]) -> None:
        """Add another ``counts`` (another rank's, a cached block's): numbers summed, buckets by reason."""
        for key, value in counts.items():
            if isinstance(value, dict):
                self.counts.setdefault(key, {})  # an empty bucket stays a key
                for reason, n in value.items():
                    self.add(key, n, reason=reason)
            else:
                self.add(key, value)

    @contextmanager
    def stage(self, name: str, rows: int | None = None, log: bool = True,
              done: str = "done") -> Iterator[dict[str, float]]:
        """Time a stage; set ``rec["rows"]`` inside when the count is known only at the end. A stage
        that counts no rows (the model's load) is logged as ``{name} {done} in 1.2 s``."""
        rec: dict[str, float] = {"rows": rows or 0}
        start = time.perf_counter()
        yield rec
        rec["seconds"] = round(time.perf_counter() - start, 4)
        rec["rows_per_s"] = round(rec["rows"] / rec["seconds"], 1) if rec["seconds"] > 0 else 0.0
        self.stages[name] = rec
        if not log:
            return
        if rows is None and not rec["rows"]:
            logger.info("%s %s in %.1f s", name, done, rec["seconds"])
        else:
            logger.info("%-7s %s rows in %.1f s (%s rows/s)", name, fmt_rows(rec["rows"]), rec["seconds"],
                        fmt_rows(rec["rows_per_s"]))

    def record(self, name: str, rows: int, seconds: float) -> None:
        """A stage timed elsewhere (e.g. the index build inside the search)."""
        self.stages[name] = {"rows": rows, "seconds": round(seconds, 4),
                             "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "stages": self.stages, "peak_rss_mib": peak_rss_mib(),
                **{name: getattr(self, name) for name in RUN_SECTIONS if getattr(self, name)}}

    @staticmethod
    def merge(per_rank: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Totals: counts summed; a stage's seconds are the slowest rank's (wall), rows summed."""
        total = Stats()
        for rank_stats in per_rank:
            total.add_counts(rank_stats["counts"])
        counts = total.counts
        stages: dict[str, dict[str, float]] = {}
        for rank_stats in per_rank:
            for name, rec in rank_stats["stages"].items():
                total = stages.setdefault(name, {"rows": 0, "seconds": 0.0})
                total["rows"] += rec["rows"]
                total["seconds"] = max(total["seconds"], rec["seconds"])
        for rec in stages.values():
            rec["rows_per_s"] = round(rec["rows"] / rec["seconds"], 1) if rec["seconds"] > 0 else 0.0
        sections = {name: next((r[name] for r in per_rank if r.get(name)), None) for name in RUN_SECTIONS}
        return {"counts": counts, "stages": stages, **{k: v for k, v in sections.items() if v},
                "ranks": [{k: v for k, v in r.items() if k not in RUN_SECTIONS} for r in per_rank]}
