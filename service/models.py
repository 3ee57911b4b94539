"""Request and response models of the HTTP API (separate from the database tables)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Identifier = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
VocabName = Annotated[StrictStr, Field(min_length=1, max_length=64)]
# Bounded so that every value survives JSON storage exactly (53-bit integers, finite floats).
AttributeValue = (
    Annotated[StrictStr, Field(max_length=1000)]
    | Annotated[StrictInt, Field(ge=-(2**53), le=2**53)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | StrictBool
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactIn(_In):
    """A contact the ACD asks skillroute to route."""

    contact_id: Identifier = Field(description="chosen by the ACD; retries reuse it")
    customer_id: Identifier
    channel: VocabName
    segment: VocabName
    inquiry_type: VocabName
    journey_stage: VocabName
    language: VocabName
    attributes: dict[Annotated[StrictStr, Field(max_length=64)], AttributeValue] = Field(
        default_factory=dict, max_length=50
    )


class ReservationOut(BaseModel):
    """An offer of the contact to an agent; the ACD accepts, rejects or lets it expire."""

    reservation_id: str
    agent_id: str
    expires_at: float = Field(description="unix seconds")
    expires_in_seconds: float


class DecisionOut(BaseModel):
    """What skillroute decided for a contact."""

    contact_id: str
    outcome: Literal["assigned", "queued"]
    agent_id: str | None = None
    reservation: ReservationOut | None = None
    queue_position: int | None = None
    estimated_wait_seconds: float | None = None
    rule: str
    stage: str
    rules_version: int
    tier: Literal["standard", "fast_lane"] = Field(
        description="from the customer's fast-lane pass, if any"
    )
    tier_name: str = Field(description="the tier's display name, as configured")
    explanation: str


class ContactOut(BaseModel):
    """A contact's current status."""

    contact_id: str
    customer_id: str
    channel: str
    status: Literal["queued", "reserved", "connected", "completed", "abandoned"]
    rule: str
    stage: str
    priority: int
    agent_id: str | None
    reservation_id: str | None
    reservation_expires_at: float | None
    tier: Literal["standard", "fast_lane"]
    pass_id: str | None
    created_at: float
    updated_at: float
    assigned_at: float | None = Field(description="first offered to an agent")
    connected_at: float | None = Field(description="answered: an agent accepted it")
    ended_at: float | None


class CandidateOut(BaseModel):
    """One agent considered for a contact, with every term of its score."""

    agent_id: str
    eligible: bool
    reason: str
    priority: float
    wait: float
    skill_fit: float
    preferred: float
    idle: float
    total: float
    precedence: float = Field(
        default=0.0, description="tier-precedence points included in total (fast lane first)"
    )
    performance: float = Field(
        default=0.0,
        description="scoring.performance x the agent's outcome score (0-1) on the contact's "
        "inquiry type, segment and journey stage, included in total",
    )


class ExplanationOut(BaseModel):
    """Why a contact went (or waits) where it did."""

    contact_id: str
    status: str
    tier: Literal["standard", "fast_lane"]
    promoted_by: str | None = Field(
        default=None,
        description="the standard-tier protection that put it ahead of the fast lane, if any",
    )
    rule: str
    stage: str
    rules_version: int
    requirements: dict[str, Any]
    chosen_agent_id: str | None
    method: str | None
    decided_at: float | None
    candidates: list[CandidateOut]
    decisions: list[dict[str, Any]]


class RejectIn(_In):
    """Why the agent (or ACD) turned down the offer."""

    reason: Annotated[StrictStr, Field(max_length=500)] = ""


class ReservationActionOut(BaseModel):
    """Result of accepting or rejecting a reservation."""

    reservation_id: str
    contact_id: str
    agent_id: str
    status: Literal["accepted", "rejected"]
    contact_status: str


AgentStatusName = Literal["offline", "available", "busy", "wrap_up", "break"]


class AgentIn(_In):
    """An agent's profile (create or replace)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    skills: dict[VocabName, Annotated[StrictInt, Field(ge=1, le=5)]] = Field(max_length=100)
    languages: list[VocabName] = Field(min_length=1, max_length=20)
    capacity: dict[VocabName, Annotated[StrictInt, Field(ge=0, le=50)]] = Field(
        min_length=1, max_length=20, description="channel -> concurrent contacts"
    )
    status: AgentStatusName = "offline"


class AgentOut(BaseModel):
    """An agent with live state."""

    agent_id: str
    name: str
    skills: dict[str, int]
    languages: list[str]
    capacity: dict[str, int]
    status: AgentStatusName
    status_since: float
    load: dict[str, int]
    free: dict[str, int]


class AgentList(BaseModel):
    """A page of agents."""

    items: list[AgentOut]
    total: int
    offset: int
    limit: int


class StatusIn(_In):
    """A presence change of one agent."""

    status: AgentStatusName


class BulkStatusItem(_In):
    """One agent's presence change inside a bulk change."""

    agent_id: Identifier
    status: AgentStatusName


class BulkStatusIn(_In):
    """Many presence changes applied together, followed by one dispatch."""

    changes: list[BulkStatusItem] = Field(min_length=1, max_length=5000)


class BulkStatusOut(BaseModel):
    """The result of a bulk status change."""

    updated: int
    assigned: int


class QueueEntryOut(BaseModel):
    """One waiting contact in the queue snapshot."""

    contact_id: str
    channel: str
    rule: str
    stage: str
    priority: int
    tier: Literal["standard", "fast_lane"]
    wait_seconds: float


class QueueOut(BaseModel):
    """Every waiting contact, most urgent first (the fast lane ahead of the standard tier)."""

    waiting: int
    by_channel: dict[str, int]
    items: list[QueueEntryOut]


class RuleProblemOut(BaseModel):
    """A validation error or lint warning."""

    file: str
    line: int
    column: int
    field: str
    message: str
    severity: str
    code: str


class RulesOut(BaseModel):
    """The active routing rules."""

    version: int
    checksum: str
    origin: str
    created_at: float
    source: str
    warnings: list[RuleProblemOut]


class RulesValidationOut(BaseModel):
    """The result of validating a rules document without applying it."""

    valid: bool
    errors: list[RuleProblemOut]
    warnings: list[RuleProblemOut]


class RuleVersionOut(BaseModel):
    """One stored rules version."""

    version: int
    checksum: str
    origin: str
    author: str
    created_at: float
    active: bool


class RuleVersionList(BaseModel):
    """Stored rules versions, newest first."""

    items: list[RuleVersionOut]
    total: int
    offset: int
    limit: int


class ReadinessOut(BaseModel):
    """Whether the service can route and persist, with the result of each check."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description='check -> "ok", "version N" or "error: ..."')


class ProblemOut(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give."""
    text = {
        400: "The body could not be parsed",
        401: "Missing or unknown API key",
        403: "API key lacks the scope",
        404: "Not found",
        405: "Method not allowed on this path (see the Allow header)",
        409: "Conflicts with the current state",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "Invalid input (field-level errors)",
        429: "The API key is over its rate limit (see Retry-After)",
        503: "A dependency is down; nothing was changed",
    }
    if 401 in statuses and 429 not in statuses:
        # Every authenticated route counts against its key's rate limit.
        statuses = (*statuses, 429)
    # Inline, not `model=`: FastAPI would document the model under application/json, a media
    # type problems are never sent with, and leave application/problem+json without a schema.
    return {
        status: {
            "description": text[status],
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


_PROBLEM_SCHEMA = ProblemOut.model_json_schema()
