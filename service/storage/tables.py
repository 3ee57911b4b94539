"""Database tables (SQLModel): the source of truth behind the real-time state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index, Text
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
    __table_args__ = (Index("ix_contacts_status", "status"),)

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
