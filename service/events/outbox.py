"""The transactional outbox: every event is inserted in the same transaction as its change.

An event is committed exactly when the change it reports is, so a crash can lose neither one
without the other. Delivery (`service.events.delivery`) reads the outbox afterwards.

Payloads follow the Standard Webhooks shape: `{"type", "timestamp", "data"}`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from service.ids import new_id
from service.storage.tables import OutboxRow

EventType = Literal[
    "contact.queued",
    "contact.assigned",
    "pass.created",
    "pass.consumed",
    "pass.refunded",
    "pass.cancelled",
    "appointment.booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "sla.breach_warning",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]


def event_row(type_: EventType, data: dict[str, Any], *, now: float) -> dict[str, Any]:
    """An outbox row for one event (insert it with the change it reports)."""
    event_id = "evt_" + new_id()
    timestamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "event_id": event_id,
        "type": type_,
        "payload": {"type": type_, "timestamp": timestamp, "data": data},
        "created_at": now,
        "fanned_out": False,
    }


def emit(connection: Connection, type_: EventType, data: dict[str, Any], *, now: float) -> str:
    """Insert one event inside the caller's transaction; its event id."""
    row = event_row(type_, data, now=now)
    connection.execute(insert(_OUTBOX), [row])
    return str(row["event_id"])


def emit_many(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert prepared `event_row`s inside the caller's transaction."""
    if rows:
        connection.execute(insert(_OUTBOX), rows)
