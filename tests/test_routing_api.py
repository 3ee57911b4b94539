"""Routing behaviour through the HTTP API, as an ACD sees it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import FakeClock, agent, contact, tick


def put_agents(client: TestClient, headers: dict[str, str], agents: dict[str, dict]) -> None:
    for agent_id, body in agents.items():
        response = client.put(f"/v1/agents/{agent_id}", json=body, headers=headers)
        assert response.status_code in (200, 201), response.text


def route(client: TestClient, headers: dict[str, str], body: dict) -> dict:
    response = client.post("/v1/route", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_onboarding_setup_contact_reaches_onboarding_agent_while_general_agents_are_free(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(
        client,
        acd_headers,
        {
            "general-1": agent({"billing": 5, "technical": 5, "sales": 5}),
            "general-2": agent({"billing": 4, "technical": 4}),
            "onboarder": agent({"onboarding": 4, "technical": 2}),
            "general-3": agent({"technical": 5}),
        },
    )
    decision = route(
        client, acd_headers, contact("c-onb", inquiry_type="setup", journey_stage="onboarding")
    )
    assert decision["outcome"] == "assigned"
    assert decision["agent_id"] == "onboarder"
    assert decision["rule"] == "onboarding"
    assert decision["stage"] == "base"


def test_cancellation_reaches_retention_desk(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(
        client,
        acd_headers,
        {
            "billing-ace": agent({"billing": 5, "sales": 5}),
            "retainer": agent({"retention": 4}),
            "tech": agent({"technical": 5}),
        },
    )
    decision = route(client, acd_headers, contact("c-cancel", inquiry_type="cancellation"))
    assert (decision["outcome"], decision["agent_id"], decision["rule"]) == (
        "assigned",
        "retainer",
        "cancellation",
    )


def test_after_relaxation_time_a_partially_skilled_agent_takes_the_waiting_contact(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # Onboarding requires onboarding >= 3; after 60 s any onboarding level will do.
    put_agents(client, acd_headers, {"junior": agent({"onboarding": 1, "technical": 1})})
    first = route(
        client, acd_headers, contact("c-wait", inquiry_type="technical", journey_stage="onboarding")
    )
    assert first["outcome"] == "queued"
    assert first["queue_position"] == 1

    fake_clock.advance(59)
    tick(client)
    assert client.get("/v1/contacts/c-wait", headers=acd_headers).json()["status"] == "queued"

    fake_clock.advance(2)
    tick(client)
    status = client.get("/v1/contacts/c-wait", headers=acd_headers).json()
    assert (status["status"], status["agent_id"], status["stage"]) == (
        "reserved",
        "junior",
        "any-onboarding",
    )


def test_bulk_status_change_yields_the_score_maximising_assignment_not_first_come_greedy(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # Both agents are on break. "star" is the better billing agent and the only one who can
    # take a cancellation; "steady" can take billing only.
    put_agents(
        client,
        acd_headers,
        {
            "star": agent({"billing": 5, "retention": 4}, status="break"),
            "steady": agent({"billing": 2}, status="break"),
        },
    )
    billing = route(client, acd_headers, contact("c-billing", inquiry_type="billing"))
    fake_clock.advance(1)
    cancel = route(client, acd_headers, contact("c-cancel", inquiry_type="cancellation"))
    assert billing["outcome"] == cancel["outcome"] == "queued"

    # First come, first served would give "star" to the billing contact (its best match) and
    # leave the cancellation waiting. One dispatch over both serves both.
    response = client.post(
        "/v1/agents/status",
        headers=acd_headers,
        json={
            "changes": [
                {"agent_id": "star", "status": "available"},
                {"agent_id": "steady", "status": "available"},
            ]
        },
    )
    assert response.status_code == 200
    assert response.json() == {"updated": 2, "assigned": 2}
    got = {
        cid: client.get(f"/v1/contacts/{cid}", headers=acd_headers).json()["agent_id"]
        for cid in ("c-billing", "c-cancel")
    }
    assert got == {"c-billing": "steady", "c-cancel": "star"}


def test_a_retried_route_returns_the_same_decision_and_creates_nothing(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"a1": agent({"billing": 3}), "a2": agent({"billing": 3})})
    body = contact("c-retry")
    first = client.post("/v1/route", json=body, headers=acd_headers)
    second = client.post("/v1/route", json=body, headers=acd_headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.headers["Idempotent-Replay"] == "true"
    assert second.json() == first.json()
    agents = client.get("/v1/agents", headers=acd_headers).json()["items"]
    assert sum(sum(a["load"].values()) for a in agents) == 1

    changed = client.post("/v1/route", json={**body, "inquiry_type": "sales"}, headers=acd_headers)
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/problem+json"


def test_rejected_reservation_goes_to_another_agent_and_never_back(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"b1": agent({"billing": 5}), "b2": agent({"billing": 3})})
    decision = route(client, acd_headers, contact("c-rej"))
    assert decision["agent_id"] == "b1"
    rid = decision["reservation"]["reservation_id"]
    rejected = client.post(
        f"/v1/reservations/{rid}/reject", json={"reason": "on a call"}, headers=acd_headers
    )
    assert rejected.status_code == 200
    status = client.get("/v1/contacts/c-rej", headers=acd_headers).json()
    assert (status["status"], status["agent_id"]) == ("reserved", "b2")
    again = client.post(f"/v1/reservations/{rid}/accept", headers=acd_headers)
    assert again.status_code == 404


def test_expired_reservation_is_offered_to_another_agent(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"b1": agent({"billing": 5}), "b2": agent({"billing": 3})})
    decision = route(client, acd_headers, contact("c-exp"))
    assert decision["agent_id"] == "b1"
    fake_clock.advance(decision["reservation"]["expires_in_seconds"] + 0.1)
    tick(client)
    status = client.get("/v1/contacts/c-exp", headers=acd_headers).json()
    assert (status["status"], status["agent_id"]) == ("reserved", "b2")
    b1 = client.get("/v1/agents/b1", headers=acd_headers).json()
    assert b1["load"] == {}
    assert b1["free"] == {"voice": 1}


def test_completing_a_contact_frees_the_agent_for_the_next_in_queue(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"solo": agent({"billing": 3})})
    first = route(client, acd_headers, contact("c-1"))
    second = route(client, acd_headers, contact("c-2"))
    assert (first["outcome"], second["outcome"]) == ("assigned", "queued")
    accepted = client.post(
        f"/v1/reservations/{first['reservation']['reservation_id']}/accept", headers=acd_headers
    )
    assert accepted.json()["contact_status"] == "connected"
    done = client.post("/v1/contacts/c-1/complete", headers=acd_headers)
    assert done.json()["status"] == "completed"
    assert client.get("/v1/contacts/c-2", headers=acd_headers).json()["agent_id"] == "solo"
    # Completing twice is harmless; abandoning a completed contact is a conflict.
    assert client.post("/v1/contacts/c-1/complete", headers=acd_headers).status_code == 200
    assert client.post("/v1/contacts/c-1/abandon", headers=acd_headers).status_code == 409


def test_abandoned_queued_contact_leaves_the_queue(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    route(client, acd_headers, contact("c-gone"))
    assert client.get("/v1/queue", headers=acd_headers).json()["waiting"] == 1
    gone = client.post("/v1/contacts/c-gone/abandon", headers=acd_headers)
    assert gone.json()["status"] == "abandoned"
    assert client.get("/v1/queue", headers=acd_headers).json()["waiting"] == 0
    put_agents(client, acd_headers, {"late": agent({"billing": 3})})
    assert client.get("/v1/agents/late", headers=acd_headers).json()["load"] == {}


def test_explain_lists_candidates_with_score_terms_rule_stage_and_version(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(
        client,
        acd_headers,
        {"b1": agent({"billing": 5}), "b2": agent({"billing": 2}), "t1": agent({"technical": 5})},
    )
    route(client, acd_headers, contact("c-why"))
    explained = client.get("/v1/contacts/c-why/explain", headers=acd_headers).json()
    assert explained["rule"] == "billing"
    assert explained["stage"] == "base"
    assert explained["rules_version"] == 1
    assert explained["requirements"]["skills"] == {"billing": 2}
    assert explained["chosen_agent_id"] == "b1"
    assert [c["agent_id"] for c in explained["candidates"]] == ["b1", "b2"]
    best, other = explained["candidates"]
    assert best["skill_fit"] == 2.0 and other["skill_fit"] == 0.8
    assert best["total"] > other["total"]
    assert len(explained["decisions"]) == 1


def test_explain_of_a_waiting_contact_says_why_free_agents_are_not_eligible(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(
        client,
        acd_headers,
        {"t1": agent({"technical": 5}), "es": agent({"billing": 5}, languages=["es"])},
    )
    route(client, acd_headers, contact("c-stuck"))
    explained = client.get("/v1/contacts/c-stuck/explain", headers=acd_headers).json()
    reasons = {c["agent_id"]: c["reason"] for c in explained["candidates"]}
    assert reasons == {
        "t1": "skill billing level 0 < required 2",
        "es": "does not speak the contact's language",
    }


def test_queue_snapshot_orders_by_priority_then_age(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    route(client, acd_headers, contact("c-sales", inquiry_type="sales"))
    fake_clock.advance(5)
    route(client, acd_headers, contact("c-cancel", inquiry_type="cancellation"))
    fake_clock.advance(5)
    snapshot = client.get("/v1/queue", headers=acd_headers).json()
    assert [i["contact_id"] for i in snapshot["items"]] == ["c-cancel", "c-sales"]
    assert [i["wait_seconds"] for i in snapshot["items"]] == [5.0, 10.0]
    assert snapshot["by_channel"] == {"voice": 2}


def test_an_agent_over_capacity_is_never_offered_more(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"chat": agent({"billing": 3}, capacity={"chat": 2})})
    outcomes = [
        route(client, acd_headers, contact(f"c{i}", channel="chat"))["outcome"] for i in range(4)
    ]
    assert outcomes == ["assigned", "assigned", "queued", "queued"]
    assert client.get("/v1/agents/chat", headers=acd_headers).json()["load"] == {"chat": 2}
