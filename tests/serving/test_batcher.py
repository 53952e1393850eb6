"""Micro-batching: concurrent real-time requests share one ONNX call and one index search, and
each gets exactly the answer it gets alone.

A synthetic bundle of 2,000 artists in 16 clusters (real ONNX tower, flat FAISS index), with and
without a ranker; 120 listeners with random histories, follows and seen sets; list lengths mixed
in one batch. Every concurrent answer is compared with :func:`recommend_from_row` for the row
alone (same artists, scores to 1e-6, same reasons).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import TEST_KEY, USERS, feature_row
from test_ranker_serving import publish, worst_first_ranker

from core.settings import Settings
from data.features.online_store import open_online_store
from index import load_bundle
from serving.app import create_app
from serving.batcher import MicroBatcher
from serving.model import ServingModel
from serving.pipeline import score_rows
from serving.recommender import Recommender, answer_from_picks, recommend_from_row
from serving.reload import ModelHolder
from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, publish_synthetic

SPEC = SyntheticSpec(n_artists=2000, n_clusters=16, dim=16, history_len=20)
KS = (1, 5, 10, 50)


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    artists = artist_ids(SPEC)
    rows = []
    for u in range(n):
        picks = rng.choice(len(artists), size=60, replace=False)
        h = int(rng.integers(0, 30))  # some rows have no history: trending, no model call
        row = feature_row(
            f"user-{u}",
            [artists[i] for i in picks[:h]],
            followed=[artists[i] for i in picks[40 : 40 + int(rng.integers(0, 10))]],
            seen=[artists[i] for i in picks[30:40]],
        )
        rows.append(row)
    return rows


async def _concurrently(batcher: MicroBatcher, model: ServingModel, rows: list[dict]) -> list:
    async def one(j: int, row: dict):
        k = KS[j % len(KS)]
        return answer_from_picks(model, row, k, await batcher.score(model, row, k))

    return await asyncio.gather(*(one(j, r) for j, r in enumerate(rows)))


class CountingBatcher(MicroBatcher):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def flush(self) -> None:
        if self._open:
            self.sizes.append(len(self._open))
        super().flush()


@pytest.fixture(scope="module")
def big_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batcher") / "bundles"
    publish_synthetic(root, SPEC, version="20240101T000000Z-batch")
    return root


def _check_equal_to_alone(model: ServingModel, rows: list[dict], max_batch: int) -> list[int]:
    batcher = CountingBatcher(max_wait_ms=2.0, max_batch=max_batch)
    got = asyncio.run(_concurrently(batcher, model, rows))
    for j, (row, answer) in enumerate(zip(rows, got, strict=True)):
        alone = recommend_from_row(model, row, KS[j % len(KS)])
        assert [r.artist_id for r in answer.items] == [r.artist_id for r in alone.items]
        assert [r.score for r in answer.items] == pytest.approx(
            [r.score for r in alone.items], abs=1e-6
        )
        assert [r.reason for r in answer.items] == [r.reason for r in alone.items]
        assert answer.source == alone.source
    return batcher.sizes


def test_batched_answers_equal_one_at_a_time(big_bundles: Path) -> None:
    model = ModelHolder(big_bundles).current
    rows = _rows(120)
    sizes = _check_equal_to_alone(model, rows, max_batch=64)
    with_history = sum(1 for r in rows if r["history"])
    assert sum(sizes) == with_history  # every model row scored exactly once
    assert max(sizes) == 64 and len(sizes) == -(-with_history // 64)  # batched, capped


def test_batched_answers_equal_one_at_a_time_with_a_ranker(tmp_path: Path) -> None:
    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    assert model.ranker is not None
    rows = list(USERS.values()) * 7
    sizes = _check_equal_to_alone(model, rows, max_batch=64)
    assert sizes == [sum(1 for r in rows if r["history"])]


def test_a_batch_mixing_two_bundles_scores_each_with_its_own(big_bundles: Path) -> None:
    """A swap in the middle of a batch: each request keeps the bundle it started with."""
    first = ModelHolder(big_bundles).current
    other = ServingModel.from_bundle(load_bundle(publish(big_bundles.parent / "b2", None)))
    rows = [r for r in _rows(20, seed=3) if r["history"]][:6] + list(USERS.values())[:2]
    batcher = MicroBatcher(max_wait_ms=2.0, max_batch=64)
    theirs = {u["user_key"] for u in USERS.values()}
    models = [other if r["user_key"] in theirs else first for r in rows]

    async def run() -> list:
        return await asyncio.gather(
            *(batcher.score(m, r, 10) for m, r in zip(models, rows, strict=True))
        )

    got = asyncio.run(run())
    for m, r, picks in zip(models, rows, got, strict=True):
        want = score_rows(m, [r], 10)[0]
        assert picks is not None and want is not None
        assert (picks.ids, picks.because) == (want.ids, want.because)
        assert picks.scores == pytest.approx(want.scores, abs=1e-6)


def test_a_lone_request_waits_less_than_the_bound(big_bundles: Path) -> None:
    """With nothing else arriving the batch goes after a few loop turns, far below 2 ms; a
    full batch goes at once."""
    model = ModelHolder(big_bundles).current
    row = next(r for r in _rows(10) if r["history"])
    batcher = CountingBatcher(max_wait_ms=2.0, max_batch=64)

    async def lone() -> float:
        score_rows(model, [row], 10)  # warm
        t0 = time.perf_counter()
        await batcher.score(model, row, 10)
        return time.perf_counter() - t0

    waits = [asyncio.run(lone()) for _ in range(5)]
    alone = min(_timed(lambda: score_rows(model, [row], 10)) for _ in range(5))
    assert batcher.sizes == [1] * 5
    assert min(waits) < alone + 0.002  # the wait is bounded by max_wait_ms (2 ms)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.parametrize("wait_ms", [0.0, 2.5])
def test_settings_bound_the_wait(wait_ms: float) -> None:
    if wait_ms > 2.0:
        with pytest.raises(ValueError):
            Settings(batch_max_wait_ms=wait_ms)
    else:
        assert Settings(batch_max_wait_ms=wait_ms).batch_max_wait_ms == 0.0
    with pytest.raises(ValueError):
        MicroBatcher(max_wait_ms=0.0, max_batch=8)


def test_concurrent_http_requests_answer_as_alone(
    tmp_path: Path, big_bundles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app: concurrent GETs (batched) answer what the batcher-less app answers."""
    rows = [r for r in _rows(40, seed=1)]
    path = tmp_path / "users.sqlite"
    store = open_online_store(path)
    store.put_many(rows)
    store.close()
    base = dict(
        workspace=tmp_path,
        bundle_dir=big_bundles,
        online_store_url=str(path),
        reload_interval_s=0,
        public_recommendations=True,  # the subject is batching, not who may ask
    )
    ids = [f"user-{u}" for u in range(40)]

    async def ask(app, concurrent: bool) -> list[list[str]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def one(u: str) -> list[str]:
                r = await client.get(f"/v1/users/{u}/recommendations?k=10")
                assert r.status_code == 200
                return [(i["artist_id"], i["reason"]) for i in r.json()["items"]]

            if concurrent:
                return await asyncio.gather(*(one(u) for u in ids))
            return [await one(u) for u in ids]

    batched = create_app(Settings(**base, batch_max_wait_ms=2.0))
    alone = create_app(Settings(**base, batch_max_wait_ms=0))
    assert isinstance(batched.state.recommender.batcher, MicroBatcher)
    assert alone.state.recommender.batcher is None
    singles, batches = _batch_counts()
    assert asyncio.run(ask(batched, True)) == asyncio.run(ask(alone, False))
    singles2, batches2 = _batch_counts()
    assert batches2 - singles2 > batches - singles  # some batches held more than one request
    assert TEST_KEY  # the rows above are keyed with the test secret (conftest fixture)


def _batch_counts() -> tuple[float, float]:
    """(batches of one row, all batches) observed so far by the service's histogram."""
    from serving.metrics import BATCH_SIZE

    samples = {
        (s.name, s.labels.get("le")): s.value for m in BATCH_SIZE.collect() for s in m.samples
    }
    return samples[("tastemaker_realtime_batch_rows_bucket", "1.0")], samples[
        ("tastemaker_realtime_batch_rows_count", None)
    ]


def test_recommender_without_store_row_needs_no_batch(big_bundles: Path, store_path: Path) -> None:
    holder = ModelHolder(big_bundles)
    store = open_online_store(store_path)
    rec = Recommender(holder, store, TEST_KEY.encode(), batcher=CountingBatcher(2.0, 8))
    try:
        got = asyncio.run(rec.recommend_async("nobody", 5, country="DE"))
        assert got.source == "trending" and rec.batcher.sizes == []  # type: ignore[union-attr]
    finally:
        store.close()
