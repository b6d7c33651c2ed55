"""Texts per second per GPU: dist_data's embedding (token-budget batches in blocks) against
``SentenceTransformer.encode`` and the bare model forward, for all-MiniLM-L6-v2 and a base-size
encoder, in float16.

    python bench/gpu_embed.py texts --path=texts.jsonl.gz          # WordNet's glosses (where WordNet is)
    python bench/gpu_embed.py run --texts_path=texts.jsonl.gz      # on the GPU machine

Each model is timed three ways on the same texts, in one process, after a warm-up:

- ``st.encode``: ``SentenceTransformer.encode(texts, batch_size=B)``, what a user would otherwise run
  (it sorts all texts by length, then cuts batches of ``B`` rows);
- ``dist_data``: :class:`dist_data.core.embed.BlockEmbedder` as the pipelines run it: blocks of
  ``8 B`` rows in input order (so the vectors do not depend on the number of ranks), each cut into
  batches of at most ``--batch_tokens`` padded tokens, longest first; and the same blocks with
  ``B``-row batches, to show what the token budget buys;
- ``floor``: the model's forward pass alone on batches tokenised beforehand (no tokenising, no
  copies back), the cost no embedding tool can go below.

The base-size encoder is BERT-base's shape (12 layers, 768 wide, 110M parameters) with random,
seeded weights and MiniLM's tokenizer: throughput does not depend on the weights, and nothing is
downloaded. Prints a table and writes bench/results/gpu_embed.json.
"""

from __future__ import annotations

import gzip
import json
import os
import time

from common import write_report


def texts(path: str) -> str:
    """WordNet's glosses (definitions, examples): real English of varied length, one JSON string a line."""
    from dist_data.text.wordnet import iter_synsets

    with gzip.open(path, "wt", encoding="utf-8") as out:
        for s in iter_synsets():
            for t in [s.definition, *s.examples]:
                out.write(json.dumps(t) + "\n")
    return path


def base_model(path: str, seed: int = 0) -> str:
    """A sentence-transformers folder: BERT-base's shape, seeded random weights, MiniLM's tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dist_data.core.models import resolve_model

    if os.path.exists(os.path.join(path, "modules.json")):
        return path
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size))  # the defaults are bert-base's
    bert.save_pretrained(path + ".bert")
    tokenizer.save_pretrained(path + ".bert")
    word = Transformer(path + ".bert", max_seq_length=256)
    SentenceTransformer(modules=[word, Pooling(768, "mean"), Normalize()], device="cpu").save(path)
    return path


def _read(path: str, n: int) -> list[str]:
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        out = [json.loads(line) for _, line in zip(range(n), f)]
    return out


def _timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(name: str, path: str, texts_: list[str], dtype: str, batch_size: int, batch_tokens: int,
            device) -> list[dict]:
    import numpy as np
    import torch

    from dist_data.core.embed import BATCHES_PER_BLOCK, BlockEmbedder, load_model, spec_for, token_lengths

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = load_model(path, device, dtype)
    n_tokens = int(token_lengths(model, texts_).sum())
    block = BATCHES_PER_BLOCK * batch_size

    def ours(tokens: int):
        embedder = BlockEmbedder(model, spec_for(model, path, None, "", dtype, batch_size, batch_tokens=tokens), None)
        return lambda: [embedder.embed(texts_[s : s + block], f"b{s}") for s in range(0, len(texts_), block)]

    def st_encode():
        return model.encode(texts_, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    order = np.argsort([-len(t) for t in texts_], kind="stable")
    features = []
    for s in range(0, len(texts_), batch_size):
        f = model.tokenize([texts_[i] for i in order[s : s + batch_size]])
        features.append({k: v.to(device) if hasattr(v, "to") else v for k, v in f.items()})

    def floor():
        with torch.inference_mode():
            for f in features:
                model.forward(dict(f))

    runs = {"floor (forward only)": floor, "st.encode": st_encode,
            f"dist_data, {batch_size}-row batches": ours(0), f"dist_data, {batch_tokens}-token batches": ours(batch_tokens)}
    for fn in runs.values():  # warm-up: kernels, the allocator, the tokenizer
        fn()
    rows = []
    for label, fn in runs.items():
        seconds = min(_timed(fn, sync) for _ in range(2))
        rows.append({"model": name, "dtype": dtype, "method": label, "texts": len(texts_), "seconds": round(seconds, 3),
                     "texts_per_s": round(len(texts_) / seconds), "tokens_per_s": round(n_tokens / seconds)})
    ref = st_encode()
    got = np.concatenate(ours(batch_tokens)())
    rows[-1]["min_cosine_vs_st_encode"] = round(float((ref * got).sum(1).min()), 5)
    del model, features
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(texts_path: str, n: int = 100_000, batch_size: int = 256, batch_tokens: int = 32768,
         dtype: str = "float16", work: str = "/tmp/gpu-embed", device: str = "cuda") -> None:
    import torch

    from dist_data.core.models import resolve_model

    data = _read(texts_path, n)
    device = torch.device(device, 0) if device == "cuda" else torch.device(device)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    rows = []
    for name, path in (("all-MiniLM-L6-v2", resolve_model(None)), ("BERT-base shape (110M)", base_model(work + "/base"))):
        rows += measure(name, path, data, dtype, batch_size, batch_tokens, device)
    print(f"\n{len(data):,} WordNet glosses, {dtype}, {gpu}, batch_size {batch_size}, batch_tokens {batch_tokens}\n")
    print("| model | method | texts/s | tokens/s | vs floor |")
    print("|---|---|---|---|---|")
    for r in rows:
        floor = next(x for x in rows if x["model"] == r["model"] and x["method"].startswith("floor"))
        r["vs_floor"] = round(floor["seconds"] / r["seconds"], 2)
        print(f"| {r['model']} | {r['method']} | {r['texts_per_s']:,} | {r['tokens_per_s']:,} | {r['vs_floor']:.2f} |")
    print("report:", write_report("gpu_embed", {"gpu": gpu, "torch": torch.__version__, "rows": rows,
                                                "batch_size": batch_size, "batch_tokens": batch_tokens}))


if __name__ == "__main__":
    import fire

    fire.Fire({"run": main, "texts": texts})
