"""The contact lifecycle: route, reservation accept/reject/expiry, complete, abandon.

Every state change goes to the real-time state first (atomic claims), then to the database
through the batch writer. Every event that frees capacity runs a full dispatch of its channel,
so a newly routed contact can be placed on its own (see `Dispatcher.place_new`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from routing_rules.compiled import CompiledRules, ContactFacts
from service import clock, metrics
from service.contacts import ContactBook, ContactState, contact_event
from service.decisions import assigned_answer, decision_row, queued_answer
from service.dispatch import Dispatcher, DispatchResult, Placement, rematch, schedule
from service.events.outbox import event_row
from service.explain import explain
from service.gc_tuning import GcTuner
from service.models import ContactIn
from service.passes import PassDesk
from service.problems import Conflict, NotFound, Unavailable
from service.realtime import RealtimeKeeper
from service.recovery import restore
from service.rules_store import RulesStore
from service.sla_watch import SlaWatch
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry
from service.state.redis_contacts import ContactBusy, ContactLock, SharedContacts, StateLost
from service.storage.archive import ContactArchive
from service.storage.writer import BatchWriter
from service.vocabulary import check_contact, dropped_in_use, dropped_in_use_by
from sla.config import Tier
from sla.precedence import ShareLedger

log = structlog.get_logger(__name__)


class RoutingService:
    """Routes contacts and keeps their lifecycle consistent across state and database."""

    def __init__(
        self,
        *,
        state: RealtimeState,
        dispatcher: Dispatcher,
        rules: RulesStore,
        writer: BatchWriter,
        engine: Engine,
        reservation_ttl: float,
        default_handle_seconds: float,
        retention_seconds: float = 3600.0,
        idempotency_window_seconds: float = 7 * 86400.0,
        exclusion_seconds: float = 120.0,
        passes: PassDesk | None = None,
        shared: SharedContacts | None = None,
    ) -> None:
        self.state = state
        self.dispatcher = dispatcher
        self.rules = rules
        self.writer = writer
        self.engine = engine
        self.archive = ContactArchive(engine, writer)
        self.passes = passes
        # Answered contacts whose pass settlement failed (database down): retried by `tick`.
        self._unsettled: dict[str, ContactState] = {}
        self._ttl = reservation_ttl
        self._handle_seconds = default_handle_seconds
        self._idempotency_window = idempotency_window_seconds
        self._exclusion_seconds = exclusion_seconds
        # Route calls still deciding, so that a concurrent retry waits for the same decision.
        self._in_flight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.contacts = ContactBook(
            memory_seconds=retention_seconds, idempotency_window_seconds=idempotency_window_seconds
        )
        # With several replicas: the live records and locks every replica shares (Redis).
        self.shared = shared
        self.sla_watch = SlaWatch(
            writer, None if shared is None else (shared.client, shared.key("sla_due"))
        )
        self._shared_books_at = clock.now()  # the ledger and settlements were loaded at start
        # With shared state: watches Redis and rebuilds it from the database when it is lost.
        self.keeper: RealtimeKeeper | None = None

    def ensure_ready(self) -> None:
        """503 while the shared real-time state is being rebuilt (changes would be lost)."""
        if self.keeper is not None and not self.keeper.ready:
            raise Unavailable(f"not ready: {self.keeper.problem}; retry shortly")

    # ---- one contact at a time -------------------------------------------------------------
    async def _lock(self, contact_id: str) -> ContactLockLike:
        """Hold a contact while one call changes it (shared state: a Redis lock)."""
        if self.shared is None:
            return _NO_LOCK
        try:
            return await self.shared.lock(contact_id)
        except (StateLost, ContactBusy) as exc:
            raise _unavailable(exc) from None

    async def _fresh(self, contact_id: str) -> ContactState | None:
        """The contact's live record as it is now (shared: read from Redis)."""
        if self.shared is None:
            return self.contacts.get(contact_id)
        return await self.shared.get(contact_id)

    async def _save(
        self, contact: ContactState, now: float, *, release: ContactLockLike | None = None
    ) -> None:
        """Store a changed live record where every replica reads it (and in the database).

        `release`: the contact's lock, given back with the same round trip.
        """
        contact.revision += 1
        self.writer.put_contact(contact.to_row())
        if self.shared is not None:
            held = release if isinstance(release, ContactLock) else None
            await self.shared.save(contact, now=now, release=held)

    async def _await_decision(self, contact_id: str) -> dict[str, Any]:
        """The first decision of a contact whose route call is being answered elsewhere.

        With shared state, a dispatch may claim a contact between its joining the queue and
        its route call's own placement; that dispatch writes the decision the call returns.
        Should none come (the contact was only re-matched by a rules change meanwhile, or the
        call that routed it failed half-way), the contact still waiting gets its "queued"
        decision here.
        """
        assert self.shared is not None
        deadline = time.monotonic() + DECISION_WAIT_SECONDS
        while time.monotonic() < deadline:
            record = await self.shared.get(contact_id)
            if record is not None and record.first_decision:
                return record.first_decision
            await asyncio.sleep(0.005)
        async with await self._lock(contact_id):
            contact = await self._fresh(contact_id)
            if contact is not None and contact.first_decision:
                return contact.first_decision
            if contact is not None and contact.status == "queued":
                live = await self.state.waiting_entry(contact_id)
                if live is not None:
                    self._adopt(contact, live)
                    now = clock.now()
                    contact.first_decision = await self._queued(self.rules.compiled, contact, now)
                    await self._save(contact, now)
                    return contact.first_decision
        raise Unavailable(f"the decision for contact {contact_id} is not ready yet; retry")

    async def dropped_in_use(self, rules: CompiledRules) -> list[str]:
        """Why `rules` cannot be activated: active contacts (of every replica) they would drop."""
        if self.shared is None:
            return dropped_in_use(self.contacts.active(), rules)
        return dropped_in_use_by(await self.shared.active_uses(), rules)

    # ---- route ---------------------------------------------------------------------------
    async def route(self, body: ContactIn, raw: bytes) -> tuple[dict[str, Any], bool]:
        """Route a contact; a retry with the same contact_id replays the first decision."""
        request_hash = hashlib.sha256(raw).hexdigest()
        lock: ContactLockLike
        if self.shared is None:
            lock = _NO_LOCK
            existing = self.contacts.get(body.contact_id) or await self._load(body.contact_id)
        else:
            try:
                lock, existing, known = await self.shared.lock_and_lookup(body.contact_id)
            except (StateLost, ContactBusy) as exc:
                raise _unavailable(exc) from None
            if existing is None and known:
                try:
                    row = await asyncio.to_thread(self.archive.contact, body.contact_id)
                except BaseException:
                    await lock.release()
                    raise
                existing = None if row is None else ContactState.from_row(row)
        if (
            existing is not None
            and existing.ended_at is not None
            and clock.now() - existing.created_at > self._idempotency_window
        ):
            existing = None  # ended and out of the window: the id names a new contact
        try:
            return await self._route(body, request_hash, lock, existing)
        finally:
            await lock.release()

    async def _route(
        self,
        body: ContactIn,
        request_hash: str,
        lock: ContactLockLike,
        existing: ContactState | None,
    ) -> tuple[dict[str, Any], bool]:
        if existing is not None:
            if existing.request_hash != request_hash and existing.request != _request(body):
                raise Conflict(
                    f"contact {body.contact_id} was already routed with different details"
                )
            in_flight = self._in_flight.get(body.contact_id)
            if in_flight is not None:
                # The first call for this contact is still deciding: answer with its decision.
                return await asyncio.shield(in_flight), True
            if existing.first_decision:
                return existing.first_decision, True
            if self.shared is not None:
                # Its first call waits for the dispatch that placed it to record the decision.
                await lock.release()
                return await self._await_decision(body.contact_id), True
        if not self.writer.has_room():
            raise Unavailable("the database has not accepted writes for too long; retry later")
        rules = self.rules.compiled
        check_contact(rules, body)
        now = clock.now()
        facts = ContactFacts(
            body.channel,
            body.segment,
            body.inquiry_type,
            body.journey_stage,
            body.language,
            body.attributes,
        )
        rule = rules.rule_for(facts)
        # The tier comes from the customer's pass, never from the request body.
        # Not a pass cancelled or refunded just now, nor one another waiting contact holds.
        pass_id = (
            None
            if self.passes is None
            else await self.passes.take(body.customer_id, body.contact_id, now)
        )
        tier: Tier = "standard" if pass_id is None else "fast_lane"
        stage = rule.next_stage(0, wait_seconds=0.0, stalled_seconds=0.0)
        next_check = rule.next_check_time(
            stage, enqueued_at=now, stage_entered_at=now, last_eligible_free_at=now
        )
        entry = WaitingEntry(
            body.contact_id,
            facts,
            body.channel,
            body.language,
            rule.name,
            stage,
            rule.priority,
            now,
            now,
            now,
            next_check_at=next_check,
            tier=tier,
        )
        contact = ContactState(
            contact_id=body.contact_id,
            customer_id=body.customer_id,
            channel=body.channel,
            request=_request(body),
            request_hash=request_hash,
            status="queued",
            rule=rule.name,
            stage=stage,
            priority=rule.priority,
            first_decision={},
            created_at=now,
            updated_at=now,
            stage_name=rule.stages[stage].name,
            entry=entry,
            tier=tier,
            pass_id=pass_id,
        )
        if self.shared is None:
            self.contacts.add(contact)
        in_flight = self._in_flight[body.contact_id] = asyncio.get_running_loop().create_future()
        claimed_elsewhere = False
        try:
            if self.shared is not None:
                # Stored before it waits: a dispatch on any replica may place it from then on.
                await self.shared.save(contact, now=now)
            await self.state.add_waiting(entry)
            placement = await self.dispatcher.place_new(rules, entry, now=now)
            if placement is not None:
                decision = self._placed(rules, contact, placement, trigger="route", now=now)
            elif contact.first_decision:
                # A full dispatch queued ahead of this call for the channel placed it (_apply).
                decision = contact.first_decision
            elif self.shared is not None and not await self.state.waiting_entry(body.contact_id):
                # A dispatch claimed it since it joined the queue; that dispatch records the
                # placement, and with it this call's decision, once this call lets go.
                claimed_elsewhere = True
                decision = {}
            else:
                decision = await self._queued(rules, contact, now)
            if not claimed_elsewhere:
                contact.first_decision = decision
                await self._save(contact, now, release=lock)
            in_flight.set_result(decision)
        except BaseException as exc:
            await self._forget(contact)
            in_flight.set_exception(exc)
            in_flight.exception()  # retrieved: a concurrent retry may never ask for it
            raise
        finally:
            del self._in_flight[body.contact_id]
        if claimed_elsewhere:
            await lock.release()
            decision = await self._await_decision(body.contact_id)
        return decision, False

    async def _forget(self, contact: ContactState) -> None:
        """Undo a route call that failed half-way: no waiting entry, no offer, no record."""
        await self.state.remove_waiting(contact.contact_id)
        if contact.reservation_id is not None:
            await self.state.end_reservation(
                contact.reservation_id, keep_load=False, now=clock.now()
            )
        if contact.pass_id is not None and self.passes is not None:
            await self.passes.let_go(contact.pass_id, contact.contact_id)
        self.contacts.discard(contact.contact_id)
        if self.shared is not None:
            await self.shared.forget(contact.contact_id)

    async def _queued(
        self, rules: CompiledRules, contact: ContactState, now: float
    ) -> dict[str, Any]:
        position = await self.state.position(
            contact.channel, contact.entry.queue_rank if contact.entry else contact.priority
        )
        staffed = await self.state.staffed(contact.channel)
        estimate = position * self._handle_seconds / staffed if staffed else None
        self.writer.put_decision(
            decision_row(
                contact,
                rules,
                outcome="queued",
                trigger="route",
                reservation=None,
                candidates=[],
                eligible=0,
                now=now,
                method="none",
            )
        )
        metrics.decision("queued", "route")
        self.writer.put_event(
            event_row(
                "contact.queued",
                {**contact_event(contact), "queue_position": position},
                now=now,
            )
        )
        await self.sla_watch.watch(rules, contact)
        return queued_answer(contact, rules, position=position, staffed=staffed, estimate=estimate)

    def _placed(
        self,
        rules: CompiledRules,
        contact: ContactState,
        placement: Placement,
        *,
        trigger: str,
        now: float,
    ) -> dict[str, Any]:
        reservation = placement.reservation
        contact.status = "reserved"
        contact.agent_id = reservation.agent_id
        contact.reservation_id = reservation.reservation_id
        contact.reservation_expires_at = reservation.expires_at
        contact.stage = placement.entry.stage
        contact.stage_name = placement.stage_name
        contact.entry = placement.entry
        contact.updated_at = now
        if contact.assigned_at is None:
            contact.assigned_at = now
        # The placement that stands decides: a promoted offer that was rejected cost nothing.
        contact.promoted_by = placement.promoted_by
        self.writer.put_decision(
            decision_row(
                contact,
                rules,
                outcome="assigned",
                trigger=trigger,
                reservation=reservation,
                candidates=placement.candidates,
                eligible=placement.eligible_count,
                now=now,
                method=placement.method,
            )
        )
        metrics.decision("assigned", trigger)
        metrics.wait_seconds(contact.channel, contact.tier, now - contact.created_at)
        self.writer.put_event(
            event_row(
                "contact.assigned",
                {
                    **contact_event(contact),
                    "agent_id": reservation.agent_id,
                    "reservation_id": reservation.reservation_id,
                    "expires_at": reservation.expires_at,
                    "waited_seconds": round(now - contact.created_at, 3),
                    "trigger": trigger,
                },
                now=now,
            )
        )
        return assigned_answer(contact, rules, placement, now=now)

    async def _apply(self, rules: CompiledRules, result: DispatchResult, *, trigger: str) -> int:
        """Record the placements a dispatch made; how many there were."""
        placed = 0
        for placement in result.placements:
            contact_id = placement.entry.contact_id
            try:
                lock = await self._lock(contact_id)
            except Unavailable:
                # The claim stands in the real-time state; the offer expires unanswered and
                # the contact is dispatched again, so nothing is lost (only time).
                log.warning("dispatch.record_deferred", contact_id=contact_id)
                continue
            async with lock:
                contact = await self._fresh(contact_id)
                offer = placement.reservation
                if await self.state.reservation(offer.reservation_id) is None:
                    # Ended before it could be recorded (the agent went on break, the contact
                    # was abandoned): nothing to record, the slot is free again.
                    continue
                if contact is None or contact.status != "queued":
                    # Not a contact this offer can belong to (gone, or recorded with another
                    # offer): end it, so that it holds no agent's slot until it expires.
                    await self.state.end_reservation(
                        offer.reservation_id, keep_load=False, now=clock.now()
                    )
                    log.warning("dispatch.offer_dropped", contact_id=contact_id)
                    continue
                now = clock.now()
                decision = self._placed(rules, contact, placement, trigger=trigger, now=now)
                if not contact.first_decision:
                    # Its route call still waits for the channel: this placement is the
                    # decision that call returns and a retry replays (never an empty one,
                    # never "queued").
                    contact.first_decision = decision
                await self._save(contact, now)
                placed += 1
        return placed

    # ---- dispatch triggers ---------------------------------------------------------------
    async def dispatch_channels(self, channels: Iterable[str], *, trigger: str) -> int:
        """Dispatch each channel that has waiting contacts and free capacity."""
        if self.keeper is not None and not self.keeper.ready:
            return 0  # the shared state is being rebuilt: nothing is decided on half of it
        rules = self.rules.compiled
        placed = 0
        for channel in channels:
            if channel not in rules.channels:
                continue
            if await self.state.waiting_count(channel) == 0:
                continue
            if await self.state.free_slots(channel) == 0:
                continue
            for _ in range(REDISPATCH_AFTER_LOST_CLAIMS + 1):
                result = await self.dispatcher.dispatch(rules, channel, trigger=trigger)
                placed += await self._apply(rules, result, trigger=trigger)
                if not result.lost_claims:
                    break
                # Another dispatch (another replica's) took an agent or a contact this solve
                # counted on: solve again on what is left, so nobody waits beside a free agent.
        return placed

    async def dispatch_all(self, *, trigger: str) -> int:
        """Dispatch every channel."""
        return await self.dispatch_channels(self.rules.compiled.channels, trigger=trigger)

    async def on_rules_changed(self, rules: CompiledRules) -> None:
        """Re-match waiting and offered contacts under the new rules, then dispatch."""
        await self.state.reindex(rules)
        now = clock.now()
        for entry in await self.state.waiting():
            rematched = rematch(rules, entry, now)
            if await self.state.remove_waiting(entry.contact_id) is None:
                continue  # placed or abandoned meanwhile (by another replica, say)
            await self.state.add_waiting(rematched)
            self._adopt_entry(rematched)
        # Offered contacts keep their offer; should it be rejected, they wait under new rules.
        for contact in self.contacts.active():
            if contact.status == "reserved" and contact.entry is not None:
                self._adopt_entry(rematch(rules, contact.entry, now))
        await self.dispatch_all(trigger="rules_change")

    def _adopt_entry(self, entry: WaitingEntry) -> None:
        contact = self.contacts.get(entry.contact_id)
        if contact is not None:
            self._adopt(contact, entry)

    def _adopt(self, contact: ContactState, entry: WaitingEntry) -> None:
        rule = self.rules.compiled.rule_named(entry.rule) or self.rules.compiled.implicit
        contact.entry = entry
        contact.rule, contact.stage, contact.priority = entry.rule, entry.stage, entry.priority
        contact.stage_name = rule.stages[min(entry.stage, len(rule.stages) - 1)].name

    async def tick(self) -> None:
        """Periodic work: expire reservations, relax waiting contacts, refresh gauges."""
        if self.keeper is not None and not self.keeper.ready:
            return  # the shared state is being rebuilt (or Redis is unreachable)
        now = clock.now()
        expired_channels = set()
        for reservation in await self.state.due_reservations(now):
            try:
                found = await self._requeue(
                    reservation.reservation_id, reason="expired", now=now, dispatch=False
                )
            except Unavailable:  # its contact is busy, or the state is being rebuilt
                continue
            if found is not None:
                expired_channels.add(found[1].channel)
        await self.dispatch_channels(sorted(expired_channels), trigger="expired")
        # Relaxation: only contacts whose next stage may start now are dispatched; everyone
        # else was settled by the full dispatch that follows every capacity change.
        rules = self.rules.compiled
        due: dict[str, list[WaitingEntry]] = {}
        for entry in await self.state.due_for_check(now):
            due.setdefault(entry.channel, []).append(entry)
        for channel, entries in due.items():
            if channel not in rules.channels:
                continue
            result = await self.dispatcher.dispatch(
                rules, channel, trigger="timer", now=now, only=entries
            )
            await self._apply(rules, result, trigger="timer")
        await self.warn_due(rules, now)
        for contact in list(self._unsettled.values()):
            del self._unsettled[contact.contact_id]
            await self._settle_pass(contact, now)
        for channel in self.rules.compiled.channels:
            metrics.QUEUE_LENGTH.labels(channel=channel).set(
                await self.state.waiting_count(channel)
            )
        self.contacts.evict(now)
        if self.shared is not None and now - self._shared_books_at >= SHARED_BOOKS_SECONDS:
            self._shared_books_at = now
            await self._refresh_shared_books(now)

    async def _refresh_shared_books(self, now: float) -> None:
        """With several replicas: what other replicas answered, from the database.

        The share cap's window counts every replica's answers (each replica records only its
        own between refreshes), and pass consumptions that failed on a replica that has since
        stopped are redone here rather than at some later start.
        """
        try:
            await self.load_ledger(fresh=True)
            if self.passes is not None:
                await self.passes.settle_answered(now)
        except Exception as exc:  # the database is down: the next refresh tries again
            log.warning("shared_books.refresh_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def warn_due(self, rules: CompiledRules, now: float) -> None:
        """Emit `sla.breach_warning` (once each) for contacts still unanswered near their SLA."""
        for contact_id in await self.sla_watch.due(now):
            try:
                lock = await self._lock(contact_id)
            except Unavailable:
                await self.sla_watch.later(contact_id, now + 1.0)  # its lock is busy: next tick
                continue
            async with lock:
                contact = await self._fresh(contact_id)
                warned = contact is not None and self.sla_watch.warn(rules, contact, now)
                if warned and contact is not None and self.shared is not None:
                    await self.shared.save(contact, now=now)

    async def run_timer(self, interval: float) -> None:
        """Run `tick` forever every `interval` seconds."""
        gc_tuner = GcTuner()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
                gc_tuner.tick()
            except Exception:  # one bad tick must not stop the timer
                log.exception("timer.tick_failed")

    # ---- reservations --------------------------------------------------------------------
    async def accept(self, reservation_id: str) -> tuple[Reservation, ContactState]:
        """The agent takes the contact: the slot stays taken until complete."""
        offered = await self.state.reservation(reservation_id)
        if offered is None:
            raise NotFound(
                f"reservation {reservation_id} is not open (expired, rejected or unknown)"
            )
        async with await self._lock(offered.contact_id):
            reservation = await self.state.end_reservation(
                reservation_id, keep_load=True, now=clock.now()
            )
            if reservation is None:
                raise NotFound(
                    f"reservation {reservation_id} is not open (expired, rejected or unknown)"
                )
            contact = await self._fresh(reservation.contact_id)
            now = clock.now()
            if contact is None or contact.ended_at is not None:
                # An offer whose contact is gone (its route call failed after a dispatch
                # elsewhere claimed it): nobody to connect, the slot is free again.
                await self.state.release(reservation.agent_id, reservation.channel, now)
                raise NotFound(f"reservation {reservation_id} is for a contact that has ended")
            contact.status = "connected"
            contact.agent_id = reservation.agent_id
            contact.updated_at = contact.connected_at = now
            await self._save(contact, now)
        metrics.RESERVATIONS.labels(outcome="accepted").inc()
        self.dispatcher.ledger.record(contact.channel, contact.tier, now)
        if contact.pass_id is not None:
            await self._settle_pass(contact, now)
        return reservation, contact

    async def _settle_pass(self, contact: ContactState, now: float) -> None:
        """The contact was answered: use up its single-incident pass, apply refund-on-breach.

        A database failure must not undo the answer: the settlement is retried by the timer
        (both steps are idempotent per pass and contact).
        """
        if self.passes is None or contact.pass_id is None or contact.connected_at is None:
            return
        try:
            await self.passes.consume(contact.pass_id, contact.contact_id, now=now)
            await self.passes.check_breach(
                contact.pass_id,
                contact.contact_id,
                channel=contact.channel,
                wait_seconds=contact.connected_at - contact.created_at,
                now=now,
            )
        except Exception as exc:
            metrics.PASS_CONSUME_RETRIES.inc()
            log.warning(
                "pass.settle_failed",
                contact_id=contact.contact_id,
                pass_id=contact.pass_id,
                error=type(exc).__name__,
            )
            self._unsettled[contact.contact_id] = contact

    async def reject(self, reservation_id: str, reason: str) -> tuple[Reservation, ContactState]:
        """The agent turns the offer down: the contact is dispatched again without that agent."""
        found = await self._requeue(reservation_id, reason=reason or "rejected", now=clock.now())
        if found is None:
            raise NotFound(
                f"reservation {reservation_id} is not open (expired, rejected or unknown)"
            )
        return found

    async def withdraw_offers(self, agent_id: str) -> None:
        """An agent stopped being available: their open offers go back to dispatch at once.

        The agent is not excluded: they did not turn the contacts down.
        """
        now = clock.now()
        channels = set()
        for reservation in await self.state.reservations_of(agent_id):
            found = await self._requeue(
                reservation.reservation_id, reason="withdrawn", now=now, dispatch=False
            )
            if found is not None:
                channels.add(found[1].channel)
        await self.dispatch_channels(sorted(channels), trigger="withdrawn")

    async def _requeue(
        self, reservation_id: str, *, reason: str, now: float, dispatch: bool = True
    ) -> tuple[Reservation, ContactState] | None:
        offered = await self.state.reservation(reservation_id)
        if offered is None:
            return None
        async with await self._lock(offered.contact_id):
            found = await self._requeue_held(reservation_id, reason=reason, now=now)
        if found is None:
            return None
        reservation, contact, outcome = found
        log.info(
            "reservation.requeued",
            contact_id=contact.contact_id,
            agent_id=reservation.agent_id,
            reason=reason,
        )
        if dispatch:
            await self.dispatch_channels([contact.channel], trigger=outcome)
        return reservation, contact

    async def _requeue_held(
        self, reservation_id: str, *, reason: str, now: float
    ) -> tuple[Reservation, ContactState, str] | None:
        reservation = await self.state.end_reservation(reservation_id, keep_load=False, now=now)
        if reservation is None:
            return None
        outcome = reason if reason in ("expired", "withdrawn") else "rejected"
        metrics.RESERVATIONS.labels(outcome=outcome).inc()
        contact = await self._fresh(reservation.contact_id)
        if contact is None or contact.ended_at is not None:
            return None  # an offer of a contact that is gone: ending it freed the slot
        refused = outcome != "withdrawn"
        if refused:
            # The full history is kept on the record; the entry excludes only recent refusals.
            contact.excluded_agents = sorted({*contact.excluded_agents, reservation.agent_id})
        contact.status, contact.agent_id = "queued", None
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = now
        rules = self.rules.compiled
        base = contact.entry or self._entry_for(contact)
        if rules.rule_named(base.rule) is None:
            # Offered under rules that another replica has since replaced: match again.
            base = rematch(rules, base, now)
        entry = schedule(
            rules,
            replace(
                base,
                excluded_agents=frozenset(
                    {
                        *(base.excluded_agents if now < base.excluded_until else ()),
                        reservation.agent_id,
                    }
                ),
                excluded_until=now + self._exclusion_seconds,
            ),
        )
        contact.entry = entry
        await self.state.add_waiting(entry)
        await self._save(contact, now)
        self.writer.put_event(
            event_row(
                "contact.queued",
                {
                    **contact_event(contact),
                    "queue_position": await self.state.position(contact.channel, entry.queue_rank),
                    "requeued_after": outcome,  # rejected, expired or withdrawn offer
                },
                now=now,
            )
        )
        await self.sla_watch.watch(rules, contact)
        return reservation, contact, outcome

    def _entry_for(self, contact: ContactState) -> WaitingEntry:
        return WaitingEntry(
            contact.contact_id,
            contact.facts,
            contact.channel,
            contact.request["language"],
            contact.rule,
            contact.stage,
            contact.priority,
            contact.created_at,
            contact.updated_at,
            contact.updated_at,
            frozenset(contact.excluded_agents),
            tier=contact.tier,
        )

    # ---- contact end ---------------------------------------------------------------------
    async def complete(self, contact_id: str) -> ContactState:
        """The conversation ended: free the agent's slot and dispatch."""
        async with await self._lock(contact_id):
            contact = await self.get(contact_id)
            if contact.status == "completed":
                return contact
            if contact.status != "connected":
                raise Conflict(
                    f"contact {contact_id} is {contact.status}; only a connected contact "
                    "can be completed"
                )
            now = clock.now()
            assert contact.agent_id is not None
            await self.state.release(contact.agent_id, contact.channel, now)
            await self._end(contact, "completed", now)
        await self.dispatch_channels([contact.channel], trigger="complete")
        return contact

    async def abandon(self, contact_id: str) -> ContactState:
        """The customer hung up or left before being served."""
        for attempt in range(ABANDON_ATTEMPTS):
            # The last attempt ends the contact whatever its offer is doing: an offer nobody
            # recorded (or one that ended without its record) expires by itself, and an
            # expiring offer of an ended contact only frees its slot.
            last = attempt == ABANDON_ATTEMPTS - 1
            contact: ContactState | None
            async with await self._lock(contact_id):
                contact = await self.get(contact_id)
                if contact.status == "abandoned":
                    await self._let_go(contact)  # again: a failure may have kept the hold
                    return contact
                now = clock.now()
                if contact.status == "queued":
                    if (
                        await self.state.remove_waiting(contact_id) is None
                        and not self._parked(contact)
                        and not last
                    ):
                        # A dispatch has just claimed it and records the offer once this call
                        # lets go of the contact: look again then.
                        contact = None
                elif contact.status == "reserved" and contact.reservation_id is not None:
                    ended = await self.state.end_reservation(
                        contact.reservation_id, keep_load=False, now=now
                    )
                    if ended is None and not last:
                        contact = None  # accepted, rejected or expired just now: look again
                else:
                    raise Conflict(
                        f"contact {contact_id} is {contact.status}; it can no longer be abandoned"
                    )
                if contact is not None:
                    # Never answered: a single-incident pass is not used up. Before the record
                    # says abandoned, so that a failure here leaves the abandon to be retried.
                    await self._let_go(contact)
                    await self._end(contact, "abandoned", now)
            if contact is not None:
                break
            await asyncio.sleep(0.01)
        assert contact is not None
        if contact.agent_id is not None:
            await self.dispatch_channels([contact.channel], trigger="abandon")
        return contact

    async def _let_go(self, contact: ContactState) -> None:
        if contact.pass_id is not None and self.passes is not None:
            await self.passes.let_go(contact.pass_id, contact.contact_id)

    def _parked(self, contact: ContactState) -> bool:
        """Whether the active rules cannot route the contact (see `recovery.restore`)."""
        rules = self.rules.compiled
        return (
            contact.channel not in rules.channels
            or contact.request["language"] not in rules.languages
        )

    async def _end(self, contact: ContactState, status: str, now: float) -> None:
        contact.status = status  # type: ignore[assignment]
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = contact.ended_at = now
        contact.entry = None
        if self.shared is None:
            self.contacts.ended(contact, now)
        await self._save(contact, now)

    # ---- reads ---------------------------------------------------------------------------
    async def get(self, contact_id: str) -> ContactState:
        """A contact by id, from memory or the database (a waiting one with its live stage)."""
        if self.shared is None:
            contact = self.contacts.get(contact_id) or await self._load(contact_id)
        else:
            contact = await self.shared.get(contact_id)
            if contact is None:
                row = await asyncio.to_thread(self.archive.contact, contact_id)
                contact = None if row is None else ContactState.from_row(row)
        if contact is None:
            raise NotFound(f"contact {contact_id} does not exist")
        if contact.status == "queued":
            live = await self.state.waiting_entry(contact_id)
            if live is not None:
                self._adopt(contact, live)
        return contact

    async def _load(self, contact_id: str) -> ContactState | None:
        if not self.contacts.stored_only(contact_id):
            return None
        row = await asyncio.to_thread(self.archive.contact, contact_id)
        return None if row is None else ContactState.from_row(row)

    async def explain(self, contact_id: str) -> dict[str, Any]:
        """Why a contact is where it is (see `service.explain`)."""
        return await explain(self, contact_id)

    async def queue(self) -> list[WaitingEntry]:
        """Every waiting contact, most urgent first."""
        entries = await self.state.waiting()
        return sorted(entries, key=lambda e: (-e.queue_rank, e.enqueued_at))

    # ---- recovery ------------------------------------------------------------------------
    async def recover(self) -> int:
        """Rebuild waiting set, reservations and agent load from the database.

        At a start (one process), or, with several replicas, when the shared state is built
        for the first time or again after Redis lost it (`service.realtime`).
        """
        now = clock.now()
        ended = await asyncio.to_thread(self.archive.ended_since, now - self._idempotency_window)
        if self.shared is None:
            self.contacts.remember_stored(ended)
        else:
            await self.shared.remember(ended, now=now)
        rows = await asyncio.to_thread(self.archive.active)
        # Connected contacts first, so that agents carry their load before any offer is put
        # back or anything waits again.
        rows = sorted(rows, key=lambda row: _RESTORE_ORDER.get(row.status, 3))
        rules = self.rules.compiled
        for row in rows:
            contact = ContactState.from_row(row)
            if self.shared is None:
                self.contacts.add(contact)
            if await restore(self.state, rules, contact, self._entry_for(contact)):
                contact.revision += 1
                self.writer.put_contact(contact.to_row())
            if self.shared is not None:
                await self.shared.save(contact, now=now)
            if contact.status in ("queued", "reserved"):
                await self.sla_watch.watch(rules, contact)
        return len(rows)

    async def load_ledger(self, *, fresh: bool = False) -> None:
        """The share cap's window of answered contacts, as the database has it.

        `fresh`: replace the ledger rather than add to it (a periodic refresh).
        """
        now = clock.now()
        window = self.rules.compiled.ruleset.tiers.protection.share_window_seconds
        rows = await asyncio.to_thread(self.archive.answered_since, now - window)
        ledger = ShareLedger() if fresh else self.dispatcher.ledger
        for channel, tier, at in rows:
            ledger.record(channel, tier, at)  # type: ignore[arg-type]
        self.dispatcher.ledger = ledger


def _unavailable(exc: StateLost | ContactBusy) -> Unavailable:
    if isinstance(exc, StateLost):
        return Unavailable(
            "the shared real-time state is being rebuilt from the database; retry shortly"
        )
    return Unavailable(f"{exc}; retry shortly")


class _NoLock:
    """The lock of one process's own contacts: asyncio runs one change at a time anyway."""

    async def release(self) -> None:
        return None

    async def __aenter__(self) -> _NoLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
ContactLockLike = ContactLock | _NoLock
DECISION_WAIT_SECONDS = 2.0  # how long a call waits for a decision being recorded elsewhere
SHARED_BOOKS_SECONDS = 10.0
REDISPATCH_AFTER_LOST_CLAIMS = 2
ABANDON_ATTEMPTS = 100
_RESTORE_ORDER = {
    "connected": 0,
    "reserved": 1,
    "queued": 2,
}  # 10 ms apart: a claim's record is written within milliseconds


def _request(body: ContactIn) -> dict[str, Any]:
    return body.model_dump(mode="json")
