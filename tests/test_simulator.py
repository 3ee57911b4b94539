"""The simulator: scenario checks, policies on hand-made cases, invariants of a simulated day,
the `skillroute simulate` command and `POST /v1/rules/simulate`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from routing_rules.compiled import compile_rules
from routing_rules.problems import RulesInvalid
from routing_rules.validation import validate_rules_text
from service.cli import app as cli
from service.settings import DEMO_RULES
from service.state.memory import MemoryState
from service.state.records import AgentRecord, WaitingEntry
from simulator.engine import DaySimulation, make_demand
from simulator.loading import load_scenario
from simulator.policies import PolicyDispatcher
from simulator.scenario import Scenario
from simulator.service import EXAMPLE_SCENARIO
from tests.conftest import make_settings, serve

RULES = """
vocabularies:
  segments: [consumer]
  inquiry_types: [billing, sales]
  journey_stages: [established]
  channels: [voice]
  languages: [en]
  skills: [billing, sales]
scoring: {idle: 0.01}
rules:
  - name: billing
    match: {inquiry_type: billing}
    require: {skills: {billing: 1}}
    fallback: {action: keep_waiting}
  - name: sales
    match: {inquiry_type: sales}
    require: {skills: {sales: 1}}
    fallback: {action: keep_waiting}
"""


def small_scenario(**changes: Any) -> dict[str, Any]:
    """Two hours of billing and sales calls on six agents with short patience."""
    document: dict[str, Any] = {
        "name": "small",
        "start": "09:00",
        "end": "11:00",
        "streams": [
            {
                "name": "billing",
                "channel": "voice",
                "segment": "consumer",
                "inquiry_type": "billing",
                "journey_stage": "established",
                "language": "en",
                "per_hour": {"9": 60, "10": 80},
                "fast_lane_share": 0.2,
            },
            {
                "name": "sales",
                "channel": "voice",
                "segment": "consumer",
                "inquiry_type": "sales",
                "journey_stage": "established",
                "language": "en",
                "per_hour": {"9": 30, "10": 30},
            },
        ],
        "agent_groups": [
            {
                "name": "desk",
                "count": 6,
                "skills": {"billing": 3, "sales": 2},
                "languages": ["en"],
                "capacity": {"voice": 1},
                "shifts": [
                    {"start": "09:00", "end": "10:30", "share": 0.5},
                    {"start": "09:30", "end": "11:00", "share": 0.5},
                ],
                "resolution": {"billing": 0.9, "default": 0.5},
                "resolution_spread": 0.1,
            }
        ],
        "handle_time": {"default": {"distribution": "lognormal", "mean_seconds": 240, "cv": 0.8}},
        "patience": {"standard": {"mean_seconds": 120}, "fast_lane": {"mean_seconds": 300}},
        "revenue": {"sales": {"probability": 0.5, "mean_minor": 5000}},
    }
    document.update(changes)
    return document


def compiled() -> Any:
    return compile_rules(validate_rules_text(RULES).ruleset)


def run_day(document: dict[str, Any], policy: str = "optimal", seed: int = 1) -> Any:
    scenario = Scenario.model_validate(document)
    return asyncio.run(DaySimulation(scenario, compiled(), policy=policy, seed=seed).run())  # type: ignore[arg-type]


# ---- scenario documents ------------------------------------------------------------------
def test_scenario_errors_point_at_file_line_and_field() -> None:
    text = yaml.safe_dump(small_scenario(), sort_keys=False)
    text = text.replace("inquiry_type: sales", "inquiry_type: salse", 1)
    ruleset = validate_rules_text(RULES).ruleset
    with pytest.raises(RulesInvalid) as caught:
        load_scenario(text, ruleset, file="day.yaml")
    [problem] = caught.value.problems
    assert problem.file == "day.yaml"
    assert problem.field == "streams[1].inquiry_type"
    assert "salse" in problem.message and "sales" in problem.message
    assert text.splitlines()[problem.line - 1].strip().startswith("inquiry_type: salse")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"end": "08:00"}, ""),
        ({"handle_time": {"default": {"mean_seconds": -1}}}, "handle_time.default.mean_seconds"),
        (
            {
                "profile": {},
                "streams": [{**small_scenario()["streams"][0], "per_hour": None, "daily": 10}],
            },
            "",  # a whole-document check: the message names both fields
        ),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_scenarios_are_refused(change: dict[str, Any], field: str) -> None:
    text = yaml.safe_dump(small_scenario(**change), sort_keys=False)
    with pytest.raises(RulesInvalid) as caught:
        load_scenario(text, validate_rules_text(RULES).ruleset)
    assert any(p.field.startswith(field) for p in caught.value.problems), caught.value.problems


def test_the_example_scenario_is_valid_for_the_demo_rules() -> None:
    ruleset = validate_rules_text(DEMO_RULES.read_text()).ruleset
    scenario = load_scenario(EXAMPLE_SCENARIO.read_text(), ruleset)
    assert sum(a.count for a in scenario.agent_groups) == 200
    assert 18_000 < make_demand(scenario, 1).size < 22_000


# ---- a simulated day ---------------------------------------------------------------------
def test_every_contact_is_answered_abandoned_or_left_and_no_agent_is_over_capacity() -> None:
    day = run_day(small_scenario())
    answered = ~np.isnan(day.answered_at)
    abandoned = ~np.isnan(day.abandoned_at)
    assert not (answered & abandoned).any()
    assert answered.sum() > 0 and abandoned.sum() > 0
    # Nobody waits at the end: every agent's shift ended only after arrivals did, and the
    # short patience clears the rest.
    assert (answered | abandoned).all()
    for row in set(day.agent[answered].tolist()):
        mine = np.flatnonzero(day.agent == row)
        starts = day.answered_at[mine]
        ends = starts + day.demand.handle[mine]
        order = np.argsort(starts)
        assert (starts[order][1:] >= ends[order][:-1] - 1e-9).all(), "two calls at once"
    assert ((day.answered_at - day.demand.arrival)[answered] >= 0).all()
    # Revenue only on resolved sales contacts.
    assert (day.revenue[~day.resolved] == 0).all()


def test_same_seed_same_customers_and_same_result() -> None:
    first, again = run_day(small_scenario()), run_day(small_scenario())
    other_policy = run_day(small_scenario(), policy="longest-idle")
    assert np.array_equal(first.demand.arrival, other_policy.demand.arrival)
    assert np.array_equal(first.demand.handle, other_policy.demand.handle)
    assert np.array_equal(first.answered_at, again.answered_at, equal_nan=True)
    other_seed = run_day(small_scenario(), seed=2)
    assert other_seed.demand.size > 0
    assert not np.array_equal(other_seed.demand.arrival[:10], first.demand.arrival[:10])


def test_each_contact_is_judged_against_its_own_channels_and_tiers_sla() -> None:
    rules = compile_rules(
        validate_rules_text(
            RULES.replace("channels: [voice]", "channels: [voice, chat]")
            + """
tiers:
  standard: {display_name: Standard, sla: {voice: {answer_seconds: 300, target_percent: 80},
                                           chat: {answer_seconds: 60, target_percent: 80}}}
  fast_lane: {display_name: Fast, sla: {voice: {answer_seconds: 30, target_percent: 90}}}
"""
        ).ruleset
    )
    document = small_scenario()
    document["streams"][1]["channel"] = "chat"
    document["agent_groups"][0]["capacity"] = {"voice": 1, "chat": 2}
    day = asyncio.run(DaySimulation(Scenario.model_validate(document), rules, seed=1).run())
    chat = day.demand.stream == 1
    fast = day.demand.fast_lane
    assert (day.target[chat] == 60).all()
    assert (day.target[~chat & ~fast] == 300).all()
    assert (day.target[~chat & fast] == 30).all()
    assert fast[~chat].any()


def test_fast_lane_waits_less_than_standard_under_load() -> None:
    # Nobody hangs up: waits of answered contacts are not thinned by impatience (a tier whose
    # customers give up sooner would otherwise look faster).
    busy = small_scenario(patience={})
    busy["streams"][0]["per_hour"] = {"9": 100, "10": 100}
    days = [run_day(busy, seed=s) for s in (1, 2, 3)]
    fast = np.concatenate([(d.answered_at - d.demand.arrival)[d.demand.fast_lane] for d in days])
    standard = np.concatenate(
        [(d.answered_at - d.demand.arrival)[~d.demand.fast_lane] for d in days]
    )
    assert np.nanmean(fast) < np.nanmean(standard) / 2


# ---- policies ----------------------------------------------------------------------------
async def _placed(
    policy: str, entries: list[WaitingEntry], agents: list[AgentRecord]
) -> dict[str, str]:
    rules = compiled()
    state = MemoryState(rules)
    for agent in agents:
        await state.put_agent(agent)
    for entry in entries:
        await state.add_waiting(entry)
    dispatcher = PolicyDispatcher(state, policy=policy)  # type: ignore[arg-type]
    result = await dispatcher.dispatch(rules, "voice", trigger="test", now=1000.0)
    return {p.entry.contact_id: p.reservation.agent_id for p in result.placements}


def _agent(agent_id: str, skills: dict[str, int], *, idle_since: float) -> AgentRecord:
    return AgentRecord(agent_id, agent_id, skills, ["en"], {"voice": 1}, "available", idle_since)


def _entry(contact_id: str, inquiry: str, at: float) -> WaitingEntry:
    from routing_rules.compiled import ContactFacts

    facts = ContactFacts("voice", "consumer", inquiry, "established", "en")
    return WaitingEntry(contact_id, facts, "voice", "en", inquiry, 0, 0, at, at, at)


def test_policies_on_a_case_where_first_come_best_pick_strands_a_contact() -> None:
    # "both" can take billing and sales; "billing-only" only billing. The first contact (billing)
    # prefers "both" (higher skill), which leaves the sales contact with nobody.
    agents = [
        _agent("both", {"billing": 5, "sales": 3}, idle_since=990.0),
        _agent("billing-only", {"billing": 1}, idle_since=0.0),
    ]
    entries = [_entry("b", "billing", 10.0), _entry("s", "sales", 20.0)]
    optimal = asyncio.run(_placed("optimal", entries, agents))
    greedy = asyncio.run(_placed("greedy", entries, agents))
    longest_idle = asyncio.run(_placed("longest-idle", entries, agents))
    assert optimal == {"b": "billing-only", "s": "both"}  # serves both
    assert greedy == {"b": "both"}  # the oldest contact took its best agent
    # The billing contact gets the agent idle longest (billing-only, idle since 0).
    assert longest_idle == {"b": "billing-only", "s": "both"}


def test_longest_idle_ignores_skill_level_and_greedy_does_not() -> None:
    agents = [
        _agent("expert", {"billing": 5}, idle_since=900.0),
        _agent("novice", {"billing": 1}, idle_since=100.0),
    ]
    entries = [_entry("b", "billing", 10.0)]
    assert asyncio.run(_placed("greedy", entries, agents)) == {"b": "expert"}
    assert asyncio.run(_placed("longest-idle", entries, agents)) == {"b": "novice"}


# ---- command and endpoint ----------------------------------------------------------------
def test_simulate_command_compares_two_policies_and_writes_the_reports(tmp_path: Path) -> None:
    scenario = tmp_path / "day.yaml"
    scenario.write_text(yaml.safe_dump(small_scenario()))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        ["simulate", str(scenario), "--rules", str(rules), "--compare-policy", "longest-idle",
         "--seeds", "3", "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| % within SLA, standard |" in result.stdout
    assert "longest-idle − optimal" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert [a["policy"] for a in report["arms"]] == ["optimal", "longest-idle"]
    assert report["difference"]["offered"]["mean"] == 0  # same customers in both arms
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 2 and "<table>" in page


def test_simulate_command_reports_bad_input_with_exit_1(tmp_path: Path) -> None:
    scenario = tmp_path / "day.yaml"
    scenario.write_text("streams: [")
    result = CliRunner().invoke(cli, ["simulate", str(scenario), "--no-progress"])
    assert result.exit_code == 1
    assert "day.yaml:1" in result.output and "YAML syntax" in result.output
    bad = CliRunner().invoke(cli, ["simulate", str(scenario), "--policy", "random"])
    assert bad.exit_code == 2 and "unknown policy" in bad.output


def test_rules_simulate_endpoint_runs_a_draft_against_the_active_rules(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    draft = DEMO_RULES.read_text().replace("idle: 0.01 ", "idle: 0.5 ")
    scenario = yaml.safe_dump(
        small_scenario(
            streams=[
                {
                    "name": "billing",
                    "channel": "voice",
                    "segment": "consumer",
                    "inquiry_type": "billing",
                    "journey_stage": "established",
                    "language": "en",
                    "per_hour": {"9": 60, "10": 60},
                }
            ]
        )
    )
    answer = client.post(
        "/v1/rules/simulate",
        json={"rules": draft, "scenario": scenario, "seeds": 2},
        headers=admin_headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [a["label"] for a in body["arms"]] == ["active", "draft"]
    assert body["difference"]["offered"]["mean"] == 0
    assert "| figure |" in body["markdown"]
    # Nothing changed: the active rules are the same version.
    assert client.get("/v1/rules", headers=admin_headers).json()["version"] == 1


def test_rules_simulate_endpoint_refuses_bad_input_with_located_errors(
    client: TestClient, admin_headers: dict[str, str], acd_headers: dict[str, str]
) -> None:
    bad_rules = client.post(
        "/v1/rules/simulate", json={"rules": "vocabularies: 3"}, headers=admin_headers
    )
    assert bad_rules.status_code == 422
    assert bad_rules.json()["errors"][0]["file"] == "draft"
    bad_scenario = client.post(
        "/v1/rules/simulate",
        json={"rules": DEMO_RULES.read_text(), "scenario": "name: x\nstreams: []\n"},
        headers=admin_headers,
    )
    assert bad_scenario.status_code == 422
    assert {e["file"] for e in bad_scenario.json()["errors"]} == {"scenario"}
    too_many = client.post(
        "/v1/rules/simulate",
        json={"rules": DEMO_RULES.read_text(), "seeds": 21},
        headers=admin_headers,
    )
    assert too_many.status_code == 422
    extra = client.post(
        "/v1/rules/simulate", json={"rules": "x", "surprise": 1}, headers=admin_headers
    )
    assert extra.status_code == 422
    assert (
        client.post("/v1/rules/simulate", json={"rules": "x"}, headers=acd_headers).status_code
        == 403
    )


def test_rules_simulate_endpoint_refuses_runs_over_the_contact_limit(
    tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    with serve(make_settings(tmp_path, simulation_max_contacts=1000)) as client:
        answer = client.post(
            "/v1/rules/simulate",
            json={"rules": DEMO_RULES.read_text(), "seeds": 1},
            headers=admin_headers,
        )
    assert answer.status_code == 422
    assert "more than the limit of 1000" in answer.json()["detail"]


# ---- the API's worker ----------------------------------------------------------------------
def _request(seeds: int = 1) -> Any:
    from simulator.service import SimulationRequest

    return SimulationRequest(
        draft=RULES,
        active=None,
        scenario=yaml.safe_dump(small_scenario()),
        policy="optimal",
        seeds=seeds,
    )


def test_the_worker_answers_runs_one_at_a_time_and_stops_one_over_its_time_limit() -> None:
    from simulator.service import SimulationBusy, SimulationTimedOut, SimulationWorker

    async def scenario() -> None:
        worker = SimulationWorker(time_limit=120.0)
        try:
            first = asyncio.create_task(worker.run(_request(seeds=2)))
            await asyncio.sleep(0.1)
            with pytest.raises(SimulationBusy):
                await worker.run(_request())
            report = await first
            assert report["arms"][0]["label"] == "draft" and report["seeds"] == [1, 2]
        finally:
            worker.close()
        slow = SimulationWorker(time_limit=0.05)
        try:
            with pytest.raises(SimulationTimedOut):
                await slow.run(_request())
            assert slow._pool is None  # the worker process was stopped
            assert not slow._busy.locked()
        finally:
            slow.close()

    asyncio.run(scenario())


def test_a_cancelled_run_stops_its_worker_and_frees_the_next_run() -> None:
    from simulator.service import SimulationWorker

    async def scenario() -> None:
        worker = SimulationWorker(time_limit=120.0)
        try:
            run = asyncio.create_task(worker.run(_request(seeds=3)))
            await asyncio.sleep(1.0)
            pool = worker._pool
            assert pool is not None
            processes = list((pool._processes or {}).values())
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            assert worker._pool is None and not worker._busy.locked()
            assert all(not p.is_alive() for p in processes)
            report = await worker.run(_request())
            assert report["seeds"] == [1]
        finally:
            worker.close()

    asyncio.run(scenario())


def test_a_run_that_fails_in_the_worker_is_a_clear_error() -> None:
    from simulator.service import SimulationFailed, SimulationWorker

    async def scenario() -> None:
        worker = SimulationWorker(time_limit=120.0)
        try:
            bad = _request()
            object.__setattr__(bad, "draft", "vocabularies: 3")  # skips the request's checks
            with pytest.raises(SimulationFailed, match="RulesInvalid"):
                await worker.run(bad)
        finally:
            worker.close()

    asyncio.run(scenario())


def test_the_contact_limit_counts_seeds_arms_and_history_days_without_drawing() -> None:
    from simulator.runner import mean_contacts_per_day
    from simulator.service import simulated_contacts

    scenario = Scenario.model_validate(small_scenario(history_days=2))
    per_day = mean_contacts_per_day(scenario)
    assert per_day == pytest.approx(60 + 80 + 30 + 30)  # billing 60+80, sales 30+30 per hour
    ruleset = validate_rules_text(RULES).ruleset
    request = _request(seeds=3)
    assert simulated_contacts(ruleset, scenario, request) == pytest.approx(3 * per_day)
    weighted = validate_rules_text(
        RULES.replace("scoring: {idle: 0.01}", "scoring: {idle: 0.01, performance: 2}")
    ).ruleset
    assert simulated_contacts(weighted, scenario, request) == pytest.approx(9 * per_day)
    huge = Scenario.model_validate(
        small_scenario(streams=[{**small_scenario()["streams"][0], "per_hour": {"9": 10_000_000}}])
    )
    assert simulated_contacts(ruleset, huge, request) == pytest.approx(3e7)  # no draw made
