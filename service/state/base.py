"""The real-time state interface: free capacity, the waiting set, reservations.

Everything a dispatch decides is applied through `claim`, which checks and takes in one atomic
step: the contact is still waiting, the agent is still available with a free slot on the
channel. A solve computed on a stale snapshot therefore can never over-assign; a claim that
loses simply leaves the contact waiting for the next dispatch. A shared backend (Redis) gives
the same guarantee across replicas with one script per claim.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from routing_rules.compiled import CompiledRules
from routing_rules.scoring import AgentPool
from service.state.records import AgentRecord, AgentStatus, Reservation, WaitingEntry


class RealtimeState(ABC):
    """Live routing state shared by every request and dispatch."""

    @abstractmethod
    def known_skills(self) -> set[str]:
        """Skills of the agents this process knows (rules lint; may lag other replicas)."""

    @abstractmethod
    async def reindex(self, rules: CompiledRules) -> None:
        """Rebuild the agent arrays for a new vocabulary (skills, channels, languages)."""

    @abstractmethod
    async def put_agent(self, agent: AgentRecord) -> None:
        """Create or replace an agent's profile and presence (load is kept)."""

    @abstractmethod
    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """One agent's profile and presence."""

    @abstractmethod
    async def agents(self) -> list[AgentRecord]:
        """Every known agent."""

    @abstractmethod
    async def set_status(self, agent_id: str, status: AgentStatus, at: float) -> bool:
        """Change an agent's presence; False if the agent is unknown."""

    @abstractmethod
    async def load_of(self, agent_id: str) -> dict[str, int]:
        """Contacts reserved or connected to the agent, per channel."""

    @abstractmethod
    async def pool(self, channel: str, now: float) -> AgentPool:
        """Agents available now with free capacity on `channel`, as arrays."""

    @abstractmethod
    async def free_slots(self, channel: str) -> int:
        """Total free capacity on `channel` across available agents."""

    @abstractmethod
    async def staffed(self, channel: str) -> int:
        """Number of available agents that can take `channel` at all."""

    @abstractmethod
    async def add_waiting(self, entry: WaitingEntry) -> None:
        """Put a contact in the waiting set."""

    @abstractmethod
    async def update_waiting(self, entries: Sequence[WaitingEntry]) -> None:
        """Store new stage/eligibility bookkeeping for waiting contacts still waiting."""

    @abstractmethod
    async def remove_waiting(self, contact_id: str) -> WaitingEntry | None:
        """Take a contact out of the waiting set (abandoned); None if it was not waiting."""

    @abstractmethod
    async def waiting(self, channel: str | None = None) -> list[WaitingEntry]:
        """Waiting contacts, oldest first (all channels when `channel` is None)."""

    @abstractmethod
    async def due_for_check(self, now: float) -> list[WaitingEntry]:
        """Waiting contacts whose `next_check_at` has come (each returned once per due time)."""

    @abstractmethod
    async def waiting_entry(self, contact_id: str) -> WaitingEntry | None:
        """The live waiting entry of one contact, if it waits."""

    @abstractmethod
    async def reservations_of(self, agent_id: str) -> list[Reservation]:
        """Open reservations offered to one agent."""

    @abstractmethod
    async def waiting_count(self, channel: str) -> int:
        """How many contacts wait on `channel`."""

    @abstractmethod
    async def position(self, channel: str, queue_rank: int) -> int:
        """Queue position of a contact that just joined `channel` with `queue_rank`."""

    @abstractmethod
    async def claim(self, entry: WaitingEntry, reservation: Reservation) -> bool:
        """Atomically move a waiting contact to a reservation on a free agent slot."""

    @abstractmethod
    async def reservation(self, reservation_id: str) -> Reservation | None:
        """An open reservation."""

    @abstractmethod
    async def end_reservation(
        self, reservation_id: str, *, keep_load: bool, now: float
    ) -> Reservation | None:
        """Close a reservation: keep the slot taken (accepted) or free it (rejected/expired)."""

    @abstractmethod
    async def due_reservations(self, now: float) -> list[Reservation]:
        """Open reservations whose expiry has passed."""

    @abstractmethod
    async def add_load(self, agent_id: str, channel: str) -> None:
        """Count one more connected contact on an agent (recovery after restart)."""

    @abstractmethod
    async def release(self, agent_id: str, channel: str, now: float) -> None:
        """Free one slot of an agent (a connected contact ended)."""
