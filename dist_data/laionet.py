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
from .caption import scoring
from .caption.classes import ClassNamesOptions, class_names, wnid_to_label
from .caption.laion_io import column_array, write_wnid_lists
from .caption.laionet_runs import (IMG2DATASET_SCRIPT, LISTS_NAME, run_arrange, run_filter, run_label, run_match_freq,
                                   run_subsets, run_url_list)
from .core import distributed
from .core.cli import at_least, cosine, flag, non_empty, one_of, required
from .core.log import logger
from .core.options import ModelOptions, RunFolderOptions, RunOptions
from .core.paths import CACHE_DIR, INPUT, INPUT_SPEC, OUTPUT_DIR, OUTPUT_FILE
from .core.run import Run, run_main
from .core.stats import fmt_rows

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


# ---------------------------------------------------------------- search_similar (distributed), match_freq

def run_search_similar(info: distributed.DistInfo, opts: SearchOptions, run: Run) -> dict | None:
    known = list(wnid_to_label())
    return scoring.search_similar(run, class_names(opts.class_names), [(LISTS_NAME, lambda path: write_wnid_lists(
        path, run.file(scoring.SIMILAR_TABLE), steps.WNID, known))])


# ---------------------------------------------------------------- arrange (distributed over tars)


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
