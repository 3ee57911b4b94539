"""Appointment and callback slots, the fast lane's reserved seats, and who sits where.

Slots come from the rules' `calendar` section (opening hours per weekday, slot length,
agents scheduled) in the calendar's IANA time zone:

* Each local day has a wall-clock grid 00:00, 00:00 + slot, ... A grid time becomes a slot
  when opening-hours entries of that weekday cover the whole slot; its capacity is the sum of
  their agents (entries add up, so a lunch-time top-up of 3 agents is one more entry).
* Daylight saving time: a grid time that does not exist (clocks go forward) has no slot; one
  that happens twice (clocks go back) has two, one per occurrence, because the agents really
  work that hour twice. A slot never straddles an offset change: with a slot length that does
  not divide the jump (say 45 minutes), the grid slot across it is dropped rather than stretched.
  So a 24-hour opening has 46 half-hour slots on the spring-forward day and 50 on the fall-back
  day, and every slot lasts exactly `slot_minutes` of elapsed time.

Seats: a slot with capacity `c` keeps `reserved_seats(c, share)` seats for the fast lane,
`round(c × share)` with halves rounded up (10 agents at 10 %: 1 seat, 5 agents: 1 seat, 4
agents: 0 seats) so that the share never rounds away a whole slot of a small team and never
takes more than half a seat beyond it. Until `release_before` ahead of the slot start the
standard tier may use only the other `c − reserved` (open) seats; from then on unsold reserved
seats count as open for everybody. The fast lane takes a reserved seat while one is free and
an open seat otherwise.

Everything here is plain data: the shell loads bookings into a `CalendarState`, asks it (or
`sla.reorder.place_booking`) for a decision, and persists the result.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sla.config import WEEKDAYS, Calendar, Tier

_MINUTES_PER_DAY = 24 * 60


class CalendarError(ValueError):
    """A booking change that would break the calendar's rules (a caller's bug, not input)."""


def reserved_seats(capacity: int, share: float) -> int:
    """The seats of a slot held for the fast lane: `capacity × share`, halves rounded up."""
    if capacity <= 0 or share <= 0:
        return 0
    # The epsilon keeps 0.15 × 10 = 1.4999999999999998 from rounding down.
    return max(0, min(capacity, math.floor(capacity * share + 0.5 + 1e-9)))


@dataclass(frozen=True, slots=True)
class CalendarPolicy:
    """The calendar section's rules as the core uses them, in seconds."""

    slot_seconds: int
    reserved_share: float
    release_before_seconds: int
    fast_lane_within_seconds: int
    max_delay_seconds: int
    horizon_seconds: int

    @classmethod
    def from_config(cls, calendar: Calendar) -> CalendarPolicy:
        """The policy of a rules document's `calendar` section."""
        return cls(
            slot_seconds=calendar.slot_minutes * 60,
            reserved_share=float(calendar.reserved_share),
            release_before_seconds=calendar.release_before_minutes * 60,
            fast_lane_within_seconds=calendar.fast_lane_within_minutes * 60,
            max_delay_seconds=calendar.max_delay_minutes * 60,
            horizon_seconds=calendar.horizon_days * 86400,
        )


@dataclass(frozen=True, slots=True)
class Slot:
    """One bookable period: its seats and how many of them the fast lane holds until release."""

    start: float
    end: float
    capacity: int
    reserved: int


def generate_slots(calendar: Calendar, start: float, end: float) -> list[Slot]:
    """Every slot of the calendar that starts in [start, end), earliest first."""
    if end <= start or not calendar.hours:
        return []
    zone = ZoneInfo(calendar.timezone)
    length = calendar.slot_minutes
    grid = _weekly_grid(calendar)
    share = float(calendar.reserved_share)
    first_day = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=1)
    last_day = dt.datetime.fromtimestamp(end, zone).date()
    slots: list[Slot] = []
    day = first_day
    while day <= last_day:
        open_minutes = grid[day.weekday()]
        next_day = day + dt.timedelta(days=1)
        if open_minutes:
            midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
            following = dt.datetime.combine(next_day, dt.time(), tzinfo=zone)
            steady = midnight.utcoffset() == following.utcoffset()
            base = midnight.timestamp()
            for minute, capacity in open_minutes:
                if steady:
                    # No clock change today (all but about two days a year): plain arithmetic.
                    starts = [base + minute * 60]
                else:
                    wall = dt.datetime.combine(day, dt.time(minute // 60, minute % 60))
                    starts = _occurrences(wall, zone, length * 60)
                reserved = reserved_seats(capacity, share)
                slots.extend(
                    Slot(begin, begin + length * 60, capacity, reserved)
                    for begin in starts
                    if start <= begin < end
                )
        day = next_day
    slots.sort(key=lambda slot: slot.start)
    return slots


def _weekly_grid(calendar: Calendar) -> list[list[tuple[int, int]]]:
    """Per weekday (Monday first): (minute of the day, agents) of every grid slot with agents."""
    length = calendar.slot_minutes
    grid: list[list[tuple[int, int]]] = []
    for weekday in WEEKDAYS:
        spans = [
            (_minutes(entry.start), _minutes(entry.end), entry.agents)
            for entry in calendar.hours
            if weekday in entry.days
        ]
        slots = []
        for minute in range(0, _MINUTES_PER_DAY - length + 1, length):
            capacity = sum(
                agents for begin, finish, agents in spans if begin <= minute <= finish - length
            )
            if capacity > 0:
                slots.append((minute, capacity))
        grid.append(slots)
    return grid


def _minutes(clock_time: str) -> int:
    hours, minutes = clock_time.split(":")
    return int(hours) * 60 + int(minutes)


def _occurrences(wall: dt.datetime, zone: ZoneInfo, length_seconds: int) -> list[float]:
    """The instants at which local time `wall` begins a whole slot (none, one, or two)."""
    instants: list[float] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).timestamp()
        if instant in instants:
            continue  # not ambiguous: both folds name the same instant
        local = dt.datetime.fromtimestamp(instant, zone)
        if local.replace(tzinfo=None) != wall:
            continue  # the clocks skipped this time
        last_second = dt.datetime.fromtimestamp(instant + length_seconds - 1, zone)
        if last_second.utcoffset() != local.utcoffset():
            continue  # the offset changes inside the slot
        instants.append(instant)
    return instants


@dataclass(slots=True)
class Booking:
    """An appointment holding a seat in a slot."""

    appointment_id: str
    tier: Tier
    not_before: float
    not_after: float
    slot_start: float
    from_reserved: bool = False
    moved_count: int = 0
    booked_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SlotSeats:
    """A slot's seats as one tier sees them at one moment."""

    slot: Slot
    released: bool
    booked: int
    free: int


@dataclass(slots=True)
class _Occupancy:
    reserved_used: int = 0
    open_used: int = 0
    bookings: dict[str, Booking] = field(default_factory=dict)


class CalendarState:
    """Slots of one time range and the bookings in them, with seat accounting per slot.

    Bookings whose slot is not among `slots` (the opening hours changed since, or the slot
    lies outside the loaded range) are remembered but take no seat here.
    """

    def __init__(
        self, slots: Sequence[Slot], bookings: Iterable[Booking], *, policy: CalendarPolicy
    ) -> None:
        self.policy = policy
        self.slots: list[Slot] = sorted(slots, key=lambda slot: slot.start)
        self.starts: list[float] = [slot.start for slot in self.slots]
        self._index = {slot.start: i for i, slot in enumerate(self.slots)}
        self._occupancy = [_Occupancy() for _ in self.slots]
        self.bookings: dict[str, Booking] = {}
        for booking in bookings:
            self._seat(booking)

    # ---- reading ------------------------------------------------------------------------
    def index_of(self, slot_start: float) -> int | None:
        """The position of the slot starting at `slot_start`, if the calendar has it."""
        return self._index.get(slot_start)

    def occupants(self, index: int) -> list[Booking]:
        """The bookings in a slot, in the order they were seated."""
        return list(self._occupancy[index].bookings.values())

    def released(self, index: int, now: float) -> bool:
        """Whether the slot's unsold reserved seats are open to everybody at `now`."""
        return now >= self.slots[index].start - self.policy.release_before_seconds

    def used(self, index: int) -> tuple[int, int]:
        """(reserved seats used, open seats used) of a slot."""
        occupancy = self._occupancy[index]
        return occupancy.reserved_used, occupancy.open_used

    def free_seats(self, index: int, tier: Tier, now: float) -> int:
        """Seats of the slot that a booking of `tier` could take at `now`."""
        slot = self.slots[index]
        occupancy = self._occupancy[index]
        if self.released(index, now):
            free = slot.capacity - occupancy.reserved_used - occupancy.open_used
        else:
            free = slot.capacity - slot.reserved - occupancy.open_used
            if tier == "fast_lane":
                free += max(0, slot.reserved - occupancy.reserved_used)
        # A calendar that shrank (fewer agents in new rules) may hold more than it now seats.
        return max(0, free)

    def seat_kind(self, index: int, tier: Tier, now: float) -> bool | None:
        """The seat `tier` would get in the slot (True: a reserved one), or None if it is full."""
        if self.free_seats(index, tier, now) <= 0:
            return None
        if tier == "standard":
            return False
        return self._occupancy[index].reserved_used < self.slots[index].reserved

    def seats(self, index: int, tier: Tier, now: float) -> SlotSeats:
        """A slot's availability for one tier."""
        reserved_used, open_used = self.used(index)
        return SlotSeats(
            self.slots[index],
            self.released(index, now),
            reserved_used + open_used,
            self.free_seats(index, tier, now),
        )

    def window(
        self, not_before: float, not_after: float, now: float, latest_start: float = math.inf
    ) -> range:
        """Positions of the future slots that fit the window (and start by `latest_start`).

        A slot fits when it starts at or after `not_before` and ends by `not_after`.
        """
        earliest = max(not_before, now)
        first = bisect.bisect_left(self.starts, earliest)
        if first < len(self.starts) and self.starts[first] <= now:
            first += 1  # a slot starting right now is no longer bookable
        latest = min(latest_start, not_after - self.policy.slot_seconds)
        last = bisect.bisect_right(self.starts, latest)
        return range(first, max(first, last))

    def earliest_seat(
        self,
        tier: Tier,
        not_before: float,
        not_after: float,
        now: float,
        latest_start: float = math.inf,
    ) -> tuple[int, bool] | None:
        """The earliest slot in the window with a seat for `tier`, and that seat's kind."""
        for index in self.window(not_before, not_after, now, latest_start):
            kind = self.seat_kind(index, tier, now)
            if kind is not None:
                return index, kind
        return None

    # ---- changing -----------------------------------------------------------------------
    def book(self, booking: Booking, now: float) -> None:
        """Seat a new booking, refusing anything the calendar's rules do not allow."""
        if booking.appointment_id in self.bookings:
            raise CalendarError(f"appointment {booking.appointment_id} is already booked")
        index = self._index.get(booking.slot_start)
        if index is None or index not in self.window(booking.not_before, booking.not_after, now):
            raise CalendarError("the slot is not inside the appointment's window")
        if self.seat_kind(index, booking.tier, now) is None:
            raise CalendarError("the slot has no seat for this tier")
        if booking.from_reserved and (
            booking.tier != "fast_lane"
            or self._occupancy[index].reserved_used >= self.slots[index].reserved
        ):
            raise CalendarError("no reserved seat is free for this booking")
        self._seat(booking)

    def cancel(self, appointment_id: str) -> Booking:
        """Free the booking's seat."""
        booking = self.bookings.pop(appointment_id, None)
        if booking is None:
            raise CalendarError(f"appointment {appointment_id} is not booked")
        index = self._index.get(booking.slot_start)
        if index is not None:
            occupancy = self._occupancy[index]
            del occupancy.bookings[appointment_id]
            if booking.from_reserved:
                occupancy.reserved_used -= 1
            else:
                occupancy.open_used -= 1
        return booking

    def move(self, appointment_id: str, new_start: float, now: float) -> Booking:
        """Move a standard booking once, later by at most the maximum delay, inside its bounds.

        The new slot must have an open seat (or a released one) for the standard tier.
        """
        booking = self.bookings.get(appointment_id)
        if booking is None:
            raise CalendarError(f"appointment {appointment_id} is not booked")
        if booking.tier != "standard":
            raise CalendarError("a fast-lane booking is never moved")
        if booking.moved_count > 0:
            raise CalendarError("an appointment is moved at most once")
        if not booking.slot_start < new_start <= booking.slot_start + self.policy.max_delay_seconds:
            raise CalendarError("a move goes later, by at most the maximum delay")
        index = self._index.get(new_start)
        if index is None or index not in self.window(booking.not_before, booking.not_after, now):
            raise CalendarError("the new slot is not inside the appointment's window")
        if self.seat_kind(index, "standard", now) is None:
            raise CalendarError("the new slot has no seat")
        self.cancel(appointment_id)
        booking.slot_start = new_start
        booking.moved_count += 1
        self._seat(booking)
        return booking

    def _seat(self, booking: Booking) -> None:
        self.bookings[booking.appointment_id] = booking
        index = self._index.get(booking.slot_start)
        if index is None:
            return
        occupancy = self._occupancy[index]
        occupancy.bookings[booking.appointment_id] = booking
        if booking.from_reserved:
            occupancy.reserved_used += 1
        else:
            occupancy.open_used += 1
