"""Agents (profiles, presence, live load) and the queue snapshot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from starlette.convertors import StringConvertor, register_url_convertor

from service import clock
from service.api.deps import AcdCaller, AgentsDep, RoutingDep, SingleValuedQuery
from service.models import (
    AgentIn,
    AgentList,
    AgentOut,
    AgentStatusName,
    BulkStatusIn,
    BulkStatusOut,
    QueueEntryOut,
    QueueOut,
    StatusIn,
    problems,
)

router = APIRouter(prefix="/v1", tags=["agents"])


class _AgentIdConvertor(StringConvertor):
    """An agent id in a path: never `status`, which names the bulk status endpoint.

    OpenAPI matches concrete paths before templated ones, so `/v1/agents/status` is only the
    bulk endpoint; without this, `PUT /v1/agents/status` would create an agent named "status".
    """

    regex = r"(?!status$)[^/]+"


register_url_convertor("agent_id", _AgentIdConvertor())

AgentId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$",
        description="`status` is reserved (bulk status change)",
        json_schema_extra={"not": {"const": "status"}},
    ),
]


@router.put(
    "/agents/{agent_id:agent_id}",
    response_model=AgentOut,
    status_code=200,
    responses={
        201: {"model": AgentOut, "description": "Created"},
        **problems(400, 401, 403, 405, 413, 422),
    },
)
async def put_agent(
    agent_id: AgentId, body: AgentIn, caller: AcdCaller, agents: AgentsDep, response: Response
) -> AgentOut:
    """Create or replace an agent's skills, languages, capacity per channel and status."""
    agent, created = await agents.put(agent_id, body)
    if created:
        response.status_code = 201
    return agent


@router.get("/agents", response_model=AgentList, responses=problems(401, 403, 422))
async def list_agents(
    caller: AcdCaller,
    single_values: SingleValuedQuery,
    agents: AgentsDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: AgentStatusName | None = None,
) -> AgentList:
    """Agents with live status, load and free capacity, sorted by id."""
    items, total = await agents.page(offset=offset, limit=limit, status=status)
    return AgentList(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/agents/{agent_id:agent_id}",
    response_model=AgentOut,
    responses=problems(401, 403, 404, 405, 422),
)
async def get_agent(agent_id: AgentId, caller: AcdCaller, agents: AgentsDep) -> AgentOut:
    """One agent with live status, load and free capacity."""
    return await agents.get(agent_id)


@router.post(
    "/agents/{agent_id:agent_id}/status",
    response_model=AgentOut,
    responses=problems(400, 401, 403, 404, 413, 422),
)
async def set_agent_status(
    agent_id: AgentId, body: StatusIn, caller: AcdCaller, agents: AgentsDep
) -> AgentOut:
    """Change one agent's presence; becoming available triggers a dispatch."""
    return await agents.set_status(agent_id, body.status)


@router.post(
    "/agents/status", response_model=BulkStatusOut, responses=problems(400, 401, 403, 404, 413, 422)
)
async def set_agents_status(
    body: BulkStatusIn, caller: AcdCaller, agents: AgentsDep
) -> BulkStatusOut:
    """Change many agents' presence at once, followed by a single dispatch."""
    updated, assigned = await agents.set_many([(c.agent_id, c.status) for c in body.changes])
    return BulkStatusOut(updated=updated, assigned=assigned)


@router.get("/queue", response_model=QueueOut, responses=problems(401, 403, 422))
async def queue_snapshot(
    caller: AcdCaller,
    single_values: SingleValuedQuery,
    routing: RoutingDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> QueueOut:
    """Waiting contacts, most urgent first: channel, rule, stage, priority and age."""
    entries = await routing.queue()
    rules = routing.rules.compiled
    now = clock.now()
    by_channel: dict[str, int] = {}
    for e in entries:
        by_channel[e.channel] = by_channel.get(e.channel, 0) + 1
    items = []
    for e in entries[:limit]:
        rule = rules.rule_named(e.rule) or rules.implicit
        stage = rule.stages[min(e.stage, len(rule.stages) - 1)].name
        items.append(
            QueueEntryOut(
                contact_id=e.contact_id,
                channel=e.channel,
                rule=e.rule,
                stage=stage,
                priority=e.priority,
                tier=e.tier,
                wait_seconds=round(now - e.enqueued_at, 3),
            )
        )
    return QueueOut(waiting=len(entries), by_channel=by_channel, items=items)
