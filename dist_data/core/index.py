"""Nearest-neighbour search behind one interface; faiss is hidden here.

Layouts (``IndexSpec.mode``):

- ``gather``: every rank all-gathers the documents into one exact index (O(N) memory per rank).
- ``sharded``: each rank indexes its own documents exactly; every query visits every shard and the
  per-shard top-k lists are merged (O(N / world) memory per rank). Same result as ``gather``.
- ``ivf``: ``sharded`` with a faiss IVF index per rank instead of the flat one: spherical k-means
  lists holding 4-bit PQ codes (fast scan: d/2 bytes a vector), whose ``REFINE`` x k best
  candidates are re-ranked with the rank's float32 vectors. Lists and codes are trained once, on
  a seeded sample of the documents that does not depend on the number of ranks, and shared, so a
  query probes the same lists and sees the same codes whatever the world size: the result is the
  same for any number of ranks.
- ``hnsw``: ``sharded`` with a faiss HNSW graph per rank (CPU). Each graph depends on its shard,
  so the candidates (and the recall) may differ with the number of ranks.

Exact indexes: faiss ``IndexFlatIP`` on CPU; on GPU with faiss-gpu the same index on this rank's
GPU; on GPU without faiss-gpu (or when it fails), a torch matmul + top-k on the device, no cap on
k: a batch of queries against every vector in one product when the scores fit in a quarter of the
free memory, and the candidates rescored exactly there too (float64 on the grid), so only the
final lists cross to the host.
The approximate ones report recall@k measured against exact search on a seeded sample of queries.

Candidates from the index are rescored exactly (float64, :func:`select.exact_scores`) and put in
canonical order, so ``gather`` and ``sharded`` give the same neighbours. The index returns
``TIE_SLACK`` more candidates than asked, so float32 rounding inside faiss cannot push a true
top-k neighbour out of the list.
"""

from __future__ import annotations

import glob
import os
import time
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from . import distributed
from .log import logger
from .select import PAD_ID, SCORE_GRID, canonical_topk, exact_scores, merge_topk, seeded_uniform

TIE_SLACK = 16
SEARCH_BATCH = 4096
SCORE_ELEMENTS = 1 << 26  # the torch search's (queries x documents) score block on CPU: 256 MB of float32
MAX_DEVICE_BATCH = 1 << 16  # queries in one device search
DEVICE_RESCORE_ELEMENTS = 1 << 27  # float64 candidate vectors rescored at once on the device (1 GiB)
FAISS_GPU_MAX_K = 2048
MODES = ("gather", "sharded", "ivf", "hnsw")
TRAIN_POINTS_PER_LIST = 40  # k-means sample size per IVF list (faiss warns below 39)
IVF_MIN_DOCUMENTS = 16  # 4-bit PQ codes have 16 centroids per sub-quantizer: faiss trains them on at least 16 vectors
REFINE = 4  # IVF: candidates by compressed score per neighbour wanted, re-ranked in float32


@dataclass(frozen=True)
class IndexSpec:
    """Which index, and its knobs (the approximate ones only read theirs)."""

    mode: str = "gather"
    nlist: int | None = None  # IVF lists (default: ~sqrt(documents))
    nprobe: int = 128  # IVF lists visited per query
    hnsw_m: int = 32  # HNSW neighbours per node
    ef_search: int = 128  # HNSW search depth (at least k + TIE_SLACK)
    seed: int = 0  # the k-means sample and the recall sample
    recall_queries: int = 1000  # queries whose approximate top-k is compared with the exact one

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"index mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def approximate(self) -> bool:
        return self.mode in ("ivf", "hnsw")

    def key(self) -> str:
        """What the results depend on (the search cache key)."""
        if self.mode == "ivf":
            return f"ivf nlist={self.nlist} nprobe={self.nprobe} seed={self.seed}"
        if self.mode == "hnsw":
            return f"hnsw m={self.hnsw_m} ef={self.ef_search}"
        return self.mode


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

    def __init__(self, vectors: np.ndarray, device: torch.device, fp16: bool = False, use_torch: bool = False):
        self.ntotal, self.dim = vectors.shape
        self.backend = "faiss-cpu"
        self._torch_vectors = None
        self._vectors, self._device, self._fp16 = vectors, device, fp16
        faiss = None if use_torch else _faiss()
        if device.type == "cuda" or faiss is None:
            if faiss is not None and _has_gpu(faiss):
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
            self._exact = torch.from_numpy(vectors).to(device, torch.float32)  # rescoring: the float32 vectors
            self._torch_vectors = self._exact.half() if half else self._exact
            self.backend = "torch-gpu" if device.type == "cuda" else "torch-cpu"
            return
        self._index = faiss.IndexFlatIP(self.dim)
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def on_device(self) -> bool:
        """Candidates found and rescored where the vectors are (:meth:`search_exact`)."""
        return self._torch_vectors is not None

    def query_batch(self) -> int:
        """Queries searched at once: :data:`SEARCH_BATCH`, more on a device whose memory holds
        their scores against every vector (fewer, larger matrix products)."""
        if not self.on_device:
            return SEARCH_BATCH
        return int(min(MAX_DEVICE_BATCH, max(SEARCH_BATCH, _score_elements(self._device) // max(self.ntotal, 1))))

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``(n, k) int64`` candidate rows (approximate order; ``-1`` where fewer than k exist)."""
        k_eff = min(k, self.ntotal)
        out = np.full((queries.shape[0], k), PAD_ID, dtype=np.int64)
        if k_eff == 0 or queries.shape[0] == 0:
            return out
        if self.backend == "faiss-gpu" and k_eff > FAISS_GPU_MAX_K and self._torch_vectors is None:
            logger.warning("k=%d is above faiss-gpu's limit of %d; searching with torch matmul", k_eff, FAISS_GPU_MAX_K)
            self._exact = torch.from_numpy(self._vectors).to(self._device, torch.float32)
            self._torch_vectors = self._exact.half() if self._fp16 else self._exact
        if self._torch_vectors is not None:
            out[:, :k_eff] = self._device_topk(self._to_device(queries), k_eff).cpu().numpy()
            return out
        _, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k_eff)
        out[:, :k_eff] = ids
        return out

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float64, rows (n, k) int64)``: the ``k`` best rows of each query by the
        device's product, rescored exactly on the device (:func:`select.exact_scores`' grid, where
        every operation is exact: the same bits as on the host). Only the device path."""
        k_eff = min(k, self.ntotal)
        scores = np.full((queries.shape[0], k), -np.inf)
        rows = np.full((queries.shape[0], k), PAD_ID, dtype=np.int64)
        if k_eff and queries.shape[0]:
            q = self._to_device(queries)
            cand = self._device_topk(q, k_eff)
            q_grid = _on_grid(torch.from_numpy(np.ascontiguousarray(queries)).to(q.device))
            exact = torch.empty(cand.shape, dtype=torch.float64, device=q.device)
            step = max(1, DEVICE_RESCORE_ELEMENTS // max(k_eff * self.dim, 1))
            for s in range(0, len(cand), step):  # bounded memory: (step, k, d) float64 at a time
                d_grid = _on_grid(self._exact[cand[s : s + step]])
                exact[s : s + step] = torch.bmm(d_grid, q_grid[s : s + step, :, None])[:, :, 0] * SCORE_GRID**2
            scores[:, :k_eff], rows[:, :k_eff] = exact.cpu().numpy(), cand.cpu().numpy()
        return scores, rows

    def _to_device(self, queries: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(queries)).to(self._torch_vectors.device, self._torch_vectors.dtype)

    def _device_topk(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """``(n, k)`` rows of the best products, on the device: one matrix product against every
        vector when the scores fit (:func:`_score_elements`), else chunks of the vectors with a
        running top-k."""
        chunk = max(k, _score_elements(q.device) // max(len(q), 1))
        best_s = best_i = None
        for s in range(0, self.ntotal, chunk):
            scores = (q @ self._torch_vectors[s : s + chunk].T).float()
            top_s, top_i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            del scores
            top_i += s
            if best_s is not None:
                top_s, pick = torch.topk(torch.cat([best_s, top_s], 1), k, dim=1)
                top_i = torch.gather(torch.cat([best_i, top_i], 1), 1, pick)
            best_s, best_i = top_s, top_i
        return best_i


def _on_grid(vectors: torch.Tensor) -> torch.Tensor:
    """:func:`select.on_grid` for a tensor, on its device (round half to even, as numpy): the same
    values, so the device's exact scores are the host's."""
    return torch.round(vectors.to(torch.float64) / SCORE_GRID)


def _score_elements(device: torch.device) -> int:
    """Scores held at once: :data:`SCORE_ELEMENTS` on the CPU; on a GPU a quarter of its free
    memory (a 1M-vector corpus is then one product per batch of queries)."""
    if device.type != "cuda":
        return SCORE_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return max(SCORE_ELEMENTS, free // 4 // 8)  # float32 scores plus top-k's workspace


def _has_gpu(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """faiss on ``n`` OpenMP threads for a while (k-means that is the same on any machine setup)."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _too_few_for_ivf(spec: IndexSpec, n_docs: int) -> IndexSpec:
    """The exact search instead of an IVF over fewer documents (all ranks') than its lists or than its
    codes' training needs (:data:`IVF_MIN_DOCUMENTS`), with a notice: an approximate index of so few
    vectors saves nothing, and faiss cannot train it. Collective (every rank decides alike)."""
    if spec.mode != "ivf":
        return spec
    total = sum(distributed.all_gather_object(n_docs))
    need = max(spec.nlist or 0, IVF_MIN_DOCUMENTS)
    if total >= need:
        return spec
    if distributed.get_rank() == 0:
        logger.warning("index: %d document(s) are fewer than --index=ivf needs (%d: its lists, and the %d its codes "
                       "train on): exact search instead (the same result an IVF would approximate)", total, need,
                       IVF_MIN_DOCUMENTS)
    return dataclasses.replace(spec, mode="sharded")


def _trained_ivf(doc_emb: np.ndarray, doc_ids: np.ndarray, spec: IndexSpec):
    """The shared, trained, empty IVF index: spherical k-means lists and 4-bit PQ codes, trained on
    a seeded sample of every rank's documents.

    A document is in the sample by its own id (:func:`select.seeded_uniform`), the sample is
    ordered by id and trained on one thread of rank 0, which sends the index to every rank; so the
    lists and codes are the same for any number of ranks. Collective.
    """
    import math

    faiss = _faiss()
    total = sum(distributed.all_gather_object(len(doc_ids)))
    nlist = min(spec.nlist or max(1, round(math.sqrt(total))), max(total, 1))
    want = min(total, nlist * TRAIN_POINTS_PER_LIST)
    pick = seeded_uniform(doc_ids, spec.seed) < want / max(total, 1)
    sample = distributed.gather_array(np.ascontiguousarray(doc_emb[pick], dtype=np.float32))
    ids = distributed.gather_array(doc_ids[pick])
    blob = np.zeros(0, dtype=np.uint8)
    if distributed.get_rank() == 0:
        sample = np.ascontiguousarray(sample[np.argsort(ids, kind="stable")])
        nlist = max(1, min(nlist, len(sample)))
        dim = doc_emb.shape[1]
        with _faiss_threads(1):
            kmeans = faiss.Kmeans(dim, nlist, niter=20, seed=spec.seed, spherical=True,
                                  min_points_per_centroid=1, max_points_per_centroid=1 << 30)
            kmeans.train(sample)
            quantizer = faiss.IndexFlatIP(dim)
            quantizer.add(kmeans.centroids)
            # 4-bit codes, one sub-quantizer a dimension, scanned with SIMD look-up tables
            if dim % 2 == 0 and len(sample) >= IVF_MIN_DOCUMENTS:
                index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, dim, 4, faiss.METRIC_INNER_PRODUCT)
                index.pq.cp.seed = spec.seed
            else:  # fast scan needs an even number of sub-quantizers (and 16 vectors to train its codes)
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(sample)  # the lists are given: only the codes are trained
        blob = faiss.serialize_index(index)
        logger.info("index: IVF with %d lists and %s codes trained on %d sampled documents (nprobe %d)", nlist,
                    "4-bit PQ" if hasattr(index, "pq") else "float32", len(sample), min(spec.nprobe, nlist))
    return faiss.deserialize_index(distributed.all_gather_array(blob))  # only rank 0 contributes bytes


class ApproximateIndex:
    """This rank's documents in a faiss IVF (shared lists and codes) or HNSW index, both on CPU.
    :meth:`search` returns candidate rows like
    :class:`FlatIndex`: the IVF's compressed scores pick ``REFINE`` times the candidates asked for,
    which are re-ranked with the rank's float32 vectors."""

    on_device = False  # candidates rescored on the host (topk_against)

    def __init__(self, vectors: np.ndarray, doc_ids: np.ndarray, spec: IndexSpec, device: torch.device):
        faiss = _faiss()
        if faiss is None:
            raise ValueError(f"--index={spec.mode} needs faiss: `pip install faiss-cpu` (or faiss-gpu, INSTALL_FAISS.md)")
        self.ntotal, self.dim = vectors.shape
        self.spec = spec
        self._vectors = vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if spec.mode == "ivf":
            self._index = _trained_ivf(vectors, doc_ids, spec)
            self._index.add(vectors)
            self._index.nprobe = min(spec.nprobe, self._index.nlist)
            self.backend = "faiss-cpu-ivf"
            if device.type == "cuda" and distributed.get_rank() == 0:
                logger.info("index: the IVF's fast-scan codes are searched on CPU (faiss has no GPU fast scan); "
                            "exact search (--index=sharded) runs on the GPU")
        else:
            self._index = faiss.IndexHNSWFlat(self.dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = max(40, 2 * spec.hnsw_m)
            self._index.add(vectors)
            self.backend = "faiss-cpu-hnsw"

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        k_eff = min(k, self.ntotal)
        out = np.full((queries.shape[0], k), PAD_ID, dtype=np.int64)
        if k_eff == 0 or queries.shape[0] == 0:
            return out
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.spec.mode == "hnsw":
            self._index.hnsw.efSearch = max(self.spec.ef_search, k_eff)
            _, out[:, :k_eff] = self._index.search(queries, k_eff)
            return out
        wide = min(self.ntotal, REFINE * k_eff)
        _, cand = self._index.search(queries, wide)
        out[:, :k_eff] = refine(queries, self._vectors, cand, k_eff)
        return out


def refine(queries: np.ndarray, vectors: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best of each query's candidate rows by float32 inner product (faiss, threaded).

    ``cand`` rows may end in ``-1`` (fewer candidates); the result then ends in ``-1`` too.
    """
    faiss = _faiss()
    queries, vectors = np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors, dtype=np.float32)
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    vals = np.empty((len(cand), k), dtype=np.float32)
    out = np.full((len(cand), k), PAD_ID, dtype=np.int64)
    if len(cand) and k:
        faiss.knn_inner_products_by_idx(faiss.swig_ptr(queries), faiss.swig_ptr(vectors), faiss.swig_ptr(cand),
                                        vectors.shape[1], len(cand), len(vectors), cand.shape[1], k,
                                        faiss.swig_ptr(vals), faiss.swig_ptr(out), cand.shape[1])
    return out


def topk_against(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, index, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top-``k`` ``(scores float64, ids)`` of ``query_emb`` among ``doc_emb`` (ids ``doc_ids``)."""
    if index.on_device:  # found and rescored on the device, only the lists come back
        scores, cand = index.search_exact(query_emb, k + TIE_SLACK)
    else:
        cand = index.search(query_emb, k + TIE_SLACK)
        scores = exact_scores(query_emb, doc_emb, cand)
    ids = np.where(cand >= 0, doc_ids[np.maximum(cand, 0)] if len(doc_ids) else PAD_ID, PAD_ID)
    return canonical_topk(scores, ids, k)


def _empty(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, k)), np.full((0, k), PAD_ID, dtype=np.int64)


def _sharded_search(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, index, k: int,
                    on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """This rank's queries against every rank's shard: in batches, every rank's batch ``b`` is
    gathered, searched in each shard, and the per-shard top-k lists merged. Collective."""
    world = distributed.get_world_size()
    n_batches = distributed.all_reduce_max(-(-query_emb.shape[0] // SEARCH_BATCH))
    out_scores, out_ids = [], []
    for b in range(n_batches):
        mine = query_emb[b * SEARCH_BATCH : (b + 1) * SEARCH_BATCH]
        counts = distributed.all_gather_object(mine.shape[0])
        all_q = distributed.all_gather_array(mine)
        local_scores, local_ids = topk_against(all_q, doc_emb, doc_ids, index, k)
        # each rank gets back only its own queries' lists, one from every shard (all-to-all)
        bounds = np.cumsum([0] + counts)
        parts = zip(distributed.exchange([local_scores[bounds[r]:bounds[r + 1]] for r in range(world)]),
                    distributed.exchange([local_ids[bounds[r]:bounds[r + 1]] for r in range(world)]))
        scores, ids = merge_topk(list(parts), k)
        out_scores.append(scores)
        out_ids.append(ids)
        if on_progress:
            on_progress(mine.shape[0])
    if not out_scores:
        return _empty(k)
    return np.concatenate(out_scores), np.concatenate(out_ids)


def _vector_keys(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit key per vector from its bytes (equal vectors, equal keys; any rank, any order)."""
    words = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    mult = (np.arange(words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        return (words * mult).sum(axis=1, dtype=np.uint64)


def measure_recall(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, found_ids: np.ndarray,
                   spec: IndexSpec, device: torch.device) -> dict[str, float | int]:
    """recall@k of ``found_ids`` (the approximate top-k of this rank's queries) against exact search,
    on a seeded sample of about ``spec.recall_queries`` queries over all ranks (a query is in the
    sample by its vector, so the sample does not depend on the number of ranks). Collective.

    Returns ``{"recall@K": fraction of the exact top-K found, ..., "recall_queries": sample size}``
    for K = the searched depth, and 10 when the depth is larger.
    """
    depth = found_ids.shape[1]
    total = sum(distributed.all_gather_object(len(query_emb)))
    pick = np.flatnonzero(seeded_uniform(_vector_keys(query_emb), spec.seed + 1)
                          < spec.recall_queries / max(total, 1)) if len(query_emb) else np.zeros(0, dtype=np.int64)
    exact = FlatIndex(np.ascontiguousarray(doc_emb, dtype=np.float32), device, use_torch=True)  # no copy on CPU
    _, exact_ids = _sharded_search(query_emb[pick], doc_emb, doc_ids, exact, depth)
    out: dict[str, float | int] = {}
    for k in sorted({depth, min(10, depth)}):
        hits = sum(len(set(e[:k][e[:k] != PAD_ID].tolist()) & set(f[:k].tolist()))
                   for e, f in zip(exact_ids, found_ids[pick]))
        wanted = int((exact_ids[:, :k] != PAD_ID).sum())
        hits, wanted = (sum(x) for x in zip(*distributed.all_gather_object((hits, wanted))))
        out[f"recall@{k}"] = round(hits / wanted, 4) if wanted else 1.0
    out["recall_queries"] = sum(distributed.all_gather_object(len(pick)))
    return out


def search(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, k: int, spec: IndexSpec | str,
           device: torch.device, fp16: bool = False,
           on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-``k`` documents for this rank's queries, over the documents of all ranks.

    Args:
        query_emb: ``(n, d) float32`` this rank's queries.
        doc_emb: ``(m, d) float32`` this rank's documents; doc_ids: ``(m,) int64`` their global ids.
        spec: the index (or just its mode): see the module's docstring.

    Returns:
        ``(scores (n, k) float64, ids (n, k) int64, timings)`` in canonical order; timings holds
        ``backend``, ``index_seconds`` (gathering the documents, training, building the index)
        and, for an approximate index, ``recall`` (:func:`measure_recall`).
    """
    spec = _too_few_for_ivf(spec if isinstance(spec, IndexSpec) else IndexSpec(spec), len(doc_ids))
    world = distributed.get_world_size()
    start = time.perf_counter()
    if spec.mode == "gather" or (spec.mode == "sharded" and world == 1):
        all_emb = distributed.all_gather_array(doc_emb)
        all_ids = distributed.all_gather_array(doc_ids)
        index = FlatIndex(all_emb, device, fp16)
        timings = {"backend": index.backend, "index_seconds": round(time.perf_counter() - start, 4)}
        if device.type != "cuda" and distributed.get_rank() == 0:
            logger.info("index: %s exact inner product over %d documents (no CUDA device: CPU search)",
                        index.backend, index.ntotal)
        results, batch = [], index.query_batch()
        for s in range(0, query_emb.shape[0], batch):
            results.append(topk_against(query_emb[s : s + batch], all_emb, all_ids, index, k))
            if on_progress:
                on_progress(min(batch, query_emb.shape[0] - s))
        if not results:
            return (*_empty(k), timings)
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), timings

    index = ApproximateIndex(doc_emb, doc_ids, spec, device) if spec.approximate else FlatIndex(doc_emb, device, fp16)
    timings = {"backend": index.backend, "index_seconds": round(time.perf_counter() - start, 4)}
    scores, ids = _sharded_search(query_emb, doc_emb, doc_ids, index, k, on_progress)
    if spec.approximate:
        del index
        t = time.perf_counter()
        timings["recall"] = measure_recall(query_emb, doc_emb, doc_ids, ids, spec, device)
        timings["recall_seconds"] = round(time.perf_counter() - t, 4)
    return scores, ids, timings


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def clamp_k(k: int, doc_ids: np.ndarray) -> int:
    """``k`` bounded by the documents of all ranks (collective): a huge ``k`` (a flag's typo) never
    allocates more than the corpus; the results are then ``(n, min(k, documents))``."""
    n_docs = int(sum(distributed.all_gather_object(len(doc_ids))))
    if k > n_docs:
        if distributed.get_rank() == 0:
            logger.info("search: k=%d is more than the %d documents; all %d are ranked", k, n_docs, n_docs)
        return max(1, n_docs)
    return k


def cached_search(cache_dir: str | None, query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: np.ndarray, k: int,
                  spec: IndexSpec | str, device: torch.device, fp16: bool = False,
                  on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`search`, its results kept under ``cache_dir/search/`` by content: the vectors of this
    rank's queries and of every rank's documents, the index and the world. A later run with the
    same vectors and at most the same ``k`` (a sweep over margins, ranges or sampling) reads them
    back instead of searching; the canonical top-k is a prefix of a longer canonical list.
    ``timings["cached"]`` says whether every rank read its results back.
    """
    from .files import read_json
    from .write import save_npz, write_json

    spec = spec if isinstance(spec, IndexSpec) else IndexSpec(spec)
    k = clamp_k(k, doc_ids)
    if not cache_dir:
        return search(query_emb, doc_emb, doc_ids, k, spec, device, fp16, on_progress)
    docs = "".join(distributed.all_gather_object(_digest(doc_emb, doc_ids)))
    key = _digest(np.frombuffer(f"{spec.key()} {fp16} {distributed.get_world_size()} {distributed.get_rank()} {docs}"
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
        recall = read_json(found[1][: -len(".npz")] + ".recall.json") if found[0] == k else None
        return scores, ids, {"backend": "cache", "index_seconds": 0.0, "cached": True,
                             **({"recall": recall} if recall else {})}
    scores, ids, timings = search(query_emb, doc_emb, doc_ids, k, spec, device, fp16, on_progress)
    os.makedirs(folder, exist_ok=True)
    save_npz(os.path.join(folder, f"{key}-k{k}.npz"), scores=scores, ids=ids)
    if "recall" in timings:
        write_json(os.path.join(folder, f"{key}-k{k}.recall.json"), timings["recall"])
    return scores, ids, {**timings, "cached": False}
