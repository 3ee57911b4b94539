"""Routing rules administration: active version, new versions, validation, rollback."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from routing_rules.problems import RuleProblem, RulesInvalid
from service.api.deps import RulesAdmin, RulesDep, SingleValuedQuery
from service.models import (
    RuleProblemOut,
    RulesOut,
    RulesValidationOut,
    RuleVersionList,
    RuleVersionOut,
    problems,
)
from service.problems import InvalidInput, PayloadTooLarge, TooManyRequests, Unavailable
from service.rules_store import ActiveRules
from simulator.policies import Policy
from simulator.service import (
    EXAMPLE_SCENARIO,
    SimulationBusy,
    SimulationFailed,
    SimulationRequest,
    SimulationTimedOut,
    SimulationWorker,
    check_request,
    simulated_contacts,
)

router = APIRouter(prefix="/v1/rules", tags=["rules"])

# The YAML document is a mapping (its full JSON Schema: `skillroute rules schema`); as plain
# text it is the raw, non-empty document. A draft to validate may be any YAML at all.
_RULES_TEXT = {"type": "string", "minLength": 1}
_YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "object"}},
            "text/plain": {"schema": _RULES_TEXT},
        },
    }
}
_DRAFT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {}},
            "text/plain": {"schema": _RULES_TEXT},
        },
    }
}
MAX_RULES_BYTES = 1_000_000


async def _yaml_text(request: Request) -> str:
    raw = await request.body()
    if not raw:
        raise InvalidInput("the request body is empty: send the rules YAML document")
    if len(raw) > MAX_RULES_BYTES:
        raise PayloadTooLarge(f"rules document is larger than {MAX_RULES_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"rules document is not UTF-8 (byte {exc.start})") from None


def _problems(items: list[RuleProblem]) -> list[RuleProblemOut]:
    return [RuleProblemOut(**p.as_dict()) for p in items]


def _active(active: ActiveRules) -> RulesOut:
    row = active.row
    return RulesOut(
        version=row.version,
        checksum=row.checksum,
        origin=row.origin,
        created_at=row.created_at,
        source=row.source,
        warnings=_problems(active.warnings),
    )


def _invalid(exc: RulesInvalid) -> InvalidInput:
    return InvalidInput(
        f"{len(exc.problems)} error(s); first: {exc.problems[0]}",
        errors=[p.as_dict() for p in exc.problems],
    )


@router.get("", response_model=RulesOut, responses=problems(401, 403))
async def get_rules(admin: RulesAdmin, rules: RulesDep) -> RulesOut:
    """The active rules: YAML source, version, checksum and lint warnings."""
    return _active(rules.active)


@router.put(
    "", response_model=RulesOut, responses=problems(401, 403, 413, 422), openapi_extra=_YAML_BODY
)
async def put_rules(request: Request, admin: RulesAdmin, rules: RulesDep) -> RulesOut:
    """Store and activate a new rules version; on any error the active rules stay as they were.

    Waiting contacts are re-matched under the new rules at once. Rules that live state cannot
    take (e.g. dropping a channel that waiting contacts use) are refused with 422, code `in_use`.
    """
    text = await _yaml_text(request)
    try:
        active = await rules.apply(text, origin="api", author=admin.key_id)
    except RulesInvalid as exc:
        raise _invalid(exc) from None
    return _active(active)


@router.post(
    "/validate",
    response_model=RulesValidationOut,
    responses=problems(401, 403, 413, 422),
    openapi_extra=_DRAFT_BODY,
)
async def validate_rules(
    request: Request, admin: RulesAdmin, rules: RulesDep
) -> RulesValidationOut:
    """Validate and lint a draft without applying it (same errors as the CLI)."""
    text = await _yaml_text(request)
    # Parsing, validation and lint are CPU work: off the event loop. The agents' skills are
    # read here, on the loop that changes them.
    errors, warnings = await asyncio.to_thread(
        rules.check, text, file="draft", agent_skills=rules.agent_skills() or None
    )
    return RulesValidationOut(
        valid=not errors, errors=_problems(errors), warnings=_problems(warnings)
    )


@router.get("/versions", response_model=RuleVersionList, responses=problems(401, 403, 422))
async def list_versions(
    admin: RulesAdmin,
    single_values: SingleValuedQuery,
    rules: RulesDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RuleVersionList:
    """Stored rules versions, newest first."""
    rows, total = await asyncio.to_thread(rules.versions, offset=offset, limit=limit)
    return RuleVersionList(
        items=[RuleVersionOut.model_validate(r, from_attributes=True) for r in rows],
        total=total,
        offset=offset,
        limit=limit,
    )


@router.get("/versions/{version}", response_model=RulesOut, responses=problems(401, 403, 404, 422))
async def get_version(
    version: Annotated[int, Path(ge=1, le=2**31 - 1)], admin: RulesAdmin, rules: RulesDep
) -> RulesOut:
    """One stored version with its source."""
    row = await asyncio.to_thread(rules.version, version)
    return RulesOut(
        version=row.version,
        checksum=row.checksum,
        origin=row.origin,
        created_at=row.created_at,
        source=row.source,
        warnings=[],
    )


@router.post(
    "/versions/{version}/rollback", response_model=RulesOut, responses=problems(401, 403, 404, 422)
)
async def rollback_rules(
    version: Annotated[int, Path(ge=1, le=2**31 - 1)], admin: RulesAdmin, rules: RulesDep
) -> RulesOut:
    """Activate an earlier version again (recorded as a new version)."""
    try:
        active = await rules.rollback(version, author=admin.key_id)
    except RulesInvalid as exc:
        raise _invalid(exc) from None
    return _active(active)


class SimulateIn(BaseModel):
    """A draft rule set to simulate, against the active rules unless told otherwise."""

    model_config = ConfigDict(extra="forbid")

    # No maxLength: the request body limit (SKILLROUTE_MAX_BODY_BYTES, 413) bounds both
    # documents together, however their characters are escaped in the JSON.
    rules: str = Field(min_length=1, description="draft rules YAML")
    scenario: str | None = Field(
        default=None,
        min_length=1,
        description="scenario YAML (see docs/simulator.md); default: the 200-agent example",
    )
    compare_with_active: bool = Field(
        default=True, description="also run the active rules and report the difference"
    )
    policy: Policy = "optimal"
    seeds: int = Field(default=3, ge=1, le=20, description="simulated days (seeds 1..N)")


class EstimateOut(BaseModel):
    """A mean over seeds with its 95 % confidence-interval half-width."""

    mean: float | None
    ci95_half_width: float | None
    seeds: int


class SimulationArmOut(BaseModel):
    """One simulated rule set: its figures over the seeds."""

    label: str
    rules: str
    policy: str
    contacts: int
    seconds: float
    figures: dict[str, EstimateOut]


class SimulationOut(BaseModel):
    """A simulation report; `difference` is draft - active, paired by seed."""

    scenario: str
    seeds: list[int]
    arms: list[SimulationArmOut]
    difference: dict[str, EstimateOut] | None
    markdown: str


def _simulations(request: Request) -> SimulationWorker:
    worker: SimulationWorker = request.app.state.simulations
    return worker


@router.post(
    "/simulate", response_model=SimulationOut, responses=problems(400, 401, 403, 413, 422, 503)
)
async def simulate_rules(
    body: SimulateIn, request: Request, admin: RulesAdmin, rules: RulesDep
) -> SimulationOut:
    """Simulate a draft rule set on a scenario (and the active rules beside it); nothing changes.

    One simulation at a time per replica (429 while one runs); runs over the size or time
    limit are refused (422) or stopped (503).
    """
    settings = request.app.state.settings
    scenario_text = body.scenario
    if scenario_text is None:
        scenario_text = await asyncio.to_thread(EXAMPLE_SCENARIO.read_text, encoding="utf-8")
    run = SimulationRequest(
        draft=body.rules,
        active=rules.active.row.source if body.compare_with_active else None,
        scenario=scenario_text,
        policy=body.policy,
        seeds=body.seeds,
    )
    try:
        draft, scenario = await asyncio.to_thread(check_request, run)
    except RulesInvalid as exc:
        raise _invalid(exc) from None
    contacts = simulated_contacts(draft, scenario, run)
    if contacts > settings.simulation_max_contacts:
        raise InvalidInput(
            f"the run would simulate about {contacts:.0f} contacts, more than the limit of "
            f"{settings.simulation_max_contacts}: use fewer seeds or a smaller scenario",
            errors=[{"field": "seeds", "message": "too many contacts for one API run"}],
        )
    try:
        report = await _simulations(request).run(run)
    except SimulationBusy as exc:
        raise TooManyRequests(str(exc), headers={"Retry-After": "10"}) from None
    except (SimulationTimedOut, SimulationFailed) as exc:
        raise Unavailable(str(exc)) from None
    return SimulationOut.model_validate(report)
