"""(Not a conftest.py: tests/serving imports its own conftest by that name.) The attack
suite's target: ``tastemaker serve`` in a subprocess on a free loopback port, on a
small workspace (a synthetic bundle whose artist names and tags carry script, a real SQLite
online store), outside demo mode, with a token key, an admin token and a service token."""

from __future__ import annotations

import gzip
import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from core.tokens import issue
from data.features.online_store import open_online_store
from data.pii import pseudonymise
from data.schemas import USER_DENSE_FIELDS, USER_FEATURES, USER_SEGMENT_FIELDS
from index import FILES, publish_bundle
from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, bundle_files

ROOT = Path(__file__).resolve().parents[2]
PSEUDONYM_KEY = "security-tests-pseudonym-key-0123"
TOKEN_KEY = "security-tests-token-key-0123456789"
OLD_TOKEN_KEY = "security-tests-old-token-key-012345"
ADMIN = "security-tests-admin-token-0123"
SERVICE = "security-tests-service-token-0123"
SPEC = SyntheticSpec(n_artists=24, n_clusters=2, dim=8, history_len=10)
ARTISTS = artist_ids(SPEC)
XSS_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
XSS_TAG = '<img src=x onerror="window.__pwned=3">'
VERSION = "20240101T000000Z-attack"


def key_of(user_id: str) -> str:
    return pseudonymise(user_id, PSEUDONYM_KEY.encode())


def token(user_id: str, ttl_s: int = 600, key: str = TOKEN_KEY, now_s: float | None = None) -> str:
    return issue(key_of(user_id), key.encode(), ttl_s, now_s)


def auth(user_id: str, **kw) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user_id, **kw)}"}


def _row(user_id: str, history: list[str]) -> dict:
    row: dict = {name: None for name in USER_FEATURES.names}
    row.update(
        user_key=key_of(user_id),
        as_of=1_700_000_000_000,
        history=history,
        history_age_s=[60.0 * i for i in range(len(history))],
        recent_tracks=[],
        followed=[],
        seen=sorted(history),
        region="unknown",
        n_impressions=10,
        n_clicks=1,
        n_streams=len(history),
    )
    row.update({f: "unknown" for f in USER_SEGMENT_FIELDS})
    row.update({f: 0.5 for f in USER_DENSE_FIELDS})
    return row


def publish_hostile_bundle(root: Path, version: str = VERSION) -> str:
    """The synthetic bundle, with script in every artist's name and tags."""
    files, manifest = bundle_files(SPEC, None)
    table = pq.read_table(io.BytesIO(files[FILES.artists]))
    names = [f"{XSS_NAME} {a}" for a in table.column("artist_id").to_pylist()]
    table = table.set_column(table.schema.get_field_index("name"), "name", [names])
    tags = [[XSS_TAG, "rock'; DROP TABLE artists;--"] for _ in names]
    table = table.set_column(
        table.schema.get_field_index("tags"), table.schema.field("tags"), [tags]
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    files[FILES.artists] = sink.getvalue()
    return publish_bundle(root, files, manifest, version=version)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    workspace: Path
    log: Path
    proc: subprocess.Popen

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.base + path, timeout=10, **kw)

    def raw_lines(self) -> list[bytes]:
        """Every event line the server wrote to the raw store (it flushes every 0.25 s)."""
        lines = []
        for f in sorted((self.workspace / "raw" / "events").glob("dt=*/serve-*.jsonl.gz")):
            lines += gzip.decompress(f.read_bytes()).splitlines()
        return lines

    def settled_lines(self) -> list[bytes]:
        """The raw lines once the sink has had time to flush what it holds."""
        time.sleep(0.8)
        return self.raw_lines()

    def counter(self, name: str, **labels: str) -> float:
        text = self.get("/metrics", headers={"x-admin-token": ADMIN}).text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def healthy(self) -> bool:
        return self.get("/healthz").status_code == 200 and self.proc.poll() is None


def start_server(ws: Path, demo: bool = False, **env: str) -> Server:
    port = free_port()
    log = ws / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TASTEMAKER_")}
    full_env.update(
        TASTEMAKER_PSEUDONYM_KEY=PSEUDONYM_KEY,
        TASTEMAKER_TOKEN_KEY=TOKEN_KEY,
        TASTEMAKER_ADMIN_TOKEN=ADMIN,
        TASTEMAKER_SERVICE_TOKEN=SERVICE,
        TASTEMAKER_RELOAD_INTERVAL_S="0.2",
        **({"TASTEMAKER_DEMO": "1"} if demo else {}),
        **env,
    )
    cmd = [sys.executable, "-m", "tastemaker.cli", "--workspace", str(ws), "serve"]
    cmd += ["--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=full_env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", ws, log, proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            if server.get("/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()


def make_workspace(root: Path) -> Path:
    publish_hostile_bundle(root / "bundles")
    store = open_online_store(root / "online" / "users.sqlite")
    store.put_many([_row("alice", ARTISTS[:3]), _row("bob", ARTISTS[12:14])])
    store.close()
    return root
