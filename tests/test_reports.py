"""SLA and fast-lane reports, checked figure by figure against a hand-computed contact center.

The fixture: Monday 2027-01-11, 09:00–11:00 UTC, asked for as 10:00–12:00 +01:00 in hourly
buckets. Voice has an SLA for both tiers (standard 80 % in 60 s, fast lane 90 % in 20 s) and
two planned agents from 09:00; chat has neither an SLA nor a plan. Every expected figure below
is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import insert

from service.settings import Settings
from service.storage.tables import ContactRow, OutboxRow, PassRow, RefundRow
from tests.conftest import FakeClock, demo_rules_with, libpq_url, make_settings, serve

T0 = dt.datetime(2027, 1, 11, 9, tzinfo=dt.UTC).timestamp()  # a Monday, 09:00 UTC
WINDOW = {"from": "2027-01-11T10:00:00+01:00", "to": "2027-01-11T12:00:00+01:00"}
B0 = ("2027-01-11T10:00:00+01:00", "2027-01-11T11:00:00+01:00")
B1 = ("2027-01-11T11:00:00+01:00", "2027-01-11T12:00:00+01:00")
WHOLE = ("2027-01-11T10:00:00+01:00", "2027-01-11T12:00:00+01:00")
GENERATED = "2027-01-15T09:00:00+01:00"  # the fake clock's start, in the offset of `from`

FAST_LANE_RULES = """
tiers:
  standard:
    display_name: Standard
    sla:
      voice: {answer_seconds: 60, target_percent: 80}
  fast_lane:
    display_name: Priority line
    sla:
      voice: {answer_seconds: 20, target_percent: 90}
fast_lane:
  cost_per_contact: COST
  cost_per_reorder: 150
  currency: EUR
capacity_plan:
  timezone: PLAN_ZONE
  channels:
    voice:
      handle_seconds: 300
      intervals:
        - days: [mon, tue, wed, thu, fri]
          start: "START"
          end: "END"
          contacts_per_hour: 20
          agents: AGENTS
"""


def rules_text(
    *, cost: int = 200, zone: str = "UTC", start: str = "09:00", end: str = "24:00", agents: int = 2
) -> str:
    """The demo rules with tiers, fast-lane costs and a voice capacity plan."""
    extra = (
        FAST_LANE_RULES.replace("COST", str(cost))
        .replace("PLAN_ZONE", zone)
        .replace("START", start)
        .replace("END", end)
        .replace("AGENTS", str(agents))
    )
    return demo_rules_with(extra)


def rules_settings(tmp_path: Path, **plan: Any) -> Settings:
    """Test settings whose rules file has the fast-lane sections."""
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(**plan), encoding="utf-8")
    return make_settings(tmp_path, rules_file=path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The `client` fixture's settings: rules with SLAs, costs and a capacity plan."""
    return rules_settings(tmp_path)


def contact_row(
    contact_id: str,
    channel: str,
    tier: str,
    status: str,
    created: float,
    connected: float | None = None,
    ended: float | None = None,
    promoted_by: str | None = None,
) -> dict[str, Any]:
    """A contacts row; times are seconds after T0."""
    times = [t for t in (created, connected, ended) if t is not None]
    return {
        "contact_id": contact_id,
        "customer_id": f"cust-{contact_id}",
        "channel": channel,
        "request": {},
        "request_hash": "0" * 64,
        "status": status,
        "rule": "default",
        "stage": 0,
        "priority": 30,
        "excluded_agents": [],
        "tier": tier,
        "assigned_at": T0 + connected - 5 if connected is not None else None,
        "connected_at": T0 + connected if connected is not None else None,
        "ended_at": T0 + ended if ended is not None else None,
        "promoted_by": promoted_by,
        "first_decision": {},
        "created_at": T0 + created,
        "updated_at": T0 + max(times),
    }


# (contact, channel, tier, status, created, connected, ended, promoted_by), seconds after T0.
CONTACTS = [
    # Bucket 0, voice standard: waits 30, 90, 120, 40; abandons after 20 s (short) and 100 s.
    ("s1", "voice", "standard", "completed", 0, 30, 330, None),
    ("s2", "voice", "standard", "completed", 100, 190, 490, None),
    ("s3", "voice", "standard", "connected", 200, 320, None, None),
    ("s4", "voice", "standard", "abandoned", 300, None, 320, None),
    ("s5", "voice", "standard", "abandoned", 400, None, 500, None),
    ("s6", "voice", "standard", "completed", 500, 540, 840, "share_cap"),
    # Bucket 1, voice standard: a 300 s wait, and one still queued (days past its 60 s).
    ("s7", "voice", "standard", "completed", 3600, 3900, 4200, "starvation_guard"),
    ("s8", "voice", "standard", "queued", 3700, None, None, None),
    # Voice fast lane: waits 10, 30 (bucket 0) and 60 (bucket 1); handles 300, 420, 360.
    ("f1", "voice", "fast_lane", "completed", 60, 70, 370, None),
    ("f2", "voice", "fast_lane", "completed", 120, 150, 570, None),
    ("f3", "voice", "fast_lane", "completed", 3660, 3720, 4080, None),
    ("f4", "voice", "fast_lane", "abandoned", 3800, None, 3805, None),
    # Chat: waits 100 (bucket 0), 60 and 80 (bucket 1); a fast-lane contact that left.
    ("c1", "chat", "standard", "completed", 1000, 1100, 1300, None),
    ("c2", "chat", "fast_lane", "abandoned", 4000, None, 4030, None),
    ("c3", "chat", "standard", "connected", 4100, 4160, None, None),
    ("c4", "chat", "standard", "completed", 4200, 4280, 4380, None),
    # Outside the window: a second before it, and at its (exclusive) end.
    ("x1", "voice", "standard", "completed", -1, 10, 100, None),
    ("x2", "voice", "fast_lane", "connected", 7200, 7210, None, None),
]


def insert_rows(client: TestClient, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows straight into the app's database, as the routing and billing code would."""
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(insert(table), rows)


def insert_contacts(client: TestClient, contacts: list[tuple[Any, ...]]) -> None:
    """Insert contacts given as CONTACTS tuples."""
    table = ContactRow.__table__  # type: ignore[attr-defined]
    insert_rows(client, table, [contact_row(*c) for c in contacts])


def pass_row(
    pass_id: str,
    kind: str,
    status: str,
    price: int,
    currency: str,
    created: float,
    *,
    consumed: float | None = None,
    cancelled: float | None = None,
    refunded: int = 0,
) -> dict[str, Any]:
    """A passes row; times are seconds after T0."""
    return {
        "pass_id": pass_id,
        "customer_id": f"cust-{pass_id}",
        "kind": kind,
        "status": status,
        "valid_from": T0 + created,
        "valid_until": T0 + created + 90 * 86400,
        "price_amount": price,
        "currency": currency,
        "refunded_amount": refunded,
        "contact_id": None,
        "consumed_at": T0 + consumed if consumed is not None else None,
        "cancelled_at": T0 + cancelled if cancelled is not None else None,
        "external_ref": None,
        "created_at": T0 + created,
        "updated_at": T0 + created,
    }


def refund_row(
    refund_id: str, pass_id: str, amount: int, at: float, *, automatic: bool
) -> dict[str, Any]:
    """A pass_refunds row in EUR; `at` is seconds after T0."""
    return {
        "refund_id": refund_id,
        "pass_id": pass_id,
        "amount": amount,
        "currency": "EUR",
        "reason": "breach" if automatic else "customer cancelled",
        "automatic": automatic,
        "created_at": T0 + at,
    }


def outbox_row(number: int, event_type: str, at: float) -> dict[str, Any]:
    """An outbox event; `at` is seconds after T0."""
    return {
        "event_id": f"evt_{number}",
        "type": event_type,
        "payload": {"type": event_type, "data": {}},
        "created_at": T0 + at,
        "fanned_out": True,
    }


def insert_sales(client: TestClient) -> None:
    """Passes, refunds and appointment moves of the fast-lane fixture."""
    insert_rows(
        client,
        PassRow.__table__,  # type: ignore[attr-defined]
        [
            pass_row("p1", "single_incident", "consumed", 5000, "EUR", 10, consumed=370),
            pass_row("p2", "single_incident", "active", 5000, "EUR", 20),
            pass_row(
                "p3", "subscription", "cancelled", 30000, "EUR", 30, cancelled=5000, refunded=20000
            ),
            pass_row("p4", "single_incident", "active", 6000, "USD", 40),
            # Sold the day before: not a sale of this window, but refunded within it.
            pass_row("p5", "subscription", "active", 30000, "EUR", -86400, refunded=1000),
            # Sold at the window's (exclusive) end.
            pass_row("p6", "single_incident", "active", 5000, "EUR", 7200),
        ],
    )
    insert_rows(
        client,
        RefundRow.__table__,  # type: ignore[attr-defined]
        [
            refund_row("r1", "p3", 20000, 5000, automatic=False),
            refund_row("r2", "p5", 1000, 4100, automatic=True),
            refund_row("r3", "p1", 5000, 8000, automatic=False),  # after the window
        ],
    )
    insert_rows(
        client,
        OutboxRow.__table__,  # type: ignore[attr-defined]
        [
            outbox_row(1, "appointment.rescheduled", 600),
            outbox_row(2, "appointment.rescheduled", 4000),
            outbox_row(3, "appointment.rescheduled", -5),  # before the window
            outbox_row(4, "appointment.booked", 700),  # not a move
        ],
    )


NOTHING = {
    "offered": 0,
    "answered": 0,
    "abandoned": 0,
    "short_abandoned": None,
    "waiting": 0,
    "sla_answer_seconds": None,
    "sla_target_percent": None,
    "answered_within_sla": None,
    "sla_counted": None,
    "within_sla_percent": None,
    "sla_met": None,
    "mean_wait_seconds": None,
    "p90_wait_seconds": None,
    "mean_handle_seconds": None,
    "promoted_by_share_cap": 0,
    "promoted_by_starvation_guard": 0,
    "planned_agents": None,
    "fast_lane_occupancy": None,
    "modelled_wait_without_fast_lane_seconds": None,
    "wait_added_by_fast_lane_seconds": None,
    "model_note": None,
}
VOICE_STANDARD_SLA = {"sla_answer_seconds": 60, "sla_target_percent": 80.0}
VOICE_FAST_SLA = {"sla_answer_seconds": 20, "sla_target_percent": 90.0}


def row(
    row_type: str, span: tuple[str, str], channel: str | None, tier: str, **figures: Any
) -> dict[str, Any]:
    """An expected report row: the figures given, zero or null for the rest."""
    name = {"standard": "Standard", "fast_lane": "Priority line"}[tier]
    return {
        "row_type": row_type,
        "bucket_start": span[0],
        "bucket_end": span[1],
        "channel": channel,
        "tier": tier,
        "tier_name": name,
        **NOTHING,
        **figures,
    }


EXPECTED_ROWS = [
    # Channels in name order: chat, then voice.
    # Chat: no SLA, no plan, no fast-lane contact answered: ρ = 0, the model is the measurement.
    row(
        "bucket",
        B0,
        "chat",
        "standard",
        offered=1,
        answered=1,
        mean_wait_seconds=100.0,
        p90_wait_seconds=100.0,
        mean_handle_seconds=200.0,
        fast_lane_occupancy=0.0,
        modelled_wait_without_fast_lane_seconds=100.0,
        wait_added_by_fast_lane_seconds=0.0,
    ),
    row("bucket", B0, "chat", "fast_lane"),
    # Voice, 09:00–10:00 UTC, standard: SLA 2 within (30, 40) of 4 answered + 1 late abandon;
    # mean (30+90+120+40)/4 = 70; p90 = 4th of 4 = 120; handles 300 ×3. Fast-lane work
    # 2 × 360 s (mean of 300, 420, 360) over 2 agents × 3600 s: ρ = 0.1; 70 × 0.9 = 63.
    row(
        "bucket",
        B0,
        "voice",
        "standard",
        offered=6,
        answered=4,
        abandoned=2,
        short_abandoned=1,
        **VOICE_STANDARD_SLA,
        answered_within_sla=2,
        sla_counted=5,
        within_sla_percent=40.0,
        sla_met=False,
        mean_wait_seconds=70.0,
        p90_wait_seconds=120.0,
        mean_handle_seconds=300.0,
        promoted_by_share_cap=1,
        planned_agents=2.0,
        fast_lane_occupancy=0.1,
        modelled_wait_without_fast_lane_seconds=63.0,
        wait_added_by_fast_lane_seconds=7.0,
    ),
    # Voice fast lane: waits 10, 30; only 10 within 20 s; handles 300, 420.
    row(
        "bucket",
        B0,
        "voice",
        "fast_lane",
        offered=2,
        answered=2,
        short_abandoned=0,
        **VOICE_FAST_SLA,
        answered_within_sla=1,
        sla_counted=2,
        within_sla_percent=50.0,
        sla_met=False,
        mean_wait_seconds=20.0,
        p90_wait_seconds=30.0,
        mean_handle_seconds=360.0,
    ),
    # Chat: waits 60, 80 (p90 = 2nd of 2 = 80); only c4 completed (100 s).
    row(
        "bucket",
        B1,
        "chat",
        "standard",
        offered=2,
        answered=2,
        mean_wait_seconds=70.0,
        p90_wait_seconds=80.0,
        mean_handle_seconds=100.0,
        fast_lane_occupancy=0.0,
        modelled_wait_without_fast_lane_seconds=70.0,
        wait_added_by_fast_lane_seconds=0.0,
    ),
    row("bucket", B1, "chat", "fast_lane", offered=1, abandoned=1),
    # Voice, 10:00–11:00 UTC, standard: one 300 s answer, one still queued days past 60 s
    # (a miss already): 0 of 2. ρ = 1 × 360 / 7200 = 0.05; 300 × 0.95 = 285.
    row(
        "bucket",
        B1,
        "voice",
        "standard",
        offered=2,
        answered=1,
        short_abandoned=0,
        waiting=1,
        **VOICE_STANDARD_SLA,
        answered_within_sla=0,
        sla_counted=2,
        within_sla_percent=0.0,
        sla_met=False,
        mean_wait_seconds=300.0,
        p90_wait_seconds=300.0,
        mean_handle_seconds=300.0,
        promoted_by_starvation_guard=1,
        planned_agents=2.0,
        fast_lane_occupancy=0.05,
        modelled_wait_without_fast_lane_seconds=285.0,
        wait_added_by_fast_lane_seconds=15.0,
    ),
    # Voice fast lane: a 60 s wait (a miss) and a 5 s abandon (short: left out).
    row(
        "bucket",
        B1,
        "voice",
        "fast_lane",
        offered=2,
        answered=1,
        abandoned=1,
        short_abandoned=1,
        **VOICE_FAST_SLA,
        answered_within_sla=0,
        sla_counted=1,
        within_sla_percent=0.0,
        sla_met=False,
        mean_wait_seconds=60.0,
        p90_wait_seconds=60.0,
        mean_handle_seconds=360.0,
    ),
]
EXPECTED_TOTALS = [
    # Chat. Modelled: (100 + 70 × 2) / 3 = 80.
    row(
        "total",
        WHOLE,
        "chat",
        "standard",
        offered=3,
        answered=3,
        mean_wait_seconds=80.0,
        p90_wait_seconds=100.0,
        mean_handle_seconds=150.0,
        fast_lane_occupancy=0.0,
        modelled_wait_without_fast_lane_seconds=80.0,
        wait_added_by_fast_lane_seconds=0.0,
    ),
    row("total", WHOLE, "chat", "fast_lane", offered=1, abandoned=1),
    # Voice standard: 2 within of 5 answered + 1 late abandon + 1 late waiting = 2/7 = 28.57 %;
    # mean 580/5 = 116; p90 = 5th of 5 = 300; modelled (4 × 63 + 285) / 5 = 107.4;
    # occupancy 3 × 360 / (2 agents × 7200 s) = 0.075.
    row(
        "total",
        WHOLE,
        "voice",
        "standard",
        offered=8,
        answered=5,
        abandoned=2,
        short_abandoned=1,
        waiting=1,
        **VOICE_STANDARD_SLA,
        answered_within_sla=2,
        sla_counted=7,
        within_sla_percent=28.57,
        sla_met=False,
        mean_wait_seconds=116.0,
        p90_wait_seconds=300.0,
        mean_handle_seconds=300.0,
        promoted_by_share_cap=1,
        promoted_by_starvation_guard=1,
        planned_agents=2.0,
        fast_lane_occupancy=0.075,
        modelled_wait_without_fast_lane_seconds=107.4,
        wait_added_by_fast_lane_seconds=8.6,
    ),
    # Voice fast lane: 1 within of 3; mean 100/3; p90 = 3rd of 3 = 60.
    row(
        "total",
        WHOLE,
        "voice",
        "fast_lane",
        offered=4,
        answered=3,
        abandoned=1,
        short_abandoned=1,
        **VOICE_FAST_SLA,
        answered_within_sla=1,
        sla_counted=3,
        within_sla_percent=33.33,
        sla_met=False,
        mean_wait_seconds=33.333,
        p90_wait_seconds=60.0,
        mean_handle_seconds=360.0,
    ),
    # All channels, standard: waits 30 40 60 80 90 100 120 300: mean 820/8 = 102.5, p90 = 8th;
    # SLA only where one exists (voice); handles (300 × 4 + 200 + 100) / 6 = 250;
    # modelled (4 × 63 + 285 + 100 + 2 × 70) / 8 = 97.125.
    row(
        "total",
        WHOLE,
        None,
        "standard",
        offered=11,
        answered=8,
        abandoned=2,
        short_abandoned=1,
        waiting=1,
        answered_within_sla=2,
        sla_counted=7,
        within_sla_percent=28.57,
        mean_wait_seconds=102.5,
        p90_wait_seconds=300.0,
        mean_handle_seconds=250.0,
        promoted_by_share_cap=1,
        promoted_by_starvation_guard=1,
        modelled_wait_without_fast_lane_seconds=97.125,
        wait_added_by_fast_lane_seconds=5.375,
    ),
    row(
        "total",
        WHOLE,
        None,
        "fast_lane",
        offered=5,
        answered=3,
        abandoned=2,
        short_abandoned=1,
        answered_within_sla=1,
        sla_counted=3,
        within_sla_percent=33.33,
        mean_wait_seconds=33.333,
        p90_wait_seconds=60.0,
        mean_handle_seconds=360.0,
    ),
]


def span(start: str, end: str) -> dict[str, Any]:
    """Report parameters for the window [start, end)."""
    return {"from": start, "to": end}


def get_report(
    client: TestClient,
    headers: dict[str, str],
    path: str,
    *,
    status: int = 200,
    **params: Any,
) -> Any:
    """GET a report with the fixture's window unless overridden."""
    response = client.get(path, params={**WINDOW, **params}, headers=headers)
    assert response.status_code == status, response.text
    return response


def test_sla_report_gives_every_figure_of_the_hand_computed_day(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_contacts(client, CONTACTS)
    body = get_report(client, admin_headers, "/v1/reports/sla", interval="1h").json()
    assert body["rows"] == EXPECTED_ROWS
    assert body["totals"] == EXPECTED_TOTALS
    assert {k: v for k, v in body.items() if k not in ("rows", "totals")} == {
        "from": "2027-01-11T10:00:00+01:00",
        "to": "2027-01-11T12:00:00+01:00",
        "interval": "1h",
        "interval_seconds": 3600,
        "generated_at": GENERATED,
        "rules_version": 1,
    }


def as_csv_cell(value: Any) -> str:
    """How the CSV writes a JSON value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_sla_report_as_csv_has_a_header_and_one_flat_row_per_bucket_channel_and_tier(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_contacts(client, CONTACTS)
    response = get_report(client, admin_headers, "/v1/reports/sla", format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="sla-report.csv"'
    lines = response.text.split("\r\n")
    assert lines[0] == (
        "row_type,bucket_start,bucket_end,channel,tier,tier_name,offered,answered,abandoned,"
        "short_abandoned,waiting,sla_answer_seconds,sla_target_percent,answered_within_sla,"
        "sla_counted,within_sla_percent,sla_met,mean_wait_seconds,p90_wait_seconds,"
        "mean_handle_seconds,promoted_by_share_cap,promoted_by_starvation_guard,planned_agents,"
        "fast_lane_occupancy,modelled_wait_without_fast_lane_seconds,"
        "wait_added_by_fast_lane_seconds,model_note"
    )
    assert lines[3] == (
        "bucket,2027-01-11T10:00:00+01:00,2027-01-11T11:00:00+01:00,voice,standard,Standard,"
        "6,4,2,1,0,60,80.0,2,5,40.0,false,70.0,120.0,300.0,1,0,2.0,0.1,63.0,7.0,"
    )
    assert lines[-2] == (
        "total,2027-01-11T10:00:00+01:00,2027-01-11T12:00:00+01:00,,fast_lane,Priority line,"
        "5,3,2,1,0,,,1,3,33.33,,33.333,60.0,360.0,0,0,,,,,"
    )
    assert lines[-1] == ""  # every record ends with CRLF
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    expected = [
        {k: as_csv_cell(v) for k, v in r.items()} for r in (*EXPECTED_ROWS, *EXPECTED_TOTALS)
    ]
    assert parsed == expected


@pytest.mark.parametrize(
    ("accept", "params", "media_type"),
    [
        ("text/csv", {}, "text/csv; charset=utf-8"),
        ("application/json, text/csv;q=0.5", {}, "application/json"),
        ("text/csv;q=0.9, */*;q=0.1", {}, "text/csv; charset=utf-8"),
        ("text/*", {}, "text/csv; charset=utf-8"),
        ("text/csv", {"format": "json"}, "application/json"),
        ("application/json", {"format": "csv"}, "text/csv; charset=utf-8"),
        ("*/*", {}, "application/json"),
    ],
)
def test_the_format_parameter_or_the_accept_header_chooses_csv_or_json(
    client: TestClient,
    admin_headers: dict[str, str],
    accept: str,
    params: dict[str, Any],
    media_type: str,
) -> None:
    for path in ("/v1/reports/sla", "/v1/reports/fastlane"):
        response = get_report(client, {**admin_headers, "Accept": accept}, path, **params)
        assert response.headers["content-type"] == media_type
        assert response.headers["vary"] == "Accept"


# The outcome figures of a tier without outcomes (this fixture records none; the figures of
# recorded outcomes are checked in test_outcome_reports.py).
NO_OUTCOMES: dict[str, Any] = {
    "contacts": 0,
    "resolved": 0,
    "resolution_rate": None,
    "durable": 0,
    "durable_resolution_rate": None,
    "repeat_contacts": 0,
    "repeat_rate": None,
    "nps_responses": 0,
    "promoters": 0,
    "detractors": 0,
    "nps": None,
    "upsells": 0,
    "upsell_conversion": None,
    "cross_sells": 0,
    "cross_sell_conversion": None,
    "mean_handle_seconds": None,
    "revenue": [],
}
EXPECTED_FASTLANE = {
    "from": "2027-01-11T10:00:00+01:00",
    "to": "2027-01-11T12:00:00+01:00",
    "interval": "1h",
    "interval_seconds": 3600,
    "generated_at": GENERATED,
    "rules_version": 1,
    # Sold in the window: p1, p2, p4 (single incident), p3 (subscription); p1 consumed, p3
    # cancelled; refunds r1 (20000, by hand) and r2 (1000, automatic).
    "passes": {
        "sold": {"single_incident": 3, "subscription": 1},
        "consumed": 1,
        "cancelled": 1,
        "refunds": 2,
        "automatic_refunds": 1,
    },
    # EUR: 5000 + 5000 + 30000 sold, 21000 refunded; cost 3 × 200 + 2 × 150 = 900.
    "revenue": [
        {
            "currency": "EUR",
            "passes_sold": 3,
            "sold_amount": 40000,
            "refunded_amount": 21000,
            "net_amount": 19000,
            "special_handling_cost": 900,
            "margin": 18100,
        },
        {
            "currency": "USD",
            "passes_sold": 1,
            "sold_amount": 6000,
            "refunded_amount": 0,
            "net_amount": 6000,
            "special_handling_cost": 0,
            "margin": 6000,
        },
    ],
    "special_handling": {
        "currency": "EUR",
        "fast_lane_contacts_answered": 3,
        "cost_per_contact": 200,
        "contact_cost": 600,
        "appointment_moves": 2,
        "cost_per_reorder": 150,
        "reorder_cost": 300,
        "total_cost": 900,
    },
    # The all-channel totals of the SLA report.
    "standard_tier_impact": {
        "standard_answered": 8,
        "standard_mean_wait_seconds": 102.5,
        "modelled_wait_without_fast_lane_seconds": 97.125,
        "wait_added_by_fast_lane_seconds": 5.375,
        "model_note": None,
        "standard_within_sla_percent": 28.57,
        "promoted_by_share_cap": 1,
        "promoted_by_starvation_guard": 1,
        "fast_lane_answered": 3,
        "fast_lane_mean_wait_seconds": 33.333,
        "fast_lane_within_sla_percent": 33.33,
    },
    "outcomes_by_tier": [
        {"tier": "standard", "tier_name": "Standard", **NO_OUTCOMES},
        {"tier": "fast_lane", "tier_name": "Priority line", **NO_OUTCOMES},
    ],
}


def test_fastlane_report_gives_sales_refunds_costs_and_the_standard_tiers_wait(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_contacts(client, CONTACTS)
    insert_sales(client)
    body = get_report(client, admin_headers, "/v1/reports/fastlane").json()
    assert body == EXPECTED_FASTLANE


def test_fastlane_report_as_csv_lists_every_figure_with_its_currency(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_contacts(client, CONTACTS)
    insert_sales(client)
    response = get_report(client, admin_headers, "/v1/reports/fastlane", format="csv")
    assert response.headers["content-disposition"] == 'attachment; filename="fastlane-report.csv"'
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["figure", "currency", "value"],
        ["from", "", "2027-01-11T10:00:00+01:00"],
        ["to", "", "2027-01-11T12:00:00+01:00"],
        ["interval", "", "1h"],
        ["generated_at", "", GENERATED],
        ["rules_version", "", "1"],
        ["passes.sold.single_incident", "", "3"],
        ["passes.sold.subscription", "", "1"],
        ["passes.consumed", "", "1"],
        ["passes.cancelled", "", "1"],
        ["passes.refunds", "", "2"],
        ["passes.automatic_refunds", "", "1"],
        ["revenue.passes_sold", "EUR", "3"],
        ["revenue.sold_amount", "EUR", "40000"],
        ["revenue.refunded_amount", "EUR", "21000"],
        ["revenue.net_amount", "EUR", "19000"],
        ["revenue.special_handling_cost", "EUR", "900"],
        ["revenue.margin", "EUR", "18100"],
        ["revenue.passes_sold", "USD", "1"],
        ["revenue.sold_amount", "USD", "6000"],
        ["revenue.refunded_amount", "USD", "0"],
        ["revenue.net_amount", "USD", "6000"],
        ["revenue.special_handling_cost", "USD", "0"],
        ["revenue.margin", "USD", "6000"],
        ["special_handling.fast_lane_contacts_answered", "", "3"],
        ["special_handling.cost_per_contact", "EUR", "200"],
        ["special_handling.contact_cost", "EUR", "600"],
        ["special_handling.appointment_moves", "", "2"],
        ["special_handling.cost_per_reorder", "EUR", "150"],
        ["special_handling.reorder_cost", "EUR", "300"],
        ["special_handling.total_cost", "EUR", "900"],
        ["standard_tier_impact.standard_answered", "", "8"],
        ["standard_tier_impact.standard_mean_wait_seconds", "", "102.5"],
        ["standard_tier_impact.modelled_wait_without_fast_lane_seconds", "", "97.125"],
        ["standard_tier_impact.wait_added_by_fast_lane_seconds", "", "5.375"],
        ["standard_tier_impact.model_note", "", ""],
        ["standard_tier_impact.standard_within_sla_percent", "", "28.57"],
        ["standard_tier_impact.promoted_by_share_cap", "", "1"],
        ["standard_tier_impact.promoted_by_starvation_guard", "", "1"],
        ["standard_tier_impact.fast_lane_answered", "", "3"],
        ["standard_tier_impact.fast_lane_mean_wait_seconds", "", "33.333"],
        ["standard_tier_impact.fast_lane_within_sla_percent", "", "33.33"],
        *(
            [f"outcomes.{tier}.{figure}", "", value]
            for tier, name in (("standard", "Standard"), ("fast_lane", "Priority line"))
            for figure, value in [
                ("tier_name", name),
                ("contacts", "0"),
                ("resolved", "0"),
                ("resolution_rate", ""),
                ("durable", "0"),
                ("durable_resolution_rate", ""),
                ("repeat_contacts", "0"),
                ("repeat_rate", ""),
                ("nps_responses", "0"),
                ("promoters", "0"),
                ("detractors", "0"),
                ("nps", ""),
                ("upsells", "0"),
                ("upsell_conversion", ""),
                ("cross_sells", "0"),
                ("cross_sell_conversion", ""),
                ("mean_handle_seconds", ""),
            ]
        ),
    ]


def test_an_empty_window_reports_zeros_and_the_cost_currency(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    sla = get_report(client, admin_headers, "/v1/reports/sla").json()
    assert sla["rows"] == []
    assert sla["totals"] == [
        row("total", WHOLE, None, "standard", model_note="no answered standard-tier contacts"),
        row("total", WHOLE, None, "fast_lane"),
    ]
    fastlane = get_report(client, admin_headers, "/v1/reports/fastlane").json()
    assert fastlane["passes"] == {
        "sold": {"single_incident": 0, "subscription": 0},
        "consumed": 0,
        "cancelled": 0,
        "refunds": 0,
        "automatic_refunds": 0,
    }
    assert fastlane["revenue"] == [
        {
            "currency": "EUR",
            "passes_sold": 0,
            "sold_amount": 0,
            "refunded_amount": 0,
            "net_amount": 0,
            "special_handling_cost": 0,
            "margin": 0,
        }
    ]


def test_a_contact_exactly_at_the_answer_threshold_is_within_sla_or_a_short_abandon(
    client: TestClient, admin_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    now = fake_clock.now - T0  # the report runs at 08:00 UTC on Friday
    insert_contacts(
        client,
        [
            ("a1", "voice", "standard", "connected", now - 600, now - 540, None, None),  # 60 s
            ("a2", "voice", "standard", "connected", now - 500, now - 439, None, None),  # 61 s
            ("a3", "voice", "standard", "abandoned", now - 400, None, now - 340, None),  # 60 s
            ("a4", "voice", "standard", "abandoned", now - 300, None, now - 239, None),  # 61 s
            ("a5", "voice", "standard", "queued", now - 60, None, None, None),  # 60 s so far
            ("a6", "voice", "standard", "reserved", now - 61, None, None, None),  # 61 s so far
        ],
    )
    body = get_report(
        client,
        admin_headers,
        "/v1/reports/sla",
        interval="1d",
        **span("2027-01-15T07:00:00Z", "2027-01-15T09:00:00Z"),
    ).json()
    voice = body["totals"][0]
    figures = (
        "offered",
        "answered",
        "abandoned",
        "short_abandoned",
        "waiting",
        "answered_within_sla",
        "sla_counted",
        "within_sla_percent",
    )
    # Within: a1. Counted: a1, a2 (answered), a4 (late abandon), a6 (waiting past 60 s).
    assert (voice["channel"], voice["tier"]) == ("voice", "standard")
    assert [voice[f] for f in figures] == [6, 2, 2, 1, 2, 1, 4, 25.0]


def model_of(report_row: dict[str, Any]) -> tuple[Any, ...]:
    """A standard row's model: (planned agents, occupancy, modelled, added, note)."""
    return (
        report_row["planned_agents"],
        report_row["fast_lane_occupancy"],
        report_row["modelled_wait_without_fast_lane_seconds"],
        report_row["wait_added_by_fast_lane_seconds"],
        report_row["model_note"],
    )


def test_the_model_says_why_it_has_no_figure(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # 07:00–10:00 UTC. Voice is planned from 09:00 only; every fast-lane call takes an hour.
    insert_contacts(
        client,
        [
            # 07:00: answered on both tiers, no agents planned.
            ("v1", "voice", "standard", "connected", -7200, -7160, None, None),
            ("v2", "voice", "fast_lane", "completed", -7190, -7180, -3580, None),
            # 09:00: two hour-long fast-lane calls fill both planned agents: ρ = 1.
            ("v3", "voice", "standard", "connected", 0, 100, None, None),
            ("v4", "voice", "fast_lane", "completed", 10, 20, 3620, None),
            ("v5", "voice", "fast_lane", "completed", 30, 40, 3640, None),
            # Email has no capacity plan.
            ("e1", "email", "standard", "connected", -7100, -7040, None, None),
            ("e2", "email", "fast_lane", "connected", -7000, -6990, None, None),
            # 09:00, email: only the fast lane answered.
            ("e3", "email", "fast_lane", "connected", 100, 110, None, None),
        ],
    )
    body = get_report(
        client,
        admin_headers,
        "/v1/reports/sla",
        **span("2027-01-11T07:00:00Z", "2027-01-11T10:00:00Z"),
    ).json()
    standard = {
        (r["row_type"], r["bucket_start"][11:16], r["channel"]): model_of(r)
        for r in (*body["rows"], *body["totals"])
        if r["tier"] == "standard"
    }
    assert standard == {
        ("bucket", "07:00", "email"): (
            None,
            None,
            None,
            None,
            "no capacity plan for channel 'email'",
        ),
        ("bucket", "07:00", "voice"): (
            0.0,
            None,
            None,
            None,
            "no agents planned for channel 'voice' in this interval",
        ),
        ("bucket", "09:00", "email"): (
            None,
            None,
            None,
            None,
            "no answered standard-tier contacts",
        ),
        # Two fast-lane hours over two planned agent-hours.
        ("bucket", "09:00", "voice"): (
            2.0,
            1.0,
            None,
            None,
            "fast-lane work exceeds the planned agent capacity (occupancy 1.00): the capacity "
            "plan understates staffing",
        ),
        ("total", "07:00", "email"): (
            None,
            None,
            None,
            None,
            "no model for 1 of 1 intervals with answered standard-tier contacts "
            "(no capacity plan for channel 'email')",
        ),
        # 2 agent-hours planned in 3 hours; 3 fast-lane hours over them: 1.5.
        ("total", "07:00", "voice"): (
            0.667,
            1.5,
            None,
            None,
            "no model for 2 of 2 intervals with answered standard-tier contacts "
            "(no agents planned for channel 'voice' in this interval)",
        ),
        ("total", "07:00", None): (
            None,
            None,
            None,
            None,
            "no model for 3 of 3 intervals with answered standard-tier contacts "
            "(no capacity plan for channel 'email')",
        ),
    }


def test_staffing_comes_from_the_capacity_plan_in_its_own_time_zone(
    tmp_path: Path, admin_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # Berlin 08:00–16:00, Monday to Friday, 3 agents: 07:00–15:00 UTC in January.
    settings = rules_settings(tmp_path, zone="Europe/Berlin", start="08:00", end="16:00", agents=3)
    thursday = 3 * 86400
    day_contacts = [
        # 10:00 Berlin each day: a standard wait of 50 s and a 600 s fast-lane call.
        (f"s{day}", "voice", "standard", "connected", at, at + 50, None, None)
        for day, at in enumerate(thursday + d * 86400 for d in range(3))
    ] + [
        (f"f{day}", "voice", "fast_lane", "completed", at, at + 5, at + 605, None)
        for day, at in enumerate(thursday + d * 86400 for d in range(3))
    ]
    with serve(settings) as client:
        insert_contacts(client, day_contacts)
        daily = get_report(
            client,
            admin_headers,
            "/v1/reports/sla",
            interval="1d",
            **span("2027-01-14T00:00:00+01:00", "2027-01-17T00:00:00+01:00"),
        ).json()
        hourly = get_report(
            client,
            admin_headers,
            "/v1/reports/sla",
            interval="1h",
            **span("2027-01-14T07:00:00+01:00", "2027-01-14T11:00:00+01:00"),
        ).json()
    days = [(r["bucket_start"], *model_of(r)) for r in daily["rows"] if r["tier"] == "standard"]
    # 3 agents × 8 h over 24 h = 1 agent on average; ρ = 600 / 86400 = 0.0069;
    # 50 × (1 − 600/86400) = 49.653. Saturday has no agents planned.
    assert days == [
        ("2027-01-14T00:00:00+01:00", 1.0, 0.0069, 49.653, 0.347, None),
        ("2027-01-15T00:00:00+01:00", 1.0, 0.0069, 49.653, 0.347, None),
        (
            "2027-01-16T00:00:00+01:00",
            0.0,
            None,
            None,
            None,
            "no agents planned for channel 'voice' in this interval",
        ),
    ]
    # The plan's 08:00 is Berlin time: 3 agents from 08:00 to 11:00 of the 4 hours from 07:00
    # (read as UTC, they would start at 09:00 Berlin and average 1.5).
    agents = [
        (r["row_type"], r["bucket_start"], r["planned_agents"])
        for r in (*hourly["rows"], *hourly["totals"])
        if r["tier"] == "standard" and r["channel"] == "voice"
    ]
    assert agents == [
        ("bucket", "2027-01-14T10:00:00+01:00", 3.0),
        ("total", "2027-01-14T07:00:00+01:00", 2.25),
    ]


@pytest.mark.parametrize(
    ("params", "field", "detail"),
    [
        (
            {"from": "2027-01-11T12:00:00+01:00", "to": "2027-01-11T10:00:00+01:00"},
            "to",
            "to: must be after `from`",
        ),
        (
            {"from": "2027-01-11T10:00:00+01:00", "to": "2027-01-11T09:00:00Z"},
            "to",
            "to: must be after `from`",
        ),
        (
            {"from": "2026-01-01T00:00:00Z", "to": "2027-01-03T00:00:00Z"},
            "to",
            "to: the window is 367 days long; at most 366",
        ),
        (
            {"interval": "5m", "from": "2027-01-01T00:00:00Z", "to": "2027-02-01T00:00:00Z"},
            "interval",
            "interval: 8928 buckets of 5m; at most 8784: choose a longer interval or a "
            "shorter window",
        ),
        (
            {"from": "2027-02-30T00:00:00Z"},
            "from",
            "from: not a valid ISO-8601 instant: day is out of range for month",
        ),
        (
            {"from": "1969-12-31T00:00:00Z"},
            "from",
            "from: must lie between 1970-01-01 and 9999-01-01",
        ),
    ],
)
def test_an_unusable_window_is_422_with_the_field_at_fault(
    client: TestClient,
    admin_headers: dict[str, str],
    params: dict[str, Any],
    field: str,
    detail: str,
) -> None:
    for path in ("/v1/reports/sla", "/v1/reports/fastlane"):
        response = get_report(client, admin_headers, path, status=422, **params)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["detail"] == detail
        assert [e["field"] for e in body["errors"]] == [field]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "2h"}, "query.interval"),
        ({"from": "2027-01-11T10:00:00"}, "query.from"),  # no offset
        ({"to": "yesterday"}, "query.to"),
        ({"format": "xml"}, "query.format"),
    ],
)
def test_malformed_parameters_are_422(
    client: TestClient, admin_headers: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = get_report(client, admin_headers, "/v1/reports/sla", status=422, **params)
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_a_missing_window_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/v1/reports/fastlane", headers=admin_headers)
    assert response.status_code == 422
    assert sorted(e["field"] for e in response.json()["errors"]) == ["query.from", "query.to"]


@pytest.mark.parametrize("path", ["/v1/reports/sla", "/v1/reports/fastlane"])
def test_a_repeated_query_parameter_is_422(
    client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = client.get(
        f"{path}?from=2027-01-11T09:00:00Z&to=2027-01-11T11:00:00Z&to=2027-01-11T10:00:00Z",
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "query.to", "type": "repeated", "message": "given more than once"}
    ]


@pytest.mark.parametrize("path", ["/v1/reports/sla", "/v1/reports/fastlane"])
def test_reports_need_an_admin_key(
    client: TestClient,
    path: str,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    assert get_report(client, {}, path, status=401).json()["detail"] == (
        "missing API key: send `Authorization: Bearer KEY`"
    )
    for headers in (acd_headers, billing_headers):
        body = get_report(client, headers, path, status=403).json()
        assert body["detail"] == "this API key lacks the 'admin' scope"
    get_report(client, admin_headers, path, status=200)


def test_reports_use_the_costs_of_the_rules_active_when_asked(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_contacts(client, CONTACTS)
    insert_sales(client)
    response = client.put(
        "/v1/rules",
        content=rules_text(cost=1000),
        headers={**admin_headers, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 200, response.text
    body = get_report(client, admin_headers, "/v1/reports/fastlane").json()
    assert body["rules_version"] == 2
    # 3 fast-lane contacts × 1000 + 2 moves × 150.
    assert body["special_handling"]["total_cost"] == 3300
    assert body["revenue"][0]["margin"] == 19000 - 3300


# ---- the same figures on real PostgreSQL ----------------------------------------------------
@pytest.fixture
def postgres_settings(postgres_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a private, fresh PostgreSQL schema, dropped afterwards."""
    schema = f"skillroute_reports_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    try:
        yield rules_settings(tmp_path).model_copy(update={"database_url": url})
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.integration
def test_reports_give_the_same_figures_on_postgresql(
    postgres_settings: Settings, admin_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    with serve(postgres_settings) as client:
        assert client.app.state.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
        insert_contacts(client, CONTACTS)
        insert_sales(client)
        sla_body = get_report(client, admin_headers, "/v1/reports/sla").json()
        fastlane_body = get_report(client, admin_headers, "/v1/reports/fastlane").json()
    assert (sla_body["rows"], sla_body["totals"]) == (EXPECTED_ROWS, EXPECTED_TOTALS)
    assert fastlane_body == EXPECTED_FASTLANE
