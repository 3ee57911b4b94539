"""Agent profiles and presence: create/update, status changes (single and bulk), listing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service import clock
from service.models import AgentIn, AgentOut, AgentStatusName
from service.problems import NotFound
from service.routing import RoutingService
from service.state.records import AgentRecord
from service.storage.tables import AgentRow
from service.vocabulary import check_agent


class AgentDesk:
    """Keeps agents in the real-time state and the database, and dispatches on changes."""

    def __init__(self, routing: RoutingService, engine: Engine) -> None:
        self._routing = routing
        self._state = routing.state
        self._engine = engine

    async def put(
        self, agent_id: str, body: AgentIn, *, rebuilding: bool = False
    ) -> tuple[AgentOut, bool]:
        """Create or replace an agent; returns the agent and whether it was created."""
        if not rebuilding:
            self._routing.ensure_ready()
        check_agent(self._routing.rules.compiled, body)
        now = clock.now()
        previous = await self._state.get_agent(agent_id)
        status_since = previous.status_since if previous and previous.status == body.status else now
        record = AgentRecord(
            agent_id,
            body.name,
            dict(body.skills),
            list(body.languages),
            dict(body.capacity),
            body.status,
            status_since,
        )
        await asyncio.to_thread(self._save, [record], now)
        await self._state.put_agent(record)
        if record.status == "available":
            await self._routing.dispatch_channels(record.capacity, trigger="agent_update")
        else:
            await self._routing.withdraw_offers(agent_id)
        return await self.get(agent_id), previous is None

    def _save(self, records: Sequence[AgentRecord], now: float) -> None:
        with Session(self._engine) as session:
            for r in records:
                session.merge(
                    AgentRow(
                        agent_id=r.agent_id,
                        name=r.name,
                        skills=r.skills,
                        languages=r.languages,
                        capacity=r.capacity,
                        status=r.status,
                        status_since=r.status_since,
                        updated_at=now,
                    )
                )
            session.commit()

    def _save_status(self, changes: Sequence[tuple[str, str]], now: float) -> None:
        with Session(self._engine) as session:
            for agent_id, status in changes:
                session.execute(
                    update(AgentRow)
                    .where(AgentRow.agent_id == agent_id)  # type: ignore[arg-type]
                    .values(status=status, status_since=now, updated_at=now)
                )
            session.commit()

    async def set_status(self, agent_id: str, status: AgentStatusName) -> AgentOut:
        """Change one agent's presence, then dispatch if it became available."""
        await self.set_many([(agent_id, status)])
        return await self.get(agent_id)

    async def set_many(self, changes: Sequence[tuple[str, AgentStatusName]]) -> tuple[int, int]:
        """Apply many presence changes, then run one dispatch; (updated, contacts assigned)."""
        self._routing.ensure_ready()
        unknown = [
            agent_id for agent_id, _ in changes if await self._state.get_agent(agent_id) is None
        ]
        if unknown:
            raise NotFound(f"unknown agent(s): {', '.join(unknown[:20])}")
        seen: dict[str, AgentStatusName] = {}
        for agent_id, status in changes:
            seen[agent_id] = status  # the last change of an agent in the batch wins
        now = clock.now()
        await asyncio.to_thread(self._save_status, list(seen.items()), now)
        channels: set[str] = set()
        for agent_id, status in seen.items():
            await self._state.set_status(agent_id, status, now)
            agent = await self._state.get_agent(agent_id)
            if status == "available" and agent is not None:
                channels.update(c for c, n in agent.capacity.items() if n > 0)
            elif status != "available":
                await self._routing.withdraw_offers(agent_id)
        assigned = await self._routing.dispatch_channels(sorted(channels), trigger="status")
        return len(seen), assigned

    async def get(self, agent_id: str) -> AgentOut:
        """One agent with live load and free capacity."""
        agent = await self._state.get_agent(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} does not exist")
        return await self._out(agent)

    async def _out(self, agent: AgentRecord) -> AgentOut:
        load = await self._state.load_of(agent.agent_id)
        free = {
            c: max(0, n - load.get(c, 0)) if agent.status == "available" else 0
            for c, n in agent.capacity.items()
        }
        return AgentOut(
            agent_id=agent.agent_id,
            name=agent.name,
            skills=agent.skills,
            languages=agent.languages,
            capacity=agent.capacity,
            status=agent.status,
            status_since=agent.status_since,
            load=load,
            free=free,
        )

    async def page(
        self, *, offset: int, limit: int, status: AgentStatusName | None
    ) -> tuple[list[AgentOut], int]:
        """A page of agents (sorted by id) with live state."""
        agents = sorted(await self._state.agents(), key=lambda a: a.agent_id)
        if status is not None:
            agents = [a for a in agents if a.status == status]
        page = agents[offset : offset + limit]
        return [await self._out(a) for a in page], len(agents)

    async def recover(self) -> int:
        """Load every agent from the database into the real-time state."""
        rows = await asyncio.to_thread(self._rows)
        for row in rows:
            await self._state.put_agent(
                AgentRecord(
                    row.agent_id,
                    row.name,
                    dict(row.skills),
                    list(row.languages),
                    dict(row.capacity),
                    cast(AgentStatusName, row.status),
                    row.status_since,
                )
            )
        return len(rows)

    def _rows(self) -> list[AgentRow]:
        with Session(self._engine) as session:
            return list(session.exec(select(AgentRow)).all())
