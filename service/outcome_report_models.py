"""The shapes of the outcome reports (agents, revenue, a journey stage, insights) and their CSV.

Every CSV but the insights one is flat in the same way: the row's key columns, the scalar
outcome figures, then `currency, revenue_minor, revenue_per_interaction`, one line per currency
the row recorded revenue in (a row without revenue has one line with those three cells empty).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.problems import InvalidInput
from service.report_models import (
    OutcomeFiguresOut,
    ReportWindow,
    csv_table,
    report_window,
)

AgentSort = Literal["durable_resolution", "resolution", "nps", "revenue"]
RevenueGroup = Literal["segment", "inquiry_type", "journey_stage", "tier"]
TAG_KINDS = ("needs", "frustrations", "requests")
MAX_TOP = 50


def outcome_window(start: str, end: str) -> ReportWindow:
    """The window [start, end) of an outcome report; InvalidInput (422) when unusable.

    Outcome reports have no buckets: the window is checked as the SLA report checks it (order,
    at most 366 days), and a day-long interval never exceeds the bucket limit.
    """
    return report_window(start, end, "1d")


def check_name(field: str, value: str, known: Sequence[str]) -> None:
    """Raise InvalidInput (422) unless `value` is one of the vocabulary's `known` names."""
    if value in known:
        return
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    message = f"unknown {field} {value!r}; {hint}known: {', '.join(known)}"
    raise InvalidInput(
        f"query.{field}: {message}",
        errors=[{"field": f"query.{field}", "type": "unknown_name", "message": message}],
    )


class _OutcomeReportOut(BaseModel):
    """What every outcome report states about itself."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: str = Field(alias="from")
    to: str
    generated_at: str
    rules_version: int


class AgentKeyOut(BaseModel):
    """An agent's place on the leaderboard."""

    rank: int = Field(description="1 for the best agent by `sort`")
    agent_id: str


class AgentRowOut(OutcomeFiguresOut, AgentKeyOut):
    """One agent's outcomes in the window."""


class AgentFiltersOut(BaseModel):
    """The contact facts the leaderboard was restricted to (null: any)."""

    inquiry_type: str | None
    segment: str | None
    journey_stage: str | None


class AgentsReportOut(_OutcomeReportOut):
    """Agents ranked by an outcome figure."""

    sort: AgentSort
    sort_currency: str = Field(description="the currency whose revenue per interaction ranks")
    min_contacts: int
    filters: AgentFiltersOut
    agents: list[AgentRowOut] = Field(description="best first; ties by agent_id")


class GroupKeyOut(BaseModel):
    """The group a row of the revenue report covers."""

    group: str | None = Field(description="the segment, inquiry type, journey stage or tier")
    group_name: str | None = Field(description="the tier's display name by tier, else `group`")


class RevenueRowOut(OutcomeFiguresOut, GroupKeyOut):
    """One group's outcomes in the window."""


class RevenueReportOut(_OutcomeReportOut):
    """Revenue, conversion and resolution by segment, inquiry type, journey stage or tier."""

    group_by: RevenueGroup
    groups: list[RevenueRowOut] = Field(description="in name order; by tier, both tiers always")
    total: RevenueRowOut = Field(description="every outcome of the window (group null)")


class StageRowOut(BaseModel):
    """One inquiry type (or all of them) in the stage, beside all other stages."""

    inquiry_type: str | None = Field(description="null on the total")
    stage: OutcomeFiguresOut = Field(description="outcomes of contacts in the stage")
    other_stages: OutcomeFiguresOut = Field(description="outcomes of contacts in any other stage")


class OnboardingReportOut(_OutcomeReportOut):
    """A journey stage's outcomes by inquiry type, compared with every other stage."""

    stage: str
    inquiry_types: list[StageRowOut] = Field(
        description="every inquiry type with an outcome in the window, in name order"
    )
    total: StageRowOut


class InsightTagOut(BaseModel):
    """One tag's count in one week."""

    tag: str
    count: int = Field(description="outcomes of the week carrying the tag")
    share: float = Field(description="count / the week's outcomes")


class InsightWeekOut(BaseModel):
    """One ISO week's most frequent tags of each kind."""

    week: str = Field(description="ISO week, e.g. 2027-W02")
    week_start: str = Field(description="Monday 00:00 in the report's time zone")
    outcomes: int = Field(description="outcomes completed in the week and in the window")
    needs: list[InsightTagOut]
    frustrations: list[InsightTagOut]
    requests: list[InsightTagOut]


class InsightsReportOut(_OutcomeReportOut):
    """The most frequent insight tags per ISO week and kind."""

    timezone: str = Field(description="weeks run Monday to Sunday in this time zone")
    top: int
    weeks: list[InsightWeekOut] = Field(description="weeks with an outcome, earliest first")


FIGURE_COLUMNS = [name for name in OutcomeFiguresOut.model_fields if name != "revenue"]
REVENUE_COLUMNS = ["currency", "revenue_minor", "revenue_per_interaction"]


def _figure_lines(key: list[Any], figures: OutcomeFiguresOut) -> list[list[Any]]:
    """The CSV lines of one row: its key, its scalar figures, then one line per currency."""
    scalars = [getattr(figures, name) for name in FIGURE_COLUMNS]
    if not figures.revenue:
        return [[*key, *scalars, None, None, None]]
    return [
        [*key, *scalars, money.currency, money.revenue_minor, money.revenue_per_interaction]
        for money in figures.revenue
    ]


AGENTS_CSV_COLUMNS = ["rank", "agent_id", *FIGURE_COLUMNS, *REVENUE_COLUMNS]


def agents_csv(report: AgentsReportOut) -> str:
    """The leaderboard as CSV: one line per agent and currency, best agent first."""
    lines = [line for row in report.agents for line in _figure_lines([row.rank, row.agent_id], row)]
    return csv_table(AGENTS_CSV_COLUMNS, lines)


REVENUE_CSV_COLUMNS = ["row_type", "group_by", "group", "group_name"]
REVENUE_CSV_COLUMNS += [*FIGURE_COLUMNS, *REVENUE_COLUMNS]


def revenue_csv(report: RevenueReportOut) -> str:
    """The revenue report as CSV: one line per group and currency, then the total's."""
    lines: list[list[Any]] = []
    for row_type, row in [*(("group", g) for g in report.groups), ("total", report.total)]:
        lines += _figure_lines([row_type, report.group_by, row.group, row.group_name], row)
    return csv_table(REVENUE_CSV_COLUMNS, lines)


ONBOARDING_CSV_COLUMNS = ["row_type", "inquiry_type", "part", "journey_stage"]
ONBOARDING_CSV_COLUMNS += [*FIGURE_COLUMNS, *REVENUE_COLUMNS]


def onboarding_csv(report: OnboardingReportOut) -> str:
    """The stage report as CSV: per inquiry type, then the total, the stage's lines
    (`part` stage) and the other stages' (`part` other_stages), one line per currency."""
    rows = [*(("inquiry_type", r) for r in report.inquiry_types), ("total", report.total)]
    lines: list[list[Any]] = []
    for row_type, row in rows:
        lines += _figure_lines([row_type, row.inquiry_type, "stage", report.stage], row.stage)
        lines += _figure_lines([row_type, row.inquiry_type, "other_stages", None], row.other_stages)
    return csv_table(ONBOARDING_CSV_COLUMNS, lines)


INSIGHTS_CSV_COLUMNS = ["week", "week_start", "outcomes", "kind", "rank", "tag", "count", "share"]


def insights_csv(report: InsightsReportOut) -> str:
    """The insights report as CSV: one line per week, kind and tag (rank 1 = most frequent);
    a week without any tag has one line with the tag columns empty."""
    lines: list[list[Any]] = []
    for week in report.weeks:
        key = [week.week, week.week_start, week.outcomes]
        tagged = [
            [*key, kind, rank, tag.tag, tag.count, tag.share]
            for kind in TAG_KINDS
            for rank, tag in enumerate(getattr(week, kind), start=1)
        ]
        lines += tagged or [[*key, None, None, None, None, None]]
    return csv_table(INSIGHTS_CSV_COLUMNS, lines)
