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
from typing import TYPE_CHECKING, Any, Callable, Sequence

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
               max_seq_length: int | None = None, revision: str | None = None, checkpoint: str | None = None,
               load: dict[str, Any] | None = None):
    """A SentenceTransformer on ``device`` (fp16/bf16 on GPU when asked), built with ``load`` (the
    flags' keyword arguments: :meth:`~dist_data.core.options.ModelOptions.load_kwargs`); ``open_clip:...``
    names a CLIP text tower instead (:mod:`.clip_text`, weights from ``checkpoint``).

    Raises:
        InputError: the model needs ``--trust_remote_code``, or a ``--*_kwargs`` key it does not take (one line).
    """
    if model_name and model_name.startswith("open_clip:"):
        from .clip_text import load_open_clip_text

        if dtype != "float32":
            logger.warning("dtype=%s: the CLIP text tower runs in float32", dtype)
        return load_open_clip_text(model_name, checkpoint, device)
    path = resolve_model(model_name)
    if dtype != "float32" and device.type != "cuda":
        logger.warning("dtype=%s requested on CPU; computing in float32", dtype)
        dtype = "float32"
    load = dict(load or {})
    key = (path, _folder_signature(path), str(device), dtype, revision, json.dumps(load, sort_keys=True))
    if _LAST_MODEL and _LAST_MODEL[0] == key:  # several runs in one process (a collection, the tests): one load
        model = _LAST_MODEL[1]
    else:
        if path == ZERO_COST_MODEL:
            model = zero_model.load(device)
        else:
            model = _sentence_transformer(model_name, path, device, revision, load)
        if load.get("backend", "torch") == "torch":
            # the dtype asked for, whatever the checkpoint was saved in (a bfloat16 checkpoint runs in float32 by
            # default: --dtype, or a torch_dtype in --model_kwargs, says otherwise)
            if not {"torch_dtype", "dtype"} & set(load.get("model_kwargs", {})) or dtype != "float32":
                model = model.to({"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])
        model.eval()
        model.dist_data_own_lengths = _own_lengths(model)
        _LAST_MODEL[:] = [key, model]
    # an earlier run (or an embedder's role) may have set another length: each load starts from the model's own
    apply_length(model, max_seq_length)
    return model


def _sentence_transformer(model_name: str | None, path: str, device: torch.device, revision: str | None,
                          load: dict[str, Any]):
    from sentence_transformers import SentenceTransformer

    name = repr(model_name or path)
    try:
        model = SentenceTransformer(path, device=str(device), revision=revision, **load)
    except Exception as e:  # noqa: BLE001 - the user's causes in one line; anything else as raised
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "trust_remote_code" in text and not load.get("trust_remote_code"):
            raise InputError(f"--model_name {name} runs modeling code from its repository: rerun with "
                             f"--trust_remote_code if you trust it") from None
        if isinstance(e, TypeError) and "unexpected keyword argument" in text:
            given = ", ".join(f"--{k}" for k in ("model_kwargs", "tokenizer_kwargs", "config_kwargs") if k in load)
            raise InputError(f"--model_name {name}: {first} (from {given or 'the flags'})") from None
        if "backend" in load and ("Optimum" in text or "optimum" in text or "openvino" in text.lower()):
            raise InputError(f"--backend={load['backend']}: {first}") from None
        raise
    unknown = _unknown_config_keys(model, load.get("config_kwargs", {}))
    if unknown:
        raise InputError(f"--config_kwargs: {', '.join(unknown)} is not a setting of the config of {name} "
                         f"({type(model[0].auto_model.config).__name__})")
    unknown = _unknown_tokenizer_keys(model, load.get("tokenizer_kwargs", {}))
    if unknown:
        raise InputError(f"--tokenizer_kwargs: {', '.join(unknown)} is not a setting of the tokenizer of {name} "
                         f"({type(model.tokenizer).__name__})")
    if "backend" in load:
        logger.info("model: %s backend (%s)", load["backend"], type(model[0].auto_model).__name__)
    return model


# what every tokenizer's from_pretrained takes, besides its own class's arguments
TOKENIZER_KEYS = frozenset({"model_max_length", "padding_side", "truncation_side", "model_input_names",
                            "clean_up_tokenization_spaces", "split_special_tokens", "chat_template", "bos_token",
                            "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                            "additional_special_tokens", "extra_special_tokens", "add_prefix_space", "add_bos_token",
                            "add_eos_token", "use_fast", "legacy", "do_lower_case", "tokenizer_file", "subfolder",
                            "revision", "cache_dir", "token", "local_files_only", "trust_remote_code"})


def _unknown_tokenizer_keys(model, keys: dict[str, Any]) -> list[str]:
    """The ``--tokenizer_kwargs`` keys neither its class nor every tokenizer takes (a typo would be kept
    silently in its ``init_kwargs``)."""
    import inspect

    tokenizer = getattr(model, "tokenizer", None)
    if not keys or tokenizer is None:
        return []
    own = set(inspect.signature(type(tokenizer).__init__).parameters) - {"self", "kwargs"}
    return sorted(k for k in keys if k not in own | TOKENIZER_KEYS and not hasattr(tokenizer, k))


def _unknown_config_keys(model, keys: dict[str, Any]) -> list[str]:
    """The ``--config_kwargs`` keys the model's config class does not define (transformers keeps any key
    without a word, so a typo would change nothing silently)."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    if not keys or config is None:
        return []
    try:
        known = set(type(config)().to_dict()) | set(getattr(config, "attribute_map", {}))
    except Exception:  # noqa: BLE001 - a config class that needs arguments: nothing to compare with
        return []
    return sorted(k for k in keys if k not in known)


LENGTHS = ("max_seq_length", "query_length", "document_length")  # an input module's lengths (per task: 6.3's)


def _own_lengths(model) -> list[tuple[Any, str, int | None]]:
    """``(module, attribute, value)`` of each input module's own lengths: a Router's routes may each
    have their own ``max_seq_length``, a Transformer its per-task ``query_length``/``document_length``."""
    found = [(m, attr, getattr(m, attr)) for m in model.modules() if type(m).__name__ == "Transformer"
             for attr in LENGTHS if hasattr(m, attr)]
    return found or [(model, "max_seq_length", model.max_seq_length)]


def role_length(model, role: str) -> int | None:
    """The length the model itself gives ``role``'s texts: its per-task length (``query_length`` /
    ``document_length``) where it has one, else its ``max_seq_length``; None when its input modules
    differ (a Router: each route its own)."""
    own = getattr(model, "dist_data_own_lengths", None) or _own_lengths(model)
    task = {v for _, attr, v in own if role and attr == f"{role}_length" and v}
    plain = {v for _, attr, v in own if attr == "max_seq_length"}
    lengths = task or plain
    return lengths.pop() if len(lengths) == 1 else None


def apply_length(model, max_seq_length: int | None, role: str = "") -> None:
    """Each input module's own lengths back (a Router's query route keeps its shorter length, as
    sentence-transformers loads it), then ``max_seq_length`` when given: on every input module, and
    as ``role``'s per-task length where the module has one (so that it, not the module's, applies)."""
    own = getattr(model, "dist_data_own_lengths", None) or []
    for module, attr, value in own:
        if getattr(module, attr) != value:
            setattr(module, attr, value)
    if not max_seq_length:
        return
    if not own:
        model.max_seq_length = int(max_seq_length)
    for module, attr, value in own:
        if attr == "max_seq_length" or (role and attr == f"{role}_length" and value is not None):
            setattr(module, attr, int(max_seq_length))


_LAST_MODEL: list = []  # [key, model]: the last model loaded in this process


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
    max_seq_length: int  # 0: each input module's own (a Router whose routes have their own lengths)
    pooling: str
    dtype: str
    batch_size: int
    normalize: bool = True
    role: str = ""  # "query" or "document": encode_query / encode_document (a Router model's route)
    batch_tokens: int = 0  # > 0: batches of at most this many padded tokens (:func:`token_batches`)
    load: str = ""  # the load flags (JSON: --trust_remote_code, --truncate_dim, --model_kwargs, --backend, ...)

    def key(self) -> str:
        fields = asdict(self)
        for name in ("batch_tokens", "load"):  # keys written before these existed stay valid
            if not fields[name]:
                del fields[name]
        return content_hash([json.dumps(fields, sort_keys=True)])


def spec_for(model, model_name: str | None, revision: str | None, prompt: str | None, dtype: str,
             batch_size: int, max_seq_length: int | None = None, role: str = "", batch_tokens: int = 0,
             load: dict[str, Any] | None = None) -> EmbedSpec:
    """The spec of ``model``'s vectors for ``role``; ``prompt`` None: the model's own for the role
    (:func:`resolve_prompt`, as ``encode``/``encode_query``/``encode_document`` pick it)."""
    pooling = " ".join(type(m).__name__ for m in model) + f" dim={embedding_dim(model)}"
    if prompt is None:
        prompt = resolve_prompt(model, None, None, role, "prompt")
    length = int(max_seq_length or role_length(model, role) or 0)
    return EmbedSpec(model_name or DEFAULT_MODEL, revision, prompt or "", length, pooling, dtype, int(batch_size),
                     role=role, batch_tokens=int(batch_tokens or 0),
                     load=json.dumps(load, sort_keys=True) if load else "")


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


def _prompt_features(model, spec: EmbedSpec) -> dict[str, int]:
    """``{"prompt_length": n}`` for a pooling that leaves the prompt's tokens out (``include_prompt=False``)
    when there is a prompt: the feature the model's own preprocessing adds (measured by it); else {}."""
    if not spec.prompt or getattr(model[1], "include_prompt", True) or not hasattr(model, "preprocess"):
        return {}
    length = model.preprocess(["x"], prompt=spec.prompt).get("prompt_length")
    return {} if length is None else {"prompt_length": int(length)}


def _backend(tokenizer, max_length: int | None):
    """A private copy of a fast tokenizer's backend, truncating at ``max_length`` on the tokenizer's
    own ``truncation_side`` and not padding (None for a slow tokenizer)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    side = getattr(tokenizer, "truncation_side", "right")
    key = (id(tokenizer), max_length, side)  # set once, then only read: threads may share it
    if key not in _BACKENDS:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        if max_length:
            backend.enable_truncation(max_length, direction=side)
        else:
            backend.no_truncation()
        _BACKENDS[key] = (tokenizer, backend)  # the tokenizer held, so its id is never reused
    return _BACKENDS[key][1]


def token_lengths(model, texts: Sequence[str], prompt: str = "") -> np.ndarray:
    """Tokens per text as the model will see it: prompt included, special tokens, truncated."""
    return np.fromiter((len(x) for x in _token_ids(model, texts, prompt)), dtype=np.int64, count=len(texts))


FAST_FEATURES = {"input_ids", "attention_mask", "token_type_ids", "modality", "prompt_length"}


def fast_path_problem(model, spec: EmbedSpec) -> str | None:
    """Why the token-budget fast path (:meth:`BlockEmbedder._forward_token_batches`: our tokens
    through the model's forward) would not give the vectors of the model's own ``encode`` for
    ``spec``; None when it gives them exactly.

    The stack must be a Transformer, a Pooling and optional Normalize; and the model's own preprocessing (``model.preprocess``: chat template, truncation side, per-task
    lengths, prompt) must give the fast path's tokens on probe texts, a long one included."""
    if getattr(model[0], "plain_stack", False):  # the zero-cost encoder
        return None
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        return f"its modules ({' + '.join(names)}) are not the fast path's Transformer + Pooling (+ Normalize)"
    if not hasattr(model, "tokenizer") or not hasattr(model, "preprocess"):
        return "it has no tokenizer the fast path can run"
    apply_length(model, spec.max_seq_length, spec.role)
    length = spec.max_seq_length or model.max_seq_length or 512
    probes = ["a", "The quick brown fox jumps over the lazy dog.", "naïve café, 3.14 résumé; ÅÄÖ 東京 🙂",
              " ".join(f"w{i} and more" for i in range(length + 16))]
    try:
        features = model.preprocess(probes, prompt=spec.prompt or None, **({"task": spec.role} if spec.role else {}))
    except Exception as e:  # noqa: BLE001 - whatever the model's preprocessing refuses, encode is the reference
        return f"its preprocessing cannot be checked ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    extra = sorted(set(features) - FAST_FEATURES)
    if extra:
        return f"its preprocessing gives features the fast path does not pass ({', '.join(extra)})"
    if not getattr(model[1], "include_prompt", True) and (
            features.get("prompt_length") != _prompt_features(model, spec).get("prompt_length")):
        return "its prompt's length in tokens is not the fast path's"
    theirs = [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"])]
    ours = _token_ids(model, probes, spec.prompt, spec.max_seq_length or model.max_seq_length)
    differ = sum(a != b for a, b in zip(ours, theirs))
    if not differ:
        return None
    why = ("its tokenizer's chat template (texts and prompt go through the message format)"
           if "message" in (getattr(model[0], "modality_config", None) or {})
           else f"its own {spec.role}_length" if spec.role and getattr(model[0], f"{spec.role}_length", None)
           else "its own preprocessing")
    return f"{why} gives other tokens than the fast path's on {differ} of {len(probes)} probe texts"


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
    ``prompt_name``, else the model's own for the role as sentence-transformers picks it
    (``encode_query``: ``query``; ``encode_document``: ``document``, ``passage`` or ``corpus``;
    then, for any role, the model's ``default_prompt_name``), else none.

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
    default = getattr(model, "default_prompt_name", None)
    return prompts.get(default, "") if default else ""


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
        self.fast = False  # token-budget batches through our own tokens and the model's forward
        self.fast_features: dict[str, int] = {}  # what the forward needs besides the tokens (prompt_length)
        if spec.batch_tokens:
            problem = fast_path_problem(model, spec)
            self.fast = problem is None
            self.fast_features = _prompt_features(model, spec) if self.fast else {}
            if problem:
                logger.info("--batch_tokens: %s%s; its texts go through its own encode (batched by tokens)",
                            f"{spec.role}s of " if spec.role else "", f"{spec.model_name}: {problem}")

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
        if unique_texts and self.fast:
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
        apply_length(self.model, self.spec.max_seq_length, self.spec.role)  # one model: queries, documents, each its length
        encode = getattr(self.model, f"encode_{self.spec.role}", None) if self.spec.role else None
        encode = encode or self.model.encode

        def run(part: list[str], batch_size: int) -> np.ndarray:
            with torch.inference_mode():  # the prompt resolved as encode would (spec_for): "" is no prompt
                emb = encode(part, batch_size=batch_size, prompt=self.spec.prompt,
                             normalize_embeddings=self.spec.normalize, convert_to_numpy=True, show_progress_bar=False)
            return np.ascontiguousarray(emb, dtype=np.float32)

        if not self.spec.batch_tokens:
            return run(texts, self.spec.batch_size)
        if self.fast:
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
                emb = model.forward({**{k: v.to(model.device, non_blocking=True) for k, v in batch.items()},
                                     **self.fast_features})
                emb = emb["sentence_embedding"].float()
                if getattr(model, "truncate_dim", None):  # Matryoshka: the first dimensions, then normalised
                    emb = emb[:, :model.truncate_dim]
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
    """One model, two block embedders (queries, documents: each its prompt and length, as
    ``encode_query`` / ``encode_document``), caching blocks under ``cache_dir``."""
    load = opts.load_kwargs()
    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision, load=load)
    roles = (("query", opts.query_prompt, opts.query_prompt_name, opts.query_max_seq_length, "query_prompt_name"),
             ("document", opts.document_prompt, opts.corpus_prompt_name, opts.document_max_seq_length,
              "corpus_prompt_name"))
    return tuple(BlockEmbedder(model, spec_for(model, opts.model_name, opts.revision,
                                               resolve_prompt(model, prompt, name, role, flag), opts.dtype,
                                               opts.batch_size, max_len or opts.max_seq_length, role,
                                               opts.batch_tokens, load),
                               cache_dir)
                 for role, prompt, name, max_len, flag in roles)


def text_embedder(info: distributed.DistInfo, cache_dir: str, opts: "ModelOptions",
                  checkpoint: str | None = None) -> BlockEmbedder:
    """One block embedder of ``--model_name`` with the model's own default prompt only (texts compared
    with texts of their own kind: ``encode`` with no prompt), caching blocks under ``cache_dir``; an
    open_clip tower's ``checkpoint`` file is part of its cache key."""
    load = opts.load_kwargs()
    model = load_model(opts.model_name, info.device, opts.dtype, opts.max_seq_length, opts.revision, checkpoint, load)
    name_tag = opts.model_name + (f" {checkpoint} {os.path.getsize(checkpoint)}" if checkpoint else "")
    return BlockEmbedder(model, spec_for(model, name_tag, opts.revision, None, opts.dtype, opts.batch_size,
                                         opts.max_seq_length, "", opts.batch_tokens, load),
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
