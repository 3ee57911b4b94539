"""Real-time state in Redis, shared by every replica (redis-py asyncio, Lua scripts).

The same interface and the same guarantees as the in-process backend: every change that must
be atomic is one Lua script (`redis_scripts`), so two replicas can never hand the last free slot
of an agent to two contacts, nor take one waiting contact twice. Agent profiles (skills,
languages) change rarely: each process keeps them as arrays and reloads them when the shared
profile version moves; presence, load and idle time are read fresh for every dispatch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
from redis.asyncio import Redis

from routing_rules.compiled import CompiledRules, ContactFacts
from routing_rules.scoring import AgentPool
from service.state import redis_scripts as lua
from service.state.base import RealtimeState
from service.state.memory import _PROFILE_VERSIONS
from service.state.records import AgentRecord, AgentStatus, Reservation, WaitingEntry

US = "\x1f"  # separates agent and channel in a field name (neither contains it)


def _field(agent_id: str, channel: str) -> str:
    return f"{agent_id}{US}{channel}"


def _check_at(value: float) -> str:
    return "" if math.isinf(value) else repr(value)


def entry_json(entry: WaitingEntry) -> str:
    """A waiting entry as JSON (frozensets as sorted lists, an infinite check time as null).

    Field by field rather than `dataclasses.asdict`, whose deep copies cost more than the
    rest of a route call's encoding.
    """
    facts = entry.facts
    data = {
        "contact_id": entry.contact_id,
        "facts": {
            "channel": facts.channel,
            "segment": facts.segment,
            "inquiry_type": facts.inquiry_type,
            "journey_stage": facts.journey_stage,
            "language": facts.language,
            "attributes": dict(facts.attributes),
        },
        "channel": entry.channel,
        "language": entry.language,
        "rule": entry.rule,
        "stage": entry.stage,
        "priority": entry.priority,
        "enqueued_at": entry.enqueued_at,
        "stage_entered_at": entry.stage_entered_at,
        "last_eligible_free_at": entry.last_eligible_free_at,
        "excluded_agents": sorted(entry.excluded_agents),
        "excluded_until": entry.excluded_until,
        "next_check_at": None if math.isinf(entry.next_check_at) else entry.next_check_at,
        "tier": entry.tier,
    }
    return orjson.dumps(data).decode()


def entry_from_json(text: str | bytes) -> WaitingEntry:
    """The inverse of `entry_json`."""
    data = json.loads(text)
    data["facts"] = ContactFacts(**data["facts"])
    data["excluded_agents"] = frozenset(data["excluded_agents"])
    if data["next_check_at"] is None:
        data["next_check_at"] = math.inf
    return WaitingEntry(**data)


def _reservation_json(reservation: Reservation) -> str:
    return json.dumps(asdict(reservation), separators=(",", ":"))


def _reservation_from_json(text: str | bytes) -> Reservation:
    return Reservation(**json.loads(text))


class RedisState(RealtimeState):
    """The shared state backend; `prefix` namespaces the keys (one hash tag for all)."""

    def __init__(self, client: Redis, rules: CompiledRules, *, prefix: str = "skillroute") -> None:
        self._r = client
        self._rules = rules
        self._k = f"{{{prefix}}}:"
        self._scripts = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "ADD_WAITING",
                "UPDATE_WAITING",
                "REMOVE_WAITING",
                "DUE_FOR_CHECK",
                "CLAIM",
                "RELEASE",
                "END_RESERVATION",
                "SET_STATUS",
                "PUT_AGENT",
                "ADD_LOAD",
            )
        }
        # Profiles as arrays, valid for `_profiles_at` (the shared profile version).
        self._profiles_at: int | None = None
        self._ids: list[str] = []
        self._id_array: npt.NDArray[np.object_] = np.empty(0, dtype=object)
        self._skills = np.zeros((0, len(rules.skills)), dtype=np.float32)
        self._languages = np.zeros((0, len(rules.languages)), dtype=np.bool_)
        self._records: dict[str, AgentRecord] = {}
        self._rows: dict[str, int] = {}
        self._local_version = next(_PROFILE_VERSIONS)

    def key(self, name: str) -> str:
        """The full Redis key of `name`."""
        return self._k + name

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=[self.key(k) for k in keys], args=list(args))

    # ---- agents ------------------------------------------------------------------------------
    def known_skills(self) -> set[str]:
        """Skills of the agents as of the last profile load (rules lint; may lag a moment)."""
        return {s for a in self._records.values() for s in a.skills}

    async def clear_local(self) -> None:
        """Forget what this process cached of the shared state (it was lost or rebuilt)."""
        self._profiles_at = None

    async def reindex(self, rules: CompiledRules) -> None:
        """Use a new vocabulary; the profile arrays are rebuilt on next use."""
        self._rules = rules
        self._profiles_at = None

    async def put_agent(self, agent: AgentRecord) -> None:
        """Create or replace an agent's profile and presence (load is kept)."""
        old = await self._r.hget(self.key("profiles"), agent.agent_id)
        old_channels = set(json.loads(old)["capacity"]) if old else set()
        profile = {
            "name": agent.name,
            "skills": agent.skills,
            "languages": agent.languages,
            "capacity": agent.capacity,
        }
        args: list[Any] = [
            agent.agent_id,
            json.dumps(profile, separators=(",", ":")),
            agent.status,
            repr(agent.status_since),
        ]
        for channel, capacity in agent.capacity.items():
            args += [_field(agent.agent_id, channel), capacity]
        args.append("--")
        args += [_field(agent.agent_id, c) for c in old_channels - set(agent.capacity)]
        args += ["--", self._k]
        await self._run(
            "PUT_AGENT",
            ["profiles", "status", "since", "idle", "cap", "profile_version", "agent_order"],
            args,
        )

    async def _profiles(self) -> None:
        """Reload the profile arrays if any agent's profile changed since they were built."""
        version = int(await self._r.get(self.key("profile_version")) or 0)
        if version == self._profiles_at:
            return
        raw = {_s(k): v for k, v in (await self._r.hgetall(self.key("profiles"))).items()}
        order = [
            _s(k) for k in cast(list[bytes], await self._r.zrange(self.key("agent_order"), 0, -1))
        ]
        rules = self._rules
        # The vectors' order (every stored agent is in `agent_order`, see PUT_AGENT).
        ids = [a for a in order if a in raw]
        skills = np.zeros((len(ids), len(rules.skills)), dtype=np.float32, order="F")
        languages = np.zeros((len(ids), len(rules.languages)), dtype=np.bool_, order="F")
        records = {}
        for row, agent_id in enumerate(ids):
            profile = json.loads(raw[agent_id])
            skills[row] = [profile["skills"].get(s, 0) for s in rules.skills]
            languages[row] = [lang in profile["languages"] for lang in rules.languages]
            records[agent_id] = AgentRecord(
                agent_id,
                profile["name"],
                profile["skills"],
                profile["languages"],
                profile["capacity"],
            )
        self._ids, self._skills, self._languages, self._records = ids, skills, languages, records
        self._rows = {agent_id: row for row, agent_id in enumerate(ids)}
        self._id_array = np.empty(len(ids), dtype=object)
        self._id_array[:] = ids
        self._profiles_at = version
        # Process-wide like the in-process backend's, so scoring caches never mix two states.
        self._local_version = next(_PROFILE_VERSIONS)

    async def _presence(self) -> tuple[dict[str, str], dict[str, float], dict[str, float]]:
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self.key("status"))
        pipe.hgetall(self.key("since"))
        pipe.hgetall(self.key("idle"))
        status, since, idle = await pipe.execute()
        return (
            {_s(k): _s(v) for k, v in status.items()},
            {_s(k): float(v) for k, v in since.items()},
            {_s(k): float(v) for k, v in idle.items()},
        )

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """One agent's profile and presence (read directly: no profile reload)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hget(self.key("profiles"), agent_id)
        pipe.hget(self.key("status"), agent_id)
        pipe.hget(self.key("since"), agent_id)
        raw, status, since = await pipe.execute()
        if raw is None:
            return None
        profile = json.loads(raw)
        return AgentRecord(
            agent_id,
            profile["name"],
            profile["skills"],
            profile["languages"],
            profile["capacity"],
            _s(status) if status else "offline",  # type: ignore[arg-type]
            float(since or 0.0),
        )

    async def agents(self) -> list[AgentRecord]:
        """Every known agent."""
        await self._profiles()
        status, since, _ = await self._presence()
        return [
            AgentRecord(
                r.agent_id,
                r.name,
                r.skills,
                r.languages,
                r.capacity,
                status.get(r.agent_id, "offline"),  # type: ignore[arg-type]
                since.get(r.agent_id, 0.0),
            )
            for r in self._records.values()
        ]

    async def set_status(self, agent_id: str, status: AgentStatus, at: float) -> bool:
        """Change an agent's presence; False if the agent is unknown."""
        done = await self._run(
            "SET_STATUS",
            ["status", "since", "idle", "busy", "profiles"],
            [agent_id, status, repr(at), self._k],
        )
        return bool(done)

    async def load_of(self, agent_id: str) -> dict[str, int]:
        """Contacts reserved or connected to the agent, per channel."""
        channels = list(self._rules.channels)
        values = await self._r.hmget(self.key("load"), [_field(agent_id, c) for c in channels])
        return {c: int(v) for c, v in zip(channels, values, strict=True) if v and int(v)}

    async def pool(self, channel: str, now: float) -> AgentPool:
        """Every agent as arrays; `free` is set on `channel` only (the other channels read 0).

        Free slots and idle times come as two vectors indexed by the agents' order (kept by
        every script that changes them), so a dispatch costs two small reads and no parsing
        per agent, however many agents there are.
        """
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self.key("profile_version"))
        pipe.get(self.key(f"freevec:{channel}"))
        pipe.get(self.key("idlevec"))
        version, free_raw, idle_raw = await pipe.execute()
        if int(version or 0) != self._profiles_at:
            await self._profiles()
        n = len(self._ids)
        c = self._rules.channels.index(channel)
        free = np.zeros((n, len(self._rules.channels)), dtype=np.int32, order="F")
        column = np.frombuffer(free_raw or b"", dtype="<i4")[:n]
        free[: len(column), c] = column
        idle_since = np.full(n, now, dtype=np.float64)
        idles = np.frombuffer(idle_raw or b"", dtype="<f8")[:n]
        idle_since[: len(idles)] = idles
        return AgentPool(
            ids=self._id_array,
            skills=self._skills,
            languages=self._languages,
            free=free,
            idle_seconds=now - idle_since,
            profile_version=self._local_version,
        )

    async def free_slots(self, channel: str) -> int:
        """Total free capacity on `channel` across available agents."""
        raw = cast(bytes | None, await self._r.get(self.key(f"freevec:{channel}")))
        return int(np.frombuffer(raw or b"", dtype="<i4").sum())

    async def staffed(self, channel: str) -> int:
        """Number of available agents that can take `channel` at all."""
        return int(await self._r.scard(self.key(f"staffed:{channel}")))

    # ---- waiting set ------------------------------------------------------------------------
    def _queue_keys(self, channel: str) -> list[str]:
        return ["waiting", f"queue:{channel}", f"ranks:{channel}", "checks"]

    async def add_waiting(self, entry: WaitingEntry) -> None:
        """Put a contact in the waiting set (a contact already waiting is left as it is)."""
        await self._run(
            "ADD_WAITING",
            [*self._queue_keys(entry.channel), "seq"],
            [entry.contact_id, entry_json(entry), entry.queue_rank, _check_at(entry.next_check_at)],
        )

    async def update_waiting(self, entries: Sequence[WaitingEntry]) -> None:
        """Store new stage/eligibility bookkeeping for waiting contacts still waiting."""
        for entry in entries:
            await self._run(
                "UPDATE_WAITING",
                ["waiting", "checks"],
                [entry.contact_id, entry_json(entry), _check_at(entry.next_check_at)],
            )

    async def remove_waiting(self, contact_id: str) -> WaitingEntry | None:
        """Take a contact out of the waiting set; None if it was not waiting."""
        raw = await self._r.hget(self.key("waiting"), contact_id)
        if raw is None:
            return None
        entry = entry_from_json(raw)
        removed = await self._run(
            "REMOVE_WAITING", self._queue_keys(entry.channel), [contact_id, entry.queue_rank]
        )
        return None if removed is None else entry_from_json(removed)

    async def waiting(self, channel: str | None = None) -> list[WaitingEntry]:
        """Waiting contacts, oldest first (all channels when `channel` is None)."""
        channels = self._rules.channels if channel is None else [channel]
        out: list[tuple[float, WaitingEntry]] = []
        for name in channels:
            scored = cast(
                list[tuple[bytes, float]],
                await self._r.zrange(self.key(f"queue:{name}"), 0, -1, withscores=True),
            )
            if not scored:
                continue
            raws = await self._r.hmget(self.key("waiting"), [member for member, _ in scored])
            out += [
                (float(seq), entry_from_json(raw))
                for (_, seq), raw in zip(scored, raws, strict=True)
                if raw is not None
            ]
        out.sort(key=lambda pair: pair[0])
        return [entry for _, entry in out]

    async def due_for_check(self, now: float) -> list[WaitingEntry]:
        """Waiting contacts whose `next_check_at` has come (each returned once per due time)."""
        raws = await self._run("DUE_FOR_CHECK", ["checks", "waiting"], [repr(now)])
        return [entry_from_json(raw) for raw in raws]

    async def waiting_entry(self, contact_id: str) -> WaitingEntry | None:
        """The live waiting entry of one contact, if it waits."""
        raw = await self._r.hget(self.key("waiting"), contact_id)
        return None if raw is None else entry_from_json(raw)

    async def waiting_count(self, channel: str) -> int:
        """How many contacts wait on `channel`."""
        return int(await self._r.zcard(self.key(f"queue:{channel}")))

    async def position(self, channel: str, queue_rank: int) -> int:
        """Queue position of a contact that just joined `channel` with `queue_rank`."""
        counts = await self._r.hgetall(self.key(f"ranks:{channel}"))
        return sum(int(n) for rank, n in counts.items() if int(rank) >= queue_rank)

    # ---- claims and reservations ---------------------------------------------------------------
    async def claim(self, entry: WaitingEntry, reservation: Reservation) -> bool:
        """Atomically move a waiting contact to a reservation on a free agent slot."""
        claimed = await self._run(
            "CLAIM",
            [
                *self._queue_keys(entry.channel),
                "status",
                "cap",
                "load",
                "busy",
                "idle",
                "res",
                "res_exp",
                f"res_agent:{reservation.agent_id}",
            ],
            [
                entry.contact_id,
                entry.queue_rank,
                reservation.agent_id,
                _field(reservation.agent_id, reservation.channel),
                reservation.reservation_id,
                _reservation_json(reservation),
                repr(reservation.expires_at),
                repr(reservation.created_at),
                reservation.channel,
                self._k,
            ],
        )
        return bool(claimed)

    async def reservation(self, reservation_id: str) -> Reservation | None:
        """An open reservation."""
        raw = await self._r.hget(self.key("res"), reservation_id)
        return None if raw is None else _reservation_from_json(raw)

    async def reservations_of(self, agent_id: str) -> list[Reservation]:
        """Open reservations offered to one agent."""
        ids = await self._r.smembers(self.key(f"res_agent:{agent_id}"))
        if not ids:
            return []
        raws = await self._r.hmget(self.key("res"), list(ids))
        return [_reservation_from_json(raw) for raw in raws if raw is not None]

    async def end_reservation(
        self, reservation_id: str, *, keep_load: bool, now: float
    ) -> Reservation | None:
        """Close a reservation: keep the slot taken (accepted) or free it (rejected/expired)."""
        found = await self.reservation(reservation_id)
        if found is None:
            return None
        raw = await self._run(
            "END_RESERVATION",
            ["res", "res_exp", f"res_agent:{found.agent_id}", "load", "busy", "idle"],
            [
                reservation_id,
                "1" if keep_load else "0",
                found.agent_id,
                _field(found.agent_id, found.channel),
                repr(now),
                found.channel,
                self._k,
            ],
        )
        return None if raw is None else _reservation_from_json(raw)

    async def due_reservations(self, now: float) -> list[Reservation]:
        """Open reservations whose expiry has passed."""
        ids = cast(list[bytes], await self._r.zrangebyscore(self.key("res_exp"), "-inf", now))
        if not ids:
            return []
        raws = await self._r.hmget(self.key("res"), ids)
        return [_reservation_from_json(raw) for raw in raws if raw is not None]

    async def add_load(self, agent_id: str, channel: str) -> None:
        """Count one more connected contact on an agent (recovery after restart)."""
        await self._run(
            "ADD_LOAD", ["load", "busy"], [agent_id, _field(agent_id, channel), channel, self._k]
        )

    async def release(self, agent_id: str, channel: str, now: float) -> None:
        """Free one slot of an agent (a connected contact ended)."""
        await self._run(
            "RELEASE",
            ["load", "busy", "idle"],
            [agent_id, _field(agent_id, channel), repr(now), channel, self._k],
        )

    async def clear(self) -> None:
        """Delete every key of this state (tests, and rebuilding after Redis lost its data)."""
        keys = [k async for k in self._r.scan_iter(match=self._k + "*")]
        if keys:
            await self._r.delete(*keys)
        self._profiles_at = None


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
