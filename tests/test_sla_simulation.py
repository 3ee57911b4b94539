"""The queueing formulas in sla/ agree with an independent discrete-event simulation (ciw).

Each case runs independent seeded replications of a steady-state M/M/c queue, discards a
warm-up period that starts from an empty center, averages the waits of contacts that arrive
inside the measurement window (and lets the run continue long enough after the window for
them to be served), and builds a 95 % Student-t confidence interval across replications.

The seeds are fixed, so the test is deterministic. With the same parameters and other seed
bases the intervals covered the formula as a 95 % interval roughly should, with misses on both
sides (no sign of bias): fast lane 77/80, standard tier 73/80, one-tier mean wait 36/40,
one-tier service level 37/40. The standard tier's slight under-coverage is the usual cost of a
t-interval on 20 right-skewed replication means.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator

import ciw
import pytest

from sla.erlang import forecast_queue
from sla.priority import forecast_two_tiers

pytestmark = pytest.mark.slow

AGENTS = 5
SERVICE_RATE = 1.0
REPLICATIONS = 20
WARM_UP = 200.0
MEASURED = 4_000.0
# Contacts that arrive at the end of the window still need to be answered to be counted.
DRAIN = 60.0
# Two-sided 95 % Student-t quantile for REPLICATIONS − 1 = 19 degrees of freedom.
T_QUANTILE_95_DF19 = 2.093024054408263
# A confidence interval wider than this share of the formula's value would prove nothing.
MAX_RELATIVE_HALF_WIDTH = 0.10


@pytest.fixture(autouse=True)
def _keep_global_random_state() -> Iterator[None]:
    # ciw.seed() reseeds the process-wide `random` module; give other tests theirs back.
    state = random.getstate()
    yield
    random.setstate(state)


def simulate_waits(
    *, arrival_rates: dict[str, float], seed: int, answer_within: float = 0.0
) -> dict[str, tuple[float, float]]:
    """One replication: per class, the mean wait and the share answered within answer_within.

    Classes are served in the order given (the first has priority), non-preemptively.
    """
    network = ciw.create_network(
        arrival_distributions={
            name: [ciw.dists.Exponential(rate)] for name, rate in arrival_rates.items()
        },
        service_distributions={
            name: [ciw.dists.Exponential(SERVICE_RATE)] for name in arrival_rates
        },
        number_of_servers=[AGENTS],
        # A dict (not a tuple with preemption flags) means non-preemptive priority in ciw 3;
        # 0 is served first.
        priority_classes={name: rank for rank, name in enumerate(arrival_rates)},
    )
    ciw.seed(seed)
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_time(WARM_UP + MEASURED + DRAIN)
    waits: dict[str, list[float]] = {name: [] for name in arrival_rates}
    for record in simulation.get_all_records():
        if WARM_UP <= record.arrival_date < WARM_UP + MEASURED:
            waits[record.customer_class].append(record.waiting_time)
    return {
        name: (
            statistics.fmean(samples),
            sum(wait <= answer_within for wait in samples) / len(samples),
        )
        for name, samples in waits.items()
    }


def confidence_interval_95(samples: list[float]) -> tuple[float, float]:
    """Student-t 95 % interval for the mean of independent replication results."""
    assert len(samples) == REPLICATIONS
    mean = statistics.fmean(samples)
    half_width = T_QUANTILE_95_DF19 * statistics.stdev(samples) / math.sqrt(len(samples))
    return mean - half_width, mean + half_width


def assert_inside(interval: tuple[float, float], expected: float, what: str) -> None:
    low, high = interval
    assert low <= expected <= high, (
        f"{what}: formula {expected:.4f} outside CI [{low:.4f}, {high:.4f}]"
    )
    assert (high - low) / 2 <= MAX_RELATIVE_HALF_WIDTH * expected, f"{what}: CI too wide to test"


def test_both_tiers_mean_waits_match_the_priority_formula() -> None:
    forecast = forecast_two_tiers(
        agents=AGENTS, service_rate=SERVICE_RATE, fast_arrival_rate=0.8, standard_arrival_rate=3.2
    )
    runs = [
        simulate_waits(arrival_rates={"fast_lane": 0.8, "standard": 3.2}, seed=7_000 + replication)
        for replication in range(REPLICATIONS)
    ]

    fast_interval = confidence_interval_95([run["fast_lane"][0] for run in runs])
    standard_interval = confidence_interval_95([run["standard"][0] for run in runs])

    assert_inside(fast_interval, forecast.fast_mean_wait, "fast-lane mean wait")
    assert_inside(standard_interval, forecast.standard_mean_wait, "standard mean wait")


def test_one_tier_mean_wait_and_service_level_match_erlang_c() -> None:
    answer_within = 0.5
    forecast = forecast_queue(agents=AGENTS, arrival_rate=4.0, service_rate=SERVICE_RATE)
    runs = [
        simulate_waits(
            arrival_rates={"standard": 4.0}, seed=9_000 + replication, answer_within=answer_within
        )
        for replication in range(REPLICATIONS)
    ]

    wait_interval = confidence_interval_95([run["standard"][0] for run in runs])
    service_level_interval = confidence_interval_95([run["standard"][1] for run in runs])

    assert_inside(wait_interval, forecast.mean_wait, "mean wait")
    assert_inside(service_level_interval, forecast.service_level(answer_within), "service level")
