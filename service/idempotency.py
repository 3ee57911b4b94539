"""Idempotency-Key for POST requests that create or move money: a retry never acts twice.

A request names a key (per API key and operation). The first request with it inserts a row
whose status is NULL ("in progress"); the primary key decides a concurrent race, so exactly one
request runs the operation. The operation stores its response *in its own transaction*
(`Claim.record`), so a committed effect and its stored response exist together or not at all.
Then, for the same key:

* same request (sha256 of the canonical JSON body), finished → the stored status and body are
  replayed with ``Idempotent-Replay: true``;
* same request, still in progress → 409, retry shortly;
* a different request → 422: a key names one request only.

Only successful (2xx) responses are stored; on any failure the in-progress row is deleted so
the client may retry with the same key. A row older than the TTL is forgotten (purged at most
once a minute). An in-progress row older than `stale_after_seconds` (its process died) may be
taken over by a retry; the original, if it ever finishes, then fails to record and rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import structlog
from fastapi import Depends, Header
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.problems import BadRequest, Conflict, InvalidInput
from service.storage.tables import IdempotencyRow

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replay"
MAX_KEY_LENGTH = 255
_TABLE = IdempotencyRow.__table__  # type: ignore[attr-defined]
_CLAIM_ATTEMPTS = 5
log = structlog.get_logger(__name__)


_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS_LOCK = threading.Lock()


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()`, one writer at a time per SQLite database in this process.

    SQLite allows one writer; a second one waits in SQLite's busy handler, which sleeps in
    steps of milliseconds. Queueing writers on a lock here hands the database over at once.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            yield connection
        return
    with _SQLITE_WRITERS_LOCK:
        lock = _SQLITE_WRITERS.setdefault(engine, threading.Lock())
    with lock, engine.begin() as connection:
        yield connection


def request_hash(body: Any, *, target: str = "") -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the body and its target.

    `target` names what the request acts on beyond its body (a pass id in the path), so the
    same key and body sent to another pass is a different request.
    """
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(target.encode() + b"\n" + canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response stored for a finished request, to replay."""

    status_code: int
    body: dict[str, Any]


@dataclass(slots=True)
class Claim:
    """The right to run one request: this process won the key's insert race."""

    caller: str
    operation: str
    key: str
    request_hash: str
    created_at: float
    recorded: bool = False

    def _where(self) -> Any:
        return and_(
            _TABLE.c.caller == self.caller,
            _TABLE.c.operation == self.operation,
            _TABLE.c.key == self.key,
            _TABLE.c.created_at == self.created_at,
            _TABLE.c.status_code.is_(None),
        )

    def record(self, connection: Connection, *, status_code: int, body: dict[str, Any]) -> None:
        """Store the response inside the operation's own transaction.

        Raises Conflict (and so rolls that transaction back) when the claim was lost: a retry
        took over a stale claim, or the row was deleted.
        """
        result = connection.execute(
            update(_TABLE).where(self._where()).values(status_code=status_code, response=body)
        )
        if result.rowcount != 1:
            raise Conflict(f"the request with {HEADER} {self.key!r} was taken over by a retry")
        self.recorded = True


class IdempotencyStore:
    """Claims, stored responses and expiry of idempotency keys in the database."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_seconds: float,
        stale_after_seconds: float = 60.0,
        purge_every_seconds: float = 60.0,
    ) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._stale_after = stale_after_seconds
        self._purge_every = purge_every_seconds
        self._purged_at = float("-inf")

    def claim(
        self, *, caller: str, operation: str, key: str, request_hash: str, now: float
    ) -> Claim | StoredResponse:
        """Win the key (a Claim) or get its stored response; Conflict or InvalidInput otherwise."""
        if now - self._purged_at >= self._purge_every:
            self._purged_at = now
            self.purge(now=now)
        for _ in range(_CLAIM_ATTEMPTS):
            claim = Claim(caller, operation, key, request_hash, now)
            try:
                with write_transaction(self._engine) as connection:
                    connection.execute(
                        insert(_TABLE),
                        [
                            {
                                "caller": caller,
                                "operation": operation,
                                "key": key,
                                "request_hash": request_hash,
                                "status_code": None,
                                "response": None,
                                "created_at": now,
                            }
                        ],
                    )
                return claim
            except IntegrityError:
                pass
            outcome = self._existing(claim, now=now)
            if outcome is not None:
                return outcome
        # Only reachable if the key's row appears and vanishes again on every attempt.
        raise Conflict(f"a request with this {HEADER} is in progress", headers={"Retry-After": "1"})

    def _existing(self, claim: Claim, *, now: float) -> Claim | StoredResponse | None:
        """What the key's row means to a request that lost the insert; None: insert again."""
        key_matches = and_(
            _TABLE.c.caller == claim.caller,
            _TABLE.c.operation == claim.operation,
            _TABLE.c.key == claim.key,
        )
        with self._engine.connect() as connection:
            row = connection.execute(
                select(
                    _TABLE.c.request_hash,
                    _TABLE.c.status_code,
                    _TABLE.c.response,
                    _TABLE.c.created_at,
                ).where(key_matches)
            ).first()
        if row is None:
            return None  # the first request failed and let go of the key
        if row.created_at < now - self._ttl:
            with write_transaction(self._engine) as connection:
                connection.execute(
                    delete(_TABLE).where(key_matches, _TABLE.c.created_at == row.created_at)
                )
            return None
        if row.request_hash != claim.request_hash:
            raise InvalidInput(
                f"this {HEADER} was already used for a different request; "
                "use a new key for a new request"
            )
        if row.status_code is not None:
            return StoredResponse(int(row.status_code), dict(row.response or {}))
        if row.created_at < now - self._stale_after:
            with write_transaction(self._engine) as connection:
                taken = connection.execute(
                    update(_TABLE)
                    .where(
                        key_matches,
                        _TABLE.c.created_at == row.created_at,
                        _TABLE.c.status_code.is_(None),
                    )
                    .values(created_at=now)
                )
            if taken.rowcount == 1:
                return claim
            return None
        raise Conflict(
            f"a request with this {HEADER} is in progress; retry it shortly",
            headers={"Retry-After": "1"},
        )

    def record(self, claim: Claim, *, status_code: int, body: dict[str, Any]) -> None:
        """Store the response in a transaction of its own (for operations without one)."""
        with write_transaction(self._engine) as connection:
            claim.record(connection, status_code=status_code, body=body)

    def abandon(self, claim: Claim) -> None:
        """The request failed: forget the key unless its response was stored."""
        with write_transaction(self._engine) as connection:
            connection.execute(delete(_TABLE).where(claim._where()))

    def purge(self, *, now: float) -> int:
        """Delete keys older than the TTL; how many."""
        with write_transaction(self._engine) as connection:
            result = connection.execute(delete(_TABLE).where(_TABLE.c.created_at < now - self._ttl))
        return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The response to send, and whether it is a replay of an earlier one."""

    status_code: int
    body: dict[str, Any]
    replayed: bool

    @property
    def headers(self) -> dict[str, str]:
        """`Idempotent-Replay: true` on a replay."""
        return {REPLAY_HEADER: "true"} if self.replayed else {}


async def run_once(
    store: IdempotencyStore,
    *,
    caller: str,
    operation: str,
    key: str,
    fingerprint: str,
    now: float,
    action: Callable[[Claim], Awaitable[tuple[int, dict[str, Any]]]],
) -> Outcome:
    """Run `action` at most once per key, or replay its stored response.

    `action` gets the Claim and should call `claim.record` in the transaction of its effect;
    if it does not, its response is stored afterwards.
    """
    found = await asyncio.to_thread(
        store.claim,
        caller=caller,
        operation=operation,
        key=key,
        request_hash=fingerprint,
        now=now,
    )
    if isinstance(found, StoredResponse):
        return Outcome(found.status_code, found.body, replayed=True)
    try:
        status_code, body = await action(found)
    except Exception:
        await asyncio.to_thread(store.abandon, found)
        raise
    except BaseException:
        # Cancelled (the client went away): the key must not stay "in progress" until it goes
        # stale, but the cancelled request's scope would cancel an await, and running the
        # delete here could block the event loop on SQLite's write lock. A worker thread
        # frees the key shortly after.
        _abandon_in_background(store, found)
        raise
    if not found.recorded and 200 <= status_code < 300:
        await asyncio.to_thread(store.record, found, status_code=status_code, body=body)
    elif not found.recorded:
        await asyncio.to_thread(store.abandon, found)
    return Outcome(status_code, body, replayed=False)


# Keys being freed in worker threads after a cancellation (a reference keeps each alive).
_ABANDONING: set[asyncio.Future[None]] = set()


def _abandon_in_background(store: IdempotencyStore, claim: Claim) -> asyncio.Future[None]:
    """Free a cancelled request's key in a worker thread, without waiting for it."""
    future = asyncio.get_running_loop().run_in_executor(None, store.abandon, claim)
    _ABANDONING.add(future)
    future.add_done_callback(_abandoned)
    return future


def _abandoned(future: asyncio.Future[None]) -> None:
    _ABANDONING.discard(future)
    if not future.cancelled() and future.exception() is not None:
        # The key stays in progress; a retry takes it over once it is stale.
        log.warning("idempotency.abandon_failed", error=repr(future.exception()))


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="required: 1-255 printable ASCII characters naming this request; a "
            "retry with the same key and body replays the first response",
        ),
    ] = None,
) -> str:
    """The request's Idempotency-Key; 400 when missing, too long or not printable ASCII."""
    if key is None or key == "":
        raise BadRequest(f"missing {HEADER} header: name each request, reuse it on retries")
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters")
    if not (key.isascii() and key.isprintable()):
        raise BadRequest(f"{HEADER} must be printable ASCII")
    return key


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
