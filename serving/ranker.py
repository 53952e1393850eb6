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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

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

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, artists: pa.Table, trending: Mapping[str, Any]
    ) -> ServingRanker:
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
        return cls(
            booster=booster,
            context=RankerContext.build(artists, trending_lists(trending)),
            candidates=candidates,
            position=int(section.get("serving_position", SERVING_POSITION)),
        )

    def score(self, row: Mapping[str, Any], artist_ids: Sequence[str], retrieval: np.ndarray
              ) -> np.ndarray:  # fmt: skip
        """(n,) ranker scores of candidates given in retrieval order (rank = place + 1)."""
        n = len(artist_ids)
        if not n:
            return np.zeros(0, np.float32)
        x = candidate_features(
            self.context, row, self.context.rows(artist_ids), retrieval,
            np.arange(1, n + 1), self.position,
        )  # (n, F)  # fmt: skip
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), np.float32)

    def rerank(self, row: Mapping[str, Any], artist_ids: Sequence[str], retrieval: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(order, scores): the candidates' places best first and their ranker scores."""
        scores = self.score(row, artist_ids, retrieval)
        return np.argsort(-scores, kind="stable"), scores
