"""Issue 20's attack suite, against a real ``tastemaker serve`` on loopback (outside demo mode).

After every refused request: nothing of it is stored (the raw store's lines are unchanged once
the sink has flushed), the refusal is counted exactly, and the server is still healthy.
"""

from __future__ import annotations

import json
import socket
import time

import orjson
import pytest
from attack_world import (
    ADMIN,
    ARTISTS,
    OLD_TOKEN_KEY,
    SERVICE,
    Server,
    auth,
    key_of,
    make_workspace,
    start_server,
    stop_server,
    token,
)

CLIENT_TS = "2026-01-01T06:00:00+00:00"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Outside demo mode, 400 events a minute per listener."""
    srv = start_server(
        make_workspace(tmp_path_factory.mktemp("attack")),
        TASTEMAKER_EVENTS_PER_LISTENER_PER_MIN="400",
    )
    yield srv
    stop_server(srv)


def event(i: int, user: str = "alice", **kw) -> dict:
    return {
        "event_id": f"atk-{i}",
        "event_type": "click",
        "user_id": user,
        "artist_id": ARTISTS[5],
        "client_ts": CLIENT_TS,
        "request_id": "0" * 32,
        "position": 1,
    } | kw


def refused(server: Server, reason: str) -> float:
    return server.counter("tastemaker_refused_requests_total", reason=reason)


def post_events(server: Server, events, headers=None, raw: bytes | None = None):
    body = raw if raw is not None else orjson.dumps({"events": events})
    hdrs = {"content-type": "application/json", **(headers or {})}
    return server.post("/v1/events", content=body, headers=hdrs)


def assert_nothing_stored(server: Server, before: list[bytes]) -> None:
    assert server.settled_lines() == before, "a refused request left lines in the raw store"
    assert server.healthy()


# --- signed intake -------------------------------------------------------------------------------
def test_a_valid_token_posts_its_own_listeners_events(server) -> None:
    before = server.settled_lines()
    resp = post_events(server, [event(1)], auth("alice"))
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    lines = server.settled_lines()
    new = [orjson.loads(x) for x in lines[len(before) :]]
    assert [e["event_id"] for e in new] == ["app-atk-1"]


@pytest.mark.parametrize(
    ("case", "headers", "status", "reason"),
    [
        ("no token", {}, 401, "no_token"),
        ("forged", {"authorization": "Bearer " + token("alice")[:-4] + "AAAA"}, 401, None),
        ("expired", auth("alice", ttl_s=-1), 401, "token_expired"),
        ("a retired key", auth("alice", key=OLD_TOKEN_KEY), 401, "token_bad_signature"),
        ("garbage", {"authorization": "Bearer ' OR 1=1 --"}, 401, "token_malformed"),
        # made at collection, maybe long before the test runs: a day's lifetime
        ("another listener", auth("bob", ttl_s=86_400), 403, "other_listener"),
    ],
)
def test_events_without_the_listeners_own_token_are_refused(
    server, case, headers, status, reason
) -> None:
    before = server.settled_lines()
    counted = refused(server, reason) if reason else None
    resp = post_events(server, [event(2), event(3)], headers)
    assert resp.status_code == status, case
    assert "atk-2" not in resp.text
    if reason:
        assert refused(server, reason) == counted + 1
    assert_nothing_stored(server, before)


def test_a_replayed_token_cannot_be_bent_to_another_listener(server) -> None:
    """A captured token names its listener: replayed with a victim's events, or with its
    subject swapped for the victim's pseudonym, it is refused."""
    before = server.settled_lines()
    stolen = token("bob")
    assert (
        post_events(server, [event(4, "alice")], {"authorization": f"Bearer {stolen}"}).status_code
        == 403
    )
    prefix, _, exp, sig = stolen.split(".")
    swapped = f"{prefix}.{key_of('alice')}.{exp}.{sig}"
    resp = post_events(server, [event(5, "alice")], {"authorization": f"Bearer {swapped}"})
    assert resp.status_code == 401
    mixed = [event(6, "bob"), event(7, "alice")]  # one foreign event refuses the whole call
    assert post_events(server, mixed, {"authorization": f"Bearer {stolen}"}).status_code == 403
    assert_nothing_stored(server, before)


def test_client_events_cannot_take_a_served_impressions_id(server) -> None:
    before = server.settled_lines()
    slate = server.get("/v1/users/alice/recommendations?k=2", headers=auth("alice")).json()
    rid = slate["request_id"]
    forged = event(8, event_type="impression", event_id=f"{rid}-1", request_id=rid)
    assert post_events(server, [forged], auth("alice")).status_code == 202
    new = [orjson.loads(x) for x in server.settled_lines()[len(before) :]]
    ids = sorted(e["event_id"] for e in new)
    assert ids == sorted([f"{rid}-1", f"{rid}-2", f"app-{rid}-1"]), "both kept, apart"


# --- hostile bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "raw", "status"),
    [
        ("oversize body", b'{"events": [' + b'{"k": "' + b"x" * 400_000 + b'"}]}', 413),
        ("10,000 events", orjson.dumps({"events": [event(i) for i in range(10_000)]}), 413),
        ("10,000 empty events", orjson.dumps({"events": [{}] * 10_000}), 422),
        ("nested 900 deep", b'{"events": [' + b"[" * 900 + b"]" * 900 + b"]}", 422),
        ("nested field", b'{"events": [{"user_id": ' + b"[" * 900 + b"]" * 900 + b"}]}", 422),
        ("invalid UTF-8", b'{"events": [{"user_id": "\xff\xfe"}]}', 422),
        ("lone surrogate", b'{"events": [{"user_id": "\\ud800"}]}', 422),
        ("NaN", b'{"events": [{"k": NaN}]}', 422),
        ("not JSON", b"\x00\x01\x02", 422),
    ],
)
def test_hostile_bodies_are_refused_with_4xx(server, case, raw, status) -> None:
    before = server.settled_lines()
    resp = post_events(server, None, auth("alice"), raw=raw)
    assert resp.status_code == status, (case, resp.text[:300])
    assert len(resp.content) < 4096, "the input is not echoed"
    assert_nothing_stored(server, before)


def test_hostile_fields_are_rejected_by_name_never_stored(server) -> None:
    before = server.settled_lines()
    events = [
        event(10, device="x" * 100_000),  # a 100 KB field
        event(11, position=2**64 + 1),  # above 2^63
        event(13, device={"nested": [1, 2]}),
        event(14, user_id="x" * 100_000),  # a 100 KB user id
    ]
    resp = post_events(server, None, auth("alice"), raw=json.dumps({"events": events}).encode())
    assert resp.status_code == 422, resp.text
    reasons = {r["index"]: r["reason"] for r in resp.json()["rejected"]}
    assert reasons[0] == "too_long:device" and 1 in reasons
    assert reasons[2] == "bad_type:device" and reasons[3] == "too_long:user_id"
    assert "xxxx" not in resp.text
    assert_nothing_stored(server, before)


def test_oversize_headers_are_431(server) -> None:
    resp = server.get("/healthz", headers={"x-junk": "a" * 20_000})
    assert resp.status_code == 431
    # 8 MB of headers: refused before the app (431 or the connection closed), never served
    with socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1]))) as s:
        s.settimeout(10)
        try:
            s.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
            )
            head = s.recv(64)
        except OSError:
            head = b""
    assert not head.startswith(b"HTTP/1.1 200"), head
    assert server.healthy()


def test_history_endpoint_refuses_hostile_input_without_500(server) -> None:
    svc = {"authorization": f"Bearer {SERVICE}", "content-type": "application/json"}
    for raw in (
        b'{"history": ["\\ud800"]}',
        b'{"history": [], "k": 184467440737095516150}',
        b'{"history": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"history": [], "k": NaN}',
        b'{"history": [], "user_id": "' + b"u" * 10_000 + b'"}',
        b'{"history": [], "country": "\\u0000"}',
    ):
        resp = server.post("/v1/recommendations", content=raw, headers=svc)
        assert resp.status_code == 422, (raw[:40], resp.text[:200])
        assert b"uuuuuuuu" not in resp.content
    assert server.healthy()


# --- who may read what ---------------------------------------------------------------------------
def test_recommendations_need_the_listeners_token_or_the_service_token(server) -> None:
    path = "/v1/users/alice/recommendations?k=3"
    assert server.get(path).status_code == 401
    assert server.get(path, headers=auth("bob")).status_code == 403
    assert server.get(path, headers=auth("alice")).status_code == 200
    assert server.get(path, headers={"authorization": f"Bearer {SERVICE}"}).status_code == 200
    history = {"history": [ARTISTS[0]], "k": 2}
    assert server.post("/v1/recommendations", json=history).status_code == 401
    resp = server.post("/v1/recommendations", json=history, headers=auth("alice"))
    assert resp.status_code == 200


def test_the_listener_view_is_closed_outside_demo_mode(server) -> None:
    before = server.settled_lines()
    assert server.get("/").status_code == 404
    assert server.get("/ui/api/listener?account=alice").status_code == 404
    resp = server.get("/ui/api/listener?account=alice", headers={"x-admin-token": ADMIN})
    assert resp.status_code == 200 and resp.json()["token"] is None
    assert server.settled_lines() == before, "a page view is not an impression"
    assert server.get("/metrics").status_code == 403
    assert server.get("/docs").status_code == 404


def test_sql_metacharacters_in_ids_are_just_ids(server) -> None:
    svc = {"authorization": f"Bearer {SERVICE}"}
    for uid in ("' OR '1'='1", "alice'; DROP TABLE users;--", '"); DELETE FROM x; --'):
        resp = server.get(f"/v1/users/{uid}/recommendations?k=2", headers=svc)
        assert resp.status_code == 200 and resp.json()["source"] == "trending", uid
    alice = server.get("/v1/users/alice/recommendations?k=2", headers=svc).json()
    assert alice["source"] == "model", "the store is intact"


def test_path_traversal_in_bundles_and_static_files(server) -> None:
    admin = {"x-admin-token": ADMIN}
    current = server.workspace / "bundles" / "CURRENT"
    good = current.read_bytes()
    try:
        for bad in (b"../../../etc\n", b"/etc\n", b"\x00\xff\xfe binary", b""):
            current.write_bytes(bad)
            resp = server.post("/admin/reload", headers=admin)
            assert resp.status_code in (200, 409), (bad, resp.text)
            assert resp.status_code == 409 or resp.json()["swapped"] is False
            assert b"etc" not in resp.content or b"../" not in resp.content
            assert server.healthy()
    finally:
        current.write_bytes(good)
    for path in (
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2fapp.py",
    ):
        resp = server.get(path)
        assert resp.status_code == 404 and b"root:" not in resp.content
    assert server.post("/admin/reload?version=../../etc", headers=admin).status_code == 200


def test_ids_cannot_inject_lines_into_the_log(server) -> None:
    svc = {"authorization": f"Bearer {SERVICE}"}
    resp = server.get("/v1/users/x%0D%0AINJECTED%20ERROR/recommendations", headers=svc)
    assert resp.status_code == 422 and "INJECTED" not in resp.text
    resp = post_events(server, [event(20, user_id="a\r\nINJECTED ERROR")], auth("alice"))
    assert resp.status_code == 422
    time.sleep(0.3)
    assert not any(
        line.startswith("INJECTED") for line in server.log.read_text(errors="replace").splitlines()
    )


def test_request_ids_cannot_be_guessed(server) -> None:
    svc = {"authorization": f"Bearer {SERVICE}"}
    ids = [
        server.get("/v1/users/alice/recommendations?k=1", headers=svc).json()["request_id"]
        for _ in range(20)
    ]
    assert len(set(ids)) == 20 and all(len(i) == 32 for i in ids)
    # no shared prefix, no counter: consecutive ids differ in most of their 128 bits
    for a, b in zip(ids, ids[1:], strict=False):
        assert a[:8] != b[:8]
        diff = bin(int(a, 16) ^ int(b, 16)).count("1")
        assert diff > 32, (a, b)


def test_every_page_sends_the_security_headers(server) -> None:
    for path in ("/new", "/dashboard", "/healthz", "/nowhere", "/static/app.js"):
        headers = server.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_rate_limits_answer_429_with_retry_after(server) -> None:
    """The fixture's server allows 400 events a minute per listener."""
    before = server.settled_lines()
    counted = refused(server, "rate_limited")
    hdr = auth("ratey")
    got = [
        post_events(server, [event(1000 + 100 * j + i, "ratey") for i in range(100)], hdr)
        for j in range(5)
    ]
    codes = [r.status_code for r in got]
    assert 429 in codes and codes[0] == 202, codes
    limited = [r for r in got if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert refused(server, "rate_limited") == counted + len(limited)
    accepted = sum(r.json()["accepted"] for r in got if r.status_code == 202)
    new = server.settled_lines()[len(before) :]
    assert len(new) == accepted, "counts in == counts out"


# --- the event bus down --------------------------------------------------------------------------
def test_bus_down_means_not_ready_and_503_on_intake(tmp_path) -> None:
    ws = make_workspace(tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    srv = start_server(ws, TASTEMAKER_EVENT_BUS_URL=f"redis://127.0.0.1:{dead}/0")
    try:
        deadline = time.monotonic() + 10
        while srv.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readyz stays ready with the bus down"
            time.sleep(0.2)
        assert "event sink" in srv.get("/readyz").json()["reason"]
        resp = post_events(srv, [event(1)], auth("alice"))
        assert resp.status_code == 503 and "retry-after" in resp.headers
        assert srv.counter("tastemaker_events_total", kind="app", sink="stream") == 0
        assert srv.healthy()
    finally:
        stop_server(srv)
