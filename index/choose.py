"""Choose the artist index by catalogue size, and refuse one that loses too much recall.

* Up to :data:`FLAT_MAX` artists: exact (``flat``). A brute-force scan of 50,000 x 64 floats
  is ~0.5 ms on one core, recall is 1 by construction, and the build is instant.
* Beyond it: HNSW (Malkov & Yashunin 2016, arXiv:1603.09320), m=32. ``ef_search`` is tuned
  up (128, 256, 512, 1024) to the smallest value whose recall@100 against exact search, on
  the sampled user vectors, meets the floor; if none does, :class:`RecallGateError` and
  export does not publish. (IVF-PQ would fit 10M artists in less memory at lower recall; at
  the catalogue sizes here HNSW's memory is affordable: see ``benchmarks/results/ann.md``.)

Pure functions (vectors in, index and a report out): the caller samples the user vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from index.faiss_index import ArtistIndex, IndexSpec, build_index

log = logging.getLogger("tastemaker.index")
FLAT_MAX = 50_000  # artists; beyond this, HNSW
RECALL_FLOOR = 0.98
RECALL_K = 100
EF_SEARCH_STEPS = (128, 256, 512, 1024)


class RecallGateError(ValueError):
    """An approximate index misses more of the exact top-k than the floor allows."""


def spec_for(n_artists: int) -> IndexSpec:
    if n_artists <= FLAT_MAX:
        return IndexSpec(kind="flat", metric="ip")
    return IndexSpec(kind="hnsw", metric="ip", m=32, ef_construction=200, ef_search=128)


def recall_at_k(approx: ArtistIndex, exact: ArtistIndex, queries: np.ndarray, k: int) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over ``queries`` (B, d)."""
    k = min(k, exact.ntotal)
    got, _ = approx.search(queries, k)  # (B, k)
    want, _ = exact.search(queries, k)  # (B, k)
    return float(np.mean([len(np.intersect1d(g, w)) / k for g, w in zip(got, want, strict=True)]))


def build_checked_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray | Callable[[], np.ndarray],
    spec: IndexSpec | None = None,
    floor: float = RECALL_FLOOR,
    k: int = RECALL_K,
) -> tuple[ArtistIndex, dict[str, Any]]:
    """Build the index for ``vectors`` (N, d) under ``ids`` (N,); check it on ``queries``.

    ``queries``: (B, d) user vectors, or a function returning them (called only when the
    index is approximate). Returns the index and the record for the bundle manifest (kind, parameters, recall@k,
    floor, number of queries). Raises :class:`RecallGateError` below ``floor``.
    """
    spec = spec or spec_for(len(vectors))
    index = build_index(vectors, spec, ids=ids)
    record: dict[str, Any] = {
        "spec": asdict(spec),
        "kind": spec.kind,
        "n_artists": int(len(vectors)),
        "flat_max": FLAT_MAX,
        "recall_floor": floor,
        "recall_k": k,
    }
    if spec.kind == "flat":
        record["recall"] = 1.0  # exact search: it *is* the reference
        return index, record
    queries = queries() if callable(queries) else queries
    record["recall_queries"] = int(len(queries))
    if len(queries) == 0:
        raise RecallGateError("no user vectors to check an approximate index against")
    exact = build_index(vectors, IndexSpec(kind="flat", metric=spec.metric), ids=ids)
    steps = EF_SEARCH_STEPS if spec.kind == "hnsw" else (None,)
    recall = 0.0
    for ef in steps:
        if ef is not None:
            if ef < spec.ef_search:
                continue
            index.set_ef_search(ef)
            record["spec"]["ef_search"] = ef
        recall = recall_at_k(index, exact, queries, k)
        if recall >= floor:
            break
    record["recall"] = round(recall, 4)
    if recall < floor:
        raise RecallGateError(
            f"{spec.kind} index recall@{k} = {recall:.3f} against exact search on "
            f"{len(queries)} user vectors, below the floor {floor}; not publishing "
            "(raise m / ef_construction, or export with an exact index)"
        )
    log.info("%s index over %d artists: recall@%d %.3f", spec.kind, len(vectors), k, recall)
    return index, record
