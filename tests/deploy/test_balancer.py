"""Three ``tastemaker serve`` replicas on loopback behind nginx, sharing Redis (this test's DB,
a private prefix) for online features and slates and an object store (``file://``) for bundles,
each with a bundles cache of its own: requests are spread over every replica, killing one
mid-run loses no request that the balancer can retry (nginx retries it on another: 0 client
errors), and a bundle promoted during the run (warmed, then ``CURRENT`` moved) reaches every
replica that is still up, which then answer from its precomputed slates.

One failure no balancer can retry: the replica has written its response header (uvicorn writes
header and body in two writes) and dies before the body. nginx has already relayed the header,
so it can only close the client's connection (``upstream prematurely closed connection``). The
client sees a truncated body and, the call being an idempotent GET, retries it once, as the
app's client does (deploy/README.md). The test counts those apart: at most one per load thread
(each has one request in flight when the victim dies), only around the kill, each retried
successfully, and every other error fails the test."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from data.features.online_store import open_online_store, table_from_rows
from index.bundle import publish_bundle
from serving.precompute import warm_and_publish
from tests.conftest import skip_unless_required
from tests.deploy.balancer import NGINX, Cluster
from tests.fixtures.synthetic_bundle import bundle_files
from tests.serving.conftest import ARTISTS, SPEC, TEST_KEY, TRENDING, feature_row

pytestmark = pytest.mark.slow
N_USERS = 400
N_REPLICAS = 3


@pytest.fixture
def nginx() -> str:
    if not (Path(NGINX).is_file() and os.access(NGINX, os.X_OK)):
        skip_unless_required("nginx", f"{NGINX} not installed (apt-get install nginx)")
    return NGINX


@pytest.fixture
def redis_targets(redis_url, redis_prefix):
    yield f"{redis_url}?prefix={redis_prefix}users", f"{redis_url}?prefix={redis_prefix}slates"
    import redis

    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{redis_prefix}*"))
    if keys:
        r.unlink(*keys)
    r.close()


def test_replicas_behind_nginx_survive_a_kill_and_all_take_a_new_bundle(
    tmp_path, nginx, redis_targets
) -> None:
    online, slates = redis_targets
    rng = random.Random(11)
    ids = [f"listener-{i}" for i in range(N_USERS)]
    rows = [feature_row(u, rng.sample(ARTISTS, 4), country="DE") for u in ids]
    store = open_online_store(online)
    store.put_many(rows)
    store.close()
    users = tmp_path / "user_features.parquet"
    pq.write_table(table_from_rows(rows), users)
    bundles = tmp_path / "publisher" / "bundles"  # the promoting job's
    object_store = f"file://{tmp_path / 'object-store' / 'bundles'}"
    files, manifest = bundle_files(SPEC, TRENDING)
    v1 = publish_bundle(
        bundles, files, manifest, version="20240101T000000Z-one", make_current=False
    )
    warm_and_publish(bundles, v1, users, slates, bundle_store_url=object_store)

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASTEMAKER_")},
        "TASTEMAKER_PSEUDONYM_KEY": TEST_KEY,
        "TASTEMAKER_WORKSPACE": str(tmp_path / "ws"),
        "TASTEMAKER_BUNDLE_STORE_URL": object_store,
        "TASTEMAKER_ONLINE_STORE_URL": online,
        "TASTEMAKER_SLATE_STORE_URL": slates,
        "TASTEMAKER_RELOAD_INTERVAL_S": "0.2",
        "TASTEMAKER_MAX_QUEUE_MS": "1000",
        # the app backend's gateway authenticates in front of them (the subject is balancing)
        "TASTEMAKER_PUBLIC_RECOMMENDATIONS": "1",  # 3 replicas on a shared 2-core box: never shed here
    }
    cluster = Cluster(tmp_path, env)
    try:
        for i in range(N_REPLICAS):  # the same configuration, a cache folder each
            cluster.start_replica(env={"TASTEMAKER_BUNDLE_DIR": str(tmp_path / f"cache-{i}")})
        for replica in cluster.replicas:
            cluster.wait_ready(replica, timeout_s=120)
        cluster.start_nginx()

        errors: list[str] = []
        cut: list[float] = []  # monotonic times of bodies cut after nginx relayed the header
        answered: Counter = Counter()  # (upstream, bundle version, source)
        stop = threading.Event()

        def get(client: httpx.Client, user: str) -> httpx.Response:
            path = f"/v1/users/{user}/recommendations?k=5"
            try:
                return client.get(path)
            except httpx.RemoteProtocolError as exc:
                if "incomplete" not in str(exc) and "complete message body" not in str(exc):
                    raise
                cut.append(time.monotonic())
                return client.get(path)  # idempotent: the one retry a client makes

        def load(seed: int) -> None:
            pick = random.Random(seed)
            with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
                while not stop.is_set():
                    user = pick.choice(ids)
                    try:
                        r = get(client, user)
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    body = r.json()
                    upstream = r.headers["x-upstream"].split(",")[-1].strip()
                    answered[(upstream, body["bundle_version"], body["source"])] += 1

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        before = Counter(u for u, _, _ in answered.elements())
        victim = cluster.replicas[1]
        killed_at = time.monotonic()
        victim.kill()  # mid-run, no warning
        killed_by = time.monotonic()
        time.sleep(2)
        v2 = publish_bundle(
            bundles, files, manifest, version="20240102T000000Z-two", make_current=False
        )
        warm_and_publish(bundles, v2, users, slates, bundle_store_url=object_store)
        survivors = [r for r in cluster.replicas if r is not victim]
        deadline = time.monotonic() + 20
        for replica in survivors:  # the new bundle reaches every replica still up
            while httpx.get(f"{replica.url}/healthz").json()["bundle_version"] != v2:
                assert time.monotonic() < deadline, f"replica {replica.port} still on v1"
                time.sleep(0.1)
        time.sleep(0.3)  # requests that picked up v1 just before the swap have finished
        mark = Counter(answered)
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
    finally:
        cluster.stop()

    assert not errors, errors[:5]
    # cut bodies: only the requests in flight on the victim when it died
    assert len(cut) <= len(threads), cut
    assert all(killed_at - 0.5 <= t <= killed_by + 5.0 for t in cut), (cut, killed_at)
    total = sum(answered.values())
    assert total > 300, answered
    # spread: before the kill each replica took a fair share of the round robin
    shares = [
        before[f"127.0.0.1:{r.port}"] / max(1, sum(before.values())) for r in cluster.replicas
    ]
    assert all(s > 0.15 for s in shares), (shares, before)
    # after the kill the victim answered nothing more, the survivors everything
    late = answered - mark
    assert late and all(u != f"127.0.0.1:{victim.port}" for u, _, _ in late), late
    assert {u for u, _, _ in late} == {f"127.0.0.1:{r.port}" for r in survivors}
    # after the switch every replica serves the new bundle from its precomputed slates
    assert {(v, s) for _, v, s in late} == {(v2, "precomputed")}, late
    assert {(v, s) for _, v, s in answered.elements()} <= {
        (v1, "precomputed"),
        (v2, "precomputed"),
    }
    shutil.rmtree(tmp_path / "nginx", ignore_errors=True)
