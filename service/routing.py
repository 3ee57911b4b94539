"""The contact lifecycle: route, reservation accept/reject/expiry, complete, abandon, explain.

Every state change goes to the real-time state first (atomic claims), then to the database
through the batch writer. A route call with free capacity on its channel runs a dispatch of the
channel's whole waiting set, so a newcomer never jumps a waiting contact that could take the
same agent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from routing_rules.compiled import CompiledRules, ContactFacts
from routing_rules.scoring import ScoreTerms, explain_candidates
from service import clock, metrics
from service.contacts import ContactState
from service.dispatch import (
    Dispatcher,
    DispatchResult,
    Placement,
    advance_stages,
    as_waiting_contact,
    schedule,
    stage_of_name,
)
from service.gc_tuning import GcTuner
from service.ids import new_id
from service.models import ContactIn
from service.problems import Conflict, InvalidInput, NotFound
from service.rules_store import RulesStore
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry
from service.storage.tables import ContactRow, DecisionRow
from service.storage.writer import BatchWriter

log = structlog.get_logger(__name__)

ACTIVE = ("queued", "reserved", "connected")


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
    ) -> None:
        self.state = state
        self.dispatcher = dispatcher
        self.rules = rules
        self.writer = writer
        self.engine = engine
        self._ttl = reservation_ttl
        self._handle_seconds = default_handle_seconds
        self._retention = retention_seconds
        self._idempotency_window = idempotency_window_seconds
        self._contacts: dict[str, ContactState] = {}
        # Ids of contacts stored in the database but no longer held in memory (ended more
        # than `retention_seconds` ago, or ended before this process started), with their
        # creation time. Only these need a database read when a retry comes in, so a new
        # contact costs no read at all.
        self._stored_only: dict[str, float] = {}
        self._ended: deque[tuple[float, str]] = deque()  # (ended_at, contact_id), in order

    # ---- route ---------------------------------------------------------------------------
    async def route(self, body: ContactIn, raw: bytes) -> tuple[dict[str, Any], bool]:
        """Route a contact; a retry with the same contact_id replays the first decision."""
        request_hash = hashlib.sha256(raw).hexdigest()
        existing = self._contacts.get(body.contact_id) or await self._load(body.contact_id)
        if existing is not None:
            if existing.request_hash != request_hash and existing.request != _request(body):
                raise Conflict(
                    f"contact {body.contact_id} was already routed with different details"
                )
            return existing.first_decision, True
        rules = self.rules.compiled
        _check_vocabulary(rules, body)
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
        stage = rule.next_stage(0, wait_seconds=0.0, stalled_seconds=0.0)
        entry = schedule(
            rules,
            WaitingEntry(
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
            ),
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
        )
        self._contacts[body.contact_id] = contact
        await self.state.add_waiting(entry)
        placement = await self.dispatcher.place_new(rules, entry, now=now)
        if placement is not None:
            decision = self._placed(rules, contact, placement, trigger="route", now=now)
        elif contact.first_decision:
            # A full dispatch queued ahead of this call for the channel placed it (see _apply).
            decision = contact.first_decision
        else:
            decision = await self._queued(rules, contact, now)
        contact.first_decision = decision
        self.writer.put_contact(contact.to_row())
        return decision, False

    async def _queued(
        self, rules: CompiledRules, contact: ContactState, now: float
    ) -> dict[str, Any]:
        position = await self.state.position(contact.channel, contact.priority)
        staffed = await self.state.staffed(contact.channel)
        estimate = position * self._handle_seconds / staffed if staffed else None
        decision = {
            "contact_id": contact.contact_id,
            "outcome": "queued",
            "agent_id": None,
            "reservation": None,
            "queue_position": position,
            "estimated_wait_seconds": None if estimate is None else round(estimate, 1),
            "rule": contact.rule,
            "stage": contact.stage_name,
            "rules_version": rules.version,
            "explanation": _queued_text(contact, position, staffed),
        }
        self._record(contact, rules, "queued", "route", None, [], 0, now, "none")
        metrics.decision("queued", "route")
        return decision

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
        self._record(
            contact,
            rules,
            "assigned",
            trigger,
            reservation,
            placement.candidates,
            placement.eligible_count,
            now,
            placement.method,
        )
        metrics.decision("assigned", trigger)
        metrics.wait_seconds(contact.channel, now - contact.created_at)
        best = placement.candidates[0] if placement.candidates else None
        return {
            "contact_id": contact.contact_id,
            "outcome": "assigned",
            "agent_id": reservation.agent_id,
            "reservation": {
                "reservation_id": reservation.reservation_id,
                "agent_id": reservation.agent_id,
                "expires_at": reservation.expires_at,
                "expires_in_seconds": round(reservation.expires_at - now, 3),
            },
            "queue_position": None,
            "estimated_wait_seconds": None,
            "rule": contact.rule,
            "stage": placement.stage_name,
            "rules_version": rules.version,
            "explanation": (
                f"rule {contact.rule}, stage {placement.stage_name}: best of "
                f"{placement.eligible_count} eligible agent(s)"
                + (f", score {best.total:.2f}" if best else "")
                + f" ({placement.method})"
            ),
        }

    def _apply(
        self, rules: CompiledRules, result: DispatchResult, *, trigger: str, skip: str | None = None
    ) -> int:
        """Record placements made by a dispatch (other than the routed contact itself)."""
        placed = 0
        now = clock.now()
        for placement in result.placements:
            contact_id = placement.entry.contact_id
            if contact_id == skip:
                continue
            contact = self._contacts.get(contact_id)
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

    def _record(
        self,
        contact: ContactState,
        rules: CompiledRules,
        outcome: str,
        trigger: str,
        reservation: Reservation | None,
        candidates: list[ScoreTerms],
        eligible: int,
        now: float,
        method: str,
    ) -> None:
        self.writer.put_decision(
            {
                "decision_id": new_id(),
                "contact_id": contact.contact_id,
                "at": now,
                "outcome": outcome,
                "trigger": trigger,
                "agent_id": reservation.agent_id if reservation else None,
                "reservation_id": reservation.reservation_id if reservation else None,
                "rule": contact.rule,
                "stage": contact.stage_name,
                "rules_version": rules.version,
                "method": method,
                "explanation": {
                    "eligible_count": eligible,
                    "candidates": [_terms(t) for t in candidates],
                    "requirements": requirements_of(rules, contact.rule, contact.stage),
                },
            }
        )

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
        """Re-match every waiting contact under the new rules, then dispatch."""
        await self.state.reindex(rules)
        now = clock.now()
        entries = await self.state.waiting()
        rematched = []
        for entry in entries:
            if entry.channel not in rules.channels or entry.language not in rules.languages:
                continue  # stays under its old rule name; unreachable rules match nothing
            rule = rules.rule_for(entry.facts)
            stage = rule.next_stage(0, wait_seconds=now - entry.enqueued_at, stalled_seconds=0)
            rematched.append(
                schedule(
                    rules,
                    replace(
                        entry,
                        rule=rule.name,
                        stage=stage,
                        priority=rule.priority,
                        stage_entered_at=now,
                    ),
                )
            )
            contact = self._contacts.get(entry.contact_id)
            if contact is not None:
                contact.rule, contact.stage, contact.priority = rule.name, stage, rule.priority
                contact.stage_name = rule.stages[stage].name
        for entry in rematched:
            await self.state.remove_waiting(entry.contact_id)
            await self.state.add_waiting(entry)
        await self.dispatch_all(trigger="rules_change")

    async def tick(self) -> None:
        """Periodic work: expire reservations, relax waiting contacts, refresh gauges."""
        now = clock.now()
        for reservation in await self.state.due_reservations(now):
            await self._requeue(reservation.reservation_id, reason="expired", now=now)
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
        for channel in self.rules.compiled.channels:
            metrics.QUEUE_LENGTH.labels(channel=channel).set(
                await self.state.waiting_count(channel)
            )
        self._evict(now)

    def _evict(self, now: float) -> None:
        old = []
        while self._ended and now - self._ended[0][0] > self._retention:
            old.append(self._ended.popleft()[1])
        for contact_id in old:
            contact = self._contacts.get(contact_id)
            if contact is not None and contact.ended_at is not None:
                self._stored_only[contact_id] = self._contacts.pop(contact_id).created_at
        horizon = now - self._idempotency_window
        if len(self._stored_only) > 2 * len(old) + 1000:
            self._stored_only = {cid: at for cid, at in self._stored_only.items() if at >= horizon}

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
        contact = self._contacts[reservation.contact_id]
        contact.status = "connected"
        contact.updated_at = clock.now()
        self.writer.put_contact(contact.to_row())
        metrics.RESERVATIONS.labels(outcome="accepted").inc()
        return reservation, contact

    async def reject(self, reservation_id: str, reason: str) -> tuple[Reservation, ContactState]:
        """The agent turns the offer down: the contact is dispatched again without that agent."""
        found = await self._requeue(reservation_id, reason=reason or "rejected", now=clock.now())
        if found is None:
            raise NotFound(
                f"reservation {reservation_id} is not open (expired, rejected or unknown)"
            )
        return found

    async def _requeue(
        self, reservation_id: str, *, reason: str, now: float
    ) -> tuple[Reservation, ContactState] | None:
        reservation = await self.state.end_reservation(reservation_id, keep_load=False, now=now)
        if reservation is None:
            return None
        outcome = "expired" if reason == "expired" else "rejected"
        metrics.RESERVATIONS.labels(outcome=outcome).inc()
        contact = self._contacts[reservation.contact_id]
        contact.excluded_agents = sorted({*contact.excluded_agents, reservation.agent_id})
        contact.status, contact.agent_id = "queued", None
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = now
        base = contact.entry or self._entry_for(contact)
        entry = schedule(
            self.rules.compiled, replace(base, excluded_agents=frozenset(contact.excluded_agents))
        )
        contact.entry = entry
        await self.state.add_waiting(entry)
        self.writer.put_contact(contact.to_row())
        log.info(
            "reservation.requeued",
            contact_id=contact.contact_id,
            agent_id=reservation.agent_id,
            reason=reason,
        )
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
        if contact.agent_id is not None:
            await self.dispatch_channels([contact.channel], trigger="abandon")
        return contact

    def _end(self, contact: ContactState, status: str, now: float) -> None:
        contact.status = status  # type: ignore[assignment]
        contact.reservation_id = contact.reservation_expires_at = None
        contact.updated_at = contact.ended_at = now
        contact.entry = None
        self._ended.append((now, contact.contact_id))
        self.writer.put_contact(contact.to_row())

    # ---- reads ---------------------------------------------------------------------------
    async def get(self, contact_id: str) -> ContactState:
        """A contact by id, from memory or the database."""
        contact = self._contacts.get(contact_id) or await self._load(contact_id)
        if contact is None:
            raise NotFound(f"contact {contact_id} does not exist")
        return contact

    async def _load(self, contact_id: str) -> ContactState | None:
        if contact_id not in self._stored_only:
            return None
        with Session(self.engine) as session:
            row = session.get(ContactRow, contact_id)
        return None if row is None else ContactState.from_row(row)

    async def explain(self, contact_id: str) -> dict[str, Any]:
        """Why a contact is where it is: stored decisions, and live candidates if waiting."""
        contact = await self.get(contact_id)
        rules = self.rules.compiled
        decisions = await asyncio.to_thread(self._decisions, contact_id)
        latest = decisions[-1] if decisions else None
        candidates: list[dict[str, Any]] = []
        if contact.status == "queued" and contact.entry is not None:
            now = clock.now()
            entry = advance_stages(rules, [contact.entry], now)[0]
            pool = await self.state.pool(contact.channel, now)
            waiting = as_waiting_contact(rules, entry, now)
            candidates = [_terms(t) for t in explain_candidates(rules, pool, waiting)]
            stage_name, stage = stage_of_name(rules, entry), entry.stage
        elif latest is not None:
            candidates = latest["explanation"].get("candidates", [])
            stage_name, stage = latest["stage"], contact.stage
        else:
            stage_name, stage = contact.stage_name, contact.stage
        return {
            "contact_id": contact_id,
            "status": contact.status,
            "rule": contact.rule,
            "stage": stage_name,
            "rules_version": latest["rules_version"] if latest else rules.version,
            "requirements": requirements_of(rules, contact.rule, stage),
            "chosen_agent_id": contact.agent_id,
            "method": latest["method"] if latest else None,
            "decided_at": latest["at"] if latest else None,
            "candidates": [_rounded(c) for c in candidates],
            "decisions": decisions,
        }

    def _decisions(self, contact_id: str) -> list[dict[str, Any]]:
        self.writer.flush()
        with Session(self.engine) as session:
            rows = session.exec(
                select(DecisionRow)
                .where(DecisionRow.contact_id == contact_id)
                .order_by(col(DecisionRow.at))
            ).all()
        return [row.model_dump() for row in rows]

    async def queue(self) -> list[WaitingEntry]:
        """Every waiting contact, most urgent first."""
        entries = await self.state.waiting()
        return sorted(entries, key=lambda e: (-e.priority, e.enqueued_at))

    # ---- recovery ------------------------------------------------------------------------
    async def recover(self) -> int:
        """Rebuild waiting set, reservations and agent load from the database after a start."""
        self._stored_only = await asyncio.to_thread(
            self._ended_ids, clock.now() - self._idempotency_window
        )
        rows = await asyncio.to_thread(self._active_rows)
        rules = self.rules.compiled
        now = clock.now()
        for row in rows:
            contact = ContactState.from_row(row)
            rule = rules.rule_named(contact.rule) or rules.rule_for(contact.facts)
            contact.stage_name = rule.stages[min(contact.stage, len(rule.stages) - 1)].name
            self._contacts[contact.contact_id] = contact
            if contact.status == "connected" and contact.agent_id:
                await self.state.add_load(contact.agent_id, contact.channel)
                continue
            entry = schedule(rules, self._entry_for(contact))
            contact.entry = entry
            await self.state.add_waiting(entry)
            if contact.status == "reserved" and contact.reservation_id and contact.agent_id:
                reservation = Reservation(
                    contact.reservation_id,
                    contact.contact_id,
                    contact.agent_id,
                    contact.channel,
                    now,
                    contact.reservation_expires_at or now,
                )
                if not await self.state.claim(entry, reservation):
                    contact.status, contact.agent_id = "queued", None
                    contact.reservation_id = contact.reservation_expires_at = None
                    self.writer.put_contact(contact.to_row())
        return len(rows)

    def _ended_ids(self, since: float) -> dict[str, float]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(ContactRow.contact_id, ContactRow.created_at)
                .where(col(ContactRow.status).not_in(ACTIVE))
                .where(col(ContactRow.created_at) >= since)
            ).all()
        return {contact_id: created_at for contact_id, created_at in rows}

    def _active_rows(self) -> list[ContactRow]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(ContactRow)
                    .where(col(ContactRow.status).in_(ACTIVE))
                    .order_by(col(ContactRow.created_at))
                ).all()
            )


def _request(body: ContactIn) -> dict[str, Any]:
    return body.model_dump(mode="json")


def _terms(t: ScoreTerms) -> dict[str, Any]:
    return {
        "agent_id": t.agent_id,
        "eligible": t.eligible,
        "reason": t.reason,
        "priority": t.priority,
        "wait": t.wait,
        "skill_fit": t.skill_fit,
        "preferred": t.preferred,
        "idle": t.idle,
        "total": t.total,
    }


def _rounded(candidate: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in candidate.items()}


def requirements_of(rules: CompiledRules, rule_name: str, stage: int) -> dict[str, Any]:
    """The hard requirements and preferences of a rule's stage, by skill name (cached)."""
    key = (rules.version, rules.checksum, rule_name, stage)
    cached = _REQUIREMENTS.get(key)
    if cached is None:
        if len(_REQUIREMENTS) > 10_000:
            _REQUIREMENTS.clear()
        cached = _REQUIREMENTS[key] = _requirements(rules, rule_name, stage)
    return cached


_REQUIREMENTS: dict[tuple[int, str, str, int], dict[str, Any]] = {}


def _requirements(rules: CompiledRules, rule_name: str, stage: int) -> dict[str, Any]:
    rule = rules.rule_named(rule_name) or rules.implicit
    plan = rule.stages[min(stage, len(rule.stages) - 1)]
    return {
        "skills": {
            rules.skills[s]: int(lv)
            for s, lv in zip(plan.required_skills, plan.required_levels, strict=True)
        },
        "language": plan.language,
        "preferred": {
            rules.skills[s]: round(float(w), 4)
            for s, w in zip(plan.preferred_skills, plan.preferred_weights, strict=True)
        },
    }


def _queued_text(contact: ContactState, position: int, staffed: int) -> str:
    if staffed == 0:
        return (
            f"rule {contact.rule}, stage {contact.stage_name}: no agent is available on "
            f"{contact.channel}; position {position}"
        )
    return (
        f"rule {contact.rule}, stage {contact.stage_name}: no eligible agent free now; "
        f"position {position}"
    )


def _check_vocabulary(rules: CompiledRules, body: ContactIn) -> None:
    vocab = rules.ruleset.vocabularies
    errors = []
    for field, known in (
        ("channel", vocab.channels),
        ("segment", vocab.segments),
        ("inquiry_type", vocab.inquiry_types),
        ("journey_stage", vocab.journey_stages),
        ("language", vocab.languages),
    ):
        value = getattr(body, field)
        if value not in known:
            errors.append(
                {
                    "field": field,
                    "type": "unknown_name",
                    "message": f"unknown {field} {value!r}; known: {', '.join(known)}",
                }
            )
    for name, kind in vocab.attributes.items():
        if name not in body.attributes:
            continue
        value = body.attributes[name]
        ok = (
            isinstance(value, bool)
            if kind == "boolean"
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind == "number"
            else isinstance(value, str)
        )
        if not ok:
            errors.append(
                {
                    "field": f"attributes.{name}",
                    "type": "type_mismatch",
                    "message": f"attribute {name!r} must be a {kind}",
                }
            )
    if errors:
        raise InvalidInput(errors[0]["message"], errors=errors)
