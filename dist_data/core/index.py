"""Nearest-neighbour search behind one interface; faiss is hidden here.

- CPU: faiss ``IndexFlatIP`` (exact inner product).
- GPU with faiss-gpu: the same index moved to this rank's GPU.
- GPU without faiss-gpu (or when it fails): a chunked torch matmul + top-k, no cap on k.

Candidates from the index are rescored exactly (float64, :func:`select.exact_scores`) and put in
canonical order, so ``gather`` and ``sharded`` give the same neighbours. The index returns
``TIE_SLACK`` more candidates than asked, so float32 rounding inside faiss cannot push a true
top-k neighbour out of the list.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Callable

import numpy as np
import torch

from . import distributed
from .log import logger
from .select import PAD_ID, canonical_topk, exact_scores, merge_topk

TIE_SLACK = 16
SEARCH_BATCH = 4096
DB_CHUNK = 1 << 20
FAISS_GPU_MAX_K = 2048


_NOTICED = []


def _faiss():
    """The faiss module, or None (then the torch search path runs, with a notice once per process)."""
    try:
        import faiss
    except ImportError:
        if not _NOTICED:
            _NOTICED.append(True)
            logger.warning("faiss is not installed: searching with torch matmul + top-k (exact, slower on CPU); "
                           "`pip install faiss-cpu` or faiss-gpu as in INSTALL_FAISS.md for the faiss index")
        return None
    return faiss


class FlatIndex:
    """Exact inner-product search over ``(m, d) float32`` vectors, on this rank's device."""

    def __init__(self, vectors: np.ndarray, device: torch.device, fp16: bool = False):
        self.ntotal, self.dim = vectors.shape
        self.backend = "faiss-cpu"
        self._torch_vectors = None
        self._vectors, self._device, self._fp16 = vectors, device, fp16
        faiss = _faiss()
        if device.type == "cuda" or faiss is None:
            if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
                try:
                    self._index = faiss.IndexFlatIP(self.dim)
                    opts = faiss.GpuClonerOptions()
                    opts.useFloat16 = fp16
                    self._res = faiss.StandardGpuResources()
                    self._index = faiss.index_cpu_to_gpu(self._res, device.index or 0, self._index, opts)
                    self._index.add(vectors)
                    self.backend = "faiss-gpu"
                    return
                except Exception as e:  # noqa: BLE001 - fall back, but say so
                    logger.warning("faiss-gpu failed (%s); using torch matmul search on %s", e, device)
            half = fp16 and device.type == "cuda"
            self._torch_vectors = torch.from_numpy(vectors).to(device, torch.float16 if half else torch.float32)
            self.backend = "torch-gpu" if device.type == "cuda" else "torch-cpu"
            return
        self._index = faiss.IndexFlatIP(self.dim)
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``(n, k) int64`` candidate rows (approximate order; ``-1`` where fewer than k exist)."""
        k_eff = min(k, self.ntotal)
        out = np.full((queries.shape[0], k), PAD_ID, dtype=np.int64)
        if k_eff == 0 or queries.shape[0] == 0:
            return out
        if self.backend == "faiss-gpu" and k_eff > FAISS_GPU_MAX_K and self._torch_vectors is None:
            logger.warning("k=%d is above faiss-gpu's limit of %d; searching with torch matmul", k_eff, FAISS_GPU_MAX_K)
            self._torch_vectors = torch.from_numpy(self._vectors).to(
                self._device, torch.float16 if self._fp16 else torch.float32)
        if self._torch_vectors is not None:
            q = torch.from_numpy(np.ascontiguousarray(queries)).to(self._torch_vectors.device, self._torch_vectors.dtype)
            best_s = best_i = None
            # The database is visited in chunks with a running top-k, so memory stays bounded.
            for s in range(0, self.ntotal, DB_CHUNK):
                scores = (q @ self._torch_vectors[s : s + DB_CHUNK].T).float()
                top_s, top_i = torch.topk(scores, min(k_eff, scores.shape[1]), dim=1)
                top_i += s
                if best_s is not None:
                    top_s, pick = torch.topk(torch.cat([best_s, top_s], 1), k_eff, dim=1)
                    top_i = torch.gather(torch.cat([best_i, top_i], 1), 1, pick)
                best_s, best_i = top_s, top_i
            out[:, :k_eff] = best_i.cpu().numpy()
            return out
        _, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k_eff)
        out[:, :k_eff] = ids
        return out


def topk_against(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, index: FlatIndex,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top-``k`` ``(scores float64, ids)`` of ``query_emb`` among ``doc_emb`` (ids ``doc_ids``)."""
    cand = index.search(query_emb, k + TIE_SLACK)
    scores = exact_scores(query_emb, doc_emb, cand)
    ids = np.where(cand >= 0, doc_ids[np.maximum(cand, 0)] if len(doc_ids) else PAD_ID, PAD_ID)
    return canonical_topk(scores, ids, k)


def search(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, k: int, mode: str,
           device: torch.device, fp16: bool = False,
           on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-``k`` documents for this rank's queries, over the documents of all ranks.

    Args:
        query_emb: ``(n, d) float32`` this rank's queries.
        doc_emb: ``(m, d) float32`` this rank's documents; doc_ids: ``(m,) int64`` their global ids.
        mode: ``"gather"`` — all-gather the documents into one index on every rank;
            ``"sharded"`` — each rank indexes its own documents, queries visit every shard and the
            per-shard top-k lists are merged.

    Returns:
        ``(scores (n, k) float64, ids (n, k) int64, timings)`` in canonical order; timings holds
        ``backend`` and ``index_seconds`` (gathering the documents and building the index).
    """
    if mode not in ("gather", "sharded"):
        raise ValueError(f"index mode must be 'gather' or 'sharded', got {mode!r}")
    world = distributed.get_world_size()
    start = time.perf_counter()
    if mode == "gather" or world == 1:
        all_emb = distributed.all_gather_array(doc_emb)
        all_ids = distributed.all_gather_array(doc_ids)
        index = FlatIndex(all_emb, device, fp16)
        timings = {"backend": index.backend, "index_seconds": round(time.perf_counter() - start, 4)}
        if device.type != "cuda" and distributed.get_rank() == 0:
            logger.info("index: %s exact inner product over %d documents (no CUDA device: CPU search)",
                        index.backend, index.ntotal)
        results = []
        for s in range(0, query_emb.shape[0], SEARCH_BATCH):
            results.append(topk_against(query_emb[s : s + SEARCH_BATCH], all_emb, all_ids, index, k))
            if on_progress:
                on_progress(min(SEARCH_BATCH, query_emb.shape[0] - s))
        if not results:
            return np.zeros((0, k)), np.full((0, k), PAD_ID, dtype=np.int64), timings
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), timings

    index = FlatIndex(doc_emb, device, fp16)
    timings = {"backend": index.backend, "index_seconds": round(time.perf_counter() - start, 4)}
    rank = distributed.get_rank()
    n_batches = distributed.all_reduce_max(-(-query_emb.shape[0] // SEARCH_BATCH))
    out_scores, out_ids = [], []
    for b in range(n_batches):
        mine = query_emb[b * SEARCH_BATCH : (b + 1) * SEARCH_BATCH]
        # Every rank's batch b visits every shard: one gather of queries, one of results.
        counts = distributed.all_gather_object(mine.shape[0])
        all_q = distributed.all_gather_array(mine)
        local_scores, local_ids = topk_against(all_q, doc_emb, doc_ids, index, k)
        gathered_scores = distributed.all_gather_array(local_scores)
        gathered_ids = distributed.all_gather_array(local_ids)
        total = sum(counts)
        start = sum(counts[:rank])
        parts = [(gathered_scores[r * total + start : r * total + start + counts[rank]],
                  gathered_ids[r * total + start : r * total + start + counts[rank]]) for r in range(world)]
        scores, ids = merge_topk(parts, k)
        out_scores.append(scores)
        out_ids.append(ids)
        if on_progress:
            on_progress(mine.shape[0])
    if not out_scores:
        return np.zeros((0, k)), np.full((0, k), PAD_ID, dtype=np.int64), timings
    return np.concatenate(out_scores), np.concatenate(out_ids), timings


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def cached_search(cache_dir: str | None, query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, k: int,
                  mode: str, device: torch.device, fp16: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`search`, its results kept under ``cache_dir/search/`` by content: the vectors of this
    rank's queries and of every rank's documents, the mode and the world. A later run with the
    same vectors and at most the same ``k`` (a sweep over margins, ranges or sampling) reads them
    back instead of searching; the canonical top-k is a prefix of a longer canonical list.
    ``timings["cached"]`` says whether every rank read its results back.
    """
    from .io import save_npz

    if not cache_dir:
        return search(query_emb, doc_emb, doc_ids, k, mode, device, fp16, on_progress)
    docs = "".join(distributed.all_gather_object(_digest(doc_emb, doc_ids)))
    key = _digest(np.frombuffer(f"{mode} {fp16} {distributed.get_world_size()} {distributed.get_rank()} {docs}"
                                .encode(), dtype=np.uint8), query_emb)
    folder = os.path.join(cache_dir, "search")
    found = None
    for path in sorted(glob.glob(os.path.join(folder, f"{key}-k*.npz"))):
        stored_k = int(path.rsplit("-k", 1)[1].split(".")[0])
        if stored_k >= k and (found is None or stored_k < found[0]):
            found = (stored_k, path)
    if all(distributed.all_gather_object(found is not None)):  # a collective: every rank reads, or every rank searches
        with np.load(found[1]) as z:
            scores, ids = z["scores"][:, :k], z["ids"][:, :k]
        if on_progress:
            on_progress(len(query_emb))
        return scores, ids, {"backend": "cache", "index_seconds": 0.0, "cached": True}
    scores, ids, timings = search(query_emb, doc_emb, doc_ids, k, mode, device, fp16, on_progress)
    os.makedirs(folder, exist_ok=True)
    save_npz(os.path.join(folder, f"{key}-k{k}.npz"), scores=scores, ids=ids)
    return scores, ids, {**timings, "cached": False}
