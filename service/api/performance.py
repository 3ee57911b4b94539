"""The performance table: per agent x contact kind outcome figures, shrunk, scored (JSON or CSV)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.api.deps import RulesAdmin, SingleValuedQuery
from service.api.reports import wants_csv
from service.models import problems
from service.performance import Figures, PerformanceRecord
from service.performance_store import PerformanceStore
from service.report_models import csv_table

router = APIRouter(prefix="/v1", tags=["performance"])


class PerformanceRowOut(BaseModel):
    """One agent on one contact kind: own figures raw and shrunk, and the team's."""

    agent_id: str
    inquiry_type: str
    segment: str
    journey_stage: str
    contacts: int = Field(description="the agent's outcomes on this kind within the window")
    nps_answers: int = Field(description="of those, outcomes with an NPS answer")
    resolution_rate: float = Field(description="resolved / outcomes")
    resolution_rate_shrunk: float = Field(description="(n * own + k * team) / (n + k)")
    durable_resolution_rate: float = Field(description="durable / outcomes")
    durable_resolution_rate_shrunk: float
    nps: float | None = Field(description="% promoters - % detractors; null without answers")
    nps_shrunk: float | None = Field(description="shrunk over answers; null if nobody answered")
    revenue_per_interaction: float = Field(description="minor units of `currency` per outcome")
    revenue_per_interaction_shrunk: float
    handle_seconds: float = Field(description="mean handle time")
    handle_seconds_shrunk: float
    score: float = Field(description="0-1, from the shrunk figures and the measure weights")
    team_contacts: int = Field(description="every agent's outcomes on this kind")
    team_nps_answers: int
    team_resolution_rate: float
    team_durable_resolution_rate: float
    team_nps: float | None
    team_revenue_per_interaction: float
    team_handle_seconds: float
    team_score: float = Field(description="the score of an agent without outcomes on this kind")


class PerformanceMeasureOut(BaseModel):
    """The weights of the score (renormalised to sum 1)."""

    durable_resolution: float
    resolution: float
    nps: float
    revenue: float


class PerformancePage(BaseModel):
    """A page of the performance table and the settings it was computed with."""

    currency: str = Field(description="revenue in this currency counts")
    prior_contacts: float = Field(description="k of the shrinkage")
    window_days: int
    since: float | None = Field(description="outcomes completed before this (unix s) not counted")
    revenue_reference_minor: int = Field(description="revenue per interaction that scores 1")
    measure: PerformanceMeasureOut
    items: list[PerformanceRowOut]
    total: int
    offset: int
    limit: int


CSV_COLUMNS = list(PerformanceRowOut.model_fields)


def row_out(record: PerformanceRecord) -> PerformanceRowOut:
    """The API row of one table record (figures rounded to 6 decimals)."""
    inquiry_type, segment, journey_stage = record.kind
    return PerformanceRowOut(
        agent_id=record.agent_id,
        inquiry_type=inquiry_type,
        segment=segment,
        journey_stage=journey_stage,
        contacts=record.contacts,
        nps_answers=record.nps_answers,
        **_figures(record.raw),
        **_figures(record.shrunk, suffix="_shrunk"),
        score=round(record.score, 6),
        team_contacts=record.team_contacts,
        team_nps_answers=record.team_nps_answers,
        **_figures(record.team, prefix="team_"),
        team_score=round(record.team_score, 6),
    )


def _figures(figures: Figures, *, prefix: str = "", suffix: str = "") -> dict[str, float | None]:
    """Figures as named fields, each name between `prefix` and `suffix`."""
    values = {
        "resolution_rate": figures.resolution_rate,
        "durable_resolution_rate": figures.durable_resolution_rate,
        "nps": figures.nps,
        "revenue_per_interaction": figures.revenue_per_interaction,
        "handle_seconds": figures.handle_seconds,
    }
    return {
        prefix + name + suffix: None if value is None else round(value, 6)
        for name, value in values.items()
    }


async def _store(request: Request) -> PerformanceStore:
    return request.app.state.performance  # type: ignore[no-any-return]


PerformanceDep = Annotated[PerformanceStore, Depends(_store)]
Name = Annotated[str | None, Query(min_length=1, max_length=64)]


@router.get(
    "/performance",
    summary="Performance table: per agent x inquiry type x segment x journey stage",
    response_model=PerformancePage,
    responses={
        200: {
            "model": PerformancePage,
            "description": "A page of the table (JSON), or CSV with `format=csv` or "
            "`Accept: text/csv`",
            "content": {
                "text/csv": {
                    "schema": {
                        "type": "string",
                        "description": "a header row, then the page's rows (item fields)",
                    }
                }
            },
        },
        **problems(401, 403, 422),
    },
)
async def get_performance(
    request: Request,
    admin: RulesAdmin,
    single_values: SingleValuedQuery,
    store: PerformanceDep,
    agent_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    inquiry_type: Name = None,
    segment: Name = None,
    journey_stage: Name = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    output: Annotated[
        Literal["json", "csv"] | None,
        Query(alias="format", description="json or csv; without it, the Accept header decides"),
    ] = None,
) -> Response:
    """Rows sorted by agent, inquiry type, segment and journey stage; filters combine."""
    book = store.book
    records = await asyncio.to_thread(
        book.records,
        agent_id=agent_id,
        inquiry_type=inquiry_type,
        segment=segment,
        journey_stage=journey_stage,
    )
    items = [row_out(r) for r in records[offset : offset + limit]]
    if wants_csv(output, request.headers.get("accept")):
        return Response(
            csv_table(CSV_COLUMNS, [list(item.model_dump().values()) for item in items]),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="performance.csv"',
                "Vary": "Accept",
            },
        )
    settings = book.performance
    weights = settings.measure.model_dump()
    total_weight = sum(weights.values())
    page = PerformancePage(
        currency=settings.currency,
        prior_contacts=settings.prior_contacts,
        window_days=settings.window_days,
        since=book.since if book.since > float("-inf") else None,
        revenue_reference_minor=settings.revenue_reference_minor,
        measure=PerformanceMeasureOut(
            **{k: (v / total_weight if total_weight else 0.0) for k, v in weights.items()}
        ),
        items=items,
        total=len(records),
        offset=offset,
        limit=limit,
    )
    return Response(
        page.model_dump_json(), media_type="application/json", headers={"Vary": "Accept"}
    )
