"""The appointment book: bookings, fast-lane reorders and cancellations, persisted with events.

Every booking, reorder and cancellation is one database transaction that also inserts its
events into the outbox (`appointment.booked`, `appointment.rescheduled`,
`appointment.cancelled`), so an event exists exactly when its change does. Bookings and
cancellations are serialised: the seat counts are read, decided on and written without another
booking in between, by an asyncio lock within a process and, across replicas, by a database lock
taken first in each transaction (an advisory transaction lock on PostgreSQL, the write lock on
SQLite).

A booking is in the fast lane when the customer has a subscription granting it at booking
time (`PassDesk.subscription_pass`); a subscription is never used up, so it books any number
of fast-lane appointments. A single-incident pass is for one contact, not for appointments: a
customer with only such passes books as standard, and the pass stays unused.

A retry of `book` with the same appointment id and the same request replays the first
response (kept in `idempotency_keys` for the caller's API key); the same id with a different
request is a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from typing import Any

import orjson
from sqlalchemy import and_, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from service import clock
from service.appointment_models import (
    AppointmentIn,
    AppointmentOut,
    AppointmentPage,
    AvailabilityOut,
    BookingOut,
    MoveOut,
    SlotAvailabilityOut,
    TierName,
    appointment_view,
    check_vocabulary,
    check_window,
    decode_cursor,
    encode_cursor,
    iso,
    utc,
)
from service.events.outbox import emit
from service.passes import PassDesk
from service.problems import Conflict, InvalidInput, NotFound
from service.rules_store import RulesStore
from service.storage.tables import AppointmentRow, IdempotencyRow
from sla.calendar import Booking, CalendarPolicy, CalendarState, generate_slots
from sla.config import Calendar
from sla.reorder import (
    DEFAULT_TIME_LIMIT_SECONDS,
    BookingRequest,
    Placement,
    place_booking,
    sla_latest_start,
)

APPOINTMENTS = AppointmentRow.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyRow.__table__  # type: ignore[attr-defined]
BOOK_OPERATION = "appointment.book"
RESCHEDULE_REASON = "fast_lane_booking"
AVAILABILITY_MAX_SECONDS = 7 * 86400
_READ_AHEAD_SECONDS = 86400  # how much of a standard booking's window one query reads


class AppointmentBook:
    """Books, moves and cancels appointments in the calendar of the active rules."""

    def __init__(
        self,
        *,
        engine: Engine,
        rules: RulesStore,
        passes: PassDesk,
        reorder_time_limit: float = DEFAULT_TIME_LIMIT_SECONDS,
    ) -> None:
        self._engine = engine
        self._rules = rules
        self._passes = passes
        self._reorder_time_limit = reorder_time_limit
        self._lock = asyncio.Lock()

    async def warm(self) -> None:
        """Import CP-SAT now (~1.5 s with pandas) rather than in the first reorder's request."""
        await asyncio.to_thread(importlib.import_module, "ortools.sat.python.cp_model")

    # ---- booking -------------------------------------------------------------------------
    async def book(self, request: AppointmentIn, *, caller: str) -> tuple[dict[str, Any], bool]:
        """Book an appointment (True: a retry, answered with the first response)."""
        replay = await asyncio.to_thread(self._replay, request, caller)
        if replay is not None:
            return replay, True
        now = clock.now()
        ruleset = self._rules.compiled.ruleset
        check_vocabulary(ruleset, request)
        policy = CalendarPolicy.from_config(ruleset.calendar)
        check_window(request, policy, now)
        pass_id = self._passes.subscription_pass(request.customer_id, now)
        async with self._lock:
            return await asyncio.to_thread(
                self._book, request, caller, pass_id, ruleset.calendar, policy, now
            )

    def _replay(self, request: AppointmentIn, caller: str) -> dict[str, Any] | None:
        with self._engine.connect() as connection:
            return _replay(connection, request, caller, self._rules.compiled.ruleset.calendar)

    def _book(
        self,
        request: AppointmentIn,
        caller: str,
        pass_id: str | None,
        calendar: Calendar,
        policy: CalendarPolicy,
        now: float,
    ) -> tuple[dict[str, Any], bool]:
        tier: TierName = "standard" if pass_id is None else "fast_lane"
        wanted = BookingRequest(request.appointment_id, tier, request.not_before, request.not_after)
        horizon_end = now + policy.horizon_seconds
        first = max(request.not_before, now)
        try:
            with self._engine.begin() as connection:
                _lock_calendar(connection)
                replay = _replay(connection, request, caller, calendar)
                if replay is not None:
                    return replay, True
                placement, customers = self._place(
                    connection, calendar, policy, wanted, first, horizon_end, now
                )
                if placement is None:
                    if not calendar.hours:
                        raise Conflict("the calendar has no opening hours (rules: calendar.hours)")
                    raise Conflict(
                        f"no slot has room for this {tier.replace('_', '-')} booking between "
                        f"{utc(request.not_before).isoformat()} and "
                        f"{utc(request.not_after).isoformat()}"
                    )
                response = _persist(
                    connection, request, caller, tier, pass_id, placement, customers, policy, now
                )
        except IntegrityError:
            raise Conflict(
                f"appointment {request.appointment_id} was booked at the same time; retry"
            ) from None
        return response, False

    def _place(
        self,
        connection: Connection,
        calendar: Calendar,
        policy: CalendarPolicy,
        wanted: BookingRequest,
        first: float,
        horizon_end: float,
        now: float,
    ) -> tuple[Placement | None, dict[str, str]]:
        """Where the booking goes, reading only as much of the calendar as that needs.

        The earliest seat is usually close to the not-before, so the window is read a day at
        a time; a fast-lane reorder reads on to the horizon, since its moves may chain past
        the customer's own not-after.
        """
        end = min(wanted.not_after, horizon_end)
        if wanted.tier == "fast_lane":
            sla_end = min(end, sla_latest_start(wanted, policy, now) + 1)
            state, customers = _load(connection, calendar, policy, first, sla_end)
            if not _seat_within_sla(state, wanted, now):
                state, customers = _load(connection, calendar, policy, first, horizon_end)
            placement = place_booking(state, wanted, now=now, time_limit=self._reorder_time_limit)
            return placement, customers
        start = first
        while start < end:
            stop = min(end, start + _READ_AHEAD_SECONDS)
            state, customers = _load(connection, calendar, policy, start, stop)
            placement = place_booking(state, wanted, now=now)
            if placement is not None:
                return placement, customers
            start = stop
        return None, {}

    # ---- reading -------------------------------------------------------------------------
    async def get(self, appointment_id: str) -> AppointmentOut:
        """One appointment as it stands now."""
        row = await asyncio.to_thread(self._row, appointment_id)
        if row is None:
            raise NotFound(f"appointment {appointment_id} does not exist")
        return appointment_view(row, self._slot_seconds())

    def _row(self, appointment_id: str) -> RowMapping | None:
        with self._engine.connect() as connection:
            return _select_row(connection, appointment_id)

    async def for_customer(
        self, customer_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> AppointmentPage:
        """A customer's appointments, oldest booking first, `limit` at a time."""
        after = decode_cursor(cursor) if cursor else None
        rows = await asyncio.to_thread(self._customer_rows, customer_id, status, limit + 1, after)
        slot_seconds = self._slot_seconds()
        items = [appointment_view(row, slot_seconds) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last["created_at"], last["appointment_id"])
        return AppointmentPage(items=items, next_cursor=next_cursor)

    def _customer_rows(
        self, customer_id: str, status: str | None, count: int, after: tuple[float, str] | None
    ) -> list[RowMapping]:
        table = APPOINTMENTS.c
        query = select(APPOINTMENTS).where(table.customer_id == customer_id)
        if status is not None:
            query = query.where(table.status == status)
        if after is not None:
            created_at, appointment_id = after
            query = query.where(
                or_(
                    table.created_at > created_at,
                    and_(table.created_at == created_at, table.appointment_id > appointment_id),
                )
            )
        query = query.order_by(table.created_at, table.appointment_id).limit(count)
        with self._engine.connect() as connection:
            return list(connection.execute(query).mappings())

    async def availability(self, *, tier: TierName, start: float, end: float) -> AvailabilityOut:
        """Every slot starting in [start, end) with the seats `tier` could book now."""
        if end <= start:
            raise InvalidInput(
                "query.to: must be after from",
                errors=[{"field": "query.to", "type": "range", "message": "must be after from"}],
            )
        if end - start > AVAILABILITY_MAX_SECONDS:
            message = f"at most {AVAILABILITY_MAX_SECONDS // 86400} days per request"
            raise InvalidInput(
                f"query.to: {message}",
                errors=[{"field": "query.to", "type": "range", "message": message}],
            )
        now = clock.now()
        calendar = self._rules.compiled.ruleset.calendar
        policy = CalendarPolicy.from_config(calendar)
        first, last = max(start, now), min(end, now + policy.horizon_seconds)
        state = await asyncio.to_thread(self._state, calendar, policy, first, last)
        slots = [
            SlotAvailabilityOut(
                start=utc(seats.slot.start),
                end=utc(seats.slot.end),
                capacity=seats.slot.capacity,
                reserved_seats=seats.slot.reserved,
                released=seats.released,
                booked=seats.booked,
                free=seats.free,
            )
            for seats in (state.seats(i, tier, now) for i in range(len(state.slots)))
            if seats.slot.start > now
        ]
        return AvailabilityOut(tier=tier, timezone=calendar.timezone, slots=slots)

    def _state(
        self, calendar: Calendar, policy: CalendarPolicy, first: float, last: float
    ) -> CalendarState:
        with self._engine.connect() as connection:
            return _load(connection, calendar, policy, first, last)[0]

    # ---- cancelling ----------------------------------------------------------------------
    async def cancel(self, appointment_id: str) -> AppointmentOut:
        """Cancel an appointment and free its seat; cancelling again changes nothing."""
        async with self._lock:
            row = await asyncio.to_thread(self._cancel, appointment_id, clock.now())
        return appointment_view(row, self._slot_seconds())

    def _cancel(self, appointment_id: str, now: float) -> RowMapping:
        with self._engine.begin() as connection:
            _lock_calendar(connection)
            row = _select_row(connection, appointment_id)
            if row is None:
                raise NotFound(f"appointment {appointment_id} does not exist")
            if row["status"] == "cancelled":
                return row
            if row["slot_start"] <= now:
                raise Conflict(f"appointment {appointment_id} has already started")
            connection.execute(
                update(APPOINTMENTS)
                .where(APPOINTMENTS.c.appointment_id == appointment_id)
                .values(status="cancelled", updated_at=now)
            )
            emit(
                connection,
                "appointment.cancelled",
                {
                    "appointment_id": appointment_id,
                    "customer_id": row["customer_id"],
                    "tier": row["tier"],
                    "slot_start": iso(row["slot_start"]),
                },
                now=now,
            )
            updated = _select_row(connection, appointment_id)
        assert updated is not None  # the row was just read inside the same transaction
        return updated

    def _slot_seconds(self) -> int:
        return self._rules.compiled.ruleset.calendar.slot_minutes * 60


def _request_hash(request: AppointmentIn) -> str:
    fields = request.model_dump(exclude={"appointment_id"})
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _replay(
    connection: Connection, request: AppointmentIn, caller: str, calendar: Calendar
) -> dict[str, Any] | None:
    """The first response to this booking, None if it is new; Conflict if the id is taken."""
    stored = connection.execute(
        select(IDEMPOTENCY.c.request_hash, IDEMPOTENCY.c.response).where(
            IDEMPOTENCY.c.caller == caller,
            IDEMPOTENCY.c.operation == BOOK_OPERATION,
            IDEMPOTENCY.c.key == request.appointment_id,
        )
    ).first()
    if stored is not None and stored.request_hash == _request_hash(request):
        return dict(stored.response)
    row = _select_row(connection, request.appointment_id)
    if row is None:
        return None
    same = all(
        row[field] == getattr(request, field)
        for field in ("customer_id", "inquiry_type", "channel", "not_before", "not_after")
    )
    if stored is not None or not same:
        raise Conflict(
            f"appointment {request.appointment_id} was already booked with different details"
        )
    # Booked through another API key, or its stored response has been pruned: answer with
    # the appointment as it stands (the moves made back then are in the event history).
    within = None
    if row["tier"] == "fast_lane":
        deadline = (
            max(row["not_before"], row["created_at"]) + calendar.fast_lane_within_minutes * 60
        )
        within = row["original_slot_start"] <= deadline
    view = appointment_view(row, calendar.slot_minutes * 60)
    booking = BookingOut(**view.model_dump(), within_sla=within, moves=[])
    return booking.model_dump(mode="json")


def _select_row(connection: Connection, appointment_id: str) -> RowMapping | None:
    return (
        connection.execute(
            select(APPOINTMENTS).where(APPOINTMENTS.c.appointment_id == appointment_id)
        )
        .mappings()
        .first()
    )


def _load(
    connection: Connection, calendar: Calendar, policy: CalendarPolicy, first: float, last: float
) -> tuple[CalendarState, dict[str, str]]:
    """The slots starting in [first, last) with their booked appointments, and who booked."""
    slots = generate_slots(calendar, first, last)
    if not slots:
        return CalendarState([], [], policy=policy), {}
    table = APPOINTMENTS.c
    rows = connection.execute(
        select(
            table.appointment_id,
            table.customer_id,
            table.tier,
            table.not_before,
            table.not_after,
            table.slot_start,
            table.from_reserved,
            table.moved_count,
            table.created_at,
        ).where(
            table.status == "booked",
            table.slot_start >= slots[0].start,
            table.slot_start <= slots[-1].start,
        )
    ).all()
    bookings = [
        Booking(
            row.appointment_id,
            row.tier,
            row.not_before,
            row.not_after,
            row.slot_start,
            from_reserved=row.from_reserved,
            moved_count=row.moved_count,
            booked_at=row.created_at,
        )
        for row in rows
    ]
    customers = {row.appointment_id: row.customer_id for row in rows}
    return CalendarState(slots, bookings, policy=policy), customers


def _seat_within_sla(state: CalendarState, request: BookingRequest, now: float) -> bool:
    deadline = sla_latest_start(request, state.policy, now)
    found = state.earliest_seat(
        "fast_lane", request.not_before, request.not_after, now, latest_start=deadline
    )
    return found is not None


def _persist(
    connection: Connection,
    request: AppointmentIn,
    caller: str,
    tier: TierName,
    pass_id: str | None,
    placement: Placement,
    customers: dict[str, str],
    policy: CalendarPolicy,
    now: float,
) -> dict[str, Any]:
    """Write the moves, the booking, their events and the replayable response."""
    table = APPOINTMENTS.c
    moves = []
    for move in placement.moves:
        moved = connection.execute(
            update(APPOINTMENTS)
            .where(
                table.appointment_id == move.appointment_id,
                table.status == "booked",
                table.slot_start == move.old_start,
                table.moved_count == 0,
            )
            .values(slot_start=move.new_start, moved_count=table.moved_count + 1, updated_at=now)
        )
        if moved.rowcount != 1:
            raise Conflict("the calendar changed during this booking; retry")
        out = MoveOut(
            appointment_id=move.appointment_id,
            customer_id=customers[move.appointment_id],
            old_start=utc(move.old_start),
            new_start=utc(move.new_start),
            delay_minutes=round(move.delay_seconds / 60),
            reason=RESCHEDULE_REASON,
        )
        moves.append(out)
        emit(
            connection,
            "appointment.rescheduled",
            {**out.model_dump(mode="json"), "displaced_by": request.appointment_id},
            now=now,
        )
    row = {
        "appointment_id": request.appointment_id,
        "customer_id": request.customer_id,
        "inquiry_type": request.inquiry_type,
        "channel": request.channel,
        "tier": tier,
        "pass_id": pass_id,
        "not_before": request.not_before,
        "not_after": request.not_after,
        "slot_start": placement.slot_start,
        "from_reserved": placement.from_reserved,
        "status": "booked",
        "original_slot_start": placement.slot_start,
        "moved_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    connection.execute(insert(APPOINTMENTS), [row])
    view = appointment_view(row, policy.slot_seconds)
    response = BookingOut(
        **view.model_dump(), within_sla=placement.within_sla, moves=moves
    ).model_dump(mode="json")
    emit(
        connection,
        "appointment.booked",
        {
            "appointment_id": request.appointment_id,
            "customer_id": request.customer_id,
            "tier": tier,
            "pass_id": pass_id,
            "channel": request.channel,
            "inquiry_type": request.inquiry_type,
            "slot_start": response["slot_start"],
            "slot_end": response["slot_end"],
            "within_sla": placement.within_sla,
            "moved": len(moves),
        },
        now=now,
    )
    connection.execute(
        insert(IDEMPOTENCY),
        [
            {
                "caller": caller,
                "operation": BOOK_OPERATION,
                "key": request.appointment_id,
                "request_hash": _request_hash(request),
                "status_code": 201,
                "response": response,
                "created_at": now,
            }
        ],
    )
    return response


_PG_LOCK_KEY = 0x6170_7074  # "appt": one lock for the whole calendar


def _lock_calendar(connection: Connection) -> None:
    """Serialise bookings and cancellations of every process until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"))
        return
    # SQLite: a write statement first takes the database's write lock for the transaction
    # (pysqlite begins it at the first write; a read snapshot could not become a write later).
    connection.execute(
        update(APPOINTMENTS)
        .where(APPOINTMENTS.c.appointment_id == "")
        .values(status=APPOINTMENTS.c.status)
    )
