"""Inference backends on this machine: texts/s and agreement with torch's own ``encode``.

    python bench/backends.py                      # 4,000 WordNet pairs, all-MiniLM-L6-v2 and a base-size shape
    python bench/backends.py --n_pairs=1000 --models=minilm

For each model, side by side in one process on the same texts (the pairs' queries and documents):

- ``encode (torch)``: sentence-transformers' ``encode_query`` / ``encode_document``, ``batch_size=64``:
  the reference a user would otherwise pick;
- ``dist_data (torch)``: the engine's embedding (:class:`dist_data.core.embed.BlockEmbedder`) with
  ``--batch_tokens`` (the fast path: own tokens, token-budget batches, the next block tokenised on a
  thread);
- ``floor``: the bare model forward over the same token-budget batches, tokenised and padded
  beforehand (what no host work can beat);
- ``onnx``, ``onnx int8``, ``openvino``, ``openvino int8``: sentence-transformers' own backends
  (``backend=...``; int8 by ``export_dynamic_quantized_onnx_model`` /
  ``export_static_quantized_openvino_model``), when they can be loaded; else the row says why.

Each row: texts/s, the lowest cosine of its vectors to torch's ``encode`` ones, and the agreement
of ``filter``'s kept set (k=2: document i among the 2 nearest of query i, brute force) with the
kept set of torch's vectors. The "base" model is BERT-base's shape (12 layers, 768 wide) with
seeded random weights and MiniLM's tokenizer: its speed is a base model's, its vectors are not
meaningful (agreement is still measured: it shows the backend's numerics). Writes
bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import make_pairs, write_report  # noqa: E402


def _base_shape(folder: str) -> str:
    """A BERT-base-shaped sentence-transformers model (random weights, seeded) with MiniLM's tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dist_data.core.models import resolve_model

    if os.path.isdir(os.path.join(folder, "st")):
        return os.path.join(folder, "st")
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(os.path.join(folder, "hf"))
    AutoTokenizer.from_pretrained(resolve_model(None)).save_pretrained(os.path.join(folder, "hf"))
    modules = [Transformer(os.path.join(folder, "hf"), max_seq_length=256), Pooling(768, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(os.path.join(folder, "st"))
    return os.path.join(folder, "st")


def kept(queries: np.ndarray, documents: np.ndarray, k: int = 2) -> np.ndarray:
    """filter's rule by brute force: pair i kept iff document i is among the k nearest of query i."""
    scores = queries @ documents.T
    own = np.diag(scores)
    return (scores > own[:, None]).sum(axis=1) < k


def measure(name: str, encode_q, encode_d, queries, documents, reference) -> dict:
    start = time.perf_counter()
    q, d = encode_q(queries), encode_d(documents)
    seconds = time.perf_counter() - start
    row = {"backend": name, "texts_per_s": round((len(queries) + len(documents)) / seconds, 1),
           "seconds": round(seconds, 2)}
    if reference is not None:
        cos = np.concatenate([(q * reference[0]).sum(1), (d * reference[1]).sum(1)])
        row["min_cosine"] = round(float(cos.min()), 6)
        row["kept_agreement_pct"] = round(100.0 * float((kept(q, d) == kept(*reference)).mean()), 2)
    return row, (q, d)


def bench_model(label: str, path: str, queries: list[str], documents: list[str], budget: int) -> list[dict]:
    import torch
    from sentence_transformers import SentenceTransformer

    from dist_data.core.embed import (BlockEmbedder, _token_ids, embed_by_block, load_model, padded_batches,
                                      resolve_prompt, spec_for)

    rows = []
    ref = SentenceTransformer(path, device="cpu").float().eval()
    enc = dict(batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    row, reference = measure("encode (torch)", lambda t: ref.encode_query(t, **enc),
                             lambda t: ref.encode_document(t, **enc), queries, documents, None)
    row.update(min_cosine=1.0, kept_agreement_pct=100.0)
    rows.append(row)

    model = load_model(path, torch.device("cpu"))
    embedders = {role: BlockEmbedder(model, spec_for(model, path, None, resolve_prompt(model, None, None, role, "p"),
                                                     "float32", 64, role=role, batch_tokens=budget), None)
                 for role in ("query", "document")}
    assert all(e.fast for e in embedders.values())

    def ours(role):
        return lambda t: embed_by_block(embedders[role], np.arange(len(t)), t, 512, role)

    rows.append(measure("dist_data (torch)", ours("query"), ours("document"), queries, documents, reference)[0])

    def floor_of(texts):  # tokenised and padded before the clock starts
        batches = [padded_batches(model, _token_ids(model, texts[s:s + 512]), budget) for s in range(0, len(texts), 512)]

        def run(_):
            out = []
            with torch.inference_mode():
                for block in batches:
                    for batch in block:
                        rows_ = batch.pop("rows") if "rows" in batch else None
                        emb = torch.nn.functional.normalize(model.forward(dict(batch))["sentence_embedding"], dim=-1)
                        out.append((rows_, emb))
                        if rows_ is not None:
                            batch["rows"] = rows_
            return np.zeros((len(texts), 1), dtype=np.float32)  # the time only
        return run

    fq, fd = floor_of(queries), floor_of(documents)
    row = measure("floor (bare forward)", fq, fd, queries, documents, None)[0]
    rows.append(row)

    for backend, quantize in (("onnx", False), ("onnx", True), ("openvino", False), ("openvino", True)):
        name = backend + (" int8" if quantize else "")
        try:
            other = SentenceTransformer(path, device="cpu", backend=backend)
            if quantize:
                from sentence_transformers import (export_dynamic_quantized_onnx_model,
                                                   export_static_quantized_openvino_model)

                with tempfile.TemporaryDirectory() as tmp:
                    other.save(tmp)
                    if backend == "onnx":
                        export_dynamic_quantized_onnx_model(other, "avx2", tmp)
                        file_name = "onnx/model_qint8_avx2.onnx"
                    else:
                        export_static_quantized_openvino_model(other, None, tmp)
                        file_name = "openvino/openvino_model_qint8_quantized.xml"
                    other = SentenceTransformer(tmp, device="cpu", backend=backend,
                                                model_kwargs={"file_name": file_name})
            rows.append(measure(name, lambda t: other.encode_query(t, **enc), lambda t: other.encode_document(t, **enc),
                                queries, documents, reference)[0])
        except Exception as e:  # noqa: BLE001 - the reason is the row
            text = str(e).strip()
            rows.append({"backend": name, "unavailable": (text.splitlines()[0] if text else type(e).__name__)[:200]})
    floor = next(r for r in rows if r["backend"].startswith("floor"))["texts_per_s"]
    for r in rows:
        r["model"] = label
        if "texts_per_s" in r:
            r["x_floor"] = round(r["texts_per_s"] / floor, 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_pairs", type=int, default=4000)
    parser.add_argument("--models", default="minilm,base")
    parser.add_argument("--batch_tokens", type=int, default=1024)  # a CPU budget (8192 pads too wide here)
    args = parser.parse_args()
    import dist_data.core.compat  # noqa: F401 - the torchvision workaround before transformers
    import torch

    from dist_data.core.models import resolve_model

    work = tempfile.mkdtemp(prefix="bench_backends_")
    make_pairs(args.n_pairs, os.path.join(work, "pairs.jsonl"))
    pairs = [json.loads(line) for line in open(os.path.join(work, "pairs.jsonl"))]
    queries, documents = [p["query"] for p in pairs], [p["document"] for p in pairs]
    models = {"minilm": resolve_model(None), "base": None}
    rows = []
    for label in args.models.split(","):
        path = models[label] or _base_shape(os.path.join(work, "base"))
        rows += bench_model(label, path, queries, documents, args.batch_tokens)
    print(f"\nbackends: {len(queries):,} queries + {len(documents):,} documents, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}")
    print("| model | backend | texts/s | x floor | min cosine to encode | kept-set agreement % |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "unavailable" in r:
            print(f"| {r['model']} | {r['backend']} | unavailable: {r['unavailable']} | | | |")
        else:
            print(f"| {r['model']} | {r['backend']} | {r['texts_per_s']:,.0f} | {r['x_floor']:.2f} | "
                  f"{r.get('min_cosine', '')} | {r.get('kept_agreement_pct', '')} |")
    print("wrote", write_report("backends", {"n_pairs": args.n_pairs, "batch_tokens": args.batch_tokens,
                                             "rows": rows}))


if __name__ == "__main__":
    main()
