"""Several app instances on one database and one Redis behave as one service.

Each test runs two apps in this process (as two replicas would run), sharing one SQLite file or
PostgreSQL schema and one Redis key prefix: any replica answers any call about any contact;
a lost Redis is rebuilt from the database; an offer made by a replica that is gone still
expires. The same over real processes: `tests/test_replicas.py`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.conftest import FakeClock, agent, contact, make_settings, put_agents, serve, tick

pytestmark = pytest.mark.integration


def replica_settings(tmp_path: Path, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path,
        database_url=overrides.pop("database_url", None) or f"sqlite:///{tmp_path / 'shared.db'}",
        redis_url=redis_url,
        redis_prefix=prefix,
        **overrides,
    )


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{{{name}}}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def replicas(
    tmp_path: Path, redis_url: str, prefix: str, fake_clock: FakeClock
) -> Iterator[tuple[TestClient, TestClient]]:
    settings = replica_settings(tmp_path, redis_url, prefix)
    with serve(settings) as first, serve(settings) as second:
        yield first, second


def _route(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/route", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _load(client: TestClient, headers: dict[str, str], agent_id: str) -> dict[str, int]:
    response = client.get(f"/v1/agents/{agent_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["load"])


def test_any_replica_answers_any_call_about_a_contact(
    replicas: tuple[TestClient, TestClient], acd_headers: dict[str, str]
) -> None:
    a, b = replicas
    put_agents(a, acd_headers, {"ann": agent({"billing": 5})})
    decision = _route(a, acd_headers, contact("c-1"))
    assert decision["outcome"] == "assigned"
    # The retry reaches the other replica: the first decision, replayed.
    replay = b.post("/v1/route", json=contact("c-1"), headers=acd_headers)
    assert replay.status_code == 200
    assert replay.json() == decision
    assert b.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "reserved"
    accepted = b.post(
        f"/v1/reservations/{decision['reservation']['reservation_id']}/accept", headers=acd_headers
    )
    assert accepted.status_code == 200, accepted.text
    assert a.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "connected"
    assert _load(a, acd_headers, "ann") == _load(b, acd_headers, "ann") == {"voice": 1}
    completed = a.post("/v1/contacts/c-1/complete", headers=acd_headers)
    assert completed.status_code == 200, completed.text
    assert b.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "completed"
    assert _load(b, acd_headers, "ann") == {}
    # Completing again through the other replica changes nothing (and frees no second slot).
    assert b.post("/v1/contacts/c-1/complete", headers=acd_headers).status_code == 200
    assert _load(a, acd_headers, "ann") == {}


def test_a_contact_queued_on_one_replica_is_placed_and_abandoned_through_the_other(
    replicas: tuple[TestClient, TestClient], acd_headers: dict[str, str]
) -> None:
    a, b = replicas
    put_agents(a, acd_headers, {"ann": agent({"billing": 5}, status="break")})
    assert _route(a, acd_headers, contact("c-wait"))["outcome"] == "queued"
    assert _route(a, acd_headers, contact("c-gone"))["outcome"] == "queued"
    assert b.post("/v1/contacts/c-gone/abandon", headers=acd_headers).status_code == 200
    assert a.get("/v1/contacts/c-gone", headers=acd_headers).json()["status"] == "abandoned"
    # The agent comes back through replica B: B's dispatch places A's queued contact.
    response = b.post("/v1/agents/ann/status", json={"status": "available"}, headers=acd_headers)
    assert response.status_code == 200, response.text
    placed = a.get("/v1/contacts/c-wait", headers=acd_headers).json()
    assert (placed["status"], placed["agent_id"]) == ("reserved", "ann")
    assert b.get("/v1/queue", headers=acd_headers).json()["items"] == []


def test_an_offer_made_by_a_replica_that_is_gone_expires_and_is_offered_again(
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    fake_clock: FakeClock,
    acd_headers: dict[str, str],
) -> None:
    settings = replica_settings(tmp_path, redis_url, prefix, reject_exclusion_seconds=0)
    with serve(settings) as b:
        with serve(settings) as a:
            put_agents(a, acd_headers, {"ann": agent({"billing": 5})})
            first = _route(a, acd_headers, contact("c-1"))
            assert first["outcome"] == "assigned"
        # Replica A has stopped; its offer runs out unanswered and B's timer offers again.
        fake_clock.advance(settings.reservation_ttl_seconds + 1)
        tick(b)
        again = b.get("/v1/contacts/c-1", headers=acd_headers).json()
        assert again["status"] == "reserved"
        assert again["agent_id"] == "ann"
        assert again["reservation_id"] != first["reservation"]["reservation_id"]
        expired = b.post(
            f"/v1/reservations/{first['reservation']['reservation_id']}/accept", headers=acd_headers
        )
        assert expired.status_code == 404
        assert _load(b, acd_headers, "ann") == {"voice": 1}


def _wait_ready(client: TestClient, *, want: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"/readyz never answered {want}: {client.get('/readyz').text}")


def test_after_redis_lost_everything_the_state_is_rebuilt_from_the_database(
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    fake_clock: FakeClock,
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
) -> None:
    settings = replica_settings(tmp_path, redis_url, prefix, reservation_ttl_seconds=600)
    with ExitStack() as stack:
        a = stack.enter_context(serve(settings, run_background=True))
        b = stack.enter_context(serve(settings, run_background=True))
        put_agents(
            a,
            acd_headers,
            {
                "ann": agent({"billing": 5}, capacity={"voice": 2}),
                "bob": agent({"billing": 5}, status="break"),
            },
        )
        sold = b.post(
            "/v1/passes",
            json={
                "customer_id": "cust-fast",
                "kind": "single_incident",
                "price_amount": 1500,
                "currency": "EUR",
            },
            headers={**billing_headers, "Idempotency-Key": "k-1"},
        )
        assert sold.status_code == 201, sold.text
        pass_id = sold.json()["pass_id"]
        talking = _route(a, acd_headers, contact("c-talk"))
        assert talking["agent_id"] == "ann"
        accepted = b.post(
            f"/v1/reservations/{talking['reservation']['reservation_id']}/accept",
            headers=acd_headers,
        )
        assert accepted.status_code == 200
        offered = _route(b, acd_headers, contact("c-offer", customer_id="cust-fast"))
        assert (offered["outcome"], offered["tier"]) == ("assigned", "fast_lane")
        queued = _route(a, acd_headers, contact("c-queued", inquiry_type="technical"))
        assert queued["outcome"] == "queued"

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        client.delete(*keys)  # Redis restarted empty

        _wait_ready(a, want=503)
        _wait_ready(a, want=200)
        _wait_ready(b, want=200)
        assert b.get("/v1/contacts/c-talk", headers=acd_headers).json()["status"] == "connected"
        assert _load(b, acd_headers, "ann") == {"voice": 2}  # connected + the open offer
        still = a.get("/v1/contacts/c-offer", headers=acd_headers).json()
        assert (still["status"], still["reservation_id"], still["tier"]) == (
            "reserved",
            offered["reservation"]["reservation_id"],
            "fast_lane",
        )
        waiting = b.get("/v1/queue", headers=acd_headers).json()["items"]
        assert [item["contact_id"] for item in waiting] == ["c-queued"]
        # The pass is still held by its contact: it cannot be cancelled under it.
        refused = a.post(f"/v1/passes/{pass_id}/cancel", headers=billing_headers)
        assert refused.status_code == 409, refused.text
        # And everything still works: the offer is accepted, the contact completes.
        accepted = a.post(
            f"/v1/reservations/{offered['reservation']['reservation_id']}/accept",
            headers=acd_headers,
        )
        assert accepted.status_code == 200, accepted.text
        assert b.post("/v1/contacts/c-talk/complete", headers=acd_headers).status_code == 200
        assert _load(a, acd_headers, "ann") == {"voice": 1}


def test_a_lifecycle_call_while_the_state_is_lost_is_refused_and_changes_nothing(
    replicas: tuple[TestClient, TestClient],
    acd_headers: dict[str, str],
    redis_url: str,
    prefix: str,
) -> None:
    a, _ = replicas
    redis.Redis.from_url(redis_url).delete(f"{{{prefix}}}:epoch")
    refused = a.post("/v1/route", json=contact("c-late"), headers=acd_headers)
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "rebuilt" in refused.json()["detail"]
    assert a.get("/v1/contacts/c-late", headers=acd_headers).status_code == 404


def _buy(client: TestClient, headers: dict[str, str], customer: str) -> str:
    sold = client.post(
        "/v1/passes",
        json={
            "customer_id": customer,
            "kind": "single_incident",
            "price_amount": 1500,
            "currency": "EUR",
        },
        headers={**headers, "Idempotency-Key": f"buy-{customer}"},
    )
    assert sold.status_code == 201, sold.text
    return str(sold.json()["pass_id"])


def test_a_pass_used_up_on_one_replica_is_not_taken_on_another_before_it_learns_of_it(
    replicas: tuple[TestClient, TestClient],
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
) -> None:
    a, b = replicas
    put_agents(a, acd_headers, {"ann": agent({"billing": 5}, capacity={"voice": 3})})
    _buy(a, billing_headers, "cust-once")
    # Replica B's pass index learns of the sale (it refreshes every second; here at once).
    b.portal.call(b.app.state.passes.refresh)  # type: ignore[union-attr, attr-defined]
    first = _route(a, acd_headers, contact("c-1", customer_id="cust-once"))
    assert first["tier"] == "fast_lane"
    accepted = a.post(
        f"/v1/reservations/{first['reservation']['reservation_id']}/accept", headers=acd_headers
    )
    assert accepted.status_code == 200
    # B has not refreshed since: its index still offers the pass, the shared state refuses it.
    second = _route(b, acd_headers, contact("c-2", customer_id="cust-once"))
    assert second["tier"] == "standard"


def test_an_abandon_that_failed_half_way_is_retried_and_frees_the_pass(
    replicas: tuple[TestClient, TestClient],
    acd_headers: dict[str, str],
    billing_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = replicas
    put_agents(a, acd_headers, {"ann": agent({"billing": 5}, status="break")})
    pass_id = _buy(a, billing_headers, "cust-hold")
    waiting = _route(a, acd_headers, contact("c-hold", customer_id="cust-hold"))
    assert (waiting["outcome"], waiting["tier"]) == ("queued", "fast_lane")
    holds = a.app.state.passes._shared_holds  # type: ignore[attr-defined]
    release = holds.release
    calls = {"n": 0}

    async def flaky(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.exceptions.ConnectionError("connection lost")
        await release(*args, **kwargs)

    monkeypatch.setattr(holds, "release", flaky)
    failed = a.post("/v1/contacts/c-hold/abandon", headers=acd_headers)
    assert failed.status_code == 503
    assert failed.headers["Retry-After"]
    assert b.get("/v1/contacts/c-hold", headers=acd_headers).json()["status"] == "queued"
    retried = a.post("/v1/contacts/c-hold/abandon", headers=acd_headers)
    assert retried.status_code == 200
    cancelled = b.post(f"/v1/passes/{pass_id}/cancel", headers=billing_headers)
    assert cancelled.status_code == 200, cancelled.text


def test_nothing_is_dispatched_while_the_shared_state_is_being_rebuilt(
    replicas: tuple[TestClient, TestClient], acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    a, _ = replicas
    put_agents(a, acd_headers, {"ann": agent({"billing": 5}, status="break")})
    assert _route(a, acd_headers, contact("c-1"))["outcome"] == "queued"
    keeper = a.app.state.keeper  # type: ignore[attr-defined]
    routing = a.app.state.routing  # type: ignore[attr-defined]
    keeper.ready = False  # as while another replica rebuilds
    state = a.app.state.state  # type: ignore[attr-defined]
    a.portal.call(state.set_status, "ann", "available", fake_clock.now)  # type: ignore[union-attr]
    assert a.portal.call(partial(routing.dispatch_all, trigger="test")) == 0  # type: ignore[union-attr]
    tick(a)
    assert a.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "queued"
    keeper.ready = True
    assert a.portal.call(partial(routing.dispatch_all, trigger="test")) == 1  # type: ignore[union-attr]
    assert a.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "reserved"
