"""FAISS artist indexes behind one contract: ``search(vectors, k) -> (ids, scores)``.

``build_index`` is pure (no I/O, no globals): vectors in, an :class:`ArtistIndex` out. Files are
read and written only by :meth:`ArtistIndex.save` / :meth:`ArtistIndex.load`, at the edge.

Kinds: ``flat`` (exact), ``hnsw`` (graph, Malkov & Yashunin 2016, arXiv:1603.09320) and ``ivf``
(inverted lists over a k-means coarse quantiser, Jégou et al. 2011). Scores are "higher is
better": inner products for ``metric="ip"``, negated squared distances for ``metric="l2"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from core.atomic import write_bytes

log = logging.getLogger("tastemaker.index")

KINDS = ("flat", "hnsw", "ivf")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
PAD_ID = -1  # id returned where fewer than k results exist; its score is -inf


class IndexLoadError(RuntimeError):
    """An index file is missing, truncated or not a FAISS index."""


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "flat"  # one of KINDS
    metric: str = "ip"  # "ip" (vectors L2-normalised upstream) or "l2"
    m: int = 32  # hnsw: graph neighbours per node
    ef_construction: int = 200  # hnsw: candidate list while building
    ef_search: int = 128  # hnsw: candidate list while searching (recall/latency knob)
    nlist: int = 0  # ivf: number of inverted lists; 0 = about sqrt(N)
    nprobe: int = 0  # ivf: lists visited per query; 0 = a quarter of nlist (at least 8)
    seed: int = 0  # ivf: k-means seed, so a rebuild from the same vectors is identical
    train_size: int = 0  # ivf: k-means on this many sampled vectors; 0 = FAISS's cap (256/list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexSpec.kind must be one of {KINDS}; got {self.kind!r}")
        if self.metric not in METRICS:
            raise ValueError(
                f"IndexSpec.metric must be one of {tuple(METRICS)}; got {self.metric!r}"
            )
        for name in ("m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexSpec.{name} must be >= 1; got {getattr(self, name)}")
        if self.nlist < 0 or self.nprobe < 0 or self.train_size < 0:
            raise ValueError("IndexSpec.nlist, nprobe and train_size must be >= 0 (0 = automatic)")


def _as_matrix(vectors: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d); got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}; the index has {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def build_index(vectors: np.ndarray, spec: IndexSpec, ids: np.ndarray | None = None) -> ArtistIndex:
    """Index ``vectors`` (N, d) float32 under ``ids`` (N,) int64 (default 0..N-1)."""
    x = _as_matrix(vectors, "vectors")  # (N, d)
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over 0 vectors")
    if ids is None:
        labels = np.arange(n, dtype=np.int64)  # (N,)
    else:
        labels = np.ascontiguousarray(ids, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"ids must have shape ({n},) to match vectors; got {labels.shape}")
        if len(np.unique(labels)) != n or (labels < 0).any():
            raise ValueError("ids must be unique and non-negative")
    metric = METRICS[spec.metric]
    if spec.kind == "ivf":
        nlist = spec.nlist or max(1, int(math.sqrt(n)))
        nlist = min(nlist, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, nlist, metric)
        index.cp.seed = spec.seed
        if spec.train_size and n > spec.train_size:  # a seeded sample, as large as asked
            pick = np.random.default_rng(spec.seed).choice(n, spec.train_size, replace=False)
            index.train(x[np.sort(pick)])  # (train_size, d)
        else:
            index.train(x)
        index.nprobe = min(nlist, spec.nprobe or max(8, nlist // 4))
        index.add_with_ids(x, labels)
        return ArtistIndex(index)
    base: faiss.Index
    if spec.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, spec.m, metric)
        hnsw.hnsw.efConstruction = spec.ef_construction
        hnsw.hnsw.efSearch = spec.ef_search
        base = hnsw
    else:
        base = faiss.IndexFlat(d, metric)
    mapped = faiss.IndexIDMap2(base)
    mapped.add_with_ids(x, labels)
    return ArtistIndex(mapped)


class ArtistIndex:
    """A built FAISS index; ``search`` is safe to call from many threads at once.

    ``search_threads`` caps FAISS's OpenMP threads for the calling thread (OpenMP settings are
    per thread, so a process-wide call would miss a server's request threads). A server that
    answers one query per request wants 1: fan-out then only adds barrier waits (measured on a
    loaded 2-core box: flat search 1.7 ms with 1 thread, 15-48 ms with 2). ``None`` keeps the
    default (all cores), right for batch jobs.
    """

    def __init__(self, index: faiss.Index, search_threads: int | None = None) -> None:
        if search_threads is not None and search_threads < 1:
            raise ValueError(f"search_threads must be >= 1 or None; got {search_threads}")
        self.search_threads = search_threads
        self._index = index
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
        if isinstance(inner, faiss.IndexHNSW):
            self.kind = "hnsw"
        elif isinstance(inner, faiss.IndexIVF):
            self.kind = "ivf"
        elif isinstance(inner, faiss.IndexFlat):
            self.kind = "flat"
        else:
            raise IndexLoadError(f"unsupported FAISS index type {type(inner).__name__}")
        self._inner: Any = inner  # the concrete FAISS type (stubs can't narrow it)
        self.metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids (B, k) int64 and scores (B, k) float32, best first.

        Where fewer than ``k`` results exist, ids are ``-1`` and scores ``-inf``.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        q = _as_matrix(vectors, "query vectors", self.dim)  # (B, d)
        if self.search_threads is not None:
            faiss.omp_set_num_threads(self.search_threads)  # this thread's OpenMP setting
        dist, ids = self._index.search(q, int(k))  # (B, k), (B, k)
        scores = dist if self.metric == "ip" else -dist  # (B, k) higher is better
        scores = np.where(ids == PAD_ID, -np.inf, scores).astype(np.float32)  # (B, k)
        return ids.astype(np.int64, copy=False), scores

    def set_ef_search(self, ef_search: int) -> None:
        """HNSW only: the search-time candidate list (saved with the index)."""
        if self.kind != "hnsw":
            raise ValueError(f"ef_search applies to hnsw indexes, not {self.kind}")
        self._inner.hnsw.efSearch = int(ef_search)

    def set_nprobe(self, nprobe: int) -> None:
        """IVF only: inverted lists visited per query (saved with the index)."""
        if self.kind != "ivf":
            raise ValueError(f"nprobe applies to ivf indexes, not {self.kind}")
        self._inner.nprobe = min(int(nprobe), int(self._inner.nlist))

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (id, vector): ids (N,) int64 and vectors (N, d) float32."""
        if self.kind == "ivf":
            invlists = self._inner.invlists
            all_ids, all_vecs = [], []
            for lst in range(self._inner.nlist):
                size = invlists.list_size(lst)
                if size == 0:
                    continue
                ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()  # (n,)
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * self.dim * 4)
                all_ids.append(ids.astype(np.int64))
                all_vecs.append(codes.copy().view(np.float32).reshape(size, self.dim))
            return np.concatenate(all_ids), np.concatenate(all_vecs)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)  # type: ignore[attr-defined]  # (N,)
        vecs = self._inner.reconstruct_n(0, self.ntotal)  # (N, d)
        return ids, np.asarray(vecs, dtype=np.float32)

    def to_bytes(self) -> bytes:
        """The index in FAISS's own file format (what :meth:`save` writes)."""
        return faiss.serialize_index(self._index).tobytes()

    def save(self, path: str | Path) -> None:
        """Write the index atomically (a reader never sees half a file)."""
        write_bytes(path, self.to_bytes())
        log.debug("saved %s index of %d vectors to %s", self.kind, self.ntotal, path)

    @classmethod
    def load(cls, path: str | Path, search_threads: int | None = None) -> ArtistIndex:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise IndexLoadError(f"cannot read FAISS index {path}: {exc}") from exc
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexLoadError(f"{path} is not a readable FAISS index: {exc}") from exc
        try:  # deserialize_index already downcasts; downcasting again would free the index
            return cls(index, search_threads)
        except IndexLoadError as exc:
            raise IndexLoadError(f"{path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"ArtistIndex(kind={self.kind!r}, metric={self.metric!r}, n={self.ntotal}, d={self.dim})"
