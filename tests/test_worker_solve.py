"""Solves too large to run inline go to a worker process: its start-up never eats the solve
deadline, and a worker that overran its deadline is killed and replaced."""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from routing_rules.scoring import Arcs
from service.dispatch import Dispatcher
from tests.conftest import (
    FakeClock,
    agent,
    contact,
    make_settings,
    metric_value,
    put_agents,
    route,
    serve,
)

FALLBACKS = "skillroute_solve_fallbacks_total"


def _two_contacts_meet_two_returning_agents(
    client: TestClient, headers: dict[str, str], name: str
) -> dict[str, str | None]:
    """A billing and a cancellation contact wait; star and steady come back from break.

    Only star can take the cancellation, so the score-maximising solve gives billing to
    steady; greedy (arrival order) would give billing to star and leave the cancellation.
    Returns the agent each contact got and the method the explanation names.
    """
    star, steady = f"star-{name}", f"steady-{name}"
    put_agents(
        client,
        headers,
        {
            star: agent({"billing": 5, "retention": 4}, status="break"),
            steady: agent({"billing": 2}, status="break"),
        },
    )
    route(client, headers, contact(f"billing-{name}", inquiry_type="billing"))
    route(client, headers, contact(f"cancel-{name}", inquiry_type="cancellation"))
    response = client.post(
        "/v1/agents/status",
        headers=headers,
        json={
            "changes": [
                {"agent_id": star, "status": "available"},
                {"agent_id": steady, "status": "available"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    outcome: dict[str, str | None] = {}
    for contact_id in (f"billing-{name}", f"cancel-{name}"):
        body = client.get(f"/v1/contacts/{contact_id}", headers=headers).json()
        outcome[contact_id] = body["agent_id"]
    explained = client.get(f"/v1/contacts/billing-{name}/explain", headers=headers).json()
    outcome["method"] = explained["method"]
    return outcome


def _dispatcher(client: TestClient) -> Dispatcher:
    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]
    assert isinstance(dispatcher, Dispatcher)
    return dispatcher


def test_consecutive_worker_solves_within_a_one_second_limit_never_fall_back_to_greedy(
    tmp_path: Path, acd_headers: dict[str, str], fake_clock: FakeClock
) -> None:
    # Nothing warms the worker beforehand: the first solve starts it, and starting Python and
    # importing OR-Tools (about a second) must not count against the solve's own deadline.
    settings = make_settings(tmp_path, solve_inline_max_arcs=0, solve_time_limit_seconds=1.0)
    with serve(settings) as client:
        fallbacks = metric_value(client, FALLBACKS)
        for name in ("a", "b", "c", "d"):
            assert _two_contacts_meet_two_returning_agents(client, acd_headers, name) == {
                f"billing-{name}": f"steady-{name}",
                f"cancel-{name}": f"star-{name}",
                "method": "mcf",
            }
        assert metric_value(client, FALLBACKS) == fallbacks


def _a_solve_that_keeps_the_worker_busy() -> tuple[int, np.ndarray, Arcs]:
    """800 contacts, each eligible for all of 800 one-slot agents: ~0.6 s of min-cost flow."""
    n = 800
    contacts = np.repeat(np.arange(n, dtype=np.int64), n)
    agents = np.tile(np.arange(n, dtype=np.int64), n)
    values = (contacts * 7919 + agents * 104729) % 1000 + 1
    return n, np.ones(n, dtype=np.int64), Arcs(contacts, agents, values)


def test_a_worker_past_its_deadline_is_killed_and_a_fresh_worker_solves_the_next_dispatch(
    tmp_path: Path,
    acd_headers: dict[str, str],
    fake_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path, solve_inline_max_arcs=0, solve_time_limit_seconds=0.001)
    children_before = set(multiprocessing.active_children())
    with serve(settings) as client:
        dispatcher = _dispatcher(client)
        assert client.portal is not None
        assert client.portal.call(dispatcher.warm) is True
        first_workers = set(multiprocessing.active_children()) - children_before
        assert len(first_workers) == 1
        fallbacks = metric_value(client, FALLBACKS)

        # A real dispatch this size would take a long time to set up through the API; the
        # solve step alone is what the deadline is about. 1 ms is far too short for it.
        n, capacity, arcs = _a_solve_that_keeps_the_worker_busy()
        late = client.portal.call(dispatcher._solve, n, capacity, arcs, "voice")
        assert late.method == "greedy"
        assert metric_value(client, FALLBACKS) == fallbacks + 1
        # The worker that overran was killed, not left solving on a core.
        assert [w.exitcode for w in first_workers] == [-signal.SIGKILL]
        assert not first_workers & set(multiprocessing.active_children())

        # The setting is read once at start; a generous limit for the rest of the test.
        monkeypatch.setattr(dispatcher, "_time_limit", 60.0)
        assert _two_contacts_meet_two_returning_agents(client, acd_headers, "fresh") == {
            "billing-fresh": "steady-fresh",
            "cancel-fresh": "star-fresh",
            "method": "mcf",
        }
        assert metric_value(client, FALLBACKS) == fallbacks + 1
        second_workers = set(multiprocessing.active_children()) - children_before
        assert len(second_workers) == 1
        assert not second_workers & first_workers

    # Stopping the app kills the worker too.
    assert [w.exitcode for w in second_workers] == [-signal.SIGKILL]
    assert set(multiprocessing.active_children()) <= children_before
