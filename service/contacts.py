"""The live record of a contact, as the service keeps it between requests."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from routing_rules.compiled import ContactFacts
from service.state.records import ContactStatus, WaitingEntry


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
    stage_name: str = ""
    entry: WaitingEntry | None = None

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
        )


_ROW_FIELDS = tuple(f.name for f in fields(ContactState) if f.name not in ("stage_name", "entry"))
