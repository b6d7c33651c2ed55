"""Model loading and block-wise embedding with a per-block cache.

Why blocks: an embedding depends (in its last bits) on the texts it is batched with, because
padding changes the shapes of the matrix products. Rows are therefore embedded in fixed blocks of
global positions (``block_rows`` rows, sorted by length inside the block, as ``encode`` does), and
ranks own whole blocks. The same text then gets the same bits whatever the number of ranks, which
is what makes outputs identical for any world size. A block of 8 batches keeps padding close to a
global length sort.
"""

from __future__ import annotations

import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from .dedup import content_hash
from .errors import InputError
from .write import save_npy
from .log import logger

from . import distributed
from . import zero_model
from .fault import fault
from .models import DEFAULT_MODEL, ZERO_COST_MODEL, resolve_model
from .stats import Stats

if TYPE_CHECKING:
    from .options import ModelOptions, PairOptions

BATCHES_PER_BLOCK = 8


def load_model(model_name: str | None, device: torch.device, dtype: str = "float32",
               max_seq_length: int | None = None, revision: str | None = None, checkpoint: str | None = None):
    """A SentenceTransformer on ``device`` (fp16/bf16 on GPU when asked); ``open_clip:...`` names a
    CLIP text tower instead (:mod:`.clip_text`, weights from ``checkpoint``)."""
    if model_name and model_name.startswith("open_clip:"):
        from .clip_text import load_open_clip_text

        if dtype != "float32":
            logger.warning("dtype=%s: the CLIP text tower runs in float32", dtype)
        return load_open_clip_text(model_name, checkpoint, device)
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model_name)
    if dtype != "float32" and device.type != "cuda":
        logger.warning("dtype=%s requested on CPU; computing in float32", dtype)
        dtype = "float32"
    key = (path, _folder_signature(path), str(device), dtype, revision)
    if _LAST_MODEL and _LAST_MODEL[0] == key:  # several runs in one process (a collection, the tests): one load
        model, loaded_length = _LAST_MODEL[1], _LAST_MODEL[2]
    else:
        if path == ZERO_COST_MODEL:
            model = zero_model.load(device)
        else:
            model = SentenceTransformer(path, device=str(device), revision=revision)
        # the dtype asked for, whatever the checkpoint was saved in (a float16 checkpoint loads as float16)
        model = model.to({"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])
        model.eval()
        loaded_length = model.max_seq_length
        _LAST_MODEL[:] = [key, model, loaded_length]
    # an earlier run (or an embedder's role) may have set another length: each load starts from the model's own
    model.max_seq_length = int(max_seq_length) if max_seq_length else loaded_length
    return model


_LAST_MODEL: list = []  # [key, model, its own max_seq_length]: the last model loaded in this process


def _folder_signature(path: str) -> tuple:
    """What tells a changed local model folder apart (file names, sizes, modification times); () for a hub name."""
    if not os.path.isdir(path):
        return ()
    return tuple(sorted((os.path.relpath(os.path.join(d, f), path), st.st_size, st.st_mtime_ns)
                        for d, _, files in os.walk(path) for f in files
                        for st in [os.stat(os.path.join(d, f))]))


def embedding_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


@dataclass(frozen=True)
class EmbedSpec:
    """Everything that determines a vector besides the text: the cache key."""

    model_name: str
    revision: str | None
    prompt: str
    max_seq_length: int
    pooling: str
    dtype: str
    batch_size: int
    normalize: bool = True
    role: str = ""  # "query" or "document": encode_query / encode_document (a Router model's route)
    batch_tokens: int = 0  # > 0: batches of at most this many padded tokens (:func:`token_batches`)

    def key(self) -> str:
        fields = asdict(self)
        if not self.batch_tokens:  # keys written before token batching existed stay valid
            del fields["batch_tokens"]
        return content_hash([json.dumps(fields, sort_keys=True)])


def spec_for(model, model_name: str | None, revision: str | None, prompt: str, dtype: str,
             batch_size: int, max_seq_length: int | None = None, role: str = "", batch_tokens: int = 0) -> EmbedSpec:
    pooling = " ".join(type(m).__name__ for m in model) + f" dim={embedding_dim(model)}"
    return EmbedSpec(model_name or DEFAULT_MODEL, revision, prompt or "", int(max_seq_length or model.max_seq_length or 0),
                     pooling, dtype, int(batch_size), role=role, batch_tokens=int(batch_tokens or 0))


def _token_ids(model, texts: Sequence[str], prompt: str = "", max_length: int | None = None) -> list[list[int]]:
    """Token ids as the model sees them (``max_length``: the model's own length when not given;
    a thread preparing the next block passes its spec's, the model's being another role's).

    A fast tokenizer runs through its own Rust backend (a copy per length whose truncation is set
    once, so no thread ever changes it under another): the ids of ``tokenizer(texts, truncation=True)`` without its Python
    wrapping, a third of the host's cost per text."""
    if not texts:
        return []
    max_length = (max_length or model.max_seq_length) or None
    backend = _backend(model.tokenizer, max_length)
    if backend is None:
        return model.tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=True,
                               max_length=max_length)["input_ids"]
    return [e.ids for e in backend.encode_batch([prompt + t for t in texts] if prompt else list(texts),
                                                add_special_tokens=True)]


_BACKENDS: dict = {}


def _backend(tokenizer, max_length: int | None):
    """A private copy of a fast tokenizer's backend, truncating at ``max_length`` and not padding
    (None for a slow tokenizer)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    key = (id(tokenizer), max_length)  # set once, then only read: threads may share it
    if key not in _BACKENDS:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        if max_length:
            backend.enable_truncation(max_length)
        else:
            backend.no_truncation()
        _BACKENDS[key] = (tokenizer, backend)  # the tokenizer held, so its id is never reused
    return _BACKENDS[key][1]


def token_lengths(model, texts: Sequence[str], prompt: str = "") -> np.ndarray:
    """Tokens per text as the model will see it: prompt included, special tokens, truncated."""
    return np.fromiter((len(x) for x in _token_ids(model, texts, prompt)), dtype=np.int64, count=len(texts))


def _plain_stack(model) -> bool:
    """A Transformer, mean/CLS Pooling that keeps prompt tokens, optional Normalize: the stack that
    :meth:`BlockEmbedder._forward_token_batches` runs itself (any other goes through ``encode``)."""
    if getattr(model[0], "plain_stack", False):  # the zero-cost encoder
        return True
    names = [type(m).__name__ for m in model]
    return (names[:2] == ["Transformer", "Pooling"] and all(n == "Normalize" for n in names[2:])
            and getattr(model[1], "include_prompt", True) and hasattr(model, "tokenizer"))


def token_batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Token-budget batching: positions sorted longest first (ties by position), cut into batches
    whose padded size (rows x longest row) stays within ``budget`` tokens; a text longer than the
    budget is a batch of its own. Many short texts share a batch, few long ones do, so each forward
    pass does about the same work and little of it is padding."""
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # sorted: the first row is the longest
        rows = max(1, budget // longest)
        batches.append(order[start : start + rows])
        start += rows
    return batches


# The prompt names sentence-transformers' encode_query / encode_document use when none is given.
DEFAULT_PROMPT_NAMES = {"query": ("query",), "document": ("document", "passage", "corpus")}


def resolve_prompt(model, prompt: str | None, prompt_name: str | None, role: str, flag: str) -> str:
    """The text put before every ``role`` text: ``prompt`` when given, else the model's prompt
    ``prompt_name``, else the model's own default for the role (as ``encode_query`` and
    ``encode_document`` pick it: ``query``; ``document``, ``passage`` or ``corpus``), else none.

    Raises:
        InputError: ``prompt_name`` is not one of the model's prompts (they are listed).
    """
    if prompt:
        return prompt
    prompts = dict(getattr(model, "prompts", None) or {})
    if prompt_name:
        if prompt_name not in prompts:
            raise InputError(f"--{flag}={prompt_name!r}: the model defines no such prompt (it has: "
                             f"{', '.join(sorted(prompts)) or 'none'}); give the text itself with --"
                             f"{'query_prompt' if role == 'query' else 'document_prompt'}")
        return prompts[prompt_name]
    for name in DEFAULT_PROMPT_NAMES.get(role, ()):
        if name in prompts:
            return prompts[name]
    return ""


@dataclass
class PreparedBlock:
    """A block after :meth:`BlockEmbedder.prepare`: what the model's part needs."""

    texts: Sequence[str]
    order: dict[str, int]  # distinct text -> its row in the block's vectors
    unique_texts: list[str]
    path: str | None  # the cache file
    vectors: np.ndarray | None  # read back from the cache
    batches: list[dict] | None  # token-budget batching: the block tokenised, padded and batched


class BlockEmbedder:
    """Embeds one block of texts at a time, caching each block as ``.npy`` under ``cache_dir``.

    A block's file name carries the spec's key and a hash of its texts: a changed prompt, model,
    length or row never serves stale vectors, and a killed run resumes from the finished blocks.
    """

    def __init__(self, model, spec: EmbedSpec, cache_dir: str | None):
        self.model = model
        self.spec = spec
        self.cache_dir = os.path.join(cache_dir, f"emb-{spec.key()}") if cache_dir else None
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
        self.cache_hits = 0  # blocks served from the cache since count_cache_hits last counted them
        self.texts_embedded = 0

    def embed(self, texts: Sequence[str], block_id: str) -> np.ndarray:
        """``(len(texts), d) float32`` L2-normalised embeddings; duplicates embedded once."""
        return self.finish(self.prepare(texts, block_id))

    def prepare(self, texts: Sequence[str], block_id: str) -> "PreparedBlock":
        """The host's part before the model (thread-safe, no model state touched): the block's
        distinct texts, its cache file (read back when there), and for token-budget batching its
        padded batches. :func:`embed_by_block` runs it for the next block while the model
        runs this one."""
        order = {t: i for i, t in enumerate(dict.fromkeys(texts))}  # first-seen: the plan is the block's alone
        unique_texts = list(order)
        block = PreparedBlock(texts, order, unique_texts, None, None, None)
        if self.cache_dir:
            block.path = os.path.join(self.cache_dir, f"{block_id}-{content_hash(unique_texts)}.npy")
            if os.path.exists(block.path):
                vectors = np.load(block.path)
                if vectors.shape[0] == len(unique_texts):
                    block.vectors = vectors
                    return block
        if unique_texts and self.spec.batch_tokens and _plain_stack(self.model):
            block.batches = padded_batches(self.model, _token_ids(self.model, unique_texts, self.spec.prompt,
                                                                  self.spec.max_seq_length or self.model.max_seq_length),
                                           self.spec.batch_tokens)
        return block

    def finish(self, block: "PreparedBlock", save: Callable[[str, np.ndarray], None] | None = None) -> np.ndarray:
        """The model's part: the block's vectors (from the cache, or encoded and then saved, by
        ``save(path, vectors)`` when given: a writer thread), in the block's row order."""
        if block.vectors is not None:
            self.cache_hits += 1
            vectors = block.vectors
        else:
            vectors = self._encode(block.unique_texts, block.batches)
            self.texts_embedded += len(block.unique_texts)
            if block.path:
                (save or save_npy)(block.path, vectors)
        if len(block.unique_texts) == len(block.texts):  # no text twice: the rows are the vectors' (most blocks)
            return vectors
        return vectors[[block.order[t] for t in block.texts]]

    def _encode(self, texts: list[str], batches: list[dict] | None = None) -> np.ndarray:
        if not texts:
            dim = embedding_dim(self.model)
            return np.zeros((0, dim), dtype=np.float32)
        if self.spec.max_seq_length:  # one model serves queries and documents, each with its own length
            self.model.max_seq_length = self.spec.max_seq_length
        encode = getattr(self.model, f"encode_{self.spec.role}", None) if self.spec.role else None
        encode = encode or self.model.encode

        def run(part: list[str], batch_size: int) -> np.ndarray:
            with torch.inference_mode():
                emb = encode(part, batch_size=batch_size, prompt=self.spec.prompt or None,
                             normalize_embeddings=self.spec.normalize, convert_to_numpy=True, show_progress_bar=False)
            return np.ascontiguousarray(emb, dtype=np.float32)

        if not self.spec.batch_tokens:
            return run(texts, self.spec.batch_size)
        if _plain_stack(self.model):
            return self._forward_token_batches(texts, batches)
        out = None
        for rows in token_batches(token_lengths(self.model, texts, self.spec.prompt), self.spec.batch_tokens):
            emb = run([texts[i] for i in rows], len(rows))  # one forward pass
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32) if out is None else out
            out[rows] = emb
        return out

    def _forward_token_batches(self, texts: list[str], batches: list[dict]) -> np.ndarray:
        """Token-budget batches through the model's forward (:func:`padded_batches`, built by
        :meth:`prepare`, in its thread under :func:`embed_by_block`); the vectors stay on the device
        until the block is done (one copy back)."""
        model = self.model
        out = torch.empty((len(texts), embedding_dim(model)), dtype=torch.float32, device=model.device)
        with torch.inference_mode():
            for batch in batches:
                rows = batch.pop("rows")
                emb = model.forward({k: v.to(model.device, non_blocking=True) for k, v in batch.items()})
                emb = emb["sentence_embedding"].float()
                if self.spec.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[rows.to(model.device, non_blocking=True)] = emb
        return out.cpu().numpy()


def padded_batches(model, ids: list[list[int]], budget: int) -> list[dict[str, torch.Tensor]]:
    """The features of each token-budget batch (:func:`token_batches`; ``rows``: the batch's rows
    of the block), each padded to its longest row; in pinned memory when the model is on a GPU, so
    the copies to it run asynchronously."""
    pad_id = model.tokenizer.pad_token_id or 0
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    types = "token_type_ids" in model.tokenizer.model_input_names
    pin = model.device.type == "cuda"
    out = []
    for rows in token_batches(lengths, budget):
        width = int(lengths[rows[0]])  # longest first
        mask = np.arange(width)[None, :] < lengths[rows][:, None]
        batch = np.full((len(rows), width), pad_id, dtype=np.int64)
        batch[mask] = np.fromiter(itertools.chain.from_iterable(ids[i] for i in rows), dtype=np.int64,
                                  count=int(lengths[rows].sum()))  # row by row, left-aligned
        input_ids = torch.from_numpy(batch)
        features = {"input_ids": input_ids, "attention_mask": torch.from_numpy(mask).long(),
                    **({"token_type_ids": torch.zeros_like(input_ids)} if types else {}),
                    "rows": torch.from_numpy(rows)}
        out.append({k: v.pin_memory() for k, v in features.items()} if pin else features)
    return out


# ---------------------------------------------------------------- embedding

def embed_by_block(embedder: BlockEmbedder, positions: np.ndarray, texts: Sequence[str], block_rows: int,
                   role: str, progress: Callable[[int], None] | None = None,
                   blocks: np.ndarray | None = None) -> np.ndarray:
    """Embed this rank's rows block by block (a block = ``block_rows`` consecutive positions, or the
    rows of equal ``blocks``, consecutive).

    The host's work is overlapped with the model's: a thread prepares block b+1 (distinct texts,
    cache look-up, tokens: :meth:`BlockEmbedder.prepare`) while the model runs block b, and another
    writes the cache files, so neither stalls the device. The vectors are the sequential ones."""
    blocks = positions // block_rows if blocks is None else np.asarray(blocks, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(blocks)) + 1
    chunks = [c for c in np.split(np.arange(len(positions)), bounds) if len(c)]
    if not chunks:
        return embedder.embed([], f"{role}-empty")

    def prepare(chunk: np.ndarray) -> PreparedBlock:
        return embedder.prepare([texts[i] for i in chunk], f"{role}-{int(blocks[chunk[0]]):07d}")

    out = []
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as ahead, \
            ThreadPoolExecutor(1, thread_name_prefix="cache-write") as writer:
        saves = []

        def save(path: str, vectors: np.ndarray) -> None:
            saves.append(writer.submit(save_npy, path, vectors))

        pending = ahead.submit(prepare, chunks[0])
        for j, chunk in enumerate(chunks):
            block = pending.result()
            if j + 1 < len(chunks):
                pending = ahead.submit(prepare, chunks[j + 1])
            out.append(embedder.finish(block, save))
            if progress:
                progress(len(chunk))
        for f in saves:
            f.result()  # a cache write that failed (a full disk) is an error here, not a lost block
    fault("embedded")
    return np.concatenate(out)


def query_document_embedders(info: distributed.DistInfo, cache_dir: str,
                             opts: "PairOptions") -> tuple[BlockEmbedder, BlockEmbedder]:
    """One model, two block embedders (queries, documents: each its prompt and length), caching blocks
    under ``cache_dir``."""
    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision)
    roles = (("query", opts.query_prompt, opts.query_prompt_name, opts.query_max_seq_length, "query_prompt_name"),
             ("document", opts.document_prompt, opts.corpus_prompt_name, opts.document_max_seq_length,
              "corpus_prompt_name"))
    return tuple(BlockEmbedder(model, spec_for(model, opts.model_name, opts.revision,
                                               resolve_prompt(model, prompt, name, role, flag), opts.dtype,
                                               opts.batch_size, max_len or opts.max_seq_length, role,
                                               opts.batch_tokens),
                               cache_dir)
                 for role, prompt, name, max_len, flag in roles)


def text_embedder(info: distributed.DistInfo, cache_dir: str, opts: "ModelOptions",
                  checkpoint: str | None = None) -> BlockEmbedder:
    """One block embedder of ``--model_name`` with no prompt (texts compared with texts of their own
    kind), caching blocks under ``cache_dir``; an open_clip tower's ``checkpoint`` file is part of its
    cache key."""
    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision, checkpoint)
    name_tag = opts.model_name + (f" {checkpoint} {os.path.getsize(checkpoint)}" if checkpoint else "")
    return BlockEmbedder(model, spec_for(model, name_tag, opts.revision, "", opts.dtype, opts.batch_size,
                                         opts.max_seq_length, "", opts.batch_tokens),
                         cache_dir)


def count_cache_hits(info: distributed.DistInfo, stats: Stats, embedders: Sequence[BlockEmbedder]) -> None:
    """Record this rank's blocks served from the cache since the embedders' last count (so a verb that
    embeds again later, as dedup does for its evaluation sets, counts each block once); rank 0 logs
    the total (a resumed run). Collective."""
    hits = distributed.all_gather_object(sum(e.cache_hits for e in embedders))
    for e in embedders:
        e.cache_hits = 0
    stats.add("cached_blocks", hits[info.rank])
    if sum(hits) and info.is_main:
        logger.info("embed: %d block(s) served from the cache in %s", sum(hits), embedders[0].cache_dir)
