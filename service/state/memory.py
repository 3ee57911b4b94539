"""In-process real-time state: one process, numpy arrays kept up to date incrementally.

Agent profiles live in arrays indexed by row so that a dispatch snapshot is a handful of
vectorised slices, not a loop over agents. All methods run on the event loop thread and never
await, so each one is atomic with respect to the others.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routing_rules.compiled import CompiledRules
from routing_rules.scoring import AgentPool
from service.state.base import RealtimeState
from service.state.records import (
    PRIORITY_LEVELS,
    AgentRecord,
    AgentStatus,
    Reservation,
    WaitingEntry,
)

# Process-wide, so that two state objects (tests, a rebuilt state) never share a version.
_PROFILE_VERSIONS = itertools.count(1)


class MemoryState(RealtimeState):
    """The embedded default state backend."""

    def __init__(self, rules: CompiledRules) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._waiting: dict[str, WaitingEntry] = {}  # insertion order = arrival order
        self._priority_counts: dict[str, list[int]] = defaultdict(
            lambda: [0] * (2 * PRIORITY_LEVELS)
        )
        self._checks: list[tuple[float, str]] = []  # heap of (next_check_at, contact_id)
        self._reservations: dict[str, Reservation] = {}
        self._rules = rules
        self._allocate(16)

    # ---- agent arrays -------------------------------------------------------------------
    def _allocate(self, rows: int) -> None:
        n_s, n_l, n_c = (
            len(self._rules.skills),
            len(self._rules.languages),
            len(self._rules.channels),
        )
        # Column-major: dispatch reads whole columns (one skill, one language, one channel).
        self._skills = np.zeros((rows, n_s), dtype=np.float32, order="F")  # levels 0-5, exact
        self._languages = np.zeros((rows, n_l), dtype=np.bool_, order="F")
        self._capacity = np.zeros((rows, n_c), dtype=np.int32)
        self._load = np.zeros((rows, n_c), dtype=np.int32)
        # Free capacity as dispatch sees it: capacity - load, and 0 while not available.
        self._free = np.zeros((rows, n_c), dtype=np.int32, order="F")
        self._profile_version = next(_PROFILE_VERSIONS)
        self._available = np.zeros(rows, dtype=np.bool_)
        self._idle_since = np.zeros(rows, dtype=np.float64)
        self._id_array: npt.NDArray[np.object_] = np.empty(rows, dtype=object)

    def _grow(self) -> None:
        old = (
            self._skills,
            self._languages,
            self._capacity,
            self._load,
            self._available,
            self._idle_since,
            self._id_array,
        )
        self._allocate(max(16, 2 * old[0].shape[0]))
        n = old[0].shape[0]
        self._skills[:n], self._languages[:n], self._capacity[:n] = old[0], old[1], old[2]
        self._load[:n], self._available[:n], self._idle_since[:n] = old[3], old[4], old[5]
        self._id_array[:n] = old[6]
        for row in range(len(self._ids)):
            self._refresh_free(row)

    def _refresh_free(self, row: int) -> None:
        if self._available[row]:
            np.maximum(self._capacity[row] - self._load[row], 0, out=self._free[row])
        else:
            self._free[row] = 0

    def _write_row(self, row: int, agent: AgentRecord) -> None:
        rules = self._rules
        self._profile_version = next(_PROFILE_VERSIONS)
        self._skills[row] = [agent.skills.get(s, 0) for s in rules.skills]
        self._languages[row] = [lang in agent.languages for lang in rules.languages]
        self._capacity[row] = [agent.capacity.get(c, 0) for c in rules.channels]
        self._available[row] = agent.status == "available"
        self._id_array[row] = agent.agent_id
        self._refresh_free(row)

    def known_skills(self) -> set[str]:
        """Skills of the agents this process knows (rules lint)."""
        return {s for a in self._agents.values() for s in a.skills}

    async def reindex(self, rules: CompiledRules) -> None:
        """Rebuild the agent arrays for a new vocabulary (skills, channels, languages)."""
        load_by_name = {
            agent_id: dict(zip(self._rules.channels, self._load[row].tolist(), strict=True))
            for agent_id, row in self._row.items()
        }
        idle = {agent_id: float(self._idle_since[row]) for agent_id, row in self._row.items()}
        self._rules = rules
        self._allocate(max(16, self._skills.shape[0]))
        for agent_id, row in self._row.items():
            self._write_row(row, self._agents[agent_id])
            loads = load_by_name[agent_id]
            self._load[row] = [loads.get(c, 0) for c in rules.channels]
            self._idle_since[row] = idle[agent_id]
            self._refresh_free(row)

    async def put_agent(self, agent: AgentRecord) -> None:
        """Create or replace an agent's profile and presence (load is kept)."""
        row = self._row.get(agent.agent_id)
        if row is None:
            row = len(self._ids)
            if row >= self._skills.shape[0]:
                self._grow()
            self._row[agent.agent_id] = row
            self._ids.append(agent.agent_id)
            self._idle_since[row] = agent.status_since
        previous = self._agents.get(agent.agent_id)
        if previous is None or previous.status != agent.status:
            self._idle_since[row] = agent.status_since
        self._agents[agent.agent_id] = agent
        self._write_row(row, agent)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """One agent's profile and presence."""
        return self._agents.get(agent_id)

    async def agents(self) -> list[AgentRecord]:
        """Every known agent."""
        return list(self._agents.values())

    async def set_status(self, agent_id: str, status: AgentStatus, at: float) -> bool:
        """Change an agent's presence; False if the agent is unknown."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return False
        if agent.status != status:
            agent.status = status
            agent.status_since = at
            row = self._row[agent_id]
            self._available[row] = status == "available"
            self._refresh_free(row)
            if status == "available" and not self._load[row].any():
                self._idle_since[row] = at
        return True

    async def load_of(self, agent_id: str) -> dict[str, int]:
        """Contacts reserved or connected to the agent, per channel."""
        row = self._row.get(agent_id)
        if row is None:
            return {}
        return {c: int(n) for c, n in zip(self._rules.channels, self._load[row], strict=True) if n}

    def _channel(self, channel: str) -> int:
        return self._rules.channels.index(channel)

    async def pool(self, channel: str, now: float) -> AgentPool:
        """Every agent as arrays; `free` is 0 on rows that cannot take `channel` now.

        The arrays are read-only views of the live state (no copy): dispatch reads them
        synchronously and applies its choices through `claim`, which re-checks everything.
        """
        n = len(self._ids)
        return AgentPool(
            ids=self._id_array[:n],
            skills=self._skills[:n],
            languages=self._languages[:n],
            free=self._free[:n],
            idle_seconds=now - self._idle_since[:n],
            profile_version=self._profile_version,
        )

    async def free_slots(self, channel: str) -> int:
        """Total free capacity on `channel` across available agents."""
        return int(self._free[: len(self._ids), self._channel(channel)].sum())

    async def staffed(self, channel: str) -> int:
        """Number of available agents that can take `channel` at all."""
        c = self._channel(channel)
        n = len(self._ids)
        return int(np.count_nonzero(self._available[:n] & (self._capacity[:n, c] > 0)))

    # ---- waiting set --------------------------------------------------------------------
    async def add_waiting(self, entry: WaitingEntry) -> None:
        """Put a contact in the waiting set."""
        if entry.contact_id in self._waiting:
            return
        self._waiting[entry.contact_id] = entry
        self._priority_counts[entry.channel][entry.queue_rank] += 1
        self._schedule(entry)

    def _schedule(self, entry: WaitingEntry) -> None:
        if entry.next_check_at != math.inf:
            heapq.heappush(self._checks, (entry.next_check_at, entry.contact_id))

    async def update_waiting(self, entries: Sequence[WaitingEntry]) -> None:
        """Store new stage/eligibility bookkeeping for waiting contacts still waiting."""
        for entry in entries:
            previous = self._waiting.get(entry.contact_id)
            if previous is not None:
                self._waiting[entry.contact_id] = entry
                if entry.next_check_at != previous.next_check_at:
                    self._schedule(entry)

    async def due_for_check(self, now: float) -> list[WaitingEntry]:
        """Waiting contacts whose `next_check_at` has come (each returned once per due time)."""
        due = []
        while self._checks and self._checks[0][0] <= now:
            at, contact_id = heapq.heappop(self._checks)
            entry = self._waiting.get(contact_id)
            # Stale heap items (contact gone, or rescheduled) are skipped, not removed eagerly.
            if entry is not None and entry.next_check_at == at:
                due.append(entry)
        return due

    async def remove_waiting(self, contact_id: str) -> WaitingEntry | None:
        """Take a contact out of the waiting set; None if it was not waiting."""
        entry = self._waiting.pop(contact_id, None)
        if entry is not None:
            self._priority_counts[entry.channel][entry.queue_rank] -= 1
        return entry

    async def waiting(self, channel: str | None = None) -> list[WaitingEntry]:
        """Waiting contacts, oldest first (all channels when `channel` is None)."""
        if channel is None:
            return list(self._waiting.values())
        return [e for e in self._waiting.values() if e.channel == channel]

    async def waiting_entry(self, contact_id: str) -> WaitingEntry | None:
        """The live waiting entry of one contact, if it waits."""
        return self._waiting.get(contact_id)

    async def reservations_of(self, agent_id: str) -> list[Reservation]:
        """Open reservations offered to one agent."""
        return [r for r in self._reservations.values() if r.agent_id == agent_id]

    async def waiting_count(self, channel: str) -> int:
        """How many contacts wait on `channel`."""
        return sum(self._priority_counts[channel]) if channel in self._priority_counts else 0

    async def position(self, channel: str, queue_rank: int) -> int:
        """Queue position of a contact that just joined `channel` with `queue_rank`."""
        counts = self._priority_counts[channel]
        return sum(counts[queue_rank:])

    # ---- claims and reservations --------------------------------------------------------
    async def claim(self, entry: WaitingEntry, reservation: Reservation) -> bool:
        """Atomically move a waiting contact to a reservation on a free agent slot."""
        if entry.contact_id not in self._waiting:
            return False
        row = self._row.get(reservation.agent_id)
        if row is None or not self._available[row]:
            return False
        c = self._channel(reservation.channel)
        if self._load[row, c] >= self._capacity[row, c]:
            return False
        self._load[row, c] += 1
        self._refresh_free(row)
        # Idle time counts from the agent's last offer or last free moment, whichever is later,
        # so a busy agent does not look long idle to the fairness tie-break.
        self._idle_since[row] = reservation.created_at
        await self.remove_waiting(entry.contact_id)
        self._reservations[reservation.reservation_id] = reservation
        return True

    async def reservation(self, reservation_id: str) -> Reservation | None:
        """An open reservation."""
        return self._reservations.get(reservation_id)

    async def end_reservation(
        self, reservation_id: str, *, keep_load: bool, now: float
    ) -> Reservation | None:
        """Close a reservation: keep the slot taken (accepted) or free it (rejected/expired)."""
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is not None and not keep_load:
            await self.release(reservation.agent_id, reservation.channel, now)
        return reservation

    async def due_reservations(self, now: float) -> list[Reservation]:
        """Open reservations whose expiry has passed."""
        return [r for r in self._reservations.values() if r.expires_at <= now]

    async def add_load(self, agent_id: str, channel: str) -> None:
        """Count one more connected contact on an agent (recovery after restart)."""
        row = self._row.get(agent_id)
        if row is not None and channel in self._rules.channels:
            self._load[row, self._channel(channel)] += 1
            self._refresh_free(row)

    async def release(self, agent_id: str, channel: str, now: float) -> None:
        """Free one slot of an agent (a connected contact ended)."""
        row = self._row.get(agent_id)
        if row is None or channel not in self._rules.channels:
            return
        c = self._channel(channel)
        if self._load[row, c] > 0:
            self._load[row, c] -= 1
            self._refresh_free(row)
        if not self._load[row].any():
            self._idle_since[row] = now
