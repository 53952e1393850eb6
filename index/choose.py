"""Choose the artist index by catalogue size, and refuse one that loses too much recall.

* Up to :data:`FLAT_MAX` artists: exact (``flat``). A brute-force scan of 50,000 x 64 floats
  is ~0.5 ms on one core, recall is 1 by construction, and the build is instant.
* Beyond it: IVF-Flat (inverted lists over ~sqrt(N) k-means cells, Jégou et al. 2011), with
  ``nprobe`` raised (8, 16, ... 128) to the smallest value whose recall@100 against exact
  search, on the sampled user vectors, meets the floor; if none does,
  :class:`RecallGateError` and export does not publish. Measured at 1M clustered vectors
  (``benchmarks/results/ann.md``): IVF-Flat nprobe=8 reached recall@100 0.998 at 67x the
  exact search's queries/s, built in 18 s, in the exact index's memory; HNSW (m=32) needed
  efSearch=2048 for 0.999 and was then only 3x exact. Artist vectors cluster by genre, which
  suits inverted lists; a passed-in HNSW spec is tuned the same way (``ef_search``).
* Beyond :data:`TRAIN_SAMPLE` artists the k-means runs on a seeded sample of that many vectors
  (``IndexSpec.train_size``). Measured at 10M (same file): built in 454 s on 2 busy cores,
  2,518 MiB, recall@100 0.998 at nprobe 8, p50 0.87 ms at batch 1. IVF-Flat keeps every
  vector (4 bytes x d), so past :data:`IVF_FLAT_BYTES` (4 GiB: ~16.7M artists at d=64) it would
  outgrow the budget; a compressed index (IVF-PQ / SQ8) would be the next step, unmeasured, so
  :func:`spec_for` refuses rather than guess.

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
FLAT_MAX = 50_000  # artists; beyond this, IVF-Flat
TRAIN_SAMPLE = 500_000  # artists; beyond this, IVF k-means on a sample of this size
IVF_FLAT_BYTES = 4 * 2**30  # memory budget of the index
RECALL_FLOOR = 0.98
RECALL_K = 100
EF_SEARCH_STEPS = (128, 256, 512, 1024, 2048)
NPROBE_STEPS = (8, 16, 32, 64, 128)


class RecallGateError(ValueError):
    """An approximate index misses more of the exact top-k than the floor allows."""


def spec_for(n_artists: int, dim: int = 64) -> IndexSpec:
    if n_artists <= FLAT_MAX:
        return IndexSpec(kind="flat", metric="ip")
    if n_artists * dim * 4 > IVF_FLAT_BYTES:
        raise ValueError(
            f"{n_artists:,} artists x {dim} dims would need {n_artists * dim * 4 / 2**30:.1f} GiB "
            f"as IVF-Flat, over the {IVF_FLAT_BYTES / 2**30:.0f} GiB budget; pass an IndexSpec "
            "explicitly (a compressed index is not measured here)"
        )
    train = TRAIN_SAMPLE if n_artists > TRAIN_SAMPLE else 0
    return IndexSpec(
        kind="ivf", metric="ip", nlist=0, nprobe=8, train_size=train
    )  # nlist 0 = sqrt(N)


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
    spec = spec or spec_for(len(vectors), vectors.shape[1])
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
    recall = 0.0
    if spec.kind == "hnsw":  # the smallest search effort that meets the floor
        for ef in (e for e in EF_SEARCH_STEPS if e >= spec.ef_search):
            index.set_ef_search(ef)
            record["spec"]["ef_search"] = ef
            if (recall := recall_at_k(index, exact, queries, k)) >= floor:
                break
    else:
        for nprobe in (p for p in NPROBE_STEPS if p >= spec.nprobe):
            index.set_nprobe(nprobe)
            record["spec"]["nprobe"] = nprobe
            if (recall := recall_at_k(index, exact, queries, k)) >= floor:
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
