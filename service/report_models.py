"""The shapes of the SLA and fast-lane reports: the window asked for, JSON rows and CSV.

The outcome figures of a group of completed contacts (`OutcomeFiguresOut`) live here too: the
fast-lane report carries them per tier, and the outcome reports (service.outcome_report_models)
build their rows from them.

A report covers the half-open window [from, to), cut into buckets of a fixed length that start
at `from` (so `from` with an offset of +01:00 and interval 1d gives days that start at local
midnight; a day is always 24 h, so across a daylight-saving change the buckets keep their UTC
length and drift by an hour in local time). The last bucket ends at `to` and may be shorter.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.problems import InvalidInput
from sla.config import Tier

IntervalName = Literal["5m", "15m", "30m", "1h", "1d", "1w"]
INTERVAL_SECONDS: dict[str, int] = {
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "1d": 86400,
    "1w": 7 * 86400,
}
MAX_WINDOW_DAYS = 366
# A leap year of hourly buckets: every interval of an hour or more fits any allowed window.
MAX_BUCKETS = 366 * 24
# RFC 3339 instants with a mandatory offset; [0-9] rather than \d, which also takes non-ASCII
# digits.
INSTANT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# Instants outside these bounds are refused: local calendars of the capacity plan are walked a
# day beyond the window, which must stay inside what `datetime` can represent.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ReportWindow:
    """[start, end) cut into buckets of `interval_seconds` starting at `start`."""

    start: dt.datetime
    end: dt.datetime
    interval: str
    interval_seconds: int

    @property
    def start_ts(self) -> float:
        """The window's start in unix seconds."""
        return self.start.timestamp()

    @property
    def end_ts(self) -> float:
        """The window's end (exclusive) in unix seconds."""
        return self.end.timestamp()

    @property
    def bucket_count(self) -> int:
        """How many buckets the window has (the last may be shorter)."""
        return math.ceil((self.end_ts - self.start_ts) / self.interval_seconds)

    def bucket_of(self, at: float) -> int:
        """The bucket an instant inside the window falls in."""
        return int((at - self.start_ts) // self.interval_seconds)

    def bucket_span(self, index: int) -> tuple[float, float]:
        """A bucket's [start, end) in unix seconds."""
        start = self.start_ts + index * self.interval_seconds
        return start, min(start + self.interval_seconds, self.end_ts)

    def bucket_labels(self, index: int) -> tuple[str, str]:
        """A bucket's start and end as ISO-8601 text, in the offset of `from`."""
        start = self.start + dt.timedelta(seconds=index * self.interval_seconds)
        end = min(start + dt.timedelta(seconds=self.interval_seconds), self.end)
        return start.isoformat(), end.astimezone(self.start.tzinfo).isoformat()

    def label(self, at: float) -> str:
        """An instant as ISO-8601 text in the offset of `from`."""
        return dt.datetime.fromtimestamp(at, self.start.tzinfo).isoformat()


def _invalid(field: str, message: str, kind: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", errors=[{"field": field, "message": message, "type": kind}]
    )


def _instant(field: str, text: str) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(field, f"not a valid ISO-8601 instant: {exc}", "datetime_parsing") from None
    if instant.tzinfo is None:
        raise _invalid(field, "needs an offset, e.g. Z or +01:00", "timezone_aware")
    if not EARLIEST <= instant <= LATEST:
        raise _invalid(field, "must lie between 1970-01-01 and 9999-01-01", "out_of_range")
    return instant


def report_window(start: str, end: str, interval: str) -> ReportWindow:
    """The window [start, end) in buckets of `interval`; InvalidInput (422) when unusable."""
    start_at, end_at = _instant("from", start), _instant("to", end)
    if end_at <= start_at:
        raise _invalid("to", "must be after `from`", "window_order")
    if end_at - start_at > dt.timedelta(days=MAX_WINDOW_DAYS):
        days = (end_at - start_at) / dt.timedelta(days=1)
        raise _invalid(
            "to", f"the window is {days:g} days long; at most {MAX_WINDOW_DAYS}", "window_length"
        )
    seconds = INTERVAL_SECONDS.get(interval)
    if seconds is None:
        known = ", ".join(INTERVAL_SECONDS)
        raise _invalid("interval", f"unknown interval {interval!r}; known: {known}", "enum")
    window = ReportWindow(start_at, end_at, interval, seconds)
    if window.bucket_count > MAX_BUCKETS:
        raise _invalid(
            "interval",
            f"{window.bucket_count} buckets of {interval}; at most {MAX_BUCKETS}: "
            "choose a longer interval or a shorter window",
            "too_many_buckets",
        )
    return window


class SlaRowOut(BaseModel):
    """One tier's figures in one bucket and channel, or over the whole window (a total)."""

    row_type: Literal["bucket", "total"]
    bucket_start: str = Field(description="ISO-8601, in the offset of `from`")
    bucket_end: str = Field(description="exclusive; the last bucket ends at `to`")
    channel: str | None = Field(description="null on totals over all channels")
    tier: Tier
    tier_name: str = Field(description="the tier's display name in the active rules")
    offered: int = Field(description="contacts that arrived in the bucket")
    answered: int = Field(description="of those, connected to an agent (at any time)")
    abandoned: int = Field(description="of those, left before being connected")
    short_abandoned: int | None = Field(
        description="abandoned within the SLA's answer_seconds: left out of the SLA; "
        "null without an SLA"
    )
    waiting: int = Field(description="still queued or offered to an agent when the report ran")
    sla_answer_seconds: int | None = Field(description="null without an SLA, and on totals")
    sla_target_percent: float | None
    answered_within_sla: int | None = Field(description="answered within answer_seconds")
    sla_counted: int | None = Field(
        description="answered + abandoned after answer_seconds + still waiting past it"
    )
    within_sla_percent: float | None = Field(
        description="100 × answered_within_sla / sla_counted; null without an SLA or contacts"
    )
    sla_met: bool | None = Field(description="within_sla_percent ≥ sla_target_percent")
    mean_wait_seconds: float | None = Field(description="over answered contacts")
    p90_wait_seconds: float | None = Field(description="nearest rank, over answered contacts")
    mean_handle_seconds: float | None = Field(description="over completed contacts")
    promoted_by_share_cap: int = Field(
        description="standard contacts the fast lane's share cap put ahead of the fast lane"
    )
    promoted_by_starvation_guard: int = Field(
        description="standard contacts the starvation guard put ahead of the fast lane"
    )
    planned_agents: float | None = Field(
        description="mean agents of the capacity plan over the bucket (standard rows)"
    )
    fast_lane_occupancy: float | None = Field(
        description="fast-lane work / planned agent capacity (standard rows)"
    )
    modelled_wait_without_fast_lane_seconds: float | None = Field(
        description="mean standard wait × (1 − fast_lane_occupancy) (standard rows)"
    )
    wait_added_by_fast_lane_seconds: float | None = Field(
        description="mean_wait_seconds − modelled_wait_without_fast_lane_seconds"
    )
    model_note: str | None = Field(description="why the model has no figure, if it has none")


class SlaReportOut(BaseModel):
    """Per tier and channel: offered, answered, abandoned, SLA, waits, and the fast lane's cost."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: str = Field(alias="from")
    to: str
    interval: str
    interval_seconds: int
    generated_at: str
    rules_version: int
    rows: list[SlaRowOut] = Field(
        description="both tiers for every bucket and channel with at least one contact"
    )
    totals: list[SlaRowOut] = Field(
        description="both tiers over the window: per channel, then over all channels"
    )


class PassCountsOut(BaseModel):
    """Passes sold (by kind), consumed, cancelled and refunded in the window."""

    sold: dict[str, int] = Field(description="passes created in the window, by kind")
    consumed: int
    cancelled: int
    refunds: int = Field(description="refunds made in the window")
    automatic_refunds: int = Field(description="of those, made by the refund-on-breach policy")


class RevenueOut(BaseModel):
    """Money in one currency, in minor units, counted when it moved (cash basis)."""

    currency: str
    passes_sold: int
    sold_amount: int
    refunded_amount: int = Field(description="refunds made in the window, whenever sold")
    net_amount: int = Field(description="sold_amount − refunded_amount")
    special_handling_cost: int = Field(description="only in the cost currency of the rules")
    margin: int = Field(description="net_amount − special_handling_cost")


class SpecialHandlingOut(BaseModel):
    """What serving the fast lane cost, at the active rules' cost figures (minor units)."""

    currency: str
    fast_lane_contacts_answered: int
    cost_per_contact: int
    contact_cost: int
    appointment_moves: int = Field(description="appointment.rescheduled events in the window")
    cost_per_reorder: int
    reorder_cost: int
    total_cost: int


class StandardImpactOut(BaseModel):
    """What the fast lane did to the standard tier, and what the protections did to both."""

    standard_answered: int
    standard_mean_wait_seconds: float | None
    modelled_wait_without_fast_lane_seconds: float | None
    wait_added_by_fast_lane_seconds: float | None
    model_note: str | None
    standard_within_sla_percent: float | None
    promoted_by_share_cap: int
    promoted_by_starvation_guard: int
    fast_lane_answered: int
    fast_lane_mean_wait_seconds: float | None
    fast_lane_within_sla_percent: float | None


class CurrencyRevenueOut(BaseModel):
    """Outcome revenue recorded in one currency, in minor units."""

    currency: str
    revenue_minor: int = Field(description="sum of the outcomes' revenue in this currency")
    revenue_per_interaction: float = Field(
        description="revenue_minor / contacts: every outcome of the group is in the denominator"
    )


class OutcomeFiguresOut(BaseModel):
    """What came of a group of completed contacts; a rate is null when its denominator is 0."""

    contacts: int = Field(description="outcomes completed in the window")
    resolved: int
    resolution_rate: float | None = Field(description="resolved / contacts")
    durable: int = Field(description="resolved and no repeat contact recorded")
    durable_resolution_rate: float | None = Field(description="durable / contacts")
    repeat_contacts: int = Field(description="outcomes that repeat an earlier contact")
    repeat_rate: float | None = Field(description="repeat_contacts / contacts")
    nps_responses: int = Field(description="outcomes with an NPS answer")
    promoters: int = Field(description="NPS answers of 9 or 10")
    detractors: int = Field(description="NPS answers of 0 to 6")
    nps: float | None = Field(description="100 × (promoters − detractors) / nps_responses")
    upsells: int
    upsell_conversion: float | None = Field(description="upsells / contacts")
    cross_sells: int
    cross_sell_conversion: float | None = Field(description="cross_sells / contacts")
    mean_handle_seconds: float | None
    revenue: list[CurrencyRevenueOut] = Field(description="one entry per currency recorded")


class TierKeyOut(BaseModel):
    """The tier a row of outcome figures belongs to."""

    tier: Tier
    tier_name: str = Field(description="the tier's display name in the active rules")


# Base order puts the key first: pydantic lists the fields of the last base first.
class TierOutcomesOut(OutcomeFiguresOut, TierKeyOut):
    """Outcomes of one tier's contacts completed in the window."""


class FastLaneReportOut(BaseModel):
    """Passes, revenue net of refunds, special-handling cost and the standard tier's wait."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: str = Field(alias="from")
    to: str
    interval: str = Field(description="the buckets the standard-tier wait model works in")
    interval_seconds: int
    generated_at: str
    rules_version: int
    passes: PassCountsOut
    revenue: list[RevenueOut] = Field(description="one entry per currency")
    special_handling: SpecialHandlingOut
    standard_tier_impact: StandardImpactOut
    outcomes_by_tier: list[TierOutcomesOut] = Field(
        description="both tiers' outcomes of contacts completed in the window"
    )


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection); tier
# names and channels come from the rules, so text cells get a leading apostrophe then.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(value)


def csv_table(header: list[str], rows: list[list[Any]]) -> str:
    """CSV text with CRLF line ends; text cells that a spreadsheet would run are defused."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


SLA_CSV_COLUMNS = list(SlaRowOut.model_fields)


def sla_csv(report: SlaReportOut) -> str:
    """The SLA report as CSV: a header, the bucket rows, then the total rows."""
    rows = [list(row.model_dump().values()) for row in (*report.rows, *report.totals)]
    return csv_table(SLA_CSV_COLUMNS, rows)


_MONEY = {"cost_per_contact", "contact_cost", "cost_per_reorder", "reorder_cost", "total_cost"}


def fastlane_csv(report: FastLaneReportOut) -> str:
    """The fast-lane report as CSV: one `figure,currency,value` row per figure."""
    rows: list[list[Any]] = [
        ["from", None, report.from_],
        ["to", None, report.to],
        ["interval", None, report.interval],
        ["generated_at", None, report.generated_at],
        ["rules_version", None, report.rules_version],
    ]
    passes = report.passes
    rows += [[f"passes.sold.{kind}", None, count] for kind, count in passes.sold.items()]
    rows += [
        [f"passes.{name}", None, value]
        for name, value in passes.model_dump(exclude={"sold"}).items()
    ]
    for money in report.revenue:
        rows += [
            [f"revenue.{name}", money.currency, value]
            for name, value in money.model_dump(exclude={"currency"}).items()
        ]
    handling = report.special_handling
    rows += [
        [f"special_handling.{name}", handling.currency if name in _MONEY else None, value]
        for name, value in handling.model_dump(exclude={"currency"}).items()
    ]
    rows += [
        [f"standard_tier_impact.{name}", None, value]
        for name, value in report.standard_tier_impact.model_dump().items()
    ]
    for tier in report.outcomes_by_tier:
        prefix = f"outcomes.{tier.tier}"
        scalars = tier.model_dump(exclude={"tier", "revenue"})
        rows += [[f"{prefix}.{name}", None, value] for name, value in scalars.items()]
        for earned in tier.revenue:
            rows += [
                [f"{prefix}.{name}", earned.currency, value]
                for name, value in earned.model_dump(exclude={"currency"}).items()
            ]
    return csv_table(["figure", "currency", "value"], rows)
