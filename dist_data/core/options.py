"""The options shared by the verbs: the run folder, rows, the model, the index."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar


from .cli import at_least, CommonOptions, flag, json_object, non_empty, one_of, Options, required
from .models import BACKENDS, DEFAULT_MODEL, model_load_kwargs
from .card import CARD
from .paths import CACHE_DIR, OUTPUT_DIR, inputs_signature, output_dirs
from .rundir import MANIFEST

# ---------------------------------------------------------------- options shared by the verbs

@dataclass(frozen=True, kw_only=True)
class RunFolderOptions(CommonOptions):
    """Flags of every command that writes one run folder.

    A verb's options also declare, as class attributes, what the engine's :class:`~dist_data.core.run.Run`
    counts and says for it: ``counts`` and ``count_buckets`` (its own keys in stats.json, zero on
    every rank from the start; the engine's ``input_rows``, ``read``, ``kept``, ``dropped`` and
    ``rejected`` are always there), ``summary`` (the counts its last line names), ``kept_unit``
    (what ``kept`` counts), ``one_process`` (a table command: refused under torchrun) and ``url_output``
    (``--output_dir`` may be a URL: :mod:`dist_data.core.mirror`)."""

    counts: ClassVar[tuple[str, ...]] = ()
    count_buckets: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[tuple[str, ...]] = ()
    kept_unit: ClassVar[str] = "rows"
    one_process: ClassVar[bool] = False
    url_output: ClassVar[bool] = True  # --output_dir may be a URL (dist_data.core.mirror)

    output_dir: str = required("the run folder (refused if another run with other flags is there)", non_empty,
                               result=False, path=OUTPUT_DIR)
    overwrite: bool = flag(False, "replace a run with other flags (only files dist_data wrote are removed)",
                           result=False)

    def result_file(self) -> str:
        """The result's name in the run folder (a table named by its rows is renamed when published)."""
        raise NotImplementedError

    def side_outputs(self) -> list[str]:
        """Every other file or folder the command may write in its run folder (sidecars, plots, lists);
        the engine's own (args, stats, rejects, parts, cache, scores.png, the card) are not repeated.
        Each options class (a verb's, a mixin's) declares its own: :meth:`outputs` joins them all."""
        return []

    def outputs(self) -> list[str]:
        """Every name the run may write in its folder (the result, and the ``side_outputs`` every class
        of the options declares): a file of the user's at any of them is refused before anything is
        read (and again, for a name not declared, when it is written)."""
        names = [self.result_file()]
        for klass in type(self).__mro__:
            if "side_outputs" in vars(klass):
                names += vars(klass)["side_outputs"](self)
        return list(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class RunOptions(RunFolderOptions):
    """Flags of every verb that reads rows into one run folder."""

    split: str = flag("train", "the split of a Hugging Face dataset or save_to_disk folder", non_empty)
    max_rows: int | None = flag(None, "process a seeded sample of at most this many rows (input order kept)",
                                at_least(1))
    seed: int = flag(42, "seed of every random draw (sampling, negatives)", at_least(0))
    on_bad_rows: str = flag("error", "error: stop at the first bad row naming file:line; skip: to rejects.jsonl",
                            one_of("error", "skip"))


@dataclass(frozen=True, kw_only=True)
class ModelOptions(Options):
    """Flags of the verbs that embed with a sentence-transformers model."""

    model_name: str = flag(DEFAULT_MODEL, "a sentence-transformers model: hub name or local folder "
                           "(default: the shipped all-MiniLM-L6-v2)", non_empty)
    revision: str | None = flag(None, "the model's revision on the hub")
    batch_size: int = flag(64, "texts per forward pass (with --batch_tokens: sets the block size only)", at_least(1))
    batch_tokens: int = flag(0, "token-budget batching: each forward pass holds at most this many padded tokens, "
                             "texts sorted by length (e.g. 16384 on a GPU); 0: --batch_size texts a pass", at_least(0))
    max_seq_length: int | None = flag(None, "truncate texts to this many tokens (default: the model's)",
                                      at_least(1))
    dtype: str = flag("float32", "float32; float16 or bfloat16 on GPU", one_of("float32", "float16", "bfloat16"))
    trust_remote_code: bool = flag(False, "run the modeling code a model ships in its repository (nomic-embed, jina, "
                                   "gte v1.5...); only with this flag, and the card names the code's revision")
    truncate_dim: int | None = flag(None, "keep the first N dimensions of each vector (a Matryoshka model), "
                                    "normalised after the cut, as sentence-transformers' truncate_dim", at_least(1))
    model_kwargs: str | None = flag(None, "JSON passed to the model's from_pretrained, e.g. "
                                    "'{\"attn_implementation\": \"sdpa\"}' or, with --backend, '{\"file_name\": ...}'",
                                    json_object)
    tokenizer_kwargs: str | None = flag(None, "JSON passed to the tokenizer's from_pretrained", json_object)
    config_kwargs: str | None = flag(None, "JSON passed to the model config's from_pretrained", json_object)
    backend: str = flag("torch", "sentence-transformers' inference backend: torch, onnx or openvino (an export the "
                        "model lacks is made once into the Hugging Face cache)", one_of(*BACKENDS))

    def models(self) -> list[tuple[str, str | None, str | None]]:
        return [("model_name", self.model_name, self.revision)] + super().models()

    def load_kwargs(self) -> dict[str, Any]:
        """What shapes the model besides its name (:func:`dist_data.core.embed.load_model`): the flags
        given, none at their default, so an embedding cache of the defaults keeps its key."""
        return model_load_kwargs(self.trust_remote_code, self.truncate_dim, self.model_kwargs, self.tokenizer_kwargs,
                                 self.config_kwargs, self.backend)


INDEX_MODES = ("gather", "sharded", "ivf", "hnsw")
INDEX_HELP = ("gather: every rank searches all vectors (exact); sharded: per-rank shards, merged top-k (exact, same "
              "result, memory / world); ivf, hnsw: approximate per-rank shards for big corpora (candidates rescored "
              "exactly; recall@k in stats.json)")


@dataclass(frozen=True, kw_only=True)
class IndexOptions(Options):
    """Flags of the verbs that search a nearest-neighbour index over their embeddings."""

    index: str = flag("gather", INDEX_HELP, one_of(*INDEX_MODES))
    nlist: int | None = flag(None, "--index=ivf: inverted lists (default: ~sqrt(documents))", at_least(1))
    nprobe: int = flag(128, "--index=ivf: lists visited per query (more: higher recall, slower)", at_least(1))
    hnsw_m: int = flag(32, "--index=hnsw: graph neighbours per document", at_least(2))
    ef_search: int = flag(128, "--index=hnsw: search depth (more: higher recall, slower)", at_least(1))
    recall_queries: int = flag(1000, "--index=ivf/hnsw: queries sampled to measure recall@k against exact search",
                               at_least(1), result=False)
    cache_dir: str | None = flag(None, "embeddings and search results cached by content, shared by runs (a sweep "
                                 "re-embeds nothing); default: the run folder's cache/", non_empty, result=False,
                                 path=CACHE_DIR)

    @classmethod
    def canonical_args(cls, args: dict) -> dict:
        """The exact searches (gather, sharded) give the same bytes: both are ``exact``, without the
        approximate indexes' knobs, so a rerun may switch between them; an approximate index counts."""
        args = dict(super().canonical_args(args))
        if args.get("index") in ("gather", "sharded", "exact"):
            args["index"] = "exact"
            for knob in ("nlist", "nprobe", "hnsw_m", "ef_search"):
                args.pop(knob, None)
        return args

    def index_spec(self):
        from .index import IndexSpec

        return IndexSpec(self.index, nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m,
                         ef_search=self.ef_search, seed=self.seed, recall_queries=self.recall_queries)


@dataclass(frozen=True, kw_only=True)
class PairOptions(RunOptions, ModelOptions, IndexOptions):
    """Flags of the verbs that read (query, document) pairs, embed them and search an index."""

    query_key: str = flag("query", "the query text field", non_empty)
    document_key: str = flag("document", "the document text field", non_empty)
    query_prompt: str = flag("", "prefix for queries (e5/bge style, e.g. 'query: '); wins over --query_prompt_name")
    document_prompt: str = flag("", "prefix for documents; wins over --corpus_prompt_name")
    query_prompt_name: str | None = flag(None, "one of the model's own prompts for queries (default: its 'query' "
                                         "prompt if it has one, as encode_query)", non_empty)
    corpus_prompt_name: str | None = flag(None, "one of the model's own prompts for documents (default: its "
                                          "'document'/'passage'/'corpus' prompt, as encode_document)", non_empty)
    query_max_seq_length: int | None = flag(None, "truncate queries to this many tokens (default: --max_seq_length)",
                                            at_least(1))
    document_max_seq_length: int | None = flag(None, "truncate documents to this many tokens (default: "
                                               "--max_seq_length)", at_least(1))
    compress: bool = flag(False, "gzip the merged result (reproducible bytes)")


@dataclass(frozen=True, kw_only=True)
class ResultOptions(Options):
    """Flags of a one-process command that writes named results into a folder it may share with other
    runs (combine, imagenet, embed_images stack): the engine applies the rerun policy to the paths
    :meth:`results` names (:class:`dist_data.core.rundir.Results`)."""

    overwrite: bool = flag(False, "replace a result made with other flags (only what dist_data wrote)", result=False)

    def results(self) -> list[str]:
        """The files and folders the command writes (known from the flags, before anything is read)."""
        raise NotImplementedError

    def inputs_signature(self) -> dict[str, list[int]]:
        """What the inputs looked like (:func:`dist_data.core.paths.inputs_signature`; a folder's files
        below the command's own output folders left out): a complete result is made again when they
        changed, even with the same flags."""
        shared = {os.path.dirname(p) for p in self.results()}  # the folders results are recorded in
        return inputs_signature(self, exclude=output_dirs(self) + self.results()
                                + [os.path.join(f, n) for f in shared for n in (MANIFEST, CARD)])
