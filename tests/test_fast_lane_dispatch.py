"""Dual-tier dispatch: the fast lane goes first, within the standard tier's protections.

These tests drive the real service over HTTP. Which customers hold a pass is given by a small
stand-in for the pass desk, so that each test controls tiers exactly; the pass purchase itself
(and its consumption) is covered end to end in test_fast_lane_passes_routing.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import (
    FakeClock,
    agent,
    contact,
    demo_rules_with,
    make_settings,
    metric_value,
    put_agents,
    route,
    serve,
    tick,
)


class FastLaneCustomers:
    """Stands in for the pass desk: customers whose id starts with 'vip' hold a subscription."""

    def __init__(self) -> None:
        self.consumed: list[tuple[str, str]] = []

    def fast_lane_pass(self, customer_id: str, now: float) -> str | None:
        return f"pass-{customer_id}" if customer_id.startswith("vip") else None

    def hold(self, pass_id: str, contact_id: str) -> bool:
        return True  # a subscription: every contact of the customer may use it

    def release(self, pass_id: str, contact_id: str) -> None:
        pass

    async def take(self, customer_id: str, contact_id: str, now: float) -> str | None:
        return self.fast_lane_pass(customer_id, now)  # a subscription: never held by one

    async def let_go(self, pass_id: str, contact_id: str) -> None:
        pass

    async def settle_answered(self, now: float) -> int:
        return 0

    async def restore_holds(self) -> int:
        return 0

    async def consume(self, pass_id: str, contact_id: str, *, now: float) -> None:
        self.consumed.append((pass_id, contact_id))

    async def check_breach(
        self, pass_id: str, contact_id: str, *, channel: str, wait_seconds: float, now: float
    ) -> None:
        pass


def rules_with(tmp_path: Path, tiers_yaml: str) -> Path:
    """The demo rules with only the given `tiers:` section of the fast-lane configuration."""
    path = tmp_path / "rules.yaml"
    path.write_text(demo_rules_with(tiers_yaml))
    return path


@pytest.fixture
def tiered(tmp_path: Path, fake_clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An app whose rules carry the `tiers` YAML given by the test's parametrisation."""
    tiers_yaml: str = request.param
    settings = make_settings(tmp_path, rules_file=rules_with(tmp_path, tiers_yaml))
    with serve(settings) as client:
        desk = FastLaneCustomers()
        client.app.state.routing.passes = desk  # type: ignore[attr-defined]
        yield client


NO_PROTECTION = """
tiers:
  fast_lane: {display_name: Priority line}
  protection: {max_fast_lane_share: 1, standard_max_wait_seconds: null}
"""
SHARE_CAP = """
tiers:
  protection: {max_fast_lane_share: 0.5, share_window_seconds: 86400,
               standard_max_wait_seconds: null}
"""
STARVATION = """
tiers:
  protection: {max_fast_lane_share: 1, standard_max_wait_seconds: 600}
"""
WITH_SLA = """
tiers:
  standard:
    display_name: Standard
    sla: {voice: {answer_seconds: 100, target_percent: 80}}
  fast_lane:
    display_name: Fast lane
    sla: {voice: {answer_seconds: 20, target_percent: 90}}
"""


def _busy_agent(client: TestClient, headers: dict[str, str]) -> str:
    """One billing agent, made busy with a first contact; the id of that contact."""
    put_agents(client, headers, {"a1": agent({"billing": 3})})
    first = route(client, headers, contact("warm-up"))
    assert first["outcome"] == "assigned"
    accept(client, headers, "warm-up")
    return "warm-up"


def accept(client: TestClient, headers: dict[str, str], contact_id: str) -> None:
    """The agent accepts the contact's open offer."""
    reservation = client.get(f"/v1/contacts/{contact_id}", headers=headers).json()
    response = client.post(
        f"/v1/reservations/{reservation['reservation_id']}/accept", headers=headers
    )
    assert response.status_code == 200, response.text


def serve_next(client: TestClient, headers: dict[str, str], finished: str) -> str:
    """Complete `finished`; the contact dispatch offers the freed agent, accepted."""
    before = {e["contact_id"] for e in client.get("/v1/queue", headers=headers).json()["items"]}
    response = client.post(f"/v1/contacts/{finished}/complete", headers=headers)
    assert response.status_code == 200, response.text
    after = {e["contact_id"] for e in client.get("/v1/queue", headers=headers).json()["items"]}
    (offered,) = before - after
    accept(client, headers, offered)
    return offered


@pytest.mark.parametrize("tiered", [NO_PROTECTION], indirect=True, ids=["no-protection"])
def test_a_fast_lane_contact_is_served_ahead_of_earlier_standard_contacts(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    current = _busy_agent(client, acd_headers)
    for i in range(3):
        fake_clock.advance(30)
        assert route(client, acd_headers, contact(f"std-{i}"))["tier"] == "standard"
    fake_clock.advance(30)
    fast = route(client, acd_headers, contact("fast-1", customer_id="vip-1"))
    assert (fast["outcome"], fast["tier"], fast["tier_name"]) == (
        "queued",
        "fast_lane",
        "Priority line",
    )
    assert fast["queue_position"] == 1, "the fast lane queues ahead of the standard tier"
    queue = client.get("/v1/queue", headers=acd_headers).json()["items"]
    assert [e["contact_id"] for e in queue] == ["fast-1", "std-0", "std-1", "std-2"]

    assert serve_next(client, acd_headers, current) == "fast-1"
    assert serve_next(client, acd_headers, "fast-1") == "std-0"
    view = client.get("/v1/contacts/fast-1", headers=acd_headers).json()
    assert view["tier"] == "fast_lane" and view["connected_at"] is not None
    desk: FastLaneCustomers = client.app.state.routing.passes  # type: ignore[attr-defined]
    assert desk.consumed == [("pass-vip-1", "fast-1")], "settled once, when answered"


@pytest.mark.parametrize("tiered", [SHARE_CAP], indirect=True, ids=["share-cap"])
def test_share_cap_holds_while_the_fast_lane_is_flooded(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    current = _busy_agent(client, acd_headers)  # one standard assignment on the ledger
    for i in range(10):
        route(client, acd_headers, contact(f"std-{i}"))
    for i in range(30):
        route(client, acd_headers, contact(f"fast-{i}", customer_id=f"vip-{i}"))
    served = []
    for _ in range(20):
        fake_clock.advance(60)
        current = serve_next(client, acd_headers, current)
        served.append(current)
    fast = [c for c in served if c.startswith("fast")]
    standard = [c for c in served if c.startswith("std")]
    # Counting the warm-up, the fast lane never holds more than half of the assignments.
    assert len(fast) == 10 and len(standard) == 10
    for n in range(1, len(served) + 1):
        assert sum(c.startswith("fast") for c in served[:n]) <= (n + 1) / 2
    # Standard contacts served ahead of waiting fast-lane ones carry the protection's name.
    promoted = {
        c: client.get(f"/v1/contacts/{c}/explain", headers=acd_headers).json()["promoted_by"]
        for c in standard
    }
    assert set(promoted.values()) == {"share_cap"}
    metrics = client.get("/metrics").text
    assert 'skillroute_tier_promotions_total{protection="share_cap"} 10.0' in metrics


@pytest.mark.parametrize("tiered", [STARVATION], indirect=True, ids=["starvation-guard"])
def test_starvation_guard_serves_a_standard_contact_after_its_maximum_wait(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    current = _busy_agent(client, acd_headers)
    route(client, acd_headers, contact("std-old"))
    served = []
    for i in range(12):
        route(client, acd_headers, contact(f"fast-{i}", customer_id=f"vip-{i}"))
        fake_clock.advance(100)
        current = serve_next(client, acd_headers, current)
        served.append(current)
    # 100 s per call: the standard contact waits behind the fast lane until it has waited
    # 600 s, then the guard puts it ahead of the fast-lane contacts still waiting.
    assert served.index("std-old") == 5
    assert all(c.startswith("fast") for c in served[:5])
    explained = client.get("/v1/contacts/std-old/explain", headers=acd_headers).json()
    assert explained["promoted_by"] == "starvation_guard"


@pytest.mark.parametrize("tiered", [NO_PROTECTION], indirect=True, ids=["no-protection"])
def test_without_protections_a_flooded_fast_lane_starves_the_standard_tier(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    """The counterpart of the two tests above: what the protections prevent."""
    client = tiered
    current = _busy_agent(client, acd_headers)
    route(client, acd_headers, contact("std-old"))
    for i in range(12):
        route(client, acd_headers, contact(f"fast-{i}", customer_id=f"vip-{i}"))
    served = []
    for _ in range(12):
        fake_clock.advance(100)
        current = serve_next(client, acd_headers, current)
        served.append(current)
    assert "std-old" not in served


@pytest.mark.parametrize("tiered", [WITH_SLA], indirect=True, ids=["sla"])
def test_contact_events_and_sla_breach_warning_reach_the_outbox(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    _busy_agent(client, acd_headers)
    route(client, acd_headers, contact("std-1"))
    route(client, acd_headers, contact("fast-1", customer_id="vip-1"))
    fake_clock.advance(17)  # 85 % of the fast lane's 20 s
    tick(client)
    fake_clock.advance(70)  # 87 s: 87 % of the standard tier's 100 s
    tick(client)
    tick(client)  # a second tick warns nobody twice
    client.app.state.writer.flush()  # type: ignore[attr-defined]
    with client.app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            sa.text("SELECT type, payload FROM outbox ORDER BY seq")
        ).fetchall()
    events = [(r[0], _json(r[1])["data"].get("contact_id")) for r in rows]
    assert events == [
        ("contact.assigned", "warm-up"),
        ("contact.queued", "std-1"),
        ("contact.queued", "fast-1"),
        ("sla.breach_warning", "fast-1"),
        ("sla.breach_warning", "std-1"),
    ]
    warning = _json(rows[3][1])["data"]
    assert (warning["tier"], warning["answer_seconds"], warning["waited_seconds"]) == (
        "fast_lane",
        20,
        17.0,
    )


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else dict(orjson.loads(value))


@pytest.mark.parametrize("tiered", [NO_PROTECTION], indirect=True, ids=["no-protection"])
def test_a_route_request_cannot_choose_its_own_tier(
    tiered: TestClient, acd_headers: dict[str, str]
) -> None:
    response = tiered.post(
        "/v1/route", json={**contact("self-upgrade"), "tier": "fast_lane"}, headers=acd_headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "tier"
    assert tiered.get("/v1/contacts/self-upgrade", headers=acd_headers).status_code == 404


@pytest.mark.parametrize("tiered", [SHARE_CAP], indirect=True, ids=["share-cap"])
def test_a_promotion_counts_only_when_the_waiting_fast_lane_contact_could_have_had_the_agent(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    current = _busy_agent(client, acd_headers)  # the English agent a1
    put_agents(
        client, acd_headers, {"es-1": agent({"billing": 3}, languages=["es"], status="break")}
    )
    # Fill the window with fast-lane answers so that the cap is engaged.
    for i in range(2):
        route(client, acd_headers, contact(f"fast-{i}", customer_id=f"vip-{i}"))
        fake_clock.advance(10)
        current = serve_next(client, acd_headers, current)
    # A Spanish fast-lane contact waits; no free agent speaks Spanish. An English standard
    # contact then takes a1 under the cap: the fast-lane contact could not have had a1.
    route(client, acd_headers, contact("fast-es", customer_id="vip-es", language="es"))
    route(client, acd_headers, contact("std-en"))
    before = metric_value(client, "skillroute_tier_promotions_total", protection="share_cap")
    fake_clock.advance(10)
    assert serve_next(client, acd_headers, current) == "std-en"
    explained = client.get("/v1/contacts/std-en/explain", headers=acd_headers).json()
    assert explained["promoted_by"] is None
    after = metric_value(client, "skillroute_tier_promotions_total", protection="share_cap")
    assert after == before


def test_the_share_cap_window_survives_a_restart(
    tmp_path: Path, fake_clock: FakeClock, acd_headers: dict[str, str]
) -> None:
    settings = make_settings(tmp_path, rules_file=rules_with(tmp_path, SHARE_CAP))
    with serve(settings) as client:
        client.app.state.routing.passes = FastLaneCustomers()  # type: ignore[attr-defined]
        current = _busy_agent(client, acd_headers)
        for i in range(3):
            route(client, acd_headers, contact(f"fast-{i}", customer_id=f"vip-{i}"))
            fake_clock.advance(10)
            current = serve_next(client, acd_headers, current)
        # Answered so far: 1 standard (warm-up), 3 fast lane: the cap (50 %) is engaged.
    with serve(settings) as client:
        client.app.state.routing.passes = FastLaneCustomers()  # type: ignore[attr-defined]
        route(client, acd_headers, contact("fast-late", customer_id="vip-late"))
        route(client, acd_headers, contact("std-late"))
        fake_clock.advance(10)
        assert serve_next(client, acd_headers, current) == "std-late"


@pytest.mark.parametrize("tiered", [WITH_SLA], indirect=True, ids=["sla"])
def test_a_contact_requeued_after_a_rejected_offer_still_gets_its_breach_warning(
    tiered: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    client = tiered
    put_agents(client, acd_headers, {"a1": agent({"billing": 3})})
    offered = route(client, acd_headers, contact("std-1"))
    client.post("/v1/agents/a1/status", json={"status": "break"}, headers=acd_headers)
    view = client.get("/v1/contacts/std-1", headers=acd_headers).json()
    assert view["status"] == "queued", offered
    fake_clock.advance(85)
    tick(client)
    client.app.state.writer.flush()  # type: ignore[attr-defined]
    with client.app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        warned = connection.execute(
            sa.text("SELECT count(*) FROM outbox WHERE type = 'sla.breach_warning'")
        ).scalar()
    assert warned == 1
