"""Outcomes of completed contacts: recording, replacing, refusals, and repeat-contact detection.

Arrival times are set on the fake clock, so every window below is exact: `at(3)` is a contact
that arrived three days after the first one. The rules here have a 7-day repeat window.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from routing_rules.problems import RuleProblem, RulesInvalid
from routing_rules.validation import validate_rules_text
from service.contacts import ContactState
from service.outcome_models import OutcomeIn
from service.outcomes import OutcomeChange, OutcomeDesk
from service.rules_store import RulesStore
from service.settings import Settings
from service.storage.db import make_engine, upgrade
from service.storage.tables import OutcomeRow
from tests.conftest import (
    ACD_KEY,
    ADMIN_KEY,
    FakeClock,
    agent,
    contact,
    demo_rules_with,
    make_settings,
    metric_value,
    put_agents,
    route,
    serve,
)
from tests.test_postgres import PgDatabase, pg  # noqa: F401  (the `pg` fixture)

ACD = {"Authorization": f"Bearer {ACD_KEY}"}
START = 1_800_000_000.0
DAY = 86400.0
TAGS_YAML = """
outcomes:
  repeat_window_days: 7
  tags:
    needs: [refund, invoice_copy, faster_delivery]
    frustrations: [long_wait, repeated_explanation]
    requests: [callback, paper_invoice]
"""
COLUMNS = set(OutcomeRow.__table__.columns.keys())  # type: ignore[attr-defined]
Links = tuple[bool, str | None, str | None]  # durable, repeat_of, repeated_by


def at(days: float) -> float:
    """Unix time `days` after the first contact of a test."""
    return START + days * DAY


def outcome_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings whose rules define outcome tags and a 7-day repeat window."""
    path = tmp_path / "rules.yaml"
    path.write_text(demo_rules_with(TAGS_YAML), encoding="utf-8")
    return make_settings(tmp_path, rules_file=path, **overrides)


@pytest.fixture
def app(tmp_path: Path, fake_clock: FakeClock) -> Iterator[TestClient]:
    """A running app with one agent who takes billing and technical calls."""
    with serve(outcome_settings(tmp_path)) as client:
        put_agents(client, ACD, {"desk": agent({"billing": 5, "technical": 5})})
        yield client


def connect(client: TestClient, contact_id: str, customer: str, inquiry: str) -> None:
    """Route a contact to the (free) agent, who accepts it."""
    decision = route(client, ACD, contact(contact_id, customer_id=customer, inquiry_type=inquiry))
    assert decision["agent_id"] == "desk", decision
    rid = decision["reservation"]["reservation_id"]
    assert client.post(f"/v1/reservations/{rid}/accept", headers=ACD).status_code == 200


def served(
    client: TestClient,
    clock: FakeClock,
    contact_id: str,
    arrived: float,
    *,
    customer: str = "alice",
    inquiry: str = "billing",
) -> None:
    """A contact that arrived at `arrived`, talked 2 minutes and was completed (no outcome)."""
    clock.now = arrived
    connect(client, contact_id, customer, inquiry)
    clock.advance(120)
    assert client.post(f"/v1/contacts/{contact_id}/complete", headers=ACD).status_code == 200


def put(client: TestClient, contact_id: str, **fields: Any) -> httpx.Response:
    """PUT an outcome (resolved unless said otherwise)."""
    body = {"resolved": True, **fields}
    response: httpx.Response = client.put(
        f"/v1/contacts/{contact_id}/outcome", json=body, headers=ACD
    )
    return response


def links(client: TestClient, *contact_ids: str) -> dict[str, Links]:
    """Durability and repeat links of stored outcomes."""
    found = {}
    for contact_id in contact_ids:
        response = client.get(f"/v1/contacts/{contact_id}/outcome", headers=ACD)
        assert response.status_code == 200, response.text
        row = response.json()
        found[contact_id] = (row["durable"], row["repeat_of"], row["repeated_by"])
    return found


def no_outcome(client: TestClient, contact_id: str) -> bool:
    """Whether the contact has no stored outcome."""
    status: int = client.get(f"/v1/contacts/{contact_id}/outcome", headers=ACD).status_code
    return status == 404


# ---- recording ------------------------------------------------------------------------------
def test_completing_with_an_outcome_stores_it_with_the_contacts_facts(
    app: TestClient, fake_clock: FakeClock
) -> None:
    recorded_before = metric_value(app, "skillroute_outcomes_total", resolved="true")
    route(app, ACD, contact("c-1", customer_id="alice", journey_stage="renewal"))
    fake_clock.advance(30)  # waiting is not handling
    rid = app.get("/v1/contacts/c-1", headers=ACD).json()["reservation_id"]
    app.post(f"/v1/reservations/{rid}/accept", headers=ACD)
    fake_clock.advance(200)
    body = {
        "outcome": {
            "resolved": True,
            "revenue": {"amount_minor": 4990, "currency": "EUR"},
            "upsell": True,
            "nps": 9,
            "tags": {"needs": ["refund"], "frustrations": ["long_wait"], "requests": []},
        }
    }
    response = app.post("/v1/contacts/c-1/complete", json=body, headers=ACD)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["status"], answer["ended_at"]) == ("completed", START + 230)
    expected = {
        "contact_id": "c-1",
        "customer_id": "alice",
        "agent_id": "desk",
        "channel": "voice",
        "segment": "consumer",
        "inquiry_type": "billing",
        "journey_stage": "renewal",
        "tier": "standard",
        "resolved": True,
        "durable": True,
        "repeat_of": None,
        "repeated_by": None,
        "revenue": {"amount_minor": 4990, "currency": "EUR"},
        "upsell": True,
        "cross_sell": False,
        "nps": 9,
        "handle_seconds": 200.0,  # answered at +30, completed at +230
        "tags": {"needs": ["refund"], "frustrations": ["long_wait"], "requests": []},
        "contact_created_at": START,
        "completed_at": START + 230,
        "recorded_at": START + 230,
    }
    assert answer["outcome"] == expected
    assert app.get("/v1/contacts/c-1/outcome", headers=ACD).json() == expected
    assert metric_value(app, "skillroute_outcomes_total", resolved="true") == recorded_before + 1
    # The agent's slot was freed as by a plain complete.
    assert app.get("/v1/agents/desk", headers=ACD).json()["load"] == {}


def test_complete_without_a_body_answers_exactly_as_before_and_records_nothing(
    app: TestClient, fake_clock: FakeClock
) -> None:
    connect(app, "c-1", "alice", "billing")
    fake_clock.advance(60)
    done = app.post("/v1/contacts/c-1/complete", headers=ACD)
    assert done.status_code == 200
    assert "outcome" not in done.json()
    assert done.json() == app.get("/v1/contacts/c-1", headers=ACD).json()
    assert no_outcome(app, "c-1")


def test_an_outcome_put_after_complete_is_201_and_a_second_put_replaces_it_with_200(
    app: TestClient, fake_clock: FakeClock
) -> None:
    served(app, fake_clock, "c-1", at(0))
    recorded_before = metric_value(app, "skillroute_outcomes_total", resolved="true")
    fake_clock.advance(600)  # wrap-up after the call
    first = put(app, "c-1", nps=10, handle_seconds=95.5, tags={"requests": ["callback"]})
    assert first.status_code == 201, first.text
    assert (first.json()["durable"], first.json()["handle_seconds"]) == (True, 95.5)
    assert first.json()["recorded_at"] == at(0) + 720
    fake_clock.advance(60)
    second = put(app, "c-1", resolved=False, cross_sell=True)
    assert second.status_code == 200, second.text
    replaced = second.json()
    assert (replaced["resolved"], replaced["durable"], replaced["cross_sell"]) == (
        False,
        False,
        True,
    )
    # Nothing of the first outcome survives but the contact's facts; the default handle time
    # is the call's: answered at arrival, completed two minutes later.
    assert (replaced["nps"], replaced["handle_seconds"], replaced["tags"]["requests"]) == (
        None,
        120.0,
        [],
    )
    assert replaced["recorded_at"] == at(0) + 780
    assert app.get("/v1/contacts/c-1/outcome", headers=ACD).json() == replaced
    # Only the first recording of a contact is counted.
    assert metric_value(app, "skillroute_outcomes_total", resolved="true") == recorded_before + 1


def test_an_outcome_sent_again_with_complete_replaces_the_stored_one(
    app: TestClient, fake_clock: FakeClock
) -> None:
    served(app, fake_clock, "c-1", at(0))
    assert put(app, "c-1", nps=3).status_code == 201
    again = app.post(
        "/v1/contacts/c-1/complete", json={"outcome": {"resolved": False}}, headers=ACD
    )
    assert again.status_code == 200, again.text
    assert (again.json()["outcome"]["resolved"], again.json()["outcome"]["nps"]) == (False, None)


# ---- refusals: nothing changes ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("outcome", "field", "detail"),
    [
        (
            {"resolved": True, "tags": {"needs": ["refnd"]}},
            "outcome.tags.needs.0",
            "outcome.tags.needs.0: unknown need tag 'refnd' (did you mean 'refund'?); "
            "known: refund, invoice_copy, faster_delivery",
        ),
        (
            {"resolved": True, "tags": {"requests": ["callback", "callback"]}},
            "outcome.tags.requests.1",
            "outcome.tags.requests.1: tag 'callback' is given twice",
        ),
        ({"resolved": True, "mood": "happy"}, "outcome.mood", None),
        ({"resolved": True, "nps": 11}, "outcome.nps", None),
        ({"resolved": "yes"}, "outcome.resolved", None),
        ({"resolved": True, "revenue": {"amount_minor": -1, "currency": "EUR"}}, None, None),
        ({"resolved": True, "revenue": {"amount_minor": 100, "currency": "eur"}}, None, None),
        ({"resolved": True, "handle_seconds": -5}, "outcome.handle_seconds", None),
        ({"nps": 5}, "outcome.resolved", None),
    ],
)
def test_a_bad_outcome_on_complete_is_422_and_the_contact_stays_connected(
    app: TestClient,
    fake_clock: FakeClock,
    outcome: dict[str, Any],
    field: str | None,
    detail: str | None,
) -> None:
    connect(app, "c-1", "alice", "billing")
    response = app.post("/v1/contacts/c-1/complete", json={"outcome": outcome}, headers=ACD)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    if field is not None:
        assert problem["errors"][0]["field"] == field
    if detail is not None:
        assert problem["detail"] == detail
    assert app.get("/v1/contacts/c-1", headers=ACD).json()["status"] == "connected"
    assert app.get("/v1/agents/desk", headers=ACD).json()["load"] == {"voice": 1}
    assert no_outcome(app, "c-1")


def test_an_outcome_for_a_contact_not_completed_is_409_and_stores_nothing(
    app: TestClient, fake_clock: FakeClock
) -> None:
    reserved = route(app, ACD, contact("c-1", customer_id="alice"))
    assert put(app, "c-1").status_code == 409
    app.post(f"/v1/reservations/{reserved['reservation']['reservation_id']}/accept", headers=ACD)
    refused = put(app, "c-1")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "contact c-1 is connected; only a completed contact has an outcome"
    )
    assert route(app, ACD, contact("c-2", customer_id="bob"))["outcome"] == "queued"
    assert put(app, "c-2").status_code == 409
    assert app.post("/v1/contacts/c-2/abandon", headers=ACD).status_code == 200
    assert put(app, "c-2").status_code == 409
    assert no_outcome(app, "c-1") and no_outcome(app, "c-2")
    assert app.get("/v1/contacts/c-1", headers=ACD).json()["status"] == "connected"


def test_an_unknown_contact_is_404_and_a_bad_put_leaves_the_stored_outcome_alone(
    app: TestClient, fake_clock: FakeClock
) -> None:
    assert put(app, "nobody").status_code == 404
    assert app.get("/v1/contacts/nobody/outcome", headers=ACD).status_code == 404
    served(app, fake_clock, "c-1", at(0))
    stored = put(app, "c-1", nps=7).json()
    unknown = put(app, "c-1", tags={"frustrations": ["long_wiat"]})
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {
            "field": "tags.frustrations.0",
            "type": "unknown_name",
            "message": "unknown frustration tag 'long_wiat' (did you mean 'long_wait'?); "
            "known: long_wait, repeated_explanation",
        }
    ]
    assert put(app, "c-1", mood="fine").json()["errors"][0]["field"] == "mood"
    assert app.get("/v1/contacts/c-1/outcome", headers=ACD).json() == stored


def test_outcome_routes_need_an_acd_key(app: TestClient, fake_clock: FakeClock) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for method in ("GET", "PUT"):
        kwargs: dict[str, Any] = {"json": {"resolved": True}} if method == "PUT" else {}
        path = "/v1/contacts/c-1/outcome"
        assert app.request(method, path, **kwargs).status_code == 401
        assert app.request(method, path, headers=admin, **kwargs).status_code == 403


# ---- repeat contacts -------------------------------------------------------------------------
def test_repeat_contacts_in_order_within_the_window_of_the_same_customer_and_inquiry(
    app: TestClient, fake_clock: FakeClock
) -> None:
    served(app, fake_clock, "a-1", at(0))
    served(app, fake_clock, "b-1", at(1), customer="bob")  # another customer
    served(app, fake_clock, "a-tech", at(2), inquiry="technical")  # another inquiry type
    served(app, fake_clock, "a-2", at(3))  # 3 days after a-1: a repeat
    served(app, fake_clock, "a-3", at(10) + 1)  # 7 days and 1 s after a-2: outside
    served(app, fake_clock, "a-4", at(17) + 1)  # exactly 7 days after a-3: inside
    for contact_id in ("a-1", "b-1", "a-tech", "a-2", "a-3", "a-4"):
        assert put(app, contact_id).status_code == 201
    assert links(app, "a-1", "b-1", "a-tech", "a-2", "a-3", "a-4") == {
        "a-1": (False, None, "a-2"),
        "b-1": (True, None, None),
        "a-tech": (True, None, None),
        "a-2": (True, "a-1", None),
        "a-3": (False, None, "a-4"),
        "a-4": (True, "a-3", None),
    }


def test_outcomes_recorded_out_of_order_end_up_linked_as_in_order(
    app: TestClient, fake_clock: FakeClock
) -> None:
    for contact_id, day in (("a-1", 0), ("a-2", 2), ("a-3", 4)):
        served(app, fake_clock, contact_id, at(day))
    assert put(app, "a-3").status_code == 201
    assert links(app, "a-3") == {"a-3": (True, None, None)}
    put(app, "a-1")  # the earliest later outcome is a-3
    assert links(app, "a-1", "a-3") == {"a-1": (False, None, "a-3"), "a-3": (True, "a-1", None)}
    put(app, "a-2")  # between the two: both links move to it
    assert links(app, "a-1", "a-2", "a-3") == {
        "a-1": (False, None, "a-2"),
        "a-2": (False, "a-1", "a-3"),
        "a-3": (True, "a-2", None),
    }


def test_an_unresolved_contact_keeps_its_repeat_link_and_a_replacement_recomputes_durability(
    app: TestClient, fake_clock: FakeClock
) -> None:
    served(app, fake_clock, "a-1", at(0))
    served(app, fake_clock, "a-2", at(1))
    put(app, "a-1", resolved=False)
    put(app, "a-2", resolved=False)
    assert links(app, "a-1", "a-2") == {"a-1": (False, None, "a-2"), "a-2": (False, "a-1", None)}
    assert put(app, "a-2").status_code == 200  # now resolved
    put(app, "a-1")  # resolved too, but repeated: not durable
    assert links(app, "a-1", "a-2") == {"a-1": (False, None, "a-2"), "a-2": (True, "a-1", None)}


def test_listeners_get_every_row_written_with_its_previous_state(
    app: TestClient, fake_clock: FakeClock
) -> None:
    calls: list[list[OutcomeChange]] = []
    app.app.state.outcomes.listeners.append(calls.append)  # type: ignore[attr-defined]
    served(app, fake_clock, "a-1", at(0))
    served(app, fake_clock, "a-2", at(1))
    put(app, "a-1")
    put(app, "a-2")
    assert [[(old and old["contact_id"], new["contact_id"]) for old, new in c] for c in calls] == [
        [(None, "a-1")],
        [(None, "a-2"), ("a-1", "a-1")],
    ]
    first_a1 = calls[0][0][1]
    assert set(first_a1) == COLUMNS
    assert calls[1][1] == (first_a1, {**first_a1, "durable": False, "repeated_by": "a-2"})
    assert calls[1][0][1]["repeat_of"] == "a-1"


def test_concurrent_puts_for_two_repeat_contacts_of_one_customer_link_both(
    app: TestClient, fake_clock: FakeClock
) -> None:
    for number in range(5):
        served(app, fake_clock, f"c{number}-1", at(number), customer=f"cust-{number}")
        served(app, fake_clock, f"c{number}-2", at(number) + 3600, customer=f"cust-{number}")
    start = threading.Barrier(2)

    def send(contact_id: str) -> int:
        start.wait()
        return put(app, contact_id).status_code

    with ThreadPoolExecutor(2) as pool:
        for number in range(5):
            pair = [f"c{number}-2", f"c{number}-1"]
            assert list(pool.map(send, pair)) == [201, 201]
            assert links(app, *pair[::-1]) == {
                f"c{number}-1": (False, None, f"c{number}-2"),
                f"c{number}-2": (True, f"c{number}-1", None),
            }


# ---- database failures -----------------------------------------------------------------------
def fail_statements(engine: Engine, marker: str) -> Any:
    """Make every SQL statement containing `marker` fail as if the database went away."""

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if marker in statement:
            raise OperationalError(statement, {}, Exception("connection refused"))

    event.listen(engine, "before_cursor_execute", refuse)
    return refuse


def test_a_database_outage_after_completion_is_503_and_the_put_can_be_retried(
    app: TestClient, fake_clock: FakeClock
) -> None:
    engine = app.app.state.engine  # type: ignore[attr-defined]
    connect(app, "c-1", "alice", "billing")
    refuse = fail_statements(engine, "outcomes")
    try:
        body = {"outcome": {"resolved": True, "nps": 8}}
        response = app.post("/v1/contacts/c-1/complete", json=body, headers=ACD)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert "completed but its outcome was not stored" in response.json()["detail"]
        assert put(app, "c-1", nps=8).status_code == 503
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert app.get("/v1/contacts/c-1", headers=ACD).json()["status"] == "completed"
    assert no_outcome(app, "c-1")
    retried = put(app, "c-1", nps=8)
    assert (retried.status_code, retried.json()["nps"]) == (201, 8)


def test_a_failure_while_linking_the_earlier_outcome_writes_neither_row(
    app: TestClient, fake_clock: FakeClock
) -> None:
    engine = app.app.state.engine  # type: ignore[attr-defined]
    served(app, fake_clock, "a-1", at(0))
    served(app, fake_clock, "a-2", at(1))
    put(app, "a-1")
    refuse = fail_statements(engine, "repeated_by=")  # only the neighbour's update sets it
    try:
        assert put(app, "a-2").status_code == 503
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert no_outcome(app, "a-2")
    assert links(app, "a-1") == {"a-1": (True, None, None)}
    assert put(app, "a-2").status_code == 201
    assert links(app, "a-1", "a-2") == {"a-1": (False, None, "a-2"), "a-2": (True, "a-1", None)}


# ---- two replicas on one database --------------------------------------------------------------
def completed(contact_id: str, customer: str, arrived: float) -> ContactState:
    """A contact that was answered 5 s after arriving and completed a minute later."""
    return ContactState(
        contact_id=contact_id,
        customer_id=customer,
        channel="voice",
        request=contact(contact_id, customer_id=customer),
        request_hash="0" * 64,
        status="completed",
        rule="billing",
        stage=0,
        priority=50,
        first_decision={},
        created_at=arrived,
        updated_at=arrived + 65,
        agent_id="desk",
        connected_at=arrived + 5,
        ended_at=arrived + 65,
    )


def race_two_replicas(url: str, tmp_path: Path, customers: int = 20) -> None:
    """Two desks on their own engines record two repeat contacts of each customer at once."""
    upgrade(url)
    engines = [make_engine(url), make_engine(url)]
    try:
        rules = RulesStore(engines[0], rules_file=outcome_settings(tmp_path).rules_file)
        rules.bootstrap()
        desks = [OutcomeDesk(engine=engine, rules=rules) for engine in engines]
        start = threading.Barrier(2)

        def record(replica: int, customer: str) -> None:
            state = completed(f"{customer}-{replica}", customer, START + replica * 3600)
            start.wait()
            asyncio.run(desks[replica].record(state, OutcomeIn(resolved=True)))

        with ThreadPoolExecutor(2) as pool:
            for number in range(customers):
                customer = f"cust-{number}"
                list(pool.map(record, (0, 1), (customer, customer)))
        found = {}
        for number in range(customers):
            for replica in (0, 1):
                row = asyncio.run(desks[0].get(f"cust-{number}-{replica}"))
                found[row["contact_id"]] = (row["durable"], row["repeat_of"], row["repeated_by"])
        for number in range(customers):
            first, second = f"cust-{number}-0", f"cust-{number}-1"
            assert (found[first], found[second]) == (
                (False, None, second),
                (True, first, None),
            ), number
    finally:
        for engine in engines:
            engine.dispose()


def test_two_replicas_on_one_sqlite_file_never_miss_each_others_repeat(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    race_two_replicas(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path)


@pytest.mark.integration
def test_two_replicas_on_postgresql_never_miss_each_others_repeat(
    pg: PgDatabase,  # noqa: F811
    tmp_path: Path,
    fake_clock: FakeClock,
) -> None:
    race_two_replicas(pg.url, tmp_path)


@pytest.mark.integration
def test_repeat_detection_on_postgresql_in_and_out_of_order(
    pg: PgDatabase,  # noqa: F811
    tmp_path: Path,
    fake_clock: FakeClock,
) -> None:
    with serve(outcome_settings(tmp_path, database_url=pg.url)) as client:
        put_agents(client, ACD, {"desk": agent({"billing": 5, "technical": 5})})
        served(client, fake_clock, "a-1", at(0))
        served(client, fake_clock, "b-1", at(1), customer="bob")
        served(client, fake_clock, "a-2", at(2))
        served(client, fake_clock, "a-3", at(4))
        served(client, fake_clock, "a-4", at(10.5))  # 6.5 days after a-3: a repeat
        served(client, fake_clock, "a-5", at(18))  # 7.5 days after a-4: not a repeat
        for contact_id in ("a-3", "a-5", "a-1", "b-1", "a-4", "a-2"):
            assert put(client, contact_id).status_code == 201
        assert links(client, "a-1", "a-2", "a-3", "a-4", "a-5", "b-1") == {
            "a-1": (False, None, "a-2"),
            "a-2": (False, "a-1", "a-3"),
            "a-3": (False, "a-2", "a-4"),
            "a-4": (True, "a-3", None),
            "a-5": (True, None, None),
            "b-1": (True, None, None),
        }
    assert pg.rows(
        "SELECT contact_id, durable, repeat_of, repeated_by FROM outcomes "
        "WHERE customer_id = 'alice' ORDER BY contact_created_at"
    ) == [
        ("a-1", False, None, "a-2"),
        ("a-2", False, "a-1", "a-3"),
        ("a-3", False, "a-2", "a-4"),
        ("a-4", True, "a-3", None),
        ("a-5", True, None, None),
    ]


# ---- the rules document ----------------------------------------------------------------------
def test_a_tag_listed_twice_in_the_rules_is_an_error_at_the_second_item() -> None:
    text = demo_rules_with() + (
        "outcomes:\n  tags:\n    needs:\n      - refund\n      - invoice_copy\n"
        "      - faster_delivery\n      - refund\n"
    )
    line = text.count("\n")  # the last line
    with pytest.raises(RulesInvalid) as caught:
        validate_rules_text(text, file="rules.yaml")
    assert caught.value.problems == [
        RuleProblem(
            "rules.yaml",
            line,
            9,
            "outcomes.tags.needs[3]",
            "'refund' is listed twice",
            code="duplicate",
        )
    ]
