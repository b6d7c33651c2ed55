"""Data and model for the scale benchmark: WordNet recombined into N distinct pairs, and a seeded
tiny random encoder (cheap to run, so the stages after embedding show).

    python bench/scale_data.py pairs --n=100000 --path=/tmp/pairs.jsonl
    python bench/scale_data.py model --path=/tmp/tiny-model
"""

from __future__ import annotations

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pairs(n: int, path: str, seed: int = 0) -> str:
    """``n`` pairs ``{query, document}``: query = lemmas of two synsets, document = their two
    definitions. Real English on both sides, related as a retrieval pair is; 117k synsets give
    ~10^10 combinations, so a million pairs are nearly all distinct (repeats are real duplicates)."""
    from dist_data.text.wordnet import iter_synsets

    synsets = [s for s in iter_synsets() if len(s.definition) >= 3]
    rng = random.Random(seed)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        for _ in range(n):
            a, b = rng.choice(synsets), rng.choice(synsets)
            out.write(json.dumps({"query": f"{rng.choice(a.lemmas)} {rng.choice(b.lemmas)}",
                                  "document": f"{a.definition}; {b.definition}"}) + "\n")
    os.replace(tmp, path)
    return path


def model(path: str, seed: int = 0, hidden: int = 64, layers: int = 1) -> str:
    """A sentence-transformers folder: a ``layers``-layer BERT of width ``hidden`` with the shipped
    MiniLM tokenizer, mean pooling, normalised. Its token embeddings are MiniLM's projected to
    ``hidden`` dimensions by a seeded random matrix (so that its vectors carry lexical meaning and
    cluster as real embeddings do: an index's recall on purely random vectors says little); the
    rest is randomly initialised (seeded)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dist_data.core.models import resolve_model

    if os.path.exists(os.path.join(path, "modules.json")):
        return path
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)
    bert = BertModel(config)
    source = SentenceTransformer(resolve_model(None), device="cpu")[0].auto_model.embeddings.word_embeddings.weight
    projection = torch.randn(source.shape[1], hidden, generator=torch.Generator().manual_seed(seed)) / hidden ** 0.5
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight.copy_(source @ projection)
    bert_dir = path + ".bert"
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    word = Transformer(bert_dir, max_seq_length=32)
    st = SentenceTransformer(modules=[word, Pooling(hidden, "mean"), Normalize()], device="cpu")
    st.save(path)
    return path


if __name__ == "__main__":
    import fire

    fire.Fire({"pairs": pairs, "model": model})
