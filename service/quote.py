"""The fast-lane quote: what each tier can expect on a channel, and how much is left to sell.

For every occurrence of the channel's plan intervals that overlaps the window, at the planned
agents and forecast, with the demand of the passes already sold:

* fast-lane demand: each pass that grants the fast lane at some time in the interval brings
  its expected contacts per day (a subscription `subscription_contacts_per_day`, a
  single-incident pass `single_incident_contacts` over its validity); the channel gets its
  share of them by weekly forecast, spread evenly over its open hours (staffed, with a
  forecast): ``λ_fast = Σ contacts/day × 7 × share / open hours per week``. The quote reports
  the factor ``7 × share / open hours`` as
  `fast_lane_contacts_per_hour_per_pass_contact_per_day` (details in `sla.guard`);
* mean wait and service level of both tiers (Erlang C at the total load, non-preemptive
  two-class priority), and the standard tier's wait without any fast lane;
* the most fast-lane demand the interval takes while the standard wait grows by at most ε,
  the headroom left, and how many more passes of each kind fit. The pass counts use the
  default validity of a single-incident pass; the sales guard judges each sale with its own.

Without any capacity plan the guard cannot judge and sells every pass; the quote says so
(`planned: false`). A channel missing from an existing plan is 404.
"""

from __future__ import annotations

import math

import numpy as np

from routing_rules.schema import RuleSet
from service.pass_models import (
    IntervalQuote,
    PassRatesOut,
    QuoteOut,
    SellablePasses,
    StandardTierQuote,
    TierQuote,
    WindowSummary,
)
from service.problems import InvalidInput, NotFound
from sla.guard import (
    DAY,
    HOUR,
    PassDemand,
    PassKind,
    PlanOccurrence,
    channel_share,
    fast_lane_rate_factor,
    interval_capacity,
    interval_outlook,
    plan_occurrences,
)
from sla.priority import pass_headroom

MAX_WINDOW_DAYS = 31
MAX_INTERVALS = 2000
NO_PLAN_NOTE = (
    "no capacity plan is configured: the sales guard cannot judge, so every pass is sold; "
    "add capacity_plan to the rules to get predictions and a limit"
)


def build_quote(
    *,
    ruleset: RuleSet,
    demand: PassDemand,
    active_passes: dict[PassKind, int],
    channel: str,
    start: float,
    end: float,
) -> QuoteOut:
    """The quote for `channel` over [start, end) (see the module docstring)."""
    if end <= start:
        raise InvalidInput("to: the window must end after it starts")
    if end - start > MAX_WINDOW_DAYS * DAY:
        raise InvalidInput(f"to: the window may span at most {MAX_WINDOW_DAYS} days")
    if channel not in ruleset.vocabularies.channels:
        known = ", ".join(ruleset.vocabularies.channels)
        raise InvalidInput(f"channel: unknown channel {channel!r}; known: {known}")
    plan = ruleset.capacity_plan
    sales = ruleset.fast_lane
    rates = sales.expected
    factor = fast_lane_rate_factor(plan, channel) if channel in plan.channels else 0.0
    quote = QuoteOut(
        channel=channel,
        start=start,
        end=end,
        timezone=plan.timezone,
        planned=bool(plan.channels),
        guard=sales.guard,
        epsilon=float(sales.epsilon),
        note=None if plan.channels else NO_PLAN_NOTE,
        channel_share=channel_share(plan, channel),
        fast_lane_contacts_per_hour_per_pass_contact_per_day=factor,
        expected=PassRatesOut(
            single_incident_contacts=float(rates.single_incident_contacts),
            single_incident_valid_days=sales.single_incident_valid_days,
            subscription_contacts_per_day=float(rates.subscription_contacts_per_day),
        ),
        active_passes=active_passes,
        intervals=[],
        summary=None,
    )
    if not plan.channels:
        return quote
    if channel not in plan.channels:
        planned = ", ".join(plan.channels)
        raise NotFound(f"the capacity plan has no channel {channel!r} (planned: {planned})")
    occurrences = plan_occurrences(plan, channel, start=start, end=end)
    if len(occurrences) > MAX_INTERVALS:
        raise InvalidInput(
            f"to: the window holds {len(occurrences)} plan intervals, more than "
            f"{MAX_INTERVALS}; ask for a shorter window"
        )
    sold = factor * demand.contacts_per_day(
        np.array([o.start for o in occurrences], dtype=np.float64),
        np.array([o.end for o in occurrences], dtype=np.float64),
    )
    per_pass = {
        "single_incident": float(rates.single_incident_contacts)
        / sales.single_incident_valid_days
        * factor,
        "subscription": float(rates.subscription_contacts_per_day) * factor,
    }
    fast_sla = ruleset.tiers.fast_lane.sla.get(channel)
    standard_sla = ruleset.tiers.standard.sla.get(channel)
    intervals = [
        _interval(
            occurrence,
            sold_per_hour=float(sold_per_hour) if occurrence.open else 0.0,
            epsilon=float(sales.epsilon),
            per_pass=per_pass,
            fast_answer=None if fast_sla is None else float(fast_sla.answer_seconds),
            standard_answer=None if standard_sla is None else float(standard_sla.answer_seconds),
        )
        for occurrence, sold_per_hour in zip(occurrences, sold.tolist(), strict=True)
    ]
    return quote.model_copy(
        update={"intervals": intervals, "summary": _summary(intervals, start=start, end=end)}
    )


def _interval(
    occurrence: PlanOccurrence,
    *,
    sold_per_hour: float,
    epsilon: float,
    per_pass: dict[str, float],
    fast_answer: float | None,
    standard_answer: float | None,
) -> IntervalQuote:
    outlook = interval_outlook(
        agents=occurrence.agents,
        handle_seconds=occurrence.handle_seconds,
        standard_per_hour=occurrence.contacts_per_hour,
        fast_per_hour=sold_per_hour,
        fast_answer_seconds=fast_answer,
        standard_answer_seconds=standard_answer,
    )
    limit: float | None = None
    headroom: float | None = None
    sellable: SellablePasses | None = None
    sold_out = False
    if occurrence.open:
        capacity = interval_capacity(
            occurrence.agents,
            occurrence.handle_seconds,
            occurrence.contacts_per_hour,
            epsilon,
        )
        limit = capacity.max_fast_arrival_rate if capacity.stable else 0.0
        headroom = max(limit - sold_per_hour, 0.0)
        counts = {
            kind: (
                pass_headroom(
                    capacity=capacity,
                    committed_fast_arrival_rate=sold_per_hour,
                    contact_rate_per_pass=rate,
                ).sellable_passes
                if rate > 0.0
                else None
            )
            for kind, rate in per_pass.items()
        }
        sellable = SellablePasses(
            single_incident=counts["single_incident"], subscription=counts["subscription"]
        )
        sold_out = all(count == 0 for count in counts.values() if count is not None) and any(
            count is not None for count in counts.values()
        )
    return IntervalQuote(
        start=occurrence.start,
        end=occurrence.end,
        weekday=occurrence.weekday,
        local_start=occurrence.local_start,
        local_end=occurrence.local_end,
        agents=occurrence.agents,
        handle_seconds=occurrence.handle_seconds,
        contacts_per_hour=occurrence.contacts_per_hour,
        open=occurrence.open,
        stable=outlook.stable,
        fast_lane_contacts_per_hour=sold_per_hour,
        fast_lane=TierQuote(
            mean_wait_seconds=_finite(outlook.fast_lane.mean_wait_seconds),
            service_level=outlook.fast_lane.service_level,
            answer_seconds=fast_answer,
        ),
        standard=StandardTierQuote(
            mean_wait_seconds=_finite(outlook.standard.mean_wait_seconds),
            service_level=outlook.standard.service_level,
            answer_seconds=standard_answer,
            mean_wait_without_fast_lane_seconds=_finite(
                outlook.standard_wait_without_fast_lane_seconds
            ),
            wait_growth=_finite(outlook.standard_wait_ratio - 1.0),
        ),
        max_fast_lane_contacts_per_hour=limit,
        headroom_contacts_per_hour=headroom,
        sellable_passes=sellable,
        sold_out=sold_out,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(intervals: list[IntervalQuote], *, start: float, end: float) -> WindowSummary:
    """Contact-weighted means over the part of each interval inside the window."""
    hours = [max(min(end, i.end) - max(start, i.start), 0.0) / HOUR for i in intervals]
    standard_contacts = [i.contacts_per_hour * h for i, h in zip(intervals, hours, strict=True)]
    fast_contacts = [
        i.fast_lane_contacts_per_hour * h for i, h in zip(intervals, hours, strict=True)
    ]
    # A tier with no contacts in the window is weighted like the standard forecast (the wait
    # a contact would meet), and without any forecast by time.
    fast_weights = _weights(fast_contacts, standard_contacts, hours)
    standard_weights = _weights(standard_contacts, hours)
    open_ones = [i for i in intervals if i.open]
    headrooms = [i.headroom_contacts_per_hour for i in open_ones]
    tightest = min(
        open_ones, key=lambda i: (i.headroom_contacts_per_hour or 0.0, i.start), default=None
    )
    answer_fast = intervals[0].fast_lane.answer_seconds if intervals else None
    answer_standard = intervals[0].standard.answer_seconds if intervals else None
    return WindowSummary(
        open_hours=sum(h for i, h in zip(intervals, hours, strict=True) if i.open),
        standard_contacts=sum(standard_contacts),
        fast_lane_contacts=sum(fast_contacts),
        stable=all(i.stable for i, w in zip(intervals, standard_weights, strict=True) if w > 0),
        fast_lane=TierQuote(
            mean_wait_seconds=_mean(
                [i.fast_lane.mean_wait_seconds for i in intervals], fast_weights
            ),
            service_level=_mean([i.fast_lane.service_level for i in intervals], fast_weights),
            answer_seconds=answer_fast,
        ),
        standard=StandardTierQuote(
            mean_wait_seconds=_mean(
                [i.standard.mean_wait_seconds for i in intervals], standard_weights
            ),
            service_level=_mean([i.standard.service_level for i in intervals], standard_weights),
            answer_seconds=answer_standard,
            mean_wait_without_fast_lane_seconds=_mean(
                [i.standard.mean_wait_without_fast_lane_seconds for i in intervals],
                standard_weights,
            ),
            wait_growth=None,
        ),
        headroom_contacts_per_hour=min((h for h in headrooms if h is not None), default=None),
        sellable_passes=_fewest([i.sellable_passes for i in open_ones]),
        sold_out=any(i.sold_out for i in open_ones),
        tightest_interval_start=None if tightest is None else tightest.start,
    )


def _weights(*candidates: list[float]) -> list[float]:
    for weights in candidates:
        if sum(weights) > 0.0:
            return weights
    return candidates[-1]


def _mean(values: list[float | None], weights: list[float]) -> float | None:
    """Weighted mean; None if a weighted value is unknown (overloaded) or nothing is weighted."""
    total = sum(weights)
    if total <= 0.0:
        return None
    acc = 0.0
    for value, weight in zip(values, weights, strict=True):
        if weight <= 0.0:
            continue
        if value is None:
            return None
        acc += value * weight
    return acc / total


def _fewest(counts: list[SellablePasses | None]) -> SellablePasses | None:
    known = [c for c in counts if c is not None]
    if not known:
        return None

    def least(values: list[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    return SellablePasses(
        single_incident=least([c.single_incident for c in known]),
        subscription=least([c.subscription for c in known]),
    )
