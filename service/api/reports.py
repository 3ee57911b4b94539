"""Reports for admins (JSON or CSV): SLA per tier, the fast lane's revenue, cost and impact,
and the outcome reports: agent leaderboard, revenue by group, a journey stage, insight tags."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from routing_rules.schema import RuleSet
from service import clock
from service.api.deps import RulesAdmin, RulesDep, SingleValuedQuery
from service.fastlane_report import fastlane_report
from service.models import problems
from service.outcome_report_models import (
    MAX_TOP,
    AgentFiltersOut,
    AgentSort,
    AgentsReportOut,
    InsightsReportOut,
    OnboardingReportOut,
    RevenueGroup,
    RevenueReportOut,
    agents_csv,
    check_name,
    insights_csv,
    onboarding_csv,
    outcome_window,
    revenue_csv,
)
from service.outcome_reports import agents_report, insights_report, revenue_report, stage_report
from service.report_models import (
    INSTANT_PATTERN,
    FastLaneReportOut,
    IntervalName,
    ReportWindow,
    SlaReportOut,
    fastlane_csv,
    report_window,
    sla_csv,
)
from service.reports import sla_report
from service.rules_store import RulesStore

router = APIRouter(prefix="/v1", tags=["reports"])

_EXAMPLE_FROM, _EXAMPLE_TO = "2027-01-11T00:00:00+01:00", "2027-01-18T00:00:00+01:00"
From = Annotated[
    str,
    Query(
        alias="from",
        pattern=INSTANT_PATTERN,
        max_length=40,
        description="start of the window (inclusive): ISO-8601 with an offset; the buckets "
        "start here",
        examples=[_EXAMPLE_FROM],
    ),
]
To = Annotated[
    str,
    Query(
        pattern=INSTANT_PATTERN,
        max_length=40,
        description="end of the window (exclusive), after `from`, at most 366 days later",
        examples=[_EXAMPLE_TO],
    ),
]
Interval = Annotated[
    IntervalName,
    Query(description="bucket length; at most 8784 buckets per window"),
]
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(alias="format", description="json or csv; without it, the Accept header decides"),
]


def _responses(model: type[BaseModel], csv_description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": model,
            "description": "The report (JSON), or CSV with `format=csv` or `Accept: text/csv`",
            "content": {"text/csv": {"schema": {"type": "string", "description": csv_description}}},
        },
        **problems(401, 403, 422, 503),
    }


def _quality(accept: str, media_type: str) -> float:
    """The q-value `accept` gives `media_type`, from its most specific matching range."""
    kind = media_type.split("/")[0]
    best, quality = -1, 0.0
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(name.lower(), -1)
        if specificity <= best:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, quality = specificity, q
    return quality


def wants_csv(output: str | None, accept: str | None) -> bool:
    """CSV when `format=csv`, or when Accept prefers text/csv to application/json."""
    if output is not None:
        return output == "csv"
    if not accept:
        return False
    return _quality(accept, "text/csv") > _quality(accept, "application/json")


ReportT = TypeVar(
    "ReportT",
    SlaReportOut,
    FastLaneReportOut,
    AgentsReportOut,
    RevenueReportOut,
    OnboardingReportOut,
    InsightsReportOut,
)


async def _report(
    request: Request,
    rules: RulesStore,
    window: ReportWindow,
    build: Callable[..., ReportT],
) -> ReportT:
    active = rules.active  # read per request: reports follow hot-reloaded costs and SLAs
    engine: Engine = request.app.state.engine
    return await asyncio.to_thread(
        build,
        engine,
        active.compiled.ruleset,
        rules_version=active.row.version,
        window=window,
        now=clock.now(),
    )


def _respond(
    report: ReportT, *, csv: bool, render: Callable[[ReportT], str], filename: str
) -> Response:
    if csv:
        return Response(
            render(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"', "Vary": "Accept"},
        )
    # Serialised by pydantic-core in one call: report rows can run to tens of thousands.
    return Response(
        report.model_dump_json(by_alias=True),
        media_type="application/json",
        headers={"Vary": "Accept"},
    )


@router.get(
    "/reports/sla",
    summary="SLA per tier and channel: offered, answered, abandoned, waits, fast-lane cost",
    response_model=SlaReportOut,
    responses=_responses(SlaReportOut, "a header row, then one row per bucket × channel × tier"),
)
async def get_sla_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: From,
    to: To,
    interval: Interval = "1h",
    output: Format = None,
) -> Response:
    """Per tier, bucket and channel: SLA, waits and the standard wait without the fast lane."""
    window = report_window(start, to, interval)
    report = await _report(request, rules, window, sla_report)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=sla_csv, filename="sla-report.csv")


@router.get(
    "/reports/fastlane",
    summary="Fast lane: passes, revenue net of refunds, special-handling cost, standard impact",
    response_model=FastLaneReportOut,
    responses=_responses(FastLaneReportOut, "a header row, then one figure,currency,value row"),
)
async def get_fastlane_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: From,
    to: To,
    interval: Interval = "1h",
    output: Format = None,
) -> Response:
    """Passes, revenue net of refunds, special-handling cost and the standard tier's wait."""
    window = report_window(start, to, interval)
    report = await _report(request, rules, window, fastlane_report)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=fastlane_csv, filename="fastlane-report.csv")


# ---- outcome reports: outcomes completed in [from, to) -----------------------------------------
OutcomesFrom = Annotated[
    str,
    Query(
        alias="from",
        pattern=INSTANT_PATTERN,
        max_length=40,
        description="start of the window (inclusive): ISO-8601 with an offset; the report "
        "counts outcomes completed from here",
        examples=[_EXAMPLE_FROM],
    ),
]
VocabularyName = Annotated[
    str | None, Query(max_length=64, description="only contacts with this value (any if absent)")
]


async def _outcome_report(
    request: Request,
    rules: RulesStore,
    window: ReportWindow,
    build: Callable[..., ReportT],
    check: Callable[[RuleSet], None] = lambda ruleset: None,
) -> ReportT:
    """Run `build` in a thread under the active rules, once `check` accepted the parameters."""
    active = rules.active  # read once: the checks and the report see the same rules
    ruleset = active.compiled.ruleset
    check(ruleset)
    engine: Engine = request.app.state.engine
    return await asyncio.to_thread(
        build, engine, ruleset, rules_version=active.row.version, window=window, now=clock.now()
    )


@router.get(
    "/reports/agents",
    summary="Agent leaderboard: resolution, durable resolution, NPS, revenue, handle time",
    response_model=AgentsReportOut,
    responses=_responses(AgentsReportOut, "a header row, then one row per agent × currency"),
)
async def get_agents_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: OutcomesFrom,
    to: To,
    sort: Annotated[AgentSort, Query(description="the figure agents are ranked by")] = (
        "durable_resolution"
    ),
    currency: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Z]{3}$",
            description="sort=revenue ranks by revenue per interaction in this currency "
            "(default: the rules' performance currency)",
        ),
    ] = None,
    inquiry_type: VocabularyName = None,
    segment: VocabularyName = None,
    journey_stage: VocabularyName = None,
    min_contacts: Annotated[
        int, Query(ge=1, le=1_000_000, description="leave out agents with fewer outcomes")
    ] = 1,
    output: Format = None,
) -> Response:
    """Agents ranked by an outcome figure, best first, ties by agent id."""
    window = outcome_window(start, to)
    filters = AgentFiltersOut(
        inquiry_type=inquiry_type, segment=segment, journey_stage=journey_stage
    )

    def check(ruleset: RuleSet) -> None:
        vocab = ruleset.vocabularies
        for name, known in (
            ("inquiry_type", vocab.inquiry_types),
            ("segment", vocab.segments),
            ("journey_stage", vocab.journey_stages),
        ):
            value = getattr(filters, name)
            if value is not None:
                check_name(name, value, known)

    build = functools.partial(
        agents_report, sort=sort, currency=currency, filters=filters, min_contacts=min_contacts
    )
    report = await _outcome_report(request, rules, window, build, check)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=agents_csv, filename="agents-report.csv")


@router.get(
    "/reports/revenue",
    summary="Revenue per interaction, upsell and cross-sell conversion, resolution by group",
    response_model=RevenueReportOut,
    responses=_responses(RevenueReportOut, "a header row, then one row per group × currency"),
)
async def get_revenue_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: OutcomesFrom,
    to: To,
    group_by: Annotated[RevenueGroup, Query(description="what a row covers")] = "segment",
    output: Format = None,
) -> Response:
    """Revenue total and per interaction (per currency), conversion and resolution by group."""
    window = outcome_window(start, to)
    build = functools.partial(revenue_report, group_by=group_by)
    report = await _outcome_report(request, rules, window, build)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=revenue_csv, filename="revenue-report.csv")


@router.get(
    "/reports/onboarding",
    summary="A journey stage's resolution, durability, repeats and NPS beside all other stages",
    response_model=OnboardingReportOut,
    responses=_responses(
        OnboardingReportOut, "a header row, then per inquiry type and part one row per currency"
    ),
)
async def get_onboarding_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: OutcomesFrom,
    to: To,
    stage: Annotated[
        str, Query(max_length=64, description="a journey stage of the active rules")
    ] = "onboarding",
    output: Format = None,
) -> Response:
    """Outcomes of the stage's contacts per inquiry type and in total, beside other stages."""
    window = outcome_window(start, to)

    def check(ruleset: RuleSet) -> None:
        check_name("stage", stage, ruleset.vocabularies.journey_stages)

    build = functools.partial(stage_report, stage=stage)
    report = await _outcome_report(request, rules, window, build, check)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=onboarding_csv, filename="onboarding-report.csv")


@router.get(
    "/reports/insights",
    summary="Top insight tags (needs, frustrations, requests) per ISO week",
    response_model=InsightsReportOut,
    responses=_responses(InsightsReportOut, "a header row, then one row per week × kind × tag"),
)
async def get_insights_report(
    request: Request,
    admin: RulesAdmin,
    _single: SingleValuedQuery,
    rules: RulesDep,
    start: OutcomesFrom,
    to: To,
    top: Annotated[int, Query(ge=1, le=MAX_TOP, description="tags listed per week and kind")] = 5,
    output: Format = None,
) -> Response:
    """The most frequent tags of each kind per week, with their share of the week's outcomes."""
    window = outcome_window(start, to)
    build = functools.partial(insights_report, top=top)
    report = await _outcome_report(request, rules, window, build)
    csv = wants_csv(output, request.headers.get("accept"))
    return _respond(report, csv=csv, render=insights_csv, filename="insights-report.csv")
