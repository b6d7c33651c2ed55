"""The LAIONet commands' bodies on their run (:mod:`dist_data.laionet` holds their flags and the
command table): label (distributed, cached blocks), the one-process table steps (filter, subsets,
url_list, match_freq) and arrange (distributed over img2dataset's tars)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core import distributed
from ..core.errors import BadRowError
from ..core.log import logger
from ..core.rows import Row, parse_or_reject
from ..core.run import Run
from ..core.sources import read_rows, require_fields, resolve_sources
from ..core.stats import Stats, fmt_rows
from ..core.write import join_parquet, write_parquet
from . import label as labelling
from . import laion as steps
from . import tables
from .arrange import arrange_files, arrange_webdataset, expand_shards, read_metadata
from .classes import class_names, imagenet_classes, laionet_class_list, wnid_to_label
from .laion_io import laion_table, load_columns, require_columns, write_wnid_lists
from .lemmas import LaionetMatcher, LemmaMatcher
from .runs import publish_table

LISTS_NAME = "wnid_to_laion_indices.json"
IMG2DATASET_SCRIPT = "img2dataset.sh"


def run_label(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
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

    rejects, blocks = labelling.label_blocks(run, plan, cache, ".parquet", label_block,
                                             lambda path, table: write_parquet(path, table))
    counts = labelling.class_counts(run, wnids)
    return publish_table(run, name, lambda path: join_parquet(blocks, path),
                         class_names(opts.class_names), counts.tolist(), rejects,
                         [(LISTS_NAME, lambda path: write_wnid_lists(path, run.file(name), steps.WNIDS, listed))])


def run_filter(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
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
            keep, reason = steps.keep_mask(sims, nsfw, opts.similarity_th)
            run.select(keep, reason, known=steps.FILTER_REASONS)
            stats.add("read", len(table))
            rec["rows"] += len(table)
            kept = table.filter(pa.array(keep))
            wnid = kept.column(steps.QUERY_WNID)
            kept = kept.append_column(steps.WNID, wnid) if steps.WNID not in kept.column_names else \
                kept.set_column(kept.column_names.index(steps.WNID), steps.WNID, wnid)
            kept_labels.append(np.asarray([known[w] for w in wnid.to_pylist()], dtype=np.int64))
            writer = writer or pq.ParquetWriter(tmp, kept.schema)
            writer.write_table(kept)
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


def _known_wnids(opts: Any, table, first_row: int, known: dict[str, int], rejects: list[dict],
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


def run_subsets(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
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


def run_url_list(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
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


def run_match_freq(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
    stats = run.stats
    classes = imagenet_classes()
    known = wnid_to_label()
    main_cols = load_columns(opts.df_path, [steps.WNID, steps.TEXT], optional=[steps.INDEX])
    extra_cols = load_columns(opts.t2t_df_path, [steps.WNID, steps.TEXT], optional=[steps.INDEX])
    ref_labels = []

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


def run_arrange(info: distributed.DistInfo, opts: Any, run: Run) -> dict | None:
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
