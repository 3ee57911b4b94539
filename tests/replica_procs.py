"""Real `skillroute serve` processes sharing one PostgreSQL schema and one Redis key prefix.

Integration tests start replicas here, talk to them over HTTP, kill or stop them, and look
into the shared stores directly (PostgreSQL rows, the prefix's Redis keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql

from service.settings import DEMO_RULES
from tests.conftest import ACD_KEY, ADMIN_KEY, BILLING_KEY, libpq_url, with_search_path

ROOT = Path(__file__).resolve().parent.parent
SKILLROUTE = Path(sys.executable).parent / "skillroute"
START_TIMEOUT_SECONDS = 60.0

# Deletes every key of one test at once, so no replica sees half of its state gone.
_DELETE_MATCHING = """
local deleted = 0
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
    redis.call('DEL', key)
    deleted = deleted + 1
end
return deleted
"""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SharedStores:
    """One test's private PostgreSQL schema and Redis key prefix."""

    database_url: str
    schema: str
    redis_url: str
    redis_prefix: str

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one query in the test's schema and return its rows."""
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as connection:
            return list(connection.execute(query, params).fetchall())

    def redis_keys(self) -> list[bytes]:
        """Every Redis key of this test's prefix."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return list(client.scan_iter(match=f"*{self.redis_prefix}*", count=1000))
        finally:
            client.close()

    def wipe_redis(self) -> int:
        """Delete every key of this test's prefix in one atomic step (as a flush would)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.eval(_DELETE_MATCHING, 0, f"*{self.redis_prefix}*"))  # type: ignore[arg-type]
        finally:
            client.close()


@contextlib.contextmanager
def shared_stores(postgres_url: str, redis_url: str) -> Iterator[SharedStores]:
    """A fresh schema and prefix for one test; both dropped afterwards."""
    token = uuid.uuid4().hex[:12]
    schema = f"skillroute_replicas_{token}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    stores = SharedStores(
        with_search_path(postgres_url, schema), schema, redis_url, f"test-replicas-{token}"
    )
    try:
        yield stores
    finally:
        stores.wipe_redis()
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@dataclass
class Replica:
    """One running server process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of the replica's HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the replica dies at once, without flushing anything."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait for a clean shutdown (SIGKILL after the 30 s operators give it)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ReplicaSet:
    """Replicas started on the same shared stores, stopped together at the end."""

    stores: SharedStores
    log_dir: Path
    replicas: list[Replica] = field(default_factory=list)

    def environment(self, **settings: str | float) -> dict[str, str]:
        """The environment of a replica: explicit keys, demo rules, the shared stores."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLROUTE_")}
        values: dict[str, str | float] = {
            "demo": "false",
            "api_keys": json.dumps(
                {ACD_KEY: ["route"], ADMIN_KEY: ["admin"], BILLING_KEY: ["billing"]}
            ),
            "rules_file": str(DEMO_RULES),
            "database_url": self.stores.database_url,
            "redis_url": self.stores.redis_url,
            "redis_prefix": self.stores.redis_prefix,
            # The replicas' logs are kept beside the test's temporary files; `info` there shows
            # every requeued offer and dispatch when a run needs explaining.
            "log_level": os.environ.get("SKILLROUTE_TEST_REPLICA_LOG_LEVEL", "warning"),
            "log_requests": "false",
            "rate_limit_route": "1000000/second",
            "rate_limit_admin": "1000000/second",
            "rate_limit_billing": "1000000/second",
        }
        values.update(settings)
        env.update({f"SKILLROUTE_{k.upper()}": str(v) for k, v in values.items()})
        return env

    def start(self, name: str, **settings: str | float) -> Replica:
        """Start `skillroute serve` with these settings and wait until /readyz says 200."""
        port = free_port()
        log_path = self.log_dir / f"replica-{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(SKILLROUTE), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=self.environment(**settings),
                cwd=self.log_dir,  # no .env file of the working tree is read
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(name, port, process, log_path)
        self.replicas.append(replica)
        wait_ready(replica)
        return replica

    def stop_all(self) -> None:
        """Stop every replica still running; one that will not stop does not keep the others
        (nor the schema they use) alive."""
        stuck = []
        for replica in self.replicas:
            try:
                replica.stop()
            except subprocess.TimeoutExpired:
                stuck.append(f"{replica.name} (pid {replica.process.pid})")
        if stuck:
            raise RuntimeError(f"replicas did not exit after SIGTERM and SIGKILL: {stuck}")


def wait_ready(replica: Replica, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Poll /readyz until it answers 200; fail with the process's output if it never does."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(base_url=replica.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not replica.alive():
                raise RuntimeError(
                    f"replica {replica.name} exited with {replica.process.returncode}:\n"
                    + replica.log_tail()
                )
            try:
                response = client.get("/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    replica.kill()
    raise RuntimeError(
        f"replica {replica.name} not ready after {timeout} s ({last}):\n" + replica.log_tail()
    )
