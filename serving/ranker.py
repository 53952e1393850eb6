"""The ranking stage at serving time: the bundle's gradient-boosted ranker re-orders the
retrieval candidates.

A bundle whose manifest has a ``"ranker"`` section carries ``ranker.ubj`` (an XGBoost booster,
checksummed like every bundle file) and the names of the features it was trained on. Loading
refuses a ranker whose names differ from ``data.features.ranker.RANKER_FEATURES`` (the ones
this server computes) — serving it would feed columns to the wrong splits. The features come
from the same function as offline (``data.features.ranker.candidate_features``), with the
bundle's ``artists.parquet`` and ``trending.json`` as the artist side and the slate position
fixed at the manifest's ``serving_position``. Prediction is XGBoost's ``inplace_predict`` on
one small matrix, one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from data.features.encoding import FeatureEncoder
from data.features.ranker import (
    N_FEATURES,
    SERVING_POSITION,
    RankerContext,
    RankerSpecError,
    candidate_features,
    check_spec,
    trending_lists,
)
from index import RANKER_FILE, Bundle

DEFAULT_CANDIDATES = 200


@dataclass(frozen=True)
class ServingRanker:
    booster: xgb.Booster = field(repr=False)
    context: RankerContext = field(repr=False)
    candidates: int  # retrieval candidates re-ordered per request
    position: int  # the slate position every candidate is scored at
    # (V,) context row of each artist vocabulary index (-1: not in the catalogue), so a request
    # maps its candidates and history with one take instead of string lookups
    rows_of_vocab: np.ndarray = field(repr=False)
    artist_index: Callable[[str], int] = field(repr=False)  # the encoder's id -> vocab index

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, artists: pa.Table, trending: Mapping[str, Any],
        encoder: FeatureEncoder,
    ) -> ServingRanker:  # fmt: skip
        """The bundle's ranker; :class:`RankerSpecError` when its features are not ours."""
        section = bundle.manifest.get("ranker")
        if not isinstance(section, dict):
            raise RankerSpecError(f"bundle {bundle.version}: manifest has no 'ranker' section")
        check_spec(list(section.get("features") or []), f"bundle {bundle.version}")
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(bundle.file(RANKER_FILE).read_bytes()))
        if booster.num_features() != N_FEATURES:
            raise RankerSpecError(
                f"bundle {bundle.version}: {RANKER_FILE} expects {booster.num_features()} "
                f"features but its spec names {N_FEATURES}"
            )
        candidates = int(section.get("candidates", DEFAULT_CANDIDATES))
        if candidates < 1:
            raise ValueError(f"bundle {bundle.version}: ranker candidates must be >= 1")
        context = RankerContext.build(artists, trending_lists(trending))
        rows_of_vocab = np.append(context.rows(list(encoder.artist_tokens)), -1)  # [-1]: unknown
        return cls(
            booster=booster,
            context=context,
            candidates=candidates,
            position=int(section.get("serving_position", SERVING_POSITION)),
            rows_of_vocab=rows_of_vocab,
            artist_index=encoder.artist_index,
        )

    def features(self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
                 ) -> np.ndarray:  # fmt: skip
        """(n, F) features of candidates given by vocab index in retrieval order (rank =
        place + 1)."""
        history = [self.artist_index(a) for a in (row.get("history") or ())]
        profile = self.context.tag_profile_rows(self.rows_of_vocab[np.asarray(history, np.int64)])
        return candidate_features(
            self.context, row, self.rows_of_vocab[vocab_idx], retrieval,
            np.arange(1, len(vocab_idx) + 1), self.position, profile,
        )  # fmt: skip

    def score(self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
              ) -> np.ndarray:  # fmt: skip
        """(n,) ranker scores of the candidates, higher is better."""
        if not len(vocab_idx):
            return np.zeros(0, np.float32)
        x = self.features(row, vocab_idx, retrieval)  # (n, F)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), np.float32)

    def rerank(self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(order, scores): the candidates' places best first and their ranker scores."""
        scores = self.score(row, vocab_idx, retrieval)
        return np.argsort(-scores, kind="stable"), scores
