"""The two-stage system at serving time: candidates from several sources, re-ordered by the
bundle's discovery ranker.

A bundle whose manifest has a ``"two_stage"`` section carries ``two_stage.ubj`` (XGBoost
booster) and ``neighbours.parquet`` (each artist's top-M co-listening neighbours), both
checksummed like every bundle file (a corrupt one refuses the whole bundle). Per listener:
the two-tower's top-N (the FAISS search the pipeline already ran) ∪ the neighbours of the
listener's artists ∪ the trending list of their segment, each candidate tagged with its
sources (``data.features.candidates``: the same union and features as training), scored by
the booster, best first. Ids are artist vocab indices throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from core.constants import UNK_INDEX
from data.features.candidates import (
    TWO_STAGE_FEATURES,
    CandidateConfig,
    Candidates,
    NeighbourTable,
    RetrievalBlend,
    blend_scores,
    check_two_stage_spec,
    gather,
    two_stage_features,
)
from data.features.encoding import FeatureEncoder
from data.features.ranker import RankerContext, trending_lists
from index import NEIGHBOURS_FILE, TWO_STAGE_FILE, Bundle
from serving.ranker import DensePredictor, bundle_booster

log = logging.getLogger("tastemaker.serving")


@dataclass(frozen=True)
class ServingTwoStage:
    booster: xgb.Booster = field(repr=False)
    context: RankerContext = field(repr=False)
    neighbours: NeighbourTable = field(repr=False)  # (V, V) by vocab index
    trending: Mapping[str, np.ndarray] = field(repr=False)  # segment key -> vocab indices
    config: CandidateConfig
    blend: RetrievalBlend  # the order: the ranker's log-odds blended with the two-tower rank
    rows_of_vocab: np.ndarray = field(repr=False)  # (V + 1,) context row per vocab index
    encoder: FeatureEncoder = field(repr=False)
    predict: DensePredictor = field(repr=False)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        artists: pa.Table,
        trending: Mapping[str, Any],
        encoder: FeatureEncoder,
    ) -> ServingTwoStage:
        """The bundle's two-stage system; :class:`RankerSpecError` when its features are not
        this code's."""
        n_features = len(TWO_STAGE_FEATURES)
        section, booster = bundle_booster(
            bundle, "two_stage", TWO_STAGE_FILE, n_features, check_two_stage_spec
        )
        depths = dict(section.get("candidates") or {})
        config = CandidateConfig(**{k: int(v) for k, v in depths.items()})
        blend = RetrievalBlend.recorded(section.get("blend"))
        tokens = list(encoder.artist_tokens)
        index_of = {a: i for i, a in enumerate(tokens) if i > UNK_INDEX}
        table = pq.read_table(bundle.file(NEIGHBOURS_FILE), use_threads=False)
        neighbours = NeighbourTable.from_table(table, index_of, len(tokens))
        lists = trending_lists(trending)
        context = RankerContext.build(artists, lists)
        vocab_lists = {
            key: np.asarray([index_of.get(a, -1) for a in ids], np.int64)
            for key, ids in lists.items()
        }
        return cls(
            booster=booster,
            context=context,
            neighbours=neighbours,
            trending=vocab_lists,
            config=config,
            blend=blend,
            rows_of_vocab=np.append(context.rows(tokens), -1),
            encoder=encoder,
            predict=DensePredictor(booster, n_features),
        )

    def _ids(self, artists: Any) -> np.ndarray:
        enc = self.encoder
        return np.asarray([enc.artist_index(a) for a in (artists or ())], np.int64)

    def rank(
        self,
        row: Mapping[str, Any],
        retrieval: list[tuple[int, float]],
        user_vec: np.ndarray,
        artist_vectors: np.ndarray,
    ) -> tuple[Candidates, np.ndarray]:
        """(candidates, scores: the ranker's blended with the two-tower rank as the bundle
        says, ``blend_scores``) of one listener. ``retrieval``: the two-tower's
        unexcluded (vocab index, score) best first (at least ``config.two_tower`` of them when
        the catalogue has them); ``user_vec`` (d,) its user vector, ``artist_vectors`` (V, d)."""
        excluded = np.concatenate(
            [
                self._ids(row.get("seen")),
                self._ids(row.get("followed")),
                np.array([0, UNK_INDEX], np.int64),  # pad and unk are never candidates
            ]
        )
        have = np.concatenate([self._ids(row.get("seen")), self._ids(row.get("history"))])
        have = np.concatenate([have, self._ids(row.get("followed"))])
        have = have[have > UNK_INDEX]
        knn = self.neighbours.scores(have)  # (V,)
        tt_ids = np.asarray([i for i, _ in retrieval], np.int64)
        tt_scores = np.asarray([s for _, s in retrieval], np.float32)
        cands = gather((tt_ids, tt_scores), knn, row, self.trending, excluded, self.config)
        if not len(cands):
            return cands, np.zeros(0, np.float32)
        tt_all = artist_vectors[cands.ids] @ user_vec  # (n,) the two-tower cosine of each
        x = two_stage_features(
            self.context,
            row,
            self.rows_of_vocab[cands.ids],
            cands,
            tt_all.astype(np.float32),
            knn[cands.ids],
            self.config,
        )
        return cands, blend_scores(self.predict(x), x, self.blend)
