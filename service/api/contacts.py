"""Contacts and reservations: status, complete, abandon, explain, accept, reject."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Body, Path
from sqlalchemy.exc import OperationalError

from service.api.deps import AcdCaller, RoutingDep
from service.api.outcomes import OutcomesDep
from service.contacts import ContactState
from service.models import (
    ContactOut,
    ExplanationOut,
    RejectIn,
    ReservationActionOut,
    problems,
)
from service.outcome_models import CompletedContactOut, CompleteIn, OutcomeOut
from service.problems import Unavailable

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["contacts"])

ContactId = Annotated[str, Path(min_length=1, max_length=128)]
ReservationId = Annotated[str, Path(min_length=1, max_length=64)]


def _out(contact: ContactState) -> ContactOut:
    return ContactOut(
        contact_id=contact.contact_id,
        customer_id=contact.customer_id,
        channel=contact.channel,
        status=contact.status,
        rule=contact.rule,
        stage=contact.stage_name or str(contact.stage),
        priority=contact.priority,
        agent_id=contact.agent_id,
        reservation_id=contact.reservation_id,
        reservation_expires_at=contact.reservation_expires_at,
        tier=contact.tier,
        pass_id=contact.pass_id,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
        assigned_at=contact.assigned_at,
        connected_at=contact.connected_at,
        ended_at=contact.ended_at,
    )


@router.get(
    "/contacts/{contact_id}", response_model=ContactOut, responses=problems(401, 403, 404, 422)
)
async def get_contact(contact_id: ContactId, caller: AcdCaller, routing: RoutingDep) -> ContactOut:
    """A contact's current status (queued, reserved, connected, completed, abandoned)."""
    return _out(await routing.get(contact_id))


@router.post(
    "/contacts/{contact_id}/complete",
    response_model=CompletedContactOut,
    # `outcome` appears only when one was sent: without a body the answer is the plain contact.
    response_model_exclude_unset=True,
    responses=problems(400, 401, 403, 404, 409, 413, 422, 503),
)
async def complete_contact(
    contact_id: ContactId,
    caller: AcdCaller,
    routing: RoutingDep,
    outcomes: OutcomesDep,
    body: Annotated[CompleteIn | None, Body()] = None,
) -> ContactOut:
    """The conversation ended; the agent's slot is freed. Repeating it is harmless.

    With `{"outcome": {...}}` the outcome is recorded too (see `PUT .../outcome`), and checked
    before anything changes: a bad outcome is 422 and the contact stays connected. A 503 after
    the completion means the contact is completed but the outcome was not stored; repeat the
    call or send the outcome with `PUT /v1/contacts/{contact_id}/outcome`.
    """
    outcome = body.outcome if body is not None else None
    if outcome is not None:
        outcomes.check(outcome, field="outcome")
    contact = await routing.complete(contact_id)
    if outcome is None:
        return _out(contact)
    try:
        row, _ = await outcomes.record(contact, outcome)
    except OperationalError as exc:
        log.warning("outcome.not_recorded", contact_id=contact_id, error=str(exc.orig)[:300])
        raise Unavailable(
            f"contact {contact_id} is completed but its outcome was not stored: the database "
            f"is unavailable; retry, or PUT /v1/contacts/{contact_id}/outcome",
            headers={"Retry-After": "5"},
        ) from None
    return CompletedContactOut(**_out(contact).model_dump(), outcome=OutcomeOut.from_row(row))


@router.post(
    "/contacts/{contact_id}/abandon",
    response_model=ContactOut,
    responses=problems(401, 403, 404, 409, 422),
)
async def abandon_contact(
    contact_id: ContactId, caller: AcdCaller, routing: RoutingDep
) -> ContactOut:
    """The customer left before being connected. Repeating it is harmless."""
    return _out(await routing.abandon(contact_id))


@router.get(
    "/contacts/{contact_id}/explain",
    response_model=ExplanationOut,
    responses=problems(401, 403, 404, 422),
)
async def explain_contact(
    contact_id: ContactId, caller: AcdCaller, routing: RoutingDep
) -> ExplanationOut:
    """Rule, stage, rules version, candidates with score terms, and every decision made."""
    return ExplanationOut.model_validate(await routing.explain(contact_id))


@router.post(
    "/reservations/{reservation_id}/accept",
    response_model=ReservationActionOut,
    responses=problems(401, 403, 404, 422),
)
async def accept_reservation(
    reservation_id: ReservationId, caller: AcdCaller, routing: RoutingDep
) -> ReservationActionOut:
    """The agent takes the offered contact."""
    reservation, contact = await routing.accept(reservation_id)
    return ReservationActionOut(
        reservation_id=reservation.reservation_id,
        contact_id=contact.contact_id,
        agent_id=reservation.agent_id,
        status="accepted",
        contact_status=contact.status,
    )


@router.post(
    "/reservations/{reservation_id}/reject",
    response_model=ReservationActionOut,
    responses=problems(400, 401, 403, 404, 413, 422),
)
async def reject_reservation(
    reservation_id: ReservationId,
    caller: AcdCaller,
    routing: RoutingDep,
    body: Annotated[RejectIn | None, Body()] = None,
) -> ReservationActionOut:
    """The agent turns the offer down; the contact is dispatched again without that agent."""
    reservation, contact = await routing.reject(reservation_id, body.reason if body else "")
    return ReservationActionOut(
        reservation_id=reservation.reservation_id,
        contact_id=contact.contact_id,
        agent_id=reservation.agent_id,
        status="rejected",
        contact_status=contact.status,
    )
