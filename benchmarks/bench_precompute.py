"""Precomputed slates: users/s of ``tastemaker precompute`` (ONNX user tower + FAISS top-100 +
exclusion + explanation, written to the SQLite slate store).

A synthetic HetRec-sized bundle (20,000 artists x 64 dims, flat index) and synthetic
``USER_FEATURES`` rows (50-artist history, 110 excluded). The baseline in the same run is the
bare encode + ONNX + FAISS batch scoring of the same users (no exclusion, no explanations, no
writes).

    TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_precompute [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

N_ARTISTS, DIM = 20_000, 64


def _users(n: int, artists: list[str], rng: np.random.Generator) -> pa.Table:
    from data.schemas import USER_DENSE_FIELDS, USER_FEATURES, USER_SEGMENT_FIELDS

    picks = rng.integers(len(artists), size=(n, 110))  # (U, 110)
    arr = np.asarray(artists)
    lists = {
        "history": arr[picks[:, :50]],
        "followed": arr[picks[:, 50:60]],
        "seen": arr[picks],
    }
    cols: dict[str, pa.Array] = {}
    for f in USER_FEATURES:
        if f.name == "user_key":
            cols[f.name] = pa.array([f"u{i:08d}" for i in range(n)])
        elif f.name in lists:
            cols[f.name] = pa.array(list(lists[f.name]), pa.list_(pa.string()))
        elif f.name in USER_SEGMENT_FIELDS:
            cols[f.name] = pa.array(["unknown"] * n)
        elif f.name in USER_DENSE_FIELDS:
            cols[f.name] = pa.array(np.full(n, 0.5, np.float32))
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=USER_FEATURES)


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")
    from serving.precompute import score_table
    from serving.reload import ModelHolder
    from serving.slates import open_slate_store, slate_blobs
    from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, publish_synthetic

    n = 20_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = SyntheticSpec(n_artists=N_ARTISTS, n_clusters=DIM, dim=DIM, history_len=100)
        publish_synthetic(root / "b", spec, version="20240101T000000Z-pre")
        users = _users(n, artist_ids(spec), np.random.default_rng(0))
        model = ModelHolder(root / "b", faiss_threads=None).current
        enc = model.encoder
        t0 = time.perf_counter()
        for start in range(0, n, 2048):
            part = users.slice(start, 2048)
            rows = part.select(["history", *enc.segment_fields, *enc.dense_fields]).to_pylist()
            vecs = model.session.run(None, enc.encode(rows))[0]  # (B, d)
            model.index.search(vecs, 100 + 110 + 2)
        bare = time.perf_counter() - t0
        store = open_slate_store(str(root / "slates.sqlite"), create=True)
        t0 = time.perf_counter()
        written = store.replace_all(slate_blobs(score_table(model, users)))
        took = time.perf_counter() - t0
        store.close()
        size = (root / "slates.sqlite").stat().st_size / 2**20
    cmd = "TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_precompute"
    cmd += " --quick" if quick else ""
    lines = [
        "## Precomputed slates (`benchmarks/bench_precompute.py`)",
        "",
        f"`{cmd}` — {n:,} users (50-artist history, 110 excluded), {N_ARTISTS:,} artists x "
        f"{DIM} dims (flat), top-100 per user into SQLite; {os.cpu_count()} cores shared.",
        "",
        "| step | seconds | users/s |",
        "|---|---|---|",
        f"| baseline: encode + ONNX + FAISS top-212 only | {bare:.1f} | {n / bare:,.0f} |",
        f"| precompute (+ exclusion, explanations, SQLite write) | {took:.1f} "
        f"| {written / took:,.0f} |",
        "",
        f"{written:,} slates, {size:,.0f} MiB. 1-min load average at the end: "
        f"{os.getloadavg()[0]:.1f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick))
