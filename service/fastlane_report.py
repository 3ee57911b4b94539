"""The fast-lane report: passes sold, consumed and refunded, revenue, costs, standard impact.

Definitions are in `service.reports` (fast-lane money is counted on a cash basis). The
outcomes per tier cover contacts completed in the window, as the outcome reports count them
(definitions in `service.outcome_reports`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from routing_rules.schema import RuleSet
from service.outcome_reports import tier_outcomes
from service.report_models import (
    FastLaneReportOut,
    PassCountsOut,
    ReportWindow,
    RevenueOut,
    SpecialHandlingOut,
    StandardImpactOut,
)
from service.reports import contacts_analysis
from service.storage.tables import OutboxRow, PassRow, RefundRow

_PASSES = PassRow.__table__  # type: ignore[attr-defined]
_REFUNDS = RefundRow.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
PASS_KINDS = ("single_incident", "subscription")
REORDER_EVENT = "appointment.rescheduled"


def _between(column: Any, window: ReportWindow) -> ColumnElement[bool]:
    return and_(column >= window.start_ts, column < window.end_ts)


def _count(connection: Connection, table: Any, *conditions: ColumnElement[bool]) -> int:
    return int(connection.scalar(select(func.count()).select_from(table).where(*conditions)) or 0)


@dataclass(slots=True)
class _Money:
    passes_sold: int = 0
    sold_amount: int = 0
    refunded_amount: int = 0


def fastlane_report(
    engine: Engine, ruleset: RuleSet, *, rules_version: int, window: ReportWindow, now: float
) -> FastLaneReportOut:
    """The fast-lane report over `window` under the active rules (blocking: run in a thread)."""
    p, r, o = _PASSES.c, _REFUNDS.c, _OUTBOX.c
    sold = dict.fromkeys(PASS_KINDS, 0)
    money: defaultdict[str, _Money] = defaultdict(_Money)
    with engine.connect() as connection:
        analysis = contacts_analysis(connection, ruleset, window, now)
        for kind, currency, count, amount in connection.execute(
            select(p.kind, p.currency, func.count(), func.sum(p.price_amount))
            .where(_between(p.created_at, window))
            .group_by(p.kind, p.currency)
        ):
            sold[kind] = sold.get(kind, 0) + int(count)
            money[currency].passes_sold += int(count)
            money[currency].sold_amount += int(amount or 0)
        refunds = automatic = 0
        for currency, count, amount, automatic_count in connection.execute(
            select(
                r.currency,
                func.count(),
                func.sum(r.amount),
                func.sum(case((r.automatic, 1), else_=0)),
            )
            .where(_between(r.created_at, window))
            .group_by(r.currency)
        ):
            refunds += int(count)
            automatic += int(automatic_count or 0)
            money[currency].refunded_amount += int(amount or 0)
        consumed = _count(connection, _PASSES, _between(p.consumed_at, window))
        cancelled = _count(connection, _PASSES, _between(p.cancelled_at, window))
        moves = _count(connection, _OUTBOX, o.type == REORDER_EVENT, _between(o.created_at, window))
        outcomes = tier_outcomes(connection, ruleset, window)
    costs = ruleset.fast_lane
    standard, fast = analysis.overall("standard"), analysis.overall("fast_lane")
    handling = SpecialHandlingOut(
        currency=costs.currency,
        fast_lane_contacts_answered=fast.answered,
        cost_per_contact=costs.cost_per_contact,
        contact_cost=costs.cost_per_contact * fast.answered,
        appointment_moves=moves,
        cost_per_reorder=costs.cost_per_reorder,
        reorder_cost=costs.cost_per_reorder * moves,
        total_cost=costs.cost_per_contact * fast.answered + costs.cost_per_reorder * moves,
    )
    revenue = []
    # The cost currency always gets an entry: its cost is spent even without a sale.
    for currency in sorted({*money, costs.currency}):
        figures = money.get(currency, _Money())
        cost = handling.total_cost if currency == costs.currency else 0
        net = figures.sold_amount - figures.refunded_amount
        revenue.append(
            RevenueOut(
                currency=currency,
                passes_sold=figures.passes_sold,
                sold_amount=figures.sold_amount,
                refunded_amount=figures.refunded_amount,
                net_amount=net,
                special_handling_cost=cost,
                margin=net - cost,
            )
        )
    return FastLaneReportOut(
        from_=window.start.isoformat(),
        to=window.end.isoformat(),
        interval=window.interval,
        interval_seconds=window.interval_seconds,
        generated_at=window.label(now),
        rules_version=rules_version,
        passes=PassCountsOut(
            sold=sold,
            consumed=consumed,
            cancelled=cancelled,
            refunds=refunds,
            automatic_refunds=automatic,
        ),
        revenue=revenue,
        special_handling=handling,
        standard_tier_impact=StandardImpactOut(
            standard_answered=standard.answered,
            standard_mean_wait_seconds=standard.mean_wait_seconds,
            modelled_wait_without_fast_lane_seconds=standard.modelled_wait_without_fast_lane_seconds,
            wait_added_by_fast_lane_seconds=standard.wait_added_by_fast_lane_seconds,
            model_note=standard.model_note,
            standard_within_sla_percent=standard.within_sla_percent,
            promoted_by_share_cap=standard.promoted_by_share_cap,
            promoted_by_starvation_guard=standard.promoted_by_starvation_guard,
            fast_lane_answered=fast.answered,
            fast_lane_mean_wait_seconds=fast.mean_wait_seconds,
            fast_lane_within_sla_percent=fast.within_sla_percent,
        ),
        outcomes_by_tier=outcomes,
    )
