"""Placing a booking, and making room for a fast-lane booking by moving standard appointments.

A standard booking takes the earliest slot of its window with an open seat and never moves
anybody. A fast-lane booking takes the earliest slot with a seat (reserved first) that starts
within `fast_lane_within` of its not-before. When that SLA window is full, CP-SAT reorders:
standard appointments move to later slots so that one window slot gets a free seat.

The reorder's rules: only standard appointments that were never moved before move, each at
most once, to a later slot with room for it, by at most `max_delay`, never outside its own
not-before/not-after; fast-lane bookings never move. Moves may chain (A into B's slot, B into a
free one) because the maximum delay or a customer's not-after often rules out one long move.

The objective, lexicographically: total displacement (minutes moved, summed over the moved
appointments), then the number of customers moved, then the earliest slot for the fast lane.

Along a chain the displacement telescopes (A's delay plus B's is the distance from the window
slot to the free slot), and an answer that moves more than one chain displaces more than its
cheapest chain alone. A dynamic programme over the slots (from each slot, the earliest free
slot a chain reaches, with the fewest moves) therefore finds the least displacement, and the
CP-SAT model holds only the moves that can lie on a chain of that displacement: a few hundred
on a full two-week calendar instead of one per appointment and later slot. CP-SAT chooses
among them by the whole objective under the seat and one-move-per-customer constraints,
starting from the programme's best chain as a hint; if the time limit stops it before it has
proved optimality, its best answer so far (never worse than the hint) stands. Among the
appointments of one slot that can reach the same later slot, the one booked most recently is
the one moved: the customer who booked first keeps the slot.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sla.calendar import Booking, CalendarPolicy, CalendarState

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

DEFAULT_TIME_LIMIT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class BookingRequest:
    """A request for an appointment: who, which tier, and the customer's window."""

    appointment_id: str
    tier: Literal["standard", "fast_lane"]
    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True)
class Move:
    """One standard appointment moved to a later slot to make room for the fast lane."""

    appointment_id: str
    old_start: float
    new_start: float

    @property
    def delay_seconds(self) -> float:
        """How much later the appointment now starts."""
        return self.new_start - self.old_start


@dataclass(frozen=True, slots=True)
class Reorder:
    """The fast lane's slot and the moves that free a seat in it."""

    slot_start: float
    moves: tuple[Move, ...]
    displacement_seconds: float
    optimal: bool
    seconds: float  # the whole reorder, first import of CP-SAT excluded
    solver_seconds: float  # inside CP-SAT's solve
    candidate_moves: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a booking goes and what moves first; `within_sla` only for the fast lane."""

    slot_start: float
    slot_end: float
    from_reserved: bool
    moves: tuple[Move, ...]
    within_sla: bool | None
    reorder: Reorder | None = None


def sla_latest_start(request: BookingRequest, policy: CalendarPolicy, now: float) -> float:
    """The latest slot start that meets the fast lane's SLA for this request."""
    return max(request.not_before, now) + policy.fast_lane_within_seconds


def place_booking(
    state: CalendarState,
    request: BookingRequest,
    *,
    now: float,
    time_limit: float = DEFAULT_TIME_LIMIT_SECONDS,
) -> Placement | None:
    """Decide where a booking goes (reordering for the fast lane if needed); None: no room.

    A fast-lane booking whose SLA window cannot be freed still gets the earliest later seat
    inside its own window (`within_sla` False) rather than nothing.
    """
    length = state.policy.slot_seconds
    if request.tier == "standard":
        found = state.earliest_seat("standard", request.not_before, request.not_after, now)
        if found is None:
            return None
        index, _ = found
        start = state.slots[index].start
        return Placement(start, start + length, False, (), None)
    deadline = sla_latest_start(request, state.policy, now)
    found = state.earliest_seat(
        "fast_lane", request.not_before, request.not_after, now, latest_start=deadline
    )
    if found is not None:
        index, from_reserved = found
        start = state.slots[index].start
        return Placement(start, start + length, from_reserved, (), True)
    reorder = plan_reorder(
        state,
        not_before=request.not_before,
        not_after=request.not_after,
        now=now,
        time_limit=time_limit,
    )
    if reorder is not None:
        start = reorder.slot_start
        # The moves free open seats, so the fast lane sits in an open one.
        return Placement(start, start + length, False, reorder.moves, True, reorder)
    found = state.earliest_seat("fast_lane", request.not_before, request.not_after, now)
    if found is None:
        return None
    index, from_reserved = found
    start = state.slots[index].start
    return Placement(start, start + length, from_reserved, (), False)


def apply_placement(
    state: CalendarState, request: BookingRequest, placement: Placement, *, now: float
) -> Booking:
    """Carry out a placement on the state: the moves, last link first, then the booking."""
    for move in sorted(placement.moves, key=lambda m: m.old_start, reverse=True):
        state.move(move.appointment_id, move.new_start, now)
    booking = Booking(
        appointment_id=request.appointment_id,
        tier=request.tier,
        not_before=request.not_before,
        not_after=request.not_after,
        slot_start=placement.slot_start,
        from_reserved=placement.from_reserved,
        booked_at=now,
    )
    state.book(booking, now)
    return booking


@dataclass(slots=True)
class _Graph:
    """Which slot can hand an appointment to which later slot, and the best chain from each."""

    window: list[int]
    free: dict[int, int]  # standard seats free, per slot from the window's first slot on
    reach: dict[int, int]  # the latest slot some movable appointment of the slot can go to
    movable: dict[int, list[tuple[Booking, int]]]  # (appointment, its latest slot), newest first
    best_end: dict[int, float]  # start of the earliest free slot a chain from the slot reaches
    hops: dict[int, int]  # the fewest moves of such a chain
    next_hop: dict[int, int]


def plan_reorder(
    state: CalendarState,
    *,
    not_before: float,
    not_after: float,
    now: float,
    time_limit: float = DEFAULT_TIME_LIMIT_SECONDS,
) -> Reorder | None:
    """The moves that free a seat for a fast-lane booking in its SLA window; None: impossible.

    Solved with CP-SAT within `time_limit` seconds; if the limit cuts the search short, the
    best answer found so far is used (`optimal` False), never worse than the dynamic
    programme's chain.
    """
    started = time.perf_counter()
    deadline = max(not_before, now) + state.policy.fast_lane_within_seconds
    window = list(state.window(not_before, not_after, now, latest_start=deadline))
    if not window:
        return None
    for index in window:
        if state.free_seats(index, "fast_lane", now) > 0:
            # Nothing to move: the window still has a seat.
            start = state.starts[index]
            return Reorder(start, (), 0.0, True, time.perf_counter() - started, 0.0, 0)
    graph = _chains(state, window, now)
    least = min(graph.best_end[w] - state.starts[w] for w in window)
    if math.isinf(least):
        return None
    edges, origins = _edges(state, graph, least)
    return _solve(state, graph, edges, origins, started=started, time_limit=time_limit)


def _chains(state: CalendarState, window: list[int], now: float) -> _Graph:
    """The chain graph from the window's first slot on, and its dynamic programme."""
    first = window[0]
    policy = state.policy
    free: dict[int, int] = {}
    reach: dict[int, int] = {}
    movable: dict[int, list[tuple[Booking, int]]] = {}
    for index in range(first, len(state.slots)):
        free[index] = state.free_seats(index, "standard", now)
        start = state.starts[index]
        candidates = []
        for booking in state.occupants(index):
            if booking.tier != "standard" or booking.moved_count > 0:
                continue
            latest_start = min(
                start + policy.max_delay_seconds, booking.not_after - policy.slot_seconds
            )
            latest = bisect.bisect_right(state.starts, latest_start) - 1
            if latest > index:
                candidates.append((booking, latest))
        if candidates:
            candidates.sort(key=lambda c: (c[0].booked_at, c[0].appointment_id), reverse=True)
            movable[index] = candidates
            reach[index] = max(latest for _, latest in candidates)
    best_end: dict[int, float] = {}
    hops: dict[int, int] = {}
    next_hop: dict[int, int] = {}
    for index in range(len(state.slots) - 1, first - 1, -1):
        best, best_hops, hop = math.inf, 0, -1
        for target in range(index + 1, reach.get(index, index) + 1):
            if free[target] > 0:
                end, moves = state.starts[target], 1
            else:
                end, moves = best_end[target], hops[target] + 1
            if (end, moves) < (best, best_hops):
                best, best_hops, hop = end, moves, target
        best_end[index], hops[index], next_hop[index] = best, best_hops, hop
    return _Graph(window, free, reach, movable, best_end, hops, next_hop)


def _edges(
    state: CalendarState, graph: _Graph, least: float
) -> tuple[dict[tuple[int, int], Booking], list[int]]:
    """The moves that can be part of an answer of the least displacement `least`.

    Returns (from slot, to slot) -> the appointment that would make that move, and the window
    slots a least-displacement chain can start from. A chain's displacement is the start of
    its free slot minus the start of its window slot, so a move is kept only if, from the
    latest window slot that reaches it, the best chain through it is no longer than `least`.
    """
    tolerance = 1e-6  # starts are whole seconds; this only absorbs float rounding
    window = set(graph.window)
    origin: dict[int, int] = {}  # the latest window slot from which a chain reaches the slot
    edges: dict[tuple[int, int], Booking] = {}
    for index in range(graph.window[0], len(state.slots)):
        if index in window:
            origin[index] = index  # chains only move later, so no later origin reaches it
        if index not in origin or graph.free[index] > 0:
            continue
        origin_start = state.starts[origin[index]]
        assigned = index  # targets up to here already have their appointment from this slot
        for booking, latest in graph.movable.get(index, []):
            for target in range(assigned + 1, latest + 1):
                free = graph.free[target] > 0
                end = state.starts[target] if free else graph.best_end[target]
                if end - origin_start > least + tolerance:
                    continue
                edges[(index, target)] = booking
                if not free:
                    origin[target] = max(origin.get(target, -1), origin[index])
            assigned = max(assigned, latest)
    origins = [w for w in graph.window if graph.best_end[w] - state.starts[w] <= least + tolerance]
    return edges, origins


def _solve(
    state: CalendarState,
    graph: _Graph,
    edges: dict[tuple[int, int], Booking],
    window: list[int],
    *,
    started: float,
    time_limit: float,
) -> Reorder:
    """The CP-SAT model over the candidate moves, solved within what is left of the limit."""
    importing = time.perf_counter()
    from ortools.sat.python import cp_model  # lazy: it pulls in pandas (~0.3 s)

    # The first import in a process is not search time: leave the solver its full budget.
    started += time.perf_counter() - importing

    model = cp_model.CpModel()
    take = {w: model.new_bool_var(f"fast_lane_in_{w}") for w in window}
    moves = {edge: model.new_bool_var(f"move_{edge[0]}_{edge[1]}") for edge in edges}
    model.add_exactly_one(take.values())
    by_appointment: dict[str, list[cp_model.IntVar]] = defaultdict(list)
    arriving: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    leaving: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    for (source, target), booking in edges.items():
        variable = moves[(source, target)]
        by_appointment[booking.appointment_id].append(variable)
        leaving[source].append(variable)
        arriving[target].append(variable)
    for variables in by_appointment.values():
        if len(variables) > 1:
            model.add_at_most_one(variables)
    for index in set(arriving) | set(leaving) | set(take):
        incoming = [*arriving[index], *([take[index]] if index in take else [])]
        # A slot ends no fuller for the standard tier than it may be; the fast lane, having
        # found no seat at all in a window slot, sits in an open seat that a move freed.
        model.add(sum(incoming) - sum(leaving[index]) <= graph.free[index])
    rank = {w: position for position, w in enumerate(window)}
    moves_weight = len(window)
    minutes_weight = moves_weight * (len(edges) + 1)
    model.minimize(
        sum(
            variable * (_minutes(state, edge) * minutes_weight + moves_weight)
            for edge, variable in moves.items()
        )
        + sum(take[w] * rank[w] for w in window)
    )
    slot, chain = _best_chain(state, graph, window)
    for w, variable in take.items():
        model.add_hint(variable, w == slot)
    for edge, variable in moves.items():
        model.add_hint(variable, edge in chain)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit - (time.perf_counter() - started))
    # One worker: the model is small, one worker is deterministic, and CP-SAT holds the GIL
    # while it solves, so more workers would not give the API any time back anyway.
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        chosen_slot = next(w for w in window if solver.boolean_value(take[w]))
        chosen_edges = [edge for edge, variable in moves.items() if solver.boolean_value(variable)]
    else:
        # Out of time before any solution: the programme's chain is feasible and, by the
        # telescoping argument, optimal; only the proof is missing.
        chosen_slot, chosen_edges = slot, sorted(chain)
    chosen = sorted(
        (
            Move(edges[edge].appointment_id, state.starts[edge[0]], state.starts[edge[1]])
            for edge in chosen_edges
        ),
        key=lambda move: move.old_start,
    )
    return Reorder(
        slot_start=state.starts[chosen_slot],
        moves=tuple(chosen),
        displacement_seconds=sum(move.delay_seconds for move in chosen),
        optimal=status == cp_model.OPTIMAL,
        seconds=time.perf_counter() - started,
        solver_seconds=solver.wall_time,
        candidate_moves=len(edges),
    )


def _minutes(state: CalendarState, edge: tuple[int, int]) -> int:
    return round((state.starts[edge[1]] - state.starts[edge[0]]) / 60)


def _best_chain(
    state: CalendarState, graph: _Graph, window: list[int]
) -> tuple[int, set[tuple[int, int]]]:
    """The dynamic programme's answer: the window slot and the chain of moves out of it."""
    slot = min(window, key=lambda w: (graph.best_end[w] - state.starts[w], graph.hops[w], w))
    chain: set[tuple[int, int]] = set()
    index = slot
    while True:
        target = graph.next_hop[index]
        chain.add((index, target))
        if graph.free[target] > 0:
            return slot, chain
        index = target
