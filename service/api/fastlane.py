"""The fast-lane sales quote: predicted service per tier and what is left to sell."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service import clock
from service.api.deps import BillingCaller
from service.models import problems
from service.pass_models import QuoteOut
from service.passes import PassDesk
from service.quote import build_quote
from service.rules_store import RulesStore
from sla.guard import DAY

router = APIRouter(prefix="/v1", tags=["fastlane"])

EpochSeconds = Annotated[
    float | None, Query(ge=1e9, le=1e10, allow_inf_nan=False, description="unix seconds")
]


@router.get(
    "/fastlane/quote",
    response_model=QuoteOut,
    responses=problems(401, 403, 404, 422),
)
async def quote_fast_lane(
    request: Request,
    billing: BillingCaller,
    channel: Annotated[str, Query(min_length=1, max_length=64)],
    start: Annotated[EpochSeconds, Query(alias="from", description="default: now")] = None,
    end: Annotated[EpochSeconds, Query(alias="to", description="default: from + 1 day")] = None,
) -> Response:
    """Per plan interval in [from, to): both tiers' service, the ε limit and passes left to sell.

    404 when the capacity plan does not cover the channel; without any capacity plan the
    answer says the guard cannot judge (`planned: false`).
    """
    desk: PassDesk = request.app.state.passes
    rules: RulesStore = request.app.state.rules
    now = clock.now()
    window_start = now if start is None else start
    window_end = window_start + DAY if end is None else end
    ruleset = rules.compiled.ruleset

    def build() -> QuoteOut:
        desk.refresh_if_due(now)
        return build_quote(
            ruleset=ruleset,
            demand=desk.demand(ruleset.fast_lane.expected),
            active_passes=desk.active_counts(now),
            channel=channel,
            start=window_start,
            end=window_end,
        )

    quote = await asyncio.to_thread(build)
    return Response(
        orjson.dumps(quote.model_dump(mode="json", by_alias=True)), media_type="application/json"
    )
