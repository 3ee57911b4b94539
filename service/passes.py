"""Fast-lane passes: sale (with the sales guard), use by a contact, refunds and cancellation.

When a pass grants the fast lane:

* a **subscription** while now is in [valid_from, valid_until), it is not cancelled and not
  fully refunded; it is never used up;
* a **single-incident** pass within its validity (by default the rules'
  `fast_lane.single_incident_valid_days` from the sale) until it is used, refunded in full or
  cancelled. It is used ("consumed") when its contact is *answered* (an agent accepted it), not
  when the contact queues: an abandoned contact gives it back. While a contact waits with it,
  that contact *holds* it and it is not offered to the customer's other contacts.

Only a subscription books fast-lane appointments (`subscription_pass`); a single-incident pass
is for one contact.

A full refund is always allowed, even while a contact waits with the pass: that contact keeps
its place in the fast lane (it was queued there), but the pass is not consumed when it is
answered, since nothing was paid for it any more. A pass being cancelled is not offered to new
contacts and cannot be held; a held pass cannot be cancelled.

If a consumption is lost (a database failure when the contact was answered, or a crash before
it committed), `recover()` keeps the pass held by its answered contact and `settle_answered()`
consumes it at start, from the contacts table.

`fast_lane_pass` is on the route hot path, so it answers from memory: every pass that may grant
the fast lane, by customer, loaded by `recover()` and updated by every write (and by
`refresh()` for writes of other replicas). The database stays the source of truth: using,
refunding and cancelling are guarded UPDATEs (`WHERE status = 'active'` and the like), so a
second call, another contact or another replica can never use or refund a pass twice. Every
change commits with its event (`pass.created`, `pass.consumed`, `pass.refunded`,
`pass.cancelled`) in one transaction.

The sales guard (see `sla.guard`) refuses a sale with 409 when the pass's expected demand
would push the fast lane past the ε limit in any plan interval of the next
`guard_horizon_days` (or of the pass's validity, if shorter). Without a capacity plan it
cannot judge and sells. Within one process, a sale's demand is reserved before its insert, so
concurrent sales cannot both take the last room; across replicas they can (by at most one
pass per replica), which a later `refresh()` makes visible.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from service import clock
from service.events.outbox import emit
from service.idempotency import Claim, IdempotencyStore, write_transaction
from service.ids import new_id
from service.pass_models import (
    PassCreate,
    PassView,
    RefundCreate,
    RefundOut,
    decode_cursor,
    encode_cursor,
    refund_out,
)
from service.problems import Conflict, InvalidInput, NotFound
from service.rules_store import RulesStore
from service.settings import Settings
from service.state.redis_holds import SharedHolds
from service.storage.tables import ContactRow, PassRow, RefundRow
from sla.config import PassRates
from sla.guard import DAY, PassDemand, PassKind, first_sold_out, pass_contacts_per_day

log = structlog.get_logger(__name__)

_PASSES = PassRow.__table__  # type: ignore[attr-defined]
_REFUNDS = RefundRow.__table__  # type: ignore[attr-defined]
_CONTACTS = ContactRow.__table__  # type: ignore[attr-defined]
BREACH_REASON = "sla_breach"
# A row another replica committed may carry an updated_at a little older than the newest one
# already seen (clock skew, a slow commit); refresh looks back this far.
REFRESH_OVERLAP_SECONDS = 5.0
# The guard's demand is re-sorted from every pass after this many sales and changes.
MAX_DEMAND_CHANGES = 512


def _rank(view: PassView) -> tuple[int, float]:
    # Subscriptions first (longest-lasting first); then single-incident passes that lapse
    # soonest, so a customer's passes are used before they expire.
    if view.kind == "subscription":
        return (0, -view.valid_until)
    return (1, view.valid_until)


class PassDesk:
    """Fast-lane passes: the in-memory index for routing and every change to a pass."""

    def __init__(
        self,
        *,
        engine: Engine,
        rules: RulesStore,
        settings: Settings,
        shared_holds: SharedHolds | None = None,
    ) -> None:
        self._engine = engine
        # With several replicas the holds live in Redis (`_holds` then stays empty).
        self._shared_holds = shared_holds
        self._rules = rules
        self.idempotency = IdempotencyStore(
            engine, ttl_seconds=settings.idempotency_key_ttl_seconds
        )
        self._by_customer: dict[str, tuple[PassView, ...]] = {}
        self._views: dict[str, PassView] = {}  # every pass that may grant, by id
        self._holds: dict[str, str] = {}  # single-incident pass id -> waiting contact id
        # Passes whose cancellation is being written (by how many requests): neither offered
        # nor held meanwhile.
        self._cancelling: dict[str, int] = {}
        # Taken by `hold` (event loop) and by `cancel`'s hold check (worker thread), so a hold
        # and a cancellation of the same pass cannot both succeed. Separate from `_lock`, which
        # a sale keeps through the sales guard's computation, so the route path never waits
        # on that.
        self._hold_lock = threading.Lock()
        self._pending: dict[str, PassView] = {}  # guarded sales not yet committed
        # The guard's demand: every pass at the last rebuild, then the changes since.
        self._demand_base: tuple[PassRates, PassDemand] | None = None
        self._demand_changes: list[tuple[float, float, float]] = []  # signed contacts/day
        self._demand_rebuilds = 0
        self._demand_cache: tuple[tuple[int, int], PassDemand] | None = None
        self._watermark = float("-inf")
        self._refreshed_at = float("-inf")
        self.refresh_seconds = 1.0
        # Writers (worker threads) take the lock; the route hot path only reads whole tuples
        # and dict entries, which a writer replaces in one step.
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._writes = 0  # changes this process applied, in order
        self._touched: dict[str, int] = {}  # pass id -> its latest change by this process

    # ---- the route hot path ---------------------------------------------------------------
    def fast_lane_pass(self, customer_id: str, now: float) -> str | None:
        """The pass that puts this customer's new contact in the fast lane, if any.

        A subscription is preferred; otherwise the single-incident pass that lapses soonest
        and is not held by another waiting contact.
        """
        for view in self._by_customer.get(customer_id, ()):
            if (
                view.valid_from <= now < view.valid_until
                and (view.kind == "subscription" or view.pass_id not in self._holds)
                and view.pass_id not in self._cancelling
            ):
                return view.pass_id
        return None

    async def take(self, customer_id: str, contact_id: str, now: float) -> str | None:
        """The pass a new contact of the customer rides on, held for it; None: standard tier."""
        shared = self._shared_holds
        if shared is None:
            pass_id = self.fast_lane_pass(customer_id, now)
            return pass_id if pass_id is not None and self.hold(pass_id, contact_id) else None
        for view in self._by_customer.get(customer_id, ()):
            if not view.valid_from <= now < view.valid_until or view.pass_id in self._cancelling:
                continue
            if view.kind == "subscription":
                if not await shared.cancelling(view.pass_id):
                    return view.pass_id
            elif await shared.hold(view.pass_id, contact_id):
                if self._views.get(view.pass_id) is not None:
                    return view.pass_id
                await shared.release(view.pass_id, contact_id)  # gone meanwhile
        return None

    async def let_go(self, pass_id: str, contact_id: str) -> None:
        """The contact ended unanswered, or its route call failed: its hold ends."""
        if self._shared_holds is None:
            self.release(pass_id, contact_id)
        else:
            await self._shared_holds.release(pass_id, contact_id)

    async def restore_holds(self) -> int:
        """Put the holds of active contacts back into the shared state (after it was lost)."""
        if self._shared_holds is None:
            return 0
        holds = [
            (pass_id, contact_id)
            for pass_id, contact_id in await asyncio.to_thread(self._hold_rows)
            if (view := self._views.get(pass_id)) is None or view.kind == "single_incident"
        ]
        await self._shared_holds.restore(holds)
        return len(holds)

    def subscription_pass(self, customer_id: str, now: float) -> str | None:
        """The customer's subscription granting the fast lane at `now`, if any (appointments)."""
        for view in self._by_customer.get(customer_id, ()):
            if view.kind != "subscription":
                break  # ranked: subscriptions come first
            if view.valid_from <= now < view.valid_until and view.pass_id not in self._cancelling:
                return view.pass_id
        return None

    def hold(self, pass_id: str, contact_id: str) -> bool:
        """A waiting contact holds its single-incident pass.

        False if another contact holds it, or it no longer grants the fast lane (used,
        cancelled or being cancelled, fully refunded): the contact is then not riding on it.
        """
        view = self._views.get(pass_id)
        if view is not None and view.kind == "subscription":
            return pass_id not in self._cancelling  # shared by all the customer's contacts
        with self._hold_lock:
            # Looked up again under the lock: a cancellation that finished meanwhile has
            # removed the pass from the index before it stopped marking it as cancelling.
            if self._views.get(pass_id) is None or pass_id in self._cancelling:
                return False
            return self._holds.setdefault(pass_id, contact_id) == contact_id

    def release(self, pass_id: str, contact_id: str) -> None:
        """The contact ended without being answered (abandoned): its hold ends."""
        if self._holds.get(pass_id) == contact_id:
            self._holds.pop(pass_id, None)

    def holder(self, pass_id: str) -> str | None:
        """The waiting contact that holds a single-incident pass, if any."""
        return self._holds.get(pass_id)

    # ---- start and other replicas ---------------------------------------------------------
    async def recover(self) -> None:
        """Load the passes that may grant the fast lane, and the holds of waiting contacts.

        A connected (answered, not yet ended) contact whose single-incident pass is still
        active holds it too: its consumption was lost, and `settle_answered` redoes it.
        """
        loaded, held = await asyncio.to_thread(self._recover, clock.now())
        log.info("passes.recovered", passes=loaded, holds=held)

    def _recover(self, now: float) -> tuple[int, int]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(_PASSES).where(_PASSES.c.status == "active", _PASSES.c.valid_until > now)
            ).all()
        holds = self._hold_rows() if self._shared_holds is None else []
        with self._lock:
            self._by_customer.clear()
            self._views.clear()
            self._demand_base = None
            for row in rows:
                self._apply(PassView.from_row(row), local=False)
                self._watermark = max(self._watermark, row.updated_at)
            self._holds.clear()
            for pass_id, contact_id in holds:
                view = self._views.get(pass_id)
                if view is None or view.kind == "single_incident":
                    self._holds[pass_id] = contact_id
            self._refreshed_at = now
        return len(self._views), len(self._holds)

    def _hold_rows(self) -> list[tuple[str, str]]:
        """(pass, contact) of every hold the database implies, the answered contacts' last."""
        with self._engine.connect() as connection:
            holds: list[tuple[str, str]] = list(
                connection.execute(
                    select(_CONTACTS.c.pass_id, _CONTACTS.c.contact_id).where(
                        _CONTACTS.c.status.in_(("queued", "reserved")),
                        _CONTACTS.c.pass_id.is_not(None),
                    )
                ).all()
            )
            # After the waiting ones, so an answered contact's hold wins (it used the pass).
            holds += connection.execute(
                select(_CONTACTS.c.pass_id, _CONTACTS.c.contact_id)
                .join(_PASSES, _PASSES.c.pass_id == _CONTACTS.c.pass_id)
                .where(
                    _CONTACTS.c.status == "connected",
                    _PASSES.c.kind == "single_incident",
                    _PASSES.c.status == "active",
                )
                .order_by(_CONTACTS.c.connected_at.desc())
            ).all()
        return [(row[0], row[1]) for row in holds]

    def refresh(self, now: float | None = None) -> int:
        """Apply passes changed since the last look (other replicas' sales and changes)."""
        now = clock.now() if now is None else now
        with self._refresh_lock:
            with self._lock:
                since = self._watermark - REFRESH_OVERLAP_SECONDS
                writes_before = self._writes
            # Read without the lock: sales and the route hot path go on meanwhile.
            with self._engine.connect() as connection:
                rows = connection.execute(
                    select(_PASSES).where(_PASSES.c.updated_at >= since)
                ).all()
            with self._lock:
                for row in rows:
                    # A pass this process changed after the read began may be newer here than
                    # in the row read; this process's own state wins.
                    if self._touched.get(row.pass_id, 0) > writes_before:
                        continue
                    self._apply(PassView.from_row(row), local=False)
                    self._watermark = max(self._watermark, row.updated_at)
                for view in [v for v in self._views.values() if v.valid_until <= now]:
                    self._apply(replace(view, status="expired"), local=False)
                self._touched = {p: w for p, w in self._touched.items() if w > writes_before}
                self._refreshed_at = now
        return len(rows)

    def refresh_if_due(self, now: float) -> None:
        """Refresh when the last one is older than `refresh_seconds`."""
        if now - self._refreshed_at >= self.refresh_seconds:
            self.refresh(now)

    async def run(self, interval_seconds: float) -> None:
        """Refresh every `interval_seconds` until cancelled (for several replicas)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:
                log.exception("passes.refresh_failed")

    def _apply(self, view: PassView, *, local: bool = True) -> None:
        """Put a pass's new state into the index (caller holds the lock).

        `local`: the state of a change this process just committed (not a refresh).
        """
        known = self._views.get(view.pass_id)
        if known is not None and known.updated_at > view.updated_at:
            return  # an older row than the state this process already applied
        if local:
            self._writes += 1
            self._touched[view.pass_id] = self._writes
        if known is not None:
            self._log_demand(known, -1)
        if view.may_grant:
            self._log_demand(view, 1)
        customer = tuple(
            v for v in self._by_customer.get(view.customer_id, ()) if v.pass_id != view.pass_id
        )
        if view.may_grant:
            self._views[view.pass_id] = view
            ranked = list(customer)
            bisect.insort(ranked, view, key=_rank)
            customer = tuple(ranked)
        else:
            self._views.pop(view.pass_id, None)
            if view.status != "active":
                self._holds.pop(view.pass_id, None)
        if customer:
            self._by_customer[view.customer_id] = customer
        else:
            self._by_customer.pop(view.customer_id, None)

    # ---- demand for the guard and the quote -------------------------------------------------
    def demand(self, rates: PassRates) -> PassDemand:
        """Fast-lane demand of every pass that may grant it (sales in flight included)."""
        with self._lock:
            return self._demand_locked(rates)

    def _demand_locked(self, rates: PassRates) -> PassDemand:
        base = self._demand_base
        if base is None or base[0] != rates or len(self._demand_changes) > MAX_DEMAND_CHANGES:
            views = [*self._views.values(), *self._pending.values()]
            self._demand_base = (rates, PassDemand(_per_day(v, rates) for v in views))
            self._demand_changes.clear()
            self._demand_rebuilds += 1
            return self._demand_base[1]
        if not self._demand_changes:
            return base[1]
        # Changes are only appended between rebuilds, so their count names the state.
        key = (self._demand_rebuilds, len(self._demand_changes))
        if self._demand_cache is None or self._demand_cache[0] != key:
            self._demand_cache = (key, base[1].with_changes(self._demand_changes))
        return self._demand_cache[1]

    def _log_demand(self, view: PassView, sign: int) -> None:
        """A pass starts or stops counting for the guard (caller holds the lock)."""
        if self._demand_base is not None:
            start, end, per_day = _per_day(view, self._demand_base[0])
            self._demand_changes.append((start, end, sign * per_day))

    def active_counts(self, now: float) -> dict[PassKind, int]:
        """Passes of each kind granting the fast lane at `now`."""
        counts: dict[PassKind, int] = {"single_incident": 0, "subscription": 0}
        with self._lock:
            views = list(self._views.values())
        for view in views:
            if view.grants(now):
                counts[view.kind] += 1
        return counts

    # ---- sale ------------------------------------------------------------------------------
    def purchase(self, order: PassCreate, *, claim: Claim | None, now: float) -> dict[str, Any]:
        """Sell a pass (after the sales guard); the new pass's API form. Blocking."""
        ruleset = self._rules.compiled.ruleset
        sales = ruleset.fast_lane
        valid_from = now if order.valid_from is None else order.valid_from
        if order.valid_until is not None:
            valid_until = order.valid_until
        elif order.kind == "subscription":
            raise InvalidInput("a subscription needs valid_until (the end of its term)")
        else:
            valid_until = valid_from + sales.single_incident_valid_days * DAY
        if valid_until <= valid_from:
            raise InvalidInput("valid_until must be after valid_from")
        if valid_until <= now:
            raise InvalidInput("valid_until is in the past: such a pass could never be used")
        view = PassView(
            pass_id="pass_" + new_id(),
            customer_id=order.customer_id,
            kind=order.kind,
            status="active",
            valid_from=valid_from,
            valid_until=valid_until,
            price_amount=order.price_amount,
            currency=order.currency,
            refunded_amount=0,
            contact_id=None,
            consumed_at=None,
            cancelled_at=None,
            external_ref=order.external_ref,
            created_at=now,
            updated_at=now,
        )
        plan = ruleset.capacity_plan
        guarded = sales.guard and bool(plan.channels)
        with self._lock:
            if guarded:
                start = max(now, valid_from)
                sold_out = first_sold_out(
                    plan=plan,
                    epsilon=float(sales.epsilon),
                    demand=self._demand_locked(sales.expected),
                    added_per_day=pass_contacts_per_day(
                        order.kind,
                        valid_from=valid_from,
                        valid_until=valid_until,
                        rates=sales.expected,
                    ),
                    start=start,
                    end=min(valid_until, start + sales.guard_horizon_days * DAY),
                )
                if sold_out is not None:
                    raise Conflict(sold_out.describe())
            # Reserved before the insert: a concurrent sale's guard counts this pass already.
            self._pending[view.pass_id] = view
            self._log_demand(view, 1)
        public = view.public((), now)
        try:
            with write_transaction(self._engine) as connection:
                connection.execute(insert(_PASSES), [_row(view)])
                emit(connection, "pass.created", _created_event(view), now=now)
                if claim is not None:
                    claim.record(connection, status_code=201, body=public)
        except BaseException:
            with self._lock:
                self._unreserve(view)
            raise
        with self._lock:
            self._unreserve(view)
            self._apply(view)
        return public

    def _unreserve(self, view: PassView) -> None:
        """A guarded sale is committed or failed: its reservation ends (caller holds the lock)."""
        if self._pending.pop(view.pass_id, None) is not None:
            self._log_demand(view, -1)

    # ---- use by a contact ------------------------------------------------------------------
    async def consume(self, pass_id: str, contact_id: str, *, now: float) -> bool:
        """The contact was answered: a single-incident pass is used up, exactly once.

        Call it when the agent accepts the contact, never when it queues. True when this call
        used the pass; False for a subscription or a pass already used, cancelled, fully
        refunded or unknown. Either way the contact's hold ends.
        """
        view = self._views.get(pass_id)
        if view is not None and view.kind == "subscription":
            return False
        used = await asyncio.to_thread(self._consume, pass_id, contact_id, now)
        if self._shared_holds is not None:
            await self._shared_holds.spend(pass_id, contact_id)
        return used

    async def settle_answered(self, now: float) -> int:
        """Consume the passes of answered contacts whose consumption was lost; how many.

        Every still-active single-incident pass whose contact has `connected_at` set in the
        contacts table (connected or completed) is consumed as by `consume`, at the time the
        contact was answered, with its `pass.consumed` event; refund-on-breach is applied to
        it as when the contact was answered. Run it at start, after `recover()`.
        """
        settled = await asyncio.to_thread(self._settle_answered, now)
        if self._shared_holds is not None:
            for pass_id, contact_id in settled:
                await self._shared_holds.spend(pass_id, contact_id)
        return len(settled)

    def _settle_answered(self, now: float) -> list[tuple[str, str]]:
        with self._engine.connect() as connection:
            answered = connection.execute(
                select(
                    _PASSES.c.pass_id,
                    _CONTACTS.c.contact_id,
                    _CONTACTS.c.channel,
                    _CONTACTS.c.created_at,
                    _CONTACTS.c.connected_at,
                )
                .join(_CONTACTS, _CONTACTS.c.pass_id == _PASSES.c.pass_id)
                .where(
                    _PASSES.c.kind == "single_incident",
                    _PASSES.c.status == "active",
                    _CONTACTS.c.connected_at.is_not(None),
                )
                # The first contact answered used the pass, should two name it.
                .order_by(_CONTACTS.c.connected_at, _CONTACTS.c.contact_id)
            ).all()
        settled: list[tuple[str, str]] = []
        seen: set[str] = set()
        for pass_id, contact_id, channel, created_at, connected_at in answered:
            if pass_id in seen:
                continue
            seen.add(pass_id)
            if not self._consume(pass_id, contact_id, now, used_at=connected_at):
                continue
            settled.append((pass_id, contact_id))
            if self._breached(channel, connected_at - created_at):
                self._refund_breach(pass_id, contact_id, now)
        if settled:
            log.info("passes.settled_answered", passes=len(settled))
        return settled

    def _breached(self, channel: str, wait_seconds: float) -> bool:
        """Whether refund-on-breach applies to a contact answered after this wait."""
        ruleset = self._rules.compiled.ruleset
        level = ruleset.tiers.fast_lane.sla.get(channel)
        if not ruleset.fast_lane.refund_on_breach or level is None:
            return False
        return wait_seconds > level.answer_seconds

    def _consume(
        self, pass_id: str, contact_id: str, now: float, *, used_at: float | None = None
    ) -> bool:
        used_at = now if used_at is None else used_at
        with write_transaction(self._engine) as connection:
            used = connection.execute(
                update(_PASSES)
                .where(
                    _PASSES.c.pass_id == pass_id,
                    _PASSES.c.kind == "single_incident",
                    _PASSES.c.status == "active",
                    # A fully refunded pass was given back: its contact keeps its place in the
                    # fast lane, but nothing paid is left to use up.
                    or_(
                        _PASSES.c.price_amount <= 0,
                        _PASSES.c.refunded_amount < _PASSES.c.price_amount,
                    ),
                )
                .values(
                    status="consumed", contact_id=contact_id, consumed_at=used_at, updated_at=now
                )
            )
            if used.rowcount != 1:
                view = None
            else:
                view = _load(connection, pass_id)
                emit(
                    connection,
                    "pass.consumed",
                    {
                        "pass_id": pass_id,
                        "customer_id": view.customer_id,
                        "contact_id": contact_id,
                        "consumed_at": used_at,
                    },
                    now=now,
                )
        with self._lock:
            if view is not None:
                self._apply(view)
            if self._holds.get(pass_id) == contact_id:
                self._holds.pop(pass_id, None)
        return view is not None

    async def check_breach(
        self, pass_id: str, contact_id: str, *, channel: str, wait_seconds: float, now: float
    ) -> RefundOut | None:
        """Refund-on-breach: refund what is left of a pass its answered contact waited too long on.

        Only when the rules' `fast_lane.refund_on_breach` is on, the channel has a fast-lane
        SLA and the wait exceeded its answer_seconds; only for the single-incident pass this
        contact used (call it after `consume`; a subscription is not refunded for one
        contact); at most once per pass. The refund is automatic, reason "sla_breach".
        """
        if not self._breached(channel, wait_seconds):
            return None
        return await asyncio.to_thread(self._refund_breach, pass_id, contact_id, now)

    def _refund_breach(self, pass_id: str, contact_id: str, now: float) -> RefundOut | None:
        for _ in range(5):
            with self._engine.connect() as connection:
                row = connection.execute(
                    select(_PASSES).where(_PASSES.c.pass_id == pass_id)
                ).first()
            if row is None or row.kind != "single_incident" or row.status != "consumed":
                return None
            if row.contact_id != contact_id or row.refunded_amount >= row.price_amount:
                return None
            with write_transaction(self._engine) as connection:
                # Guarded by the amount read: a refund committed meanwhile makes this a no-op,
                # and the loop looks again.
                moved = connection.execute(
                    update(_PASSES)
                    .where(
                        _PASSES.c.pass_id == pass_id,
                        _PASSES.c.refunded_amount == row.refunded_amount,
                    )
                    .values(refunded_amount=row.price_amount, updated_at=now)
                )
                if moved.rowcount != 1:
                    continue
                refund = self._insert_refund(
                    connection,
                    pass_id=pass_id,
                    amount=row.price_amount - row.refunded_amount,
                    currency=row.currency,
                    reason=BREACH_REASON,
                    automatic=True,
                    now=now,
                )
                view = _load(connection, pass_id)
            with self._lock:
                self._apply(view)
            return refund
        return None

    # ---- refunds and cancellation ------------------------------------------------------------
    def refund(
        self, pass_id: str, order: RefundCreate, *, claim: Claim | None, now: float
    ) -> dict[str, Any]:
        """Give back (part of) a pass's price; the refund and the pass (RefundResult form)."""
        with write_transaction(self._engine) as connection:
            moved = connection.execute(
                update(_PASSES)
                .where(
                    _PASSES.c.pass_id == pass_id,
                    _PASSES.c.currency == order.currency,
                    _PASSES.c.refunded_amount + order.amount <= _PASSES.c.price_amount,
                )
                .values(refunded_amount=_PASSES.c.refunded_amount + order.amount, updated_at=now)
            )
            if moved.rowcount != 1:
                raise _refund_refused(connection, pass_id, order)
            refund = self._insert_refund(
                connection,
                pass_id=pass_id,
                amount=order.amount,
                currency=order.currency,
                reason=order.reason,
                automatic=False,
                now=now,
            )
            view = _load(connection, pass_id)
            body = {
                "refund": refund.model_dump(mode="json"),
                "pass": view.public(_refunds(connection, [pass_id])[pass_id], now),
            }
            if claim is not None:
                claim.record(connection, status_code=201, body=body)
        with self._lock:
            self._apply(view)
        return body

    def _insert_refund(
        self,
        connection: Connection,
        *,
        pass_id: str,
        amount: int,
        currency: str,
        reason: str,
        automatic: bool,
        now: float,
    ) -> RefundOut:
        refund = RefundOut(
            refund_id="rfd_" + new_id(),
            pass_id=pass_id,
            amount=amount,
            currency=currency,
            reason=reason,
            automatic=automatic,
            created_at=now,
        )
        connection.execute(insert(_REFUNDS), [refund.model_dump()])
        totals = connection.execute(
            select(_PASSES.c.customer_id, _PASSES.c.refunded_amount, _PASSES.c.price_amount).where(
                _PASSES.c.pass_id == pass_id
            )
        ).one()
        emit(
            connection,
            "pass.refunded",
            {
                **refund.model_dump(mode="json"),
                "customer_id": totals.customer_id,
                "refunded_amount": totals.refunded_amount,
                "price_amount": totals.price_amount,
            },
            now=now,
        )
        return refund

    def cancel(self, pass_id: str, *, now: float) -> dict[str, Any]:
        """Cancel a subscription or an unused single-incident pass; repeating it is harmless."""
        shared = self._shared_holds
        with self._hold_lock:
            # Checked and marked in one step: from here until the cancellation is written and
            # applied, `hold` refuses the pass and `fast_lane_pass` does not offer it.
            holder = self._holds.get(pass_id) if shared is None else shared.begin_cancel(pass_id)
            if holder is not None:
                raise Conflict(
                    f"contact {holder} is waiting in the fast lane with this pass; cancel it "
                    "after that contact ends"
                )
            self._cancelling[pass_id] = self._cancelling.get(pass_id, 0) + 1
        cancelled = False
        try:
            result = self._cancel(pass_id, now)
            cancelled = result.get("status") == "cancelled"
            return result
        finally:
            if shared is not None:
                shared.end_cancel(pass_id, cancelled=cancelled)
            with self._hold_lock:
                if self._cancelling[pass_id] == 1:
                    del self._cancelling[pass_id]
                else:
                    self._cancelling[pass_id] -= 1

    def _cancel(self, pass_id: str, now: float) -> dict[str, Any]:
        with write_transaction(self._engine) as connection:
            cancelled = connection.execute(
                update(_PASSES)
                .where(_PASSES.c.pass_id == pass_id, _PASSES.c.status == "active")
                .values(status="cancelled", cancelled_at=now, updated_at=now)
            )
            view = _load(connection, pass_id)
            if cancelled.rowcount == 1:
                emit(
                    connection,
                    "pass.cancelled",
                    {"pass_id": pass_id, "customer_id": view.customer_id, "cancelled_at": now},
                    now=now,
                )
            elif view.status == "consumed":
                raise Conflict("this single-incident pass was already used and cannot be cancelled")
            public = view.public(_refunds(connection, [pass_id])[pass_id], now)
        with self._lock:
            self._apply(view)
        return public

    # ---- reads -----------------------------------------------------------------------------
    def get(self, pass_id: str, *, now: float) -> dict[str, Any]:
        """One pass with its refunds (PassOut form); NotFound if unknown."""
        with self._engine.connect() as connection:
            view = _load(connection, pass_id)
            return view.public(_refunds(connection, [pass_id])[pass_id], now)

    def page(
        self, customer_id: str, *, limit: int, cursor: str | None, now: float
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A customer's passes, oldest first, and the cursor of the next page (None: last)."""
        query = select(_PASSES).where(_PASSES.c.customer_id == customer_id)
        if cursor is not None:
            after_created, after_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    _PASSES.c.created_at > after_created,
                    and_(_PASSES.c.created_at == after_created, _PASSES.c.pass_id > after_id),
                )
            )
        query = query.order_by(_PASSES.c.created_at, _PASSES.c.pass_id).limit(limit + 1)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
            views = [PassView.from_row(row) for row in rows[:limit]]
            refunds = _refunds(connection, [v.pass_id for v in views])
        items = [v.public(refunds[v.pass_id], now) for v in views]
        more = len(rows) > limit
        return items, encode_cursor(views[-1]) if more and views else None


def _per_day(view: PassView, rates: PassRates) -> tuple[float, float, float]:
    """(valid_from, valid_until, expected contacts per day) of a pass."""
    return (
        view.valid_from,
        view.valid_until,
        pass_contacts_per_day(
            view.kind, valid_from=view.valid_from, valid_until=view.valid_until, rates=rates
        ),
    )


def _row(view: PassView) -> dict[str, Any]:
    return {name: getattr(view, name) for name in PassView.__slots__}


def _created_event(view: PassView) -> dict[str, Any]:
    return {
        "pass_id": view.pass_id,
        "customer_id": view.customer_id,
        "kind": view.kind,
        "valid_from": view.valid_from,
        "valid_until": view.valid_until,
        "price_amount": view.price_amount,
        "currency": view.currency,
        "external_ref": view.external_ref,
    }


def _load(connection: Connection, pass_id: str) -> PassView:
    row = connection.execute(select(_PASSES).where(_PASSES.c.pass_id == pass_id)).first()
    if row is None:
        raise NotFound(f"no pass {pass_id!r}")
    return PassView.from_row(row)


def _refunds(connection: Connection, pass_ids: list[str]) -> dict[str, list[RefundOut]]:
    found: dict[str, list[RefundOut]] = {pass_id: [] for pass_id in pass_ids}
    if not pass_ids:
        return found
    rows = connection.execute(
        select(_REFUNDS)
        .where(_REFUNDS.c.pass_id.in_(pass_ids))
        .order_by(_REFUNDS.c.created_at, _REFUNDS.c.refund_id)
    ).all()
    for row in rows:
        found[row.pass_id].append(refund_out(row))
    return found


def _refund_refused(connection: Connection, pass_id: str, order: RefundCreate) -> Exception:
    """Why a refund's guarded UPDATE changed nothing: unknown pass, currency or amount."""
    view = _load(connection, pass_id)
    if view.currency != order.currency:
        return InvalidInput(
            f"currency: the pass was paid in {view.currency}, not {order.currency}",
            errors=[{"field": "currency", "message": f"must be {view.currency}", "type": "value"}],
        )
    refundable = max(view.price_amount - view.refunded_amount, 0)
    return InvalidInput(
        f"amount: {order.amount} is more than the {refundable} {view.currency} still refundable",
        errors=[{"field": "amount", "message": f"at most {refundable}", "type": "value"}],
    )
