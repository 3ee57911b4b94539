"""Database tables (SQLModel): the source of truth behind the real-time state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel


class AgentRow(SQLModel, table=True):
    """An agent's profile and last known presence."""

    __tablename__ = "agents"

    agent_id: str = Field(primary_key=True, max_length=128)
    name: str = Field(max_length=200)
    skills: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    languages: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    capacity: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    status_since: float
    updated_at: float


class ContactRow(SQLModel, table=True):
    """A contact's request, where it is now, and the first decision (replayed on retries)."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_status", "status"),
        Index("ix_contacts_created_at", "created_at"),  # reports select by offered time
        # The share cap's window of answered contacts, re-read every few seconds by replicas.
        Index("ix_contacts_connected_at", "connected_at"),
    )

    contact_id: str = Field(primary_key=True, max_length=128)
    customer_id: str = Field(max_length=128, index=True)
    channel: str = Field(max_length=64)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    request_hash: str = Field(max_length=64)
    status: str = Field(max_length=16)
    rule: str = Field(max_length=128)
    stage: int
    priority: int
    agent_id: str | None = Field(default=None, max_length=128)
    reservation_id: str | None = Field(default=None, max_length=64)
    reservation_expires_at: float | None = None
    excluded_agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tier: str = Field(
        default="standard", max_length=16, sa_column_kwargs={"server_default": "standard"}
    )
    pass_id: str | None = Field(default=None, max_length=64)
    assigned_at: float | None = None  # first offer to an agent
    connected_at: float | None = None  # the agent accepted: answered
    # Set when the standard tier's protections put this contact ahead of the fast lane.
    promoted_by: str | None = Field(default=None, max_length=32)
    # Counts the changes of the live record: a replica's batch never overwrites a newer state
    # another replica committed first (the upsert keeps the higher revision).
    revision: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    first_decision: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: float
    updated_at: float
    ended_at: float | None = None


class DecisionRow(SQLModel, table=True):
    """Every routing decision with the explanation it was made on."""

    __tablename__ = "decisions"

    decision_id: str = Field(primary_key=True, max_length=64)
    contact_id: str = Field(max_length=128, index=True)
    at: float
    outcome: str = Field(max_length=16)
    trigger: str = Field(max_length=32)
    agent_id: str | None = Field(default=None, max_length=128)
    reservation_id: str | None = Field(default=None, max_length=64)
    rule: str = Field(max_length=128)
    stage: str = Field(max_length=64)
    rules_version: int
    method: str = Field(max_length=16)
    explanation: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class RuleVersionRow(SQLModel, table=True):
    """One version of the routing rules, as the admin wrote it."""

    __tablename__ = "rule_versions"

    version: int = Field(primary_key=True)
    checksum: str = Field(max_length=64)
    source: str = Field(sa_column=Column(Text, nullable=False))
    origin: str = Field(max_length=32)
    author: str = Field(max_length=128)
    created_at: float
    active: bool = Field(default=False)


class PassRow(SQLModel, table=True):
    """A fast-lane pass a billing system bought for a customer."""

    __tablename__ = "passes"
    __table_args__ = (
        Index("ix_passes_customer", "customer_id", "status"),
        Index("ix_passes_updated_at", "updated_at"),  # replicas refresh what changed
    )

    pass_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(max_length=128)
    kind: str = Field(max_length=16)  # single_incident | subscription
    status: str = Field(max_length=16)  # active | consumed | cancelled | expired
    valid_from: float
    valid_until: float
    price_amount: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    refunded_amount: int = Field(default=0, sa_type=BigInteger)
    # The contact holding a single-incident pass while it waits, then the one that consumed it.
    contact_id: str | None = Field(default=None, max_length=128)
    consumed_at: float | None = None
    cancelled_at: float | None = None
    external_ref: str | None = Field(default=None, max_length=200)
    created_at: float
    updated_at: float


class RefundRow(SQLModel, table=True):
    """One refund of (part of) a pass."""

    __tablename__ = "pass_refunds"

    refund_id: str = Field(primary_key=True, max_length=64)
    pass_id: str = Field(max_length=64, index=True, foreign_key="passes.pass_id")
    amount: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=500)
    automatic: bool = False
    created_at: float


class IdempotencyRow(SQLModel, table=True):
    """A request made with an Idempotency-Key, and the response to replay for it.

    The primary key is what makes a concurrent duplicate lose: only one insert can win.
    """

    __tablename__ = "idempotency_keys"

    caller: str = Field(primary_key=True, max_length=64)  # hash of the API key
    operation: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int | None = None  # None while the first request is still running
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: float


class AppointmentRow(SQLModel, table=True):
    """A booked appointment or callback in a calendar slot."""

    __tablename__ = "appointments"
    __table_args__ = (Index("ix_appointments_slot", "slot_start", "status"),)

    appointment_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(max_length=128, index=True)
    inquiry_type: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    tier: str = Field(max_length=16)
    pass_id: str | None = Field(default=None, max_length=64)
    not_before: float
    not_after: float
    slot_start: float
    from_reserved: bool = False  # holds one of the slot's fast-lane seats
    status: str = Field(max_length=16)  # booked | cancelled
    original_slot_start: float
    moved_count: int = 0
    created_at: float
    updated_at: float


class OutboxRow(SQLModel, table=True):
    """An event for outside systems, written in the same transaction as its change."""

    __tablename__ = "outbox"

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    type: str = Field(max_length=64, index=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: float
    fanned_out: bool = Field(default=False, index=True)


class WebhookEndpointRow(SQLModel, table=True):
    """A URL that an admin registered to receive events."""

    __tablename__ = "webhook_endpoints"

    endpoint_id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=200)  # whsec_… (Standard Webhooks)
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", max_length=500)
    active: bool = True
    created_at: float


class WebhookDeliveryRow(SQLModel, table=True):
    """One event to one endpoint: pending until delivered or out of attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    delivery_id: str = Field(primary_key=True, max_length=64)
    event_seq: int = Field(foreign_key="outbox.seq", index=True)
    endpoint_id: str = Field(max_length=64, foreign_key="webhook_endpoints.endpoint_id")
    status: str = Field(max_length=16)  # pending | delivered | failed | cancelled
    attempts: int = 0
    next_attempt_at: float
    last_status_code: int | None = None
    delivered_at: float | None = None
    created_at: float


class WebhookAttemptRow(SQLModel, table=True):
    """Every attempt to deliver, with what came back."""

    __tablename__ = "webhook_attempts"

    attempt_id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=64, index=True)
    attempt: int
    at: float
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: float


class OutcomeRow(SQLModel, table=True):
    """What came of one completed contact: resolution, revenue, NPS, handle time, insight tags.

    The contact's facts (agent, segment, inquiry type, journey stage, tier) are copied in, so
    reports and the performance table read one table. `durable` is False once a repeat contact
    by the same customer on the same inquiry type arrived within the rules' repeat window
    (`repeated_by` names it); `repeat_of` names the earlier contact this one repeats.
    """

    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_repeat", "customer_id", "inquiry_type", "contact_created_at"),
        Index("ix_outcomes_completed_at", "completed_at"),
        Index("ix_outcomes_agent", "agent_id", "inquiry_type"),
    )

    contact_id: str = Field(primary_key=True, max_length=128)
    customer_id: str = Field(max_length=128)
    agent_id: str = Field(max_length=128)
    channel: str = Field(max_length=64)
    segment: str = Field(max_length=64)
    inquiry_type: str = Field(max_length=64)
    journey_stage: str = Field(max_length=64)
    tier: str = Field(default="standard", max_length=16)
    resolved: bool
    durable: bool  # resolved and not (yet) followed by a repeat contact within the window
    repeat_of: str | None = Field(default=None, max_length=128)
    repeated_by: str | None = Field(default=None, max_length=128)
    revenue_minor: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    upsell: bool = False
    cross_sell: bool = False
    nps: int | None = None  # 0-10
    handle_seconds: float
    tags: dict[str, list[str]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    contact_created_at: float  # when the contact arrived (repeat detection works on this)
    completed_at: float
    recorded_at: float
