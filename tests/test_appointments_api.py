"""Appointments and callbacks through the HTTP API, as an ACD/IVR books them."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import select

from service.settings import DEMO_RULES, Settings
from service.storage.tables import OutboxRow
from tests.conftest import (
    FakeClock,
    fresh_schema,
    libpq_url,
    make_settings,
    serve,
    with_search_path,
)

OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
# Monday 2027-01-18 in Berlin (UTC+1); the fake clock starts on Friday 2027-01-15 08:00 UTC.
MONDAY_0900 = "2027-01-18T09:00:00+01:00"
MONDAY_0930 = "2027-01-18T09:30:00+01:00"
MONDAY_1200 = "2027-01-18T12:00:00+01:00"
CALENDAR: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "slot_minutes": 30,
    "hours": [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "12:00", "agents": 4}
    ],
    "horizon_days": 14,
    "reserved_share": 0.25,
    "release_before_minutes": 120,
    "fast_lane_within_minutes": 60,
    "max_delay_minutes": 1440,
}


def rules_with(tmp_path: Path, calendar: dict[str, Any]) -> Path:
    """A rules file: the demo rules with this calendar section."""
    document = yaml.safe_load(DEMO_RULES.read_text(encoding="utf-8"))
    document["calendar"] = calendar
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return rules


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The demo rules with a calendar: weekdays 09:00-12:00 Berlin, 4 agents, 1 seat reserved."""
    return make_settings(tmp_path, rules_file=rules_with(tmp_path, CALENDAR))


@pytest.fixture
def fast_lane(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Customers whose id starts with `vip` hold the subscription `pass-<customer>`."""

    def subscription_pass(customer_id: str, now: float) -> str | None:
        return f"pass-{customer_id}" if customer_id.startswith("vip") else None

    monkeypatch.setattr(client.app.state.passes, "subscription_pass", subscription_pass)  # type: ignore[attr-defined]


def body(
    appointment_id: str,
    customer_id: str | None = None,
    *,
    not_before: str = MONDAY_0900,
    not_after: str = MONDAY_1200,
    **fields: Any,
) -> dict[str, Any]:
    """A booking request for a billing callback."""
    return {
        "appointment_id": appointment_id,
        "customer_id": customer_id or f"cust-{appointment_id}",
        "inquiry_type": "billing",
        "channel": "callback",
        "not_before": not_before,
        "not_after": not_after,
        **fields,
    }


def book(client: TestClient, headers: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/appointments", json=request, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def events(client: TestClient, type_: str) -> list[dict[str, Any]]:
    """The `data` of every outbox event of one type, oldest first."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        rows = connection.execute(
            select(OUTBOX.c.payload).where(OUTBOX.c.type == type_).order_by(OUTBOX.c.seq)
        ).all()
    return [row.payload["data"] for row in rows]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return dict(response.json())


def test_a_standard_customer_gets_the_earliest_slot_in_the_window(
    client: TestClient, acd_headers: dict[str, str]
) -> None:
    booked = book(client, acd_headers, body("a-1", not_before="2027-01-18T10:10:00+01:00"))
    assert booked["slot_start"] == "2027-01-18T09:30:00Z"  # 10:30 Berlin, the first whole slot
    assert booked["slot_end"] == "2027-01-18T10:00:00Z"
    assert (booked["tier"], booked["pass_id"], booked["status"]) == ("standard", None, "booked")
    assert (booked["from_reserved"], booked["moves"], booked["within_sla"]) == (False, [], None)
    again = client.get("/v1/appointments/a-1", headers=acd_headers)
    assert again.status_code == 200
    assert again.json()["slot_start"] == "2027-01-18T09:30:00Z"
    assert events(client, "appointment.booked") == [
        {
            "appointment_id": "a-1",
            "customer_id": "cust-a-1",
            "tier": "standard",
            "pass_id": None,
            "channel": "callback",
            "inquiry_type": "billing",
            "slot_start": "2027-01-18T09:30:00Z",
            "slot_end": "2027-01-18T10:00:00Z",
            "within_sla": None,
            "moved": 0,
        }
    ]


def test_the_reserved_seat_is_kept_for_the_fast_lane(
    client: TestClient, acd_headers: dict[str, str], fast_lane: None
) -> None:
    for number in range(3):
        book(client, acd_headers, body(f"s-{number}", not_after=MONDAY_0930))
    full = client.post(
        "/v1/appointments", json=body("s-3", not_after=MONDAY_0930), headers=acd_headers
    )
    assert "no slot has room" in problem(full, 409)["detail"]
    seats = availability(client, acd_headers, "fast_lane")["2027-01-18T08:00:00Z"]
    assert (seats["capacity"], seats["reserved_seats"], seats["booked"], seats["free"]) == (
        4,
        1,
        3,
        1,
    )
    assert availability(client, acd_headers, "standard")["2027-01-18T08:00:00Z"]["free"] == 0

    paid = book(client, acd_headers, body("f-1", "vip-1", not_after=MONDAY_0930))
    assert paid["slot_start"] == "2027-01-18T08:00:00Z"
    assert (paid["tier"], paid["pass_id"], paid["from_reserved"], paid["within_sla"]) == (
        "fast_lane",
        "pass-vip-1",
        True,
        True,
    )
    assert availability(client, acd_headers, "fast_lane")["2027-01-18T08:00:00Z"]["free"] == 0


def sell(
    client: TestClient, billing_headers: dict[str, str], customer_id: str, **fields: Any
) -> dict[str, Any]:
    """Sell a pass through the billing API; the pass."""
    order = {"customer_id": customer_id, "price_amount": 1500, "currency": "EUR", **fields}
    headers = {**billing_headers, "Idempotency-Key": f"sale-{customer_id}-{fields['kind']}"}
    response = client.post("/v1/passes", json=order, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_only_a_subscription_books_fast_lane_appointments_a_single_incident_pass_does_not(
    client: TestClient,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    single = sell(client, billing_headers, "cust-single", kind="single_incident")
    sub = sell(
        client,
        billing_headers,
        "cust-sub",
        kind="subscription",
        valid_until=fake_clock.now + 365 * 86400,
    )

    with_single = [book(client, acd_headers, body(f"s-{n}", "cust-single")) for n in range(2)]
    with_sub = [book(client, acd_headers, body(f"f-{n}", "cust-sub")) for n in range(2)]

    assert [(b["tier"], b["pass_id"]) for b in with_single] == [("standard", None)] * 2
    assert [(b["tier"], b["pass_id"]) for b in with_sub] == [("fast_lane", sub["pass_id"])] * 2
    kept = client.get(f"/v1/passes/{single['pass_id']}", headers=billing_headers).json()
    assert (kept["status"], kept["consumed_at"], kept["grants_fast_lane"]) == (
        "active",
        None,
        True,
    )


def availability(
    client: TestClient, headers: dict[str, str], tier: str
) -> dict[str, dict[str, Any]]:
    """Monday morning's slots for a tier, by start."""
    response = client.get(
        "/v1/appointments/availability",
        params={"tier": tier, "from": MONDAY_0900, "to": MONDAY_1200},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == "Europe/Berlin"
    return {slot["start"]: slot for slot in response.json()["slots"]}


def test_unsold_reserved_seats_go_to_standard_customers_two_hours_before_the_slot(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    for number in range(3):
        book(client, acd_headers, body(f"s-{number}", not_after=MONDAY_0930))
    late = body("s-3", not_after=MONDAY_0930)
    monday_0800_utc = 1_800_000_000 + 3 * 86400
    fake_clock.now = monday_0800_utc - 2 * 3600 - 1
    problem(client.post("/v1/appointments", json=late, headers=acd_headers), 409)
    fake_clock.now = monday_0800_utc - 2 * 3600
    seats = availability(client, acd_headers, "standard")["2027-01-18T08:00:00Z"]
    assert (seats["released"], seats["free"]) == (True, 1)
    assert book(client, acd_headers, late)["slot_start"] == "2027-01-18T08:00:00Z"


def test_a_fast_lane_booking_in_a_full_window_moves_a_standard_appointment_and_says_so(
    client: TestClient, acd_headers: dict[str, str], fast_lane: None
) -> None:
    # 09:00, 09:30 and 10:00 Berlin fill up: three standard customers and one fast-lane
    # customer each. The fast lane's window for a 09:00 not-before ends at 10:00.
    for number in range(9):
        book(client, acd_headers, body(f"s-{number}"))
    for number in range(3):
        assert book(client, acd_headers, body(f"f-{number}", f"vip-{number}"))["from_reserved"]
    booked = book(client, acd_headers, body("f-new", "vip-new"))
    # Moving the newest standard booking of 10:00 to 10:30 displaces the least: 30 minutes.
    assert booked["slot_start"] == "2027-01-18T09:00:00Z"
    assert booked["within_sla"] is True
    assert booked["moves"] == [
        {
            "appointment_id": "s-8",
            "customer_id": "cust-s-8",
            "old_start": "2027-01-18T09:00:00Z",
            "new_start": "2027-01-18T09:30:00Z",
            "delay_minutes": 30,
            "reason": "fast_lane_booking",
        }
    ]
    moved = client.get("/v1/appointments/s-8", headers=acd_headers).json()
    assert (moved["slot_start"], moved["original_slot_start"], moved["moved_count"]) == (
        "2027-01-18T09:30:00Z",
        "2027-01-18T09:00:00Z",
        1,
    )
    assert events(client, "appointment.rescheduled") == [
        {**booked["moves"][0], "displaced_by": "f-new"}
    ]


def test_a_fast_lane_booking_that_cannot_be_served_in_its_window_gets_the_next_seat(
    client: TestClient, acd_headers: dict[str, str], fast_lane: None
) -> None:
    # Standard customers who cannot be moved (their window is their slot) fill 09:00-10:30.
    for start, end in (
        ("09:00", "09:30"),
        ("09:30", "10:00"),
        ("10:00", "10:30"),
    ):
        for number in range(3):
            book(
                client,
                acd_headers,
                body(
                    f"s-{start}-{number}",
                    not_before=f"2027-01-18T{start}:00+01:00",
                    not_after=f"2027-01-18T{end}:00+01:00",
                ),
            )
        book(client, acd_headers, body(f"f-{start}", f"vip-{start}"))
    booked = book(client, acd_headers, body("f-late", "vip-late"))
    assert (booked["slot_start"], booked["within_sla"], booked["moves"]) == (
        "2027-01-18T09:30:00Z",
        False,
        [],
    )
    assert events(client, "appointment.rescheduled") == []


def test_cancelling_frees_the_seat_and_is_harmless_to_repeat(
    client: TestClient, acd_headers: dict[str, str]
) -> None:
    for number in range(3):
        book(client, acd_headers, body(f"s-{number}", not_after=MONDAY_0930))
    waiting = body("s-3", not_after=MONDAY_0930)
    problem(client.post("/v1/appointments", json=waiting, headers=acd_headers), 409)
    first = client.post("/v1/appointments/s-1/cancel", headers=acd_headers)
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    second = client.post("/v1/appointments/s-1/cancel", headers=acd_headers)
    assert second.json() == first.json()
    assert book(client, acd_headers, waiting)["slot_start"] == "2027-01-18T08:00:00Z"
    assert events(client, "appointment.cancelled") == [
        {
            "appointment_id": "s-1",
            "customer_id": "cust-s-1",
            "tier": "standard",
            "slot_start": "2027-01-18T08:00:00Z",
        }
    ]


def test_an_appointment_that_has_started_cannot_be_cancelled(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    book(client, acd_headers, body("a-1"))
    fake_clock.now = 1_800_000_000 + 3 * 86400  # Monday 09:00 Berlin
    response = client.post("/v1/appointments/a-1/cancel", headers=acd_headers)
    assert "already started" in problem(response, 409)["detail"]
    assert client.get("/v1/appointments/a-1", headers=acd_headers).json()["status"] == "booked"


def test_a_retry_replays_the_booking_and_a_changed_request_is_a_conflict(
    client: TestClient, acd_headers: dict[str, str], fast_lane: None
) -> None:
    for number in range(9):
        book(client, acd_headers, body(f"s-{number}"))
    for number in range(3):
        book(client, acd_headers, body(f"f-{number}", f"vip-{number}"))
    first = book(client, acd_headers, body("f-new", "vip-new"))
    retry = client.post("/v1/appointments", json=body("f-new", "vip-new"), headers=acd_headers)
    assert retry.status_code == 200
    assert retry.headers["idempotent-replay"] == "true"
    assert retry.json() == first
    assert len(events(client, "appointment.booked")) == 13
    changed = body("f-new", "vip-new", not_after="2027-01-18T11:00:00+01:00")
    response = client.post("/v1/appointments", json=changed, headers=acd_headers)
    assert "different details" in problem(response, 409)["detail"]


def test_a_customers_appointments_are_listed_page_by_page(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    for number in range(3):
        book(client, acd_headers, body(f"a-{number}", "cust-1"))
        fake_clock.advance(1)
    book(client, acd_headers, body("other", "cust-2"))
    client.post("/v1/appointments/a-1/cancel", headers=acd_headers)
    page = client.get(
        "/v1/appointments", params={"customer_id": "cust-1", "limit": 2}, headers=acd_headers
    ).json()
    assert [item["appointment_id"] for item in page["items"]] == ["a-0", "a-1"]
    rest = client.get(
        "/v1/appointments",
        params={"customer_id": "cust-1", "limit": 2, "cursor": page["next_cursor"]},
        headers=acd_headers,
    ).json()
    assert ([item["appointment_id"] for item in rest["items"]], rest["next_cursor"]) == (
        ["a-2"],
        None,
    )
    booked = client.get(
        "/v1/appointments",
        params={"customer_id": "cust-1", "status": "booked"},
        headers=acd_headers,
    ).json()
    assert [item["appointment_id"] for item in booked["items"]] == ["a-0", "a-2"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"channel": "pigeon"}, "channel"),
        ({"inquiry_type": "gossip"}, "inquiry_type"),
        ({"not_before": "2027-01-18T09:00:00"}, "not_before"),  # no offset
        ({"not_before": "1800000000"}, "not_before"),
        ({"not_after": "2027-01-18T08:00:00+01:00"}, "not_after"),  # before not_before
        ({"not_after": "2027-01-14T08:00:00Z"}, "not_after"),  # in the past
        ({"not_before": "2027-03-01T09:00:00Z", "not_after": "2027-03-02T09:00:00Z"}, "not_before"),
        ({"tier": "fast_lane"}, "tier"),  # the tier comes from the pass, never from the body
        ({"appointment_id": "bad id"}, "appointment_id"),
    ],
)
def test_bad_booking_requests_are_422_naming_the_field_and_book_nothing(
    client: TestClient, acd_headers: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/appointments", json=body("a-1") | changes, headers=acd_headers)
    assert field in [error["field"] for error in problem(response, 422)["errors"]]
    problem(client.get("/v1/appointments/a-1", headers=acd_headers), 404)
    assert events(client, "appointment.booked") == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/appointments?customer_id=cust-a&limit=x&limit=1",
        "/v1/appointments?customer_id=cust-a&customer_id=cust-b",
        f"/v1/appointments/availability?from={MONDAY_0900}&to={MONDAY_1200}&to={MONDAY_0930}",
    ],
)
def test_a_query_parameter_given_twice_is_422(
    client: TestClient, acd_headers: dict[str, str], path: str
) -> None:
    response = client.get(path.replace("+", "%2B"), headers=acd_headers)
    assert "given more than once" in problem(response, 422)["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": MONDAY_1200, "to": MONDAY_0900}, "query.to"),
        ({"from": MONDAY_0900, "to": "2027-01-28T09:00:00+01:00"}, "query.to"),  # over 7 days
        ({"from": "monday", "to": MONDAY_1200}, "query.from"),
        ({"from": MONDAY_0900, "to": MONDAY_1200, "tier": "gold"}, "query.tier"),
    ],
)
def test_bad_availability_requests_are_422(
    client: TestClient, acd_headers: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = client.get("/v1/appointments/availability", params=params, headers=acd_headers)
    assert field in [error["field"] for error in problem(response, 422)["errors"]]


def test_unknown_appointments_and_foreign_cursors_are_refused(
    client: TestClient, acd_headers: dict[str, str]
) -> None:
    problem(client.get("/v1/appointments/nope", headers=acd_headers), 404)
    problem(client.post("/v1/appointments/nope/cancel", headers=acd_headers), 404)
    response = client.get(
        "/v1/appointments", params={"customer_id": "c", "cursor": "abc"}, headers=acd_headers
    )
    assert problem(response, 422)["errors"][0]["field"] == "query.cursor"


def test_every_appointment_route_needs_the_route_scope(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    calls = [
        ("POST", "/v1/appointments"),
        ("GET", "/v1/appointments?customer_id=c"),
        ("GET", f"/v1/appointments/availability?from={MONDAY_0900}&to={MONDAY_1200}"),
        ("GET", "/v1/appointments/a-1"),
        ("POST", "/v1/appointments/a-1/cancel"),
    ]
    for method, url in calls:
        assert problem(client.request(method, url), 401)["status"] == 401
        assert problem(client.request(method, url, headers=admin_headers), 403)["status"] == 403


def test_without_opening_hours_there_is_nothing_to_book(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    rules = rules_with(tmp_path, {"timezone": "Europe/Berlin", "hours": []})
    with serve(make_settings(tmp_path, rules_file=rules)) as closed_client:
        response = closed_client.post("/v1/appointments", json=body("a-1"), headers=acd_headers)
        assert "no opening hours" in problem(response, 409)["detail"]
        slots = closed_client.get(
            "/v1/appointments/availability",
            params={"from": MONDAY_0900, "to": MONDAY_1200},
            headers=acd_headers,
        ).json()["slots"]
        assert slots == []


@pytest.mark.integration
def test_a_reorder_on_postgresql_moves_the_row_and_writes_its_events_in_one_go(
    postgres_url: str,
    tmp_path: Path,
    acd_headers: dict[str, str],
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = f"skillroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        url = with_search_path(postgres_url, schema)
        rules = rules_with(tmp_path, CALENDAR)
        with serve(make_settings(tmp_path, database_url=url, rules_file=rules)) as pg_client:
            monkeypatch.setattr(
                pg_client.app.state.passes,  # type: ignore[attr-defined]
                "subscription_pass",
                lambda customer_id, now: "pass-1" if customer_id.startswith("vip") else None,
            )
            for number in range(9):
                book(pg_client, acd_headers, body(f"s-{number}"))
            for number in range(3):
                book(pg_client, acd_headers, body(f"f-{number}", f"vip-{number}"))
            booked = book(pg_client, acd_headers, body("f-new", "vip-new"))
            assert [move["appointment_id"] for move in booked["moves"]] == ["s-8"]
            assert [e["appointment_id"] for e in events(pg_client, "appointment.rescheduled")] == [
                "s-8"
            ]
            moved = pg_client.get("/v1/appointments/s-8", headers=acd_headers).json()
            assert (moved["slot_start"], moved["moved_count"]) == ("2027-01-18T09:30:00Z", 1)
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_service_loads_cp_sat_only_when_warmed_or_reordering() -> None:
    # Importing CP-SAT pulls in pandas (~1.5 s): starting the app must not pay for it, and
    # `warm` lets the app pay it at startup instead of in the first reorder's request.
    script = (
        "import asyncio, sys\n"
        "from service.app import create_app\n"
        "from service.appointments import AppointmentBook\n"
        "loaded = 'ortools.sat.python.cp_model' in sys.modules\n"
        "book = AppointmentBook(engine=None, rules=None, passes=None)\n"
        "asyncio.run(book.warm())\n"
        "print(loaded, 'ortools.sat.python.cp_model' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.stdout.split() == ["False", "True"]


def test_two_replicas_on_postgresql_never_book_more_seats_than_a_slot_has(
    postgres_url: str, tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    """Each replica serialises its own bookings; the database lock serialises the replicas'."""
    with fresh_schema(postgres_url) as database_url:
        settings = make_settings(
            tmp_path, database_url=database_url, rules_file=rules_with(tmp_path, CALENDAR)
        )
        with serve(settings) as first, serve(settings) as second:
            # One slot (09:00-09:30): 4 agents, 1 seat reserved for the fast lane, 3 to sell.
            requests = [body(f"race-{n}", not_after=MONDAY_0930) for n in range(16)]
            with ThreadPoolExecutor(max_workers=16) as pool:
                statuses = list(
                    pool.map(
                        lambda n: (
                            (first, second)[n % 2]
                            .post("/v1/appointments", json=requests[n], headers=acd_headers)
                            .status_code
                        ),
                        range(len(requests)),
                    )
                )
            assert statuses.count(201) == 3, statuses
            assert all(400 <= status < 500 for status in statuses if status != 201), statuses
            booked = [
                first.get(f"/v1/appointments/race-{n}", headers=acd_headers).status_code
                for n in range(len(requests))
            ]
            assert booked.count(200) == 3
