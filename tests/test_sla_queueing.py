"""Erlang C and two-tier priority formulas: textbook values, monotonicity, staffing, ε guard.

Expected Erlang C values are computed here independently with the textbook factorial formula
in exact integer/rational arithmetic, never with the code under test.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from sla.erlang import (
    erlang_b,
    erlang_c,
    forecast_queue,
    staff_for_service_level,
)
from sla.priority import (
    FastLaneCapacity,
    fast_lane_capacity,
    forecast_two_tiers,
    pass_headroom,
)


def factorial_erlang_c(agents: int, offered_load: Fraction) -> Fraction:
    """C(c, a) = (a^c/c! · c/(c−a)) / (Σ_{k<c} a^k/k! + a^c/c! · c/(c−a)), exactly."""
    queued_term = offered_load**agents / math.factorial(agents) * agents / (agents - offered_load)
    idle_terms = sum(
        (offered_load**k / math.factorial(k) for k in range(agents)), start=Fraction(0)
    )
    return queued_term / (idle_terms + queued_term)


def fcfs_mean_wait(agents: int, arrival_rate: float, service_rate: float) -> float:
    """Mean wait of one FCFS queue, Wq = C/(cμ − λ), from the exact reference formula."""
    waiting = float(factorial_erlang_c(agents, Fraction(arrival_rate) / Fraction(service_rate)))
    return waiting / (agents * service_rate - arrival_rate)


# --- Erlang C ---------------------------------------------------------------------------------


def test_two_agents_at_one_erlang_make_one_contact_in_three_wait() -> None:
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-14)
    assert erlang_b(2, 1.0) == pytest.approx(1 / 5, rel=1e-14)


def test_ten_servers_at_six_erlangs_match_the_textbook_figure_of_about_ten_percent() -> None:
    # 120 customers an hour, 3 minutes each, 10 assistants: "probability of waiting about 0.10".
    probability = erlang_c(10, 6.0)

    assert probability == pytest.approx(float(factorial_erlang_c(10, Fraction(6))), rel=1e-12)
    assert round(probability, 2) == 0.10


@pytest.mark.parametrize("agents", [11, 12, 13, 14, 15])
def test_call_center_example_matches_the_factorial_formula(agents: int) -> None:
    # The usual worked example: 100 calls per 30 minutes, 180 s handle time (10 Erlangs),
    # target "answered within 20 s". Rates per second.
    arrival_rate, service_rate, answer_within = 100 / 1800, 1 / 180, 20.0
    expected_waiting = float(factorial_erlang_c(agents, Fraction(10)))

    forecast = forecast_queue(agents=agents, arrival_rate=arrival_rate, service_rate=service_rate)

    assert forecast.stable
    assert forecast.probability_of_wait == pytest.approx(expected_waiting, rel=1e-12)
    assert forecast.mean_wait == pytest.approx(expected_waiting * 180 / (agents - 10), rel=1e-12)
    assert forecast.service_level(answer_within) == pytest.approx(
        1 - expected_waiting * math.exp(-(agents - 10) * answer_within / 180), rel=1e-12
    )


def test_call_center_example_reproduces_the_published_figures() -> None:
    # Published for this example: 11 agents → 68.21 % of calls wait, 38.96 % answered within
    # 20 s; 14 agents are the fewest reaching 80 % within 20 s (88.84 %, ASA 7.8 s).
    eleven = forecast_queue(agents=11, arrival_rate=100 / 1800, service_rate=1 / 180)
    plan = staff_for_service_level(
        arrival_rate=100 / 1800, service_rate=1 / 180, answer_within=20.0, target_service_level=0.8
    )

    assert round(eleven.probability_of_wait, 4) == 0.6821
    assert round(eleven.service_level(20.0), 4) == 0.3896
    assert plan.agents == 14
    assert round(plan.service_level, 4) == 0.8884
    assert round(plan.forecast.mean_wait, 1) == 7.8


@pytest.mark.parametrize(("agents", "offered_load"), [(300, 285), (1000, 950)])
def test_hundreds_of_agents_are_computed_without_overflow(agents: int, offered_load: int) -> None:
    # a^c and c! overflow a float long before c = 300; the reference uses exact integers.
    expected = float(factorial_erlang_c(agents, Fraction(offered_load)))

    assert erlang_c(agents, float(offered_load)) == pytest.approx(expected, rel=1e-10)


def test_more_agents_mean_less_waiting() -> None:
    forecasts = [
        forecast_queue(agents=agents, arrival_rate=40.0, service_rate=1.0)
        for agents in range(41, 70)
    ]

    for fewer, more in itertools.pairwise(forecasts):
        assert more.probability_of_wait < fewer.probability_of_wait
        assert more.mean_wait < fewer.mean_wait
        assert more.service_level(0.05) > fewer.service_level(0.05)


def test_a_center_with_no_contacts_never_keeps_anyone_waiting() -> None:
    forecast = forecast_queue(agents=3, arrival_rate=0.0, service_rate=1.0)

    assert forecast.probability_of_wait == 0.0
    assert forecast.mean_wait == 0.0
    assert forecast.service_level(0.0) == 1.0


@pytest.mark.parametrize("arrival_rate", [5.0, 5.5, 50.0])
def test_load_at_or_above_capacity_is_reported_unstable(arrival_rate: float) -> None:
    forecast = forecast_queue(agents=5, arrival_rate=arrival_rate, service_rate=1.0)

    assert not forecast.stable
    assert forecast.occupancy >= 1.0
    assert forecast.probability_of_wait == 1.0
    assert forecast.mean_wait == math.inf
    assert forecast.service_level(60.0) == 0.0
    assert erlang_c(5, arrival_rate) == 1.0


def test_load_just_below_capacity_is_stable_with_a_long_finite_wait() -> None:
    forecast = forecast_queue(agents=5, arrival_rate=4.999, service_rate=1.0)

    assert forecast.stable
    assert 0.99 < forecast.probability_of_wait < 1.0
    assert forecast.mean_wait == pytest.approx(forecast.probability_of_wait / 0.001, rel=1e-9)


@pytest.mark.parametrize(
    ("arrival_rate", "service_rate", "answer_within", "target"),
    [(4.0, 1.0, 0.5, 0.8), (40.0, 1.0, 0.1, 0.9), (400.0, 1.0, 0.02, 0.95), (1.3, 2.0, 0.0, 0.5)],
)
def test_staffing_returns_the_fewest_agents_meeting_the_target(
    arrival_rate: float, service_rate: float, answer_within: float, target: float
) -> None:
    plan = staff_for_service_level(
        arrival_rate=arrival_rate,
        service_rate=service_rate,
        answer_within=answer_within,
        target_service_level=target,
    )
    assert plan.agents > 1
    one_fewer = forecast_queue(
        agents=plan.agents - 1, arrival_rate=arrival_rate, service_rate=service_rate
    )

    assert plan.service_level >= target
    assert plan.forecast.agents == plan.agents
    assert plan.service_level == plan.forecast.service_level(answer_within)
    assert one_fewer.service_level(answer_within) < target


def test_staffing_with_no_contacts_needs_one_agent() -> None:
    plan = staff_for_service_level(
        arrival_rate=0.0, service_rate=1.0, answer_within=0.0, target_service_level=0.99
    )

    assert plan.agents == 1
    assert plan.service_level == 1.0


QUEUE = {"agents": 2, "arrival_rate": 1.0, "service_rate": 1.0}
STAFFING = {
    "arrival_rate": 1.0,
    "service_rate": 1.0,
    "answer_within": 1.0,
    "target_service_level": 0.8,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agents", 0),
        ("agents", True),
        ("agents", 2.0),
        ("arrival_rate", -1.0),
        ("arrival_rate", math.nan),
        ("service_rate", 0.0),
        ("service_rate", math.inf),
        ("service_rate", "1"),
    ],
)
def test_invalid_queue_input_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        forecast_queue(**{**QUEUE, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("target_service_level", 1.0), ("target_service_level", 0.0), ("answer_within", -1.0)],
)
def test_invalid_staffing_input_is_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        staff_for_service_level(**{**STAFFING, field: value})


def test_a_negative_answer_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="answer_within"):
        forecast_queue(agents=2, arrival_rate=1.0, service_rate=1.0).service_level(-1.0)


def test_a_negative_offered_load_is_refused() -> None:
    with pytest.raises(ValueError, match="offered_load"):
        erlang_b(3, -0.5)


# --- two tiers, fast lane first ---------------------------------------------------------------


def test_two_agents_half_loaded_by_each_tier_match_the_hand_computation() -> None:
    # c = 2, μ = 1, λ_fast = λ_standard = 0.5: a = 1, C = 1/3, W0 = 1/6, σ1 = 1/4, σ2 = 1/2.
    forecast = forecast_two_tiers(
        agents=2, service_rate=1.0, fast_arrival_rate=0.5, standard_arrival_rate=0.5
    )

    assert forecast.fast_mean_wait == pytest.approx(2 / 9, rel=1e-14)
    assert forecast.standard_mean_wait == pytest.approx(4 / 9, rel=1e-14)
    # Without the fast lane: c = 2, a = 0.5 → C = 1/10, Wq = (1/10)/1.5 = 1/15.
    assert forecast.standard_mean_wait_without_fast_lane == pytest.approx(1 / 15, rel=1e-14)
    assert forecast.standard_wait_ratio == pytest.approx(20 / 3, rel=1e-14)


@pytest.mark.parametrize(("agents", "standard_arrival_rate"), [(1, 0.7), (5, 3.2), (120, 110.0)])
def test_without_a_fast_lane_the_standard_tier_waits_as_in_erlang_c(
    agents: int, standard_arrival_rate: float
) -> None:
    forecast = forecast_two_tiers(
        agents=agents,
        service_rate=1.0,
        fast_arrival_rate=0.0,
        standard_arrival_rate=standard_arrival_rate,
    )
    plain = forecast_queue(agents=agents, arrival_rate=standard_arrival_rate, service_rate=1.0)

    assert forecast.standard_mean_wait == pytest.approx(plain.mean_wait, rel=1e-12)
    assert forecast.standard_mean_wait == pytest.approx(
        fcfs_mean_wait(agents, standard_arrival_rate, 1.0), rel=1e-10
    )
    assert forecast.standard_wait_ratio == pytest.approx(1.0, rel=1e-12)


def test_a_fast_lane_alone_waits_as_in_erlang_c() -> None:
    forecast = forecast_two_tiers(
        agents=5, service_rate=1.0, fast_arrival_rate=4.0, standard_arrival_rate=0.0
    )

    assert forecast.fast_mean_wait == pytest.approx(fcfs_mean_wait(5, 4.0, 1.0), rel=1e-12)


@pytest.mark.parametrize(
    ("agents", "service_rate", "fast_arrival_rate", "standard_arrival_rate"),
    [(2, 1.0, 0.5, 0.5), (5, 1.0, 0.8, 3.2), (12, 0.25, 0.4, 2.2), (200, 1 / 300, 0.05, 0.55)],
)
def test_priority_moves_waiting_between_tiers_but_conserves_the_total(
    agents: int, service_rate: float, fast_arrival_rate: float, standard_arrival_rate: float
) -> None:
    total_rate = fast_arrival_rate + standard_arrival_rate
    forecast = forecast_two_tiers(
        agents=agents,
        service_rate=service_rate,
        fast_arrival_rate=fast_arrival_rate,
        standard_arrival_rate=standard_arrival_rate,
    )
    fcfs = forecast_queue(agents=agents, arrival_rate=total_rate, service_rate=service_rate)

    weighted = (
        fast_arrival_rate * forecast.fast_mean_wait
        + standard_arrival_rate * forecast.standard_mean_wait
    ) / total_rate

    assert weighted == pytest.approx(fcfs.mean_wait, rel=1e-12)
    assert forecast.fast_mean_wait < fcfs.mean_wait < forecast.standard_mean_wait
    # PRODUCT.md's shortcut is exact against the FCFS-at-total-rate baseline.
    assert forecast.standard_mean_wait == pytest.approx(
        fcfs.mean_wait / (1 - forecast.fast_occupancy), rel=1e-12
    )


def test_overload_leaves_the_fast_lane_a_finite_wait_and_the_standard_tier_none() -> None:
    forecast = forecast_two_tiers(
        agents=5, service_rate=1.0, fast_arrival_rate=1.0, standard_arrival_rate=4.5
    )

    assert not forecast.stable
    assert forecast.standard_mean_wait == math.inf
    assert forecast.standard_wait_ratio == math.inf
    # Every agent is always busy: a fast-lane contact waits like an M/M/1 served at rate cμ.
    assert forecast.fast_mean_wait == pytest.approx(1 / (5 - 1), rel=1e-14)


@pytest.mark.parametrize(
    ("agents", "standard_arrival_rate", "epsilon"),
    [
        (2, 0.5, 0.1),
        (5, 3.2, 0.1),
        (5, 3.2, 0.5),
        (20, 15.0, 0.05),
        (200, 180.0, 0.1),
        (500, 450.0, 0.2),
    ],
)
def test_the_guard_stops_exactly_where_standard_waits_grow_by_epsilon(
    agents: int, standard_arrival_rate: float, epsilon: float
) -> None:
    capacity = fast_lane_capacity(
        agents=agents,
        service_rate=1.0,
        standard_arrival_rate=standard_arrival_rate,
        max_standard_wait_growth=epsilon,
    )
    limit = (1 + epsilon) * fcfs_mean_wait(agents, standard_arrival_rate, 1.0)

    def standard_wait(fast_rate: float) -> float:
        return forecast_two_tiers(
            agents=agents,
            service_rate=1.0,
            fast_arrival_rate=fast_rate,
            standard_arrival_rate=standard_arrival_rate,
        ).standard_mean_wait

    at_bound = standard_wait(capacity.max_fast_arrival_rate)

    assert capacity.stable
    assert capacity.max_fast_arrival_rate > 0
    assert at_bound == pytest.approx(limit, rel=1e-9)
    assert capacity.standard_mean_wait_at_max == at_bound
    assert at_bound <= (1 + epsilon) * capacity.standard_mean_wait_without_fast_lane
    assert standard_wait(math.nextafter(capacity.max_fast_arrival_rate, math.inf)) > (
        (1 + epsilon) * capacity.standard_mean_wait_without_fast_lane
    )
    assert standard_wait(capacity.max_fast_arrival_rate * (1 + 1e-9)) > limit
    # Against "no fast lane at all" the shortcut ε/(1+ε) oversells; the exact bound is lower.
    assert capacity.max_fast_arrival_rate < capacity.conservation_shortcut_fast_arrival_rate
    assert capacity.conservation_shortcut_fast_arrival_rate == pytest.approx(
        agents * epsilon / (1 + epsilon), rel=1e-14
    )


def test_no_allowed_growth_means_no_fast_lane_capacity() -> None:
    capacity = fast_lane_capacity(
        agents=5, service_rate=1.0, standard_arrival_rate=3.2, max_standard_wait_growth=0.0
    )

    assert capacity.max_fast_arrival_rate == 0.0


def test_an_overloaded_standard_tier_leaves_nothing_to_sell() -> None:
    capacity = fast_lane_capacity(
        agents=5, service_rate=1.0, standard_arrival_rate=5.0, max_standard_wait_growth=0.1
    )

    assert not capacity.stable
    assert capacity.max_fast_arrival_rate == 0.0
    assert capacity.standard_mean_wait_without_fast_lane == math.inf


def _capacity_of(max_fast_arrival_rate: float) -> FastLaneCapacity:
    return FastLaneCapacity(
        agents=5,
        service_rate=1.0,
        standard_arrival_rate=3.2,
        max_standard_wait_growth=0.1,
        stable=True,
        max_fast_arrival_rate=max_fast_arrival_rate,
        standard_mean_wait_without_fast_lane=0.16,
        standard_mean_wait_at_max=0.176,
        conservation_shortcut_fast_arrival_rate=5 * 0.1 / 1.1,
    )


@pytest.mark.parametrize(
    ("committed", "per_pass", "passes"),
    [(0.25, 0.125, 4), (0.3, 0.125, 3), (0.0, 0.0625, 12), (0.75, 0.125, 0), (1.5, 0.125, 0)],
)
def test_sellable_passes_are_the_remaining_fast_lane_rate_in_whole_passes(
    committed: float, per_pass: float, passes: int
) -> None:
    headroom = pass_headroom(
        capacity=_capacity_of(0.75),
        committed_fast_arrival_rate=committed,
        contact_rate_per_pass=per_pass,
    )

    assert headroom.sellable_passes == passes
    assert headroom.sold_out == (passes == 0)
    assert headroom.remaining_fast_arrival_rate == max(0.0, 0.75 - committed)


def test_pass_headroom_from_a_real_guard_never_oversells() -> None:
    capacity = fast_lane_capacity(
        agents=50, service_rate=1 / 300, standard_arrival_rate=0.15, max_standard_wait_growth=0.1
    )
    per_pass = 1 / (30 * 24 * 3600)  # a subscriber who calls about once a month

    headroom = pass_headroom(
        capacity=capacity, committed_fast_arrival_rate=0.0, contact_rate_per_pass=per_pass
    )

    assert headroom.sellable_passes * per_pass <= capacity.max_fast_arrival_rate
    assert (headroom.sellable_passes + 1) * per_pass > capacity.max_fast_arrival_rate


TWO_TIERS = {
    "agents": 2,
    "service_rate": 1.0,
    "fast_arrival_rate": 0.1,
    "standard_arrival_rate": 1.0,
}
GUARD = {
    "agents": 2,
    "service_rate": 1.0,
    "standard_arrival_rate": 1.0,
    "max_standard_wait_growth": 0.1,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agents", 0),
        ("service_rate", -1.0),
        ("fast_arrival_rate", -0.1),
        ("standard_arrival_rate", math.inf),
    ],
)
def test_invalid_two_tier_input_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        forecast_two_tiers(**{**TWO_TIERS, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("standard_arrival_rate", 0.0), ("max_standard_wait_growth", -0.1), ("agents", -3)],
)
def test_invalid_guard_input_is_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        fast_lane_capacity(**{**GUARD, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("committed", "per_pass", "field"),
    [(0.0, 0.0, "contact_rate_per_pass"), (-1.0, 0.1, "committed_fast_arrival_rate")],
)
def test_invalid_pass_headroom_input_is_refused_naming_the_field(
    committed: float, per_pass: float, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        pass_headroom(
            capacity=_capacity_of(0.5),
            committed_fast_arrival_rate=committed,
            contact_rate_per_pass=per_pass,
        )
