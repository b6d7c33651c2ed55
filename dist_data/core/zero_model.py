"""The registered zero-cost encoder (``--model_name=builtin:zero-cost``): everything but the model.

It tokenises as all-MiniLM-L6-v2 does (its tokenizer, its 256-token length) and returns a 384-d
vector per text at once: the sum of the shipped model's token embeddings of the text's first two
word pieces (two rows looked up per text; no layer, no per-token work). Texts that start alike get
close vectors, so searches, ties and selections behave as on real data, while the forward costs
nothing next to the host's work: reading, hashing, tokenising, batching, cache files, exchanges and
writing. ``bench/host_overhead.py`` measures the host with it; it is not a model to train with.
"""

from __future__ import annotations

from typing import Any

import torch

from .models import resolve_model

class ZeroCostEncoder(torch.nn.Module):
    """A sentence-transformers module: ``features["sentence_embedding"]`` from two table rows."""

    plain_stack = True  # BlockEmbedder runs its forward itself on token-budget batches

    def __init__(self, tokenizer: Any, table: torch.Tensor, max_seq_length: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = features["input_ids"]
        second = ids[:, 2] if ids.shape[1] > 2 else ids[:, -1]
        features["sentence_embedding"] = self.table[ids[:, 1]] + self.table[second]
        return features

    def tokenize(self, texts: list[str], **_: Any) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                              return_tensors="pt")

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.table.shape[1])

    def get_embedding_dimension(self) -> int:
        return int(self.table.shape[1])


def load(device: torch.device):
    """The encoder as a SentenceTransformer on ``device`` (built from the shipped MiniLM's files)."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer
    import glob
    import os

    path = resolve_model(None)
    weights = next(iter(glob.glob(os.path.join(path, "**", "model.safetensors"), recursive=True)))
    table = next(v for k, v in load_file(weights).items() if k.endswith("word_embeddings.weight"))
    module = ZeroCostEncoder(AutoTokenizer.from_pretrained(path), table.float(), 256)
    return SentenceTransformer(modules=[module], device=str(device))
