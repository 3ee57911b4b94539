"""The live record of a contact, as the service keeps it between requests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from routing_rules.compiled import ContactFacts
from service.state.records import ContactStatus, WaitingEntry
from sla.config import Tier


@dataclass(slots=True)
class ContactState:
    """A contact's request, status and first decision (mirrors the `contacts` table)."""

    contact_id: str
    customer_id: str
    channel: str
    request: dict[str, Any]
    request_hash: str
    status: ContactStatus
    rule: str
    stage: int
    priority: int
    first_decision: dict[str, Any]
    created_at: float
    updated_at: float
    agent_id: str | None = None
    reservation_id: str | None = None
    reservation_expires_at: float | None = None
    excluded_agents: list[str] = field(default_factory=list)
    ended_at: float | None = None
    tier: Tier = "standard"
    pass_id: str | None = None
    assigned_at: float | None = None
    connected_at: float | None = None
    promoted_by: str | None = None
    revision: int = 0  # one more for every stored change (see ContactRow.revision)
    stage_name: str = ""
    entry: WaitingEntry | None = None
    breach_warned: bool = False  # an `sla.breach_warning` was sent for it

    def to_row(self) -> dict[str, Any]:
        """The database row of this contact (a shallow copy: rows are written, not mutated)."""
        return {name: getattr(self, name) for name in _ROW_FIELDS}

    @property
    def facts(self) -> ContactFacts:
        """What routing matches on, from the original request."""
        r = self.request
        return ContactFacts(
            channel=r["channel"],
            segment=r["segment"],
            inquiry_type=r["inquiry_type"],
            journey_stage=r["journey_stage"],
            language=r["language"],
            attributes=r.get("attributes", {}),
        )

    @classmethod
    def from_row(cls, row: Any) -> ContactState:
        """Rebuild from a `contacts` row."""
        return cls(
            contact_id=row.contact_id,
            customer_id=row.customer_id,
            channel=row.channel,
            request=dict(row.request),
            request_hash=row.request_hash,
            status=row.status,
            rule=row.rule,
            stage=row.stage,
            priority=row.priority,
            first_decision=dict(row.first_decision),
            created_at=row.created_at,
            updated_at=row.updated_at,
            agent_id=row.agent_id,
            reservation_id=row.reservation_id,
            reservation_expires_at=row.reservation_expires_at,
            excluded_agents=list(row.excluded_agents or []),
            ended_at=row.ended_at,
            tier=row.tier,
            pass_id=row.pass_id,
            assigned_at=row.assigned_at,
            connected_at=row.connected_at,
            promoted_by=row.promoted_by,
            revision=row.revision,
        )


def contact_event(contact: ContactState) -> dict[str, Any]:
    """The fields every contact event carries."""
    return {
        "contact_id": contact.contact_id,
        "customer_id": contact.customer_id,
        "channel": contact.channel,
        "tier": contact.tier,
        "rule": contact.rule,
    }


_ROW_FIELDS = tuple(
    f.name for f in fields(ContactState) if f.name not in ("stage_name", "entry", "breach_warned")
)


class ContactBook:
    """The contacts this process holds in memory, and which others live only in the database.

    Active contacts and recently ended ones (for `memory_seconds`) are held here. Ids of contacts
    that ended longer ago, or before this process started, are remembered for the idempotency
    window so that only a retry of one of those costs a database read; a new contact costs none.
    """

    def __init__(self, *, memory_seconds: float, idempotency_window_seconds: float) -> None:
        self._live: dict[str, ContactState] = {}
        self._stored_only: dict[str, float] = {}  # contact_id -> created_at
        self._ended: deque[tuple[float, str]] = deque()  # (ended_at, contact_id), in order
        self._memory = memory_seconds
        self._window = idempotency_window_seconds
        self._next_prune = 0.0

    def get(self, contact_id: str) -> ContactState | None:
        """A contact held in memory."""
        return self._live.get(contact_id)

    def add(self, contact: ContactState) -> None:
        """Hold a contact (new, or restored after a start)."""
        self._live[contact.contact_id] = contact

    def discard(self, contact_id: str) -> None:
        """Forget a contact whose route call failed before anything was stored."""
        self._live.pop(contact_id, None)

    def active(self) -> list[ContactState]:
        """Contacts queued, offered or connected."""
        return [c for c in self._live.values() if c.ended_at is None]

    def stored_only(self, contact_id: str) -> bool:
        """Whether the contact exists only in the database (a read is needed to see it)."""
        return contact_id in self._stored_only

    def remember_stored(self, ids: dict[str, float]) -> None:
        """Ids (with creation time) of ended contacts found in the database at start."""
        self._stored_only.update(ids)

    def ended(self, contact: ContactState, now: float) -> None:
        """A contact completed or was abandoned: forget it from memory later."""
        self._ended.append((now, contact.contact_id))

    def evict(self, now: float) -> None:
        """Drop contacts ended more than `memory_seconds` ago; prune the id index hourly."""
        while self._ended and now - self._ended[0][0] > self._memory:
            contact_id = self._ended.popleft()[1]
            contact = self._live.get(contact_id)
            if contact is not None and contact.ended_at is not None:
                del self._live[contact_id]
                self._stored_only[contact_id] = contact.created_at
        if now >= self._next_prune:
            self._next_prune = now + 3600.0
            horizon = now - self._window
            self._stored_only = {cid: at for cid, at in self._stored_only.items() if at >= horizon}
