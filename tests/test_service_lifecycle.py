"""The service as operations and admins live with it: rule changes, hot reload, restarts,
solve deadlines, metrics, readiness and request ids."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import Session

import service.dispatch
from service.app import create_app
from service.contacts import ContactState
from service.settings import DEMO_RULES, Settings
from service.storage.db import make_engine, upgrade
from service.storage.tables import ContactRow
from service.storage.writer import BatchWriter
from tests.conftest import (
    FakeClock,
    agent,
    contact,
    make_settings,
    metric_value,
    put_agents,
    route,
    serve,
    tick,
)
from tests.slow_worker import slow_solve_in_worker

YAML = {"Content-Type": "application/yaml"}
DEMO_TEXT = DEMO_RULES.read_text(encoding="utf-8")
# The cancellation rule is the only one that requires retention level 3.
RETENTION_3 = "skills: {retention: 3}"


def wait_until(condition: Callable[[], bool], *, timeout: float, step: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def replace_file(path: Path, text: str, staging: Path) -> None:
    """Write `path` the way editors and deploy tools do: a new file renamed into place."""
    staging.mkdir(exist_ok=True)
    draft = staging / path.name
    draft.write_text(text, encoding="utf-8")
    os.replace(draft, path)


def status_of(client: TestClient, headers: dict[str, str], contact_id: str) -> tuple:
    body = client.get(f"/v1/contacts/{contact_id}", headers=headers).json()
    return body["status"], body["agent_id"]


# ---- rule changes --------------------------------------------------------------------------
def test_new_rules_reroute_a_waiting_contact_at_once_and_invalid_rules_change_nothing(
    client: TestClient,
    acd_headers: dict[str, str],
    admin_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    assert DEMO_TEXT.count(RETENTION_3) == 1
    put_agents(client, acd_headers, {"biller": agent({"billing": 4})})
    waiting = route(client, acd_headers, contact("c-cancel", inquiry_type="cancellation"))
    assert (waiting["outcome"], waiting["rule"], waiting["rules_version"]) == (
        "queued",
        "cancellation",
        1,
    )

    typo = DEMO_TEXT.replace(RETENTION_3, "skills: {retenton: 3}")
    refused = client.put("/v1/rules", content=typo, headers={**admin_headers, **YAML})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/rules", headers=admin_headers).json()["version"] == 1
    assert client.get("/v1/rules/versions", headers=admin_headers).json()["total"] == 1
    assert status_of(client, acd_headers, "c-cancel") == ("queued", None)
    assert client.get("/v1/queue", headers=acd_headers).json()["waiting"] == 1

    # The retention desk is closed today: billing agents take cancellations.
    fake_clock.advance(30)
    relaxed = DEMO_TEXT.replace(RETENTION_3, "skills: {billing: 3}")
    applied = client.put("/v1/rules", content=relaxed, headers={**admin_headers, **YAML})
    assert applied.status_code == 200, applied.text
    assert applied.json()["version"] == 2

    assert status_of(client, acd_headers, "c-cancel") == ("reserved", "biller")
    assert client.get("/v1/queue", headers=acd_headers).json()["waiting"] == 0
    explained = client.get("/v1/contacts/c-cancel/explain", headers=acd_headers).json()
    assert (explained["rule"], explained["rules_version"], explained["chosen_agent_id"]) == (
        "cancellation",
        2,
        "biller",
    )
    assert explained["requirements"]["skills"] == {"billing": 3}
    assert [(d["outcome"], d["trigger"], d["rules_version"]) for d in explained["decisions"]] == [
        ("queued", "route", 1),
        ("assigned", "rules_change", 2),
    ]


def test_hot_reload_activates_a_valid_file_edit_and_keeps_the_last_good_version_on_a_broken_one(
    tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    # Real clock and the real timer and file watcher: no fake_clock here.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules_file = rules_dir / "rules.yaml"
    rules_file.write_text(DEMO_TEXT, encoding="utf-8")
    settings = make_settings(tmp_path, rules_file=rules_file, dispatch_interval_seconds=0.2)
    edited = DEMO_TEXT.replace("name: demo contact center", "name: demo contact center (v2)")
    assert edited != DEMO_TEXT

    with serve(settings, run_background=True) as client:

        def active() -> dict:
            return dict(client.get("/v1/rules", headers=admin_headers).json())

        assert active()["version"] == 1
        rejected_before = metric_value(client, "skillroute_rules_reloads_total", result="rejected")

        def edit_picked_up() -> bool:
            # Rewriting the same edit is harmless (an unchanged source is skipped), and covers
            # a watcher that was not yet watching when the first write landed.
            replace_file(rules_file, edited, tmp_path / "staging")
            return wait_until(lambda: active()["version"] == 2, timeout=2.5)

        assert wait_until(edit_picked_up, timeout=10, step=0)
        assert (active()["source"], active()["origin"]) == (edited, "file")

        replace_file(rules_file, "rules: [unclosed\n", tmp_path / "staging")
        assert wait_until(
            lambda: (
                metric_value(client, "skillroute_rules_reloads_total", result="rejected")
                > rejected_before
            ),
            timeout=10,
        )
        time.sleep(2)
        assert (active()["version"], active()["source"]) == (2, edited)
        assert client.get("/v1/rules/versions", headers=admin_headers).json()["total"] == 2
        assert (
            metric_value(client, "skillroute_rules_reloads_total", result="rejected")
            == rejected_before + 1
        )


# ---- restart -------------------------------------------------------------------------------
def test_after_a_restart_queued_reserved_and_connected_contacts_carry_on_where_they_were(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # A long flush interval: what reaches the database is what shutdown flushes.
    settings = make_settings(tmp_path, write_flush_interval_seconds=5)
    with serve(settings) as before:
        put_agents(
            before,
            acd_headers,
            {
                "talker": agent({"billing": 5}),
                "offered": agent({"billing": 4}),
                "resting": agent({"billing": 3}, status="break"),
            },
        )
        done = route(before, acd_headers, contact("c-done"))
        before.post(
            f"/v1/reservations/{done['reservation']['reservation_id']}/accept", headers=acd_headers
        )
        assert before.post("/v1/contacts/c-done/complete", headers=acd_headers).status_code == 200
        connected = route(before, acd_headers, contact("c-connected"))
        assert connected["agent_id"] == "talker"
        accepted = before.post(
            f"/v1/reservations/{connected['reservation']['reservation_id']}/accept",
            headers=acd_headers,
        )
        assert accepted.json()["contact_status"] == "connected"
        reserved = route(before, acd_headers, contact("c-reserved"))
        assert reserved["agent_id"] == "offered"
        queued = route(before, acd_headers, contact("c-queued"))
        assert queued["outcome"] == "queued"

    with serve(settings) as after:
        agents = {
            a["agent_id"]: (a["status"], a["load"], a["free"])
            for a in after.get("/v1/agents", headers=acd_headers).json()["items"]
        }
        assert agents == {
            "talker": ("available", {"voice": 1}, {"voice": 0}),
            "offered": ("available", {"voice": 1}, {"voice": 0}),
            "resting": ("break", {}, {"voice": 0}),
        }
        assert [
            i["contact_id"] for i in after.get("/v1/queue", headers=acd_headers).json()["items"]
        ] == ["c-queued"]
        assert status_of(after, acd_headers, "c-connected") == ("connected", "talker")
        assert status_of(after, acd_headers, "c-reserved") == ("reserved", "offered")

        # The ACD retries calls it is unsure about: the first decisions are replayed.
        for body, first in ((contact("c-done"), done), (contact("c-connected"), connected)):
            retry = after.post("/v1/route", json=body, headers=acd_headers)
            assert (retry.status_code, retry.headers.get("Idempotent-Replay")) == (200, "true")
            assert retry.json() == first

        rid = reserved["reservation"]["reservation_id"]
        accept = after.post(f"/v1/reservations/{rid}/accept", headers=acd_headers)
        assert accept.status_code == 200
        assert (accept.json()["agent_id"], accept.json()["contact_status"]) == (
            "offered",
            "connected",
        )

        back = after.post(
            "/v1/agents/resting/status", json={"status": "available"}, headers=acd_headers
        )
        assert back.status_code == 200
        assert status_of(after, acd_headers, "c-queued") == ("reserved", "resting")

        # The connected contact still holds talker's only slot: a newcomer waits for it.
        late = route(after, acd_headers, contact("c-late"))
        assert late["outcome"] == "queued"
        assert after.post("/v1/contacts/c-connected/complete", headers=acd_headers).json()[
            "status"
        ] == ("completed")
        assert status_of(after, acd_headers, "c-late") == ("reserved", "talker")


# ---- concurrency -------------------------------------------------------------------------
async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(5000):  # 5 s at most: the interleaving this test needs must happen
        if await condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the interleaving this test needs never happened")


async def test_a_newcomer_placed_by_a_dispatch_it_waited_behind_is_told_its_reservation(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # A route call waits for its channel while another dispatch (a large solve, say) holds it,
    # and a full dispatch queued earlier places the newcomer. The ACD must get that
    # reservation as the route decision, and a retry must replay it.
    settings = make_settings(tmp_path, write_flush_interval_seconds=5)
    app = create_app(settings, run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://skillroute") as acd,
    ):
        acd.headers.update(acd_headers)
        await acd.put("/v1/agents/biller", json=agent({"billing": 3}, status="break"))
        waiting = await acd.post("/v1/route", json=contact("c-cancel", inquiry_type="cancellation"))
        assert waiting.json()["outcome"] == "queued"
        state = app.state.state

        async def biller_is_back() -> bool:
            found = await state.get_agent("biller")
            return found is not None and found.status == "available"

        async def newcomer_is_waiting() -> bool:
            return any(e.contact_id == "c-new" for e in await state.waiting())

        async with app.state.dispatcher._locks["voice"]:  # a long dispatch holds the channel
            back = asyncio.create_task(
                acd.post("/v1/agents/biller/status", json={"status": "available"})
            )
            await _until(biller_is_back)  # its full dispatch now waits for the channel
            routed = asyncio.create_task(acd.post("/v1/route", json=contact("c-new")))
            await _until(newcomer_is_waiting)  # and so does the newcomer's route call
        assert (await back).status_code == 200
        decision = (await routed).json()

        now = (await acd.get("/v1/contacts/c-new")).json()
        assert (now["status"], now["agent_id"]) == ("reserved", "biller")
        assert (decision["outcome"], decision["agent_id"]) == ("assigned", "biller")
        assert decision["reservation"]["reservation_id"] == now["reservation_id"]
        retry = await acd.post("/v1/route", json=contact("c-new"))
        assert (retry.status_code, retry.json()) == (200, decision)
        explained = (await acd.get("/v1/contacts/c-new/explain")).json()
        assert [(d["outcome"], d["trigger"]) for d in explained["decisions"]] == [
            ("assigned", "status")
        ]

    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            stored = session.get(ContactRow, "c-new")
        assert stored is not None and stored.first_decision == decision
    finally:
        engine.dispose()


# ---- persistence ---------------------------------------------------------------------------
def _contact_row(status: str) -> dict:
    return ContactState(
        contact_id="c-1",
        customer_id="cust-1",
        channel="voice",
        request=contact("c-1"),
        request_hash="0" * 64,
        status=status,  # type: ignore[arg-type]
        rule="billing",
        stage=0,
        priority=50,
        first_decision={"outcome": "queued"},
        created_at=1_800_000_000.0,
        updated_at=1_800_000_000.0,
    ).to_row()


def _decision_row(decision_id: str) -> dict:
    return {
        "decision_id": decision_id,
        "contact_id": "c-1",
        "at": 1_800_000_000.0,
        "outcome": "queued",
        "trigger": "route",
        "agent_id": None,
        "reservation_id": None,
        "rule": "billing",
        "stage": "base",
        "rules_version": 1,
        "method": "none",
        "explanation": {},
    }


def test_a_flush_during_a_slow_background_commit_stores_everything_in_order(
    tmp_path: Path,
) -> None:
    # Explain flushes before it reads. When the background flush is mid-commit, that flush
    # must wait for it: else the read misses rows, and the older contact state, committed
    # last, overwrites the newer one (after a restart the contact would be back in the queue).
    url = f"sqlite:///{tmp_path / 'writer.db'}"
    upgrade(url)
    engine = make_engine(url)
    in_flight = threading.Event()

    @event.listens_for(engine, "before_cursor_execute")
    def _busy_database(*_args: object) -> None:
        if threading.current_thread().name == "skillroute-writer" and not in_flight.is_set():
            in_flight.set()
            time.sleep(0.3)

    def stored() -> tuple[list, list]:
        with engine.connect() as connection:
            contacts = connection.exec_driver_sql("SELECT status FROM contacts").all()
            decisions = connection.exec_driver_sql(
                "SELECT decision_id FROM decisions ORDER BY decision_id"
            ).all()
        return [tuple(r) for r in contacts], [tuple(r) for r in decisions]

    writer = BatchWriter(engine, flush_interval=0.01, batch_max=1000)
    writer.start()
    try:
        writer.put_contact(_contact_row("queued"))
        writer.put_decision(_decision_row("d-1"))
        assert in_flight.wait(5)
        writer.put_contact(_contact_row("reserved"))
        writer.put_decision(_decision_row("d-2"))
        assert writer.flush()
        assert stored() == ([("reserved",)], [("d-1",), ("d-2",)])
    finally:
        writer.stop()
    assert stored() == ([("reserved",)], [("d-1",), ("d-2",)])
    engine.dispose()


# ---- solve deadline ------------------------------------------------------------------------
def _star_and_steady_come_back(client: TestClient, headers: dict[str, str]) -> dict:
    """Two waiting contacts; two agents return from break together (one dispatch)."""
    put_agents(
        client,
        headers,
        {
            "star": agent({"billing": 5, "retention": 4}, status="break"),
            "steady": agent({"billing": 2}, status="break"),
        },
    )
    route(client, headers, contact("c-billing", inquiry_type="billing"))
    route(client, headers, contact("c-cancel", inquiry_type="cancellation"))
    response = client.post(
        "/v1/agents/status",
        headers=headers,
        json={
            "changes": [
                {"agent_id": "star", "status": "available"},
                {"agent_id": "steady", "status": "available"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_solve_past_its_deadline_falls_back_to_greedy_and_never_overfills_an_agent(
    tmp_path: Path,
    acd_headers: dict[str, str],
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker sleeps 0.5 s before solving, so a 0.05 s deadline passes every time.
    monkeypatch.setattr(service.dispatch, "_solve_in_worker", slow_solve_in_worker)
    settings = make_settings(tmp_path, solve_inline_max_arcs=0, solve_time_limit_seconds=0.05)
    with serve(settings) as client:
        fallbacks = metric_value(client, "skillroute_solve_fallbacks_total")
        assert _star_and_steady_come_back(client, acd_headers) == {"updated": 2, "assigned": 1}
        assert metric_value(client, "skillroute_solve_fallbacks_total") == fallbacks + 1
        # Greedy serves contacts in arrival order: billing takes star, the best billing agent,
        # and the cancellation, which only star can take, keeps waiting.
        assert status_of(client, acd_headers, "c-billing") == ("reserved", "star")
        assert status_of(client, acd_headers, "c-cancel") == ("queued", None)
        explained = client.get("/v1/contacts/c-billing/explain", headers=acd_headers).json()
        assert explained["method"] == "greedy"
        loads = {
            a["agent_id"]: a["load"]
            for a in client.get("/v1/agents", headers=acd_headers).json()["items"]
        }
        assert loads == {"star": {"voice": 1}, "steady": {}}


def test_a_large_solve_in_the_worker_process_returns_the_score_maximising_assignment(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    settings = make_settings(tmp_path, solve_inline_max_arcs=0, solve_time_limit_seconds=60)
    with serve(settings) as client:
        fallbacks = metric_value(client, "skillroute_solve_fallbacks_total")
        assert _star_and_steady_come_back(client, acd_headers) == {"updated": 2, "assigned": 2}
        assert status_of(client, acd_headers, "c-billing") == ("reserved", "steady")
        assert status_of(client, acd_headers, "c-cancel") == ("reserved", "star")
        explained = client.get("/v1/contacts/c-cancel/explain", headers=acd_headers).json()
        assert explained["method"] == "mcf"
        assert metric_value(client, "skillroute_solve_fallbacks_total") == fallbacks


# ---- metrics, readiness, request ids -------------------------------------------------------
def test_metrics_count_decisions_queue_length_and_dispatch_time(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    def sample(name: str, **labels: str) -> float:
        return metric_value(client, name, **labels)

    assigned = sample("skillroute_decisions_total", outcome="assigned", trigger="route")
    queued = sample("skillroute_decisions_total", outcome="queued", trigger="route")
    solves = sample("skillroute_dispatch_solve_seconds_count", method="argmax")

    put_agents(client, acd_headers, {f"b{i}": agent({"billing": 3}) for i in range(3)})
    outcomes = [route(client, acd_headers, contact(f"c{i}"))["outcome"] for i in range(5)]
    assert outcomes == ["assigned"] * 3 + ["queued"] * 2
    tick(client)

    assert sample("skillroute_decisions_total", outcome="assigned", trigger="route") == (
        assigned + 3
    )
    assert sample("skillroute_decisions_total", outcome="queued", trigger="route") == queued + 2
    assert sample("skillroute_queue_length", channel="voice") == 2
    assert sample("skillroute_queue_length", channel="chat") == 0
    # One solve per routed contact that found free capacity; a full house skips the solve.
    assert sample("skillroute_dispatch_solve_seconds_count", method="argmax") == solves + 3
    text = client.get("/metrics").text
    assert 'skillroute_dispatch_solve_seconds_bucket{le="+Inf",method="argmax"}' in text


def test_readyz_is_ok_when_database_writer_and_rules_are(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "writer": "ok", "rules": "version 1", **_shared(client)},
    }


def _shared(client: TestClient) -> dict[str, str]:
    """The extra readiness check of an app on the shared (Redis) real-time state."""
    return {"realtime_state": "ok"} if client.app.state.settings.redis_url else {}  # type: ignore[attr-defined]


def test_readyz_is_503_when_the_database_cannot_be_reached(
    client: TestClient, tmp_path: Path
) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    good = state.engine
    unreachable = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'skillroute.db'}")
    state.engine = unreachable
    try:
        response = client.get("/readyz")
    finally:
        state.engine = good
        unreachable.dispose()
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {
            "database": "error: OperationalError",
            "writer": "ok",
            "rules": "version 1",
            **_shared(client),
        },
    }
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_while_the_writer_cannot_persist_and_ready_again_once_it_has(
    client: TestClient, acd_headers: dict[str, str], settings: Settings, fake_clock: FakeClock
) -> None:
    def readiness() -> tuple[int, dict]:
        response = client.get("/readyz")
        return response.status_code, response.json()["checks"]

    def rename(old: str, new: str) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    engine = make_engine(settings.database_url)
    try:
        # The database answers, but refuses the writer's inserts.
        rename("decisions", "decisions_away")
        route(client, acd_headers, contact("c-unsaved"))
        assert wait_until(lambda: readiness()[0] == 503, timeout=5)
        code, checks = readiness()
        assert (code, checks["database"], checks["rules"]) == (503, "ok", "version 1")
        assert checks["writer"].startswith(("error: OperationalError", "error: ProgrammingError"))
        assert "decisions" in checks["writer"]  # no such table / relation does not exist
    finally:
        rename("decisions_away", "decisions")
        engine.dispose()
    assert wait_until(lambda: readiness()[0] == 200, timeout=10)
    # The decision queued while the database refused it was kept and written.
    explained = client.get("/v1/contacts/c-unsaved/explain", headers=acd_headers).json()
    assert [d["outcome"] for d in explained["decisions"]] == ["queued"]


def test_a_request_id_sent_by_the_caller_is_echoed_back(
    client: TestClient, acd_headers: dict[str, str]
) -> None:
    ok = client.get("/v1/queue", headers={**acd_headers, "X-Request-ID": "acd-7f3a-0001"})
    assert ok.headers["x-request-id"] == "acd-7f3a-0001"
    refused = client.get("/v1/queue", headers={"X-Request-ID": "acd-7f3a-0002"})
    assert (refused.status_code, refused.headers["x-request-id"]) == (401, "acd-7f3a-0002")


def test_a_request_without_an_id_gets_a_fresh_one(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


def test_a_request_id_too_long_to_log_is_replaced_by_a_generated_one(client: TestClient) -> None:
    sent = "x" * 129
    echoed = client.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"]
    assert echoed != sent
    assert len(echoed) == 32


async def test_a_retry_that_arrives_while_the_first_call_still_decides_gets_the_same_decision(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    app = create_app(make_settings(tmp_path), run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://skillroute") as acd,
    ):
        acd.headers.update(acd_headers)
        await acd.put("/v1/agents/biller", json=agent({"billing": 3}))
        state = app.state.state

        async def first_is_waiting() -> bool:
            return any(e.contact_id == "c-dup" for e in await state.waiting())

        async with app.state.dispatcher._locks["voice"]:  # the first call waits for the channel
            first = asyncio.create_task(acd.post("/v1/route", json=contact("c-dup")))
            await _until(first_is_waiting)
            retry = asyncio.create_task(acd.post("/v1/route", json=contact("c-dup")))
            await asyncio.sleep(0.05)
            assert not retry.done()  # it waits for the first decision, not an empty one
        first_response, retry_response = await first, await retry
        assert (first_response.status_code, retry_response.status_code) == (201, 200)
        assert retry_response.json() == first_response.json()
        assert first_response.json()["agent_id"] == "biller"
