"""Dispatch: one solve of all waiting contacts of a channel against its free agent capacity.

Stages advance first (relaxation), then eligible pairs are scored, the assignment is solved
(inline when small, in a worker process with a deadline when large; greedy if the deadline
passes), and each chosen pair is claimed atomically in the real-time state. A claim can lose
to a concurrent change (agent went on break, contact abandoned); that contact simply waits for
the next dispatch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import structlog

from routing_rules.assignment import Assignment, SolveFailed, greedy, solve
from routing_rules.compiled import CompiledRules
from routing_rules.explanation import terms_for_rows
from routing_rules.scoring import (
    AgentPool,
    Arcs,
    PerformanceLookup,
    ScoreTerms,
    WaitingContact,
    build_arcs,
    rank_for_one,
)
from service import clock, metrics
from service.ids import new_id
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry
from service.worker_pool import kill_pool, reap
from sla.precedence import ShareLedger, precedence_of

log = structlog.get_logger(__name__)

TOP_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class Placement:
    """A contact that dispatch placed with an agent, with the reasons."""

    entry: WaitingEntry
    reservation: Reservation
    method: str
    stage_name: str
    candidates: list[ScoreTerms]
    eligible_count: int
    # The standard tier's protection that put this contact ahead of a fast-lane contact left
    # waiting by the same dispatch (the cost the fast lane paid), if any.
    promoted_by: str | None = None


@dataclass(slots=True)
class DispatchResult:
    """What one dispatch of one channel did."""

    channel: str
    placements: list[Placement] = field(default_factory=list)
    free_agents: int = 0
    method: str = "none"
    seconds: float = 0.0
    lost_claims: int = 0  # taken first by another dispatch (another replica's, say)


WARM_UP_LIMIT_SECONDS = 30.0
REAP_SECONDS = 5.0
# Two contacts, so the solve takes the min-cost flow path and imports OR-Tools (one would not).
_WARM_UP_PROBLEM = (
    2,
    np.ones(1, dtype=np.int64),
    np.array([0, 1], dtype=np.int64),
    np.zeros(2, dtype=np.int64),
    np.ones(2, dtype=np.int64),
)


async def _warmed(warming: asyncio.Task[bool]) -> bool:
    """Whether a warm-up succeeds within WARM_UP_LIMIT_SECONDS (never cancels it)."""
    done, _ = await asyncio.wait({warming}, timeout=WARM_UP_LIMIT_SECONDS)
    return (
        bool(done) and not warming.cancelled() and warming.exception() is None and warming.result()
    )


def _reap(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """Wait for killed processes to exit, so none is left behind as a zombie."""
    reap(processes, REAP_SECONDS)


def _solve_in_worker(n: int, capacity: Any, contact: Any, agent: Any, value: Any) -> Any:
    """Entry point of the worker process (module-level so it pickles)."""
    result = solve(n, capacity, Arcs(contact, agent, value))
    return result.agent_of, result.total_value, result.method


class Dispatcher:
    """Runs dispatches; one at a time per channel."""

    def __init__(
        self,
        state: RealtimeState,
        *,
        reservation_ttl: float,
        solve_time_limit: float,
        inline_max_arcs: int,
        performance: PerformanceLookup | None = None,
    ) -> None:
        self._state = state
        # Agents' outcome-based scores; the rules' `scoring.performance` weighs them in.
        self.performance = performance
        self._ttl = reservation_ttl
        self._time_limit = solve_time_limit
        self._inline_max_arcs = inline_max_arcs
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.ledger = ShareLedger()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        # Done once the current pool's worker has run a solve (True) or failed to (False).
        self._warming: asyncio.Task[bool] | None = None
        # Warm-ups of discarded pools still finishing; held so they are not collected mid-run.
        self._warm_ups: set[asyncio.Task[bool]] = set()

    def close(self) -> None:
        """Kill the worker process, if one was started (a solve still running in it too)."""
        reap(self._discard_worker(), REAP_SECONDS)

    async def warm(self) -> bool:
        """Start the solver worker and load the solver in it; whether it is ready.

        The first solve too large to run inline calls this itself and waits for it, so the
        app may call it at startup (in the background) only to have the worker ready sooner.
        """
        return await _warmed(self._worker()[1])

    def _worker(self) -> tuple[concurrent.futures.ProcessPoolExecutor, asyncio.Task[bool]]:
        """The worker pool and its warm-up, both started on first use."""
        if self._pool is None or self._warming is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
            self._warming = asyncio.get_running_loop().create_task(self._warm_up(self._pool))
            self._warm_ups.add(self._warming)
            self._warming.add_done_callback(self._warm_ups.discard)
        return self._pool, self._warming

    async def _warm_up(self, pool: concurrent.futures.ProcessPoolExecutor) -> bool:
        # Spawning Python and importing numpy and OR-Tools takes ~1.2 s: pay it here, once.
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                pool, _solve_in_worker, *_WARM_UP_PROBLEM
            )
        except Exception as exc:  # any failure only means "not ready"; the solve replaces it
            if pool is self._pool:
                log.warning("dispatch.worker_warm_up_failed", error=type(exc).__name__)
            return False
        log.info("dispatch.worker_ready", seconds=round(time.perf_counter() - started, 3))
        return True

    def _discard_worker(self) -> list[multiprocessing.process.BaseProcess]:
        """Kill the worker processes and shut the pool down; the processes, to reap."""
        pool, self._pool, self._warming = self._pool, None, None
        return [] if pool is None else kill_pool(pool)

    async def _replace_worker(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Kill `pool`'s worker and start warming a fresh one (no-op if already replaced)."""
        if pool is not self._pool:
            return
        processes = self._discard_worker()
        self._worker()
        await asyncio.to_thread(_reap, processes)

    async def dispatch(
        self,
        rules: CompiledRules,
        channel: str,
        *,
        trigger: str,
        now: float | None = None,
        only: list[WaitingEntry] | None = None,
    ) -> DispatchResult:
        """Solve and claim for every waiting contact of `channel` (or just `only`).

        Every event that frees capacity (status change, completion, rejection, expiry) runs a
        full dispatch at once, and a maximal assignment leaves no waiting contact with an
        eligible free agent (that pair would add value). So contacts whose eligibility changed
        since can be solved on their own (`only`): a newcomer, or contacts whose next
        relaxation stage is due (the timer's `RoutingService.tick`).
        """
        async with self._locks[channel]:
            return await self._dispatch(
                rules, channel, trigger, clock.now() if now is None else now, only
            )

    async def place_new(
        self, rules: CompiledRules, entry: WaitingEntry, *, now: float
    ) -> Placement | None:
        """Place a contact that has just arrived, or None if nobody eligible is free.

        The route call's fast path. It is exact for the same reason `dispatch(only=...)` is:
        no waiting contact can use the free capacity the newcomer sees.
        """
        async with self._locks[entry.channel]:
            started = time.perf_counter()
            pool = await self._state.pool(entry.channel, now)
            contact = as_waiting_contact(rules, entry, now)
            ranked, eligible = rank_for_one(
                rules, pool, contact, limit=TOP_CANDIDATES, performance=self.performance
            )
            if not ranked:
                return None
            reservation = Reservation(
                reservation_id=new_id(),
                contact_id=entry.contact_id,
                agent_id=str(pool.ids[ranked[0]]),
                channel=entry.channel,
                created_at=now,
                expires_at=now + self._ttl,
            )
            if not await self._state.claim(entry, reservation):
                metrics.CLAIMS_LOST.inc()
                return None
            placement = Placement(
                entry,
                reservation,
                "argmax",
                stage_of_name(rules, entry),
                terms_for_rows(rules, pool, contact, ranked, self.performance),
                eligible,
            )
            metrics.dispatch_seconds("argmax", time.perf_counter() - started)
            return placement

    async def _dispatch(
        self,
        rules: CompiledRules,
        channel: str,
        trigger: str,
        now: float,
        only: list[WaitingEntry] | None,
    ) -> DispatchResult:
        result = DispatchResult(channel)
        entries = only if only is not None else await self._state.waiting(channel)
        if not entries:
            return result
        started = time.perf_counter()
        advanced = advance_stages(rules, entries, now)
        pool = await self._state.pool(channel, now)
        c = rules.channels.index(channel)
        result.free_agents = int(np.count_nonzero(pool.free[:, c]))
        if result.free_agents == 0:
            await self._state.update_waiting(
                [
                    schedule(rules, e)
                    for e, old in zip(advanced, entries, strict=True)
                    if e is not old or only is not None
                ]
            )
            return result
        protection = rules.ruleset.tiers.protection
        cap_engaged = self.ledger.cap_engaged(channel, now, protection)
        precedences = [
            precedence_of(
                e.tier, now - e.enqueued_at, cap_engaged=cap_engaged, protection=protection
            )
            for e in advanced
        ]
        contacts = [
            as_waiting_contact(rules, e, now, p.level)
            for e, p in zip(advanced, precedences, strict=True)
        ]
        arcs, had_eligible = build_arcs(rules, pool, contacts, c, self.performance)
        changed = []
        for i, (entry, old) in enumerate(zip(advanced, entries, strict=True)):
            if had_eligible[i]:
                entry = replace(entry, last_eligible_free_at=now)
                advanced[i] = entry
            if entry is not old or only is not None:
                changed.append(schedule(rules, entry))
        entries = advanced
        await self._state.update_waiting(changed)
        capacity = pool.free[:, c].astype(np.int64)
        assignment = await self._solve(len(contacts), capacity, arcs, channel)
        result.method = assignment.method
        chosen = np.flatnonzero(assignment.agent_of >= 0)
        # Agents that a fast-lane contact left waiting by this dispatch could have taken: a
        # protection cost the fast lane something only where it handed such an agent to a
        # standard contact.
        fast_left = np.fromiter(
            (e.tier == "fast_lane" and assignment.agent_of[i] < 0 for i, e in enumerate(entries)),
            np.bool_,
            len(entries),
        )
        fast_agents = (
            set(arcs.agent[fast_left[arcs.contact]].tolist()) if fast_left.any() else set()
        )
        by_contact = np.argsort(arcs.contact, kind="stable")
        starts = np.searchsorted(arcs.contact[by_contact], np.arange(len(contacts) + 1))
        for i in chosen.tolist():
            entry, row = entries[i], int(assignment.agent_of[i])
            reservation = Reservation(
                reservation_id=new_id(),
                contact_id=entry.contact_id,
                agent_id=pool.ids[row],
                channel=channel,
                created_at=now,
                expires_at=now + self._ttl,
            )
            if not await self._state.claim(entry, reservation):
                metrics.CLAIMS_LOST.inc()
                result.lost_claims += 1
                continue
            promoted_by = precedences[i].promoted_by if row in fast_agents else None
            if promoted_by is not None:
                metrics.PROMOTIONS.labels(protection=promoted_by).inc()
            mine = by_contact[starts[i] : starts[i + 1]]
            candidates = _top_candidates(
                rules, pool, arcs, mine, contacts[i], row, self.performance
            )
            result.placements.append(
                Placement(
                    entry,
                    reservation,
                    assignment.method,
                    stage_of_name(rules, entry),
                    candidates,
                    int(mine.size),
                    promoted_by,
                )
            )
        result.seconds = time.perf_counter() - started
        metrics.dispatch_seconds(assignment.method, result.seconds)
        if result.seconds > 0.05:
            log.info(
                "dispatch.slow",
                channel=channel,
                trigger=trigger,
                contacts=len(contacts),
                agents=result.free_agents,
                arcs=arcs.size,
                method=assignment.method,
                seconds=round(result.seconds, 4),
            )
        return result

    async def _solve(self, n: int, capacity: Any, arcs: Arcs, channel: str) -> Assignment:
        if arcs.size <= self._inline_max_arcs:
            try:
                return solve(n, capacity, arcs)
            except SolveFailed as exc:
                log.error("dispatch.solve_failed", channel=channel, error=str(exc))
                return greedy(n, capacity, arcs)
        pool, warming = self._worker()
        # The deadline is for solving, not for starting the worker: wait for it first.
        error = "WorkerNotReady"
        if await _warmed(warming) and pool is self._pool:
            try:
                future = asyncio.get_running_loop().run_in_executor(
                    pool, _solve_in_worker, n, capacity, arcs.contact, arcs.agent, arcs.value
                )
                agent_of, total, method = await asyncio.wait_for(future, self._time_limit)
                return Assignment(agent_of, total, method)
            except SolveFailed as exc:
                error = type(exc).__name__  # the worker itself is fine
            except (TimeoutError, concurrent.futures.process.BrokenProcessPool) as exc:
                error = type(exc).__name__
                await self._replace_worker(pool)
        else:
            await self._replace_worker(pool)
        metrics.SOLVE_FALLBACKS.inc()
        log.warning(
            "dispatch.solve_fallback",
            channel=channel,
            contacts=n,
            arcs=arcs.size,
            limit_seconds=self._time_limit,
            error=error,
        )
        return greedy(n, capacity, arcs)


def advance_stages(
    rules: CompiledRules, entries: list[WaitingEntry], now: float
) -> list[WaitingEntry]:
    """Move each waiting contact up its rule's ladder as far as the triggers allow now.

    Exclusions of agents who turned the contact down are dropped once they have run out.
    """
    out = []
    for entry in entries:
        if entry.excluded_agents and now >= entry.excluded_until:
            entry = replace(entry, excluded_agents=frozenset())
        rule = rules.rule_named(entry.rule)
        if rule is None:
            out.append(entry)
            continue
        stalled = now - max(entry.stage_entered_at, entry.last_eligible_free_at)
        stage = rule.next_stage(
            entry.stage, wait_seconds=now - entry.enqueued_at, stalled_seconds=stalled
        )
        if stage != entry.stage:
            entry = replace(entry, stage=stage, stage_entered_at=now)
        out.append(entry)
    return out


def schedule(rules: CompiledRules, entry: WaitingEntry) -> WaitingEntry:
    """The entry with `next_check_at` set to when it must be looked at again.

    That is when its next relaxation stage may start, or when the agents it turned down stop
    being excluded, whichever comes first.
    """
    rule = rules.rule_named(entry.rule)
    at = (
        math.inf
        if rule is None
        else rule.next_check_time(
            entry.stage,
            enqueued_at=entry.enqueued_at,
            stage_entered_at=entry.stage_entered_at,
            last_eligible_free_at=entry.last_eligible_free_at,
        )
    )
    if entry.excluded_agents:
        at = min(at, entry.excluded_until)
    return entry if at == entry.next_check_at else replace(entry, next_check_at=at)


def rematch(rules: CompiledRules, entry: WaitingEntry, now: float) -> WaitingEntry:
    """The entry under (new) rules: its rule found again, its stage from the time waited."""
    rule = rules.rule_for(entry.facts)
    stage = rule.next_stage(0, wait_seconds=now - entry.enqueued_at, stalled_seconds=0)
    return schedule(
        rules,
        replace(entry, rule=rule.name, stage=stage, priority=rule.priority, stage_entered_at=now),
    )


def as_waiting_contact(
    rules: CompiledRules, entry: WaitingEntry, now: float, precedence: int = 0
) -> WaitingContact:
    """The core's view of a waiting entry (with its tier precedence at this dispatch)."""
    rule = rules.rule_named(entry.rule)
    return WaitingContact(
        contact_id=entry.contact_id,
        channel=rules.channels.index(entry.channel),
        language=rules.languages.index(entry.language),
        rule=-1 if rule is None else rule.index,
        stage=entry.stage,
        priority=entry.priority,
        wait_seconds=now - entry.enqueued_at,
        # An agent who turned the contact down is passed over for a while, not for ever: a
        # small team (or a keep-waiting rule) must not strand the contact.
        excluded_agents=entry.excluded_agents if now < entry.excluded_until else frozenset(),
        precedence=precedence,
        kind=(entry.facts.inquiry_type, entry.facts.segment, entry.facts.journey_stage),
    )


def stage_of_name(rules: CompiledRules, entry: WaitingEntry) -> str:
    """The name of the stage a waiting entry is on."""
    rule = rules.rule_named(entry.rule) or rules.implicit
    return rule.stages[min(entry.stage, len(rule.stages) - 1)].name


def _top_candidates(
    rules: CompiledRules,
    pool: AgentPool,
    arcs: Arcs,
    mine: Any,
    contact: WaitingContact,
    chosen_row: int,
    performance: PerformanceLookup | None,
) -> list[ScoreTerms]:
    """The chosen agent and the next best eligible ones, with score terms."""
    rows = arcs.agent[mine]
    values = arcs.value[mine]
    top = rows[np.argsort(-values, kind="stable")[:TOP_CANDIDATES]].tolist()
    if chosen_row not in top:
        top = [chosen_row, *top[: TOP_CANDIDATES - 1]]
    else:
        top.remove(chosen_row)
        top.insert(0, chosen_row)
    return terms_for_rows(rules, pool, contact, top, performance)
