"""The contact lifecycle: route, reservation accept/reject/expiry, complete, abandon.

Every state change goes to the real-time state first (atomic claims), then to the database
through the batch writer. Every event that frees capacity runs a full dispatch of its channel,
so a newly routed contact can be placed on its own (see `Dispatcher.place_new`).
"""

from __future__ import annotations

import asyncio
import hashlib
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
from service.recovery import restore
from service.rules_store import RulesStore
from service.sla_watch import SlaWatch
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry
from service.storage.archive import ContactArchive
from service.storage.writer import BatchWriter
from service.vocabulary import check_contact
from sla.config import Tier

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
        self.sla_watch = SlaWatch(self.contacts, writer)

    # ---- route ---------------------------------------------------------------------------
    async def route(self, body: ContactIn, raw: bytes) -> tuple[dict[str, Any], bool]:
        """Route a contact; a retry with the same contact_id replays the first decision."""
        request_hash = hashlib.sha256(raw).hexdigest()
        existing = self.contacts.get(body.contact_id) or await self._load(body.contact_id)
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
        passes = self.passes
        pass_id = None if passes is None else passes.fast_lane_pass(body.customer_id, now)
        if pass_id is not None and passes is not None and not passes.hold(pass_id, body.contact_id):
            pass_id = None  # cancelled or refunded just now, or held by another contact
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
        self.contacts.add(contact)
        in_flight = self._in_flight[body.contact_id] = asyncio.get_running_loop().create_future()
        try:
            await self.state.add_waiting(entry)
            placement = await self.dispatcher.place_new(rules, entry, now=now)
            if placement is not None:
                decision = self._placed(rules, contact, placement, trigger="route", now=now)
            elif contact.first_decision:
                # A full dispatch queued ahead of this call for the channel placed it (_apply).
                decision = contact.first_decision
            else:
                decision = await self._queued(rules, contact, now)
            contact.first_decision = decision
            self.writer.put_contact(contact.to_row())
            in_flight.set_result(decision)
            return decision, False
        except BaseException as exc:
            await self._forget(contact)
            in_flight.set_exception(exc)
            in_flight.exception()  # retrieved: a concurrent retry may never ask for it
            raise
        finally:
            del self._in_flight[body.contact_id]

    async def _forget(self, contact: ContactState) -> None:
        """Undo a route call that failed half-way: no waiting entry, no offer, no record."""
        await self.state.remove_waiting(contact.contact_id)
        if contact.reservation_id is not None:
            await self.state.end_reservation(
                contact.reservation_id, keep_load=False, now=clock.now()
            )
        if contact.pass_id is not None and self.passes is not None:
            self.passes.release(contact.pass_id, contact.contact_id)
        self.contacts.discard(contact.contact_id)

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
        self.sla_watch.watch(rules, contact)
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

    def _apply(self, rules: CompiledRules, result: DispatchResult, *, trigger: str) -> int:
        """Record the placements a dispatch made; how many there were."""
        placed = 0
        now = clock.now()
        for placement in result.placements:
            contact = self.contacts.get(placement.entry.contact_id)
            if contact is None:
                continue
            decision = self._placed(rules, contact, placement, trigger=trigger, now=now)
            if not contact.first_decision:
                # Its route call still waits for the channel: this placement is the decision
                # that call returns and a retry replays (never an empty one, never "queued").
                contact.first_decision = decision
            self.writer.put_contact(contact.to_row())
            placed += 1
        return placed

    # ---- dispatch triggers ---------------------------------------------------------------
    async def dispatch_channels(self, channels: Iterable[str], *, trigger: str) -> int:
        """Dispatch each channel that has waiting contacts and free capacity."""
        rules = self.rules.compiled
        placed = 0
        for channel in channels:
            if channel not in rules.channels:
                continue
            if await self.state.waiting_count(channel) == 0:
                continue
            if await self.state.free_slots(channel) == 0:
                continue
            result = await self.dispatcher.dispatch(rules, channel, trigger=trigger)
            placed += self._apply(rules, result, trigger=trigger)
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
            await self.state.remove_waiting(entry.contact_id)
            await self.state.add_waiting(rematched)
            self._adopt_entry(rematched)
        # Offered contacts keep their offer; should it be rejected, they wait under new rules.
        for contact in self.contacts.active():
            if contact.status == "reserved" and contact.entry is not None:
                self._adopt_entry(rematch(rules, contact.entry, now))
        await self.dispatch_all(trigger="rules_change")

    def _adopt_entry(self, entry: WaitingEntry) -> None:
        contact = self.contacts.get(entry.contact_id)
        if contact is None:
            return
        rule = self.rules.compiled.rule_named(entry.rule) or self.rules.compiled.implicit
        contact.entry = entry
        contact.rule, contact.stage, contact.priority = entry.rule, entry.stage, entry.priority
        contact.stage_name = rule.stages[min(entry.stage, len(rule.stages) - 1)].name

    async def tick(self) -> None:
        """Periodic work: expire reservations, relax waiting contacts, refresh gauges."""
        now = clock.now()
        expired_channels = set()
        for reservation in await self.state.due_reservations(now):
            found = await self._requeue(
                reservation.reservation_id, reason="expired", now=now, dispatch=False
            )
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
            self._apply(rules, result, trigger="timer")
        self.sla_watch.warn_due(rules, now)
        for contact in list(self._unsettled.values()):
            del self._unsettled[contact.contact_id]
            await self._settle_pass(contact, now)
        for channel in self.rules.compiled.channels:
            metrics.QUEUE_LENGTH.labels(channel=channel).set(
                await self.state.waiting_count(channel)
            )
        self.contacts.evict(now)

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
        reservation = await self.state.end_reservation(
            reservation_id, keep_load=True, now=clock.now()
        )
        if reservation is None:
            raise NotFound(
                f"reservation {reservation_id} is not open (expired, rejected or unknown)"
            )
        contact = self.contacts.get(reservation.contact_id)
        assert contact is not None, "every reserved contact is held in memory"
        now = clock.now()
        contact.status = "connected"
        contact.updated_at = contact.connected_at = now
        self.writer.put_contact(contact.to_row())
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
        reservation = await self.state.end_reservation(reservation_id, keep_load=False, now=now)
        if reservation is None:
            return None
        outcome = reason if reason in ("expired", "withdrawn") else "rejected"
        metrics.RESERVATIONS.labels(outcome=outcome).inc()
        contact = self.contacts.get(reservation.contact_id)
        assert contact is not None, "every reserved contact is held in memory"
        refused = outcome != "withdrawn"
        if refused:
            # The full history is kept on the record; the entry excludes only recent refusals.
            contact.excluded_agents = sorted({*contact.excluded_agents, reservation.agent_id})
        contact.status, contact.agent_id = "queued", None
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = now
        base = contact.entry or self._entry_for(contact)
        entry = schedule(
            self.rules.compiled,
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
        self.writer.put_contact(contact.to_row())
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
        self.sla_watch.watch(self.rules.compiled, contact)
        log.info(
            "reservation.requeued",
            contact_id=contact.contact_id,
            agent_id=reservation.agent_id,
            reason=reason,
        )
        if dispatch:
            await self.dispatch_channels([contact.channel], trigger=outcome)
        return reservation, contact

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
        self._end(contact, "completed", now)
        await self.dispatch_channels([contact.channel], trigger="complete")
        return contact

    async def abandon(self, contact_id: str) -> ContactState:
        """The customer hung up or left before being served."""
        contact = await self.get(contact_id)
        if contact.status == "abandoned":
            return contact
        now = clock.now()
        if contact.status == "queued":
            await self.state.remove_waiting(contact_id)
        elif contact.status == "reserved" and contact.reservation_id is not None:
            await self.state.end_reservation(contact.reservation_id, keep_load=False, now=now)
        else:
            raise Conflict(
                f"contact {contact_id} is {contact.status}; it can no longer be abandoned"
            )
        self._end(contact, "abandoned", now)
        if contact.pass_id is not None and self.passes is not None:
            # Never answered: a single-incident pass is not used up.
            self.passes.release(contact.pass_id, contact.contact_id)
        if contact.agent_id is not None:
            await self.dispatch_channels([contact.channel], trigger="abandon")
        return contact

    def _end(self, contact: ContactState, status: str, now: float) -> None:
        contact.status = status  # type: ignore[assignment]
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = contact.ended_at = now
        contact.entry = None
        self.contacts.ended(contact, now)
        self.writer.put_contact(contact.to_row())

    # ---- reads ---------------------------------------------------------------------------
    async def get(self, contact_id: str) -> ContactState:
        """A contact by id, from memory or the database (a waiting one with its live stage)."""
        contact = self.contacts.get(contact_id) or await self._load(contact_id)
        if contact is None:
            raise NotFound(f"contact {contact_id} does not exist")
        if contact.status == "queued":
            live = await self.state.waiting_entry(contact_id)
            if live is not None:
                self._adopt_entry(live)
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
        """Rebuild waiting set, reservations and agent load from the database after a start."""
        self.contacts.remember_stored(
            await asyncio.to_thread(
                self.archive.ended_since, clock.now() - self._idempotency_window
            )
        )
        rows = await asyncio.to_thread(self.archive.active)
        rules = self.rules.compiled
        for row in rows:
            contact = ContactState.from_row(row)
            self.contacts.add(contact)
            if await restore(self.state, rules, contact, self._entry_for(contact)):
                self.writer.put_contact(contact.to_row())
            if contact.status in ("queued", "reserved"):
                self.sla_watch.watch(rules, contact)
        # The share cap's window of answered contacts, as it was before the restart.
        now = clock.now()
        window = rules.ruleset.tiers.protection.share_window_seconds
        for channel, tier, at in await asyncio.to_thread(self.archive.answered_since, now - window):
            self.dispatcher.ledger.record(channel, tier, at)  # type: ignore[arg-type]
        if self.passes is not None:
            # Passes of contacts answered just before a crash, whose consumption was lost.
            await self.passes.settle_answered(now)
        return len(rows)


def _request(body: ContactIn) -> dict[str, Any]:
    return body.model_dump(mode="json")
