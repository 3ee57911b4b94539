"""Single-incident pass holds shared by every replica (Redis).

A waiting contact holds its single-incident pass so that no other contact of the customer
rides on it meanwhile; a cancellation is refused while the pass is held and, while it is being
written, no contact may take a hold. With one process both live in `PassDesk`; with several
replicas the hash `holds` (pass -> contact) and `cancelling` (pass -> requests writing a
cancellation) are shared, and each check-and-take is one script. The route path uses the asyncio
client; a cancellation, which runs in a worker thread, uses a synchronous one.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from redis.asyncio import Redis

# KEYS: holds, cancelling, spent:<pass> ; ARGV: pass_id, contact_id
# -> 1 held by this contact, 0 refused
HOLD = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end
return 0
"""

# KEYS: holds ; ARGV: pass_id, contact_id ("" = whoever holds it)
RELEASE = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and (ARGV[2] == '' or holder == ARGV[2]) then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: holds, cancelling ; ARGV: pass_id -> the holder (refused), or "" (now cancelling)
BEGIN_CANCEL = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder then return holder end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return ''
"""

# KEYS: cancelling ; ARGV: pass_id
END_CANCEL = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


# A pass used up or cancelled is refused for this long after (`spent:<pass>`), longer than any
# replica's pass index takes to learn it from the database (refreshed every second).
SPENT_MS = 30_000


class SharedHolds:
    """Pass holds and cancellations in progress, in Redis."""

    def __init__(self, client: Redis, sync_client: redis.Redis, *, prefix: str) -> None:
        self._r = client
        self._sync = sync_client
        self._holds = f"{{{prefix}}}:holds"
        self._cancelling = f"{{{prefix}}}:cancelling"
        self._spent = f"{{{prefix}}}:spent:"
        self._hold = client.register_script(HOLD)
        self._release = client.register_script(RELEASE)
        self._begin_cancel = sync_client.register_script(BEGIN_CANCEL)
        self._end_cancel = sync_client.register_script(END_CANCEL)

    async def hold(self, pass_id: str, contact_id: str) -> bool:
        """Take the pass for the contact; False if another holds it or it is being cancelled."""
        taken = await self._hold(
            keys=[self._holds, self._cancelling, self._spent + pass_id], args=[pass_id, contact_id]
        )
        return bool(taken)

    async def spend(self, pass_id: str, contact_id: str) -> None:
        """The contact used the pass up: its hold ends and no other contact takes it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._spent + pass_id, contact_id, px=SPENT_MS)
        await self._release(keys=[self._holds], args=[pass_id, contact_id], client=pipe)
        await pipe.execute()

    async def release(self, pass_id: str, contact_id: str = "") -> None:
        """End the contact's hold (any holder's when `contact_id` is empty)."""
        await self._release(keys=[self._holds], args=[pass_id, contact_id])

    async def cancelling(self, pass_id: str) -> bool:
        """Whether a cancellation of the pass is being written."""
        return bool(await self._r.hexists(self._cancelling, pass_id))

    def begin_cancel(self, pass_id: str) -> str | None:
        """Mark the pass as being cancelled, unless a contact holds it (then: that contact)."""
        holder = self._begin_cancel(keys=[self._holds, self._cancelling], args=[pass_id])
        text = holder.decode() if isinstance(holder, bytes) else str(holder)
        return text or None

    def end_cancel(self, pass_id: str, *, cancelled: bool) -> None:
        """The cancellation was written (`cancelled`) or failed."""
        if cancelled:
            self._sync.set(self._spent + pass_id, "cancelled", px=SPENT_MS)
        self._end_cancel(keys=[self._cancelling], args=[pass_id])

    async def restore(self, holds: Iterable[tuple[str, str]]) -> None:
        """Put holds back after the shared state was lost (later pairs win)."""
        mapping: dict[str | bytes, str | bytes] = dict(holds)
        if mapping:
            await self._r.hset(self._holds, mapping=mapping)  # type: ignore[arg-type]
