"""Outcome reports, checked figure by figure against sixteen hand-computed outcomes.

The fixture: two ISO weeks, Monday 2027-01-04 to Sunday 2027-01-17 in Berlin (the rules'
calendar zone), asked for as [2027-01-04T00:00+01:00, 2027-01-18T00:00+01:00). Four agents,
three segments, three inquiry types, three journey stages, both tiers, revenue in EUR and USD,
two repeat contacts, insight tags. The table below is the whole fixture; every expected figure
is worked out by hand from it in the comment beside it.

    id   agent segment    inquiry   stage        tier  res dur rep  revenue    up x  nps handle
    o1   a1    consumer   setup     onboarding   std   1   1   -    5000 EUR   1  0  10  300
    o2   a1    consumer   billing   established  std   1   0   -    -          0  0   6  200
    o3   a2    smb        setup     onboarding   fast  1   1   -   12000 EUR   1  1   9  600
    o4   a2    smb        technical at_risk      std   0   0   -    -          0  0   -  900
    o5   a3    enterprise billing   onboarding   fast  1   1   -    3000 USD   0  1   8  400
    o6   a3    consumer   technical onboarding   std   0   0   -    -          0  0   3  500
    o7   a4    consumer   setup     established  std   1   1   -    2000 EUR   1  0   -  250
    o8   a1    smb        billing   established  std   1   1   -    1000 EUR   0  0   9  100
    o9   a1    consumer   billing   established  std   1   1   o2   -          0  0   7  350
    o10  a2    consumer   technical onboarding   std   1   1   o6   -          0  0  10  450
    o11  a2    enterprise billing   established  fast  1   1   -    8000 EUR   1  0  10  300
    o12  a3    smb        setup     onboarding   std   1   0   -    4000 USD   0  1   0  700
    o13  a4    enterprise technical at_risk      fast  1   1   -    1500 EUR   0  0   9  350
    o14  a4    consumer   billing   onboarding   std   0   0   -    -          0  0   5  150
    o15  a1    enterprise setup     onboarding   std   1   1   -       0 EUR   0  0   -  280
    o16  a3    consumer   billing   established  std   1   1   -    2500 EUR   1  1  10  320

o1-o8 complete in the first week (o8 exactly at `from`), o9-o16 in the second (o9 at 00:30
Berlin on Monday 11th, still Sunday in UTC; o16 a second before `to`). x1 (a second before
`from`) and x2 (exactly at `to`) are outside the window.
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
from service.storage.tables import OutcomeRow
from tests.conftest import FakeClock, demo_rules_with, libpq_url, make_settings, serve

# Monday 2027-01-04 00:00 in Berlin.
START = dt.datetime(2027, 1, 3, 23, tzinfo=dt.UTC).timestamp()
HOUR, DAY = 3600, 86400
WINDOW = {"from": "2027-01-04T00:00:00+01:00", "to": "2027-01-18T00:00:00+01:00"}
GENERATED = "2027-01-15T09:00:00+01:00"  # the fake clock's start, in the offset of `from`
HEADER = {
    "from": WINDOW["from"],
    "to": WINDOW["to"],
    "generated_at": GENERATED,
    "rules_version": 1,
}

RULES = """
tiers:
  standard: {display_name: Standard}
  fast_lane: {display_name: Priority line}
calendar:
  timezone: ZONE
"""

NO_TAGS: dict[str, list[str]] = {}
# (id, agent, segment, inquiry type, stage, tier, resolved, durable, repeat_of, revenue,
#  currency, upsell, cross-sell, nps, handle seconds, tags, completed: seconds after START)
OUTCOMES: list[tuple[Any, ...]] = [
    ("o1", "a1", "consumer", "setup", "onboarding", "standard", True, True, None,
     5000, "EUR", True, False, 10, 300, {"needs": ["guidance"]}, 10 * HOUR),
    ("o2", "a1", "consumer", "billing", "established", "standard", True, False, None,
     0, None, False, False, 6, 200, {"frustrations": ["wait_time"]}, DAY + 9 * HOUR),
    ("o3", "a2", "smb", "setup", "onboarding", "fast_lane", True, True, None,
     12000, "EUR", True, True, 9, 600,
     {"needs": ["guidance", "setup_help"], "requests": ["callback"]}, 2 * DAY + 14 * HOUR),
    ("o4", "a2", "smb", "technical", "at_risk", "standard", False, False, None,
     0, None, False, False, None, 900,
     {"frustrations": ["wait_time", "outage"]}, 3 * DAY + 11 * HOUR),
    ("o5", "a3", "enterprise", "billing", "onboarding", "fast_lane", True, True, None,
     3000, "USD", False, True, 8, 400, {"requests": ["invoice_copy"]}, 4 * DAY + 16 * HOUR),
    ("o6", "a3", "consumer", "technical", "onboarding", "standard", False, False, None,
     0, None, False, False, 3, 500,
     {"needs": ["guidance"], "frustrations": ["outage"]}, 5 * DAY + 10 * HOUR),
    ("o7", "a4", "consumer", "setup", "established", "standard", True, True, None,
     2000, "EUR", True, False, None, 250, NO_TAGS, 6 * DAY + 12 * HOUR),
    ("o8", "a1", "smb", "billing", "established", "standard", True, True, None,
     1000, "EUR", False, False, 9, 100, {"requests": ["callback"]}, 0),
    ("o9", "a1", "consumer", "billing", "established", "standard", True, True, "o2",
     0, None, False, False, 7, 350, {"frustrations": ["wait_time"]}, 7 * DAY + HOUR // 2),
    ("o10", "a2", "consumer", "technical", "onboarding", "standard", True, True, "o6",
     0, None, False, False, 10, 450,
     {"needs": ["guidance"], "requests": ["callback"]}, 7 * DAY + 9 * HOUR),
    ("o11", "a2", "enterprise", "billing", "established", "fast_lane", True, True, None,
     8000, "EUR", True, False, 10, 300,
     {"requests": ["invoice_copy", "callback"]}, 8 * DAY + 13 * HOUR),
    ("o12", "a3", "smb", "setup", "onboarding", "standard", True, False, None,
     4000, "USD", False, True, 0, 700,
     {"frustrations": ["wait_time"], "needs": ["setup_help"]}, 9 * DAY + 15 * HOUR),
    ("o13", "a4", "enterprise", "technical", "at_risk", "fast_lane", True, True, None,
     1500, "EUR", False, False, 9, 350, {"frustrations": ["outage"]}, 10 * DAY + 10 * HOUR),
    ("o14", "a4", "consumer", "billing", "onboarding", "standard", False, False, None,
     0, None, False, False, 5, 150,
     {"frustrations": ["wait_time"], "requests": ["callback"]}, 11 * DAY + 11 * HOUR),
    # A tag listed twice still marks one outcome.
    ("o15", "a1", "enterprise", "setup", "onboarding", "standard", True, True, None,
     0, "EUR", False, False, None, 280, {"needs": ["guidance", "guidance"]}, 12 * DAY + 17 * HOUR),
    ("o16", "a3", "consumer", "billing", "established", "standard", True, True, None,
     2500, "EUR", True, True, 10, 320, NO_TAGS, 14 * DAY - 1),
    # Outside the window: a second before it and at its (exclusive) end.
    ("x1", "a5", "consumer", "setup", "onboarding", "fast_lane", True, True, None,
     9900, "EUR", True, True, 10, 60, {"needs": ["guidance"]}, -1),
    ("x2", "a5", "smb", "setup", "onboarding", "standard", False, False, "o12",
     9900, "USD", True, True, 0, 60, {"frustrations": ["outage"]}, 14 * DAY),
]  # fmt: skip


def outcome_row(values: tuple[Any, ...]) -> dict[str, Any]:
    """An outcomes row from an OUTCOMES tuple."""
    (contact_id, agent_id, segment, inquiry_type, stage, tier, resolved, durable, repeat_of,
     revenue, currency, upsell, cross_sell, nps, handle, tags, completed) = values  # fmt: skip
    completed_at = START + completed
    return {
        "contact_id": contact_id,
        "customer_id": f"cust-{contact_id}",
        "agent_id": agent_id,
        "channel": "voice",
        "segment": segment,
        "inquiry_type": inquiry_type,
        "journey_stage": stage,
        "tier": tier,
        "resolved": resolved,
        "durable": durable,
        "repeat_of": repeat_of,
        "repeated_by": {"o2": "o9", "o6": "o10", "o12": "x2"}.get(contact_id),
        "revenue_minor": revenue,
        "currency": currency,
        "upsell": upsell,
        "cross_sell": cross_sell,
        "nps": nps,
        "handle_seconds": float(handle),
        "tags": tags,
        "contact_created_at": completed_at - handle - 60,
        "completed_at": completed_at,
        "recorded_at": completed_at,
    }


def insert_outcomes(client: TestClient) -> None:
    """Insert the fixture straight into the app's database, as the outcomes desk would."""
    table = OutcomeRow.__table__  # type: ignore[attr-defined]
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(insert(table), [outcome_row(o) for o in OUTCOMES])


def rules_settings(tmp_path: Path, zone: str = "Europe/Berlin") -> Settings:
    """Test settings whose rules name the tiers and set the calendar's time zone."""
    path = tmp_path / "rules.yaml"
    path.write_text(demo_rules_with(RULES.replace("ZONE", zone)), encoding="utf-8")
    return make_settings(tmp_path, rules_file=path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The `client` fixture's settings."""
    return rules_settings(tmp_path)


def figures(
    contacts: int,
    *,
    resolved: tuple[int, float | None],
    durable: tuple[int, float | None],
    repeats: tuple[int, float | None],
    nps: tuple[int, int, int, float | None],
    upsells: tuple[int, float | None],
    cross_sells: tuple[int, float | None],
    handle: float | None,
    revenue: dict[str, tuple[int, float]] | None = None,
    **key: Any,
) -> dict[str, Any]:
    """An expected row: (count, rate) pairs, nps as (answers, promoters, detractors, NPS),
    revenue as currency -> (total, per interaction); every value written out by hand."""
    return {
        **key,
        "contacts": contacts,
        "resolved": resolved[0],
        "resolution_rate": resolved[1],
        "durable": durable[0],
        "durable_resolution_rate": durable[1],
        "repeat_contacts": repeats[0],
        "repeat_rate": repeats[1],
        "nps_responses": nps[0],
        "promoters": nps[1],
        "detractors": nps[2],
        "nps": nps[3],
        "upsells": upsells[0],
        "upsell_conversion": upsells[1],
        "cross_sells": cross_sells[0],
        "cross_sell_conversion": cross_sells[1],
        "mean_handle_seconds": handle,
        "revenue": [
            {"currency": currency, "revenue_minor": total, "revenue_per_interaction": per}
            for currency, (total, per) in (revenue or {}).items()
        ],
    }


NOTHING = figures(
    0,
    resolved=(0, None),
    durable=(0, None),
    repeats=(0, None),
    nps=(0, 0, 0, None),
    upsells=(0, None),
    cross_sells=(0, None),
    handle=None,
)

# ---- expected figures per agent ---------------------------------------------------------------
# a1: o1 o2 o8 o9 o15. Resolved 5/5; durable o1 o8 o9 o15 = 4/5; repeat o9 1/5; NPS answers
# 10 6 9 7: 2 promoters, 1 detractor, 100 × (2 − 1) / 4 = 25; upsell o1 1/5; handle
# (300 + 200 + 100 + 350 + 280) / 5 = 246; EUR 5000 + 1000 + 0 (o15) = 6000, / 5 = 1200.
A1 = figures(
    5,
    resolved=(5, 1.0),
    durable=(4, 0.8),
    repeats=(1, 0.2),
    nps=(4, 2, 1, 25.0),
    upsells=(1, 0.2),
    cross_sells=(0, 0.0),
    handle=246.0,
    revenue={"EUR": (6000, 1200.0)},
)
# a2: o3 o4 o10 o11. Resolved 3/4; durable 3/4; repeat o10 1/4; NPS 9 10 10: 100 × 3 / 3;
# upsells o3 o11 2/4; cross-sell o3 1/4; handle (600 + 900 + 450 + 300) / 4 = 562.5;
# EUR 12000 + 8000 = 20000, / 4 = 5000.
A2 = figures(
    4,
    resolved=(3, 0.75),
    durable=(3, 0.75),
    repeats=(1, 0.25),
    nps=(3, 3, 0, 100.0),
    upsells=(2, 0.5),
    cross_sells=(1, 0.25),
    handle=562.5,
    revenue={"EUR": (20000, 5000.0)},
)
# a3: o5 o6 o12 o16. Resolved o5 o12 o16 3/4; durable o5 o16 2/4; NPS 8 3 0 10: 1 promoter,
# 2 detractors, 100 × (1 − 2) / 4 = −25; upsell o16 1/4; cross-sells o5 o12 o16 3/4; handle
# (400 + 500 + 700 + 320) / 4 = 480; EUR 2500 / 4 = 625; USD 3000 + 4000 = 7000, / 4 = 1750.
A3 = figures(
    4,
    resolved=(3, 0.75),
    durable=(2, 0.5),
    repeats=(0, 0.0),
    nps=(4, 1, 2, -25.0),
    upsells=(1, 0.25),
    cross_sells=(3, 0.75),
    handle=480.0,
    revenue={"EUR": (2500, 625.0), "USD": (7000, 1750.0)},
)
# a4: o7 o13 o14. Resolved and durable o7 o13 2/3 = 0.6667; NPS 9 5: 100 × (1 − 1) / 2 = 0;
# upsell o7 1/3 = 0.3333; handle (250 + 350 + 150) / 3 = 250; EUR 2000 + 1500 = 3500,
# / 3 = 1166.67.
A4 = figures(
    3,
    resolved=(2, 0.6667),
    durable=(2, 0.6667),
    repeats=(0, 0.0),
    nps=(2, 1, 1, 0.0),
    upsells=(1, 0.3333),
    cross_sells=(0, 0.0),
    handle=250.0,
    revenue={"EUR": (3500, 1166.67)},
)
AGENTS = {"a1": A1, "a2": A2, "a3": A3, "a4": A4}


def ranked(*agent_ids: str, table: dict[str, dict[str, Any]] = AGENTS) -> list[dict[str, Any]]:
    """The expected leaderboard rows in the order given."""
    return [
        {"rank": rank, "agent_id": agent_id, **table[agent_id]}
        for rank, agent_id in enumerate(agent_ids, start=1)
    ]


NO_FILTERS = {"inquiry_type": None, "segment": None, "journey_stage": None}


def get_report(
    client: TestClient, headers: dict[str, str], path: str, *, status: int = 200, **params: Any
) -> Any:
    """GET a report over the fixture's window unless overridden."""
    response = client.get(path, params={**WINDOW, **params}, headers=headers)
    assert response.status_code == status, response.text
    return response


def test_the_leaderboard_ranks_agents_by_durable_resolution_with_every_figure(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/agents").json()
    # Durable resolution: a1 0.8, a2 0.75, a4 0.6667, a3 0.5. a5 only has outcomes outside.
    assert body == {
        **HEADER,
        "sort": "durable_resolution",
        "sort_currency": "EUR",
        "min_contacts": 1,
        "filters": NO_FILTERS,
        "agents": ranked("a1", "a2", "a4", "a3"),
    }


@pytest.mark.parametrize(
    ("params", "order"),
    [
        # Resolution: a1 1.0, a2 = a3 0.75 (tie: by id), a4 0.6667.
        ({"sort": "resolution"}, ["a1", "a2", "a3", "a4"]),
        # NPS: a2 100, a1 25, a4 0, a3 −25.
        ({"sort": "nps"}, ["a2", "a1", "a4", "a3"]),
        # EUR per interaction: a2 5000, a1 1200, a4 1166.67, a3 625.
        ({"sort": "revenue"}, ["a2", "a1", "a4", "a3"]),
        # USD per interaction: a3 1750; the others have none (0), by id.
        ({"sort": "revenue", "currency": "USD"}, ["a3", "a1", "a2", "a4"]),
        # Four or more outcomes: a1 (5), a2 (4), a3 (4).
        ({"min_contacts": "4"}, ["a1", "a2", "a3"]),
        ({"min_contacts": "6"}, []),
    ],
)
def test_the_leaderboard_sorts_by_the_figure_asked_for(
    client: TestClient, admin_headers: dict[str, str], params: dict[str, Any], order: list[str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/agents", **params).json()
    assert body["agents"] == ranked(*order)
    assert body["sort_currency"] == params.get("currency", "EUR")


# Established contacts only: o2 o8 o9 (a1), o11 (a2), o16 (a3), o7 (a4).
ESTABLISHED = {
    # Resolved 3/3; durable o8 o9 2/3; repeat o9 1/3; NPS 6 9 7: 100 × (1 − 1) / 3 = 0;
    # handle (200 + 100 + 350) / 3 = 216.667; EUR 1000 / 3 = 333.33.
    "a1": figures(
        3,
        resolved=(3, 1.0),
        durable=(2, 0.6667),
        repeats=(1, 0.3333),
        nps=(3, 1, 1, 0.0),
        upsells=(0, 0.0),
        cross_sells=(0, 0.0),
        handle=216.667,
        revenue={"EUR": (1000, 333.33)},
    ),
    # o11: NPS 10, upsell, EUR 8000.
    "a2": figures(
        1,
        resolved=(1, 1.0),
        durable=(1, 1.0),
        repeats=(0, 0.0),
        nps=(1, 1, 0, 100.0),
        upsells=(1, 1.0),
        cross_sells=(0, 0.0),
        handle=300.0,
        revenue={"EUR": (8000, 8000.0)},
    ),
    # o16: NPS 10, upsell and cross-sell, EUR 2500.
    "a3": figures(
        1,
        resolved=(1, 1.0),
        durable=(1, 1.0),
        repeats=(0, 0.0),
        nps=(1, 1, 0, 100.0),
        upsells=(1, 1.0),
        cross_sells=(1, 1.0),
        handle=320.0,
        revenue={"EUR": (2500, 2500.0)},
    ),
    # o7: no NPS answer, upsell, EUR 2000.
    "a4": figures(
        1,
        resolved=(1, 1.0),
        durable=(1, 1.0),
        repeats=(0, 0.0),
        nps=(0, 0, 0, None),
        upsells=(1, 1.0),
        cross_sells=(0, 0.0),
        handle=250.0,
        revenue={"EUR": (2000, 2000.0)},
    ),
}


def test_the_leaderboard_filters_by_contact_facts_and_puts_agents_without_an_nps_last(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(
        client, admin_headers, "/v1/reports/agents", sort="nps", journey_stage="established"
    ).json()
    assert body["filters"] == {**NO_FILTERS, "journey_stage": "established"}
    # NPS: a2 = a3 100 (tie: by id), a1 0, a4 none (last).
    assert body["agents"] == ranked("a2", "a3", "a1", "a4", table=ESTABLISHED)
    # Consumer billing: o2 o9 (a1), o14 (a4), o16 (a3); durable a1 1/2 (o9), a3 1/1, a4 0/1.
    body = get_report(
        client, admin_headers, "/v1/reports/agents", segment="consumer", inquiry_type="billing"
    ).json()
    leaderboard = [
        (r["agent_id"], r["contacts"], r["durable_resolution_rate"]) for r in body["agents"]
    ]
    assert leaderboard == [("a3", 1, 1.0), ("a1", 2, 0.5), ("a4", 1, 0.0)]


def as_csv_cell(value: Any) -> str:
    """How the CSV writes a JSON value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


FIGURE_COLUMNS = (
    "contacts,resolved,resolution_rate,durable,durable_resolution_rate,repeat_contacts,"
    "repeat_rate,nps_responses,promoters,detractors,nps,upsells,upsell_conversion,cross_sells,"
    "cross_sell_conversion,mean_handle_seconds,currency,revenue_minor,revenue_per_interaction"
)


def flat(key: dict[str, Any], row: dict[str, Any]) -> list[dict[str, str]]:
    """An expected row as CSV records: one per currency, one with empty revenue without any."""
    scalars = {k: as_csv_cell(v) for k, v in row.items() if k != "revenue"}
    money = row["revenue"] or [{"currency": "", "revenue_minor": "", "revenue_per_interaction": ""}]
    return [
        {
            **{k: as_csv_cell(v) for k, v in key.items()},
            **scalars,
            **{k: as_csv_cell(v) for k, v in m.items()},
        }
        for m in money
    ]


def test_the_leaderboard_as_csv_has_one_line_per_agent_and_currency(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    response = get_report(client, admin_headers, "/v1/reports/agents", format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="agents-report.csv"'
    lines = response.text.split("\r\n")
    assert lines[0] == "rank,agent_id," + FIGURE_COLUMNS
    assert lines[1] == "1,a1,5,5,1.0,4,0.8,1,0.2,4,2,1,25.0,1,0.2,0,0.0,246.0,EUR,6000,1200.0"
    # a3 recorded revenue in two currencies: two lines with the same figures.
    assert lines[4:6] == [
        "4,a3,4,3,0.75,2,0.5,0,0.0,4,1,2,-25.0,1,0.25,3,0.75,480.0,EUR,2500,625.0",
        "4,a3,4,3,0.75,2,0.5,0,0.0,4,1,2,-25.0,1,0.25,3,0.75,480.0,USD,7000,1750.0",
    ]
    assert lines[-1] == ""
    expected = [
        line
        for row in ranked("a1", "a2", "a4", "a3")
        for line in flat({"rank": row.pop("rank"), "agent_id": row.pop("agent_id")}, row)
    ]
    assert list(csv.DictReader(io.StringIO(response.text))) == expected


# ---- revenue by group -------------------------------------------------------------------------
# consumer: o1 o2 o6 o7 o9 o10 o14 o16. Resolved 6/8 (not o6 o14); durable o1 o7 o9 o10 o16
# 5/8; repeats o9 o10 2/8; NPS 10 6 3 7 10 5 10: promoters 3, detractors 3 (6 3 5), 0;
# upsells o1 o7 o16 3/8; cross-sell o16 1/8; handle 2520 / 8 = 315; EUR 5000 + 2000 + 2500
# = 9500, / 8 = 1187.5.
CONSUMER = figures(
    8,
    resolved=(6, 0.75),
    durable=(5, 0.625),
    repeats=(2, 0.25),
    nps=(7, 3, 3, 0.0),
    upsells=(3, 0.375),
    cross_sells=(1, 0.125),
    handle=315.0,
    revenue={"EUR": (9500, 1187.5)},
)
# enterprise: o5 o11 o13 o15, all resolved and durable; NPS 8 10 9: 100 × 2 / 3 = 66.67;
# upsell o11, cross-sell o5; handle 1330 / 4 = 332.5; EUR 8000 + 1500 + 0 = 9500, / 4 =
# 2375; USD 3000 / 4 = 750.
ENTERPRISE = figures(
    4,
    resolved=(4, 1.0),
    durable=(4, 1.0),
    repeats=(0, 0.0),
    nps=(3, 2, 0, 66.67),
    upsells=(1, 0.25),
    cross_sells=(1, 0.25),
    handle=332.5,
    revenue={"EUR": (9500, 2375.0), "USD": (3000, 750.0)},
)
# smb: o3 o4 o8 o12. Resolved 3/4 (not o4); durable o3 o8 2/4; NPS 9 9 0: 100 × (2 − 1) / 3
# = 33.33; upsell o3; cross-sells o3 o12; handle 2300 / 4 = 575; EUR 12000 + 1000 = 13000,
# / 4 = 3250; USD 4000 / 4 = 1000.
SMB = figures(
    4,
    resolved=(3, 0.75),
    durable=(2, 0.5),
    repeats=(0, 0.0),
    nps=(3, 2, 1, 33.33),
    upsells=(1, 0.25),
    cross_sells=(2, 0.5),
    handle=575.0,
    revenue={"EUR": (13000, 3250.0), "USD": (4000, 1000.0)},
)
# All 16: resolved 6 + 4 + 3 = 13 (0.8125); durable 5 + 4 + 2 = 11 (0.6875); repeats 2
# (0.125); NPS answers 7 + 3 + 3 = 13, promoters 7, detractors 4: 100 × 3 / 13 = 23.08;
# upsells 5 (0.3125); cross-sells 4 (0.25); handle 6150 / 16 = 384.375; EUR 32000 / 16 = 2000;
# USD 7000 / 16 = 437.5.
TOTAL = figures(
    16,
    resolved=(13, 0.8125),
    durable=(11, 0.6875),
    repeats=(2, 0.125),
    nps=(13, 7, 4, 23.08),
    upsells=(5, 0.3125),
    cross_sells=(4, 0.25),
    handle=384.375,
    revenue={"EUR": (32000, 2000.0), "USD": (7000, 437.5)},
)
# Fast lane: o3 o5 o11 o13, all resolved and durable; NPS 9 8 10 9: 100 × 3 / 4 = 75;
# upsells o3 o11, cross-sells o3 o5; handle 1650 / 4 = 412.5; EUR 12000 + 8000 + 1500 =
# 21500, / 4 = 5375; USD 3000 / 4 = 750.
FAST_LANE = figures(
    4,
    resolved=(4, 1.0),
    durable=(4, 1.0),
    repeats=(0, 0.0),
    nps=(4, 3, 0, 75.0),
    upsells=(2, 0.5),
    cross_sells=(2, 0.5),
    handle=412.5,
    revenue={"EUR": (21500, 5375.0), "USD": (3000, 750.0)},
)
# Standard, the other 12: resolved 13 − 4 = 9 (0.75); durable 11 − 4 = 7 (0.5833); repeats
# 2 (0.1667); NPS answers 9, promoters 4 (10 9 10 10), detractors 4 (6 3 0 5): 0; upsells
# 3 (0.25); cross-sells 2 (0.1667); handle 4500 / 12 = 375; EUR 10500 / 12 = 875; USD 4000
# / 12 = 333.33.
STANDARD = figures(
    12,
    resolved=(9, 0.75),
    durable=(7, 0.5833),
    repeats=(2, 0.1667),
    nps=(9, 4, 4, 0.0),
    upsells=(3, 0.25),
    cross_sells=(2, 0.1667),
    handle=375.0,
    revenue={"EUR": (10500, 875.0), "USD": (4000, 333.33)},
)


def grouped(group: str | None, row: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """An expected revenue-report row."""
    return {"group": group, "group_name": name or group, **row}


def test_the_revenue_report_by_segment_gives_every_figure(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/revenue").json()
    assert body == {
        **HEADER,
        "group_by": "segment",
        "groups": [
            grouped("consumer", CONSUMER),
            grouped("enterprise", ENTERPRISE),
            grouped("smb", SMB),
        ],
        "total": grouped(None, TOTAL),
    }


def test_the_revenue_report_by_tier_shows_the_fast_lane_beside_the_standard_tier(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/revenue", group_by="tier").json()
    assert body["groups"] == [
        grouped("standard", STANDARD, "Standard"),
        grouped("fast_lane", FAST_LANE, "Priority line"),
    ]
    assert body["total"] == grouped(None, TOTAL)


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        # billing o2 o5 o8 o9 o11 o14 o16: 7, resolved 6 (not o14); USD o5 3000;
        # EUR o8 o11 o16 1000 + 8000 + 2500 = 11500.
        # setup o1 o3 o7 o12 o15: 5, all resolved; EUR 5000 + 12000 + 2000 + 0 = 19000,
        # USD o12 4000. technical o4 o6 o10 o13: 4, resolved o10 o13; EUR o13 1500.
        (
            "inquiry_type",
            [
                ("billing", 7, 0.8571, {"EUR": 11500, "USD": 3000}),
                ("setup", 5, 1.0, {"EUR": 19000, "USD": 4000}),
                ("technical", 4, 0.5, {"EUR": 1500}),
            ],
        ),
        # at_risk o4 o13: resolved o13; established o2 o7 o8 o9 o11 o16: all resolved,
        # EUR 2000 + 1000 + 8000 + 2500; onboarding o1 o3 o5 o6 o10 o12 o14 o15: resolved 6.
        (
            "journey_stage",
            [
                ("at_risk", 2, 0.5, {"EUR": 1500}),
                ("established", 6, 1.0, {"EUR": 13500}),
                ("onboarding", 8, 0.75, {"EUR": 17000, "USD": 7000}),
            ],
        ),
    ],
)
def test_the_revenue_report_groups_by_inquiry_type_or_journey_stage(
    client: TestClient,
    admin_headers: dict[str, str],
    group_by: str,
    expected: list[tuple[Any, ...]],
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/revenue", group_by=group_by).json()
    assert body["group_by"] == group_by
    assert [
        (
            g["group"],
            g["contacts"],
            g["resolution_rate"],
            {m["currency"]: m["revenue_minor"] for m in g["revenue"]},
        )
        for g in body["groups"]
    ] == expected
    assert body["total"] == grouped(None, TOTAL)


def test_the_revenue_report_as_csv_has_one_line_per_group_and_currency(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    response = get_report(
        client, {**admin_headers, "Accept": "text/csv"}, "/v1/reports/revenue", group_by="tier"
    )
    assert response.headers["content-disposition"] == 'attachment; filename="revenue-report.csv"'
    lines = response.text.split("\r\n")
    assert lines[0] == "row_type,group_by,group,group_name," + FIGURE_COLUMNS
    assert lines[3] == (
        "group,tier,fast_lane,Priority line,4,4,1.0,4,1.0,0,0.0,4,3,0,75.0,2,0.5,2,0.5,412.5,"
        "EUR,21500,5375.0"
    )
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    group = {"row_type": "group", "group_by": "tier"}
    expected = [
        *flat({**group, **grouped("standard", {}, "Standard")}, STANDARD),
        *flat({**group, **grouped("fast_lane", {}, "Priority line")}, FAST_LANE),
        *flat({"row_type": "total", "group_by": "tier", **grouped(None, {})}, TOTAL),
    ]
    assert parsed == expected


# ---- a journey stage beside the others --------------------------------------------------------
# Onboarding: o1 o3 o5 o6 o10 o12 o14 o15; other stages: o2 o4 o7 o8 o9 o11 o13 o16.
ONBOARDING_ROWS: list[dict[str, Any]] = [
    {
        "inquiry_type": "billing",
        # o5 o14: resolved and durable o5; NPS 8 5: 100 × (0 − 1) / 2 = −50; cross-sell o5;
        # handle (400 + 150) / 2 = 275; USD 3000 / 2 = 1500.
        "stage": figures(
            2,
            resolved=(1, 0.5),
            durable=(1, 0.5),
            repeats=(0, 0.0),
            nps=(2, 0, 1, -50.0),
            upsells=(0, 0.0),
            cross_sells=(1, 0.5),
            handle=275.0,
            revenue={"USD": (3000, 1500.0)},
        ),
        # o2 o8 o9 o11 o16: all resolved, durable 4 (not o2); repeat o9; NPS 6 9 7 10 10:
        # 100 × (3 − 1) / 5 = 40; upsells o11 o16; cross-sell o16; handle 1270 / 5 = 254;
        # EUR 1000 + 8000 + 2500 = 11500, / 5 = 2300.
        "other_stages": figures(
            5,
            resolved=(5, 1.0),
            durable=(4, 0.8),
            repeats=(1, 0.2),
            nps=(5, 3, 1, 40.0),
            upsells=(2, 0.4),
            cross_sells=(1, 0.2),
            handle=254.0,
            revenue={"EUR": (11500, 2300.0)},
        ),
    },
    {
        "inquiry_type": "setup",
        # o1 o3 o12 o15: all resolved, durable 3 (not o12); NPS 10 9 0: 100 × (2 − 1) / 3 =
        # 33.33; upsells o1 o3; cross-sells o3 o12; handle 1880 / 4 = 470; EUR 5000 + 12000
        # + 0 = 17000, / 4 = 4250; USD 4000 / 4 = 1000.
        "stage": figures(
            4,
            resolved=(4, 1.0),
            durable=(3, 0.75),
            repeats=(0, 0.0),
            nps=(3, 2, 1, 33.33),
            upsells=(2, 0.5),
            cross_sells=(2, 0.5),
            handle=470.0,
            revenue={"EUR": (17000, 4250.0), "USD": (4000, 1000.0)},
        ),
        # o7: resolved, durable, no NPS answer, upsell, EUR 2000.
        "other_stages": figures(
            1,
            resolved=(1, 1.0),
            durable=(1, 1.0),
            repeats=(0, 0.0),
            nps=(0, 0, 0, None),
            upsells=(1, 1.0),
            cross_sells=(0, 0.0),
            handle=250.0,
            revenue={"EUR": (2000, 2000.0)},
        ),
    },
    {
        "inquiry_type": "technical",
        # o6 o10: resolved and durable o10, a repeat (of o6); NPS 3 10: 0; handle 950 / 2.
        "stage": figures(
            2,
            resolved=(1, 0.5),
            durable=(1, 0.5),
            repeats=(1, 0.5),
            nps=(2, 1, 1, 0.0),
            upsells=(0, 0.0),
            cross_sells=(0, 0.0),
            handle=475.0,
        ),
        # o4 o13: resolved and durable o13; NPS 9: 100; handle 1250 / 2 = 625; EUR 1500 / 2.
        "other_stages": figures(
            2,
            resolved=(1, 0.5),
            durable=(1, 0.5),
            repeats=(0, 0.0),
            nps=(1, 1, 0, 100.0),
            upsells=(0, 0.0),
            cross_sells=(0, 0.0),
            handle=625.0,
            revenue={"EUR": (1500, 750.0)},
        ),
    },
]
ONBOARDING_TOTAL: dict[str, Any] = {
    "inquiry_type": None,
    # Resolved 1 + 4 + 1 = 6; durable 1 + 3 + 1 = 5; repeat 1; NPS answers 2 + 3 + 2 = 7,
    # promoters 0 + 2 + 1 = 3, detractors 1 + 1 + 1 = 3: 0; upsells 2; cross-sells 1 + 2 = 3;
    # handle (550 + 1880 + 950) / 8 = 422.5; EUR 17000 / 8 = 2125; USD 7000 / 8 = 875.
    "stage": figures(
        8,
        resolved=(6, 0.75),
        durable=(5, 0.625),
        repeats=(1, 0.125),
        nps=(7, 3, 3, 0.0),
        upsells=(2, 0.25),
        cross_sells=(3, 0.375),
        handle=422.5,
        revenue={"EUR": (17000, 2125.0), "USD": (7000, 875.0)},
    ),
    # Resolved 5 + 1 + 1 = 7; durable 4 + 1 + 1 = 6; repeat 1; NPS answers 5 + 0 + 1 = 6,
    # promoters 4, detractors 1: 100 × 3 / 6 = 50; upsells 2 + 1 = 3; cross-sell 1; handle
    # (1270 + 250 + 1250) / 8 = 346.25; EUR 11500 + 2000 + 1500 = 15000, / 8 = 1875.
    "other_stages": figures(
        8,
        resolved=(7, 0.875),
        durable=(6, 0.75),
        repeats=(1, 0.125),
        nps=(6, 4, 1, 50.0),
        upsells=(3, 0.375),
        cross_sells=(1, 0.125),
        handle=346.25,
        revenue={"EUR": (15000, 1875.0)},
    ),
}


def test_the_onboarding_report_compares_the_stage_with_all_other_stages(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/onboarding").json()
    assert body == {
        **HEADER,
        "stage": "onboarding",
        "inquiry_types": ONBOARDING_ROWS,
        "total": ONBOARDING_TOTAL,
    }


def test_another_stage_swaps_the_sides(client: TestClient, admin_headers: dict[str, str]) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/onboarding", stage="at_risk").json()
    # at_risk: o4 (technical) and o13 (technical): the technical "other stages" figures above.
    assert body["stage"] == "at_risk"
    assert body["inquiry_types"][2] == {
        "inquiry_type": "technical",
        "stage": ONBOARDING_ROWS[2]["other_stages"],
        "other_stages": ONBOARDING_ROWS[2]["stage"],
    }
    assert body["inquiry_types"][0]["stage"] == NOTHING  # no billing contact was at risk


def test_the_onboarding_report_as_csv_puts_each_side_on_its_own_lines(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    response = get_report(client, admin_headers, "/v1/reports/onboarding", format="csv")
    assert response.headers["content-disposition"] == (
        'attachment; filename="onboarding-report.csv"'
    )
    lines = response.text.split("\r\n")
    assert lines[0] == "row_type,inquiry_type,part,journey_stage," + FIGURE_COLUMNS
    assert lines[1:3] == [
        "inquiry_type,billing,stage,onboarding,2,1,0.5,1,0.5,0,0.0,2,0,1,-50.0,0,0.0,1,0.5,"
        "275.0,USD,3000,1500.0",
        "inquiry_type,billing,other_stages,,5,5,1.0,4,0.8,1,0.2,5,3,1,40.0,2,0.4,1,0.2,254.0,"
        "EUR,11500,2300.0",
    ]
    expected = []
    for row_type, row in [
        *(("inquiry_type", r) for r in ONBOARDING_ROWS),
        ("total", ONBOARDING_TOTAL),
    ]:
        key = {"row_type": row_type, "inquiry_type": row["inquiry_type"]}
        expected += flat({**key, "part": "stage", "journey_stage": "onboarding"}, row["stage"])
        expected += flat(
            {**key, "part": "other_stages", "journey_stage": None}, row["other_stages"]
        )
    assert list(csv.DictReader(io.StringIO(response.text))) == expected


# ---- insight tags per week --------------------------------------------------------------------
def tag(name: str, count: int, share: float) -> dict[str, Any]:
    """An expected tag entry."""
    return {"tag": name, "count": count, "share": share}


EXPECTED_WEEKS = [
    {
        # o1-o8 (8 outcomes). needs: guidance o1 o3 o6 (3/8), setup_help o3 (1/8);
        # frustrations: outage o4 o6 and wait_time o2 o4 (2/8 each, ties by name);
        # requests: callback o3 o8 (2/8), invoice_copy o5 (1/8).
        "week": "2027-W01",
        "week_start": "2027-01-04T00:00:00+01:00",
        "outcomes": 8,
        "needs": [tag("guidance", 3, 0.375), tag("setup_help", 1, 0.125)],
        "frustrations": [tag("outage", 2, 0.25), tag("wait_time", 2, 0.25)],
        "requests": [tag("callback", 2, 0.25), tag("invoice_copy", 1, 0.125)],
    },
    {
        # o9-o16 (8). needs: guidance o10 o15 (o15 lists it twice: once), setup_help o12;
        # frustrations: wait_time o9 o12 o14, outage o13; requests: callback o10 o11 o14,
        # invoice_copy o11.
        "week": "2027-W02",
        "week_start": "2027-01-11T00:00:00+01:00",
        "outcomes": 8,
        "needs": [tag("guidance", 2, 0.25), tag("setup_help", 1, 0.125)],
        "frustrations": [tag("wait_time", 3, 0.375), tag("outage", 1, 0.125)],
        "requests": [tag("callback", 3, 0.375), tag("invoice_copy", 1, 0.125)],
    },
]


def test_the_insights_report_gives_the_top_tags_per_week_in_the_calendar_zone(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/insights").json()
    assert body == {
        **HEADER,
        "timezone": "Europe/Berlin",
        "top": 5,
        "weeks": EXPECTED_WEEKS,
    }
    top_one = get_report(client, admin_headers, "/v1/reports/insights", top=1).json()
    # The first tag of each kind above; W01's frustrations tie, and outage comes first by name.
    assert [
        (w["week"], w["needs"], w["frustrations"], w["requests"]) for w in top_one["weeks"]
    ] == [
        ("2027-W01", [tag("guidance", 3, 0.375)], [tag("outage", 2, 0.25)],
         [tag("callback", 2, 0.25)]),
        ("2027-W02", [tag("guidance", 2, 0.25)], [tag("wait_time", 3, 0.375)],
         [tag("callback", 3, 0.375)]),
    ]  # fmt: skip


def test_without_a_calendar_zone_weeks_run_in_utc(
    tmp_path: Path, admin_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    with serve(rules_settings(tmp_path, zone="UTC")) as client:
        insert_outcomes(client)
        body = get_report(client, admin_headers, "/v1/reports/insights").json()
    # In UTC o8 (Sunday 23:00) falls in 2026-W53 and o9 (Sunday 23:30) in 2027-W01.
    assert body["timezone"] == "UTC"
    assert [(w["week"], w["week_start"], w["outcomes"]) for w in body["weeks"]] == [
        ("2026-W53", "2026-12-28T00:00:00+00:00", 1),
        ("2027-W01", "2027-01-04T00:00:00+00:00", 8),
        ("2027-W02", "2027-01-11T00:00:00+00:00", 7),
    ]


def test_the_insights_report_as_csv_has_one_line_per_week_kind_and_tag(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    response = get_report(client, admin_headers, "/v1/reports/insights", format="csv", top=1)
    assert response.headers["content-disposition"] == 'attachment; filename="insights-report.csv"'
    w1 = "2027-W01,2027-01-04T00:00:00+01:00,8"
    w2 = "2027-W02,2027-01-11T00:00:00+01:00,8"
    assert response.text.split("\r\n") == [
        "week,week_start,outcomes,kind,rank,tag,count,share",
        f"{w1},needs,1,guidance,3,0.375",
        f"{w1},frustrations,1,outage,2,0.25",
        f"{w1},requests,1,callback,2,0.25",
        f"{w2},needs,1,guidance,2,0.25",
        f"{w2},frustrations,1,wait_time,3,0.375",
        f"{w2},requests,1,callback,3,0.375",
        "",
    ]


# ---- the fast-lane report's outcomes ---------------------------------------------------------
def test_the_fastlane_report_carries_each_tiers_outcomes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    body = get_report(client, admin_headers, "/v1/reports/fastlane").json()
    assert body["outcomes_by_tier"] == [
        {"tier": "standard", "tier_name": "Standard", **STANDARD},
        {"tier": "fast_lane", "tier_name": "Priority line", **FAST_LANE},
    ]
    response = get_report(client, admin_headers, "/v1/reports/fastlane", format="csv")
    rows = [r for r in csv.reader(io.StringIO(response.text)) if r[0].startswith("outcomes.")]
    assert rows[:3] == [
        ["outcomes.standard.tier_name", "", "Standard"],
        ["outcomes.standard.contacts", "", "12"],
        ["outcomes.standard.resolved", "", "9"],
    ]
    assert rows[-4:] == [
        ["outcomes.fast_lane.revenue_minor", "EUR", "21500"],
        ["outcomes.fast_lane.revenue_per_interaction", "EUR", "5375.0"],
        ["outcomes.fast_lane.revenue_minor", "USD", "3000"],
        ["outcomes.fast_lane.revenue_per_interaction", "USD", "750.0"],
    ]
    # 17 figures + tier name per tier, and two lines per currency (2 currencies each).
    assert len(rows) == 2 * (17 + 4)


def test_an_empty_window_has_no_rows_and_null_rates(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    insert_outcomes(client)
    empty: dict[str, Any] = {"from": "2027-02-01T00:00:00Z", "to": "2027-02-08T00:00:00Z"}
    agents = get_report(client, admin_headers, "/v1/reports/agents", **empty).json()
    assert agents["agents"] == []
    revenue = get_report(client, admin_headers, "/v1/reports/revenue", group_by="tier", **empty)
    assert revenue.json()["groups"] == [
        grouped("standard", NOTHING, "Standard"),
        grouped("fast_lane", NOTHING, "Priority line"),
    ]
    assert revenue.json()["total"] == grouped(None, NOTHING)
    stage = get_report(client, admin_headers, "/v1/reports/onboarding", **empty).json()
    assert (stage["inquiry_types"], stage["total"]) == (
        [],
        {"inquiry_type": None, "stage": NOTHING, "other_stages": NOTHING},
    )
    insights = get_report(client, admin_headers, "/v1/reports/insights", **empty).json()
    assert insights["weeks"] == []
    csv_text = get_report(client, admin_headers, "/v1/reports/agents", format="csv", **empty).text
    assert csv_text == "rank,agent_id," + FIGURE_COLUMNS + "\r\n"


# ---- bad parameters and keys ------------------------------------------------------------------
OUTCOME_REPORTS = [
    "/v1/reports/agents",
    "/v1/reports/revenue",
    "/v1/reports/onboarding",
    "/v1/reports/insights",
]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/reports/agents", {"sort": "best"}, "query.sort"),
        ("/v1/reports/agents", {"min_contacts": "0"}, "query.min_contacts"),
        ("/v1/reports/agents", {"currency": "eur"}, "query.currency"),
        ("/v1/reports/revenue", {"group_by": "channel"}, "query.group_by"),
        ("/v1/reports/insights", {"top": "0"}, "query.top"),
        ("/v1/reports/insights", {"top": "51"}, "query.top"),
        ("/v1/reports/insights", {"format": "xml"}, "query.format"),
        ("/v1/reports/onboarding", {"from": "2027-01-04T00:00:00"}, "query.from"),
    ],
)
def test_malformed_parameters_are_422_naming_the_parameter(
    client: TestClient, admin_headers: dict[str, str], path: str, params: dict[str, str], field: str
) -> None:
    response = get_report(client, admin_headers, path, status=422, **params)
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("path", "params", "field", "detail"),
    [
        (
            "/v1/reports/onboarding",
            {"stage": "onbording"},
            "query.stage",
            "query.stage: unknown stage 'onbording'; did you mean 'onboarding'? known: "
            "prospect, onboarding, established, renewal, at_risk",
        ),
        (
            "/v1/reports/onboarding",
            {"stage": "churned"},
            "query.stage",
            "query.stage: unknown stage 'churned'; known: "
            "prospect, onboarding, established, renewal, at_risk",
        ),
        (
            "/v1/reports/agents",
            {"segment": "consumr"},
            "query.segment",
            "query.segment: unknown segment 'consumr'; did you mean 'consumer'? known: "
            "consumer, smb, enterprise",
        ),
        (
            "/v1/reports/agents",
            {"inquiry_type": "biling"},
            "query.inquiry_type",
            "query.inquiry_type: unknown inquiry_type 'biling'; did you mean 'billing'? known: "
            "billing, technical, sales, cancellation, setup",
        ),
        (
            "/v1/reports/agents",
            {"journey_stage": "renew"},
            "query.journey_stage",
            "query.journey_stage: unknown journey_stage 'renew'; did you mean 'renewal'? known: "
            "prospect, onboarding, established, renewal, at_risk",
        ),
    ],
)
def test_a_name_the_rules_do_not_know_is_422_with_a_suggestion(
    client: TestClient,
    admin_headers: dict[str, str],
    path: str,
    params: dict[str, str],
    field: str,
    detail: str,
) -> None:
    body = get_report(client, admin_headers, path, status=422, **params).json()
    assert body["detail"] == detail
    assert [(e["field"], e["type"]) for e in body["errors"]] == [(field, "unknown_name")]


@pytest.mark.parametrize("path", OUTCOME_REPORTS)
def test_an_unusable_window_is_422_on_every_outcome_report(
    client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    backwards = {"from": WINDOW["to"], "to": WINDOW["from"]}
    body = get_report(client, admin_headers, path, status=422, **backwards).json()
    assert (body["detail"], [e["field"] for e in body["errors"]]) == (
        "to: must be after `from`",
        ["to"],
    )
    too_long = {"from": "2026-01-01T00:00:00Z", "to": "2027-01-03T00:00:00Z"}
    body = get_report(client, admin_headers, path, status=422, **too_long).json()
    assert body["detail"] == "to: the window is 367 days long; at most 366"
    missing = client.get(path, headers=admin_headers)
    assert missing.status_code == 422
    assert sorted(e["field"] for e in missing.json()["errors"]) == ["query.from", "query.to"]


@pytest.mark.parametrize("path", OUTCOME_REPORTS)
def test_a_repeated_query_parameter_is_422(
    client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = client.get(
        f"{path}?from=2027-01-04T00:00:00Z&to=2027-01-18T00:00:00Z&to=2027-01-05T00:00:00Z",
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "query.to", "type": "repeated", "message": "given more than once"}
    ]


@pytest.mark.parametrize("path", OUTCOME_REPORTS)
def test_outcome_reports_need_an_admin_key(
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


# ---- the same figures on real PostgreSQL ----------------------------------------------------
@pytest.fixture
def postgres_settings(postgres_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a private, fresh PostgreSQL schema, dropped afterwards."""
    schema = f"skillroute_outcome_reports_{uuid.uuid4().hex[:12]}"
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
def test_outcome_reports_give_the_same_figures_on_postgresql(
    postgres_settings: Settings, admin_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    with serve(postgres_settings) as client:
        assert client.app.state.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
        insert_outcomes(client)

        def report(path: str, **params: Any) -> Any:
            return get_report(client, admin_headers, path, **params).json()

        agents = report("/v1/reports/agents")
        by_nps = report("/v1/reports/agents", sort="nps", journey_stage="established")
        by_segment = report("/v1/reports/revenue")
        by_tier = report("/v1/reports/revenue", group_by="tier")
        stage = report("/v1/reports/onboarding")
        insights = report("/v1/reports/insights")
        fastlane = report("/v1/reports/fastlane")
    assert agents["agents"] == ranked("a1", "a2", "a4", "a3")
    assert by_nps["agents"] == ranked("a2", "a3", "a1", "a4", table=ESTABLISHED)
    assert by_segment["groups"] == [
        grouped("consumer", CONSUMER),
        grouped("enterprise", ENTERPRISE),
        grouped("smb", SMB),
    ]
    assert by_segment["total"] == grouped(None, TOTAL)
    assert by_tier["groups"] == [
        grouped("standard", STANDARD, "Standard"),
        grouped("fast_lane", FAST_LANE, "Priority line"),
    ]
    assert (stage["inquiry_types"], stage["total"]) == (ONBOARDING_ROWS, ONBOARDING_TOTAL)
    assert insights["weeks"] == EXPECTED_WEEKS
    assert fastlane["outcomes_by_tier"] == [
        {"tier": "standard", "tier_name": "Standard", **STANDARD},
        {"tier": "fast_lane", "tier_name": "Priority line", **FAST_LANE},
    ]
