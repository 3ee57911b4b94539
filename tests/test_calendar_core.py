"""The appointment calendar's pure core: slots, seats, release, placement and reordering."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from sla.calendar import (
    Booking,
    CalendarError,
    CalendarPolicy,
    CalendarState,
    Slot,
    generate_slots,
    reserved_seats,
)
from sla.config import Calendar, OpenHours
from sla.reorder import BookingRequest, Move, apply_placement, place_booking, plan_reorder

BERLIN = ZoneInfo("Europe/Berlin")
NOW = 1_800_000_000.0  # Friday 2027-01-15 08:00 UTC
HALF_HOUR = 1800
HOUR = 3600


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Unix seconds of a Berlin wall-clock time."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=BERLIN).timestamp()


def wall(instant: float) -> str:
    """Berlin wall-clock time and offset of an instant, e.g. `02:30+0100`."""
    return dt.datetime.fromtimestamp(instant, BERLIN).strftime("%H:%M%z")


def policy(
    *,
    share: float = 0.5,
    release_minutes: int = 60,
    within_minutes: int = 60,
    max_delay_minutes: int = 120,
) -> CalendarPolicy:
    return CalendarPolicy(
        slot_seconds=HALF_HOUR,
        reserved_share=share,
        release_before_seconds=release_minutes * 60,
        fast_lane_within_seconds=within_minutes * 60,
        max_delay_seconds=max_delay_minutes * 60,
        horizon_seconds=7 * 86400,
    )


def half_hours(count: int, *, capacity: int = 2, reserved: int = 1) -> list[Slot]:
    """`count` back-to-back half-hour slots, the first one starting 2 h after NOW."""
    first = NOW + 2 * HOUR
    return [
        Slot(first + i * HALF_HOUR, first + (i + 1) * HALF_HOUR, capacity, reserved)
        for i in range(count)
    ]


def standard(
    appointment_id: str,
    slot: Slot,
    *,
    not_after: float | None = None,
    booked_at: float = NOW - 100,
    moved: int = 0,
) -> Booking:
    return Booking(
        appointment_id,
        "standard",
        slot.start,
        not_after if not_after is not None else slot.start + 10 * HOUR,
        slot.start,
        from_reserved=False,
        moved_count=moved,
        booked_at=booked_at,
    )


def fast(appointment_id: str, slot: Slot) -> Booking:
    """A fast-lane booking in a reserved seat when the slot has one, an open seat otherwise."""
    return Booking(
        appointment_id,
        "fast_lane",
        slot.start,
        slot.start + 10 * HOUR,
        slot.start,
        from_reserved=slot.reserved > 0,
    )


def request(appointment_id: str, tier: str, not_before: float, not_after: float) -> BookingRequest:
    return BookingRequest(appointment_id, tier, not_before, not_after)  # type: ignore[arg-type]


# ---- reserved seats ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capacity", "share", "seats"),
    [
        (50, 0.10, 5),
        (10, 0.10, 1),
        (5, 0.10, 1),  # half a seat rounds up
        (4, 0.10, 0),
        (10, 0.15, 2),  # 1.5 despite 10 × 0.15 = 1.4999… in floating point
        (7, 0.0, 0),
        (3, 1.0, 3),
        (0, 0.5, 0),
    ],
)
def test_reserved_seats_are_the_share_of_capacity_rounded_half_up(
    capacity: int, share: float, seats: int
) -> None:
    assert reserved_seats(capacity, share) == seats


# ---- slot generation -----------------------------------------------------------------------
def weekday_calendar(**overrides: object) -> Calendar:
    values: dict[str, object] = {
        "timezone": "Europe/Berlin",
        "slot_minutes": 30,
        "hours": [
            OpenHours(
                days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00", agents=10
            )
        ],
        "reserved_share": 0.1,
    }
    values.update(overrides)
    return Calendar.model_validate(values)


def test_business_hours_follow_berlin_time_in_winter_and_summer() -> None:
    calendar = weekday_calendar()
    winter = generate_slots(calendar, berlin(2027, 1, 18), berlin(2027, 1, 19))  # a Monday
    summer = generate_slots(calendar, berlin(2027, 7, 19), berlin(2027, 7, 20))  # a Monday
    for slots in (winter, summer):
        assert len(slots) == 16
        assert (wall(slots[0].start), wall(slots[-1].end)) in {
            ("09:00+0100", "17:00+0100"),
            ("09:00+0200", "17:00+0200"),
        }
        assert {(s.capacity, s.reserved, s.end - s.start) for s in slots} == {(10, 1, 1800)}
    assert dt.datetime.fromtimestamp(winter[0].start, dt.UTC).hour == 8
    assert dt.datetime.fromtimestamp(summer[0].start, dt.UTC).hour == 7


def test_closed_days_have_no_slots() -> None:
    calendar = weekday_calendar()
    assert generate_slots(calendar, berlin(2027, 1, 16), berlin(2027, 1, 18)) == []  # Sat+Sun


def test_overlapping_opening_hours_add_their_agents_and_partial_slots_are_left_out() -> None:
    calendar = weekday_calendar(
        hours=[
            OpenHours(days=["mon"], start="09:00", end="11:00", agents=4),
            OpenHours(days=["mon"], start="10:00", end="11:00", agents=2),
            OpenHours(days=["mon"], start="11:15", end="12:00", agents=3),
        ]
    )
    slots = generate_slots(calendar, berlin(2027, 1, 18), berlin(2027, 1, 19))
    assert [(wall(s.start)[:5], s.capacity) for s in slots] == [
        ("09:00", 4),
        ("09:30", 4),
        ("10:00", 6),
        ("10:30", 6),
        ("11:30", 3),  # 11:15-11:30 is not a whole slot of the grid
    ]


def test_a_round_the_clock_calendar_has_46_slots_when_clocks_go_forward_and_50_when_back() -> None:
    calendar = weekday_calendar(
        hours=[OpenHours(days=["sun"], start="00:00", end="24:00", agents=3)]
    )
    spring = generate_slots(calendar, berlin(2027, 3, 28), berlin(2027, 3, 29))
    autumn = generate_slots(calendar, berlin(2027, 10, 31), berlin(2027, 11, 1))
    assert len(spring) == 46
    assert [wall(s.start) for s in spring[2:5]] == ["01:00+0100", "01:30+0100", "03:00+0200"]
    assert len(autumn) == 50
    assert [wall(s.start) for s in autumn[4:8]] == [
        "02:00+0200",
        "02:30+0200",
        "02:00+0100",  # the repeated hour is worked twice
        "02:30+0100",
    ]
    for slots in (spring, autumn):
        assert all(a.end <= b.start for a, b in itertools.pairwise(slots))
        assert {s.end - s.start for s in slots} == {1800}


def test_a_slot_that_would_straddle_the_clock_change_is_dropped() -> None:
    calendar = weekday_calendar(
        slot_minutes=45, hours=[OpenHours(days=["sun"], start="00:00", end="24:00", agents=3)]
    )
    spring = generate_slots(calendar, berlin(2027, 3, 28), berlin(2027, 3, 29))
    # 00:00, 00:45 exist; 01:30-02:15 would cross 02:00->03:00 and 02:15 does not exist.
    assert [wall(s.start) for s in spring[:3]] == ["00:00+0100", "00:45+0100", "03:00+0200"]
    assert {s.end - s.start for s in spring} == {2700}


def test_slots_are_generated_only_inside_the_asked_range() -> None:
    calendar = weekday_calendar()
    slots = generate_slots(calendar, berlin(2027, 1, 18, 12, 0), berlin(2027, 1, 18, 13, 0))
    assert [wall(s.start)[:5] for s in slots] == ["12:00", "12:30"]


# ---- seats, release, booking and cancelling -------------------------------------------------
def test_standard_customers_get_open_seats_only_until_the_reserved_share_is_released() -> None:
    slots = half_hours(1, capacity=4, reserved=2)  # starts NOW + 2 h; release 1 h before
    state = CalendarState(slots, [], policy=policy(release_minutes=60))
    for number in (1, 2):
        placement = place_booking(
            state, request(f"s{number}", "standard", NOW, NOW + 9 * HOUR), now=NOW
        )
        assert placement is not None and placement.from_reserved is False
        apply_placement(
            state, request(f"s{number}", "standard", NOW, NOW + 9 * HOUR), placement, now=NOW
        )
    assert place_booking(state, request("s3", "standard", NOW, NOW + 9 * HOUR), now=NOW) is None
    assert state.free_seats(0, "fast_lane", NOW) == 2

    released_at = slots[0].start - HOUR
    assert state.free_seats(0, "standard", released_at - 1) == 0
    assert state.free_seats(0, "standard", released_at) == 2
    late = request("s3", "standard", NOW, NOW + 9 * HOUR)
    placement = place_booking(state, late, now=released_at)
    assert placement is not None
    apply_placement(state, late, placement, now=released_at)
    assert state.used(0) == (0, 3)


def test_the_fast_lane_takes_reserved_seats_first_and_then_open_ones() -> None:
    slots = half_hours(1, capacity=3, reserved=1)
    state = CalendarState(slots, [], policy=policy(within_minutes=180))
    kinds = []
    for number in range(3):
        booking = request(f"f{number}", "fast_lane", NOW, NOW + 9 * HOUR)
        placement = place_booking(state, booking, now=NOW)
        assert placement is not None and placement.within_sla is True
        kinds.append(placement.from_reserved)
        apply_placement(state, booking, placement, now=NOW)
    assert kinds == [True, False, False]
    assert state.free_seats(0, "fast_lane", NOW) == 0


def test_the_earliest_slot_inside_the_customers_window_is_chosen() -> None:
    slots = half_hours(4)
    state = CalendarState(slots, [standard("early", slots[1])], policy=policy())
    booking = request("b", "standard", slots[1].start, slots[3].end)
    placement = place_booking(state, booking, now=NOW)
    assert placement is not None
    assert placement.slot_start == slots[2].start  # slot 1 has no open seat left
    assert placement.slot_end == slots[2].end
    short = request("c", "standard", slots[1].start, slots[1].end)
    assert place_booking(state, short, now=NOW) is None


def test_cancelling_frees_the_seat_of_its_kind() -> None:
    slots = half_hours(1, capacity=2, reserved=1)
    state = CalendarState(slots, [standard("s", slots[0]), fast("f", slots[0])], policy=policy())
    assert state.free_seats(0, "standard", NOW) == 0
    assert state.free_seats(0, "fast_lane", NOW) == 0
    state.cancel("f")
    assert (state.free_seats(0, "standard", NOW), state.free_seats(0, "fast_lane", NOW)) == (0, 1)
    state.cancel("s")
    assert (state.free_seats(0, "standard", NOW), state.free_seats(0, "fast_lane", NOW)) == (1, 2)


def test_the_state_refuses_bookings_and_moves_that_break_the_rules() -> None:
    slots = half_hours(3, capacity=1, reserved=0)
    state = CalendarState(
        slots, [standard("s0", slots[0]), fast("f1", slots[1])], policy=policy(max_delay_minutes=30)
    )
    with pytest.raises(CalendarError):
        state.book(standard("x", slots[0]), NOW)  # full
    with pytest.raises(CalendarError):
        state.move("f1", slots[2].start, NOW)  # fast lane never moves
    with pytest.raises(CalendarError):
        state.move("s0", slots[2].start, NOW)  # 60 minutes > the 30 allowed
    with pytest.raises(CalendarError):
        state.move("s0", slots[1].start, NOW)  # no seat there
    state.cancel("f1")
    state.move("s0", slots[1].start, NOW)
    with pytest.raises(CalendarError):
        state.move("s0", slots[2].start, NOW)  # never twice


# ---- reordering ----------------------------------------------------------------------------
def full_slots(count: int) -> tuple[list[Slot], list[Booking]]:
    """Slots of one seat each (no reserved seat), all taken by standard appointments."""
    slots = half_hours(count, capacity=1, reserved=0)
    return slots, [standard(f"s{i}", slot) for i, slot in enumerate(slots)]


def test_a_fast_lane_booking_with_a_full_window_moves_one_standard_appointment_later() -> None:
    slots, bookings = full_slots(3)
    state = CalendarState([*slots, *half_hours(5)[3:]], bookings, policy=policy(within_minutes=30))
    booking = request("vip", "fast_lane", slots[0].start, slots[0].start + 10 * HOUR)
    placement = place_booking(state, booking, now=NOW)
    assert placement is not None
    # The window is slots 0 and 1; moving s1 one slot is not possible (slot 2 is full), so
    # the cheapest answer is s1 -> slot 3 (60 min) rather than s0 -> slot 3 (90 min).
    assert placement.within_sla is True
    assert placement.slot_start == slots[1].start
    assert placement.moves == (Move("s1", slots[1].start, slots[1].start + 2 * HALF_HOUR),)
    apply_placement(state, booking, placement, now=NOW)
    assert state.bookings["s1"].moved_count == 1
    assert state.bookings["vip"].slot_start == slots[1].start


def test_moves_chain_when_the_maximum_delay_rules_out_one_long_move() -> None:
    slots, bookings = full_slots(4)
    free = half_hours(5)[4]
    state = CalendarState(
        [*slots, free], bookings, policy=policy(within_minutes=0, max_delay_minutes=60)
    )
    booking = request("vip", "fast_lane", slots[0].start, slots[0].start + 10 * HOUR)
    placement = place_booking(state, booking, now=NOW)
    assert placement is not None and placement.reorder is not None
    assert placement.slot_start == slots[0].start
    assert placement.moves == (
        Move("s0", slots[0].start, slots[2].start),
        Move("s2", slots[2].start, free.start),
    )
    assert placement.reorder.displacement_seconds == 2 * HOUR
    assert placement.reorder.optimal is True
    apply_placement(state, booking, placement, now=NOW)
    assert [state.bookings[i].slot_start for i in ("vip", "s0", "s1", "s2", "s3")] == [
        slots[0].start,
        slots[2].start,
        slots[1].start,
        free.start,
        slots[3].start,
    ]


def test_of_equal_displacement_the_answer_moving_fewer_customers_wins() -> None:
    slots, bookings = full_slots(3)
    free = half_hours(4)[3]
    state = CalendarState(
        [*slots, free], bookings, policy=policy(within_minutes=0, max_delay_minutes=120)
    )
    placement = place_booking(
        state, request("vip", "fast_lane", slots[0].start, NOW + 10 * HOUR), now=NOW
    )
    assert placement is not None
    assert placement.moves == (Move("s0", slots[0].start, free.start),)


def test_a_customers_not_after_and_earlier_moves_and_the_fast_lane_are_never_touched() -> None:
    slots = half_hours(3, capacity=4, reserved=0)
    window = slots[0]
    occupants = [
        fast("paid", window),
        standard("moved-before", window, moved=1, booked_at=NOW - 1),
        standard("tight", window, not_after=window.end + HALF_HOUR, booked_at=NOW - 2),
        standard("flexible", window, booked_at=NOW - 500),
    ]
    later_full = [standard(f"x{i}", slots[1]) for i in range(4)]
    state = CalendarState(slots, [*occupants, *later_full], policy=policy(within_minutes=0))
    placement = place_booking(
        state, request("vip", "fast_lane", window.start, NOW + 10 * HOUR), now=NOW
    )
    assert placement is not None
    # Only "flexible" can leave: "tight" cannot go past slot 1, which is full.
    assert placement.moves == (Move("flexible", window.start, slots[2].start),)


def test_the_most_recently_booked_of_interchangeable_appointments_is_moved() -> None:
    slots = half_hours(2, capacity=3, reserved=0)
    early = [
        standard("first", slots[0], booked_at=NOW - 300),
        standard("last", slots[0], booked_at=NOW - 100),
        standard("middle", slots[0], booked_at=NOW - 200),
    ]
    state = CalendarState(slots, early, policy=policy(within_minutes=0))
    placement = place_booking(
        state, request("vip", "fast_lane", slots[0].start, NOW + 10 * HOUR), now=NOW
    )
    assert placement is not None
    assert [move.appointment_id for move in placement.moves] == ["last"]


def test_without_any_feasible_reorder_the_fast_lane_gets_the_next_seat_outside_its_sla() -> None:
    slots, bookings = full_slots(3)
    free = half_hours(6)[5]
    state = CalendarState(
        [*slots, free], bookings, policy=policy(within_minutes=0, max_delay_minutes=30)
    )
    # Every move would have to jump 90 minutes or more: no reorder is possible.
    assert (
        plan_reorder(state, not_before=slots[0].start, not_after=NOW + 10 * HOUR, now=NOW) is None
    )
    placement = place_booking(
        state, request("vip", "fast_lane", slots[0].start, NOW + 10 * HOUR), now=NOW
    )
    assert placement is not None
    assert (placement.slot_start, placement.moves, placement.within_sla) == (free.start, (), False)
    tight = request("vip", "fast_lane", slots[0].start, slots[2].end)
    assert place_booking(state, tight, now=NOW) is None


def test_a_standard_booking_never_moves_anybody() -> None:
    slots, bookings = full_slots(2)
    state = CalendarState([*slots, half_hours(3)[2]], bookings, policy=policy(within_minutes=0))
    assert (
        place_booking(state, request("s", "standard", slots[0].start, slots[1].end), now=NOW)
        is None
    )
    assert all(b.moved_count == 0 for b in state.bookings.values())


def test_less_displacement_beats_fewer_customers_moved() -> None:
    slots = half_hours(4, capacity=1, reserved=0)
    bookings = [
        standard("a", slots[0], not_after=slots[3].end),
        standard("b", slots[1], not_after=slots[2].end),
        standard("c", slots[2], not_after=slots[3].end),
    ]
    state = CalendarState(slots, bookings, policy=policy(within_minutes=30))
    placement = place_booking(
        state, request("vip", "fast_lane", slots[0].start, NOW + 10 * HOUR), now=NOW
    )
    assert placement is not None and placement.reorder is not None
    # a -> slot 3 moves one customer by 90 minutes; b -> slot 2, c -> slot 3 moves two
    # customers by 60 minutes in total, and wins.
    assert placement.slot_start == slots[1].start
    assert placement.moves == (
        Move("b", slots[1].start, slots[2].start),
        Move("c", slots[2].start, slots[3].start),
    )
    assert placement.reorder.displacement_seconds == HOUR


def test_a_solver_out_of_time_still_yields_the_least_displacement_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ortools.sat.python import cp_model

    solve = cp_model.CpSolver.solve

    def out_of_time(self: cp_model.CpSolver, model: cp_model.CpModel) -> int:
        solve(self, cp_model.CpModel())  # a real (empty) solve, so the solver has a response
        return int(cp_model.UNKNOWN)

    monkeypatch.setattr(cp_model.CpSolver, "solve", out_of_time)
    slots, bookings = full_slots(4)
    free = half_hours(5)[4]
    state = CalendarState(
        [*slots, free], bookings, policy=policy(within_minutes=0, max_delay_minutes=60)
    )
    reorder = plan_reorder(state, not_before=slots[0].start, not_after=NOW + 10 * HOUR, now=NOW)
    assert reorder is not None
    assert (reorder.optimal, reorder.displacement_seconds) == (False, 2 * HOUR)
    assert reorder.moves == (
        Move("s0", slots[0].start, slots[2].start),
        Move("s2", slots[2].start, free.start),
    )
