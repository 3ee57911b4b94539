"""Keeping the shared real-time state built, and rebuilding it when Redis lost it.

PostgreSQL is the source of truth; Redis holds what routing needs at speed (agent presence and
load, the waiting set, reservations, live contact records). Redis may restart empty (no AOF, a
failover to an empty replica, a FLUSHALL). The state then has no `epoch` key. Every replica
notices (on its next contact lock, or within `CHECK_SECONDS`), stops answering calls that change
contacts (503) and `/readyz` (503), and commits what its batch writer still queues. One replica,
holding the `rebuild` lock, waits `GRACE_SECONDS` for the others' writes to land, clears what
is left of the prefix, loads agents and active contacts (waiting, offered with their original
reservation id and expiry, connected with their load), pass holds and known contact ids from
the database, and sets a new epoch. Each replica adopts it, drops what it cached of the old
state, and is ready again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis

from service import metrics
from service.state.redis_contacts import SharedContacts
from service.state.redis_state import RedisState
from service.storage.writer import BatchWriter

log = structlog.get_logger(__name__)

CHECK_SECONDS = 0.5
GRACE_SECONDS = 1.5  # > CHECK_SECONDS + a writer flush: other replicas' queued rows land first
REBUILD_LOCK_MS = 120_000

# KEYS: rebuild lock ; ARGV: token
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RealtimeKeeper:
    """Watches the shared state's epoch; rebuilds the state from the database when it is gone.

    `load` puts everything back (agents, then contacts, holds); it runs on one replica at a
    time, under the rebuild lock.
    """

    def __init__(
        self,
        *,
        client: Redis,
        state: RedisState,
        contacts: SharedContacts,
        writer: BatchWriter,
        load: Callable[[], Awaitable[None]],
        on_adopted: Callable[[], Awaitable[object]] | None = None,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self._grace = grace
        self._r = client
        self._state = state
        self._contacts = contacts
        self._writer = writer
        self._load = load
        self._on_adopted = on_adopted
        self._unlock = client.register_script(_UNLOCK)
        self.ready = False
        self.problem = "the shared real-time state has not been built yet"
        self.rebuilds = 0  # rebuilds this replica ran

    async def start(self) -> None:
        """At start: build the state if nobody has, else adopt the one that is there.

        With the grace too: other replicas may still be flushing after Redis lost its data.
        """
        await self._settle(grace=self._grace)

    async def run(self) -> None:
        """Check the epoch forever; rebuild (or wait for another replica's rebuild) on a loss."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # Redis unreachable: not ready until it answers again
                self.ready = False
                self.problem = f"Redis: {type(exc).__name__}: {exc}"[:300]
                log.warning("realtime.check_failed", error=self.problem)

    async def check(self) -> None:
        """One look at the epoch; a lost or foreign state is rebuilt or adopted."""
        epoch = await self._contacts.current_epoch()
        if epoch is not None and epoch == self._contacts.epoch:
            if not self.ready:
                self.ready, self.problem = True, ""
            return
        log.warning("realtime.state_lost", expected=self._contacts.epoch, found=epoch)
        self.ready = False
        self.problem = "the shared real-time state is being rebuilt from the database"
        # What this replica queued must be in the database before anybody reads it back.
        await asyncio.to_thread(self._writer.flush)
        await self._settle(grace=self._grace)

    async def _settle(self, *, grace: float) -> None:
        while True:
            epoch = await self._contacts.current_epoch()
            if epoch is not None:
                await self._adopt(epoch)
                return
            token = secrets.token_hex(8)
            if await self._r.set(self._contacts.key("rebuild"), token, nx=True, px=REBUILD_LOCK_MS):
                try:
                    await self._rebuild(grace)
                finally:
                    await self._unlock(keys=[self._contacts.key("rebuild")], args=[token])
                return
            await asyncio.sleep(0.1)  # another replica rebuilds: wait for its epoch

    async def _rebuild(self, grace: float) -> None:
        started = time.perf_counter()
        if grace:
            await asyncio.sleep(grace)
        if await self._contacts.current_epoch() is not None:
            return  # rebuilt meanwhile by a replica whose lock had run out
        keep = self._contacts.key("rebuild")
        async for key in self._r.scan_iter(match=self._contacts.key("*"), count=1000):
            if key not in (keep, keep.encode()):
                await self._r.delete(key)
        await self._state.clear_local()
        self._contacts.epoch = ""  # nobody else may lock contacts during the rebuild
        await self._load()
        epoch = secrets.token_hex(8)
        await self._r.set(self._contacts.key("epoch"), epoch)
        self.rebuilds += 1
        metrics.STATE_REBUILDS.inc()
        log.info("realtime.rebuilt", epoch=epoch, seconds=round(time.perf_counter() - started, 3))
        await self._adopt(epoch)

    async def _adopt(self, epoch: str) -> None:
        if epoch != self._contacts.epoch:
            await self._state.clear_local()
            self._contacts.epoch = epoch
            if self._on_adopted is not None:
                await self._on_adopted()
        self.ready, self.problem = True, ""
