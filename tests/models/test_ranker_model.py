"""The ranking stage's model (models.ranker) on slates with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from models.ranker import Ranker, RankerConfig, RankerFitError, RankingSet, fit_ranker

NAMES = ("signal", "noise")


def slates(n_slates: int, seed: int) -> RankingSet:
    """10 rows a slate; the one row with the largest ``signal`` is the click."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_slates * 10, 2)).astype(np.float32)
    qid = np.repeat(np.arange(n_slates), 10)
    y = np.zeros(len(x), np.float32)
    best = x[:, 0].reshape(n_slates, 10).argmax(axis=1) + np.arange(n_slates) * 10
    y[best] = 1.0
    return RankingSet(x, y, qid)


CONFIG = RankerConfig(n_rounds=60, early_stopping=10, nthread=1)


def test_ranker_learns_the_known_order() -> None:
    ranker, record = fit_ranker(slates(300, 0), slates(100, 1), NAMES, CONFIG)
    test = slates(100, 2)
    scores = ranker.predict(test.x).reshape(100, 10)
    top = scores.argmax(axis=1)
    truth = test.x[:, 0].reshape(100, 10).argmax(axis=1)
    assert (top == truth).mean() > 0.8  # chance: 0.1
    assert record["valid/ndcg@10"] > 0.9 and 1 <= record["rounds"] <= 60
    importance = ranker.importance()
    assert max(importance, key=importance.__getitem__) == "signal"


def test_round_trip_keeps_predictions() -> None:
    ranker, _ = fit_ranker(slates(100, 0), slates(50, 1), NAMES, CONFIG)
    again = Ranker.from_bytes(ranker.to_bytes(), NAMES)
    x = slates(20, 3).x
    np.testing.assert_array_equal(ranker.predict(x), again.predict(x))


def test_wrong_width_and_names_are_refused() -> None:
    ranker, _ = fit_ranker(slates(100, 0), slates(50, 1), NAMES, CONFIG)
    with pytest.raises(ValueError, match=r"expects \(n, 2\) features"):
        ranker.predict(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="booster has 2 features"):
        Ranker.from_bytes(ranker.to_bytes(), ("a", "b", "c"))


def test_no_click_is_a_fit_error_and_unsorted_queries_are_refused() -> None:
    s = slates(20, 0)
    with pytest.raises(RankerFitError, match="no query with a click"):
        fit_ranker(RankingSet(s.x, np.zeros_like(s.y), s.qid), s, NAMES, CONFIG)
    with pytest.raises(ValueError, match="qid must be sorted"):
        RankingSet(s.x, s.y, s.qid[::-1].copy())


POINTWISE = RankerConfig(
    objective="binary:logistic", stop_metric="logloss", n_rounds=60, early_stopping=10, nthread=1
)


def test_pointwise_objective_learns_the_order_and_stops_on_logloss() -> None:
    params = POINTWISE.params()
    assert params["objective"] == "binary:logistic" and "lambdarank_pair_method" not in params
    assert params["eval_metric"] == ["ndcg@10", "logloss"]  # XGBoost stops on the last one
    ranker, record = fit_ranker(slates(300, 0), slates(100, 1), NAMES, POINTWISE)
    test = slates(100, 2)
    top = ranker.predict(test.x).reshape(100, 10).argmax(axis=1)
    truth = test.x[:, 0].reshape(100, 10).argmax(axis=1)
    assert (top == truth).mean() > 0.8  # chance: 0.1
    assert record["valid/ndcg@10"] > 0.9 and 0.0 < record["valid/logloss"] < 0.33  # 0.33: prior
    assert ranker.predict(test.x).min() >= 0.0 and ranker.predict(test.x).max() <= 1.0


def test_the_default_objective_is_lambdamart_and_an_unknown_one_is_refused() -> None:
    params = RankerConfig().params()
    assert params["objective"] == "rank:ndcg" and params["lambdarank_pair_method"] == "topk"
    assert params["eval_metric"] == ["ndcg@10"]
    with pytest.raises(ValueError, match="objective must be one of"):
        RankerConfig(objective="reg:squarederror")
