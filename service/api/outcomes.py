"""Outcomes of completed contacts: record or replace at wrap-up, and read back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from service.api.deps import AcdCaller, RoutingDep
from service.models import problems
from service.outcome_models import OutcomeIn, OutcomeOut
from service.outcomes import OutcomeDesk

router = APIRouter(prefix="/v1", tags=["outcomes"])

ContactId = Annotated[str, Path(min_length=1, max_length=128)]


async def _outcomes(request: Request) -> OutcomeDesk:
    return request.app.state.outcomes  # type: ignore[no-any-return]


OutcomesDep = Annotated[OutcomeDesk, Depends(_outcomes)]


@router.put(
    "/contacts/{contact_id}/outcome",
    response_model=OutcomeOut,
    responses={
        200: {"model": OutcomeOut, "description": "The outcome replaced the one recorded before"},
        201: {"model": OutcomeOut, "description": "The contact's first recorded outcome"},
        **problems(400, 401, 403, 404, 409, 413, 422, 503),
    },
)
async def put_outcome(
    contact_id: ContactId,
    outcome: OutcomeIn,
    caller: AcdCaller,
    routing: RoutingDep,
    outcomes: OutcomesDep,
    response: Response,
) -> OutcomeOut:
    """Record or replace the outcome of a completed contact (wrap-up often ends later).

    Repeat detection runs with every write: an earlier outcome of the customer on the same
    inquiry type within the rules' repeat window loses durability and names this contact in
    `repeated_by`; a later one already recorded makes this outcome not durable. 422 for an
    unknown tag (checked before anything else), 404 for an unknown contact, 409 unless the
    contact is completed; nothing is written then. A 503 wrote nothing either: retry it.
    """
    outcomes.check(outcome)
    contact = await routing.get(contact_id)
    row, created = await outcomes.record(contact, outcome)
    if created:
        response.status_code = 201
    return OutcomeOut.from_row(row)


@router.get(
    "/contacts/{contact_id}/outcome",
    response_model=OutcomeOut,
    responses=problems(401, 403, 404, 422, 503),
)
async def get_outcome(
    contact_id: ContactId, caller: AcdCaller, outcomes: OutcomesDep
) -> OutcomeOut:
    """The recorded outcome of a contact, with its durability and repeat links."""
    return OutcomeOut.from_row(await outcomes.get(contact_id))
