"""Appointments and callbacks: book (fast lane first), look up, list, cancel, availability."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service.api.deps import AcdCaller, SingleValuedQuery
from service.appointment_models import (
    AppointmentIn,
    AppointmentOut,
    AppointmentPage,
    AppointmentStatus,
    AvailabilityOut,
    BookingOut,
    Instant,
    TierName,
)
from service.appointments import AppointmentBook
from service.models import problems
from service.problems import InvalidInput, error_summary, validation_errors

router = APIRouter(prefix="/v1", tags=["appointments"])

_BODY_SCHEMA = AppointmentIn.model_json_schema()

AppointmentIdPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


async def _book(request: Request) -> AppointmentBook:
    return request.app.state.appointments  # type: ignore[no-any-return]


AppointmentsDep = Annotated[AppointmentBook, Depends(_book)]


@router.post(
    "/appointments",
    summary="Book an appointment or callback: fast lane first, standard from open seats",
    response_model=BookingOut,
    status_code=201,
    responses={
        200: {"model": BookingOut, "description": "A retry: the first response, replayed"},
        201: {"model": BookingOut, "description": "A new booking, with the moves it caused"},
        **problems(401, 403, 409, 413, 422, 503),
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
)
async def book_appointment(
    request: Request, caller: AcdCaller, appointments: AppointmentsDep
) -> Response:
    """Book the earliest slot with room in the customer's window.

    Fast-lane customers (an active subscription; a single-incident pass is for one contact
    and books as standard) may take the seats reserved for them; when their SLA window is
    full, standard appointments are moved later to make room and listed in `moves`.
    A retry with the same appointment_id and body replays the first response.
    """
    try:
        body = AppointmentIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        raise InvalidInput(error_summary(errors[0]), errors=errors) from None
    booking, replayed = await appointments.book(body, caller=caller.key_hash)
    return Response(
        orjson.dumps(booking),
        status_code=200 if replayed else 201,
        media_type="application/json",
        headers={"Idempotent-Replay": "true"} if replayed else None,
    )


# Declared before /appointments/{appointment_id}, which would otherwise match "availability".
@router.get(
    "/appointments/availability",
    summary="Free seats per slot for one tier",
    response_model=AvailabilityOut,
    responses=problems(401, 403, 422, 503),
)
async def appointment_availability(
    caller: AcdCaller,
    appointments: AppointmentsDep,
    single_values: SingleValuedQuery,
    start: Annotated[Instant, Query(alias="from", description="first slot start (inclusive)")],
    end: Annotated[Instant, Query(alias="to", description="last slot start (exclusive)")],
    tier: TierName = "standard",
) -> AvailabilityOut:
    """Slots starting in [from, to) (at most 7 days, within the booking horizon)."""
    return await appointments.availability(tier=tier, start=start, end=end)


@router.get(
    "/appointments",
    summary="A customer's appointments",
    response_model=AppointmentPage,
    responses=problems(401, 403, 422, 503),
)
async def list_appointments(
    caller: AcdCaller,
    appointments: AppointmentsDep,
    single_values: SingleValuedQuery,
    customer_id: Annotated[
        str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
    ],
    status: AppointmentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=400, pattern=r"^[A-Za-z0-9_\-]+$")
    ] = None,
) -> AppointmentPage:
    """Oldest booking first; follow `next_cursor` for more."""
    return await appointments.for_customer(customer_id, status=status, limit=limit, cursor=cursor)


@router.get(
    "/appointments/{appointment_id}",
    summary="One appointment",
    response_model=AppointmentOut,
    responses=problems(401, 403, 404, 422, 503),
)
async def get_appointment(
    appointment_id: AppointmentIdPath, caller: AcdCaller, appointments: AppointmentsDep
) -> AppointmentOut:
    """The appointment as it stands now (moved or cancelled included)."""
    return await appointments.get(appointment_id)


@router.post(
    "/appointments/{appointment_id}/cancel",
    summary="Cancel an appointment; repeating it is harmless",
    response_model=AppointmentOut,
    responses=problems(401, 403, 404, 409, 422, 503),
)
async def cancel_appointment(
    appointment_id: AppointmentIdPath, caller: AcdCaller, appointments: AppointmentsDep
) -> AppointmentOut:
    """Free the appointment's seat; 409 once it has started."""
    return await appointments.cancel(appointment_id)
