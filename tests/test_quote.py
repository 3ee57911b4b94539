"""The fast-lane quote and the sales guard on a hand-made staffing plan.

Every figure is checked against `sla.priority` and `sla.erlang` computed here from the plan,
so the quote reports exactly what the queueing model predicts for the passes sold.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sla.config import CapacityPlan
from sla.erlang import erlang_c
from sla.guard import PassDemand, plan_occurrences
from sla.priority import fast_lane_capacity, forecast_two_tiers, pass_headroom
from tests.conftest import FakeClock
from tests.test_passes_api import (
    app_with_rules,
    billing,
    buy,
    call,
    new_key,
    pass_body,
    subscription,
)

# 10 agents, 5-minute calls (μ = 12/h), 100 standard contacts/h on weekdays 09-17 (40 open
# hours a week). Saturday is staffed but has no forecast: closed to the fast lane.
PLAN_RULES = """
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
  guard: %(guard)s
  epsilon: 0.1
  single_incident_valid_days: 10
  expected:
    single_incident_contacts: 1
    subscription_contacts_per_day: 0.5
capacity_plan:
  timezone: UTC
  channels:
    voice:
      handle_seconds: 300
      intervals:
        - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00",
           contacts_per_hour: 100, agents: 10}
        - {days: [sat], start: "10:00", end: "14:00", contacts_per_hour: 0, agents: 2}
%(more_channels)s
"""
CHAT_PLAN = """
    chat:
      handle_seconds: 600
      intervals:
        - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00",
           contacts_per_hour: 50, agents: 10}
"""
AGENTS, SERVICE_RATE, STANDARD_RATE, EPSILON = 10, 12.0, 100.0, 0.1
FACTOR = 7 / 40  # fast-lane contacts/h per pass contact/day: one channel, 40 open hours
PER_SUBSCRIPTION = 0.5 * FACTOR
PER_SINGLE = 1 / 10 * FACTOR
MONDAY = dt.datetime(2027, 1, 18, tzinfo=dt.UTC).timestamp()  # the fake clock starts Fri 15th
HOUR = 3600.0


def plan_rules(*, guard: bool = True, more_channels: str = "") -> str:
    """The rules sections of the hand-made plan."""
    return PLAN_RULES % {"guard": str(guard).lower(), "more_channels": more_channels}


def quote(client: TestClient, **params: Any) -> Any:
    """GET the quote."""
    return client.get("/v1/fastlane/quote", params=params, headers=billing())


def capacity() -> Any:
    """The ε capacity of the weekday interval, straight from sla.priority."""
    return fast_lane_capacity(
        agents=AGENTS,
        service_rate=SERVICE_RATE,
        standard_arrival_rate=STANDARD_RATE,
        max_standard_wait_growth=EPSILON,
    )


def test_the_quote_reports_what_the_priority_model_predicts_for_the_passes_sold(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, plan_rules()) as client:
        for n in range(4):
            buy(client, subscription(f"cust-{n}", fake_clock.now))

        response = quote(client, channel="voice", **{"from": MONDAY, "to": MONDAY + 24 * HOUR})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["planned"], body["guard"], body["epsilon"], body["note"]) == (
        True,
        True,
        0.1,
        None,
    )
    assert body["channel_share"] == 1.0
    assert body["fast_lane_contacts_per_hour_per_pass_contact_per_day"] == pytest.approx(FACTOR)
    assert body["active_passes"] == {"single_incident": 0, "subscription": 4}
    [monday] = body["intervals"]
    fast_rate = 4 * PER_SUBSCRIPTION
    expected = forecast_two_tiers(
        agents=AGENTS,
        service_rate=SERVICE_RATE,
        fast_arrival_rate=fast_rate,
        standard_arrival_rate=STANDARD_RATE,
    )
    limit = capacity()
    waiting = erlang_c(AGENTS, (fast_rate + STANDARD_RATE) / SERVICE_RATE)
    assert (monday["start"], monday["end"]) == (MONDAY + 9 * HOUR, MONDAY + 17 * HOUR)
    assert (monday["weekday"], monday["local_start"], monday["local_end"]) == (
        "mon",
        "09:00",
        "17:00",
    )
    assert (monday["agents"], monday["contacts_per_hour"], monday["handle_seconds"]) == (
        10,
        100.0,
        300.0,
    )
    assert (monday["open"], monday["stable"], monday["sold_out"]) == (True, True, False)
    assert monday["fast_lane_contacts_per_hour"] == pytest.approx(fast_rate, rel=1e-12)
    assert monday["fast_lane"]["mean_wait_seconds"] == pytest.approx(
        expected.fast_mean_wait * HOUR, rel=1e-12
    )
    assert monday["standard"]["mean_wait_seconds"] == pytest.approx(
        expected.standard_mean_wait * HOUR, rel=1e-12
    )
    assert monday["standard"]["mean_wait_without_fast_lane_seconds"] == pytest.approx(
        expected.standard_mean_wait_without_fast_lane * HOUR, rel=1e-12
    )
    assert monday["standard"]["wait_growth"] == pytest.approx(
        expected.standard_wait_ratio - 1, rel=1e-9
    )
    assert monday["fast_lane"]["service_level"] == pytest.approx(
        1 - waiting * math.exp(-(AGENTS * SERVICE_RATE - fast_rate) * 20 / HOUR), rel=1e-12
    )
    assert monday["standard"]["answer_seconds"] == 60
    assert 0 < monday["standard"]["service_level"] < monday["fast_lane"]["service_level"] < 1
    assert monday["max_fast_lane_contacts_per_hour"] == limit.max_fast_arrival_rate
    assert monday["headroom_contacts_per_hour"] == pytest.approx(
        limit.max_fast_arrival_rate - fast_rate, rel=1e-12
    )
    sellable = {
        kind: pass_headroom(
            capacity=limit, committed_fast_arrival_rate=fast_rate, contact_rate_per_pass=rate
        ).sellable_passes
        for kind, rate in (("single_incident", PER_SINGLE), ("subscription", PER_SUBSCRIPTION))
    }
    assert monday["sellable_passes"] == sellable == {"single_incident": 33, "subscription": 6}
    summary = body["summary"]
    assert (summary["open_hours"], summary["standard_contacts"]) == (8.0, 800.0)
    assert summary["fast_lane_contacts"] == pytest.approx(8 * fast_rate, rel=1e-12)
    assert summary["standard"]["mean_wait_seconds"] == pytest.approx(
        monday["standard"]["mean_wait_seconds"], rel=1e-12
    )
    assert summary["sellable_passes"] == sellable
    assert summary["tightest_interval_start"] == monday["start"]


def test_an_interval_without_a_forecast_takes_no_fast_lane_demand_and_sets_no_limit(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    saturday = MONDAY - 2 * 24 * HOUR
    with app_with_rules(tmp_path, plan_rules()) as client:
        buy(client, subscription("cust-1", fake_clock.now))
        body = quote(
            client, channel="voice", **{"from": saturday, "to": saturday + 24 * HOUR}
        ).json()

    [closed] = body["intervals"]
    assert (closed["weekday"], closed["open"], closed["fast_lane_contacts_per_hour"]) == (
        "sat",
        False,
        0.0,
    )
    assert closed["max_fast_lane_contacts_per_hour"] is None
    assert closed["sellable_passes"] is None
    assert closed["standard"]["mean_wait_seconds"] == 0.0
    assert body["summary"]["open_hours"] == 0.0
    assert body["summary"]["sellable_passes"] is None


def test_the_guard_sells_until_the_fast_lane_is_sold_out_then_refuses_with_the_reason(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    subscriptions = math.floor(capacity().max_fast_arrival_rate / PER_SUBSCRIPTION)
    assert subscriptions == 10
    with app_with_rules(tmp_path, plan_rules()) as client:
        for n in range(subscriptions):
            buy(client, subscription(f"cust-{n}", fake_clock.now))

        refused = client.post(
            "/v1/passes", json=subscription("cust-late", fake_clock.now), headers=billing(new_key())
        )

        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert detail.startswith(
            "the fast lane on voice is sold out for fri 09:00-17:00 (UTC) starting "
            "2027-01-15T09:00:00+00:00: "
        )
        # The smaller single-incident passes still fit the rest, exactly as the quote says.
        body = quote(client, channel="voice", **{"from": MONDAY, "to": MONDAY + 24 * HOUR}).json()
        assert body["intervals"][0]["sellable_passes"] == {"single_incident": 3, "subscription": 0}
        for n in range(3):
            buy(client, pass_body(f"single-{n}"))
        last = client.post("/v1/passes", json=pass_body("single-x"), headers=billing(new_key()))
        assert last.status_code == 409
        body = quote(client, channel="voice", **{"from": MONDAY, "to": MONDAY + 24 * HOUR}).json()
        assert body["intervals"][0]["sold_out"] is True
        assert body["summary"]["sold_out"] is True
        assert body["active_passes"] == {"single_incident": 3, "subscription": 10}


def test_a_refused_sale_frees_its_key_and_a_cancellation_makes_room_again(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, plan_rules()) as client:
        sold = [buy(client, subscription(f"cust-{n}", fake_clock.now)) for n in range(10)]
        key = new_key()
        body = subscription("cust-late", fake_clock.now)
        assert client.post("/v1/passes", json=body, headers=billing(key)).status_code == 409

        client.post(f"/v1/passes/{sold[0]['pass_id']}/cancel", headers=billing())
        retry = client.post("/v1/passes", json=body, headers=billing(key))

        assert retry.status_code == 201
        assert "idempotent-replay" not in retry.headers


def test_with_the_guard_off_the_fast_lane_is_sold_past_its_limit(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, plan_rules(guard=False)) as client:
        for n in range(11):
            buy(client, subscription(f"cust-{n}", fake_clock.now))
        body = quote(client, channel="voice", **{"from": MONDAY, "to": MONDAY + 24 * HOUR}).json()

    monday = body["intervals"][0]
    assert body["guard"] is False
    assert monday["fast_lane_contacts_per_hour"] > monday["max_fast_lane_contacts_per_hour"]
    assert monday["headroom_contacts_per_hour"] == 0.0
    assert monday["standard"]["wait_growth"] > EPSILON


def test_a_subscription_starting_later_is_judged_on_its_own_validity(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, plan_rules()) as client:
        for n in range(10):
            buy(
                client,
                subscription(f"cust-{n}", fake_clock.now)
                | {"valid_until": fake_clock.now + 5 * 24 * HOUR},
            )
        # Sold out until Wednesday; a subscription from the week after still sells.
        next_week = fake_clock.now + 10 * 24 * HOUR
        later = client.post(
            "/v1/passes",
            json=subscription("cust-next", next_week) | {"valid_from": next_week},
            headers=billing(new_key()),
        )
        now_one = client.post(
            "/v1/passes", json=subscription("cust-now", fake_clock.now), headers=billing(new_key())
        )

    assert later.status_code == 201
    assert now_one.status_code == 409


def test_pass_holders_contacts_split_over_channels_by_weekly_forecast(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, plan_rules(more_channels=CHAT_PLAN)) as client:
        buy(client, subscription("cust-1", fake_clock.now))
        voice = quote(client, channel="voice", **{"from": MONDAY, "to": MONDAY + 24 * HOUR})
        chat = quote(client, channel="chat", **{"from": MONDAY, "to": MONDAY + 24 * HOUR})

    assert voice.json()["channel_share"] == pytest.approx(2 / 3)
    assert chat.json()["channel_share"] == pytest.approx(1 / 3)
    assert voice.json()["intervals"][0]["fast_lane_contacts_per_hour"] == pytest.approx(
        0.5 * 7 * (2 / 3) / 40
    )
    assert chat.json()["intervals"][0]["fast_lane_contacts_per_hour"] == pytest.approx(
        0.5 * 7 * (1 / 3) / 40
    )
    assert chat.json()["intervals"][0]["fast_lane"]["service_level"] is None  # no chat SLA


def test_without_a_capacity_plan_the_quote_says_the_guard_cannot_judge_and_passes_sell(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, "") as client:  # the demo rules without a capacity plan
        for n in range(30):
            buy(client, subscription(f"cust-{n}", fake_clock.now))
        body = quote(client, channel="voice").json()

    assert (body["planned"], body["intervals"], body["summary"]) == (False, [], None)
    assert body["note"].startswith("no capacity plan is configured: the sales guard cannot judge")
    assert body["active_passes"] == {"single_incident": 0, "subscription": 30}
    assert (body["from"], body["to"]) == (fake_clock.now, fake_clock.now + 24 * HOUR)


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"channel": "chat"}, 404, "the capacity plan has no channel 'chat' (planned: voice)"),
        (
            {"channel": "fax"},
            422,
            "channel: unknown channel 'fax'; known: voice, chat, email, callback",
        ),
        (
            {"channel": "voice", "from": MONDAY, "to": MONDAY},
            422,
            "to: the window must end after it starts",
        ),
        (
            {"channel": "voice", "from": MONDAY, "to": MONDAY + 32 * 24 * HOUR},
            422,
            "to: the window may span at most 31 days",
        ),
    ],
)
def test_an_unplanned_channel_or_a_bad_window_gets_a_clear_problem(
    tmp_path: Path, fake_clock: FakeClock, params: dict[str, Any], status: int, detail: str
) -> None:
    with app_with_rules(tmp_path, plan_rules()) as client:
        response = quote(client, **params)

    assert response.status_code == status
    assert response.json()["detail"] == detail


@pytest.mark.parametrize("value", ["soon", "nan", "inf", "1e12"])
def test_a_window_edge_that_is_not_unix_seconds_is_422(
    client: TestClient, fake_clock: FakeClock, value: str
) -> None:
    assert quote(client, channel="voice", **{"from": value}).status_code == 422


# ---- the pure parts --------------------------------------------------------------------------


def test_plan_hours_are_local_to_the_plans_time_zone_across_daylight_saving() -> None:
    plan = CapacityPlan.model_validate(
        {
            "timezone": "Europe/Berlin",
            "channels": {
                "voice": {
                    "handle_seconds": 300,
                    "intervals": [
                        {
                            "days": ["mon"],
                            "start": "09:00",
                            "end": "24:00",
                            "contacts_per_hour": 10,
                            "agents": 2,
                        }
                    ],
                }
            },
        }
    )
    winter = dt.datetime(2027, 1, 18, tzinfo=dt.UTC).timestamp()
    summer = dt.datetime(2027, 7, 19, tzinfo=dt.UTC).timestamp()

    [january] = plan_occurrences(plan, "voice", start=winter, end=winter + 86400)
    [july] = plan_occurrences(plan, "voice", start=summer, end=summer + 86400)

    assert (january.start - winter, january.end - winter) == (8 * HOUR, 23 * HOUR)
    assert (july.start - summer, july.end - summer) == (7 * HOUR, 22 * HOUR)
    assert plan_occurrences(plan, "chat", start=winter, end=winter + 86400) == []


def test_pass_demand_counts_every_pass_valid_at_some_time_in_an_interval() -> None:
    demand = PassDemand([(0.0, 10.0, 1.0), (5.0, 20.0, 2.0), (20.0, 30.0, 4.0)])

    counted = demand.contacts_per_day(
        np.array([0.0, 10.0, 19.0, 20.0, 30.0, -5.0]), np.array([5.0, 20.0, 21.0, 25.0, 40.0, 0.0])
    )

    assert counted.tolist() == [1.0, 2.0, 6.0, 4.0, 0.0, 0.0]
    assert PassDemand([]).contacts_per_day(np.array([0.0]), np.array([1.0])).tolist() == [0.0]


@pytest.mark.parametrize("rebuild_after", [3, 10_000])
def test_the_guards_running_demand_equals_a_count_of_the_passes_that_grant_the_fast_lane(
    tmp_path: Path, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch, rebuild_after: int
) -> None:
    # Small: the demand is re-sorted from scratch every few changes; large: never in this test.
    monkeypatch.setattr("service.passes.MAX_DEMAND_CHANGES", rebuild_after)
    with app_with_rules(tmp_path, plan_rules()) as client:
        passes = client.app.state.passes  # type: ignore[attr-defined]
        rates = client.app.state.rules.compiled.ruleset.fast_lane.expected  # type: ignore[attr-defined]
        passes.demand(rates)  # the first look builds it; the changes below are logged
        subs = [buy(client, subscription(f"sub-{n}", fake_clock.now, days=30)) for n in range(4)]
        singles = [buy(client, pass_body(f"single-{n}")) for n in range(3)]
        client.post(f"/v1/passes/{subs[0]['pass_id']}/cancel", headers=billing())
        call(client, passes.consume, singles[0]["pass_id"], "c-1", now=fake_clock.now)
        client.post(
            f"/v1/passes/{subs[1]['pass_id']}/refunds",
            json={"amount": 9900, "currency": "EUR", "reason": "moved abroad"},
            headers=billing(new_key()),
        )
        starts = np.array([MONDAY + 9 * HOUR, fake_clock.now + 40 * 24 * HOUR])
        ends = starts + 8 * HOUR

        running = passes.demand(rates).contacts_per_day(starts, ends)

    # Two subscriptions (0.5/day) and two single-incident passes (1 over 10 days) still grant;
    # in 40 days every pass's validity is over.
    assert running.tolist() == pytest.approx([2 * 0.5 + 2 * 0.1, 0.0])
