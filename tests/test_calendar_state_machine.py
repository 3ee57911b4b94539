"""A hypothesis state machine over the calendar core.

Customers of both tiers book, cancel, and time passes (releasing reserved seats). After every
step the calendar must hold: no slot over capacity, the reserved share kept for the fast lane
until release, every appointment inside its own not-before/not-after, no appointment moved
twice or by more than the maximum delay, and no fast-lane booking ever displaced. Each booking
is also checked against a brute-force answer: the earliest seat when one exists, and the least
displacement (then the fewest customers moved) when the fast lane needs a reorder.
"""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from sla.calendar import CalendarPolicy, CalendarState, Slot
from sla.config import Tier
from sla.reorder import BookingRequest, apply_placement, place_booking, sla_latest_start

NOW = 1_800_000_000.0
HALF_HOUR = 1800
SLOTS = 10


def brute_force_reorder(
    state: CalendarState, window: range, now: float
) -> tuple[float, int] | None:
    """(least displacement, fewest moves) that frees a seat in a window slot, by search."""
    policy = state.policy

    def free_a_seat(index: int) -> tuple[float, int]:
        best = (math.inf, 0)
        for booking in state.occupants(index):
            if booking.tier != "standard" or booking.moved_count:
                continue
            for target in range(index + 1, len(state.slots)):
                delay = state.starts[target] - state.starts[index]
                if delay > policy.max_delay_seconds:
                    break
                if state.slots[target].end > booking.not_after:
                    break
                if state.free_seats(target, "standard", now) > 0:
                    best = min(best, (delay, 1))
                else:
                    onward, moves = free_a_seat(target)
                    best = min(best, (delay + onward, moves + 1))
        return best

    answers = [free_a_seat(index) for index in window]
    best = min(answers, default=(math.inf, 0))
    return None if math.isinf(best[0]) else best


class CalendarMachine(RuleBasedStateMachine):
    """Book, cancel and let time pass on one small calendar."""

    booked = Bundle("booked")

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.state: CalendarState
        self.numbers = 0
        self.moves_of: Counter[str] = Counter()
        self.fast_lane_slot: dict[str, float] = {}

    @initialize(
        seats=st.lists(
            st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=SLOTS, max_size=SLOTS
        ),
        release_minutes=st.sampled_from([0, 30, 60, 120]),
        within_minutes=st.sampled_from([0, 30, 60, 90, 120]),
        max_delay_minutes=st.sampled_from([30, 60, 120, 240]),
    )
    def open_calendar(
        self,
        seats: list[tuple[int, int]],
        release_minutes: int,
        within_minutes: int,
        max_delay_minutes: int,
    ) -> None:
        """A calendar of half-hour slots starting an hour from now."""
        first = NOW + 3600
        slots = [
            Slot(
                first + i * HALF_HOUR,
                first + (i + 1) * HALF_HOUR,
                capacity,
                min(reserved, capacity),
            )
            for i, (capacity, reserved) in enumerate(seats)
        ]
        policy = CalendarPolicy(
            slot_seconds=HALF_HOUR,
            reserved_share=0.0,  # slots carry their own reserved seats here
            release_before_seconds=release_minutes * 60,
            fast_lane_within_seconds=within_minutes * 60,
            max_delay_seconds=max_delay_minutes * 60,
            horizon_seconds=86400,
        )
        self.state = CalendarState(slots, [], policy=policy)

    @rule(
        target=booked,
        tier=st.sampled_from(["standard", "standard", "standard", "fast_lane"]),
        # Windows mostly open early and run long, so that early slots fill up and the fast
        # lane often finds its SLA window full while later slots still have room.
        first=st.integers(0, SLOTS // 2),
        span=st.integers(0, SLOTS - 1),
        early_minutes=st.sampled_from([0, 0, 0, 10, 45]),
        late_minutes=st.integers(0, 20),
    )
    def book(self, tier: Tier, first: int, span: int, early_minutes: int, late_minutes: int) -> str:
        """A customer asks for a slot between two times."""
        slots = self.state.slots
        last = min(SLOTS - 1, first + span)
        self.numbers += 1
        request = BookingRequest(
            f"a{self.numbers}",
            tier,
            slots[first].start - early_minutes * 60,
            slots[last].end + late_minutes * 60,
        )
        expected = self._expected(request)
        placement = place_booking(self.state, request, now=self.now)
        if placement is None:
            assert expected == ("none",)
            return request.appointment_id
        if placement.reorder is not None:
            assert expected == (
                "reorder",
                placement.reorder.displacement_seconds,
                len(placement.moves),
            )
            window = self.state.window(
                request.not_before,
                request.not_after,
                self.now,
                sla_latest_start(request, self.state.policy, self.now),
            )
            assert self.state.index_of(placement.slot_start) in window
        else:
            assert placement.moves == ()
            assert expected == ("seat", placement.slot_start, placement.within_sla)
        apply_placement(self.state, request, placement, now=self.now)
        for move in placement.moves:
            self.moves_of[move.appointment_id] += 1
            assert 0 < move.delay_seconds <= self.state.policy.max_delay_seconds
        if tier == "fast_lane":
            self.fast_lane_slot[request.appointment_id] = placement.slot_start
        return request.appointment_id

    def _expected(self, request: BookingRequest) -> tuple[object, ...]:
        """What a booking must give, worked out independently of `place_booking`."""
        state, now = self.state, self.now
        window = state.window(request.not_before, request.not_after, now)
        seats = [i for i in window if state.free_seats(i, request.tier, now) > 0]
        if request.tier == "standard":
            return ("seat", state.starts[seats[0]], None) if seats else ("none",)
        deadline = sla_latest_start(request, state.policy, now)
        in_sla = [i for i in seats if state.starts[i] <= deadline]
        if in_sla:
            return ("seat", state.starts[in_sla[0]], True)
        sla_window = state.window(request.not_before, request.not_after, now, deadline)
        best = brute_force_reorder(state, sla_window, now)
        if best is not None:
            return ("reorder", *best)
        return ("seat", state.starts[seats[0]], False) if seats else ("none",)

    @rule(appointment_id=consumes(booked))
    def cancel(self, appointment_id: str) -> None:
        """A customer cancels (or a booking that found no room is retried as a cancel)."""
        if appointment_id not in self.state.bookings:
            return
        booking = self.state.bookings[appointment_id]
        index = self.state.index_of(booking.slot_start)
        assert index is not None
        free_before = self.state.free_seats(index, booking.tier, self.now)
        self.state.cancel(appointment_id)
        self.fast_lane_slot.pop(appointment_id, None)
        assert self.state.free_seats(index, booking.tier, self.now) == free_before + 1

    @rule(minutes=st.integers(1, 30))
    def time_passes(self, minutes: int) -> None:
        """The clock moves on; reserved seats get released, slots start."""
        self.now += minutes * 60

    @invariant()
    def no_slot_is_over_capacity_and_the_reserved_share_holds_until_release(self) -> None:
        """Seats per slot, recounted from the bookings themselves."""
        state = self.state
        for index, slot in enumerate(state.slots):
            occupants = state.occupants(index)
            reserved = [b for b in occupants if b.from_reserved]
            open_ = [b for b in occupants if not b.from_reserved]
            assert state.used(index) == (len(reserved), len(open_))
            assert len(occupants) <= slot.capacity
            assert all(b.tier == "fast_lane" for b in reserved)
            if not state.released(index, self.now):
                assert len(reserved) <= slot.reserved
                assert len(open_) <= slot.capacity - slot.reserved

    @invariant()
    def every_appointment_stays_inside_its_bounds(self) -> None:
        """Not before its not-before, ending by its not-after."""
        for booking in self.state.bookings.values():
            index = self.state.index_of(booking.slot_start)
            assert index is not None
            slot = self.state.slots[index]
            assert booking.not_before <= slot.start
            assert slot.end <= booking.not_after

    @invariant()
    def nobody_moves_twice_and_the_fast_lane_never_moves(self) -> None:
        """Moves per appointment, and fast-lane bookings where they were put."""
        assert all(count <= 1 for count in self.moves_of.values())
        for booking in self.state.bookings.values():
            assert booking.moved_count == self.moves_of[booking.appointment_id]
        for appointment_id, slot_start in self.fast_lane_slot.items():
            assert self.state.bookings[appointment_id].slot_start == slot_start
            assert self.moves_of[appointment_id] == 0


CalendarMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCalendarMachine = CalendarMachine.TestCase
