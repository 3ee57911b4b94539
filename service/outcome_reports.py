"""Outcome reports: the agent leaderboard, revenue by group, a journey stage, insight tags.

Every report covers the outcomes **completed** in the window [from, to) (`completed_at`), and
counts each outcome as recorded when the report runs (an earlier resolution turns non-durable
when its repeat contact is recorded, so `durable` figures of a past window can still fall).

- resolution rate = resolved / outcomes; durable resolution rate = durable / outcomes.
- NPS = % promoters (9-10) - % detractors (0-6) among outcomes with an NPS answer (-100..100).
- revenue per interaction = sum(revenue_minor) / outcomes, per currency (outcomes with no
  revenue count as 0 in every currency's denominator).
- upsell conversion = outcomes with upsell / outcomes (same for cross-sell).
- handle time = mean handle_seconds.
- repeat rate = outcomes whose `repeat_of` is set / outcomes.

Rates are fractions rounded to 4 digits, NPS to 2, revenue per interaction (minor units) to 2,
handle time to 3; every rate is null when its denominator is 0. Counts and sums are one GROUP
BY statement per report, the same SQL on SQLite and PostgreSQL; rates, NPS and the ranking are
worked out in Python from those sums. Insight tags are a JSON column that the two databases
query differently, so the insights report streams the window's (completed_at, tags) rows in
batches and counts them in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from routing_rules.schema import RuleSet
from service.outcome_report_models import (
    TAG_KINDS,
    AgentFiltersOut,
    AgentRowOut,
    AgentSort,
    AgentsReportOut,
    InsightsReportOut,
    InsightTagOut,
    InsightWeekOut,
    OnboardingReportOut,
    RevenueGroup,
    RevenueReportOut,
    RevenueRowOut,
    StageRowOut,
)
from service.report_models import (
    CurrencyRevenueOut,
    OutcomeFiguresOut,
    ReportWindow,
    TierOutcomesOut,
)
from service.storage.tables import OutcomeRow
from sla.config import TIERS

_OUTCOMES = OutcomeRow.__table__  # type: ignore[attr-defined]
# Rows fetched per round trip while the insights scan streams: memory stays bounded.
_SCAN_BATCH = 10_000
RATE_DIGITS, NPS_DIGITS, MONEY_DIGITS, SECONDS_DIGITS = 4, 2, 2, 3
FiguresT = TypeVar("FiguresT", bound=OutcomeFiguresOut)


def _ratio(part: float, whole: int, digits: int = RATE_DIGITS) -> float | None:
    return round(part / whole, digits) if whole else None


@dataclass(slots=True)
class Figures:
    """The sums behind one group's outcome figures."""

    contacts: int = 0
    resolved: int = 0
    durable: int = 0
    repeats: int = 0
    nps_responses: int = 0
    promoters: int = 0
    detractors: int = 0
    upsells: int = 0
    cross_sells: int = 0
    handle_seconds: float = 0.0
    revenue: dict[str, int] = field(default_factory=dict)  # minor units per currency

    def absorb(self, other: Figures) -> None:
        """Add another group's sums to these."""
        self.contacts += other.contacts
        self.resolved += other.resolved
        self.durable += other.durable
        self.repeats += other.repeats
        self.nps_responses += other.nps_responses
        self.promoters += other.promoters
        self.detractors += other.detractors
        self.upsells += other.upsells
        self.cross_sells += other.cross_sells
        self.handle_seconds += other.handle_seconds
        for currency, amount in other.revenue.items():
            self.revenue[currency] = self.revenue.get(currency, 0) + amount

    def nps_score(self) -> float | None:
        """(promoters − detractors) / answers, unrounded and unscaled: for ranking."""
        if not self.nps_responses:
            return None
        return (self.promoters - self.detractors) / self.nps_responses

    def per_interaction(self, currency: str) -> float | None:
        """Revenue in `currency` per outcome, unrounded: 0 without revenue in it."""
        return self.revenue.get(currency, 0) / self.contacts if self.contacts else None

    def out(self, model: type[FiguresT], **key: Any) -> FiguresT:
        """The figures as `model`, with the row's `key` fields."""
        nps = self.nps_score()
        return model(
            **key,
            contacts=self.contacts,
            resolved=self.resolved,
            resolution_rate=_ratio(self.resolved, self.contacts),
            durable=self.durable,
            durable_resolution_rate=_ratio(self.durable, self.contacts),
            repeat_contacts=self.repeats,
            repeat_rate=_ratio(self.repeats, self.contacts),
            nps_responses=self.nps_responses,
            promoters=self.promoters,
            detractors=self.detractors,
            nps=round(100 * nps, NPS_DIGITS) if nps is not None else None,
            upsells=self.upsells,
            upsell_conversion=_ratio(self.upsells, self.contacts),
            cross_sells=self.cross_sells,
            cross_sell_conversion=_ratio(self.cross_sells, self.contacts),
            mean_handle_seconds=_ratio(self.handle_seconds, self.contacts, SECONDS_DIGITS),
            revenue=[
                CurrencyRevenueOut(
                    currency=currency,
                    revenue_minor=amount,
                    revenue_per_interaction=round(amount / self.contacts, MONEY_DIGITS),
                )
                for currency, amount in sorted(self.revenue.items())
            ],
        )


def _count(condition: ColumnElement[bool]) -> Any:
    """SUM(CASE WHEN condition THEN 1 ELSE 0 END): counts rows on SQLite and PostgreSQL."""
    return func.sum(case((condition, 1), else_=0))


def tally(
    connection: Connection,
    window: ReportWindow,
    by: Sequence[Any],
    where: Sequence[ColumnElement[bool]] = (),
) -> dict[tuple[Any, ...], Figures]:
    """The sums of the window's outcomes grouped by the columns `by`, in one statement."""
    c = _OUTCOMES.c
    # Grouped by currency too, so counts and revenue come from one consistent read.
    query = (
        select(
            *by,
            c.currency,
            func.count(),
            _count(c.resolved),
            _count(c.durable),
            _count(c.repeat_of.is_not(None)),
            func.count(c.nps),
            _count(c.nps >= 9),
            _count(c.nps <= 6),
            _count(c.upsell),
            _count(c.cross_sell),
            func.sum(c.handle_seconds),
            func.sum(c.revenue_minor),
        )
        .where(c.completed_at >= window.start_ts, c.completed_at < window.end_ts, *where)
        .group_by(*by, c.currency)
    )
    groups: dict[tuple[Any, ...], Figures] = {}
    for row in connection.execute(query):
        key, currency, sums = tuple(row[: len(by)]), row[len(by)], row[len(by) + 1 :]
        # PostgreSQL sums integers as NUMERIC (Decimal): every count is made an int here.
        outcomes, resolved, durable, repeats, answers, promoters, detractors, ups, crosses = (
            int(n or 0) for n in sums[:9]
        )
        part = Figures(
            outcomes, resolved, durable, repeats, answers, promoters, detractors, ups, crosses
        )
        part.handle_seconds = float(sums[9] or 0)
        if currency is not None:
            part.revenue[currency] = int(sums[10] or 0)
        groups.setdefault(key, Figures()).absorb(part)
    return groups


def _header(window: ReportWindow, rules_version: int, now: float) -> dict[str, Any]:
    return {
        "from_": window.start.isoformat(),
        "to": window.end.isoformat(),
        "generated_at": window.label(now),
        "rules_version": rules_version,
    }


def _sort_value(figures: Figures, sort: AgentSort, currency: str) -> float | None:
    """The exact figure an agent is ranked by (rounding would make false ties)."""
    if sort == "nps":
        return figures.nps_score()
    if sort == "revenue":
        return figures.per_interaction(currency)
    part = figures.durable if sort == "durable_resolution" else figures.resolved
    return part / figures.contacts


def agents_report(
    engine: Engine,
    ruleset: RuleSet,
    *,
    rules_version: int,
    window: ReportWindow,
    now: float,
    sort: AgentSort,
    currency: str | None,
    filters: AgentFiltersOut,
    min_contacts: int,
) -> AgentsReportOut:
    """Agents with at least `min_contacts` outcomes, best first by `sort` (blocking)."""
    c = _OUTCOMES.c
    sort_currency = currency or ruleset.performance.currency
    where = [getattr(c, name) == value for name, value in filters if value is not None]
    with engine.connect() as connection:
        groups = tally(connection, window, [c.agent_id], where)
    ranked = []
    for (agent_id,), figures in groups.items():
        if figures.contacts >= min_contacts:
            value = _sort_value(figures, sort, sort_currency)
            # Best first; an agent without the figure (no NPS answer) last; then by id.
            ranked.append(((value is None, -(value or 0.0), agent_id), agent_id, figures))
    ranked.sort(key=lambda entry: entry[0])
    return AgentsReportOut(
        **_header(window, rules_version, now),
        sort=sort,
        sort_currency=sort_currency,
        min_contacts=min_contacts,
        filters=filters,
        agents=[
            figures.out(AgentRowOut, rank=rank, agent_id=agent_id)
            for rank, (_, agent_id, figures) in enumerate(ranked, start=1)
        ],
    )


def revenue_report(
    engine: Engine,
    ruleset: RuleSet,
    *,
    rules_version: int,
    window: ReportWindow,
    now: float,
    group_by: RevenueGroup,
) -> RevenueReportOut:
    """Revenue, conversion and resolution per group of `group_by` and in total (blocking)."""
    with engine.connect() as connection:
        groups = {
            key: figures
            for (key,), figures in tally(connection, window, [_OUTCOMES.c[group_by]]).items()
        }
    names: dict[str, str] = {}
    if group_by == "tier":
        # Both tiers always: a fast lane without outcomes is a figure too.
        names = {tier: getattr(ruleset.tiers, tier).display_name for tier in TIERS}
        order = [*TIERS, *sorted(set(groups) - set(TIERS))]
    else:
        order = sorted(groups)
    total = Figures()
    for figures in groups.values():
        total.absorb(figures)
    return RevenueReportOut(
        **_header(window, rules_version, now),
        group_by=group_by,
        groups=[
            groups.get(key, Figures()).out(RevenueRowOut, group=key, group_name=names.get(key, key))
            for key in order
        ],
        total=total.out(RevenueRowOut, group=None, group_name=None),
    )


def stage_report(
    engine: Engine,
    ruleset: RuleSet,
    *,
    rules_version: int,
    window: ReportWindow,
    now: float,
    stage: str,
) -> OnboardingReportOut:
    """One journey stage's outcomes per inquiry type and in total, beside all other stages."""
    c = _OUTCOMES.c
    with engine.connect() as connection:
        groups = tally(connection, window, [c.inquiry_type, c.journey_stage])
    parts: dict[str, tuple[Figures, Figures]] = {}
    total = (Figures(), Figures())
    for (inquiry_type, journey_stage), figures in groups.items():
        side = 0 if journey_stage == stage else 1
        parts.setdefault(inquiry_type, (Figures(), Figures()))[side].absorb(figures)
        total[side].absorb(figures)

    def row(inquiry_type: str | None, pair: tuple[Figures, Figures]) -> StageRowOut:
        return StageRowOut(
            inquiry_type=inquiry_type,
            stage=pair[0].out(OutcomeFiguresOut),
            other_stages=pair[1].out(OutcomeFiguresOut),
        )

    return OnboardingReportOut(
        **_header(window, rules_version, now),
        stage=stage,
        inquiry_types=[row(name, parts[name]) for name in sorted(parts)],
        total=row(None, total),
    )


@dataclass(slots=True)
class _Week:
    """One ISO week's outcome count and tag counts by kind."""

    start: dt.datetime
    outcomes: int = 0
    tags: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in TAG_KINDS}
    )


def _week_start(at: float, zone: ZoneInfo) -> dt.datetime:
    """Monday 00:00 of the ISO week that holds `at`, in `zone`."""
    day = dt.datetime.fromtimestamp(at, zone).date()
    monday = day - dt.timedelta(days=day.weekday())
    return dt.datetime.combine(monday, dt.time(), tzinfo=zone)


def _top(tags: Counter[str], outcomes: int, top: int) -> list[InsightTagOut]:
    """The `top` most frequent tags, ties in name order, with their share of the outcomes."""
    ranked = sorted(tags.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [
        InsightTagOut(tag=tag, count=count, share=round(count / outcomes, RATE_DIGITS))
        for tag, count in ranked
    ]


def insights_report(
    engine: Engine,
    ruleset: RuleSet,
    *,
    rules_version: int,
    window: ReportWindow,
    now: float,
    top: int,
) -> InsightsReportOut:
    """The `top` insight tags of each kind per ISO week, in the calendar's zone (blocking)."""
    c = _OUTCOMES.c
    zone_name = ruleset.calendar.timezone
    zone = ZoneInfo(zone_name)
    weeks: dict[dt.date, _Week] = {}
    query = select(c.completed_at, c.tags).where(
        c.completed_at >= window.start_ts, c.completed_at < window.end_ts
    )
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=_SCAN_BATCH).execute(query)
        for completed_at, tags in result:
            start = _week_start(completed_at, zone)
            week = weeks.get(start.date())
            if week is None:
                week = weeks[start.date()] = _Week(start)
            week.outcomes += 1
            for kind in TAG_KINDS:
                # A tag listed twice on one outcome is still one outcome with that tag.
                week.tags[kind].update(set((tags or {}).get(kind) or ()))
    return InsightsReportOut(
        **_header(window, rules_version, now),
        timezone=zone_name,
        top=top,
        weeks=[
            InsightWeekOut(
                week="{}-W{:02d}".format(*week.start.isocalendar()[:2]),
                week_start=week.start.isoformat(),
                outcomes=week.outcomes,
                **{kind: _top(week.tags[kind], week.outcomes, top) for kind in TAG_KINDS},
            )
            for _, week in sorted(weeks.items())
        ],
    )


def tier_outcomes(
    connection: Connection, ruleset: RuleSet, window: ReportWindow
) -> list[TierOutcomesOut]:
    """Both tiers' outcomes completed in the window, standard first (for the fast-lane report)."""
    groups = tally(connection, window, [_OUTCOMES.c.tier])
    return [
        groups.get((tier,), Figures()).out(
            TierOutcomesOut, tier=tier, tier_name=getattr(ruleset.tiers, tier).display_name
        )
        for tier in TIERS
    ]
