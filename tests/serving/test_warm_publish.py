"""Warm, then publish: a promoted bundle's slates are precomputed before ``CURRENT`` moves, the
service switches bundle and slates together, and a failed precompute leaves the old bundle
serving. Run on the SQLite slate store and on Redis (the test DB, a private prefix)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from data.features.online_store import open_online_store, table_from_rows
from index.bundle import current_version
from serving.app import create_app
from serving.precompute import precompute_bundle, warm_and_publish
from serving.slates import BundleSlates, slate_versions
from tests.fixtures.synthetic_bundle import bundle_files
from tests.serving.conftest import ARTISTS, SPEC, TRENDING, feature_row

N_USERS = 300


def _users(tmp_path: Path) -> tuple[list[str], Path, Path]:
    """N_USERS listeners with histories: their ids, a USER_FEATURES parquet, an online store."""
    rng = random.Random(3)
    ids = [f"listener-{i}" for i in range(N_USERS)]
    rows = [feature_row(u, rng.sample(ARTISTS, 3), country="DE") for u in ids]
    parquet = tmp_path / "features" / "user_features.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_from_rows(rows), parquet)
    online = tmp_path / "online" / "listeners.sqlite"
    store = open_online_store(online)
    store.put_many(rows)
    store.close()
    return ids, parquet, online


def _publish(bundles: Path, version: str, current: bool) -> str:
    from index.bundle import publish_bundle

    files, manifest = bundle_files(SPEC, TRENDING)
    return publish_bundle(bundles, files, manifest, version=version, make_current=current)


@pytest.fixture(params=["sqlite", "redis"])
def slate_target(request, tmp_path: Path):
    if request.param == "sqlite":
        yield str(tmp_path / "online" / "slates.sqlite")
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    target = f"{url}?prefix={prefix}slates"
    yield target
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.unlink(*keys)
    r.close()


def _sources(client: TestClient, ids: list[str]) -> Counter:
    out: Counter = Counter()
    for u in ids:
        r = client.get(f"/v1/users/{u}/recommendations?k=5")
        assert r.status_code == 200, r.text
        out[(r.json()["source"], r.json()["bundle_version"])] += 1
    return out


def test_promotion_warms_slates_before_current_moves_and_switches_them_together(
    tmp_path, slate_target
) -> None:
    from core.settings import Settings

    ids, parquet, online = _users(tmp_path)
    bundles = tmp_path / "bundles"
    v1 = _publish(bundles, "20240101T000000Z-old", current=True)
    assert precompute_bundle(bundles, parquet, slate_target).slates == N_USERS
    settings = Settings(
        workspace=tmp_path,
        bundle_dir=bundles,
        online_store_url=str(online),
        slate_store_url=slate_target,
        reload_interval_s=0.05,
        public_recommendations=True,  # the subject is the switch, not who may ask
    )
    failures: list[str] = []
    served: Counter = Counter()
    stop = threading.Event()
    with TestClient(create_app(settings)) as c:
        assert _sources(c, ids[:50]) == Counter({("precomputed", v1): 50})

        def load() -> None:  # a load run across the switch: every answer must be a 200
            i = 0
            while not stop.is_set():
                r = c.get(f"/v1/users/{ids[i % N_USERS]}/recommendations?k=5")
                i += 1
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:100]}")
                    continue
                body = r.json()
                served[(body["source"], body["bundle_version"])] += 1

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        v2 = _publish(bundles, "20240102T000000Z-new", current=False)
        time.sleep(0.3)  # published, not current: the service stays on v1 and its slates
        assert c.app.state.recommender.holder.current.version == v1
        warmed = warm_and_publish(bundles, v2, parquet, slate_target)
        assert warmed.precomputed.slates == N_USERS and warmed.previous == v1
        deadline = time.monotonic() + 10
        while c.app.state.recommender.holder.current.version != v2:
            assert time.monotonic() < deadline, "the watcher never swapped to the new bundle"
            time.sleep(0.02)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        # across the switch every answer came from the slates of the bundle that served it
        assert set(served) <= {("precomputed", v1), ("precomputed", v2)}, served
        assert served[("precomputed", v2)] > 0
        after = _sources(c, random.Random(1).sample(ids, 200))
        assert after[("precomputed", v2)] >= 0.99 * 200, after
    # the old bundle's slates were kept through the switch; the next promotion removes them
    assert slate_versions(slate_target) == sorted([v1, v2])
    v3 = _publish(bundles, "20240103T000000Z-next", current=False)
    assert warm_and_publish(bundles, v3, parquet, slate_target).dropped == [v1]
    assert slate_versions(slate_target) == sorted([v2, v3])


def test_a_failed_precompute_leaves_the_old_bundle_and_its_slates_serving(
    tmp_path, slate_target
) -> None:
    from index import CorruptBundleError

    ids, parquet, online = _users(tmp_path)
    bundles = tmp_path / "bundles"
    v1 = _publish(bundles, "20240101T000000Z-old", current=True)
    precompute_bundle(bundles, parquet, slate_target)
    v2 = _publish(bundles, "20240102T000000Z-bad", current=False)
    (bundles / v2 / "vocab.json").write_bytes(b"{}")  # fails its checksum
    with pytest.raises(CorruptBundleError):
        warm_and_publish(bundles, v2, parquet, slate_target)
    assert current_version(bundles) == v1
    assert slate_versions(slate_target) == [v1]
    v3 = _publish(bundles, "20240103T000000Z-nousers", current=False)
    with pytest.raises(FileNotFoundError):
        warm_and_publish(bundles, v3, tmp_path / "missing.parquet", slate_target)
    assert current_version(bundles) == v1 and slate_versions(slate_target) == [v1]
    slates = BundleSlates(slate_target)
    try:
        user_key = feature_row(ids[0])["user_key"]
        slate = slates.lookup(user_key, v1)
        assert slate is not None and slate.version == v1
        assert slates.lookup(user_key, v3) is None  # no store of its own, no unversioned one
    finally:
        slates.close()
