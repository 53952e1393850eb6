"""The ranking stage at serving time: the bundle's gradient-boosted ranker re-orders the
retrieval candidates.

A bundle whose manifest has a ``"ranker"`` section carries ``ranker.ubj`` (an XGBoost booster,
checksummed like every bundle file) and the names of the features it was trained on. Loading
refuses a ranker whose names differ from ``data.features.ranker.RANKER_FEATURES`` (the ones
this server computes) — serving it would feed columns to the wrong splits. The features come
from the same function as offline (``data.features.ranker.candidate_features``), with the
bundle's ``artists.parquet`` and ``trending.json`` as the artist side and the slate position
fixed at the manifest's ``serving_position``. Prediction is XGBoost's dense in-place predict on
one small float32 matrix, one thread, called without the Python wrapper's per-call work
(``models.ranker.DensePredictor``, checked against ``inplace_predict`` at load).
"""

from __future__ import annotations

import ctypes
import logging
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
log = logging.getLogger("tastemaker.serving")


class DensePredictor:
    """Scores of a float32 matrix with ``booster``: XGBoost's own dense in-place
    prediction (``XGBoosterPredictFromDense``, what ``Booster.inplace_predict`` calls), minus
    the Python wrapper's per-call work (its arguments are JSON-encoded once here, the array
    interface is formatted directly, the result copied out of XGBoost's thread-local buffer).
    For the few hundred rows of one request that work is a third of the call
    (``benchmarks/bench_ranker.py`` measures both).

    The direct call uses ``xgboost.core``'s library handle, which is not public API: at
    construction it is checked against ``inplace_predict`` on a probe matrix, and when it is
    missing or disagrees the predictor falls back to ``inplace_predict`` (``fast`` says
    which). Thread-safe like ``inplace_predict``: no state is written per call."""

    def __init__(self, booster: xgb.Booster, n_features: int, seed: int = 0) -> None:
        self.booster = booster
        self.n_features = n_features
        self.fast = False
        try:
            from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs

            self._lib, self._ulong, self._check = _LIB, c_bst_ulong, _check_call
            self._args = make_jcargs(
                type=0,
                training=False,
                iteration_begin=0,
                iteration_end=0,
                missing=float("nan"),
                strict_shape=False,
                cache_id=0,
            )
            probe = np.random.default_rng(seed).normal(size=(64, n_features)).astype(np.float32)
            want = np.asarray(booster.inplace_predict(probe, validate_features=False))
            self.fast = True
            if not np.array_equal(self(probe), want):
                raise ValueError("direct predictions differ from inplace_predict")
        except Exception as exc:  # an XGBoost whose internals moved: the public path
            self.fast = False
            log.warning(
                "ranker: direct XGBoost predict unavailable (%s); using inplace_predict", exc
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n,) float32 scores of ``x`` (n, F)."""
        if not self.fast:
            return np.asarray(self.booster.inplace_predict(x, validate_features=False), np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        if not n:
            return np.zeros(0, np.float32)
        interface = (
            b'{"data": [%d, true], "shape": [%d, %d], "strides": null, '
            b'"typestr": "<f4", "version": 3}' % (x.ctypes.data, n, x.shape[1])
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._lib.XGBoosterPredictFromDense(
                self.booster.handle,
                interface,
                self._args,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        return np.ctypeslib.as_array(preds, shape=(n,)).copy()


def bundle_booster(
    bundle: Bundle,
    section_name: str,
    file_name: str,
    n_features: int,
    check: Callable[[list[str], str], None],
) -> tuple[dict[str, Any], xgb.Booster]:
    """(manifest section, booster) of a bundle's XGBoost stage: the section must exist and
    name this code's features (``check``), and the booster must read that many;
    :class:`RankerSpecError` otherwise. One thread: a request scores a few hundred rows."""
    section = bundle.manifest.get(section_name)
    if not isinstance(section, dict):
        raise RankerSpecError(f"bundle {bundle.version}: manifest has no '{section_name}' section")
    check(list(section.get("features") or []), f"bundle {bundle.version}")
    booster = xgb.Booster(params={"nthread": 1})
    booster.load_model(bytearray(bundle.file(file_name).read_bytes()))
    if booster.num_features() != n_features:
        raise RankerSpecError(
            f"bundle {bundle.version}: {file_name} expects {booster.num_features()} "
            f"features but its spec names {n_features}"
        )
    return section, booster


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
    predict: DensePredictor = field(repr=False)  # (n, F) float32 -> (n,) scores

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        artists: pa.Table,
        trending: Mapping[str, Any],
        encoder: FeatureEncoder,
    ) -> ServingRanker:
        """The bundle's ranker; :class:`RankerSpecError` when its features are not ours."""
        section, booster = bundle_booster(bundle, "ranker", RANKER_FILE, N_FEATURES, check_spec)
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
            predict=DensePredictor(booster, N_FEATURES),
        )

    def features(
        self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
    ) -> np.ndarray:
        """(n, F) features of candidates given by vocab index in retrieval order (rank =
        place + 1)."""
        history = [self.artist_index(a) for a in (row.get("history") or ())]
        profile = self.context.tag_profile_rows(self.rows_of_vocab[np.asarray(history, np.int64)])
        return candidate_features(
            self.context,
            row,
            self.rows_of_vocab[vocab_idx],
            retrieval,
            np.arange(1, len(vocab_idx) + 1),
            self.position,
            profile,
        )

    def score(
        self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
    ) -> np.ndarray:
        """(n,) ranker scores of the candidates, higher is better."""
        if not len(vocab_idx):
            return np.zeros(0, np.float32)
        return self.predict(self.features(row, vocab_idx, retrieval))  # (n, F) -> (n,)

    def rerank(
        self, row: Mapping[str, Any], vocab_idx: np.ndarray, retrieval: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(order, scores): the candidates' places best first and their ranker scores."""
        scores = self.score(row, vocab_idx, retrieval)
        return np.argsort(-scores, kind="stable"), scores
