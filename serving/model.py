"""A loaded bundle: ONNX user tower, FAISS index, vocabularies, catalogue and trending lists.

Everything here is immutable once built, so many request threads can share one instance and a
hot swap only has to replace the reference to it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq

from data.features.encoding import FeatureEncoder
from index import FILES, ArtistIndex, Bundle, CorruptBundleError
from serving.peer import ServingPeer
from serving.ranker import ServingRanker
from serving.two_stage import ServingTwoStage

log = logging.getLogger("tastemaker.serving")

INPUTS = ("history", "segments", "dense")


@dataclass(frozen=True)
class ServingModel:
    version: str
    manifest: Mapping[str, Any] = field(repr=False)
    encoder: FeatureEncoder = field(repr=False)
    session: ort.InferenceSession = field(repr=False)
    index: ArtistIndex
    artist_vectors: np.ndarray = field(repr=False)  # (V, d) by vocab index; zero rows if absent
    names: Mapping[str, str] = field(repr=False)  # artist_id -> display name
    trending_global: tuple[str, ...] = field(repr=False)
    trending_by_segment: Mapping[str, tuple[str, ...]] = field(repr=False)
    # the ranking stage, when the bundle carries one (serving.ranker); None: retrieval order
    ranker: ServingRanker | None = field(default=None, repr=False)
    # the two-stage system (serving.two_stage: multi-source candidates + discovery ranker),
    # when the bundle carries one; it takes the place of ``ranker``
    two_stage: ServingTwoStage | None = field(default=None, repr=False)
    # a benchmark peer served through its precomputed slates (serving.peer), when the bundle
    # carries one: it answers in place of retrieval; the two-tower files name and explain
    peer: ServingPeer | None = field(default=None, repr=False)

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, onnx_threads: int = 1, faiss_threads: int | None = 1
    ) -> ServingModel:
        """Load and cross-check a verified bundle; any inconsistency is a corrupt bundle."""
        try:
            return cls._load(bundle, onnx_threads, faiss_threads)
        except CorruptBundleError:
            raise
        except Exception as exc:  # onnxruntime, pyarrow, json: any failure means "do not serve it"
            raise CorruptBundleError(f"bundle {bundle.path} cannot be served: {exc}") from exc

    @classmethod
    def _load(cls, bundle: Bundle, onnx_threads: int, faiss_threads: int | None) -> ServingModel:
        paths = {name: bundle.file(name) for name in FILES.serving}
        vocab = json.loads(paths[FILES.vocab].read_text())
        if "model" not in bundle.manifest:
            raise ValueError("manifest.json has no 'model' section (history_len, fields, dim)")
        encoder = FeatureEncoder.from_bundle(vocab, bundle.manifest["model"])

        options = ort.SessionOptions()
        options.intra_op_num_threads = onnx_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(paths[FILES.user_tower]), options, providers=["CPUExecutionProvider"]
        )
        names_in = {i.name for i in session.get_inputs()}
        expected = (*INPUTS, "follows") if encoder.follows_len > 0 else INPUTS
        if names_in != set(expected):
            raise ValueError(
                f"user_tower.onnx inputs are {sorted(names_in)}; expected {list(expected)}"
            )

        index = ArtistIndex.load(paths[FILES.artist_index], search_threads=faiss_threads)
        probe = session.run(None, encoder.encode([{}]))[0]  # (1, d)
        if probe.shape != (1, index.dim):
            raise ValueError(
                f"user tower outputs {probe.shape[1:]} but the index has dimension {index.dim}"
            )
        ids, vecs = index.vectors()  # (N,), (N, d)
        n_vocab = len(encoder.artist_tokens)
        if len(ids) and (ids.max() >= n_vocab or ids.min() < 0):
            raise ValueError(
                f"artists.faiss holds ids outside the artist vocabulary (size {n_vocab})"
            )
        artist_vectors = np.zeros((n_vocab, index.dim), dtype=np.float32)  # (V, d)
        artist_vectors[ids] = vecs

        # one thread: a reload runs beside the request path, and a pool would take its core
        catalogue = pq.read_table(paths[FILES.artists], use_threads=False)
        table = catalogue.select(["artist_id", "name"])
        names = {
            a: (n or a)
            for a, n in zip(
                table.column("artist_id").to_pylist(), table.column("name").to_pylist(), strict=True
            )
        }
        trending = json.loads(paths[FILES.trending].read_text())
        ranker = (
            ServingRanker.from_bundle(bundle, catalogue, trending, encoder)
            if "ranker" in bundle.manifest
            else None
        )
        two_stage = (
            ServingTwoStage.from_bundle(bundle, catalogue, trending, encoder)
            if "two_stage" in bundle.manifest
            else None
        )
        peer = (
            ServingPeer.from_bundle(bundle, len(encoder.artist_tokens))
            if "peer" in bundle.manifest
            else None
        )
        known = encoder.is_known
        model = cls(
            version=bundle.version,
            manifest=bundle.manifest,
            encoder=encoder,
            session=session,
            index=index,
            artist_vectors=artist_vectors,
            names=names,
            trending_global=tuple(a for a in trending.get("global", []) if known(a)),
            trending_by_segment={
                seg: tuple(a for a in lst if known(a))
                for seg, lst in trending.get("by_segment", {}).items()
            },
            ranker=ranker,
            two_stage=two_stage,
            peer=peer,
        )
        stage = "retrieval order"
        if ranker is not None:
            stage = f"ranker over the top {ranker.candidates}"
        if two_stage is not None:
            stage = f"two-stage ({two_stage.config})"
        if peer is not None:
            stage = f"{peer.model} through {len(peer.slates)} precomputed slates"
        log.info(
            "loaded bundle %s: %d artists indexed (%s), %d-dim user tower, %s",
            bundle.version,
            index.ntotal,
            index.kind,
            index.dim,
            stage,
        )
        return model

    def name(self, artist_id: str) -> str:
        return self.names.get(artist_id, artist_id)

    def user_vectors(self, rows: list[Mapping[str, Any]]) -> np.ndarray:
        """(B, d) L2-normalised user vectors from online feature rows."""
        return self.session.run(None, self.encoder.encode(rows))[0]  # (B, d)

    @property
    def created_at(self) -> str | None:
        value = self.manifest.get("created_at")
        return None if value is None else str(value)
