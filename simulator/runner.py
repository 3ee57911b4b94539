"""Running a scenario under one or two arms (rule set and policy) over several seeds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from routing_rules.compiled import CompiledRules
from service.performance import PerformanceBook
from simulator.engine import DayResult, DaySimulation, make_demand
from simulator.policies import Policy
from simulator.scenario import Scenario, seconds_of_day
from simulator.stats import Estimate, paired_difference, summarise

MAX_SEEDS = 100
HISTORY_SEED = 100_003  # history day k of seed s is simulated with seed s + k * HISTORY_SEED


@dataclass(frozen=True)
class Arm:
    """One way of running the center: a rule set (by label) and a dispatch policy."""

    label: str
    rules: CompiledRules
    policy: Policy = "optimal"


@dataclass
class ArmResult:
    """The days an arm produced, one per seed, and their figures."""

    arm: Arm
    days: list[DayResult]
    seconds: float
    figures: dict[str, Estimate] = field(default_factory=dict)


@dataclass
class Experiment:
    """One or two arms over the same seeds, and the paired difference when there are two."""

    scenario: Scenario
    seeds: list[int]
    arms: list[ArmResult]
    difference: dict[str, Estimate] | None = None


def expected_contacts(scenario: Scenario, seeds: int) -> int:
    """How many contacts the runs will simulate (exact: the demand of each seed is drawn)."""
    return sum(make_demand(scenario, seed).size for seed in range(1, seeds + 1))


def mean_contacts_per_day(scenario: Scenario) -> float:
    """The expected number of contacts of one simulated day, from the rates alone (no draws)."""
    start, end = seconds_of_day(scenario.start), seconds_of_day(scenario.end)
    total = 0.0
    for stream in scenario.streams:
        for hour, rate in scenario.hourly_rates(stream).items():
            overlap = min(end, (hour + 1) * 3600.0) - max(start, hour * 3600.0)
            total += rate * max(0.0, overlap) / 3600.0
    return total


def quiet_logs() -> None:
    """Keep the dispatcher's slow-solve notices out of a simulation's output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def run_arm(
    scenario: Scenario,
    arm: Arm,
    seeds: list[int],
    *,
    progress: Callable[[int], None] | None = None,
) -> ArmResult:
    """Simulate the scenario's day once per seed under `arm`."""
    started = time.perf_counter()
    days = [asyncio.run(_day(scenario, arm, seed, progress)) for seed in seeds]
    result = ArmResult(arm, days, time.perf_counter() - started)
    result.figures = summarise(days)
    return result


async def _day(
    scenario: Scenario, arm: Arm, seed: int, progress: Callable[[int], None] | None
) -> DayResult:
    """One measured day; with performance routing, after the scenario's history days."""
    book = None
    if arm.rules.ruleset.scoring.performance > 0:
        book = PerformanceBook(arm.rules.ruleset.performance)
        for back in range(scenario.history_days, 0, -1):
            # Earlier days have their own customers (other seeds), the same agents.
            await DaySimulation(
                scenario,
                arm.rules,
                policy=arm.policy,
                seed=seed + HISTORY_SEED * back,
                performance=book,
                floor_seed=seed,
            ).run()
    return await DaySimulation(
        scenario, arm.rules, policy=arm.policy, seed=seed, progress=progress, performance=book
    ).run()


def run_experiment(
    scenario: Scenario,
    arms: list[Arm],
    *,
    seeds: int,
    progress: Callable[[int], None] | None = None,
) -> Experiment:
    """Run every arm on seeds 1..`seeds`; with two arms, their paired difference (2nd - 1st)."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"seeds must be between 1 and {MAX_SEEDS}")
    if not 1 <= len(arms) <= 2:
        raise ValueError("an experiment has one or two arms")
    seed_list = list(range(1, seeds + 1))
    results = [run_arm(scenario, arm, seed_list, progress=progress) for arm in arms]
    difference = paired_difference(results[0].days, results[1].days) if len(results) == 2 else None
    return Experiment(scenario, seed_list, results, difference)
