"""Two tiers on one pool of agents: the fast lane is served first, without preempting anyone.

Model: M/M/c with two Poisson arrival streams and one common exponential handle-time rate μ.
A free agent always takes the longest-waiting fast-lane contact if there is one, otherwise the
longest-waiting standard contact; a contact in service is never interrupted. The mean waits are
(Larson & Odoni, *Urban Operations Research*, §4.9.3)::

    Wq_k = W0 / ((1 − σ_{k−1})(1 − σ_k)),   W0 = C(c, a)/(cμ),   σ_k = Σ_{i≤k} λ_i/(cμ)

with class 1 = fast lane, class 2 = standard, σ_0 = 0, and C(c, a) the Erlang C probability of
waiting at the *total* offered load a = (λ_fast + λ_standard)/μ. Rates use any one time unit.

Two baselines are easy to confuse, and they give different answers:

* **FCFS at the total rate** (same contacts, no priority). Then
  ``Wq_standard = Wq_FCFS(λ_fast + λ_standard) / (1 − ρ_fast)``, ``ρ_fast = λ_fast/(cμ)``,
  exactly; this is the conservation shortcut in PRODUCT.md, and "grow at most ε" becomes
  ``ρ_fast ≤ ε/(1 + ε)``.
* **No fast lane at all** (the fast-lane contacts never arrive; what issue 3's sales guard and
  reports compare against): ``Wq_standard / Wq_FCFS(λ_standard)``. The fast lane now adds load
  as well as jumping the queue, so the ratio is the shortcut's ``1/(1 − ρ_fast)`` *times*
  ``Wq_FCFS(λ_fast + λ_standard) / Wq_FCFS(λ_standard) ≥ 1``. The shortcut therefore
  overstates what may be sold, by a lot: with 5 agents, μ = 1, λ_standard = 3.2 and ε = 10 %
  the shortcut allows λ_fast ≈ 0.455, the exact bound ≈ 0.0557. :func:`fast_lane_capacity`
  solves the exact condition and reports the shortcut only for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sla.erlang import check_agents, check_rate, erlang_c, forecast_queue


def _tier_waits(
    agents: int, service_rate: float, fast_arrival_rate: float, standard_arrival_rate: float
) -> tuple[float, float]:
    """(fast, standard) mean waits by the priority formula, overloaded agents included."""
    capacity = agents * service_rate
    if fast_arrival_rate + standard_arrival_rate >= capacity:
        # Overloaded: every agent is always busy (C = 1, W0 = 1/(cμ)) and the standard queue
        # grows without bound, but the fast lane still sees a finite wait as long as it alone
        # fits, W0/(1 − σ_1) = 1/(cμ − λ_fast). Report that rather than hide it.
        if fast_arrival_rate < capacity:
            return 1.0 / (capacity - fast_arrival_rate), math.inf
        return math.inf, math.inf
    total_load = (fast_arrival_rate + standard_arrival_rate) / service_rate
    base_wait = erlang_c(agents, total_load) / capacity
    sigma_fast = fast_arrival_rate / capacity
    sigma_both = (fast_arrival_rate + standard_arrival_rate) / capacity
    fast_wait = base_wait / (1.0 - sigma_fast)
    standard_wait = base_wait / ((1.0 - sigma_fast) * (1.0 - sigma_both))
    return fast_wait, standard_wait


def _wait_ratio(wait: float, baseline: float) -> float:
    if baseline == 0.0:
        # Only when nobody waits without the fast lane (no standard demand); 0/0 means "no change".
        return 1.0 if wait == 0.0 else math.inf
    return wait / baseline


@dataclass(frozen=True)
class TwoTierForecast:
    """Mean wait of each tier, beside the standard tier's wait if there were no fast lane."""

    agents: int
    service_rate: float
    fast_arrival_rate: float
    standard_arrival_rate: float
    stable: bool
    fast_mean_wait: float
    standard_mean_wait: float
    standard_mean_wait_without_fast_lane: float
    standard_wait_ratio: float

    @property
    def fast_occupancy(self) -> float:
        """ρ_fast = λ_fast/(cμ): the share of agent capacity the fast lane uses."""
        return self.fast_arrival_rate / (self.agents * self.service_rate)

    @property
    def occupancy(self) -> float:
        """Total share of agent capacity used by both tiers; at least 1 means overloaded."""
        total = self.fast_arrival_rate + self.standard_arrival_rate
        return total / (self.agents * self.service_rate)


def forecast_two_tiers(
    *,
    agents: int,
    service_rate: float,
    fast_arrival_rate: float,
    standard_arrival_rate: float,
) -> TwoTierForecast:
    """Per-tier mean waits under non-preemptive fast-lane priority, beside the no-fast-lane wait."""
    check_agents(agents)
    check_rate("service_rate", service_rate, allow_zero=False)
    check_rate("fast_arrival_rate", fast_arrival_rate, allow_zero=True)
    check_rate("standard_arrival_rate", standard_arrival_rate, allow_zero=True)
    fast_wait, standard_wait = _tier_waits(
        agents, service_rate, fast_arrival_rate, standard_arrival_rate
    )
    baseline = forecast_queue(
        agents=agents, arrival_rate=standard_arrival_rate, service_rate=service_rate
    ).mean_wait
    stable = fast_arrival_rate + standard_arrival_rate < agents * service_rate
    return TwoTierForecast(
        agents=agents,
        service_rate=service_rate,
        fast_arrival_rate=fast_arrival_rate,
        standard_arrival_rate=standard_arrival_rate,
        stable=stable,
        fast_mean_wait=fast_wait,
        standard_mean_wait=standard_wait,
        standard_mean_wait_without_fast_lane=baseline,
        standard_wait_ratio=_wait_ratio(standard_wait, baseline),
    )


@dataclass(frozen=True)
class FastLaneCapacity:
    """The most fast-lane demand the agents absorb while standard waits grow by at most ε."""

    agents: int
    service_rate: float
    standard_arrival_rate: float
    max_standard_wait_growth: float
    stable: bool
    max_fast_arrival_rate: float
    standard_mean_wait_without_fast_lane: float
    standard_mean_wait_at_max: float
    conservation_shortcut_fast_arrival_rate: float


def fast_lane_capacity(
    *,
    agents: int,
    service_rate: float,
    standard_arrival_rate: float,
    max_standard_wait_growth: float,
) -> FastLaneCapacity:
    """Largest λ_fast with Wq_standard ≤ (1 + ε)·Wq_standard(no fast lane), by bisection.

    The standard tier's wait rises strictly and continuously with λ_fast (more load, a larger
    Erlang C, a larger 1/(1 − σ) factor) from the baseline at λ_fast = 0 to infinity at
    λ_fast = cμ − λ_standard, so the bound is unique. Erlang C has no closed-form inverse in the
    load, so the formula is bisected until the bracket is two adjacent floats: the returned
    rate meets the bound and the next representable rate breaks it. The conservation shortcut
    ``cμ·ε/(1 + ε)`` (see the module docstring) is always an upper bound on the exact answer
    and serves as the bracket's top.

    If the standard tier alone already overloads the agents (λ_standard ≥ cμ), there is no
    finite baseline to protect: ``stable`` is False and nothing may be sold.
    """
    check_agents(agents)
    check_rate("service_rate", service_rate, allow_zero=False)
    check_rate("standard_arrival_rate", standard_arrival_rate, allow_zero=False)
    check_rate("max_standard_wait_growth", max_standard_wait_growth, allow_zero=True)
    capacity = agents * service_rate
    epsilon = max_standard_wait_growth
    shortcut = capacity * epsilon / (1.0 + epsilon)
    baseline = forecast_queue(
        agents=agents, arrival_rate=standard_arrival_rate, service_rate=service_rate
    ).mean_wait
    if standard_arrival_rate >= capacity:
        return FastLaneCapacity(
            agents=agents,
            service_rate=service_rate,
            standard_arrival_rate=standard_arrival_rate,
            max_standard_wait_growth=epsilon,
            stable=False,
            max_fast_arrival_rate=0.0,
            standard_mean_wait_without_fast_lane=math.inf,
            standard_mean_wait_at_max=math.inf,
            conservation_shortcut_fast_arrival_rate=shortcut,
        )
    # If the baseline underflows to 0.0 (hundreds of agents, a few Erlangs) the guard keeps the
    # standard wait at a float zero, which is also what "no visible harm" means to a customer.
    limit = (1.0 + epsilon) * baseline

    def standard_wait(fast_rate: float) -> float:
        return _tier_waits(agents, service_rate, fast_rate, standard_arrival_rate)[1]

    low, high = 0.0, min(shortcut, capacity - standard_arrival_rate)
    if standard_wait(high) <= limit:
        # Only reachable through rounding at the top of the bracket; the bracket top is the answer.
        low = high
    while True:
        middle = (low + high) / 2.0
        if middle <= low or middle >= high:
            break
        if standard_wait(middle) <= limit:
            low = middle
        else:
            high = middle
    return FastLaneCapacity(
        agents=agents,
        service_rate=service_rate,
        standard_arrival_rate=standard_arrival_rate,
        max_standard_wait_growth=epsilon,
        stable=True,
        max_fast_arrival_rate=low,
        standard_mean_wait_without_fast_lane=baseline,
        standard_mean_wait_at_max=standard_wait(low),
        conservation_shortcut_fast_arrival_rate=shortcut,
    )


@dataclass(frozen=True)
class PassHeadroom:
    """How many more fast-lane passes can be sold before the ε guard is reached."""

    remaining_fast_arrival_rate: float
    sellable_passes: int

    @property
    def sold_out(self) -> bool:
        """True when not even one more pass fits under the guard."""
        return self.sellable_passes == 0


def pass_headroom(
    *,
    capacity: FastLaneCapacity,
    committed_fast_arrival_rate: float,
    contact_rate_per_pass: float,
) -> PassHeadroom:
    """Passes still sellable: ⌊(λ_fast,max − λ_fast,committed) / contact rate per pass⌋, never < 0.

    contact_rate_per_pass is the fast-lane contacts one pass generates per time unit in the
    window (a single-incident pass expected to be used in the window counts as its usage
    probability over the window length); it uses the same time unit as the capacity's rates.
    """
    check_rate("committed_fast_arrival_rate", committed_fast_arrival_rate, allow_zero=True)
    check_rate("contact_rate_per_pass", contact_rate_per_pass, allow_zero=False)
    remaining = max(0.0, capacity.max_fast_arrival_rate - committed_fast_arrival_rate)
    # Round down: selling a pass the agents cannot serve is the failure this guard exists for.
    passes = math.floor(remaining / contact_rate_per_pass)
    return PassHeadroom(remaining_fast_arrival_rate=remaining, sellable_passes=passes)
