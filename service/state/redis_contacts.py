"""Live contact records, per-contact locks and the state epoch, in Redis (several replicas).

With one process, a contact's record lives in that process (`service.contacts.ContactBook`).
With several replicas any of them may take the next call for a contact, so the live record is
shared: `c:<id>` holds it as JSON, `active` the contacts not yet ended (id -> channel and
language, what a rules change must not drop), `k:<id>` the
creation time of every contact seen within the idempotency window (so a retried route of a
contact that ended long ago costs one database read, and a new contact costs none).

Every change to one contact runs under its lock (`lock:<id>`, SET NX PX with a token, released
by compare-and-delete), reading the record fresh and writing it back, so two replicas never
interleave two changes of one contact. The lock also checks the state epoch (`epoch`): a Redis
that restarted empty has none, the lock refuses, and the caller answers 503 until the state is
rebuilt from PostgreSQL (`service.realtime.RealtimeKeeper`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from service.contacts import ContactState
from service.state.redis_state import US, entry_from_json, entry_json

# KEYS: lock, epoch
# ARGV: token, ttl ms, expected epoch
# -> 1 taken, 0 held by another, -1 the epoch is not the expected one (state lost or rebuilt)
LOCK = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# The same, and the contact's record and whether its id is known, in the same round trip.
# KEYS: lock, epoch, record, known ; ARGV: token, ttl ms, expected epoch
# -> {taken (as LOCK), record or false, 1 if the id is known}
LOCK_AND_READ = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {-1, false, 0} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, false, 0} end
return {1, redis.call('GET', KEYS[3]), redis.call('EXISTS', KEYS[4])}
"""

# KEYS: lock
# ARGV: token
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

LOCK_TTL_MS = 10_000  # a replica that dies holding a lock blocks its contact this long at most
LOCK_WAIT_SECONDS = 5.0


class StateLost(RuntimeError):
    """The shared real-time state is not the one this process knows (Redis lost its data)."""


class ContactBusy(RuntimeError):
    """Another call held the contact's lock for longer than a caller waits."""


class ContactLock:
    """One held contact lock; `release` is idempotent."""

    def __init__(self, shared: SharedContacts, key: str, token: str) -> None:
        self._shared, self._key, self._token = shared, key, token
        self._held = True

    async def release(self) -> None:
        """Give the lock back (only if it is still ours: it may have timed out)."""
        if self._held:
            self._held = False
            await self._shared._unlock(keys=[self._key], args=[self._token])

    async def release_in(self, pipe: Any) -> None:
        """Give the lock back as the last command of `pipe` (saves a round trip)."""
        if self._held:
            self._held = False
            await self._shared._unlock(keys=[self._key], args=[self._token], client=pipe)

    async def __aenter__(self) -> ContactLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class SharedContacts:
    """The shared contact records of every replica (see the module docstring)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        memory_seconds: float,
        idempotency_window_seconds: float,
    ) -> None:
        self._r = self.client = client
        self._k = f"{{{prefix}}}:"
        self._memory = memory_seconds
        self._window = idempotency_window_seconds
        self._lock = client.register_script(LOCK)
        self._lock_and_read = client.register_script(LOCK_AND_READ)
        self._unlock = client.register_script(UNLOCK)
        self.epoch = ""  # the state epoch this process works with ("" before the first build)

    def key(self, name: str) -> str:
        """The full Redis key of `name`."""
        return self._k + name

    # ---- locks ------------------------------------------------------------------------------
    async def lock(self, contact_id: str, *, wait: float = LOCK_WAIT_SECONDS) -> ContactLock:
        """Take the contact's lock, waiting up to `wait` seconds for another holder."""
        key = self.key(f"lock:{contact_id}")
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait
        pause = 0.001
        while True:
            taken = await self._lock(
                keys=[key, self.key("epoch")], args=[token, LOCK_TTL_MS, self.epoch]
            )
            if taken == 1:
                return ContactLock(self, key, token)
            if taken == -1:
                raise StateLost("the shared real-time state was lost or rebuilt")
            if time.monotonic() >= deadline:
                raise ContactBusy(f"contact {contact_id} is being changed by another call")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    async def lock_and_lookup(
        self, contact_id: str, *, wait: float = LOCK_WAIT_SECONDS
    ) -> tuple[ContactLock, ContactState | None, bool]:
        """`lock`, then `lookup`, in one round trip when the lock is free."""
        key = self.key(f"lock:{contact_id}")
        keys = [key, self.key("epoch"), self.key(f"c:{contact_id}"), self.key(f"k:{contact_id}")]
        token = secrets.token_hex(8)
        taken, raw, known = await self._lock_and_read(
            keys=keys, args=[token, LOCK_TTL_MS, self.epoch]
        )
        if taken == -1:
            raise StateLost("the shared real-time state was lost or rebuilt")
        if taken == 1:
            return (
                ContactLock(self, key, token),
                (None if raw is None else decode(raw)),
                bool(known),
            )
        lock = await self.lock(contact_id, wait=wait)
        record, known_now = await self.lookup(contact_id)
        return lock, record, known_now

    async def current_epoch(self) -> str | None:
        """The epoch stored in Redis (None: the state was never built or Redis lost it)."""
        raw = await self._r.get(self.key("epoch"))
        return None if raw is None else _s(raw)

    # ---- records ----------------------------------------------------------------------------
    async def get(self, contact_id: str) -> ContactState | None:
        """The live record of a contact, if Redis holds it."""
        raw = await self._r.get(self.key(f"c:{contact_id}"))
        return None if raw is None else decode(raw)

    async def lookup(self, contact_id: str) -> tuple[ContactState | None, bool]:
        """The live record, and whether the id was seen within the idempotency window."""
        raw, known = await self._r.mget([self.key(f"c:{contact_id}"), self.key(f"k:{contact_id}")])
        return (None if raw is None else decode(raw)), known is not None

    async def save(
        self, contact: ContactState, *, now: float, release: ContactLock | None = None
    ) -> None:
        """Store the record; an ended contact's record expires after the memory time.

        `release`: give that lock back in the same round trip, once the record is stored.
        """
        pipe = self._r.pipeline(transaction=True)
        key = self.key(f"c:{contact.contact_id}")
        body = encode(contact)
        if contact.ended_at is None:
            pipe.set(key, body)
            use = f"{contact.channel}{US}{contact.request['language']}"
            pipe.hset(self.key("active"), contact.contact_id, use)
        else:
            pipe.set(key, body, px=max(1, int(self._memory * 1000)))
            pipe.hdel(self.key("active"), contact.contact_id)
        keep = self._window - (now - contact.created_at)
        if keep > 0:
            pipe.set(
                self.key(f"k:{contact.contact_id}"),
                repr(contact.created_at),
                px=max(1, int(keep * 1000)),
            )
        if release is not None:
            await release.release_in(pipe)
        await pipe.execute()

    async def forget(self, contact_id: str) -> None:
        """Remove every trace of a contact whose route call failed before it was stored."""
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self.key(f"c:{contact_id}"), self.key(f"k:{contact_id}"))
        pipe.hdel(self.key("active"), contact_id)
        await pipe.execute()

    async def active_uses(self) -> list[tuple[str, str]]:
        """(channel, language) of every contact queued, offered or connected, on any replica."""
        uses = cast(list[bytes], await self._r.hvals(self.key("active")))
        return [cast(tuple[str, str], tuple(u.decode().split(US, 1))) for u in uses]

    async def remember(self, ids: dict[str, float], *, now: float) -> None:
        """Ids (with creation time) of contacts that ended before the state was built."""
        items = list(ids.items())
        for start in range(0, len(items), 1000):
            pipe = self._r.pipeline(transaction=False)
            for contact_id, created_at in items[start : start + 1000]:
                keep = self._window - (now - created_at)
                if keep > 0:
                    pipe.set(
                        self.key(f"k:{contact_id}"), repr(created_at), px=max(1, int(keep * 1000))
                    )
            await pipe.execute()


def encode(contact: ContactState) -> bytes:
    """A contact record as JSON (its row, plus the live fields the row does not hold)."""
    data: dict[str, Any] = contact.to_row()
    data["stage_name"] = contact.stage_name
    data["breach_warned"] = contact.breach_warned
    data["entry"] = None if contact.entry is None else entry_json(contact.entry)
    return orjson.dumps(data)


def decode(raw: bytes | str) -> ContactState:
    """The inverse of `encode`."""
    data = orjson.loads(raw)
    entry = data.pop("entry")
    stage_name = data.pop("stage_name")
    breach_warned = data.pop("breach_warned")
    contact = ContactState(**data)
    contact.entry = None if entry is None else entry_from_json(entry)
    contact.stage_name = stage_name
    contact.breach_warned = breach_warned
    return contact


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
