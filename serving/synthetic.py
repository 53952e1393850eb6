"""A synthetic but complete bundle, for tests, benchmarks and smoke checks of the service.

The user tower is a real ONNX graph written with ``onnx.helper`` (no torch): the mean of the
history's artist vectors plus small segment and dense terms, L2-normalised. Artists sit in
``n_clusters`` tight clusters, so a user who listens to one cluster must be recommended that
cluster: a known answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.constants import PAD, UNK
from data.schemas import ARTIST_FEATURES, USER_DENSE_FIELDS, USER_SEGMENT_FIELDS
from index import FILES, IndexSpec, build_index, publish_bundle

SEGMENT_VALUES = {
    "age_group": ["18-24", "25-34", "unknown"],
    "gender": ["f", "m", "unknown"],
    "country": ["DE", "US", "unknown"],
    "tenure_bucket": ["new", "long"],
    "activity_level": ["light", "heavy"],
}


@dataclass(frozen=True)
class SyntheticSpec:
    n_artists: int = 24
    n_clusters: int = 2
    dim: int = 8
    history_len: int = 10
    noise: float = 0.05
    index: IndexSpec = field(default_factory=IndexSpec)
    seed: int = 0


def artist_ids(spec: SyntheticSpec) -> list[str]:
    """``c{cluster}a{n}``: cluster membership is readable from the id."""
    return [f"c{i % spec.n_clusters}a{i:05d}" for i in range(spec.n_artists)]


def cluster_of(artist_id: str) -> int:
    return int(artist_id[1 : artist_id.index("a")])


def _tower(artist_vecs: np.ndarray, seg_sizes: Sequence[int], n_dense: int, seed: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    d = artist_vecs.shape[1]
    offsets = np.cumsum([0, *seg_sizes[:-1]]).astype(np.int64)  # (S,)
    seg_table = (0.01 * rng.standard_normal((sum(seg_sizes), d))).astype(np.float32)
    w_dense = (0.01 * rng.standard_normal((n_dense, d))).astype(np.float32)
    inits = [
        numpy_helper.from_array(artist_vecs.astype(np.float32), "artist_emb"),  # (V, d)
        numpy_helper.from_array(seg_table, "seg_emb"),  # (sum S_i, d)
        numpy_helper.from_array(offsets, "seg_off"),
        numpy_helper.from_array(w_dense, "w_dense"),  # (D, d)
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["artist_emb", "history"], ["h_emb"]),  # (B, L, d)
        n("Greater", ["history", "zero"], ["h_valid"]),  # (B, L)
        n("Cast", ["h_valid"], ["h_mask"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["h_mask", "ax2"], ["h_mask3"]),  # (B, L, 1)
        n("Mul", ["h_emb", "h_mask3"], ["h_masked"]),
        n("ReduceSum", ["h_masked", "ax1"], ["h_sum"], keepdims=0),  # (B, d)
        n("Add", ["segments", "seg_off"], ["seg_idx"]),  # (B, S)
        n("Gather", ["seg_emb", "seg_idx"], ["s_emb"]),  # (B, S, d)
        n("ReduceSum", ["s_emb", "ax1"], ["s_sum"], keepdims=0),  # (B, d)
        n("MatMul", ["dense", "w_dense"], ["d_out"]),  # (B, d)
        n("Add", ["h_sum", "s_sum"], ["u0"]),
        n("Add", ["u0", "d_out"], ["u"]),  # (B, d)
        n("ReduceL2", ["u"], ["u_norm"], axes=[1], keepdims=1),  # (B, 1)
        n("Max", ["u_norm", "eps"], ["u_safe"]),
        n("Div", ["u", "u_safe"], ["user_vec"]),  # (B, d)
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_user_tower",
        [
            helper.make_tensor_value_info("history", TensorProto.INT64, ["B", "L"]),
            helper.make_tensor_value_info("segments", TensorProto.INT64, ["B", len(seg_sizes)]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["B", n_dense]),
        ],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def bundle_files(
    spec: SyntheticSpec, trending: Mapping[str, Any] | None = None
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, manifest) of a complete bundle, ready for ``publish_bundle``."""
    rng = np.random.default_rng(spec.seed)
    ids = artist_ids(spec)
    centres = (
        np.eye(spec.n_clusters, spec.dim, dtype=np.float32)
        if spec.n_clusters <= spec.dim
        else (rng.standard_normal((spec.n_clusters, spec.dim)).astype(np.float32))
    )
    vecs = centres[[cluster_of(a) for a in ids]] + spec.noise * rng.standard_normal(
        (len(ids), spec.dim)
    )
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)  # (A, d)
    # pad and unk are indexed on purpose, right on cluster 0: serving must filter them out
    table = np.concatenate([np.repeat(centres[:1], 2, axis=0), vecs])  # (V, d)
    table[:2] /= np.linalg.norm(table[:2], axis=1, keepdims=True)
    tower_table = table.copy()
    tower_table[0] = 0.0  # padding contributes nothing to the user vector
    segments = {f: [PAD, UNK, *SEGMENT_VALUES[f]] for f in USER_SEGMENT_FIELDS}
    onnx_bytes = _tower(
        tower_table, [len(v) for v in segments.values()], len(USER_DENSE_FIELDS), spec.seed
    )
    index = build_index(table, spec.index)
    names = [f"Artist {a.upper()}" for a in ids]
    popularity = np.linspace(1.0, 0.0, len(ids), dtype=np.float32)
    artists = pa.table(
        {
            "artist_id": ids,
            "as_of": pa.array([0] * len(ids), pa.timestamp("ms", tz="UTC")),
            "name": names,
            "tags": [[f"cluster{cluster_of(a)}"] for a in ids],
            "followers": [0] * len(ids),
            "days_active": [1] * len(ids),
            "streams_7d": [0] * len(ids),
            "streams_28d": [0] * len(ids),
            "listeners_7d": [0] * len(ids),
            "listeners_28d": [0] * len(ids),
            "trending_rank": list(range(1, len(ids) + 1)),
            "popularity": popularity,
            "top_tracks": [[] for _ in ids],
            "completion_rate": [0.5] * len(ids),
        },
        schema=ARTIST_FEATURES,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(artists, sink)
    trending = trending or {"global": ids[: min(50, len(ids))], "by_segment": {}}
    vocab = {"artists": [PAD, UNK, *ids], "tags": [PAD, UNK], "segments": segments}
    files = {
        FILES.user_tower: onnx_bytes,
        FILES.artist_index: index.to_bytes(),
        FILES.vocab: json.dumps(vocab).encode(),
        FILES.artists: sink.getvalue().to_pybytes(),
        FILES.trending: json.dumps(trending).encode(),
    }
    manifest = {
        "run_id": f"synthetic-{spec.seed}",
        "metrics": {},
        "model": {
            "dim": spec.dim,
            "history_len": spec.history_len,
            "segment_fields": list(USER_SEGMENT_FIELDS),
            "dense_fields": list(USER_DENSE_FIELDS),
        },
    }
    return files, manifest


def publish_synthetic(
    bundles_dir: str | Path,
    spec: SyntheticSpec = SyntheticSpec(),
    trending: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> str:
    files, manifest = bundle_files(spec, trending)
    return publish_bundle(bundles_dir, files, manifest, version=version)
