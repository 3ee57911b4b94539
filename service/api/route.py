"""`POST /v1/route`: the ACD's entry point."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service.api.deps import AcdCaller
from service.models import ContactIn, DecisionOut, problems
from service.problems import InvalidInput, error_summary, validation_errors
from service.routing import RoutingService

router = APIRouter(prefix="/v1", tags=["route"])

_BODY_SCHEMA = ContactIn.model_json_schema()


@router.post(
    "/route",
    summary="Route a contact: assign an agent now or queue it",
    response_model=DecisionOut,
    responses={
        200: {"model": DecisionOut, "description": "A retry: the first decision, replayed"},
        201: {"model": DecisionOut, "description": "A new decision"},
        **problems(401, 403, 409, 413, 422, 503),
    },
    status_code=201,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
)
async def route_contact(request: Request, caller: AcdCaller) -> Response:
    """Decide who serves a contact; a retry with the same contact_id replays the decision."""
    raw = await request.body()
    try:
        body = ContactIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        raise InvalidInput(error_summary(errors[0]), errors=errors) from None
    # The service comes from app state rather than a dependency: every dependency costs the
    # hot path a round of FastAPI's resolution machinery.
    routing: RoutingService = request.app.state.routing
    decision, replayed = await routing.route(body, raw)
    return Response(
        orjson.dumps(decision),
        status_code=200 if replayed else 201,
        media_type="application/json",
        headers={"Idempotent-Replay": "true"} if replayed else None,
    )
