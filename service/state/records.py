"""Live records the real-time state holds: agents, waiting contacts, reservations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from routing_rules.compiled import ContactFacts
from sla.config import Tier

AgentStatus = Literal["offline", "available", "busy", "wrap_up", "break"]
ContactStatus = Literal["queued", "reserved", "connected", "completed", "abandoned"]


@dataclass(slots=True)
class AgentRecord:
    """An agent's profile and presence; load is tracked by the state backend."""

    agent_id: str
    name: str
    skills: dict[str, int]
    languages: list[str]
    capacity: dict[str, int]
    status: AgentStatus = "offline"
    status_since: float = 0.0


@dataclass(slots=True)
class WaitingEntry:
    """A contact waiting for an agent, with where it stands on its rule's ladder."""

    contact_id: str
    facts: ContactFacts
    channel: str
    language: str
    rule: str
    stage: int
    priority: int
    enqueued_at: float
    stage_entered_at: float
    last_eligible_free_at: float
    excluded_agents: frozenset[str] = field(default_factory=frozenset)
    excluded_until: float = 0.0  # the exclusions apply until then
    next_check_at: float = math.inf  # when a relaxation stage may start; see CompiledRule
    tier: Tier = "standard"  # from the customer's pass when the contact arrived

    @property
    def queue_rank(self) -> int:
        """Orders the queue for positions: the fast lane first, then rule priority (0-201)."""
        return self.priority + (PRIORITY_LEVELS if self.tier == "fast_lane" else 0)


PRIORITY_LEVELS = 101  # rule priorities 0-100


@dataclass(frozen=True, slots=True)
class Reservation:
    """An offer of a contact to an agent that expires unless accepted."""

    reservation_id: str
    contact_id: str
    agent_id: str
    channel: str
    created_at: float
    expires_at: float
