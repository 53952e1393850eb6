"""ANN at scale: HNSW and IVF-Flat (what export picks beyond ``index.choose.FLAT_MAX``) against
exact search.

Synthetic clustered artist vectors (1,000 clusters, d=64, L2-normalised) and user vectors that
are normalised means of 20 artists from 1-3 clusters plus noise. For each index: build time,
memory (FAISS serialized size), latency at batch 1 (one thread, as the server runs it), queries/s
and recall@100 against exact search on the same queries, in the same run.

    .venv/bin/python -m benchmarks.bench_ann [--quick] [--sizes 1000000,10000000]

``--sizes`` adds catalogues beyond the 1M table (opt-in: 10M takes ~10 minutes and ~6 GB of
RAM here): IVF-Flat with sqrt(N) lists as export would build it, k-means on a 500k sample,
FAISS's own threads (2) for building; memory is the index file's size; exact top-100 for the
recall comes from a chunked brute-force scan (no second copy of the vectors).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

DIM, K = 64, 100


def _data(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(1000, DIM)).astype(np.float32)
    labels = rng.integers(1000, size=n)
    x = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 1_000_000):  # in blocks: float64 noise for 10M rows would be 5 GB
        e = min(n, s + 1_000_000)
        x[s:e] = centres[labels[s:e]] + 0.5 * rng.normal(size=(e - s, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.empty((n_queries, DIM), dtype=np.float32)
    for i in range(n_queries):
        clusters = rng.choice(1000, size=rng.integers(1, 4), replace=False)
        members = np.flatnonzero(np.isin(labels[:200_000], clusters))[:20]
        q[i] = x[members].mean(axis=0) + 0.05 * rng.normal(size=DIM)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def _latency(index, queries: np.ndarray) -> tuple[float, float, float]:
    faiss.omp_set_num_threads(1)
    times = np.empty(len(queries))
    for i in range(len(queries)):
        t0 = time.perf_counter()
        index.search(queries[i : i + 1], K)
        times[i] = time.perf_counter() - t0
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return p50, p99, 1.0 / times.mean()


def _exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-``k`` ids (Q, k) by a chunked scan of ``x`` (N, d), no copy."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for s in range(0, len(x), 1_000_000):
        scores = q @ x[s : s + 1_000_000].T  # (Q, chunk)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k)
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + s], axis=1)
        keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(best_s, keep, axis=1)
        best_i = np.take_along_axis(best_i, keep, axis=1)
    return best_i


def large(n: int, threads: int = 2) -> list[str]:
    """Table rows for an n-vector catalogue: IVF-Flat as export builds it beyond FLAT_MAX."""
    from index import IndexSpec, build_index

    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    x, q = _data(n, 1000, rng)
    gen_s = time.perf_counter() - t0
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    want = _exact_topk(x, q[:200], K)  # (200, K)
    exact_s = time.perf_counter() - t0
    nlist = int(math.sqrt(n))
    spec = IndexSpec(kind="ivf", nlist=nlist, nprobe=8, train_size=500_000)
    t0 = time.perf_counter()
    ivf = build_index(x, spec)
    build_s = time.perf_counter() - t0
    del x
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artists.faiss"
        ivf.save(path)
        mem = path.stat().st_size / 2**20
    rows = []
    for nprobe in (8, 16, 32):
        ivf.set_nprobe(nprobe)
        faiss.omp_set_num_threads(threads)
        got, _ = ivf.search(q[:200], K)
        recall = np.mean([len(np.intersect1d(g, w)) / K for g, w in zip(got, want, strict=True)])
        p50, p99, qps = _latency(ivf, q)
        rows.append(
            f"| ivf-flat nlist={nlist} nprobe={nprobe} | {build_s:.0f} | {mem:,.0f} "
            f"| {p50:.2f} | {p99:.2f} | {qps:,.0f} | - | {recall:.3f} |"
        )
    rows.append(
        f"| exact top-100 of 200 queries (chunked scan, {threads} threads) | - | - | - | - "
        f"| {200 / exact_s:,.1f} (batch 200) | 1x | 1.000 |"
    )
    return [
        "",
        f"{n:,} vectors (`--sizes {n}`): generated in {gen_s:.0f} s; IVF-Flat built with "
        f"{threads} FAISS threads, k-means on 500,000 sampled vectors; recall@100 on 200 "
        "queries against a chunked exact scan, latency on 1,000 queries at batch 1, one thread.",
        "",
        "| index | build s | memory MiB | p50 ms | p99 ms | queries/s | vs exact q/s | recall@100 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def main(quick: bool = False, sizes: tuple[int, ...] = ()) -> str:
    from index import IndexSpec, build_index

    n = 100_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    x, q = _data(n, 300 if quick else 1000, rng)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    exact = build_index(x, IndexSpec(kind="flat"))
    flat_build = time.perf_counter() - t0
    want, _ = exact.search(q, K)  # (Q, K) the reference, all cores
    flat_mem = len(exact.to_bytes()) / 2**20
    fp50, fp99, fqps = _latency(exact, q[:100])
    cmd = f".venv/bin/python -m benchmarks.bench_ann{' --quick' if quick else ''}"
    lines = [
        "## ANN at scale (`benchmarks/bench_ann.py`)",
        "",
        f"`{cmd}` — {n:,} clustered artist vectors x {DIM} dims, {len(q):,} user-like "
        f"queries, k={K}; build with {os.cpu_count()} threads, search at batch 1 on one thread.",
        "",
        "| index | build s | memory MiB | p50 ms | p99 ms | queries/s | vs exact q/s | recall@100 |",
        "|---|---|---|---|---|---|---|---|",
        f"| flat (exact) | {flat_build:.1f} | {flat_mem:,.0f} | {fp50:.2f} | {fp99:.2f} "
        f"| {fqps:,.0f} | 1.0x | 1.000 |",
    ]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    hnsw = build_index(x, IndexSpec(kind="hnsw", m=32, ef_construction=100, ef_search=128))
    build_s = time.perf_counter() - t0
    mem = len(hnsw.to_bytes()) / 2**20

    def row(name: str, index, build_s: float, mem: float) -> str:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        got, _ = index.search(q, K)
        recall = np.mean([len(np.intersect1d(g, w)) / K for g, w in zip(got, want, strict=True)])
        p50, p99, qps = _latency(index, q)
        return (
            f"| {name} | {build_s:.1f} | {mem:,.0f} | {p50:.2f} | {p99:.2f} | {qps:,.0f} "
            f"| {qps / fqps:.0f}x | {recall:.3f} |"
        )

    for ef in (128, 512, 2048):
        hnsw.set_ef_search(ef)
        lines.append(row(f"hnsw m=32 efC=100 efSearch={ef}", hnsw, build_s, mem))
    del hnsw
    nlist = 1024
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    ivf = build_index(x, IndexSpec(kind="ivf", nlist=nlist, nprobe=8))
    build_s = time.perf_counter() - t0
    mem = len(ivf.to_bytes()) / 2**20
    for nprobe in (8, 32, 64):
        ivf.set_nprobe(nprobe)
        lines.append(row(f"ivf-flat nlist={nlist} nprobe={nprobe}", ivf, build_s, mem))
    del ivf, exact, x
    for size in sizes:
        if size > n:
            lines += large(size)
    lines += [
        "",
        "Synthetic clusters (1,000) suit IVF; "
        f"1-min load average at the end: {os.getloadavg()[0]:.1f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="", help="extra catalogue sizes, e.g. 10000000")
    parser.add_argument("--large-only", action="store_true", help="only the --sizes tables")
    args = parser.parse_args()
    sizes = tuple(int(v) for v in args.sizes.split(",") if v)
    if args.large_only:
        cmd = f".venv/bin/python -m benchmarks.bench_ann --large-only --sizes {args.sizes}"
        print("\n".join([f"`{cmd}`", *(line for n in sizes for line in large(n))]))
    else:
        print(main(args.quick, sizes))
