"""The sales guard's arithmetic: pass demand on the staffing plan, and what each tier can expect.

How passes become fast-lane contacts per hour (the quote and the guard use this one rule):

1. While a pass grants the fast lane it brings an expected number of fast-lane contacts per
   day: a subscription ``subscription_contacts_per_day``; a single-incident pass
   ``single_incident_contacts`` spread evenly over its validity (contacts ÷ validity in days).
2. Pass holders use the channels as everybody does: a planned channel receives the share of
   those contacts that it has of the plan's weekly forecast (Σ contacts_per_hour × hours).
3. Within a channel they arrive evenly over its *open* hours of the week. An interval is open
   when it is staffed (agents ≥ 1) and forecast to receive contacts (contacts_per_hour > 0);
   fast-lane contacts never arrive in other intervals. So, in an open interval,
   ``λ_fast = Σ_passes contacts/day × 7 × share(channel) / open hours per week(channel)``.

The forecast ``contacts_per_hour`` is the standard tier's own demand; the fast lane comes on
top of it. Its limit in an interval is the exact ε bound of
:func:`sla.priority.fast_lane_capacity` (the standard tier's mean wait at most (1 + ε) times
its wait with no fast lane at all), with μ = 1 / handle time.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from sla.config import WEEKDAYS, CapacityPlan, ChannelPlan, PassRates, PlanInterval, Weekday
from sla.erlang import erlang_c
from sla.priority import FastLaneCapacity, fast_lane_capacity, forecast_two_tiers

PassKind = Literal["single_incident", "subscription"]
PASS_KINDS: tuple[PassKind, ...] = ("single_incident", "subscription")
DAY = 86400.0
HOUR = 3600.0
_WEEK_DAYS = 7.0

FloatArray = npt.NDArray[np.float64]


def pass_contacts_per_day(
    kind: PassKind, *, valid_from: float, valid_until: float, rates: PassRates
) -> float:
    """Expected fast-lane contacts per day that one pass brings while it grants the fast lane."""
    if kind == "subscription":
        return float(rates.subscription_contacts_per_day)
    validity_days = max(valid_until - valid_from, 0.0) / DAY
    if validity_days <= 0.0:
        return 0.0
    return float(rates.single_incident_contacts) / validity_days


def _clock_minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def interval_is_open(interval: PlanInterval) -> bool:
    """Staffed and forecast to receive contacts: the only hours fast-lane contacts arrive in."""
    return interval.agents >= 1 and interval.contacts_per_hour > 0


def _interval_hours(interval: PlanInterval) -> float:
    return (_clock_minutes(interval.end) - _clock_minutes(interval.start)) / 60.0


def open_hours_per_week(plan: ChannelPlan) -> float:
    """Hours per week in which the channel is open (see :func:`interval_is_open`)."""
    return sum(_interval_hours(i) * len(set(i.days)) for i in plan.intervals if interval_is_open(i))


def weekly_forecast(plan: ChannelPlan) -> float:
    """Standard contacts the channel's plan forecasts over one week."""
    return sum(i.contacts_per_hour * _interval_hours(i) * len(set(i.days)) for i in plan.intervals)


def channel_share(plan: CapacityPlan, channel: str) -> float:
    """The share of pass holders' contacts that come on `channel` (by weekly forecast)."""
    if channel not in plan.channels:
        return 0.0
    totals = {name: weekly_forecast(p) for name, p in plan.channels.items()}
    everything = sum(totals.values())
    if everything <= 0.0:
        return 0.0
    return totals[channel] / everything


def fast_lane_rate_factor(plan: CapacityPlan, channel: str) -> float:
    """Fast-lane contacts per open hour on `channel` per pass contact per day (0: none arrive)."""
    hours = open_hours_per_week(plan.channels[channel]) if channel in plan.channels else 0.0
    if hours <= 0.0:
        return 0.0
    return _WEEK_DAYS * channel_share(plan, channel) / hours


@dataclass(frozen=True, slots=True)
class PlanOccurrence:
    """One dated occurrence of a weekly plan interval on a channel."""

    channel: str
    interval_index: int
    weekday: Weekday
    local_start: str
    local_end: str
    start: float
    end: float
    agents: int
    contacts_per_hour: float
    handle_seconds: float
    open: bool


def plan_occurrences(
    plan: CapacityPlan, channel: str, *, start: float, end: float
) -> list[PlanOccurrence]:
    """Every occurrence of the channel's plan intervals that overlaps [start, end), by start."""
    channel_plan = plan.channels.get(channel)
    if channel_plan is None or end <= start:
        return []
    zone = zoneinfo.ZoneInfo(plan.timezone)
    first = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(end, zone).date()
    found: list[PlanOccurrence] = []
    day = first
    while day <= last:
        weekday = WEEKDAYS[day.weekday()]
        for index, interval in enumerate(channel_plan.intervals):
            if weekday not in interval.days:
                continue
            begins = _local_epoch(day, interval.start, zone)
            ends = _local_epoch(day, interval.end, zone)
            if begins < end and ends > start:
                found.append(
                    PlanOccurrence(
                        channel=channel,
                        interval_index=index,
                        weekday=weekday,
                        local_start=interval.start,
                        local_end=interval.end,
                        start=begins,
                        end=ends,
                        agents=interval.agents,
                        contacts_per_hour=float(interval.contacts_per_hour),
                        handle_seconds=float(channel_plan.handle_seconds),
                        open=interval_is_open(interval),
                    )
                )
        day += dt.timedelta(days=1)
    found.sort(key=lambda o: (o.start, o.interval_index))
    return found


def _local_epoch(day: dt.date, clock_time: str, zone: zoneinfo.ZoneInfo) -> float:
    minutes = _clock_minutes(clock_time)  # "24:00" is midnight at the end of the day
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    local = midnight.replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    return local.replace(tzinfo=zone).timestamp()


class _SortedPasses:
    """Validity bounds sorted two ways, with running sums of contacts per day."""

    def __init__(self, passes: Iterable[tuple[float, float, float]]) -> None:
        rows = np.array(list(passes), dtype=np.float64).reshape(-1, 3)
        starts, ends, per_day = rows[:, 0], rows[:, 1], rows[:, 2]
        by_start = np.argsort(starts, kind="stable")
        by_end = np.argsort(ends, kind="stable")
        self.starts = starts[by_start]
        self.ends = ends[by_end]
        self.cumulative_by_start = np.concatenate(([0.0], np.cumsum(per_day[by_start])))
        self.cumulative_by_end = np.concatenate(([0.0], np.cumsum(per_day[by_end])))
        self.size = int(rows.shape[0])

    def overlapping(self, starts: FloatArray, ends: FloatArray) -> FloatArray:
        # Passes that started before `end`, minus those that ended by `start`, are exactly
        # the ones valid at some time in [start, end): two binary searches per interval.
        started: FloatArray = self.cumulative_by_start[
            np.searchsorted(self.starts, ends, side="left")
        ]
        ended: FloatArray = self.cumulative_by_end[np.searchsorted(self.ends, starts, side="right")]
        return started - ended


class PassDemand:
    """When each pass grants the fast lane and how many contacts per day it brings.

    Built once from every pass, then extended by small change sets (`with_changes`: a sale
    adds its pass, a use or cancellation takes one away with a negative rate), so a sale does
    not re-sort every pass sold before it.
    """

    def __init__(self, passes: Iterable[tuple[float, float, float]]) -> None:
        self._parts: tuple[_SortedPasses, ...] = (_SortedPasses(passes),)

    @property
    def passes(self) -> int:
        """How many passes (and signed changes) it counts."""
        return sum(part.size for part in self._parts)

    def with_changes(self, changes: Iterable[tuple[float, float, float]]) -> PassDemand:
        """This demand plus passes added (positive rate) or taken away (negative rate)."""
        extended = PassDemand(())
        extended._parts = (*self._parts, _SortedPasses(changes))
        return extended

    def contacts_per_day(self, starts: FloatArray, ends: FloatArray) -> FloatArray:
        """For each [start, end): Σ contacts/day of the passes valid at some time inside it.

        Counting every pass valid at any moment of an interval (not the average over it) errs
        on the side of selling less.
        """
        total: FloatArray = np.zeros(len(starts), dtype=np.float64)
        for part in self._parts:
            total += part.overlapping(starts, ends)
        # Clipped at zero: the sums may differ by a rounding error when every pass ended.
        overlapping: FloatArray = np.maximum(total, 0.0)
        return overlapping


@functools.lru_cache(maxsize=4096)
def interval_capacity(
    agents: int, handle_seconds: float, standard_per_hour: float, epsilon: float
) -> FastLaneCapacity:
    """The ε capacity of an open interval, in contacts per hour (cached: a plan repeats weekly)."""
    return fast_lane_capacity(
        agents=agents,
        service_rate=HOUR / handle_seconds,
        standard_arrival_rate=standard_per_hour,
        max_standard_wait_growth=epsilon,
    )


def max_fast_lane_per_hour(
    agents: int, handle_seconds: float, standard_per_hour: float, epsilon: float
) -> float:
    """The most fast-lane contacts/hour an open interval absorbs within ε (0 if overloaded)."""
    capacity = interval_capacity(agents, handle_seconds, standard_per_hour, epsilon)
    return capacity.max_fast_arrival_rate if capacity.stable else 0.0


@dataclass(frozen=True, slots=True)
class TierOutlook:
    """One tier's predicted mean wait (seconds, inf when overloaded) and service level."""

    mean_wait_seconds: float
    service_level: float | None  # share answered within answer_seconds; None without an SLA
    answer_seconds: float | None


@dataclass(frozen=True, slots=True)
class IntervalOutlook:
    """Both tiers in one interval at its staffing, forecast and fast-lane demand."""

    stable: bool
    fast_lane: TierOutlook
    standard: TierOutlook
    standard_wait_without_fast_lane_seconds: float
    standard_wait_ratio: float  # standard wait ÷ its no-fast-lane wait


def interval_outlook(
    *,
    agents: int,
    handle_seconds: float,
    standard_per_hour: float,
    fast_per_hour: float,
    fast_answer_seconds: float | None,
    standard_answer_seconds: float | None,
) -> IntervalOutlook:
    """Mean waits by the non-preemptive two-class formulas and each tier's service level.

    The fast lane's service level is exact for the top class: it waits with probability
    C(c, a) at the total load, and then for an exponential time of rate cμ − λ_fast, so
    SL = 1 − C·exp(−(cμ − λ_fast)·t). The standard tier's wait has no closed-form
    distribution; its service level uses the same probability of waiting and assumes an
    exponential wait with the exact mean, SL ≈ 1 − C·exp(−C·t / Wq_standard).
    """
    if agents < 1:
        never = TierOutlook(math.inf, _level(0.0, fast_answer_seconds), fast_answer_seconds)
        return IntervalOutlook(
            stable=False,
            fast_lane=never,
            standard=TierOutlook(
                math.inf, _level(0.0, standard_answer_seconds), standard_answer_seconds
            ),
            standard_wait_without_fast_lane_seconds=math.inf,
            standard_wait_ratio=math.inf,
        )
    service_rate = HOUR / handle_seconds
    forecast = forecast_two_tiers(
        agents=agents,
        service_rate=service_rate,
        fast_arrival_rate=fast_per_hour,
        standard_arrival_rate=standard_per_hour,
    )
    capacity = agents * service_rate
    load = (fast_per_hour + standard_per_hour) / service_rate
    waiting = erlang_c(agents, load) if forecast.stable else 1.0
    fast_wait = forecast.fast_mean_wait
    if math.isfinite(fast_wait):
        fast_level = 1.0 - waiting * math.exp(
            -(capacity - fast_per_hour) * _hours(fast_answer_seconds)
        )
    else:
        fast_level = 0.0
    standard_wait = forecast.standard_mean_wait
    if not math.isfinite(standard_wait):
        standard_level = 0.0
    elif standard_wait <= 0.0 or waiting <= 0.0:
        standard_level = 1.0
    else:
        standard_level = 1.0 - waiting * math.exp(
            -waiting * _hours(standard_answer_seconds) / standard_wait
        )
    return IntervalOutlook(
        stable=forecast.stable,
        fast_lane=TierOutlook(
            fast_wait * HOUR, _level(fast_level, fast_answer_seconds), fast_answer_seconds
        ),
        standard=TierOutlook(
            standard_wait * HOUR,
            _level(standard_level, standard_answer_seconds),
            standard_answer_seconds,
        ),
        standard_wait_without_fast_lane_seconds=forecast.standard_mean_wait_without_fast_lane
        * HOUR,
        standard_wait_ratio=forecast.standard_wait_ratio,
    )


def _hours(answer_seconds: float | None) -> float:
    return (answer_seconds or 0.0) / HOUR


def _level(level: float, answer_seconds: float | None) -> float | None:
    return None if answer_seconds is None else min(max(level, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class SoldOut:
    """The first interval where one more pass would push the fast lane past the ε limit."""

    occurrence: PlanOccurrence
    timezone: str
    sold_per_hour: float
    added_per_hour: float
    max_per_hour: float

    def describe(self) -> str:
        """A sentence for the billing system: which channel and interval, and by how much."""
        o = self.occurrence
        local = dt.datetime.fromtimestamp(o.start, zoneinfo.ZoneInfo(self.timezone))
        return (
            f"the fast lane on {o.channel} is sold out for {o.weekday} "
            f"{o.local_start}-{o.local_end} ({self.timezone}) starting {local.isoformat()}: "
            f"{self.sold_per_hour:.4g} of at most {self.max_per_hour:.4g} fast-lane contacts/hour "
            f"are sold and this pass adds {self.added_per_hour:.4g}"
        )


def first_sold_out(
    *,
    plan: CapacityPlan,
    epsilon: float,
    demand: PassDemand,
    added_per_day: float,
    start: float,
    end: float,
) -> SoldOut | None:
    """The earliest open interval in [start, end) that cannot take `added_per_day` more.

    Every planned channel is checked with its share of the added demand (module docstring).
    """
    if added_per_day <= 0.0 or end <= start:
        return None
    worst: SoldOut | None = None
    for channel in plan.channels:
        factor = fast_lane_rate_factor(plan, channel)
        if factor <= 0.0:
            continue
        occurrences = [o for o in plan_occurrences(plan, channel, start=start, end=end) if o.open]
        if not occurrences:
            continue
        sold = factor * demand.contacts_per_day(
            np.fromiter((o.start for o in occurrences), np.float64, len(occurrences)),
            np.fromiter((o.end for o in occurrences), np.float64, len(occurrences)),
        )
        added = factor * added_per_day
        for occurrence, sold_per_hour in zip(occurrences, sold.tolist(), strict=True):
            limit = max_fast_lane_per_hour(
                occurrence.agents,
                occurrence.handle_seconds,
                occurrence.contacts_per_hour,
                float(epsilon),
            )
            if sold_per_hour + added > limit:
                if worst is None or occurrence.start < worst.occurrence.start:
                    worst = SoldOut(occurrence, plan.timezone, sold_per_hour, added, limit)
                break
    return worst
