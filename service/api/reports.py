"""Reports for admins: SLA per tier and the fast lane's revenue, cost and impact (JSON or CSV)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from service import clock
from service.api.deps import RulesAdmin, RulesDep
from service.fastlane_report import fastlane_report
from service.models import problems
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


ReportT = TypeVar("ReportT", SlaReportOut, FastLaneReportOut)


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
