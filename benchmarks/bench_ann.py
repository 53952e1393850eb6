"""ANN at scale: HNSW and IVF-Flat (what export picks beyond ``index.choose.FLAT_MAX``) against
exact search.

Synthetic clustered artist vectors (1,000 clusters, d=64, L2-normalised) and user vectors that
are normalised means of 20 artists from 1-3 clusters plus noise. For each index: build time,
memory (FAISS serialized size), latency at batch 1 (one thread, as the server runs it), queries/s
and recall@100 against exact search on the same queries, in the same run.

    .venv/bin/python -m benchmarks.bench_ann [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np

DIM, K = 64, 100


def _data(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(1000, DIM)).astype(np.float32)
    labels = rng.integers(1000, size=n)
    x = centres[labels] + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
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


def main(quick: bool = False) -> str:
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
    lines += [
        "",
        "10M vectors: not run on this shared 2-core machine (IVF-Flat would hold 2.4 GiB of "
        "vectors, HNSW ~5 GiB with its graph; the 1M HNSW build alone took minutes). The "
        "4 GB / 5 ms target at 10M is unmeasured. Synthetic clusters (1,000) suit IVF; "
        f"1-min load average at the end: {os.getloadavg()[0]:.1f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick))
