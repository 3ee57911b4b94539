"""Fast-lane reorder time on two weeks of half-hour slots, 50 agents, 5,000 appointments.

Run from the repository root:

    python -m bench.bench_reorder             # both layouts, 25 fast-lane bookings each
    python -m bench.bench_reorder --bookings 50 --seed 7

Each layout books 5,000 appointments so that the first days are full (every open seat taken by
a standard customer, every reserved seat by a fast-lane customer) and the rest of the two
weeks is loosely used. Then fast-lane customers ask, one after another, for a slot within the
fast-lane window (24 h) of a not-before in the full days: every one of them needs a reorder,
and the benchmark fails if one does not. Each booking is placed and applied, so later ones
see the moves of earlier ones (and fewer movable appointments).

Printed per layout: medians and p95 of the whole placement (`place_booking`: the seat search,
the dynamic programme that bounds the model, building and solving it with CP-SAT) and of the
part inside CP-SAT's solve call, the candidate moves in the model, moves per booking, and the
mean displacement. Target: at most 1 s per fast-lane booking.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import platform
import random
import statistics
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sla.calendar import Booking, CalendarPolicy, CalendarState, generate_slots
from sla.config import Calendar, OpenHours
from sla.reorder import BookingRequest, apply_placement, place_booking

APPOINTMENTS = 5_000
AGENTS = 50
ZONE = "Europe/Berlin"
# Monday 2027-01-18 00:00 Berlin: the calendar starts the next slot after this.
START = dt.datetime(2027, 1, 18, tzinfo=ZoneInfo(ZONE)).timestamp()


@dataclass(frozen=True)
class Layout:
    """Opening hours and how many of the first slots are booked solid."""

    name: str
    hours: list[OpenHours]
    full_slots: int


LAYOUTS = (
    # 10 weekdays x 24 slots: 240 slots, 12,000 seats; Monday to Wednesday (72 slots) full.
    Layout(
        "weekdays 08:00-20:00",
        [
            OpenHours(
                days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="20:00", agents=AGENTS
            )
        ],
        72,
    ),
    # 14 days x 48 slots: 672 slots, 33,600 seats; the first two days and a half full.
    Layout(
        "round the clock",
        [
            OpenHours(
                days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                start="00:00",
                end="24:00",
                agents=AGENTS,
            )
        ],
        100,
    ),
)


@dataclass(frozen=True)
class Result:
    """Figures of one layout."""

    layout: str
    slots: int
    booked: int
    build_ms: float
    place_ms: list[float]
    solve_ms: list[float]
    candidates: list[int]
    moves: list[int]
    displacement_minutes: list[float]
    optimal: int


def calendar_of(layout: Layout) -> Calendar:
    """The rules' calendar section of a layout (defaults: 10 % reserved, 24 h window)."""
    return Calendar(timezone=ZONE, slot_minutes=30, hours=layout.hours, horizon_days=14)


def booked_state(layout: Layout, rng: random.Random, now: float) -> CalendarState:
    """5,000 appointments: the first `full_slots` slots full, the rest spread at random."""
    calendar = calendar_of(layout)
    policy = CalendarPolicy.from_config(calendar)
    # Slots starting after now: one starting right now is no longer bookable.
    slots = generate_slots(calendar, now + 1, now + policy.horizon_seconds)
    state = CalendarState(slots, [], policy=policy)
    number = 0

    def add(index: int, tier: str, from_reserved: bool) -> None:
        nonlocal number
        number += 1
        slot = state.slots[index]
        # Customers accept the slot they got and up to five days more, at random.
        not_after = slot.end + rng.choice([0, 1, 2, 3, 5]) * 86400 + rng.randrange(0, 86400)
        booking = Booking(
            f"a{number}",
            tier,  # type: ignore[arg-type]
            slot.start - rng.randrange(0, 4 * 3600),
            not_after,
            slot.start,
            from_reserved=from_reserved,
            booked_at=now - rng.uniform(0, 30 * 86400),
        )
        state.book(booking, now)

    for index in range(layout.full_slots):
        slot = state.slots[index]
        for _ in range(slot.reserved):
            add(index, "fast_lane", True)
        for _ in range(slot.capacity - slot.reserved):
            add(index, "standard", False)
    rest = range(layout.full_slots, len(state.slots))
    while number < APPOINTMENTS:
        index = rng.choice(rest)
        if state.free_seats(index, "standard", now) > 0:
            add(index, "standard", False)
    return state


def run(layout: Layout, bookings: int, seed: int) -> Result:
    """Place `bookings` fast-lane requests that each need a reorder; time them."""
    rng = random.Random(seed)
    now = START
    started = time.perf_counter()
    state = booked_state(layout, rng, now)
    build_ms = (time.perf_counter() - started) * 1000
    full_until = state.slots[layout.full_slots - 1].start
    place_ms, solve_ms, candidates, moves, displacement = [], [], [], [], []
    optimal = 0
    for number in range(bookings):
        not_before = rng.uniform(state.slots[0].start, full_until - 86400)
        request = BookingRequest(f"fast-{number}", "fast_lane", not_before, not_before + 5 * 86400)
        started = time.perf_counter()
        placement = place_booking(state, request, now=now)
        elapsed = time.perf_counter() - started
        if placement is None or placement.reorder is None or not placement.moves:
            raise SystemExit(f"{layout.name}: booking {number} did not need a reorder")
        apply_placement(state, request, placement, now=now)
        reorder = placement.reorder
        place_ms.append(elapsed * 1000)
        solve_ms.append(reorder.solver_seconds * 1000)
        candidates.append(reorder.candidate_moves)
        moves.append(len(placement.moves))
        displacement.append(reorder.displacement_seconds / 60)
        optimal += reorder.optimal
    return Result(
        layout.name,
        len(state.slots),
        APPOINTMENTS,
        build_ms,
        place_ms,
        solve_ms,
        candidates,
        moves,
        displacement,
        optimal,
    )


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method)."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main() -> None:
    """Run every layout and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=25, help="fast-lane bookings per layout")
    parser.add_argument("--seed", type=int, default=20270118)
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, ortools {importlib.metadata.version('ortools')}, "
        f"{platform.machine()}; {APPOINTMENTS} appointments, {AGENTS} agents, 30-minute slots, "
        f"14 days; {args.bookings} fast-lane bookings per layout, each needing a reorder"
    )
    # The first solve in a process imports cp_model (and pandas); that is not solve time.
    run(LAYOUTS[0], 1, args.seed)
    for layout in LAYOUTS:
        result = run(layout, args.bookings, args.seed)
        print(f"\n{result.layout}: {result.slots} slots, {result.booked} booked")
        print(f"  calendar state built in {result.build_ms:.0f} ms")
        print(
            f"  placement  median {statistics.median(result.place_ms):7.1f} ms"
            f"   p95 {p95(result.place_ms):7.1f} ms   max {max(result.place_ms):7.1f} ms"
        )
        print(
            f"  CP-SAT     median {statistics.median(result.solve_ms):7.1f} ms"
            f"   p95 {p95(result.solve_ms):7.1f} ms"
            "   (inside the solve call)"
        )
        print(
            f"  candidate moves in the model: median {statistics.median(result.candidates):.0f}, "
            f"max {max(result.candidates)}; moves per booking: median "
            f"{statistics.median(result.moves):.0f}, max {max(result.moves)}; "
            f"mean displacement {statistics.mean(result.displacement_minutes):.0f} min; "
            f"{result.optimal}/{len(result.place_ms)} proven optimal"
        )


if __name__ == "__main__":
    main()
