"""Contacts and reservations: status, complete, abandon, explain, accept, reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from service.api.deps import AcdCaller, RoutingDep
from service.contacts import ContactState
from service.models import (
    ContactOut,
    ExplanationOut,
    RejectIn,
    ReservationActionOut,
    problems,
)

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
    response_model=ContactOut,
    responses=problems(401, 403, 404, 409, 422),
)
async def complete_contact(
    contact_id: ContactId, caller: AcdCaller, routing: RoutingDep
) -> ContactOut:
    """The conversation ended; the agent's slot is freed. Repeating it is harmless."""
    return _out(await routing.complete(contact_id))


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
