"""Shared fixtures: an app on a temporary SQLite file, API keys per client type, a clock.

Integration tests (marked `integration`) reach real PostgreSQL and Redis through the
`postgres_url` and `redis_url` fixtures. Locally they skip, with the reason, when
SKILLROUTE_TEST_DATABASE_URL / SKILLROUTE_TEST_REDIS_URL is unset or unreachable; under
CI=true they fail instead, and the session fails if any integration test was skipped at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql as psql

from service import clock
from service.app import create_app
from service.settings import DEMO_RULES, Settings

ACD_KEY = "test-acd-key-000000000001"
ADMIN_KEY = "test-admin-key-00000000001"
BILLING_KEY = "test-billing-key-000000001"
IN_CI = os.environ.get("CI", "").lower() == "true"
DATABASE_URL_ENV = "SKILLROUTE_TEST_DATABASE_URL"
REDIS_URL_ENV = "SKILLROUTE_TEST_REDIS_URL"


class FakeClock:
    """Wall-clock time that only moves when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Routing time under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(clock, "now", fake)
    return fake


FAST_LANE_SECTIONS = ("tiers", "fast_lane", "calendar", "capacity_plan")
OUTCOME_SECTIONS = ("outcomes", "performance")


def demo_rules_with(extra_yaml: str = "") -> str:
    """The demo rules without their fast-lane and outcome sections (defaults apply), plus
    `extra_yaml`.

    Tests that configure tiers, the calendar, a capacity plan, outcome tags or the performance
    table start from the defaults, so that only what they state is in effect.
    """
    document = yaml.safe_load(DEMO_RULES.read_text(encoding="utf-8"))
    for section in (*FAST_LANE_SECTIONS, *OUTCOME_SECTIONS):
        document.pop(section, None)
    document.update(yaml.safe_load(extra_yaml) or {})
    return str(yaml.safe_dump(document, sort_keys=False))


# With this set to a PostgreSQL URL, every test app runs on PostgreSQL instead of SQLite (each
# in a schema of its own, dropped at the end of the session): `make test-postgres`.
ALL_ON_POSTGRES_ENV = "SKILLROUTE_TEST_ALL_ON_POSTGRES"
# With this set to a Redis URL, every test app keeps its real-time state, live contacts and
# locks in Redis, as replicas do (each under a key prefix of its own): `make test-redis`.
ALL_ON_REDIS_ENV = "SKILLROUTE_TEST_ALL_ON_REDIS"
_prefixes_made: list[tuple[str, str]] = []  # (Redis URL, key prefix), deleted at the end
_schemas_made: list[str] = []


def with_search_path(url: str, schema: str) -> str:
    """`url` with the connection option that makes `schema` the only search path."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@contextlib.contextmanager
def fresh_schema(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL schema of one test's own: the URL that uses it; dropped afterwards."""
    schema = f"skillroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(psql.SQL("CREATE SCHEMA {}").format(psql.Identifier(schema)))
    try:
        yield with_search_path(postgres_url, schema)
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(psql.SQL("DROP SCHEMA {} CASCADE").format(psql.Identifier(schema)))


def _test_database_url(tmp_path: Path) -> str:
    """A fresh SQLite file, or a fresh PostgreSQL schema under ALL_ON_POSTGRES_ENV."""
    url = os.environ.get(ALL_ON_POSTGRES_ENV, "")
    if not url:
        return f"sqlite:///{tmp_path / 'skillroute.db'}"
    schema = f"skillroute_all_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(psql.SQL("CREATE SCHEMA {}").format(psql.Identifier(schema)))
    _schemas_made.append(schema)
    return with_search_path(url, schema)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test app: real keys (not demo), demo rules, a fresh database (a SQLite
    file, or a PostgreSQL schema under ALL_ON_POSTGRES_ENV)."""
    values: dict[str, Any] = {
        "demo": False,
        "database_url": overrides.pop("database_url", None) or _test_database_url(tmp_path),
        "api_keys": {ACD_KEY: ["route"], ADMIN_KEY: ["admin"], BILLING_KEY: ["billing"]},
        "rules_file": DEMO_RULES,
        "log_level": "warning",
        "log_requests": False,
        "write_flush_interval_seconds": 0.01,
        # Tests drive endpoints in tight loops; test_rate_limits.py sets the limits it checks.
        "rate_limit_route": "100000/second",
        "rate_limit_admin": "100000/second",
        "rate_limit_billing": "100000/second",
    }
    if os.environ.get(ALL_ON_REDIS_ENV) and "redis_url" not in overrides:
        # Every test app on the shared Redis state (as several replicas would run), in a key
        # namespace of its own (deleted at the end of the session).
        values["redis_url"] = os.environ[ALL_ON_REDIS_ENV]
        values["redis_prefix"] = f"test-{uuid.uuid4().hex[:12]}"
        values["redis_rebuild_grace_seconds"] = 0.0  # nobody else writes to a fresh prefix
        _prefixes_made.append((values["redis_url"], values["redis_prefix"]))
    if overrides.get("redis_url") and "redis_prefix" not in overrides:
        # A Redis test app shares nothing with another test's (their own key namespace).
        values["redis_prefix"] = f"test-{uuid.uuid4().hex[:12]}"
    values.update(overrides)
    if overrides.get("redis_url"):
        _prefixes_made.append((overrides["redis_url"], values["redis_prefix"]))
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default test settings."""
    return make_settings(tmp_path)


@contextlib.contextmanager
def serve(settings: Settings, *, run_background: bool = False) -> Iterator[TestClient]:
    """Start an app on `settings` (lifespan included) and stop it (writer flushed) on exit."""
    app = create_app(settings, run_background=run_background)
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def client(settings: Settings, fake_clock: FakeClock) -> Iterator[TestClient]:
    """A running app (lifespan included, no background timer) and a client for it."""
    app = create_app(settings, run_background=False)
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def acd_headers() -> dict[str, str]:
    """Headers of an ACD/IVR (scope route)."""
    return {"Authorization": f"Bearer {ACD_KEY}"}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Headers of a contact-center admin (scope admin)."""
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def billing_headers() -> dict[str, str]:
    """Headers of a billing system (scope billing)."""
    return {"Authorization": f"Bearer {BILLING_KEY}"}


def contact(contact_id: str, **fields: Any) -> dict[str, Any]:
    """A route request body with sensible defaults."""
    body: dict[str, Any] = {
        "contact_id": contact_id,
        "customer_id": f"cust-{contact_id}",
        "channel": "voice",
        "segment": "consumer",
        "inquiry_type": "billing",
        "journey_stage": "established",
        "language": "en",
        "attributes": {},
    }
    body.update(fields)
    return body


def agent(
    skills: dict[str, int],
    *,
    status: str = "available",
    languages: list[str] | None = None,
    capacity: dict[str, int] | None = None,
    name: str = "Agent",
) -> dict[str, Any]:
    """An agent profile body."""
    return {
        "name": name,
        "skills": skills,
        "languages": languages or ["en"],
        "capacity": capacity or {"voice": 1},
        "status": status,
    }


def tick(client: TestClient) -> None:
    """Run the periodic dispatch once (expiry, relaxation), as the timer would."""
    assert client.portal is not None
    client.portal.call(client.app.state.routing.tick)  # type: ignore[attr-defined]


def put_agents(client: TestClient, headers: dict[str, str], agents: dict[str, dict]) -> None:
    """Create or replace agents through the API."""
    for agent_id, body in agents.items():
        response = client.put(f"/v1/agents/{agent_id}", json=body, headers=headers)
        assert response.status_code in (200, 201), response.text


def route(client: TestClient, headers: dict[str, str], body: dict) -> dict:
    """Route a contact (a new decision) and return the decision."""
    response = client.post("/v1/route", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def metric_value(client: TestClient, sample: str, **labels: str) -> float:
    """One sample of GET /metrics (0 when absent: a labelled child not yet created)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for found in family.samples:
            if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


# ---- real PostgreSQL and Redis for integration tests ---------------------------------------
def _unavailable(reason: str) -> None:
    """Fail under CI (the service must be there), skip with the reason locally."""
    if IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq/psycopg accepts it (no `+driver`)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SKILLROUTE_TEST_DATABASE_URL, checked once per session to accept connections."""
    url = os.environ.get(DATABASE_URL_ENV, "")
    if not url:
        _unavailable(f"{DATABASE_URL_ENV} is not set (e.g. postgresql://postgres@127.0.0.1/test)")
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {DATABASE_URL_ENV} is unreachable: {exc}".strip())
    return url


def _redis_ping(url: str, timeout: float = 3.0) -> None:
    """Send PING (after AUTH if the URL has a password) over a raw socket; raise if no PONG."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://…")
    commands: list[list[str]] = []
    if parts.password is not None:
        auth = (
            [unquote(parts.username), unquote(parts.password)]
            if parts.username
            else [unquote(parts.password)]
        )
        commands.append(["AUTH", *auth])
    commands.append(["PING"])
    payload = b"".join(
        f"*{len(c)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in c)
        for c in commands
    )
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if parts.scheme == "rediss":
            sock = stack.enter_context(
                ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            )
        sock.sendall(payload)
        replies = b""
        while replies.count(b"\r\n") < len(commands):
            chunk = sock.recv(4096)
            if not chunk:
                break
            replies += chunk
    expected = [b"+OK"] * (len(commands) - 1) + [b"+PONG"]
    if replies.split(b"\r\n")[: len(commands)] != expected:
        raise ConnectionError(f"unexpected reply {replies[:200]!r}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """SKILLROUTE_TEST_REDIS_URL, checked once per session to answer PING."""
    url = os.environ.get(REDIS_URL_ENV, "")
    if not url:
        _unavailable(f"{REDIS_URL_ENV} is not set (e.g. redis://127.0.0.1:6379/15)")
    try:
        _redis_ping(url)
    except (OSError, ValueError) as exc:
        _unavailable(f"Redis at {REDIS_URL_ENV} is unreachable: {exc}")
    return url


_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember integration tests that were skipped (for the CI check below)."""
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped integration test fails the session: CI must test for real."""
    url = os.environ.get(ALL_ON_POSTGRES_ENV, "")
    if url and _schemas_made:
        with psycopg.connect(libpq_url(url), autocommit=True) as connection:
            for schema in _schemas_made:
                connection.execute(
                    psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema))
                )
    for redis_url, prefix in _prefixes_made:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        try:
            for pattern in (f"{{{prefix}}}:*", f"{prefix}-rate*"):
                keys = list(client.scan_iter(match=pattern, count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
        except redis.RedisError:
            pass  # a test pointed its app at a Redis that is down on purpose
        finally:
            client.close()
    if IN_CI and _skipped_integration and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which integration tests were skipped when that fails a CI run."""
    if IN_CI and _skipped_integration:
        terminalreporter.section("integration tests skipped under CI=true", red=True)
        terminalreporter.line("CI must run them against real services: this run fails.")
        for nodeid in _skipped_integration:
            terminalreporter.line(nodeid)
