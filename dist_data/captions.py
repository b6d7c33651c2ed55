"""Caption curation: ImageNet-Captions variants, subsets, trimmed tails, caption -> class labels.

The data side of "what makes CLIP generalise" studies (clip-beyond-tail): the same images with
other caption sources, class counts, data scales and tail shapes; YFCC15M-Cls / CC12M-Cls labels.

    python -m dist_data.captions variants --captions=imagenet_captions.json --image_root=$DATASET/imagenet \\
        --use_title --use_tags --use_description --append_cname --mode=openai80 --shuffle --output_dir=DIR
    python -m dist_data.captions subsets --df_path=DIR/incaps_title_tags_description_cname_448896.tsv \\
        --freq_path=DIR/class_frequency.txt --use_in100 --output_dir=DIR100       # or --k=100, --n=44548
    python -m dist_data.captions trim_tail --df_path=... --freq_path=... --lastk=100 --ceil=1 --output_dir=...
    torchrun --nproc-per-node=8 -m dist_data.captions label --captions=yfcc15m.jsonl --caption_key=caption \\
        --output_dir=DIR                 # [--unique_lemmas]: LAIONet's rule; one plain process works too

Every command writes one run folder: the table (TSV ``filepath, label, caption`` that open_clip's
``--dataset-type csv --csv-separator '\\t'`` reads; ``label``'s is ``filepath, caption, label``),
``class_frequency.txt`` (``classname<TAB>count`` per class, label order), ``stats.json`` (rows read,
kept, dropped by reason, rejected, seconds), ``rejects.jsonl`` (with ``--on_bad_rows=skip``) and
``args.json``. Rerunning the same command resumes or says it is complete. This module is the
entry point of the package :mod:`dist_data.captions` (a module and a package cannot share a name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, flag, non_empty, one_of, required
from .core.paths import INPUT, INPUT_SPEC, OUTPUT_NAME
from .core.sources import read_rows, require_fields, resolve_sources
from .core.log import logger
from .core.options import RunFolderOptions, RunOptions
from .core.rows import parse_or_reject, REJECTED
from .core.run import Run, run_main
from .core.stats import fmt_rows, Stats
from .caption import label as labelling
from .caption import tables
from .caption.classes import ClassNamesOptions, class_names, imagenet100_labels, imagenet_classes, read_class_names
from .caption.lemmas import LemmaMatcher
from .caption.runs import publish_table
from .caption.variants import MODES, Fields, make_variants, parse_record


@dataclass(frozen=True, kw_only=True)
class VariantsOptions(RunFolderOptions, ClassNamesOptions):
    """ImageNet-Captions caption variants: fields, class-name templates, WordNet lemmas -> one TSV."""

    one_process = True

    captions: str = required("imagenet_captions.json (a list of {filename, wnid, title, tags, description}; "
                             "jsonl/parquet work too)", non_empty, path=INPUT)
    image_root: str = required("the ImageNet folder: filepath = {image_root}/train/{wnid}/{filename}", non_empty)
    use_title: bool = flag(False, "put the title in the caption")
    use_tags: bool = flag(False, "put the tags (space-joined) in the caption")
    use_description: bool = flag(False, "put the description in the caption")
    append_cname: bool = flag(False, "start the caption with the class text: template(class name)")
    use_synset: bool = flag(False, "with --append_cname: a random WordNet lemma of the synset instead of the name")
    mode: str = flag("cname", "the --append_cname template: cname '{}', a+cname 'a {}', photo 'a photo of a {}', "
                     "openai80 one of CLIP's 80 ImageNet templates per row", one_of(*MODES))
    shuffle: bool = flag(False, "shuffle the rows (seeded)")
    seed: int = flag(0, "seed of the shuffle and of the template and lemma draws", at_least(0))
    on_bad_rows: str = flag("error", "error: stop at the first bad row naming file:line; skip: to rejects.jsonl",
                            one_of("error", "skip"))

    def result_file(self) -> str:
        return "variants.tsv"  # named by its rows once they are known

    def fields(self) -> Fields:
        return Fields(self.use_title, self.use_tags, self.use_description, self.append_cname, self.use_synset,
                      self.mode)

    def problems(self) -> list[str]:
        return self.fields().problems()


@dataclass(frozen=True, kw_only=True)
class SubsetsOptions(RunFolderOptions, ClassNamesOptions):
    """A subset of a caption table: k random classes, the ImageNet-100 classes, and/or n rows."""

    one_process = True

    df_path: str = required("the caption table (.tsv with filepath and label columns)", non_empty, path=INPUT)
    freq_path: str | None = flag(None, "its class-frequency file (class names in label order); default: the "
                                 "1,000 ImageNet class names", non_empty, path=INPUT)
    k: int | None = flag(None, "keep k random classes (labels remapped to 0..k-1, label_ori kept)", at_least(1))
    use_in100: bool = flag(False, "keep the ImageNet-100 classes (CMC's list; labels remapped, label_ori kept)")
    n: int | None = flag(None, "then keep n rows, sampled after sorting by filepath", at_least(1))
    seed: int = flag(42, "seed of the class and row draws", at_least(0))

    def result_file(self) -> str:
        return "subsets.tsv"  # named by its rows once they are known

    def problems(self) -> list[str]:
        out = []
        if self.k is None and not self.use_in100 and self.n is None:
            out.append("choose --k, --use_in100 or --n")
        if self.k is not None and self.use_in100:
            out.append("--k and --use_in100 both choose the classes: give one")
        return out


@dataclass(frozen=True, kw_only=True)
class TrimTailOptions(RunFolderOptions, ClassNamesOptions):
    """The lastk classes with the fewest rows keep at most ceil rows each."""

    one_process = True
    count_buckets = ("tail_rows_before", "tail_rows_after")

    df_path: str = required("the caption table (.tsv with filepath and label columns)", non_empty, path=INPUT)
    freq_path: str | None = flag(None, "its class-frequency file (class names in label order); default: the "
                                 "1,000 ImageNet class names", non_empty, path=INPUT)
    lastk: int = flag(5, "how many of the rarest classes to trim", at_least(1))
    ceil: int = flag(5, "rows each of them keeps at most (0: the class is removed)", at_least(0))
    seed: int = flag(0, "seed of the rows kept", at_least(0))

    def result_file(self) -> str:
        return "trim_tail.tsv"  # named by its rows once they are known


@dataclass(frozen=True, kw_only=True)
class LabelOptions(RunOptions, ClassNamesOptions):
    """Label captions with the ImageNet classes whose WordNet lemmas they contain (one row per class)."""

    counts = ("captions_matched",)
    count_buckets = ("per_class", "classes_per_caption")
    summary = ("captions_matched", "classes_per_caption")
    kept_unit = "class rows"

    captions: str = required("captions: jsonl(.gz), parquet, csv/tsv, json; a file, folder, glob or comma list",
                             non_empty, path=INPUT_SPEC)
    caption_key: str = flag("caption", "the caption field", non_empty)
    filepath_key: str = flag("filepath", "the image path (or URL) field, copied to the output", non_empty)
    unique_lemmas: bool = flag(False, "only lemmas that belong to exactly one class count (LAIONet's rule)")
    block_rows: int = flag(65536, "captions per block (the unit of caching and resume)", at_least(1))
    output_name: str | None = flag(None, "the table's name (default: {captions stem}_cls.tsv)", non_empty,
                                   path=OUTPUT_NAME)

    def result_file(self) -> str:
        return self.table_name()

    def table_name(self) -> str:
        if self.output_name:
            return self.output_name
        first = self.captions.split(",")[0].rstrip("/")
        stem = os.path.basename(first)
        for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet", ".csv", ".tsv"):
            stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        stem = stem.replace("*", "").strip("._-") or "captions"
        return f"{stem}_cls.tsv"


# ---------------------------------------------------------------- variants

def run_variants(info: distributed.DistInfo, opts: VariantsOptions, run: Run) -> dict | None:
    stats = run.stats
    fields = opts.fields()
    rejects: list[dict[str, Any]] = []
    with stats.stage("read") as rec:
        records = [r for r in (parse_or_reject(row, parse_record, opts.on_bad_rows, rejects, stats)
                               for row in read_rows(opts.captions)) if r is not REJECTED]
        rec["rows"] = len(records) + len(rejects)
        stats.add("input_rows", rec["rows"])
        stats.add("read", rec["rows"])
    with stats.stage("caption", rows=len(records)):
        names = class_names(opts.class_names)
        result = make_variants(records, fields, opts.image_root, opts.seed, opts.shuffle, names)
    stats.add("kept", len(result.rows))
    stats.add("dropped", result.unknown_wnid, reason="not_an_imagenet_1k_class")
    stats.add("dropped", result.empty, reason="empty_caption")
    labels = [label for _, label, _ in result.rows]
    return publish_table(run, fields.file_name(len(result.rows)),
                         lambda path: tables.write_tsv(path, ("filepath", "label", "caption"), result.rows), names,
                         tables.class_counts(np.asarray(labels, dtype=np.int64), len(names)).tolist(), rejects)


# ---------------------------------------------------------------- subsets and trim_tail

def _read_table(stats: Stats, opts) -> tuple[list[str], tables.Table]:
    if opts.freq_path and opts.class_names != "original":
        raise ValueError("--class_names names the 1,000 ImageNet classes; with --freq_path the names are that file's")
    with stats.stage("read") as rec:
        names = read_class_names(opts.freq_path) if opts.freq_path else class_names(opts.class_names)
        table = tables.read_tsv(opts.df_path, len(names))
        rec["rows"] = len(table.rows)
    stats.add("input_rows", len(table.rows))
    stats.add("read", len(table.rows))
    return names, table


def run_subsets(info: distributed.DistInfo, opts: SubsetsOptions, run: Run) -> dict | None:
    stats = run.stats
    names, table = _read_table(stats, opts)
    columns, rows, labels = list(table.columns), table.rows, table.labels
    n_classes, classes = len(names), None
    with stats.stage("select", rows=len(rows)):
        if opts.use_in100 or opts.k is not None:
            if opts.use_in100 and len(names) != 1000:
                raise ValueError(f"--use_in100 picks from the 1,000 ImageNet classes; {opts.freq_path} lists "
                                 f"{len(names)}")
            classes = imagenet100_labels() if opts.use_in100 else tables.random_classes(len(names), opts.k, opts.seed)
            keep, new_labels = tables.select_classes(labels, classes)
            stats.add("dropped", len(rows) - len(keep), reason="class_not_selected")
            j = columns.index("label")
            has_ori = "label_ori" in columns
            if not has_ori:
                columns.append("label_ori")
            selected = []
            for i, new in zip(keep.tolist(), new_labels.tolist()):
                row = list(rows[i])
                if not has_ori:
                    row.append(row[j])
                row[j] = str(new)
                selected.append(row)
            rows, labels = selected, new_labels
            logger.info("classes: %d of %d kept (%s%s)", len(classes), len(names),
                        ", ".join(names[c] for c in classes[:5]), ", ..." if len(classes) > 5 else "")
            names = [names[c] for c in classes]
            n_classes = len(classes)
        if opts.n is not None:
            if opts.n > len(rows):
                raise ValueError(f"--n={opts.n} is more than the {len(rows)} rows "
                                 f"{'of the selected classes' if classes is not None else 'of the table'}")
            fp = columns.index("filepath")
            picked = tables.sample_rows([r[fp] for r in rows], opts.n, opts.seed)
            stats.add("dropped", len(rows) - len(picked), reason="not_sampled")
            rows, labels = [rows[i] for i in picked.tolist()], labels[picked]
    stats.add("kept", len(rows))
    name = tables.renamed(opts.df_path, classes=len(classes) if classes is not None else None, n=len(rows))
    return publish_table(run, name, lambda path: tables.write_tsv(path, columns, rows), names,
                         tables.class_counts(labels, n_classes).tolist(), [])


def run_trim_tail(info: distributed.DistInfo, opts: TrimTailOptions, run: Run) -> dict | None:
    stats = run.stats
    names, table = _read_table(stats, opts)
    if opts.lastk > len(names):
        raise ValueError(f"--lastk={opts.lastk} is more than the {len(names)} classes")
    with stats.stage("trim", rows=len(table.rows)):
        keep, tail = tables.trim_tail(table.labels, len(names), opts.lastk, opts.ceil, opts.seed)
    before = tables.class_counts(table.labels, len(names))
    after = tables.class_counts(table.labels[keep], len(names))
    for c in tail.tolist():
        stats.add("tail_rows_before", int(before[c]), reason=names[c])
        stats.add("tail_rows_after", int(after[c]), reason=names[c])
    stats.add("dropped", len(table.rows) - len(keep), reason="over_tail_ceiling")
    stats.add("kept", len(keep))
    logger.info("tail: %d classes with %s..%s rows each; at most %d kept per class", len(tail),
                fmt_rows(before[tail].min()), fmt_rows(before[tail].max()), opts.ceil)
    name = tables.renamed(opts.df_path, suffix=f"_tail{opts.lastk}ceil{opts.ceil}")
    return publish_table(run, name, lambda path: tables.write_tsv(path, table.columns, table.take(keep)),
                         names, after.tolist(), [], marked=tail.tolist(),
                         marked_label=f"trimmed tail (at most {opts.ceil} rows each)")


# ---------------------------------------------------------------- label

def run_label(info: distributed.DistInfo, opts: LabelOptions, run: Run) -> dict | None:
    name = opts.table_name()
    classes = imagenet_classes()
    wnids = [c.wnid for c in classes]
    matcher = LemmaMatcher([c.lemmas for c in classes], unique_only=opts.unique_lemmas)
    if info.is_main:
        logger.info("lemmas: %d distinct (normalised) from %d classes, %d shared by several classes%s",
                    len(matcher.lemmas) + (len(matcher.shared) if opts.unique_lemmas else 0), len(classes),
                    len(matcher.shared), " and left out (--unique_lemmas)" if opts.unique_lemmas else "")
    resolve_sources(opts.captions, opts.split)  # a missing input stops here, before the folder is touched
    if opts.on_bad_rows == "error":  # so does a misspelt key
        require_fields(opts.captions, opts.split, {"caption_key": opts.caption_key})
    run.begin()
    plan = run.plan(opts.captions, unit="captions")
    cache = os.path.join(run.cache_dir, "label")
    rejects, blocks = labelling.label_blocks(
        run, plan, cache, ".tsv",
        lambda rows: labelling.label_block(rows, matcher, wnids, opts.caption_key, opts.filepath_key,
                                           opts.on_bad_rows),
        labelling.write_text)
    counts = labelling.class_counts(run, wnids)

    def join_blocks(path: str) -> int:  # rank 0, once every rank's blocks are written
        tables.join_tsv(path, labelling.COLUMNS, blocks)
        return int(counts.sum())

    return publish_table(run, name, join_blocks, class_names(opts.class_names), counts.tolist(), rejects)


COMMANDS = {
    "variants": (VariantsOptions, run_variants),
    "subsets": (SubsetsOptions, run_subsets),
    "trim_tail": (TrimTailOptions, run_trim_tail),
    "label": (LabelOptions, run_label),
}


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.captions COMMAND --flag=value ...`` (``--help`` lists the commands)."""
    run_main(COMMANDS, __doc__, "dist_data.captions", argv)


if __name__ == "__main__":
    main()
