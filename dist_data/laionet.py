"""LAIONet: ImageNet classes found in LAION captions, kept when the caption means the class.

    torchrun --nproc-per-node=8 -m dist_data.laionet label --laion='laion400m/*.parquet' --output_dir=L
    torchrun --nproc-per-node=8 -m dist_data.laionet similarity --df_path=L/laion_labeled.parquet \\
        --model_name=open_clip:ViT-L-14 --checkpoint=open_clip_vit_l14.bin --output_dir=S
    python -m dist_data.laionet filter --df_path=S/laion_similarity.parquet --similarity_th=0.7 --remove_nsfw \\
        --output_dir=F
    python -m dist_data.laionet url_list --df_path=F/laionet_thresh0.7.parquet --output_dir=U   # then img2dataset
    torchrun --nproc-per-node=8 -m dist_data.laionet arrange --dataset_path='shards/{00000..00458}.tar' \\
        --metadata_path=U/url_list.parquet --target_data_path=laionet/ --output_dir=A
    python -m dist_data.laionet subsets --df_path=A/url_list_success3256561.parquet --thresh=0.7 --frac=0.5 \\
        --output_dir=T
    torchrun --nproc-per-node=8 -m dist_data.laionet search_similar --references=imagenet_captions.json \\
        --reference_key=title,tags,description --laion='laion400m/*.parquet' --topk=50 --output_dir=N
    python -m dist_data.laionet match_freq --df_path=A/url_list_success3256561.parquet \\
        --t2t_df_path=N2/..._success309113.parquet --references=imagenet_captions.json --output_dir=M

``label``, ``similarity``, ``search_similar`` and ``arrange`` run on any number of ranks (one plain
process works too) with the same output; the other commands are one pass in one process. Every
command writes one run folder (its result, ``stats.json`` with rows in / kept / dropped by reason,
``rejects.jsonl``, ``args.json``); rerunning the same command resumes or says it is complete.
Rows carry ``laion_index`` (the input's column of that name, else the row's position in the input).

img2dataset (not a dependency: it pins old pandas and webdataset) runs in its own environment on
``url_list``'s output; ``U/img2dataset.sh`` holds the command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .caption import laion as steps
from .caption import label as labelling
from .caption import scoring, tables
from .caption.arrange import arrange_files, arrange_webdataset, expand_shards, read_metadata
from .caption.classes import ClassNamesOptions, class_names, imagenet_classes, laionet_class_list, wnid_to_label
from .caption.laion_io import column_array, laion_table, load_columns, require_columns, write_wnid_lists
from .caption.lemmas import LaionetMatcher, LemmaMatcher
from .caption.runs import publish_table
from .core import distributed
from .core.cli import at_least, cosine, flag, non_empty, one_of, required
from .core.paths import CACHE_DIR, INPUT, INPUT_SPEC, OUTPUT_DIR, OUTPUT_FILE
from .core.errors import BadRowError
from .core.sources import require_fields, resolve_sources
from .core.write import join_parquet, write_parquet
from .core.log import logger
from .core.options import ModelOptions, RunFolderOptions, RunOptions
from .core.rows import parse_or_reject, Row
from .core.run import Run, run_main
from .core.stats import fmt_rows, Stats

LISTS_NAME = "wnid_to_laion_indices.json"
IMG2DATASET_SCRIPT = "img2dataset.sh"
RULES = ("normalized", "laionet")


@dataclass(frozen=True, kw_only=True)
class LabelOptions(RunOptions, ClassNamesOptions):
    """Label LAION rows with the ImageNet classes whose lemmas their captions contain (parquet out)."""

    counts = ("captions_matched",)
    count_buckets = ("per_class", "classes_per_caption")
    summary = ("captions_matched",)

    laion: str = required("LAION metadata: parquet shards (a file, folder, glob or comma list; jsonl works too)",
                          non_empty, path=INPUT_SPEC)
    text_key: str = flag(steps.TEXT, "the caption column", non_empty)
    rule: str = flag("normalized", "normalized: whole words, case and punctuation ignored; laionet: LAIONet's "
                     "label_laion.py exactly (case-sensitive, ASCII punctuation, its 999 classes)",
                     one_of(*RULES))
    unique_lemmas: bool = flag(True, "only lemmas of exactly one class count (as LAIONet); --nounique_lemmas: "
                               "every lemma (--rule=normalized only)")
    block_rows: int = flag(65536, "rows per block (the unit of caching and resume)", at_least(1))

    def result_file(self) -> str:
        return "laion_labeled.parquet"

    def side_outputs(self) -> list[str]:
        return [LISTS_NAME]

    def problems(self) -> list[str]:
        return ["--rule=laionet counts only lemmas written once in its class list: drop --nounique_lemmas"] \
            if self.rule == "laionet" and not self.unique_lemmas else []


@dataclass(frozen=True, kw_only=True)
class SimilarityOptions(RunOptions, ModelOptions, ClassNamesOptions):
    """Cosine of each labelled caption with its class's "{name} which is {definition}"."""

    counts = ("texts_embedded",)
    count_buckets = ("per_class",)
    summary = ("texts_embedded",)

    df_path: str = required("label's laion_labeled.parquet (a column wnids)", non_empty, path=INPUT_SPEC)
    query_type: str = flag("name_def", "the class text: name_def = '{first lemma} which is {definition}'",
                           one_of("name_def"))
    text_key: str = flag(steps.TEXT, "the caption column", non_empty)
    checkpoint: str | None = flag(None, "weights of an open_clip:ARCH text tower (a local file)", non_empty, path=INPUT)
    block_rows: int = flag(4096, "rows per block (the unit of embedding, caching and resume)", at_least(1))
    cache_dir: str | None = flag(None, "embeddings cached by content, shared by runs; default: the run folder's "
                                 "cache/", non_empty, result=False, path=CACHE_DIR)

    def result_file(self) -> str:
        return "laion_similarity.parquet"


@dataclass(frozen=True, kw_only=True)
class FilterOptions(RunFolderOptions, ClassNamesOptions):
    """Rows whose similarity is above a threshold (and LAION's NSFW tag UNLIKELY), with their wnid."""

    one_process = True

    df_path: str = required("similarity's laion_similarity.parquet", non_empty, path=INPUT_SPEC)
    similarity_col: str = flag(steps.SIMILARITY, "the similarity column", non_empty)
    similarity_th: float = flag(0.7, "keep rows whose similarity is above this (strictly)", cosine)
    remove_nsfw: bool = flag(False, f"drop rows whose {steps.NSFW} column is not {steps.SAFE_TAG!r}")
    on_bad_rows: str = flag("error", "a row whose wnid is not an ImageNet-1k class: error (file:row named) or skip "
                            "(to rejects.jsonl)", one_of("error", "skip"))

    def result_file(self) -> str:
        return f"laionet_thresh{self.similarity_th}.parquet"

    def side_outputs(self) -> list[str]:
        return [LISTS_NAME]


@dataclass(frozen=True, kw_only=True)
class SubsetsOptions(RunFolderOptions, ClassNamesOptions):
    """A LAIONet training table: rows at or above a threshold, a fraction or n of them, no class lost."""

    one_process = True
    counts = ("readded_first_of_class",)

    df_path: str = required("LAIONet rows (parquet with wnid, the similarity and TEXT)", non_empty, path=INPUT_SPEC)
    similarity_col: str = flag(steps.SIMILARITY, "the similarity column", non_empty)
    thresh: float = flag(0.7, "keep rows whose similarity is at least this", cosine)
    frac: float = flag(1.0, "then keep this fraction of them (sampled)", lambda v: None if 0 < v <= 1 else
                       f"must be in (0, 1], got {v!r}")
    n: int | None = flag(None, "or keep exactly n rows (the excess comes out of the 10 largest classes)", at_least(1))
    seed: int = flag(42, "seed of the draws (pandas' sample(random_state=seed))", at_least(0))
    image_root: str = flag("laionet", "filepath = {image_root}/{wnid}/{laion_index}.jpg (arrange's layout)",
                           non_empty)

    def result_file(self) -> str:
        return "subsets.tsv"  # named by its rows once they are known

    def problems(self) -> list[str]:
        return ["--frac and --n both size the subset: give one"] if self.n is not None and self.frac != 1.0 else []


@dataclass(frozen=True, kw_only=True)
class SearchOptions(RunOptions, ModelOptions, ClassNamesOptions):
    """For each reference caption, its top-k LAION captions; each claims the first unclaimed one."""

    counts = ("references", "unclaimed_references")
    count_buckets = ("per_class",)
    summary = ("references", "unclaimed_references")

    references: str = required("reference captions with their class (ImageNet-Captions: json/jsonl/parquet)",
                               non_empty, path=INPUT_SPEC)
    reference_key: str = flag("TEXT", "the reference text column; a comma list joins several (title,tags,"
                              "description; a list is space-joined)", non_empty)
    reference_wnid_key: str = flag("wnid", "the reference's class column (a wnid)", non_empty)
    laion: str = required("the LAION rows searched (parquet shards; a file, folder, glob or comma list)", non_empty,
                          path=INPUT_SPEC)
    text_key: str = flag(steps.TEXT, "the LAION caption column", non_empty)
    topk: int = flag(50, "neighbours per reference", at_least(1))
    index: str = flag("gather", "gather: every rank searches all vectors; sharded: per-rank shards, merged "
                      "top-k (same result, memory / world)", one_of("gather", "sharded"))
    checkpoint: str | None = flag(None, "weights of an open_clip:ARCH text tower (a local file)", non_empty)
    block_rows: int = flag(4096, "rows per block (the unit of embedding, caching and resume)", at_least(1))
    cache_dir: str | None = flag(None, "embeddings and search results cached by content, shared by runs",
                                 non_empty, result=False, path=CACHE_DIR)

    def result_file(self) -> str:
        return "laion_similar.parquet"

    def side_outputs(self) -> list[str]:
        return [LISTS_NAME]


@dataclass(frozen=True, kw_only=True)
class MatchFreqOptions(RunFolderOptions, ClassNamesOptions):
    """LAIONet rows sampled per class to a reference's class counts, topped up from search_similar."""

    one_process = True
    count_buckets = ("short_of_target",)

    df_path: str = required("LAIONet rows (parquet with wnid, laion_index, TEXT)", non_empty, path=INPUT_SPEC)
    t2t_df_path: str = required("search_similar's rows (parquet with wnid, laion_index, TEXT)", non_empty,
                                path=INPUT_SPEC)
    references: str = required("the reference dataset whose class counts are matched", non_empty, path=INPUT_SPEC)
    reference_wnid_key: str = flag("wnid", "the reference's class column", non_empty)
    seed: int = flag(42, "seed of the draws", at_least(0))
    image_root: str = flag("laionet", "filepath of a LAIONet row: {image_root}/{wnid}/{laion_index}.jpg", non_empty)
    t2t_image_root: str | None = flag(None, "filepath root of a search_similar row (default: --image_root)",
                                      non_empty)

    def result_file(self) -> str:
        return "match_freq.tsv"  # named by its rows once they are known


@dataclass(frozen=True, kw_only=True)
class UrlListOptions(RunFolderOptions):
    """img2dataset's input: a parquet of URL, TEXT and the columns to keep beside each image."""

    one_process = True

    df_path: str = required("LAIONet rows (parquet with URL and TEXT)", non_empty, path=INPUT_SPEC)
    url_col: str = flag("URL", "the URL column", non_empty)
    caption_col: str = flag("TEXT", "the caption column", non_empty)
    save_additional_columns: str = flag("laion_index,wnid,NSFW,similarity,LICENSE,text_to_name_def_wnid_similarity",
                                        "columns img2dataset saves with each image (those present are kept)",
                                        non_empty)

    def result_file(self) -> str:
        return "url_list.parquet"

    def side_outputs(self) -> list[str]:
        return [IMG2DATASET_SCRIPT]


@dataclass(frozen=True, kw_only=True)
class ArrangeOptions(RunFolderOptions):
    """img2dataset's webdataset output -> {target}/{wnid}/{laion_index}.jpg (or class-sorted tars)."""

    counts = ("already_there",)
    summary = ("already_there",)

    dataset_path: str = required("img2dataset's tars: a brace pattern ('shards/{00000..00458}.tar'), glob or "
                                 "folder", non_empty, path=INPUT_SPEC)
    metadata_path: str = required("the url_list img2dataset read (its rows in the same order)", non_empty,
                                  path=INPUT_SPEC)
    target_data_path: str = required("where the images go", non_empty, path=OUTPUT_DIR)
    target_df_path: str | None = flag(None, "the metadata of the downloaded rows; _success{N} is appended to the "
                                      "name (default: {output_dir}/{metadata name})", non_empty, path=OUTPUT_FILE)
    output_format: str = flag("files", "files: {target}/{wnid}/{laion_index}.jpg; webdataset: tars in class order "
                              "(label, then laion_index), for file systems that dislike millions of files",
                              one_of("files", "webdataset"))
    number_sample_per_shard: int = flag(10000, "img2dataset's --number_sample_per_shard (its default: 10000)",
                                        at_least(1))
    samples_per_tar: int = flag(10000, "--output_format=webdataset: samples per output tar", at_least(1))
    wnid_key: str = flag(steps.WNID, "the metadata's class column", non_empty)

    def result_file(self) -> str:
        return os.path.basename(self.metadata_path).rsplit(".", 1)[0] + "_success.parquet"


# ---------------------------------------------------------------- label (distributed)

def run_label(info: distributed.DistInfo, opts: LabelOptions, run: Run) -> dict | None:
    name = "laion_labeled.parquet"
    classes = imagenet_classes()
    wnids = [c.wnid for c in classes]
    if opts.rule == "laionet":  # its class list: its id of Siberian husky, no construction crane
        theirs = laionet_class_list()
        matcher = LaionetMatcher([lemmas for _, lemmas in theirs])
        out_wnids = [w for w, _ in theirs]
        listed = out_wnids  # every class, construction crane (no lemmas in its list) with no rows
    else:
        matcher = LemmaMatcher([c.lemmas for c in classes], unique_only=opts.unique_lemmas)
        out_wnids = listed = wnids
    stats = run.stats
    resolve_sources(opts.laion, opts.split)  # a missing input stops here, before the folder is touched
    if opts.on_bad_rows == "error":  # so does a misspelt key
        require_fields(opts.laion, opts.split, {"text_key": opts.text_key})
    run.begin()
    plan = run.plan(opts.laion)
    cache = os.path.join(run.cache_dir, "label")

    def label_block(rows) -> labelling.BlockResult:
        block = labelling.block_stats()
        rejects, unmatched, records = [], [], []
        for record_, _, found in labelling.matched_captions(rows, matcher, lambda r: steps.parse_laion_row(
                r, opts.text_key), opts.on_bad_rows, block, rejects, unmatched):
            records.append({**record_, steps.WNIDS: [out_wnids[c] for c in found]})
            for c in found:
                block.add("per_class", reason=wnids[c])
        block.add("kept", len(records))
        return labelling.BlockResult(laion_table(records), block.counts, rejects, unmatched)

    rejects, shown = labelling.label_blocks(info, stats, plan, cache, ".parquet", label_block,
                                            lambda path, table: write_parquet(path, table),
                                            run.show_progress)
    counts = distributed.all_gather_array(labelling.per_class_array(stats.counts["per_class"], wnids)[None, :]).sum(0)
    if info.is_main:
        stats.examples = {"unmatched_captions": shown}
    blocks = [labelling.block_paths(cache, b, ".parquet")[0] for b in range(-(-plan.n // opts.block_rows))]
    return publish_table(run, name, lambda path: join_parquet(blocks, path),
                         class_names(opts.class_names), counts.tolist(), rejects,
                         [(LISTS_NAME, lambda path: write_wnid_lists(path, run.file(name), steps.WNIDS, listed))])


# ---------------------------------------------------------------- similarity (distributed)

def run_similarity(info: distributed.DistInfo, opts: SimilarityOptions, run: Run) -> dict | None:
    merged = scoring.similarity(run, class_names(opts.class_names))
    if merged is not None:
        sims = column_array(run.file(merged["outputs"]["result"]), steps.SIMILARITY)
        if len(sims):
            q = np.quantile(sims, [0.1, 0.5, 0.9])
            logger.info("similarity: p10 %.3f, median %.3f, p90 %.3f over %s rows", *q, fmt_rows(len(sims)))
    return merged


# ---------------------------------------------------------------- filter, subsets, url_list (one process)

def run_filter(info: distributed.DistInfo, opts: FilterOptions, run: Run) -> dict | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = run.stats
    classes = imagenet_classes()
    wnids = [c.wnid for c in classes]
    name = f"laionet_thresh{opts.similarity_th}.parquet"
    source = pq.ParquetFile(opts.df_path)
    need = [opts.similarity_col, steps.QUERY_WNID] + ([steps.NSFW] if opts.remove_nsfw else [])
    require_columns(opts.df_path, source.schema_arrow.names, need)
    run.begin()
    tmp = os.path.join(run.cache_dir, "filtered.parquet")
    os.makedirs(run.cache_dir, exist_ok=True)
    kept_labels: list[np.ndarray] = []
    rejects: list[dict] = []
    known = wnid_to_label()
    with stats.stage("filter") as rec:
        writer = None
        first_row = 0
        for batch in source.iter_batches(batch_size=65536):
            table = pa.Table.from_batches([batch])
            good = _known_wnids(opts, table, first_row, known, rejects, stats)
            first_row += len(table)
            table = table.filter(pa.array(good))
            sims = table.column(opts.similarity_col).to_numpy(zero_copy_only=False).astype(np.float64)
            nsfw = table.column(steps.NSFW).to_pylist() if opts.remove_nsfw else None
            keep, dropped = steps.keep_mask(sims, nsfw, opts.similarity_th)
            for why, n in dropped.items():
                stats.add("dropped", n, reason=why)
            stats.add("read", len(table))
            rec["rows"] += len(table)
            kept = table.filter(pa.array(keep))
            wnid = kept.column(steps.QUERY_WNID)
            kept = kept.append_column(steps.WNID, wnid) if steps.WNID not in kept.column_names else \
                kept.set_column(kept.column_names.index(steps.WNID), steps.WNID, wnid)
            kept_labels.append(np.asarray([known[w] for w in wnid.to_pylist()], dtype=np.int64))
            writer = writer or pq.ParquetWriter(tmp, kept.schema)
            writer.write_table(kept)
            stats.add("kept", len(kept))
        if writer is not None:
            writer.close()
    stats.add("input_rows", stats.counts["read"])
    labels = np.concatenate(kept_labels) if kept_labels else np.zeros(0, np.int64)

    def write(path: str) -> int:
        os.replace(tmp, path)
        return len(labels)

    return publish_table(run, name, write, class_names(opts.class_names),
                         tables.class_counts(labels, len(classes)).tolist(), rejects,
                         [(LISTS_NAME, lambda path: write_wnid_lists(path, run.file(name), steps.WNID, wnids))])


def _known_wnids(opts: FilterOptions, table, first_row: int, known: dict[str, int], rejects: list[dict],
                 stats: Stats) -> np.ndarray:
    """Which rows of ``table`` name an ImageNet-1k wnid; a row that does not is a bad row (1-based row
    of the parquet file): an error naming it, or set aside in ``rejects`` with ``--on_bad_rows=skip``.

    Raises:
        BadRowError: the first such row, with ``--on_bad_rows=error``.
    """
    wnids = table.column(steps.QUERY_WNID).to_pylist()
    good = np.asarray([w in known for w in wnids], dtype=bool)

    def unknown(row: Row) -> None:
        raise BadRowError(row.source, row.line, f"{steps.QUERY_WNID!r} is not an ImageNet-1k wnid: "
                                                f"{row.value[steps.QUERY_WNID]!r:.40}")

    for i in np.flatnonzero(~good).tolist():
        line = first_row + i + 1
        parse_or_reject(Row(line - 1, opts.df_path, line, table.slice(i, 1).to_pylist()[0], None), unknown,
                        opts.on_bad_rows, rejects, stats)
        stats.add("read", 1)
    return good


def run_subsets(info: distributed.DistInfo, opts: SubsetsOptions, run: Run) -> dict | None:
    stats = run.stats
    classes = imagenet_classes()
    cols = load_columns(opts.df_path, [steps.WNID, opts.similarity_col, steps.TEXT], optional=[steps.INDEX])
    labels = cols.labels(steps.WNID)
    stats.add("read", len(labels))
    stats.add("input_rows", len(labels))
    with stats.stage("select", rows=len(labels)):
        sims = cols.floats(opts.similarity_col)
        subset = steps.subset_positions(labels, sims, opts.thresh, opts.frac, opts.n, opts.seed, len(classes))
    kept = np.zeros(len(labels), dtype=bool)
    kept[subset.positions] = True
    trimmed = np.zeros(len(labels), dtype=bool)
    trimmed[subset.trimmed] = True
    below = ~(sims >= opts.thresh)
    stats.add("dropped", int((below & ~kept & ~trimmed).sum()), reason="below_threshold")
    stats.add("dropped", int((~below & ~kept & ~trimmed).sum()), reason="not_sampled")
    stats.add("dropped", int(trimmed.sum()), reason="trimmed_from_largest_classes")
    stats.add("readded_first_of_class", len(subset.readded))
    rows = cols.table_rows(subset.positions, opts.image_root)
    stats.add("kept", len(rows))
    suffix = f"_frac{opts.frac}" if opts.n is None and opts.frac < 1 else ""
    name = f"laionet_thresh{opts.thresh}{suffix}_{len(rows)}.tsv"
    return publish_table(run, name, lambda path: tables.write_tsv(path, tables.TABLE_COLUMNS, rows),
                         class_names(opts.class_names),
                         tables.class_counts(labels[subset.positions], len(classes)).tolist(), [],
                         marked=np.unique(labels[np.asarray(subset.readded, dtype=np.int64)]).tolist(),
                         marked_label="kept by their first row (the draw lost them)")


def run_url_list(info: distributed.DistInfo, opts: UrlListOptions, run: Run) -> dict | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = run.stats
    names = pq.read_schema(opts.df_path).names
    require_columns(opts.df_path, names, [opts.url_col, opts.caption_col])
    extra = [c.strip() for c in opts.save_additional_columns.split(",") if c.strip() in names]
    with stats.stage("read") as rec:
        table = pq.read_table(opts.df_path, columns=[opts.url_col, opts.caption_col, *extra])
        rec["rows"] = len(table)
    stats.add("read", len(table))
    stats.add("input_rows", len(table))
    if steps.INDEX not in table.column_names:
        table = table.append_column(steps.INDEX, pa.array(np.arange(len(table), dtype=np.int64)))
        extra.append(steps.INDEX)
    urls = table.column(opts.url_col).to_pylist()
    has_url = np.asarray([isinstance(u, str) and bool(u.strip()) for u in urls], dtype=bool)
    stats.add("dropped", int((~has_url).sum()), reason="no_url")
    table = table.filter(pa.array(has_url))
    stats.add("kept", len(table))
    name = "url_list.parquet"

    def write(path: str) -> int:
        write_parquet(path, table)
        return len(table)

    def script(path: str) -> None:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(img2dataset_command(run.file(name), opts.url_col, opts.caption_col, extra))
        os.replace(path + ".tmp", path)

    merged = publish_table(run, name, write, None, None, [], [(IMG2DATASET_SCRIPT, script)])
    if merged is not None:
        logger.info("download with img2dataset (its own environment: pip install img2dataset):\n%s",
                    img2dataset_command(run.file(name), opts.url_col, opts.caption_col, extra))
    return merged


def img2dataset_command(url_list: str, url_col: str, caption_col: str, extra: list[str]) -> str:
    columns = "[" + ",".join(f'"{c}"' for c in extra) + "]"
    return (f"img2dataset --url_list {url_list} --input_format parquet --url_col {url_col} "
            f"--caption_col {caption_col} --output_format webdataset --output_folder laionet-data "
            f"--processes_count 16 --thread_count 64 --image_size 256 --resize_only_if_bigger=True "
            f"--resize_mode=keep_ratio --skip_reencode=True --save_additional_columns '{columns}' --retries 10 "
            f"--number_sample_per_shard 10000\n")


# ---------------------------------------------------------------- search_similar (distributed), match_freq

def run_search_similar(info: distributed.DistInfo, opts: SearchOptions, run: Run) -> dict | None:
    known = list(wnid_to_label())
    return scoring.search_similar(run, class_names(opts.class_names), [(LISTS_NAME, lambda path: write_wnid_lists(
        path, run.file(scoring.SIMILAR_TABLE), steps.WNID, known))])


def run_match_freq(info: distributed.DistInfo, opts: MatchFreqOptions, run: Run) -> dict | None:
    stats = run.stats
    classes = imagenet_classes()
    known = wnid_to_label()
    main_cols = load_columns(opts.df_path, [steps.WNID, steps.TEXT], optional=[steps.INDEX])
    extra_cols = load_columns(opts.t2t_df_path, [steps.WNID, steps.TEXT], optional=[steps.INDEX])
    ref_labels = []
    from .core.sources import read_rows

    for row in read_rows(opts.references):
        value = row.value if isinstance(row.value, dict) else {}
        wnid = value.get(opts.reference_wnid_key)
        if wnid not in known:
            raise BadRowError(row.source, row.line, f"{opts.reference_wnid_key!r} is {wnid!r:.40}, not an "
                              f"ImageNet-1k wnid")
        ref_labels.append(known[wnid])
    target = tables.class_counts(np.asarray(ref_labels, dtype=np.int64), len(classes))
    stats.add("read", len(main_cols) + len(extra_cols))
    stats.add("input_rows", len(main_cols) + len(extra_cols))
    with stats.stage("match", rows=len(main_cols) + len(extra_cols)):
        labels, extra_labels = main_cols.labels(steps.WNID), extra_cols.labels(steps.WNID)
        matched = steps.match_frequency(target, labels, main_cols.indices(), extra_labels, extra_cols.indices(),
                                        opts.seed)
    stats.add("dropped", len(main_cols) - len(matched.primary), reason="laionet_over_target")
    stats.add("dropped", matched.duplicates, reason="t2t_already_in_laionet")
    stats.add("dropped", len(extra_cols) - len(matched.extra) - matched.duplicates, reason="t2t_not_needed")
    for c, n in matched.short.items():
        stats.add("short_of_target", n, reason=classes[c].wnid)
    rows = main_cols.table_rows(matched.primary, opts.image_root, source="laionet") + \
        extra_cols.table_rows(matched.extra, opts.t2t_image_root or opts.image_root, source="laionet-t2t")
    order = np.argsort(np.concatenate([main_cols.indices()[matched.primary], extra_cols.indices()[matched.extra]]),
                       kind="stable")
    rows = [rows[i] for i in order.tolist()]
    stats.add("kept", len(rows))
    counts = tables.class_counts(np.concatenate([labels[matched.primary], extra_labels[matched.extra]]),
                                 len(classes))
    short = sum(matched.short.values())
    if short:
        logger.warning("%d class(es) stay below their target: %s rows missing (stats.json short_of_target)",
                       len(matched.short), fmt_rows(short))
    name = f"laionet_match_{len(rows)}.tsv"
    return publish_table(run, name,
                         lambda path: tables.write_tsv(path, (*tables.TABLE_COLUMNS, "source"), rows),
                         class_names(opts.class_names), counts.tolist(), [], target=target.tolist())


# ---------------------------------------------------------------- arrange (distributed over tars)

def run_arrange(info: distributed.DistInfo, opts: ArrangeOptions, run: Run) -> dict | None:
    meta_name = os.path.basename(opts.metadata_path).rsplit(".", 1)[0]
    shards = expand_shards(opts.dataset_path)
    meta = read_metadata(opts.metadata_path, opts.wnid_key)
    stats = run.stats
    run.begin()
    mine = shards[info.rank :: info.world_size]
    if opts.output_format == "files":
        placed = arrange_files(mine, meta, opts.target_data_path, opts.number_sample_per_shard, stats,
                               run.show_progress)
    else:
        placed = arrange_webdataset(mine, meta, opts.target_data_path, opts.number_sample_per_shard, stats,
                                    opts.samples_per_tar, info, run.show_progress, run.record)
    rows = np.unique(distributed.all_gather_array(np.asarray(placed.rows, dtype=np.int64)))
    seen = np.unique(distributed.all_gather_array(np.asarray(placed.seen, dtype=np.int64)))
    stats.add("input_rows", len(meta) if info.is_main else 0)
    stats.add("dropped", len(meta) - len(seen) if info.is_main else 0, reason="not_in_any_shard")
    name = f"{meta_name}_success{len(rows)}.parquet"
    target_df = opts.target_df_path

    def write(path: str) -> int:
        table = meta.table.take(rows)
        write_parquet(path, table)
        if target_df:
            base, ext = os.path.splitext(target_df)
            write_parquet(f"{base}_success{len(rows)}{ext or '.parquet'}", table)
        return len(rows)

    return publish_table(run, name, write, None, None, [])


COMMANDS = {
    "label": (LabelOptions, run_label),
    "similarity": (SimilarityOptions, run_similarity),
    "filter": (FilterOptions, run_filter),
    "url_list": (UrlListOptions, run_url_list),
    "arrange": (ArrangeOptions, run_arrange),
    "subsets": (SubsetsOptions, run_subsets),
    "search_similar": (SearchOptions, run_search_similar),
    "match_freq": (MatchFreqOptions, run_match_freq),
}


@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.laionet COMMAND --flag=value ...`` (``--help`` lists the commands)."""
    run_main(COMMANDS, __doc__, "dist_data.laionet", argv)


if __name__ == "__main__":
    main()
