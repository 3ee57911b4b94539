"""SLA and fast-lane reports, computed from the contacts, passes, refunds and outbox tables.

Definitions (per tier, for each bucket and channel, and in totals over the window):

- A contact belongs to the bucket it was **offered** in (its arrival, `created_at`), whatever
  happened to it later. `answered`: connected to an agent; its wait is connected_at −
  created_at. `abandoned`: left before being connected. `waiting`: still queued or offered to
  an agent when the report runs.
- **% within SLA** = answered within answer_seconds / (answered + abandoned after
  answer_seconds + still waiting past answer_seconds). Abandons at or before answer_seconds
  ("short abandons") count in neither part; a contact still waiting past the threshold can
  only end as a late answer or a late abandon, so it already counts as a miss and the figure
  does not improve by itself later. The SLA is the tier's for the contact's channel in the
  active rules; without one the SLA figures are null. Totals over all channels judge each
  contact by its own channel's SLA.
- **Mean and p90 wait** over answered contacts; p90 by nearest rank (the ⌈0.9·n⌉-th shortest).
- **Modelled standard wait without the fast lane** (standard rows), by the conservation law:
  W_without = W_measured × (1 − ρ_fast), with ρ_fast = fast-lane work / planned agent
  capacity of the bucket. Fast-lane work = fast-lane contacts answered × their mean handle
  time (measured over the window's completed fast-lane contacts of the channel; the capacity
  plan's handle_seconds when none completed). Capacity = agent-seconds of the capacity plan
  over the bucket, in the plan's time zone. It is the standard tier's wait had the same
  contacts been served first come, first served: the cost of the fast lane's priority. It does
  not take the fast-lane contacts' own load away, so the wait with no fast lane at all would be
  lower still (see sla/priority.py). No fast-lane contact answered: ρ_fast = 0 and the model
  equals the measurement. Otherwise, without a plan for the channel, without planned agents in
  the bucket, or with ρ_fast ≥ 1 (the plan understates staffing) the model is null and
  `model_note` says why. A total's modelled wait is the answered-weighted mean of its buckets'
  (load and staffing change within a window), and null if any bucket with answered standard
  contacts has none; its occupancy is the window's fast-lane work over the window's capacity.
- **Protections**: standard contacts the share cap or the starvation guard put ahead of
  waiting fast-lane contacts are counted on the standard rows, beside the fast lane's own wait
  and SLA in the same bucket.
- **Fast-lane money** (cash basis, minor units): passes sold = created in the window, by kind
  and currency; refunds = refunds made in the window (whenever the pass was sold); net = sold
  − refunded. Special-handling cost = cost_per_contact × fast-lane contacts answered (offered in
  the window, as in the SLA report) + cost_per_reorder × `appointment.rescheduled` events in
  the window, at the active rules' figures, in their currency; margin = net − cost.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from routing_rules.schema import RuleSet
from service.report_models import (
    ReportWindow,
    SlaReportOut,
    SlaRowOut,
)
from service.storage.tables import ContactRow, OutboxRow, PassRow, RefundRow
from sla.config import TIERS, ServiceLevel, Tier
from sla.precedence import SHARE_CAP, STARVATION_GUARD
from sla.staffing import PlannedStaffing

_CONTACTS = ContactRow.__table__  # type: ignore[attr-defined]
_PASSES = PassRow.__table__  # type: ignore[attr-defined]
_REFUNDS = RefundRow.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
PASS_KINDS = ("single_incident", "subscription")
REORDER_EVENT = "appointment.rescheduled"
# Rows fetched per round trip: memory stays bounded while the scan streams.
_SCAN_BATCH = 10_000
NO_STANDARD = "no answered standard-tier contacts"
RowType = Literal["bucket", "total"]


@dataclass(slots=True)
class _Tally:
    """Running figures of one group of contacts (a bucket, channel and tier, or a total)."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    waiting: int = 0
    within: int = 0
    counted: int = 0
    handled: int = 0
    handle_seconds: float = 0.0
    share_cap: int = 0
    starvation_guard: int = 0
    waits: array[float] = field(default_factory=lambda: array("d"))

    def absorb(self, other: _Tally) -> None:
        """Add another group's figures to these."""
        self.offered += other.offered
        self.answered += other.answered
        self.abandoned += other.abandoned
        self.short_abandoned += other.short_abandoned
        self.waiting += other.waiting
        self.within += other.within
        self.counted += other.counted
        self.handled += other.handled
        self.handle_seconds += other.handle_seconds
        self.share_cap += other.share_cap
        self.starvation_guard += other.starvation_guard
        self.waits.extend(other.waits)

    @property
    def mean_wait(self) -> float | None:
        """Mean wait of the answered contacts."""
        return sum(self.waits) / len(self.waits) if self.waits else None

    @property
    def p90_wait(self) -> float | None:
        """The nearest-rank 90th percentile wait of the answered contacts."""
        if not self.waits:
            return None
        rank = (9 * len(self.waits) + 9) // 10  # ⌈0.9·n⌉ in integers: no float rounding
        return sorted(self.waits)[rank - 1]

    @property
    def mean_handle(self) -> float | None:
        """Mean handle time of the completed contacts."""
        return self.handle_seconds / self.handled if self.handled else None


Cells = dict[tuple[int, str, Tier], _Tally]


def _tally_contacts(
    connection: Connection,
    window: ReportWindow,
    answer_seconds: dict[tuple[Tier, str], int],
    now: float,
) -> Cells:
    """One streaming pass over the window's contacts, tallied by (bucket, channel, tier)."""
    c = _CONTACTS.c
    query = select(
        c.channel,
        c.tier,
        c.status,
        c.created_at,
        c.connected_at,
        c.ended_at,
        c.updated_at,
        c.promoted_by,
    ).where(c.created_at >= window.start_ts, c.created_at < window.end_ts)
    cells: Cells = {}
    start, length = window.start_ts, window.interval_seconds
    result = connection.execution_options(yield_per=_SCAN_BATCH).execute(query)
    for channel, tier_value, status, created, connected, ended, updated, promoted in result:
        tier: Tier = "fast_lane" if tier_value == "fast_lane" else "standard"
        key = (int((created - start) // length), channel, tier)
        tally = cells.get(key)
        if tally is None:
            tally = cells[key] = _Tally()
        tally.offered += 1
        limit = answer_seconds.get((tier, channel))
        if connected is not None:
            # Clocks of two replicas may disagree by a little; a wait is never negative.
            wait = max(connected - created, 0.0)
            tally.answered += 1
            tally.waits.append(wait)
            if limit is not None:
                tally.counted += 1
                tally.within += wait <= limit
            if status == "completed" and ended is not None:
                tally.handled += 1
                tally.handle_seconds += max(ended - connected, 0.0)
        elif status == "abandoned":
            tally.abandoned += 1
            if limit is not None:
                left = (ended if ended is not None else updated) - created
                if left <= limit:
                    tally.short_abandoned += 1
                else:
                    tally.counted += 1
        elif status in ("queued", "reserved"):
            tally.waiting += 1
            if limit is not None and now - created > limit:
                tally.counted += 1
        if promoted == SHARE_CAP:
            tally.share_cap += 1
        elif promoted == STARVATION_GUARD:
            tally.starvation_guard += 1
    return cells


@dataclass(frozen=True, slots=True)
class _Model:
    """The standard tier's modelled wait without the fast lane, or why there is none."""

    occupancy: float | None
    modelled: float | None
    note: str | None


def _occupancy(
    fast_answered: int, channel: str, capacity: float | None, fast_handle: float | None, span: str
) -> tuple[float | None, str | None]:
    """ρ_fast = fast-lane work / planned agent-seconds, or None and the reason."""
    if fast_answered == 0:
        return 0.0, None
    if capacity is None or fast_handle is None:
        return None, f"no capacity plan for channel {channel!r}"
    if capacity <= 0:
        return None, f"no agents planned for channel {channel!r} in this {span}"
    return fast_answered * fast_handle / capacity, None


def _model(
    standard: _Tally,
    fast: _Tally,
    *,
    channel: str,
    capacity: float | None,
    fast_handle: float | None,
) -> _Model:
    """The conservation-law model of one bucket and channel."""
    occupancy, reason = _occupancy(fast.answered, channel, capacity, fast_handle, "interval")
    measured = standard.mean_wait
    if measured is None:
        return _Model(occupancy, None, NO_STANDARD)
    if occupancy is None:
        return _Model(None, None, reason)
    if occupancy >= 1:
        return _Model(
            occupancy,
            None,
            f"fast-lane work exceeds the planned agent capacity (occupancy {occupancy:.2f}): "
            "the capacity plan understates staffing",
        )
    return _Model(occupancy, measured * (1 - occupancy), None)


@dataclass(slots=True)
class _ModelSum:
    """Bucket models added up into a total: an answered-weighted mean, or why there is none."""

    answered: int = 0
    weighted: float = 0.0
    buckets: int = 0
    missing: int = 0
    first_note: str | None = None

    def add(self, standard: _Tally, model: _Model) -> None:
        """Count one bucket's model (buckets without answered standard contacts do not count)."""
        if not standard.answered:
            return
        self.buckets += 1
        if model.modelled is None:
            self.missing += 1
            self.first_note = self.first_note or model.note
        else:
            self.answered += standard.answered
            self.weighted += standard.answered * model.modelled

    def absorb(self, other: _ModelSum) -> None:
        """Add another total's buckets to these."""
        self.answered += other.answered
        self.weighted += other.weighted
        self.buckets += other.buckets
        self.missing += other.missing
        self.first_note = self.first_note or other.first_note

    def result(self) -> tuple[float | None, str | None]:
        """The total's modelled wait, or None and the reason."""
        if not self.buckets:
            return None, NO_STANDARD
        if self.missing:
            return None, (
                f"no model for {self.missing} of {self.buckets} intervals with answered "
                f"standard-tier contacts ({self.first_note})"
            )
        return self.weighted / self.answered, None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every row of one report shares, from the active rules and the window's contacts."""

    names: dict[Tier, str]
    levels: dict[tuple[Tier, str], ServiceLevel]
    staffing: dict[str, PlannedStaffing]  # channels with a capacity plan
    fast_handle: dict[str, float]  # per planned channel: fast-lane handle time for the model

    def capacity(self, channel: str, start: float, end: float) -> float | None:
        """Planned agent-seconds of a channel in [start, end); None without a plan."""
        staffing = self.staffing.get(channel)
        return staffing.agent_seconds(start, end) if staffing is not None else None


def _context(
    ruleset: RuleSet, window: ReportWindow, by_channel: dict[tuple[str, Tier], _Tally]
) -> _Context:
    """Tier names, SLAs, staffing and fast-lane handle times for one report."""
    tiers, plan = ruleset.tiers, ruleset.capacity_plan
    zone = ZoneInfo(plan.timezone)
    staffing = {
        channel: PlannedStaffing(plan.channels[channel], zone, window.start_ts, window.end_ts)
        for channel, _ in by_channel
        if channel in plan.channels
    }
    fast_handle: dict[str, float] = {}
    for channel in staffing:
        measured = by_channel[channel, "fast_lane"].mean_handle
        fast_handle[channel] = (
            measured if measured is not None else float(plan.channels[channel].handle_seconds)
        )
    return _Context(
        names={"standard": tiers.standard.display_name, "fast_lane": tiers.fast_lane.display_name},
        levels={
            (tier, channel): level
            for tier in TIERS
            for channel, level in getattr(tiers, tier).sla.items()
        },
        staffing=staffing,
        fast_handle=fast_handle,
    )


def _row(
    context: _Context,
    *,
    row_type: RowType,
    labels: tuple[str, str],
    channel: str | None,
    tier: Tier,
    tally: _Tally,
    sla_applies: bool,
    model: _Model | None = None,
    planned_agents: float | None = None,
) -> SlaRowOut:
    """One report row; `model` only on standard rows."""
    level = context.levels.get((tier, channel)) if channel is not None else None
    percent = 100 * tally.within / tally.counted if sla_applies and tally.counted else None
    target = float(level.target_percent) if level is not None else None
    measured = tally.mean_wait
    modelled = model.modelled if model is not None else None
    return SlaRowOut(
        row_type=row_type,
        bucket_start=labels[0],
        bucket_end=labels[1],
        channel=channel,
        tier=tier,
        tier_name=context.names[tier],
        offered=tally.offered,
        answered=tally.answered,
        abandoned=tally.abandoned,
        short_abandoned=tally.short_abandoned if sla_applies else None,
        waiting=tally.waiting,
        sla_answer_seconds=level.answer_seconds if level is not None else None,
        sla_target_percent=target,
        answered_within_sla=tally.within if sla_applies else None,
        sla_counted=tally.counted if sla_applies else None,
        within_sla_percent=_round(percent, 2),
        sla_met=percent >= target if percent is not None and target is not None else None,
        mean_wait_seconds=_round(measured, 3),
        p90_wait_seconds=_round(tally.p90_wait, 3),
        mean_handle_seconds=_round(tally.mean_handle, 3),
        promoted_by_share_cap=tally.share_cap,
        promoted_by_starvation_guard=tally.starvation_guard,
        planned_agents=_round(planned_agents, 3),
        fast_lane_occupancy=_round(model.occupancy, 4) if model is not None else None,
        modelled_wait_without_fast_lane_seconds=_round(modelled, 3),
        wait_added_by_fast_lane_seconds=(
            _round(measured - modelled, 3)
            if measured is not None and modelled is not None
            else None
        ),
        model_note=model.note if model is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Analysis:
    """The SLA report's rows and totals; the last two totals cover all channels."""

    rows: list[SlaRowOut]
    totals: list[SlaRowOut]

    def overall(self, tier: Tier) -> SlaRowOut:
        """One tier's total over all channels."""
        return next(t for t in reversed(self.totals) if t.channel is None and t.tier == tier)


def _analyse(ruleset: RuleSet, window: ReportWindow, cells: Cells) -> _Analysis:
    """Rows per bucket × channel × tier and totals, with the standard tier's model."""
    channels = sorted({channel for _, channel, _ in cells})
    by_channel = {(channel, tier): _Tally() for channel in channels for tier in TIERS}
    for (_, channel, tier), tally in cells.items():
        by_channel[channel, tier].absorb(tally)
    context = _context(ruleset, window, by_channel)
    sums = {channel: _ModelSum() for channel in channels}
    rows = _bucket_rows(context, window, cells, sums)
    return _Analysis(rows, _total_rows(context, window, by_channel, sums))


def _bucket_rows(
    context: _Context, window: ReportWindow, cells: Cells, sums: dict[str, _ModelSum]
) -> list[SlaRowOut]:
    """Both tiers of every bucket and channel with a contact; adds each model to `sums`."""
    empty = _Tally()
    rows: list[SlaRowOut] = []
    for bucket, channel in sorted({(bucket, channel) for bucket, channel, _ in cells}):
        standard = cells.get((bucket, channel, "standard"), empty)
        fast = cells.get((bucket, channel, "fast_lane"), empty)
        start, end = window.bucket_span(bucket)
        capacity = context.capacity(channel, start, end)
        model = _model(
            standard,
            fast,
            channel=channel,
            capacity=capacity,
            fast_handle=context.fast_handle.get(channel),
        )
        sums[channel].add(standard, model)
        rows += _tier_pair(
            context,
            row_type="bucket",
            labels=window.bucket_labels(bucket),
            channel=channel,
            standard=standard,
            fast=fast,
            model=model,
            planned_agents=capacity / (end - start) if capacity is not None else None,
        )
    return rows


def _total_rows(
    context: _Context,
    window: ReportWindow,
    by_channel: dict[tuple[str, Tier], _Tally],
    sums: dict[str, _ModelSum],
) -> list[SlaRowOut]:
    """Both tiers over the window per channel, then over all channels."""
    whole = (window.start.isoformat(), window.end.astimezone(window.start.tzinfo).isoformat())
    length = window.end_ts - window.start_ts
    totals: list[SlaRowOut] = []
    overall = {tier: _Tally() for tier in TIERS}
    overall_sum = _ModelSum()
    for channel, model_sum in sums.items():
        standard, fast = by_channel[channel, "standard"], by_channel[channel, "fast_lane"]
        capacity = context.capacity(channel, window.start_ts, window.end_ts)
        occupancy, _ = _occupancy(
            fast.answered, channel, capacity, context.fast_handle.get(channel), "window"
        )
        totals += _tier_pair(
            context,
            row_type="total",
            labels=whole,
            channel=channel,
            standard=standard,
            fast=fast,
            model=_Model(occupancy, *model_sum.result()),
            planned_agents=capacity / length if capacity is not None else None,
        )
        overall["standard"].absorb(standard)
        overall["fast_lane"].absorb(fast)
        overall_sum.absorb(model_sum)
    # Occupancy and staffing are per channel (their plans differ); the all-channel totals
    # carry only the modelled wait, the answered-weighted mean over every bucket and channel.
    totals += _tier_pair(
        context,
        row_type="total",
        labels=whole,
        channel=None,
        standard=overall["standard"],
        fast=overall["fast_lane"],
        model=_Model(None, *overall_sum.result()),
        planned_agents=None,
        sla_channels=list(sums),
    )
    return totals


def _tier_pair(
    context: _Context,
    *,
    row_type: RowType,
    labels: tuple[str, str],
    channel: str | None,
    standard: _Tally,
    fast: _Tally,
    model: _Model,
    planned_agents: float | None,
    sla_channels: list[str] | None = None,
) -> list[SlaRowOut]:
    """The standard row (with the model) and the fast-lane row of one bucket or total."""
    scope = [channel] if channel is not None else sla_channels or []

    def applies(tier: Tier) -> bool:
        return any((tier, name) in context.levels for name in scope)

    common: dict[str, Any] = {"row_type": row_type, "labels": labels, "channel": channel}
    return [
        _row(
            context,
            **common,
            tier="standard",
            tally=standard,
            sla_applies=applies("standard"),
            model=model,
            planned_agents=planned_agents,
        ),
        _row(context, **common, tier="fast_lane", tally=fast, sla_applies=applies("fast_lane")),
    ]


def contacts_analysis(
    connection: Connection, ruleset: RuleSet, window: ReportWindow, now: float
) -> _Analysis:
    """Every contact offered in the window, tallied per bucket, channel and tier."""
    answer_seconds = {
        (tier, channel): level.answer_seconds
        for tier in TIERS
        for channel, level in getattr(ruleset.tiers, tier).sla.items()
    }
    return _analyse(ruleset, window, _tally_contacts(connection, window, answer_seconds, now))


def sla_report(
    engine: Engine, ruleset: RuleSet, *, rules_version: int, window: ReportWindow, now: float
) -> SlaReportOut:
    """The SLA report over `window` under the active rules (blocking: run it in a thread)."""
    with engine.connect() as connection:
        analysis = contacts_analysis(connection, ruleset, window, now)
    return SlaReportOut(
        from_=window.start.isoformat(),
        to=window.end.isoformat(),
        interval=window.interval,
        interval_seconds=window.interval_seconds,
        generated_at=window.label(now),
        rules_version=rules_version,
        rows=analysis.rows,
        totals=analysis.totals,
    )
