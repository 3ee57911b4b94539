"""Behaviour that a review of the lifecycle found missing, pinned so it stays fixed."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from service.settings import DEMO_RULES
from service.storage import writer as writer_module
from tests.conftest import FakeClock, agent, contact, make_settings, put_agents, route, serve, tick


def test_an_integer_attribute_beyond_64_bits_does_not_stop_the_database_writes(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # Beyond 2**53 an integer is taken as the number it is (a float), which storage can hold.
    route(client, acd_headers, contact("c-huge", attributes={"tenure_days": 10**23}))
    route(client, acd_headers, contact("c-fine", attributes={"tenure_days": 2**53}))
    app_writer = client.app.state.writer  # type: ignore[attr-defined]
    assert app_writer.flush()
    assert (app_writer.healthy, app_writer.dropped_rows) == (True, 0)
    assert client.get("/readyz").status_code == 200
    stored = client.app.state.routing.archive.contact("c-huge")  # type: ignore[attr-defined]
    assert stored.request["attributes"]["tenure_days"] == 1e23


def test_a_row_that_cannot_be_stored_is_dropped_alone_not_retried_for_ever(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    route(client, acd_headers, contact("c-ok"))
    app_writer = client.app.state.writer  # type: ignore[attr-defined]
    app_writer.flush()
    app_writer.put_decision(
        {
            "decision_id": "poison",
            "contact_id": "c-ok",
            "at": 1.0,
            "outcome": "queued",
            "trigger": "route",
            "agent_id": None,
            "reservation_id": None,
            "rule": "billing",
            "stage": "base",
            "rules_version": 1,
            "method": "none",
            "explanation": {"too_big": 2**70},
        }
    )
    route(client, acd_headers, contact("c-after"))
    assert app_writer.flush()
    assert app_writer.dropped_rows == 1
    assert app_writer.healthy
    assert client.get("/v1/contacts/c-after", headers=acd_headers).status_code == 200


def test_rules_that_drop_a_channel_still_in_use_are_refused_and_nothing_changes(
    client: TestClient,
    acd_headers: dict[str, str],
    admin_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    route(client, acd_headers, contact("c-call", channel="callback"))
    text = DEMO_RULES.read_text().replace(
        "channels: [voice, chat, email, callback]", "channels: [voice, chat, email]"
    )
    refused = client.put(
        "/v1/rules", content=text, headers={**admin_headers, "Content-Type": "application/yaml"}
    )
    assert refused.status_code == 422
    assert "callback" in refused.json()["detail"]
    assert client.get("/v1/rules", headers=admin_headers).json()["version"] == 1
    queue = client.get("/v1/queue", headers=acd_headers).json()
    assert [i["contact_id"] for i in queue["items"]] == ["c-call"]


def test_a_rejected_contact_is_offered_under_the_renamed_rule_not_an_implicit_default(
    client: TestClient,
    acd_headers: dict[str, str],
    admin_headers: dict[str, str],
    fake_clock: FakeClock,
) -> None:
    put_agents(client, acd_headers, {"pro": agent({"billing": 4}), "novice": agent({"sales": 1})})
    offered = route(client, acd_headers, contact("c-bill"))
    assert offered["agent_id"] == "pro"
    renamed = DEMO_RULES.read_text().replace("  - name: billing\n", "  - name: billing-v2\n")
    assert (
        client.put(
            "/v1/rules",
            content=renamed,
            headers={**admin_headers, "Content-Type": "application/yaml"},
        ).status_code
        == 200
    )
    rid = offered["reservation"]["reservation_id"]
    client.post(f"/v1/reservations/{rid}/reject", headers=acd_headers)
    after = client.get("/v1/contacts/c-bill", headers=acd_headers).json()
    # "pro" is excluded for a while and "novice" has no billing skill: the contact waits.
    assert (after["status"], after["rule"], after["agent_id"]) == ("queued", "billing-v2", None)


def test_an_agent_who_turned_a_contact_down_is_offered_it_again_after_the_exclusion(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"only": agent({"billing": 4})})
    offered = route(client, acd_headers, contact("c-again"))
    client.post(
        f"/v1/reservations/{offered['reservation']['reservation_id']}/reject", headers=acd_headers
    )
    assert client.get("/v1/contacts/c-again", headers=acd_headers).json()["status"] == "queued"
    fake_clock.advance(119)
    tick(client)
    assert client.get("/v1/contacts/c-again", headers=acd_headers).json()["status"] == "queued"
    fake_clock.advance(2)
    tick(client)
    again = client.get("/v1/contacts/c-again", headers=acd_headers).json()
    assert (again["status"], again["agent_id"]) == ("reserved", "only")


def test_an_agent_going_on_break_hands_open_offers_to_someone_else(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    put_agents(client, acd_headers, {"first": agent({"billing": 5})})
    offered = route(client, acd_headers, contact("c-hand"))
    assert offered["agent_id"] == "first"
    put_agents(client, acd_headers, {"second": agent({"billing": 3})})
    client.post("/v1/agents/first/status", json={"status": "break"}, headers=acd_headers)
    now = client.get("/v1/contacts/c-hand", headers=acd_headers).json()
    assert (now["status"], now["agent_id"]) == ("reserved", "second")
    late = client.post(
        f"/v1/reservations/{offered['reservation']['reservation_id']}/accept", headers=acd_headers
    )
    assert late.status_code == 404
    assert client.get("/v1/agents/first", headers=acd_headers).json()["load"] == {}


def test_a_waiting_contact_shows_the_stage_it_has_relaxed_to(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    route(client, acd_headers, contact("c-relax"))
    put_agents(client, acd_headers, {"busy": agent({"technical": 1}, status="break")})
    fake_clock.advance(91)
    tick(client)
    queued = client.get("/v1/queue", headers=acd_headers).json()["items"][0]
    shown = client.get("/v1/contacts/c-relax", headers=acd_headers).json()
    assert queued["stage"] == shown["stage"]


def test_a_route_call_is_refused_with_503_when_the_database_backlog_is_full(
    client: TestClient, acd_headers: dict[str, str], fake_clock: FakeClock, monkeypatch
) -> None:
    put_agents(client, acd_headers, {"a1": agent({"billing": 3})})
    monkeypatch.setattr(writer_module, "MAX_PENDING", 0)
    refused = client.post("/v1/route", json=contact("c-full"), headers=acd_headers)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    monkeypatch.setattr(writer_module, "MAX_PENDING", 200_000)
    assert client.get("/v1/contacts/c-full", headers=acd_headers).status_code == 404
    assert client.get("/v1/agents/a1", headers=acd_headers).json()["load"] == {}
    assert route(client, acd_headers, contact("c-full"))["agent_id"] == "a1"


def test_after_a_restart_under_rules_without_its_language_a_contact_is_kept_not_crashed_on(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(DEMO_RULES.read_text())
    settings = make_settings(tmp_path, rules_file=rules_file)
    with serve(settings) as client:
        route(client, acd_headers, contact("c-es", language="es", inquiry_type="sales"))
    rules_file.write_text(
        DEMO_RULES.read_text()
        .replace("languages: [en, es]", "languages: [en]")
        .replace("language: es\n", "segment: consumer\n")
    )
    with serve(settings) as client:
        kept = client.get("/v1/contacts/c-es", headers=acd_headers)
        assert (kept.status_code, kept.json()["status"]) == (200, "queued")
        gone = client.post("/v1/contacts/c-es/abandon", headers=acd_headers)
        assert gone.json()["status"] == "abandoned"


def test_a_contact_id_used_again_after_the_idempotency_window_is_stored_as_the_new_contact(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    settings = make_settings(tmp_path, idempotency_window_seconds=60, contact_memory_seconds=10)
    with serve(settings) as client:
        first = client.post("/v1/route", json=contact("x-1"), headers=acd_headers)
        assert first.status_code == 201
        assert client.post("/v1/contacts/x-1/abandon", headers=acd_headers).status_code == 200
        assert client.post("/v1/contacts/x-1/abandon", headers=acd_headers).status_code == 200
        fake_clock.advance(3600)  # long past the window: the id names a new contact
        client.portal.call(client.app.state.routing.tick)  # type: ignore[union-attr, attr-defined]
        again = client.post("/v1/route", json=contact("x-1"), headers=acd_headers)
        assert again.status_code == 201, again.text
        client.app.state.writer.flush()  # type: ignore[attr-defined]
        engine = client.app.state.engine  # type: ignore[attr-defined]
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT status, created_at FROM contacts WHERE contact_id = 'x-1'")
            ).one()
        assert (row.status, row.created_at) == ("queued", fake_clock.now)
