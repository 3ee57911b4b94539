"""The simulator, driving the service's own dispatch, agrees with queueing theory and with ciw.

- One tier, one skill, exponential times (M/M/c): the simulated service level is within one
  percentage point of Erlang C, and the interval over seeds is narrow enough for that to mean
  something.
- Two tiers, protections off (pure non-preemptive priority): each tier's mean wait agrees with
  the two-class priority formula (`sla.priority`) and with an independent seeded `ciw`
  simulation of the same queue, within 95 % confidence intervals.

The seeds are fixed, so these tests are deterministic; a warm-up hour from an empty center is
not counted.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Iterator

import ciw
import pytest

from routing_rules.compiled import compile_rules
from routing_rules.validation import validate_rules_text
from simulator.engine import DaySimulation
from simulator.scenario import Scenario
from simulator.stats import Estimate, day_figures, estimate
from sla.erlang import erlang_c
from sla.priority import forecast_two_tiers

pytestmark = pytest.mark.slow

RULES = """
vocabularies:
  segments: [consumer]
  inquiry_types: [billing]
  journey_stages: [established]
  channels: [voice]
  languages: [en]
  skills: [billing]
tiers:
  protection: {max_fast_lane_share: 1, standard_max_wait_seconds: null}
rules:
  - name: billing
    match: {inquiry_type: billing}
    require: {skills: {billing: 1}}
    fallback: {action: keep_waiting}
"""
AGENTS = 20
HANDLE_SECONDS = 300.0
ANSWER_SECONDS = 20


def scenario(per_hour: float, fast_lane_share: float = 0.0) -> Scenario:
    """A 24-hour day of M/M/AGENTS arrivals, no abandonment, first hour not counted."""
    return Scenario.model_validate(
        {
            "name": "validation",
            "start": "00:00",
            "end": "24:00",
            "warmup_minutes": 60,
            "streams": [
                {
                    "name": "calls",
                    "channel": "voice",
                    "segment": "consumer",
                    "inquiry_type": "billing",
                    "journey_stage": "established",
                    "language": "en",
                    "fast_lane_share": fast_lane_share,
                    "per_hour": {str(h): per_hour for h in range(24)},
                }
            ],
            "agent_groups": [
                {
                    "name": "team",
                    "count": AGENTS,
                    "skills": {"billing": 3},
                    "languages": ["en"],
                    "capacity": {"voice": 1},
                    "shifts": [{"start": "00:00", "end": "24:00"}],
                }
            ],
            "handle_time": {
                "default": {"distribution": "exponential", "mean_seconds": HANDLE_SECONDS}
            },
            "service_level_seconds": ANSWER_SECONDS,
        }
    )


def simulate(day: Scenario, seeds: range) -> list[dict[str, float]]:
    """The simulator's figures for each seed."""
    rules = compile_rules(validate_rules_text(RULES).ruleset)
    return [
        day_figures(asyncio.run(DaySimulation(day, rules, policy="optimal", seed=s).run()))
        for s in seeds
    ]


def test_one_tier_service_level_is_within_one_point_of_erlang_c() -> None:
    per_hour = 165.0  # offered load 13.75 erlangs on 20 agents: 69 % occupancy
    figures = simulate(scenario(per_hour), range(1, 41))
    service_level = estimate([f["sla_standard"] for f in figures])
    mean_wait = estimate([f["mean_wait_standard"] for f in figures])

    arrival_rate, service_rate = per_hour / 3600.0, 1.0 / HANDLE_SECONDS
    wait_probability = erlang_c(AGENTS, arrival_rate / service_rate)
    decay = AGENTS * service_rate - arrival_rate
    theory_level = 100.0 * (1.0 - wait_probability * math.exp(-decay * ANSWER_SECONDS))
    theory_wait = wait_probability / decay

    assert service_level.half_width < 1.0, service_level  # precise enough to judge 1 point
    assert abs(service_level.mean - theory_level) <= 1.0, (service_level, theory_level)
    assert service_level.covers(theory_level), (service_level, theory_level)
    assert mean_wait.covers(theory_wait), (mean_wait, theory_wait)


@pytest.fixture
def _keep_global_random_state() -> Iterator[None]:
    # ciw.seed() reseeds the process-wide `random` module; give other tests theirs back.
    state = random.getstate()
    yield
    random.setstate(state)


def ciw_waits(fast_rate: float, standard_rate: float, seeds: range) -> dict[str, Estimate]:
    """Per-tier mean waits of the same queue in ciw (non-preemptive priority), per seed."""
    warm_up, measured, drain = 3600.0, 23 * 3600.0, 4 * 3600.0
    means: dict[str, list[float]] = {"fast_lane": [], "standard": []}
    for seed in seeds:
        network = ciw.create_network(
            arrival_distributions={
                "fast_lane": [ciw.dists.Exponential(fast_rate)],
                "standard": [ciw.dists.Exponential(standard_rate)],
            },
            service_distributions={
                name: [ciw.dists.Exponential(1.0 / HANDLE_SECONDS)]
                for name in ("fast_lane", "standard")
            },
            number_of_servers=[AGENTS],
            priority_classes={"fast_lane": 0, "standard": 1},
        )
        ciw.seed(seed)
        run = ciw.Simulation(network)
        run.simulate_until_max_time(warm_up + measured + drain)
        waits: dict[str, list[float]] = {"fast_lane": [], "standard": []}
        for record in run.get_all_records():
            if warm_up <= record.arrival_date < warm_up + measured:
                waits[record.customer_class].append(record.waiting_time)
        for name, samples in waits.items():
            means[name].append(statistics.fmean(samples))
    return {name: estimate(values) for name, values in means.items()}


@pytest.mark.usefixtures("_keep_global_random_state")
def test_two_tier_waits_agree_with_the_priority_formula_and_with_ciw() -> None:
    per_hour, fast_share = 192.0, 0.2  # 16 erlangs on 20 agents: 80 % occupancy
    figures = simulate(scenario(per_hour, fast_share), range(1, 31))
    ours = {
        tier: estimate([f[f"mean_wait_{tier}"] for f in figures])
        for tier in ("fast_lane", "standard")
    }
    fast_rate, standard_rate = per_hour * fast_share / 3600, per_hour * (1 - fast_share) / 3600
    formula = forecast_two_tiers(
        agents=AGENTS,
        service_rate=1.0 / HANDLE_SECONDS,
        fast_arrival_rate=fast_rate,
        standard_arrival_rate=standard_rate,
    )
    theirs = ciw_waits(fast_rate, standard_rate, range(101, 131))

    assert ours["fast_lane"].covers(formula.fast_mean_wait), (ours, formula)
    assert ours["standard"].covers(formula.standard_mean_wait), (ours, formula)
    assert ours["fast_lane"].mean < ours["standard"].mean / 2  # the priority is real
    for tier in ("fast_lane", "standard"):
        a, b = ours[tier], theirs[tier]
        # The difference of two independent means, with its own 95 % interval.
        assert abs(a.mean - b.mean) <= math.hypot(a.half_width, b.half_width), (tier, a, b)
