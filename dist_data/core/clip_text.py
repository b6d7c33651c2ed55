"""A CLIP text tower (open_clip) behind the interface the block embedder uses.

``open_clip:ARCH`` creates the architecture (open_clip's registry), ``open_clip:local-dir:PATH`` a
folder with ``open_clip_config.json`` (and weights), ``open_clip:hf-hub:ORG/NAME`` a hub model;
weights come from ``--checkpoint`` (a local state dict or open_clip weights file), the folder, or
an open_clip pretrained tag (``open_clip:ViT-L-14/openai``, needs the hub). Texts are tokenised by
the tower's own tokenizer (CLIP's BPE, 77 tokens, truncated with the end token kept), as OpenAI's
``clip.tokenize(..., truncate=True)``. Only the text tower runs; the image tower is never called.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .compat import prepare_torchvision
from .errors import InputError
from .log import logger

PREFIX = "open_clip:"


class OpenClipText:
    """``encode(texts, ...)`` -> ``(n, d) float32`` text features, like ``SentenceTransformer.encode``."""

    def __init__(self, model, tokenizer, name: str, device: torch.device):
        self.model, self.tokenizer, self.name, self.device = model, tokenizer, name, device
        self.max_seq_length = int(getattr(tokenizer, "context_length", 77) or 77)

    def __iter__(self):  # the parts that define a vector (the embedding cache key names them)
        yield self.model

    def get_sentence_embedding_dimension(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        with torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])

    def encode(self, texts: Sequence[str], batch_size: int = 64, prompt: str | None = None,
               normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        del convert_to_numpy, show_progress_bar  # always numpy, never a bar (the caller has one)
        texts = [(prompt or "") + t for t in texts]
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[s : s + batch_size]).to(self.device)
                features = self.model.encode_text(tokens).float()
                if normalize_embeddings:
                    features = torch.nn.functional.normalize(features, dim=-1)
                out.append(features.cpu().numpy())
        dim = self.get_sentence_embedding_dimension() if not out else out[0].shape[1]
        return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)


def load_open_clip_text(model_name: str, checkpoint: str | None, device: torch.device) -> OpenClipText:
    """The text tower ``model_name`` (``open_clip:...``) names, in eval mode on ``device``.

    Raises:
        InputError: unknown architecture, weights that cannot be loaded.
    """
    prepare_torchvision()
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("a CLIP text tower needs open_clip: pip install 'dist_data[captions]'") from e
    spec = model_name[len(PREFIX):]
    schema = spec.split(":", 1)[0] if spec.startswith(("local-dir:", "hf-hub:")) else None
    arch, tag = (spec, None) if schema else (spec.partition("/")[0], spec.partition("/")[2] or None)
    if schema is None and arch not in open_clip.list_models():
        raise InputError(f"--model_name {model_name}: unknown open_clip architecture {arch!r} "
                         f"(open_clip.list_models(), or open_clip:local-dir:PATH)")
    try:
        model = open_clip.create_model(arch, pretrained=checkpoint or tag, device=str(device))
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:  # noqa: BLE001 - offline hub, unknown tag, a checkpoint that does not fit: one line
        raise InputError(f"--model_name {model_name}: could not be created with weights "
                         f"{checkpoint or tag or '(from the folder)'} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not (checkpoint or tag or schema):
        logger.warning("%s has no --checkpoint and no pretrained tag: random weights", model_name)
    model.eval()
    return OpenClipText(model, tokenizer, model_name, device)
