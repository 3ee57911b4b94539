"""Erlang C: waiting, service level and staffing for one queue of interchangeable agents.

The model is M/M/c with infinite patience: Poisson arrivals at rate λ, exponential handle times
at rate μ per agent, c agents, first come first served. Rates may use any time unit as long as
every rate and threshold uses the same one; waits come back in that unit.

Probabilities come from the Erlang B recursion ``B(k) = a·B(k−1) / (k + a·B(k−1))``, which
stays between 0 and 1 at every step, so hundreds or thousands of agents neither overflow
(``a**c``) nor underflow (``c!``) the way the textbook factorial formula does.

An overloaded queue (λ ≥ cμ) is not an error: the forecast says ``stable=False``, every contact
waits (probability 1), the mean wait is ``math.inf`` and the service level is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def check_agents(agents: int) -> None:
    """Raise ValueError unless agents is a whole number of at least one."""
    if isinstance(agents, bool) or not isinstance(agents, int):
        raise ValueError(f"agents must be an integer, got {agents!r}")
    if agents < 1:
        raise ValueError(f"agents must be at least 1, got {agents}")


def check_rate(name: str, value: float, *, allow_zero: bool) -> None:
    """Raise ValueError unless value is a finite, non-negative (or positive) number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value}")


def erlang_b(agents: int, offered_load: float) -> float:
    """Probability that all agents are busy in a loss system (Erlang B), by recursion."""
    check_agents(agents)
    check_rate("offered_load", offered_load, allow_zero=True)
    blocking = 1.0
    for k in range(1, agents + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def _erlang_c_from_b(agents: int, offered_load: float, blocking: float) -> float:
    # Standard identity C = c·B / (c − a·(1 − B)); only valid (and only called) for a < c.
    return agents * blocking / (agents - offered_load * (1.0 - blocking))


def erlang_c(agents: int, offered_load: float) -> float:
    """Probability that a contact has to wait (Erlang C); 1.0 when the load is unstable (a ≥ c)."""
    blocking = erlang_b(agents, offered_load)
    if offered_load >= agents:
        return 1.0
    return _erlang_c_from_b(agents, offered_load, blocking)


@dataclass(frozen=True)
class QueueForecast:
    """Erlang C prediction for one queue: who waits, the mean wait, and whether it is stable."""

    agents: int
    arrival_rate: float
    service_rate: float
    stable: bool
    probability_of_wait: float
    mean_wait: float

    @property
    def offered_load(self) -> float:
        """Offered load a = λ/μ in Erlangs (busy agents needed on average)."""
        return self.arrival_rate / self.service_rate

    @property
    def occupancy(self) -> float:
        """Share of agent time spent serving, a/c; at least 1 means the queue is overloaded."""
        return self.offered_load / self.agents

    def service_level(self, answer_within: float) -> float:
        """Share answered within answer_within, 1 − C·exp(−(cμ − λ)·t); 0 when unstable."""
        check_rate("answer_within", answer_within, allow_zero=True)
        if not self.stable:
            return 0.0
        drain_rate = self.agents * self.service_rate - self.arrival_rate
        return 1.0 - self.probability_of_wait * math.exp(-drain_rate * answer_within)


def _forecast(
    agents: int, arrival_rate: float, service_rate: float, blocking: float
) -> QueueForecast:
    offered_load = arrival_rate / service_rate
    # Compare rates, not a with c: λ ≥ cμ is the physical overload condition and avoids a
    # rounding disagreement between the two forms at the boundary.
    if arrival_rate >= agents * service_rate:
        return QueueForecast(agents, arrival_rate, service_rate, False, 1.0, math.inf)
    waiting = _erlang_c_from_b(agents, offered_load, blocking)
    mean_wait = waiting / (agents * service_rate - arrival_rate)
    return QueueForecast(agents, arrival_rate, service_rate, True, waiting, mean_wait)


def forecast_queue(*, agents: int, arrival_rate: float, service_rate: float) -> QueueForecast:
    """Erlang C forecast for c agents: probability of waiting and mean wait Wq = C/(cμ − λ)."""
    check_agents(agents)
    check_rate("arrival_rate", arrival_rate, allow_zero=True)
    check_rate("service_rate", service_rate, allow_zero=False)
    blocking = erlang_b(agents, arrival_rate / service_rate)
    return _forecast(agents, arrival_rate, service_rate, blocking)


@dataclass(frozen=True)
class StaffingPlan:
    """The fewest agents that answer the target share of contacts within the threshold."""

    agents: int
    answer_within: float
    target_service_level: float
    service_level: float
    forecast: QueueForecast


def staff_for_service_level(
    *,
    arrival_rate: float,
    service_rate: float,
    answer_within: float,
    target_service_level: float,
) -> StaffingPlan:
    """Smallest number of agents whose Erlang C service level meets the target."""
    check_rate("arrival_rate", arrival_rate, allow_zero=True)
    check_rate("service_rate", service_rate, allow_zero=False)
    check_rate("answer_within", answer_within, allow_zero=True)
    check_rate("target_service_level", target_service_level, allow_zero=False)
    if target_service_level >= 1.0:
        # With Poisson arrivals some contact always finds every agent busy, so 100 % within
        # any finite threshold is never reachable; refuse rather than loop forever.
        raise ValueError(
            f"target_service_level must be below 1 (100 % is unreachable), "
            f"got {target_service_level}"
        )
    offered_load = arrival_rate / service_rate
    # Extend the Erlang B recursion one agent at a time, so the whole search costs O(c).
    blocking = 1.0
    agents = 0
    while True:
        agents += 1
        blocking = offered_load * blocking / (agents + offered_load * blocking)
        if arrival_rate >= agents * service_rate:
            continue
        forecast = _forecast(agents, arrival_rate, service_rate, blocking)
        achieved = forecast.service_level(answer_within)
        if achieved >= target_service_level:
            return StaffingPlan(agents, answer_within, target_service_level, achieved, forecast)
