"""The service on real PostgreSQL (SKILLROUTE_TEST_DATABASE_URL), as production runs it.

Each test gets its own schema (via `options=-csearch_path=...` in the URL) that is dropped
afterwards, so runs are repeatable and may share the database with other runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import inspect, text

from service.contacts import ContactState
from service.settings import DEMO_RULES, Settings
from service.storage.db import alembic_config, make_engine, upgrade
from service.storage.writer import BatchWriter
from tests.conftest import (
    FakeClock,
    agent,
    contact,
    libpq_url,
    make_settings,
    put_agents,
    route,
    serve,
    with_search_path,
)

pytestmark = pytest.mark.integration

YAML = {"Content-Type": "application/yaml"}
DEMO_TEXT = DEMO_RULES.read_text(encoding="utf-8")


@dataclass(frozen=True)
class PgDatabase:
    """A private schema in the test database, and the URL that works in it."""

    url: str
    schema: str

    def rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run one query in the schema and return its rows."""
        engine = make_engine(self.url)
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(text(query), params)]
        finally:
            engine.dispose()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PgDatabase]:
    """A fresh, empty schema for one test, dropped afterwards."""
    schema = f"skillroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield PgDatabase(with_search_path(postgres_url, schema), schema)
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_settings(pg: PgDatabase, tmp_path: Path) -> Settings:
    """Test settings on the private PostgreSQL schema."""
    return make_settings(tmp_path, database_url=pg.url)


def test_migrations_create_every_table_in_the_configured_schema_and_rerun_as_a_no_op(
    pg: PgDatabase,
) -> None:
    upgrade(pg.url)
    upgrade(pg.url)  # every start runs it: the second run must change nothing
    engine = make_engine(pg.url)
    try:
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        tables = set(inspect(engine).get_table_names(schema=pg.schema))
    finally:
        engine.dispose()
    assert tables == {
        "agents",
        "contacts",
        "decisions",
        "rule_versions",
        "passes",
        "pass_refunds",
        "idempotency_keys",
        "appointments",
        "outbox",
        "webhook_endpoints",
        "webhook_deliveries",
        "webhook_attempts",
        "outcomes",
        "alembic_version",
    }
    head = ScriptDirectory.from_config(alembic_config(pg.url)).get_current_head()
    assert pg.rows("SELECT version_num FROM alembic_version") == [(head,)]


def test_route_accept_complete_leaves_contact_rows_and_every_decision_in_postgresql(
    pg: PgDatabase, pg_settings: Settings, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    with serve(pg_settings) as client:
        put_agents(client, acd_headers, {"solo": agent({"billing": 4})})
        first = route(client, acd_headers, contact("c-1"))
        second = route(client, acd_headers, contact("c-2", inquiry_type="billing"))
        assert (first["outcome"], second["outcome"]) == ("assigned", "queued")
        rid = first["reservation"]["reservation_id"]
        assert client.post(f"/v1/reservations/{rid}/accept", headers=acd_headers).status_code == 200
        fake_clock.advance(30)
        assert client.post("/v1/contacts/c-1/complete", headers=acd_headers).status_code == 200

    assert pg.rows(
        "SELECT contact_id, status, agent_id, ended_at FROM contacts ORDER BY contact_id"
    ) == [
        ("c-1", "completed", "solo", fake_clock.now),
        ("c-2", "reserved", "solo", None),
    ]
    assert pg.rows("SELECT first_decision FROM contacts WHERE contact_id = 'c-1'") == [(first,)]
    assert pg.rows(
        "SELECT contact_id, outcome, trigger, agent_id, rules_version, method FROM decisions "
        "ORDER BY at, contact_id"
    ) == [
        ("c-1", "assigned", "route", "solo", 1, "argmax"),
        ("c-2", "queued", "route", None, 1, "none"),
        ("c-2", "assigned", "complete", "solo", 1, "argmax"),
    ]
    assert pg.rows("SELECT agent_id, status, skills::text FROM agents") == [
        ("solo", "available", '{"billing":4}')
    ]


def test_rules_versions_and_rollbacks_are_stored_in_postgresql(
    pg: PgDatabase,
    pg_settings: Settings,
    admin_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    edited = DEMO_TEXT.replace("name: demo contact center", "name: edited center")
    with serve(pg_settings) as client:
        put = client.put("/v1/rules", content=edited, headers={**admin_headers, **YAML})
        assert (put.status_code, put.json()["version"]) == (200, 2)
        back = client.post("/v1/rules/versions/1/rollback", headers=admin_headers)
        assert (back.status_code, back.json()["version"]) == (200, 3)

    assert pg.rows("SELECT version, origin, active FROM rule_versions ORDER BY version") == [
        (1, "file", False),
        (2, "api", False),
        (3, "rollback:1", True),
    ]
    sources = pg.rows("SELECT source FROM rule_versions ORDER BY version")
    assert sources == [(DEMO_TEXT,), (edited,), (DEMO_TEXT,)]

    # A restart activates the stored active version; the file is the same, so no new version.
    with serve(pg_settings) as client:
        active = client.get("/v1/rules", headers=admin_headers).json()
        assert (active["version"], active["origin"]) == (3, "rollback:1")


def test_after_a_restart_on_postgresql_contacts_and_agent_load_carry_on(
    pg_settings: Settings, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    with serve(pg_settings) as before:
        put_agents(
            before,
            acd_headers,
            {"talker": agent({"billing": 5}), "offered": agent({"billing": 4})},
        )
        connected = route(before, acd_headers, contact("c-connected"))
        before.post(
            f"/v1/reservations/{connected['reservation']['reservation_id']}/accept",
            headers=acd_headers,
        )
        reserved = route(before, acd_headers, contact("c-reserved"))
        assert reserved["agent_id"] == "offered"
        assert route(before, acd_headers, contact("c-queued"))["outcome"] == "queued"

    with serve(pg_settings) as after:
        loads = {
            a["agent_id"]: a["load"]
            for a in after.get("/v1/agents", headers=acd_headers).json()["items"]
        }
        assert loads == {"talker": {"voice": 1}, "offered": {"voice": 1}}
        queue = after.get("/v1/queue", headers=acd_headers).json()
        assert [i["contact_id"] for i in queue["items"]] == ["c-queued"]

        retry = after.post("/v1/route", json=contact("c-connected"), headers=acd_headers)
        assert (retry.status_code, retry.headers.get("Idempotent-Replay")) == (200, "true")
        assert retry.json() == connected

        rid = reserved["reservation"]["reservation_id"]
        accept = after.post(f"/v1/reservations/{rid}/accept", headers=acd_headers)
        assert (accept.status_code, accept.json()["contact_status"]) == (200, "connected")

        after.post("/v1/contacts/c-connected/complete", headers=acd_headers)
        queued = after.get("/v1/contacts/c-queued", headers=acd_headers).json()
        assert (queued["status"], queued["agent_id"]) == ("reserved", "talker")


def _contact_row(number: int, *, status: str, decided: str) -> dict[str, Any]:
    request = contact(f"bulk-{number}")
    return ContactState(
        contact_id=f"bulk-{number}",
        customer_id=request["customer_id"],
        channel="voice",
        request=request,
        request_hash=f"{number:064x}",
        status=status,  # type: ignore[arg-type]
        rule="billing",
        stage=0,
        priority=50,
        first_decision={"outcome": decided},
        created_at=1_800_000_000.0 + number,
        updated_at=1_800_000_000.0 + number,
    ).to_row()


def _decision_row(number: int) -> dict[str, Any]:
    return {
        "decision_id": f"d-{number}",
        "contact_id": f"bulk-{number}",
        "at": 1_800_000_000.0 + number,
        "outcome": "queued",
        "trigger": "route",
        "agent_id": None,
        "reservation_id": None,
        "rule": "billing",
        "stage": "base",
        "rules_version": 1,
        "method": "none",
        "explanation": {"eligible_count": 0, "candidates": []},
    }


def test_the_batch_writer_commits_thousands_of_rows_and_upserts_keep_the_first_decision(
    pg: PgDatabase,
) -> None:
    upgrade(pg.url)
    engine = make_engine(pg.url)
    writer = BatchWriter(engine, flush_interval=0.01, batch_max=500)
    writer.start()
    try:
        for number in range(3000):
            writer.put_contact(_contact_row(number, status="queued", decided="queued"))
            writer.put_decision(_decision_row(number))
        writer.stop()  # flushes what the thread has not committed yet
        assert (writer.healthy, writer.pending, writer.flushed_rows) == (True, 0, 6000)
        # Later states of 1000 stored contacts: status and times change; the request and the
        # first decision (what a retry replays) never do, whatever a later row carries.
        for number in range(1000):
            writer.put_contact(_contact_row(number, status="abandoned", decided="rewritten"))
        assert writer.flush()
    finally:
        engine.dispose()
    assert writer.flushed_rows == 7000
    assert pg.rows("SELECT status, count(*) FROM contacts GROUP BY status ORDER BY status") == [
        ("abandoned", 1000),
        ("queued", 2000),
    ]
    assert pg.rows("SELECT count(*) FROM decisions") == [(3000,)]
    assert pg.rows("SELECT first_decision->>'outcome', count(*) FROM contacts GROUP BY 1") == [
        ("queued", 3000)
    ]
