"""Regression tests of issue 20's findings that need no server process: a bad ``CURRENT`` at
start and while running, the watcher surviving it, the event sink's byte bound, tokens and key
rotation, and a hypothesis fuzz of the request schemas (no input yields a 500)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from attack_world import (
    ADMIN,
    OLD_TOKEN_KEY,
    PSEUDONYM_KEY,
    TOKEN_KEY,
    VERSION,
    make_workspace,
    publish_hostile_bundle,
)
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import Settings
from core.tokens import DEMO_TOKEN_KEY, TokenError, issue, token_keys, verify
from index import CorruptBundleError
from index.bundle import current_version
from serving.app import create_app
from serving.events import EventSink, ServedSlate, SinkUnavailable
from serving.reload import ModelHolder, Watcher

BAD_POINTERS = {
    "empty": b"",
    "binary": b"\x00\xff\xfe\x80 junk",
    "outside": b"../../etc\n",
    "absolute": b"/tmp\n",
    "missing version": b"20990101T000000Z-nothing\n",
    "huge": b"v" * 10_000,
}


def _app_settings(ws: Path, **kw) -> Settings:
    return Settings(  # demo mode off explicitly (a session fixture may have set it)
        demo=False,
        workspace=ws,
        pseudonym_key=PSEUDONYM_KEY,
        token_key=TOKEN_KEY,
        admin_token=ADMIN,
        reload_interval_s=0,
        **kw,
    )


@pytest.mark.parametrize("case", list(BAD_POINTERS))
def test_a_bad_current_at_start_serves_the_newest_valid_bundle(tmp_path, case, caplog) -> None:
    ws = make_workspace(tmp_path)
    bundles = ws / "bundles"
    (bundles / "CURRENT").write_bytes(BAD_POINTERS[case])
    with caplog.at_level(logging.ERROR, logger="tastemaker.serving"):
        holder = ModelHolder(bundles)
    assert holder.current.version == VERSION
    assert "FELL BACK" in caplog.text


@pytest.mark.parametrize("case", ["binary", "outside", "absolute", "huge"])
def test_current_never_leads_outside_the_bundles_folder(tmp_path, case) -> None:
    (tmp_path / "CURRENT").write_bytes(BAD_POINTERS[case])
    with pytest.raises(CorruptBundleError) as err:
        current_version(tmp_path)
    assert "etc" not in str(err.value).replace(str(tmp_path), "")


def test_the_watcher_survives_a_bad_current_and_reload_answers_409(tmp_path, caplog) -> None:
    ws = make_workspace(tmp_path)
    bundles = ws / "bundles"
    holder = ModelHolder(bundles)
    watcher = Watcher(holder, 0.05)
    watcher.start()
    try:
        with caplog.at_level(logging.ERROR, logger="tastemaker.serving"):
            for bad in BAD_POINTERS.values():
                (bundles / "CURRENT").write_bytes(bad)
                time.sleep(0.15)
        assert watcher._thread.is_alive(), "the watcher thread died"
        assert "bundle watcher" in caplog.text
        newer = publish_hostile_bundle(bundles, version="20250101T000000Z-newer")
        deadline = time.monotonic() + 5
        while holder.current.version != newer:
            assert time.monotonic() < deadline, "the watcher stopped following CURRENT"
            time.sleep(0.05)
    finally:
        watcher.stop()
    with TestClient(create_app(_app_settings(ws))) as c:
        for bad in BAD_POINTERS.values():
            (bundles / "CURRENT").write_bytes(bad)
            resp = c.post("/admin/reload", headers={"x-admin-token": ADMIN})
            assert resp.status_code in (200, 409), resp.text
            if bad.strip():
                assert resp.status_code == 409
        assert c.get("/healthz").json()["bundle_version"] == newer


def test_the_event_sink_is_bounded_in_bytes(tmp_path) -> None:
    sink = EventSink(None, str(tmp_path / "raw"), max_bytes=4096)
    line = b'{"event_id":"x"}' * 10
    with pytest.raises(SinkUnavailable):
        sink.submit([line] * 100)
    assert sink.queued_bytes == 0, "nothing of a refused batch is queued"
    sink.submit([line] * 10)
    for i in range(50):
        sink.log_slate(ServedSlate("u", f"{i:032x}", "v", "model", ("a",) * 10, 0))
    assert sink.queued_bytes <= 4096 and sink.dropped > 0
    assert sink.flush() == 10 + 50 * 10 - sink.dropped, "queued = written, dropped counted"
    assert sink.queued_bytes == 0


def test_tokens_expire_and_rotate() -> None:
    user_key = "0123456789abcdef0123456789abcdef"
    now = 1_800_000_000
    old = issue(user_key, OLD_TOKEN_KEY.encode(), 60, now)
    new = issue(user_key, TOKEN_KEY.encode(), 60, now)
    both = [TOKEN_KEY.encode(), OLD_TOKEN_KEY.encode()]
    assert verify(old, both, now + 1) == user_key == verify(new, both, now + 1)
    with pytest.raises(TokenError, match="bad_signature"):
        verify(old, [TOKEN_KEY.encode()], now + 1)  # the previous key dropped
    with pytest.raises(TokenError, match="expired"):
        verify(new, both, now + 60)
    s = Settings(token_key=TOKEN_KEY, token_key_previous=OLD_TOKEN_KEY, demo=False)
    assert token_keys(s) == both
    assert token_keys(Settings(demo=False)) == [], "no key outside demo mode: intake is off"
    assert token_keys(Settings(demo=True)) == [DEMO_TOKEN_KEY.encode()]


def test_intake_is_off_without_a_token_key(tmp_path) -> None:
    ws = make_workspace(tmp_path)
    settings = _app_settings(ws).model_copy(update={"token_key": None})
    with TestClient(create_app(settings)) as c:
        resp = c.post("/v1/events", json={"events": [{}]}, headers={"authorization": "Bearer x"})
        assert resp.status_code == 403 and "TASTEMAKER_TOKEN_KEY" in resp.text


# --- fuzz: no input yields a 500 ------------------------------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["event_id", "event_type", "user_id", "artist_id", "position", "client_ts", "ms_played"]
)
EVENT = st.dictionaries(FIELDS, JSON, max_size=7) | JSON


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("fuzz"))
    with TestClient(create_app(_app_settings(ws)), raise_server_exceptions=False) as c:
        yield c


def _auth() -> dict[str, str]:
    from attack_world import auth

    return auth("alice")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(["events", "x"]), st.lists(EVENT, max_size=5)) | JSON)
def test_fuzz_events_never_500(fuzz_client, body) -> None:
    import json

    raw = json.dumps(body, allow_nan=True).encode("utf-8", errors="surrogatepass")
    resp = fuzz_client.post(
        "/v1/events", content=raw, headers={**_auth(), "content-type": "application/json"}
    )
    assert resp.status_code < 500, resp.text[:300]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.fixed_dictionaries(
        {}, optional={"history": JSON, "k": JSON, "country": JSON, "user_id": JSON}
    )
    | JSON
)
def test_fuzz_history_never_500(fuzz_client, body) -> None:
    import json

    raw = json.dumps(body, allow_nan=True).encode("utf-8", errors="surrogatepass")
    resp = fuzz_client.post(
        "/v1/recommendations", content=raw, headers={**_auth(), "content-type": "application/json"}
    )
    assert resp.status_code < 500, resp.text[:300]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(user=st.text(min_size=1, max_size=200), k=st.text(max_size=30), country=st.text(max_size=5))
def test_fuzz_user_recommendations_never_500(fuzz_client, user, k, country) -> None:
    from urllib.parse import quote

    path = f"/v1/users/{quote(user, safe='', errors='surrogatepass')}/recommendations"
    resp = fuzz_client.get(path, params={"k": k, "country": country}, headers=_auth())
    assert resp.status_code < 500, resp.text[:300]


def test_the_front_door_answers_every_path_and_never_leaks_an_error(tmp_path, caplog) -> None:
    """The guard, shedder and hot path wrap FastAPI (``serving.app.Service``): the hot GET is
    answered without FastAPI, every other route through it, both with the security headers, and
    an unhandled error in a route is the guard's plain 500, logged, never its text."""
    ws = make_workspace(tmp_path)
    app = create_app(_app_settings(ws))

    def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        hot = c.get("/v1/users/alice/recommendations?k=3", headers=_auth())
        routed = c.get("/v1/users/alice/recommendations?k=0", headers=_auth())  # the router's 422
        health = c.get("/healthz")
        failed = c.get("/boom")
    assert hot.status_code == 200 and len(hot.json()["items"]) == 3
    assert routed.status_code == 422
    assert health.status_code == 200
    assert failed.status_code == 500
    assert failed.json() == {"detail": "internal error"}
    assert "secret-internal-detail" not in failed.text
    for resp in (hot, routed, health, failed):
        assert resp.headers["x-content-type-options"] == "nosniff"
    assert "secret-internal-detail" in caplog.text  # logged for the operator
