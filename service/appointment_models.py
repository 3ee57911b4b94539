"""The appointment API's request and response models, its checks against the rules, and views."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
)
from sqlalchemy.engine import RowMapping

from routing_rules.schema import RuleSet
from service.models import VocabName
from service.problems import InvalidInput
from sla.calendar import CalendarPolicy

TierName = Literal["standard", "fast_lane"]
AppointmentStatus = Literal["booked", "cancelled"]

# RFC 3339 date-time with an explicit offset: an appointment is a point in time, and a time
# without an offset would silently mean whatever zone the server runs in.
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")
INSTANT_PATTERN = _INSTANT.pattern
# Far enough either side for any calendar; inside what every datetime conversion handles.
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
_LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC).timestamp()


def _instant(value: Any) -> float:
    """An ISO-8601 date-time with offset, as unix seconds."""
    if not isinstance(value, str) or len(value) > 40 or not _INSTANT.match(value):
        raise ValueError(
            "expected an ISO-8601 date-time with offset, e.g. 2027-01-18T09:00:00+01:00"
        )
    try:
        parsed = dt.datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {exc}") from None
    instant = parsed.timestamp()
    if not _EARLIEST <= instant < _LATEST:
        raise ValueError("date-time must lie between the years 2000 and 2199")
    return instant


Instant = Annotated[
    float,
    BeforeValidator(_instant),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": INSTANT_PATTERN,
            "maxLength": 40,
            "examples": ["2027-01-18T09:00:00+01:00"],
        }
    ),
]
AppointmentId = Annotated[
    StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
CustomerId = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


def utc(instant: float) -> dt.datetime:
    """Unix seconds as an aware UTC datetime (serialised as ISO-8601 with `Z`)."""
    return dt.datetime.fromtimestamp(instant, dt.UTC)


class AppointmentIn(BaseModel):
    """A request for an appointment or callback between two times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    appointment_id: AppointmentId = Field(description="chosen by the caller; retries reuse it")
    customer_id: CustomerId
    inquiry_type: VocabName
    channel: VocabName
    not_before: Instant = Field(description="earliest start the customer accepts")
    not_after: Instant = Field(description="the appointment must end by then")


class MoveOut(BaseModel):
    """A standard appointment moved later to make room for a fast-lane booking."""

    appointment_id: str
    customer_id: str
    old_start: dt.datetime
    new_start: dt.datetime
    delay_minutes: int
    reason: Literal["fast_lane_booking"]


class AppointmentOut(BaseModel):
    """An appointment as it stands now."""

    appointment_id: str
    customer_id: str
    inquiry_type: str
    channel: str
    tier: TierName
    pass_id: str | None
    status: AppointmentStatus
    slot_start: dt.datetime
    slot_end: dt.datetime
    not_before: dt.datetime
    not_after: dt.datetime
    from_reserved: bool = Field(description="holds one of the slot's fast-lane seats")
    original_slot_start: dt.datetime
    moved_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class BookingOut(AppointmentOut):
    """A new booking: the appointment and every appointment moved to make room for it."""

    within_sla: bool | None = Field(
        description="fast lane: the slot starts within the fast-lane window; standard: null"
    )
    moves: list[MoveOut]


class AppointmentPage(BaseModel):
    """A page of a customer's appointments, oldest booking first."""

    items: list[AppointmentOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


class SlotAvailabilityOut(BaseModel):
    """One slot and the seats a tier could still book in it."""

    start: dt.datetime
    end: dt.datetime
    capacity: int
    reserved_seats: int = Field(description="seats held for the fast lane until release")
    released: bool = Field(description="unsold reserved seats are open to everybody now")
    booked: int
    free: int = Field(description="seats this tier can book now")


class AvailabilityOut(BaseModel):
    """Bookable slots of one tier in a time range."""

    tier: TierName
    timezone: str
    slots: list[SlotAvailabilityOut]


def check_vocabulary(ruleset: RuleSet, request: AppointmentIn) -> None:
    """A channel or inquiry type the active rules do not know is a 422 naming the field."""
    vocab = ruleset.vocabularies
    errors = [
        {
            "field": field,
            "type": "unknown_name",
            "message": f"unknown {field} {value!r}; known: {', '.join(known)}",
        }
        for field, value, known in (
            ("inquiry_type", request.inquiry_type, vocab.inquiry_types),
            ("channel", request.channel, vocab.channels),
        )
        if value not in known
    ]
    if errors:
        raise InvalidInput(errors[0]["message"], errors=errors)


def check_window(request: AppointmentIn, policy: CalendarPolicy, now: float) -> None:
    """The customer's window must be an interval that is not over and starts in the horizon."""
    problems = []
    if request.not_after <= request.not_before:
        problems.append(("not_after", "must be after not_before"))
    elif request.not_after <= now:
        problems.append(("not_after", "is in the past"))
    if request.not_before >= now + policy.horizon_seconds:
        days = policy.horizon_seconds // 86400
        problems.append(("not_before", f"is beyond the {days}-day booking horizon"))
    if problems:
        errors = [{"field": f, "type": "range", "message": m} for f, m in problems]
        raise InvalidInput(f"{problems[0][0]}: {problems[0][1]}", errors=errors)


def appointment_view(row: RowMapping | dict[str, Any], slot_seconds: int) -> AppointmentOut:
    """An `appointments` row as the API shows it (slots last `slot_seconds`)."""
    return AppointmentOut(
        appointment_id=row["appointment_id"],
        customer_id=row["customer_id"],
        inquiry_type=row["inquiry_type"],
        channel=row["channel"],
        tier=row["tier"],
        pass_id=row["pass_id"],
        status=row["status"],
        slot_start=utc(row["slot_start"]),
        slot_end=utc(row["slot_start"] + slot_seconds),
        not_before=utc(row["not_before"]),
        not_after=utc(row["not_after"]),
        from_reserved=row["from_reserved"],
        original_slot_start=utc(row["original_slot_start"]),
        moved_count=row["moved_count"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def iso(instant: float) -> str:
    """Unix seconds as ISO-8601 UTC text with `Z`, as in event payloads."""
    return utc(instant).isoformat().replace("+00:00", "Z")


def encode_cursor(created_at: float, appointment_id: str) -> str:
    """An opaque page cursor: the position of the last appointment on the page."""
    raw = orjson.dumps([created_at, appointment_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position after which the next page starts; a 422 for anything not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, appointment_id = orjson.loads(raw)
        if not isinstance(created_at, int | float) or not isinstance(appointment_id, str):
            raise ValueError("wrong types")
        return float(created_at), appointment_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        message = "not a cursor returned by this endpoint"
        raise InvalidInput(
            f"query.cursor: {message}",
            errors=[{"field": "query.cursor", "type": "invalid", "message": message}],
        ) from None
