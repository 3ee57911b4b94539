"""Passes bought through the billing API put their customers' contacts in the fast lane.

End to end over HTTP: purchase, route, accept, abandon, and what the pass records say after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from tests.conftest import FakeClock, agent, contact, make_settings, put_agents, route, serve

DAY = 86400.0


def buy(
    client: TestClient, billing_headers: dict[str, str], customer: str, kind: str, **fields: Any
) -> dict[str, Any]:
    """Sell a pass to `customer`; the pass as returned."""
    body = {"customer_id": customer, "kind": kind, "price_amount": 1500, "currency": "EUR"}
    body.update(fields)
    headers = {**billing_headers, "Idempotency-Key": f"buy-{customer}-{kind}-{len(fields)}"}
    response = client.post("/v1/passes", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def accept(client: TestClient, headers: dict[str, str], contact_id: str) -> None:
    """The agent accepts the contact's open offer."""
    view = client.get(f"/v1/contacts/{contact_id}", headers=headers).json()
    response = client.post(f"/v1/reservations/{view['reservation_id']}/accept", headers=headers)
    assert response.status_code == 200, response.text


def pass_view(client: TestClient, billing_headers: dict[str, str], pass_id: str) -> dict[str, Any]:
    """A pass as the billing API shows it."""
    response = client.get(f"/v1/passes/{pass_id}", headers=billing_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def consumed_events(client: TestClient) -> list[str]:
    """Pass ids of every `pass.consumed` event in the outbox."""
    client.app.state.writer.flush()  # type: ignore[attr-defined]
    with client.app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            sa.text("SELECT payload FROM outbox WHERE type = 'pass.consumed' ORDER BY seq")
        ).fetchall()
    return [
        (r[0] if isinstance(r[0], dict) else orjson.loads(r[0]))["data"]["pass_id"] for r in rows
    ]


def test_a_customer_with_an_active_subscription_is_served_ahead_of_earlier_contacts(
    client: TestClient,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    now = fake_clock()
    subscription = buy(client, billing_headers, "vip", "subscription", valid_until=now + 365 * DAY)
    put_agents(client, acd_headers, {"a1": agent({"billing": 3})})
    route(client, acd_headers, contact("busy"))
    accept(client, acd_headers, "busy")
    for i in range(3):
        fake_clock.advance(60)
        assert route(client, acd_headers, contact(f"early-{i}"))["tier"] == "standard"
    fake_clock.advance(60)
    decision = route(client, acd_headers, contact("vip-call", customer_id="vip"))
    assert (decision["tier"], decision["queue_position"]) == ("fast_lane", 1)

    client.post("/v1/contacts/busy/complete", headers=acd_headers)
    view = client.get("/v1/contacts/vip-call", headers=acd_headers).json()
    assert (view["status"], view["agent_id"], view["pass_id"]) == (
        "reserved",
        "a1",
        subscription["pass_id"],
    )
    for i in range(3):
        assert client.get(f"/v1/contacts/early-{i}", headers=acd_headers).json()["status"] == (
            "queued"
        )
    accept(client, acd_headers, "vip-call")
    # A subscription is not used up: the customer's next contact is in the fast lane again.
    assert pass_view(client, billing_headers, subscription["pass_id"])["status"] == "active"
    assert route(client, acd_headers, contact("vip-again", customer_id="vip"))["tier"] == (
        "fast_lane"
    )


def test_a_single_incident_pass_is_consumed_once_when_answered_and_not_by_an_abandoned_contact(
    client: TestClient,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    sold = buy(client, billing_headers, "once", "single_incident")
    put_agents(client, acd_headers, {"a1": agent({"billing": 3})})
    route(client, acd_headers, contact("busy"))
    accept(client, acd_headers, "busy")

    # Queued in the fast lane, then the customer hangs up: the pass is not used.
    first = route(client, acd_headers, contact("hung-up", customer_id="once"))
    assert first["tier"] == "fast_lane"
    # While that contact waits it holds the pass: a second contact cannot use it too.
    assert route(client, acd_headers, contact("twin", customer_id="once"))["tier"] == "standard"
    client.post("/v1/contacts/hung-up/abandon", headers=acd_headers)
    assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "active"
    assert consumed_events(client) == []

    # Queued is not consumed either; the agent accepting it is.
    second = route(client, acd_headers, contact("served", customer_id="once"))
    assert second["tier"] == "fast_lane"
    assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "active"
    client.post("/v1/contacts/busy/complete", headers=acd_headers)
    served = client.get("/v1/contacts/served", headers=acd_headers).json()
    assert served["status"] == "reserved", "the fast-lane contact is offered before 'twin'"
    assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "active"
    accept(client, acd_headers, "served")
    used = pass_view(client, billing_headers, sold["pass_id"])
    assert (used["status"], used["contact_id"]) == ("consumed", "served")
    assert consumed_events(client) == [sold["pass_id"]]

    # Used up: the next contact is standard, and nothing consumes the pass again.
    client.post("/v1/contacts/served/complete", headers=acd_headers)
    assert route(client, acd_headers, contact("after", customer_id="once"))["tier"] == "standard"
    assert consumed_events(client) == [sold["pass_id"]]


def test_a_rejected_offer_keeps_the_contact_in_the_fast_lane_and_the_pass_unused(
    client: TestClient,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    sold = buy(client, billing_headers, "picky", "single_incident")
    put_agents(client, acd_headers, {"a1": agent({"billing": 3}), "a2": agent({"billing": 2})})
    decision = route(client, acd_headers, contact("c1", customer_id="picky"))
    assert decision["outcome"] == "assigned"
    reservation = decision["reservation"]["reservation_id"]
    client.post(f"/v1/reservations/{reservation}/reject", headers=acd_headers, json={})
    again = client.get("/v1/contacts/c1", headers=acd_headers).json()
    assert (again["status"], again["agent_id"], again["tier"]) == ("reserved", "a2", "fast_lane")
    assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "active"
    accept(client, acd_headers, "c1")
    assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "consumed"
    assert consumed_events(client) == [sold["pass_id"]]


def test_a_pass_whose_consumption_failed_at_answer_is_settled_at_the_next_start(
    tmp_path: Path,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path)
    with serve(settings) as client:
        sold = buy(client, billing_headers, "crashy", "single_incident")
        put_agents(client, acd_headers, {"a1": agent({"billing": 3})})
        route(client, acd_headers, contact("c1", customer_id="crashy"))

        async def database_down(*args: Any, **kwargs: Any) -> bool:
            raise OperationalError("UPDATE passes", {}, Exception("connection refused"))

        monkeypatch.setattr(client.app.state.passes, "consume", database_down)  # type: ignore[attr-defined]
        accept(client, acd_headers, "c1")  # the answer stands; the consumption did not happen
        assert pass_view(client, billing_headers, sold["pass_id"])["status"] == "active"
        # The process stops before the timer's retry.
    monkeypatch.undo()
    with serve(settings) as client:
        used = pass_view(client, billing_headers, sold["pass_id"])
        assert (used["status"], used["contact_id"]) == ("consumed", "c1")
        assert consumed_events(client) == [sold["pass_id"]]
        assert route(client, acd_headers, contact("c2", customer_id="crashy"))["tier"] == (
            "standard"
        )


def test_a_database_outage_during_a_sale_is_503_and_sells_nothing(
    client: TestClient,
    billing_headers: dict[str, str],
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    real_connect = engine.connect

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(engine, "connect", refused)
    body = {"customer_id": "c", "kind": "single_incident", "price_amount": 900, "currency": "EUR"}
    headers = {**billing_headers, "Idempotency-Key": "order-down"}
    response = client.post("/v1/passes", json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    listed = client.get("/v1/passes?customer_id=c", headers=billing_headers)
    assert listed.status_code == 503
    monkeypatch.setattr(engine, "connect", real_connect)
    assert client.get("/v1/passes?customer_id=c", headers=billing_headers).json()["items"] == []
    # The key was not kept: the same sale goes through once the database is back.
    assert client.post("/v1/passes", json=body, headers=headers).status_code == 201
