"""Pack text into fixed-length token sequences for MLM pretraining (nomic's pretokenize semantics).

Every document is tokenized with a fast tokenizer; documents shorter than ``seq_len`` are
concatenated with the following ones until the sequence is full, longer ones run over several
sequences (see :mod:`dist_data.pack`). ``--specials=document`` wraps each document in the
tokenizer's special tokens (``[CLS] ... [SEP]`` for BERT), ``sequence`` wraps each sequence
instead, ``none`` adds none. The last sequence of the dataset is padded, or dropped with
``--drop_last``.

    torchrun --standalone --nproc-per-node=2 -m dist_data.pretokenize --output_dir=out/tok   # shipped sample
    torchrun --nproc-per-node=8 -m dist_data.pretokenize --dataset=wikipedia/ --text_key=text \\
        --tokenizer_name=bert-base-uncased --seq_len=2048 --output_dir=out/wiki

Two passes, each streaming (memory does not grow with the dataset): (1) each rank tokenizes its
blocks of documents and caches every block's token stream (the cache is also what a killed run
resumes from); (2) ranks learn where their slice starts in the global stream (one all-gather of
token counts and of the first ``seq_len`` tokens of each slice) and write the sequences that
start in their slice as a parquet part. Rank 0 then joins the parts into ``dataset/``
(``datasets.load_from_disk``) or ``data/train-*.parquet`` (``--output_format=parquet``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from torch.distributed.elastic.multiprocessing.errors import record

from .core import distributed
from .core.cli import at_least, flag, non_empty, one_of
from .core.paths import INPUT_SPEC
from .core.dedup import content_hash
from .core.models import DEFAULT_MODEL, resolve_model
from .core.rows import get_texts
from .core.sources import resolve_sources
from .core.write import atomic_open, save_dataset, save_npz
from .core.log import logger
from .text.pack import SPECIALS, Layout, PackStats, pack_slice
from .core.options import RunOptions
from .core.blocks import plan_blocks
from .core.rows import parse_or_reject, REJECTED
from .core.run import Output, Run, run_main
from .core.stats import Stats
from .text.wordnet import SAMPLE_TEXT

RESULT_NAME = "dataset"
FORMATS = ("hf", "parquet")
ROW_GROUP = 1024  # sequences per parquet row group


def load_tokenizer(name: str | None, revision: str | None):
    """A fast tokenizer (the shipped MiniLM's for the default name) that never truncates."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name), revision=revision, use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"{name} has no fast tokenizer; pretokenize needs one")
    tok.model_max_length = 1 << 62  # documents are split by the packer, never truncated
    return tok


def special_layout(tok, seq_len: int, specials: str) -> Layout:
    """The tokenizer's own special tokens around one text (e.g. [CLS] x [SEP]) and its pad id."""
    content = tok("hello world", add_special_tokens=False)["input_ids"]
    wrapped = tok("hello world", add_special_tokens=True)["input_ids"]
    at = next(i for i in range(len(wrapped) - len(content) + 1) if wrapped[i : i + len(content)] == content)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    return Layout(seq_len, specials, tuple(wrapped[:at]), tuple(wrapped[at + len(content) :]), int(pad))


def tokenize_stage(run: Run, tok, layout: Layout) -> tuple[list[str], list[dict]]:
    """Pass 1: tokenize this rank's documents (``--text_key``) in blocks of ``--block_docs``; each
    block's stream cached as .npz."""
    opts, stats = run.opts, run.stats
    key = content_hash([tok.backend_tokenizer.to_str(), layout.specials, json.dumps([layout.prefix, layout.suffix])])
    cache = os.path.join(run.cache_dir, f"tok-{key}")
    os.makedirs(cache, exist_ok=True)
    files, rejects = [], []
    with stats.stage("tokenize") as rec, distributed.same_error_on_every_rank():
        plan = plan_blocks(run.info, stats, opts.dataset, opts.split, opts.max_rows, opts.seed, opts.block_docs,
                           unit="documents")
        with run.progress(plan.hi - plan.lo, "tokenize", unit="docs") as bar:
            for b, rows in plan.blocks():
                texts = [t for t in (parse_or_reject(row, lambda r: get_texts(r, [opts.text_key])[0],
                                                     opts.on_bad_rows, rejects, stats) for row in rows)
                         if t is not REJECTED]
                files.append(_tokenize_block(tok, layout, texts, cache, b, stats))
                stats.add("read", len(rows))
                stats.add("documents", len(texts))
                rec["rows"] += len(rows)
                bar.update(len(rows))
    return files, rejects


def _tokenize_block(tok, layout: Layout, texts: list[str], cache: str, block: int, stats: Stats) -> str:
    path = os.path.join(cache, f"block-{block:07d}-{content_hash(texts)}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            stats.add("tokens_in", int(z["tokens_in"]))
            stats.add("document_specials", int(z["stream"].shape[0] - z["tokens_in"]))
            stats.add("cached_blocks")
        return path
    ids = tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    stream = layout.document_stream(ids)
    tokens_in = sum(len(i) for i in ids)
    save_npz(path, stream=stream, tokens_in=np.int64(tokens_in))
    stats.add("tokens_in", tokens_in)
    stats.add("document_specials", len(stream) - tokens_in)
    return path


def _streams(files: list[str]) -> Iterator[np.ndarray]:
    for path in files:
        with np.load(path) as z:
            yield z["stream"]


def _head(files: list[str], n: int) -> np.ndarray:
    """The first ``n`` tokens of this rank's slice."""
    out, have = [], 0
    for stream in _streams(files):
        if have >= n:
            break
        out.append(stream[: n - have])
        have += len(out[-1])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)


def pack_stage(run: Run, files: list[str], layout: Layout) -> None:
    """Pass 2: find this slice's place in the global stream and write the sequences starting in it
    (``--drop_last``, ``--special_tokens_mask``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info, stats = run.info, run.stats
    drop_last, with_special_mask = run.opts.drop_last, run.opts.special_tokens_mask

    with stats.stage("pack") as rec:
        # this slice's stream length: every block's tokens and document specials, counted while tokenizing
        start = distributed.count_before(stats.counts.get("tokens_in", 0) + stats.counts.get("document_specials", 0))
        C = layout.content_len
        heads = distributed.all_gather_object(_head(files, C))
        later = [h for h in heads[info.rank + 1 :] if len(h)]
        continuation = np.concatenate(later)[:C] if later else np.zeros(0, dtype=np.int32)
        pstats = PackStats()
        fields = [pa.field("input_ids", pa.list_(pa.int32())), pa.field("attention_mask", pa.list_(pa.int8()))]
        if with_special_mask:
            fields.append(pa.field("special_tokens_mask", pa.list_(pa.int8())))
        schema = pa.schema(fields)
        path = os.path.join(run.parts_dir, f"part-{info.rank:05d}.parquet")
        with atomic_open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            for packed in pack_slice(_streams(files), start, continuation, layout, drop_last, pstats):
                cols = [packed.input_ids, packed.attention_mask] + ([packed.special_tokens_mask] if with_special_mask else [])
                arrays = [pa.ListArray.from_arrays(np.arange(0, c.size + 1, c.shape[1], dtype=np.int32), c.reshape(-1))
                          for c in cols]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        for name in ("sequences", "tokens_out", "padding", "sequence_specials", "dropped_tokens"):
            stats.add(name, getattr(pstats, name))
        rec["rows"] = pstats.sequences


def join_parts(run, world_size: int, output_format: str, rows_per_shard: int) -> str:
    """Rank 0: the parts, in rank order, as one dataset (``dataset/`` or ``data/*.parquet``)."""
    import pyarrow.parquet as pq

    parts = [os.path.join(run.parts_dir, f"part-{r:05d}.parquet") for r in range(world_size)]
    if output_format == "hf":
        import datasets

        save_dataset(datasets.Dataset.from_parquet(parts, cache_dir=os.path.join(run.cache_dir, "hf")),
                     run.file(RESULT_NAME))
        return RESULT_NAME
    import pyarrow as pa

    total = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    n_shards = max(1, -(-total // rows_per_shard))
    out, tmp = run.file("data"), run.file("data.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    schema = pq.ParquetFile(parts[0]).schema_arrow
    batches = (b for p in parts for b in pq.ParquetFile(p).iter_batches(batch_size=ROW_GROUP))
    # Fixed row groups (never the parts' batch boundaries), so the bytes do not depend on the ranks.
    pending: list = []
    for shard in range(n_shards):
        size = min(rows_per_shard, total - shard * rows_per_shard)
        with pq.ParquetWriter(os.path.join(tmp, f"train-{shard:05d}-of-{n_shards:05d}.parquet"), schema) as writer:
            written = 0
            while written < size:
                want = min(ROW_GROUP, size - written)
                while sum(b.num_rows for b in pending) < want:
                    pending.append(next(batches))
                table = pa.Table.from_batches(pending, schema=schema)
                writer.write_table(table.slice(0, want), row_group_size=ROW_GROUP)
                rest = table.slice(want)
                pending = rest.to_batches() if rest.num_rows else []
                written += want
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return "data"


@dataclass(frozen=True, kw_only=True)
class PretokenizeOptions(RunOptions):
    """Pack documents into fixed-length token sequences."""

    counts = ("documents", "tokens_in", "document_specials", "sequence_specials", "tokens_out", "padding",
              "sequences", "dropped_tokens")
    summary = ("documents", "tokens_in", "padding", "dropped_tokens")
    kept_unit = "sequences"

    dataset: str = flag(SAMPLE_TEXT, "jsonl(.gz), parquet, csv, .txt (a document per line), folders, globs, "
                        "save_to_disk folders or hub names (default: the shipped WordNet text)", non_empty,
                        path=INPUT_SPEC)
    text_key: str = flag("text", "the text field", non_empty)
    tokenizer_name: str = flag(DEFAULT_MODEL, "a fast tokenizer: hub name or folder (default: the shipped "
                               "MiniLM's, BERT uncased)", non_empty)
    revision: str | None = flag(None, "the tokenizer's revision on the hub")
    seq_len: int = flag(512, "tokens per sequence", at_least(1))
    specials: str = flag("document", "document: [CLS] doc [SEP] per document; sequence: around each sequence; "
                         "none", one_of(*SPECIALS))
    drop_last: bool = flag(False, "drop the last sequence when partial (else padded)")
    special_tokens_mask: bool = flag(False, "also write special_tokens_mask (1 at specials and padding)")
    output_format: str = flag("hf", "hf: dataset/ (load_from_disk); parquet: data/train-*-of-*.parquet",
                              one_of(*FORMATS))
    rows_per_shard: int = flag(100_000, "sequences per parquet file", at_least(1))
    block_docs: int = flag(1024, "documents per tokenization block (the unit of caching and resume)", at_least(1))
    hf_save_name: str | None = flag(None, "also push the result to the hub under this name (where reachable)",
                                    non_empty, result=False)

    def result_file(self) -> str:
        return RESULT_NAME if self.output_format == "hf" else "data"

    def models(self) -> list[tuple[str, str | None, str | None]]:
        return [("tokenizer_name", self.tokenizer_name, self.revision)]


def run_pretokenize(info: distributed.DistInfo, opts: PretokenizeOptions, run: Run) -> dict | None:
    stats = run.stats
    resolve_sources(opts.dataset, opts.split)  # a missing input stops here, before the folder is touched
    tok = load_tokenizer(opts.tokenizer_name, opts.revision)
    layout = special_layout(tok, opts.seq_len, opts.specials)
    run.begin()  # before tokenizing: a run killed while tokenizing is then resumable
    files, rejects = tokenize_stage(run, tok, layout)
    pack_stage(run, files, layout)
    stats.add("kept", stats.counts["sequences"])
    run.write_parts([], rejects)
    merged = run.merge(result=Output(run.result_name, write=lambda path: join_parts(
        run, info.world_size, opts.output_format, opts.rows_per_shard)))
    if merged is not None:
        c = merged["counts"]
        expected = c.get("tokens_in", 0) + c.get("document_specials", 0) + c.get("sequence_specials", 0)
        if c.get("tokens_out", 0) + c.get("dropped_tokens", 0) != expected:  # never: the packer's invariant
            raise RuntimeError(f"token accounting failed: {c}")
        if opts.hf_save_name:
            push_to_hub(run, opts.output_format, opts.hf_save_name)
    return merged


def push_to_hub(run, output_format: str, name: str) -> None:
    """Upload the joined dataset; where the hub cannot be reached the local result stands, and we say so."""
    import datasets

    try:
        if output_format == "hf":
            ds = datasets.load_from_disk(run.file(RESULT_NAME))
        else:
            ds = datasets.load_dataset("parquet", data_dir=run.file("data"), split="train")
        ds.push_to_hub(name)
        logger.info("pushed to the hub as %s", name)
    except Exception as e:  # noqa: BLE001 - the local output is complete; report and go on
        logger.error("could not push to the hub as %s (%s: %s); the dataset is complete in %s",
                     name, type(e).__name__, str(e).splitlines()[0] if str(e) else "", run.path)


COMMANDS = {None: (PretokenizeOptions, run_pretokenize)}  # what dist_data.registry lists

@record
def main(argv: list[str] | None = None) -> None:
    """``python -m dist_data.pretokenize --flag=value ...`` (``--help`` lists the flags)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the fast tokenizer's threads: one share of the cores per rank
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // local_world)))
    run_main(COMMANDS, __doc__, "dist_data.pretokenize", argv)


if __name__ == "__main__":
    main()
