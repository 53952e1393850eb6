"""Replicas of ``tastemaker serve`` on loopback behind nginx, for tests and benchmarks.

Each replica is its own process (``python -m tastemaker.cli serve``) built from the same
environment; nginx (Debian's package) balances them round-robin and retries a request that a
replica fails at the connection level (refused, reset, timed out) on the next one, so killing
a replica loses no idempotent request (a replica's own 503, load shed with ``Retry-After``,
reaches the client unchanged). nginx runs from a private prefix (its own config, pid, logs and temp folders) and never touches /etc/nginx.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream tastemaker {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://tastemaker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;
            # connection-level failures only: a shed 503 (+ Retry-After) goes back to the client
            # as designed; listing http_503 here would also count it against max_fails and
            # take a busy replica out of the pool, turning shedding into 502s
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 5s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests are cut."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """N replicas and nginx in front of them; stop() ends every process it started."""

    workdir: Path
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)
    nginx: subprocess.Popen | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_replica(
        self,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> Replica:
        """One more ``tastemaker serve`` on a free port (``env`` laid over the cluster's;
        ``prefix``: a command to run it under, e.g. ``taskset -c 0``)."""
        port = free_port()
        log = self.workdir / f"replica-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "tastemaker.cli", "serve", "--port", str(port)]
                + list(extra_args),
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches it alone
            )
        replica = Replica(port, proc, log)
        self.replicas.append(replica)
        return replica

    def wait_ready(self, replica: Replica, timeout_s: float = 60.0) -> float:
        """Seconds until ``/readyz`` answers 200 (raises with the replica's log if never)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not replica.alive():
                break
            try:
                if httpx.get(f"{replica.url}/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"replica {replica.port} not ready:\n{replica.log.read_text()[-3000:]}")

    def add_upstream(self, port: int, proc: subprocess.Popen) -> Replica:
        """Balance over a server started elsewhere (a baseline app) as over a replica."""
        replica = Replica(port, proc, self.workdir / f"upstream-{port}.log")
        self.replicas.append(replica)
        return replica

    def start_nginx(self, pin: tuple[str, ...] = ()) -> None:
        prefix = self.workdir / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        servers = "\n".join(
            f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in self.replicas
        )
        user = "user root;" if os.geteuid() == 0 else ""
        conf = prefix / "nginx.conf"
        conf.write_text(CONF.format(user=user, prefix=prefix, servers=servers, port=self.port))
        self.nginx = subprocess.Popen(
            [*pin, NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(prefix / "stderr.log", "wb"),  # noqa: SIM115 (closed with the process)
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.nginx.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(prefix / 'stderr.log').read_text()}")

    def stop(self) -> None:
        for r in self.replicas:
            if r.alive():
                os.killpg(r.proc.pid, signal.SIGTERM)
        if self.nginx is not None and self.nginx.poll() is None:
            os.killpg(self.nginx.pid, signal.SIGQUIT)
        for r in self.replicas:
            try:
                r.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                r.kill()
        if self.nginx is not None:
            try:
                self.nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.nginx.pid, signal.SIGKILL)
