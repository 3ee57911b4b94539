"""Fast-lane passes as a billing system and the routing engine use them.

Selling, reading, listing, refunding and cancelling through the API; the pass desk's in-memory
answers on the route hot path (which pass, holds, use exactly once, abandon gives it back);
refund-on-breach; and every pass change written to the outbox with its event.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from service.app import create_app
from service.idempotency import write_transaction
from service.passes import PassDesk
from service.storage.tables import ContactRow, OutboxRow, PassRow, RefundRow
from tests.conftest import (
    ACD_KEY,
    ADMIN_KEY,
    BILLING_KEY,
    FakeClock,
    demo_rules_with,
    make_settings,
)

DAY = 86400.0
_KEY_NUMBERS = itertools.count()
BREACH_RULES = """
tiers:
  fast_lane:
    display_name: Priority line
    sla:
      voice: {answer_seconds: 20, target_percent: 90}
fast_lane:
  refund_on_breach: true
"""


def rules_with(tmp_path: Path, extra_yaml: str) -> Path:
    """The demo rules with extra top-level sections (tiers, fast_lane, capacity_plan)."""
    path = tmp_path / "rules.yaml"
    path.write_text(demo_rules_with(extra_yaml), encoding="utf-8")
    return path


@contextlib.contextmanager
def app_with_rules(tmp_path: Path, extra_yaml: str) -> Iterator[TestClient]:
    """A running app whose rules carry `extra_yaml` (call with the fake clock installed)."""
    settings = make_settings(tmp_path, rules_file=rules_with(tmp_path, extra_yaml))
    with TestClient(create_app(settings, run_background=False)) as test_client:
        yield test_client


def new_key() -> str:
    """A fresh Idempotency-Key."""
    return f"order-{next(_KEY_NUMBERS):06d}"


def billing(key: str | None = None) -> dict[str, str]:
    """Billing headers, with an Idempotency-Key when given."""
    headers = {"Authorization": f"Bearer {BILLING_KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def pass_body(customer_id: str = "cust-1", **fields: Any) -> dict[str, Any]:
    """A purchase body with sensible defaults (a single-incident pass for 15.00 EUR)."""
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "kind": "single_incident",
        "price_amount": 1500,
        "currency": "EUR",
    }
    body.update(fields)
    return body


def buy(client: TestClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Buy a pass with a new key; the pass."""
    response = client.post("/v1/passes", json=body or pass_body(), headers=billing(new_key()))
    assert response.status_code == 201, response.text
    return dict(response.json())


def subscription(customer_id: str, now: float, days: float = 365) -> dict[str, Any]:
    """A subscription body valid from now for `days`."""
    return pass_body(
        customer_id,
        kind="subscription",
        price_amount=9900,
        valid_from=now,
        valid_until=now + days * DAY,
    )


def refund(client: TestClient, pass_id: str, amount: int, **fields: Any) -> Any:
    """POST a refund with a new key; the response."""
    body = {"amount": amount, "currency": "EUR", "reason": "goodwill", **fields}
    return client.post(f"/v1/passes/{pass_id}/refunds", json=body, headers=billing(new_key()))


def events(client: TestClient, type_: str) -> list[dict[str, Any]]:
    """Outbox payloads of one event type, oldest first."""
    table = OutboxRow.__table__  # type: ignore[attr-defined]
    with client.app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            select(table.c.payload).where(table.c.type == type_).order_by(table.c.seq)
        ).all()
    return [row.payload for row in rows]


def count(client: TestClient, table: Any) -> int:
    """Rows in a table."""
    with client.app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def desk(client: TestClient) -> PassDesk:
    """The app's pass desk."""
    return client.app.state.passes  # type: ignore[attr-defined,no-any-return]


def call(client: TestClient, method: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one of the desk's coroutines on the app's event loop."""
    assert client.portal is not None
    return client.portal.call(functools.partial(method, *args, **kwargs))


# ---- selling and reading ---------------------------------------------------------------------


def test_a_single_incident_pass_is_valid_for_the_rules_default_days_and_announced(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client, pass_body("cust-7", external_ref="inv-2027-0042"))

    assert sold["pass_id"].startswith("pass_")
    assert (sold["customer_id"], sold["kind"], sold["status"]) == (
        "cust-7",
        "single_incident",
        "active",
    )
    assert sold["grants_fast_lane"] is True
    assert sold["valid_from"] == fake_clock.now
    assert sold["valid_until"] == fake_clock.now + 90 * DAY  # demo rules: the 90-day default
    assert (sold["price_amount"], sold["refundable_amount"], sold["refunds"]) == (1500, 1500, [])
    created = events(client, "pass.created")
    assert [e["data"]["pass_id"] for e in created] == [sold["pass_id"]]
    assert created[0]["data"]["external_ref"] == "inv-2027-0042"
    fetched = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing())
    assert fetched.status_code == 200
    assert fetched.json() == sold


def test_a_retry_that_spells_out_the_defaults_replays_the_sale(
    client: TestClient, fake_clock: FakeClock
) -> None:
    key = new_key()
    first = client.post("/v1/passes", json=pass_body("cust-retry"), headers=billing(key))
    retry = client.post(
        "/v1/passes",
        json=pass_body("cust-retry", valid_from=None, valid_until=None, external_ref=None),
        headers=billing(key),
    )

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.headers["Idempotent-Replay"] == "true"
    assert retry.json() == first.json()
    assert count(client, PassRow.__table__) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "subscription"}, "a subscription needs valid_until (the end of its term)"),
        (
            {"valid_from": 1_800_100_000.0, "valid_until": 1_800_050_000.0},
            "valid_until must be after valid_from",
        ),
        (
            {"valid_from": 1_700_000_000.0, "valid_until": 1_700_100_000.0},
            "valid_until is in the past: such a pass could never be used",
        ),
    ],
)
def test_a_pass_without_a_usable_validity_is_refused_and_nothing_is_sold(
    client: TestClient, fake_clock: FakeClock, fields: dict[str, Any], message: str
) -> None:
    response = client.post("/v1/passes", json=pass_body(**fields), headers=billing(new_key()))

    assert response.status_code == 422
    assert response.json()["detail"] == message
    assert count(client, PassRow.__table__) == 0  # type: ignore[attr-defined]
    assert events(client, "pass.created") == []


@pytest.mark.parametrize(
    "fields",
    [
        {"price_amount": -1},
        {"price_amount": 12.5},
        {"currency": "eur"},
        {"kind": "lifetime"},
        {"customer_id": ""},
        {"owner": "someone-else"},
        {"valid_from": "tomorrow"},
        {"external_ref": "inv\u0000-7"},
    ],
)
def test_malformed_purchases_are_422(
    client: TestClient, fake_clock: FakeClock, fields: dict[str, Any]
) -> None:
    response = client.post("/v1/passes", json=pass_body(**fields), headers=billing(new_key()))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_an_unknown_pass_is_404(client: TestClient, fake_clock: FakeClock) -> None:
    for response in (
        client.get("/v1/passes/pass_nope", headers=billing()),
        client.post("/v1/passes/pass_nope/cancel", headers=billing()),
        refund(client, "pass_nope", 100),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == "no pass 'pass_nope'"


def test_a_customers_passes_come_in_pages_oldest_first(
    client: TestClient, fake_clock: FakeClock
) -> None:
    bought = []
    for _ in range(5):
        bought.append(buy(client, pass_body("cust-pages"))["pass_id"])
        fake_clock.advance(1)
    buy(client, pass_body("cust-other"))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"customer_id": "cust-pages", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/passes", params=params, headers=billing())
        assert response.status_code == 200
        page = response.json()
        seen += [item["pass_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == bought
    assert pages == 3


def test_a_listing_parameter_given_twice_is_422(client: TestClient, fake_clock: FakeClock) -> None:
    buy(client, pass_body("cust-a"))

    twice = client.get("/v1/passes?customer_id=cust-b&customer_id=cust-a", headers=billing())
    limits = client.get("/v1/passes?customer_id=cust-a&limit=x&limit=1", headers=billing())

    assert (twice.status_code, limits.status_code) == (422, 422)
    assert twice.json()["detail"] == (
        "query.customer_id: given more than once; give each query parameter once"
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "bm90LWEtY3Vyc29y",  # base64 of "not-a-cursor"
        base64.urlsafe_b64encode(b'[1800000000.0, "pass_\\u0000"]').decode(),
        base64.urlsafe_b64encode(b'[true, "pass_00"]').decode(),
        "%%%",
    ],
)
def test_a_cursor_this_service_did_not_issue_is_422(
    client: TestClient, fake_clock: FakeClock, cursor: str
) -> None:
    response = client.get(
        "/v1/passes", params={"customer_id": "c", "cursor": cursor}, headers=billing()
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "cursor: not a cursor this service issued"


def test_a_pass_id_with_characters_no_pass_id_has_is_422(
    client: TestClient, fake_clock: FakeClock
) -> None:
    assert client.get("/v1/passes/pass%00x", headers=billing()).status_code == 422


# ---- refunds and cancellation ----------------------------------------------------------------


def test_partial_then_full_refund_and_the_fast_lane_ends_with_the_last_cent(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client)
    partial = refund(client, sold["pass_id"], 500, reason="late callback")

    assert partial.status_code == 201
    assert partial.json()["refund"]["amount"] == 500
    assert partial.json()["refund"]["automatic"] is False
    after_partial = partial.json()["pass"]
    assert (after_partial["refunded_amount"], after_partial["refundable_amount"]) == (500, 1000)
    assert (after_partial["status"], after_partial["grants_fast_lane"]) == ("active", True)
    assert desk(client).fast_lane_pass("cust-1", fake_clock.now) == sold["pass_id"]

    full = refund(client, sold["pass_id"], 1000)

    assert full.status_code == 201
    after_full = full.json()["pass"]
    assert (after_full["refunded_amount"], after_full["refundable_amount"]) == (1500, 0)
    assert (after_full["status"], after_full["grants_fast_lane"]) == ("refunded", False)
    assert [r["amount"] for r in after_full["refunds"]] == [500, 1000]
    assert desk(client).fast_lane_pass("cust-1", fake_clock.now) is None
    assert [e["data"]["refunded_amount"] for e in events(client, "pass.refunded")] == [500, 1500]


def test_refunding_more_than_is_left_is_422_and_refunds_nothing(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client)
    assert refund(client, sold["pass_id"], 1000).status_code == 201

    response = refund(client, sold["pass_id"], 501)

    assert response.status_code == 422
    assert response.json()["detail"] == "amount: 501 is more than the 500 EUR still refundable"
    assert count(client, RefundRow.__table__) == 1  # type: ignore[attr-defined]
    assert (
        client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()["refunded_amount"]
        == 1000
    )


def test_a_refund_in_another_currency_is_422(client: TestClient, fake_clock: FakeClock) -> None:
    sold = buy(client)

    response = refund(client, sold["pass_id"], 100, currency="USD")

    assert response.status_code == 422
    assert response.json()["detail"] == "currency: the pass was paid in EUR, not USD"
    assert count(client, RefundRow.__table__) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0, "currency": "EUR", "reason": "x"},
        {"amount": 100, "currency": "EUR", "reason": ""},
        {"amount": 100, "currency": "EUR"},
        {"amount": "100", "currency": "EUR", "reason": "x"},
        {"amount": 100, "currency": "EUR", "reason": "late\u0000"},
    ],
)
def test_a_refund_needs_a_positive_whole_amount_and_a_reason(
    client: TestClient, fake_clock: FakeClock, body: dict[str, Any]
) -> None:
    sold = buy(client)
    response = client.post(
        f"/v1/passes/{sold['pass_id']}/refunds", json=body, headers=billing(new_key())
    )
    assert response.status_code == 422


def test_cancelling_a_subscription_ends_its_fast_lane_and_repeating_it_changes_nothing(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client, subscription("cust-sub", fake_clock.now))
    assert desk(client).fast_lane_pass("cust-sub", fake_clock.now) == sold["pass_id"]

    first = client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())
    fake_clock.advance(60)
    again = client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert first.json()["cancelled_at"] == again.json()["cancelled_at"] == fake_clock.now - 60
    assert first.json()["grants_fast_lane"] is False
    assert desk(client).fast_lane_pass("cust-sub", fake_clock.now) is None
    assert len(events(client, "pass.cancelled")) == 1


def test_a_used_single_incident_pass_cannot_be_cancelled(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client)
    assert call(client, desk(client).consume, sold["pass_id"], "c-1", now=fake_clock.now)

    response = client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())

    assert response.status_code == 409
    assert response.json()["detail"] == (
        "this single-incident pass was already used and cannot be cancelled"
    )


def test_a_pass_a_waiting_contact_holds_cannot_be_cancelled_until_the_contact_ends(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client)
    portal = client.portal
    assert portal is not None
    # As a route call does (in this process, or in Redis when the state is shared).
    taken = portal.call(desk(client).take, sold["customer_id"], "c-waiting", fake_clock.now)
    assert taken == sold["pass_id"]

    held = client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())
    portal.call(desk(client).let_go, sold["pass_id"], "c-waiting")
    released = client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())

    assert held.status_code == 409
    assert "c-waiting" in held.json()["detail"]
    assert released.status_code == 200
    assert released.json()["status"] == "cancelled"


def test_a_pass_being_cancelled_is_neither_offered_nor_held_and_a_cancelled_one_never_held(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client, pass_body("cust-cancel"))
    passes = desk(client)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    outcome: dict[str, Any] = {}

    def cancel() -> None:
        outcome["pass"] = passes.cancel(sold["pass_id"], now=fake_clock.now)

    # The database's single writer is busy, so the cancellation stops between its hold
    # check and its write: a route arriving now must not take the pass.
    with write_transaction(engine):
        worker = threading.Thread(target=cancel)
        worker.start()
        deadline = time.monotonic() + 10
        while passes.fast_lane_pass("cust-cancel", fake_clock.now) is not None:
            assert time.monotonic() < deadline, "the cancellation never started"
            time.sleep(0.001)
        held_while_cancelling = passes.hold(sold["pass_id"], "c-racing")
    worker.join(10)

    assert held_while_cancelling is False
    assert outcome["pass"]["status"] == "cancelled"
    assert passes.holder(sold["pass_id"]) is None
    assert passes.hold(sold["pass_id"], "c-late") is False
    assert passes.fast_lane_pass("cust-cancel", fake_clock.now) is None


# ---- the route hot path: which pass, holds, use exactly once ---------------------------------


def test_a_subscription_is_preferred_over_a_single_incident_pass(
    client: TestClient, fake_clock: FakeClock
) -> None:
    single = buy(client, pass_body("cust-both"))
    sub = buy(client, subscription("cust-both", fake_clock.now))

    assert desk(client).fast_lane_pass("cust-both", fake_clock.now) == sub["pass_id"]
    assert desk(client).fast_lane_pass("cust-none", fake_clock.now) is None
    assert single["pass_id"] != sub["pass_id"]


def test_a_held_single_incident_pass_is_not_offered_to_the_customers_next_contact(
    client: TestClient, fake_clock: FakeClock
) -> None:
    first = buy(client, pass_body("cust-2", valid_until=fake_clock.now + 10 * DAY))
    second = buy(client, pass_body("cust-2", valid_until=fake_clock.now + 20 * DAY))
    passes = desk(client)

    offered = passes.fast_lane_pass("cust-2", fake_clock.now)
    assert offered is not None
    assert offered == first["pass_id"]  # the one that lapses first
    assert passes.hold(offered, "c-a") is True
    assert passes.hold(offered, "c-b") is False
    assert passes.fast_lane_pass("cust-2", fake_clock.now) == second["pass_id"]
    assert passes.hold(second["pass_id"], "c-b") is True
    assert passes.fast_lane_pass("cust-2", fake_clock.now) is None

    passes.release(offered, "c-a")  # c-a abandoned: the pass is unused and offered again
    assert passes.fast_lane_pass("cust-2", fake_clock.now) == first["pass_id"]
    stored = client.get(f"/v1/passes/{first['pass_id']}", headers=billing()).json()
    assert (stored["status"], stored["consumed_at"]) == ("active", None)


def test_a_single_incident_pass_is_used_exactly_once_by_the_first_answered_contact(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client, pass_body("cust-3"))
    passes = desk(client)
    passes.hold(sold["pass_id"], "c-1")
    fake_clock.advance(30)

    first = call(client, passes.consume, sold["pass_id"], "c-1", now=fake_clock.now)
    repeated = call(client, passes.consume, sold["pass_id"], "c-1", now=fake_clock.now + 5)
    other = call(client, passes.consume, sold["pass_id"], "c-2", now=fake_clock.now + 6)

    assert (first, repeated, other) == (True, False, False)
    consumed = events(client, "pass.consumed")
    assert [e["data"] for e in consumed] == [
        {
            "pass_id": sold["pass_id"],
            "customer_id": "cust-3",
            "contact_id": "c-1",
            "consumed_at": fake_clock.now,
        }
    ]
    stored = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()
    assert (stored["status"], stored["contact_id"], stored["consumed_at"]) == (
        "consumed",
        "c-1",
        fake_clock.now,
    )
    assert stored["grants_fast_lane"] is False
    assert passes.holder(sold["pass_id"]) is None
    assert passes.fast_lane_pass("cust-3", fake_clock.now) is None


def test_a_fully_refunded_pass_is_not_consumed_when_its_waiting_contact_is_answered(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client, pass_body("cust-refund"))
    free = buy(client, pass_body("cust-free", price_amount=0))
    passes = desk(client)
    assert passes.hold(sold["pass_id"], "c-waiting") is True
    assert passes.hold(free["pass_id"], "c-free") is True

    refunded = refund(client, sold["pass_id"], 1500)  # billing may always refund
    answered = call(client, passes.consume, sold["pass_id"], "c-waiting", now=fake_clock.now)
    free_answered = call(client, passes.consume, free["pass_id"], "c-free", now=fake_clock.now)

    assert refunded.status_code == 201
    assert (answered, free_answered) == (False, True)
    assert [e["data"]["pass_id"] for e in events(client, "pass.consumed")] == [free["pass_id"]]
    stored = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()
    assert (stored["status"], stored["contact_id"], stored["consumed_at"]) == (
        "refunded",
        None,
        None,
    )
    assert passes.holder(sold["pass_id"]) is None


def test_a_subscription_is_never_used_up(client: TestClient, fake_clock: FakeClock) -> None:
    sold = buy(client, subscription("cust-4", fake_clock.now))
    passes = desk(client)

    assert passes.hold(sold["pass_id"], "c-1") is True
    assert passes.hold(sold["pass_id"], "c-2") is True
    assert call(client, passes.consume, sold["pass_id"], "c-1", now=fake_clock.now) is False

    assert passes.fast_lane_pass("cust-4", fake_clock.now) == sold["pass_id"]
    assert events(client, "pass.consumed") == []


def test_passes_grant_the_fast_lane_only_within_their_validity(
    client: TestClient, fake_clock: FakeClock
) -> None:
    later = buy(
        client,
        subscription("cust-5", fake_clock.now)
        | {"valid_from": fake_clock.now + DAY, "valid_until": fake_clock.now + 2 * DAY},
    )
    passes = desk(client)

    assert passes.fast_lane_pass("cust-5", fake_clock.now) is None
    fake_clock.advance(DAY)
    assert passes.fast_lane_pass("cust-5", fake_clock.now) == later["pass_id"]
    fake_clock.advance(DAY)
    assert passes.fast_lane_pass("cust-5", fake_clock.now) is None
    stored = client.get(f"/v1/passes/{later['pass_id']}", headers=billing()).json()
    assert (stored["status"], stored["grants_fast_lane"]) == ("expired", False)


def test_a_restart_rebuilds_passes_and_the_holds_of_waiting_contacts(
    client: TestClient, fake_clock: FakeClock
) -> None:
    single = buy(client, pass_body("cust-6"))
    sub = buy(client, subscription("cust-7", fake_clock.now))
    used = buy(client, pass_body("cust-8"))
    call(client, desk(client).consume, used["pass_id"], "c-used", now=fake_clock.now)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            insert(ContactRow.__table__),  # type: ignore[attr-defined]
            [_contact_row("c-waiting", "cust-6", "queued", single["pass_id"], fake_clock.now)],
        )

    restarted = PassDesk(
        engine=engine,
        rules=client.app.state.rules,  # type: ignore[attr-defined]
        settings=client.app.state.settings,  # type: ignore[attr-defined]
    )
    call(client, restarted.recover)

    assert restarted.holder(single["pass_id"]) == "c-waiting"
    assert restarted.fast_lane_pass("cust-6", fake_clock.now) is None  # held
    assert restarted.fast_lane_pass("cust-7", fake_clock.now) == sub["pass_id"]
    assert restarted.fast_lane_pass("cust-8", fake_clock.now) is None  # used


def restarted_desk(client: TestClient) -> PassDesk:
    """A new pass desk on the app's database, recovered as after a restart."""
    restarted = PassDesk(
        engine=client.app.state.engine,  # type: ignore[attr-defined]
        rules=client.app.state.rules,  # type: ignore[attr-defined]
        settings=client.app.state.settings,  # type: ignore[attr-defined]
    )
    call(client, restarted.recover)
    return restarted


def add_contacts(client: TestClient, *rows: dict[str, Any]) -> None:
    """Insert contacts as the routing engine stored them before a restart."""
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(insert(ContactRow.__table__), list(rows))  # type: ignore[attr-defined]


def test_after_a_restart_an_answered_contact_whose_pass_was_not_consumed_still_holds_it(
    client: TestClient, fake_clock: FakeClock
) -> None:
    answered = buy(client, pass_body("cust-r1"))
    settled = buy(client, pass_body("cust-r2"))
    call(client, desk(client).consume, settled["pass_id"], "c-settled", now=fake_clock.now)
    add_contacts(
        client,
        _contact_row(
            "c-answered",
            "cust-r1",
            "connected",
            answered["pass_id"],
            fake_clock.now,
            connected_at=fake_clock.now,
        ),
        _contact_row(
            "c-settled",
            "cust-r2",
            "connected",
            settled["pass_id"],
            fake_clock.now,
            connected_at=fake_clock.now,
        ),
    )

    restarted = restarted_desk(client)

    assert restarted.holder(answered["pass_id"]) == "c-answered"
    assert restarted.fast_lane_pass("cust-r1", fake_clock.now) is None
    assert restarted.holder(settled["pass_id"]) is None


def test_settling_after_a_restart_consumes_the_passes_of_answered_contacts_exactly_once(
    client: TestClient, fake_clock: FakeClock
) -> None:
    connected = buy(client, pass_body("cust-s1"))
    completed = buy(client, pass_body("cust-s2"))
    abandoned = buy(client, pass_body("cust-s3"))
    waiting = buy(client, pass_body("cust-s4"))
    refunded = buy(client, pass_body("cust-s5"))
    assert refund(client, refunded["pass_id"], 1500).status_code == 201
    answered_at = fake_clock.now + 40
    add_contacts(
        client,
        _contact_row(
            "c-on-call",
            "cust-s1",
            "connected",
            connected["pass_id"],
            fake_clock.now,
            connected_at=answered_at,
        ),
        _contact_row(
            "c-done",
            "cust-s2",
            "completed",
            completed["pass_id"],
            fake_clock.now,
            connected_at=answered_at + 1,
            ended_at=answered_at + 60,
        ),
        _contact_row(
            "c-gone",
            "cust-s3",
            "abandoned",
            abandoned["pass_id"],
            fake_clock.now,
            ended_at=answered_at,
        ),
        _contact_row("c-queued", "cust-s4", "queued", waiting["pass_id"], fake_clock.now),
        _contact_row(
            "c-free",
            "cust-s5",
            "connected",
            refunded["pass_id"],
            fake_clock.now,
            connected_at=answered_at,
        ),
    )
    fake_clock.advance(300)
    restarted = restarted_desk(client)

    first = call(client, restarted.settle_answered, fake_clock.now)
    again = call(client, restarted.settle_answered, fake_clock.now + 1)

    assert (first, again) == (2, 0)
    consumed = [e["data"] for e in events(client, "pass.consumed")]
    assert consumed == [
        {
            "pass_id": connected["pass_id"],
            "customer_id": "cust-s1",
            "contact_id": "c-on-call",
            "consumed_at": answered_at,
        },
        {
            "pass_id": completed["pass_id"],
            "customer_id": "cust-s2",
            "contact_id": "c-done",
            "consumed_at": answered_at + 1,
        },
    ]

    def stored(sold: dict[str, Any]) -> tuple[str, str | None]:
        found = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()
        return found["status"], found["contact_id"]

    assert stored(connected) == ("consumed", "c-on-call")
    assert stored(completed) == ("consumed", "c-done")
    assert stored(abandoned) == ("active", None)
    assert stored(waiting) == ("active", None)
    assert stored(refunded) == ("refunded", None)
    assert restarted.holder(connected["pass_id"]) is None
    assert restarted.holder(waiting["pass_id"]) == "c-queued"
    assert restarted.fast_lane_pass("cust-s1", fake_clock.now) is None
    assert restarted.fast_lane_pass("cust-s3", fake_clock.now) == abandoned["pass_id"]


def test_a_pass_sold_by_another_replica_is_seen_after_a_refresh(
    client: TestClient, fake_clock: FakeClock
) -> None:
    passes = desk(client)
    other_replica = PassDesk(
        engine=client.app.state.engine,  # type: ignore[attr-defined]
        rules=client.app.state.rules,  # type: ignore[attr-defined]
        settings=client.app.state.settings,  # type: ignore[attr-defined]
    )
    call(client, other_replica.recover)
    sold = buy(client, subscription("cust-9", fake_clock.now))
    assert other_replica.fast_lane_pass("cust-9", fake_clock.now) is None

    other_replica.refresh(fake_clock.now)
    assert other_replica.fast_lane_pass("cust-9", fake_clock.now) == sold["pass_id"]

    client.post(f"/v1/passes/{sold['pass_id']}/cancel", headers=billing())
    fake_clock.advance(1)
    other_replica.refresh(fake_clock.now)
    assert other_replica.fast_lane_pass("cust-9", fake_clock.now) is None
    assert passes.fast_lane_pass("cust-9", fake_clock.now) is None


def _contact_row(
    contact_id: str,
    customer_id: str,
    status: str,
    pass_id: str,
    now: float,
    *,
    connected_at: float | None = None,
    ended_at: float | None = None,
) -> dict[str, Any]:
    return {
        "connected_at": connected_at,
        "ended_at": ended_at,
        "contact_id": contact_id,
        "customer_id": customer_id,
        "channel": "voice",
        "request": {},
        "request_hash": "0" * 64,
        "status": status,
        "rule": "default",
        "stage": 0,
        "priority": 30,
        "excluded_agents": [],
        "tier": "fast_lane",
        "pass_id": pass_id,
        "first_decision": {},
        "created_at": now,
        "updated_at": now,
    }


# ---- refund on breach ------------------------------------------------------------------------


def test_a_contact_answered_after_the_fast_lane_sla_gets_the_rest_refunded_once(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, BREACH_RULES) as client:
        sold = buy(client, pass_body("cust-b"))
        assert refund(client, sold["pass_id"], 300).status_code == 201
        passes = desk(client)
        call(client, passes.consume, sold["pass_id"], "c-late", now=fake_clock.now)

        on_time = call(
            client,
            passes.check_breach,
            sold["pass_id"],
            "c-late",
            channel="voice",
            wait_seconds=20.0,
            now=fake_clock.now,
        )
        late = call(
            client,
            passes.check_breach,
            sold["pass_id"],
            "c-late",
            channel="voice",
            wait_seconds=20.5,
            now=fake_clock.now,
        )
        again = call(
            client,
            passes.check_breach,
            sold["pass_id"],
            "c-late",
            channel="voice",
            wait_seconds=90.0,
            now=fake_clock.now,
        )

        assert on_time is None
        assert late is not None
        assert (late.amount, late.reason, late.automatic) == (1200, "sla_breach", True)
        assert again is None
        stored = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()
        assert (stored["refunded_amount"], stored["status"]) == (1500, "consumed")
        assert [(r["amount"], r["automatic"]) for r in stored["refunds"]] == [
            (300, False),
            (1200, True),
        ]
        automatic = [e["data"] for e in events(client, "pass.refunded") if e["data"]["automatic"]]
        assert [(e["amount"], e["reason"]) for e in automatic] == [(1200, "sla_breach")]


def test_refund_on_breach_ignores_channels_without_an_sla_other_contacts_and_subscriptions(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with app_with_rules(tmp_path, BREACH_RULES) as client:
        single = buy(client, pass_body("cust-c"))
        sub = buy(client, subscription("cust-d", fake_clock.now))
        passes = desk(client)
        call(client, passes.consume, single["pass_id"], "c-1", now=fake_clock.now)

        def breach(pass_id: str, contact_id: str, channel: str) -> Any:
            return call(
                client,
                passes.check_breach,
                pass_id,
                contact_id,
                channel=channel,
                wait_seconds=3600.0,
                now=fake_clock.now,
            )

        assert breach(single["pass_id"], "c-1", "chat") is None  # no fast-lane SLA on chat
        assert breach(single["pass_id"], "c-other", "voice") is None  # not the contact that used it
        assert breach(sub["pass_id"], "c-2", "voice") is None  # subscriptions are not refunded
        assert count(client, RefundRow.__table__) == 0  # type: ignore[attr-defined]


def test_without_the_refund_on_breach_policy_a_late_answer_refunds_nothing(
    client: TestClient, fake_clock: FakeClock
) -> None:
    sold = buy(client)
    passes = desk(client)
    call(client, passes.consume, sold["pass_id"], "c-1", now=fake_clock.now)

    result = call(
        client,
        passes.check_breach,
        sold["pass_id"],
        "c-1",
        channel="voice",
        wait_seconds=7200.0,
        now=fake_clock.now,
    )

    assert result is None
    assert count(client, RefundRow.__table__) == 0  # type: ignore[attr-defined]


# ---- who may call ----------------------------------------------------------------------------

PASS_ROUTES = [
    ("POST", "/v1/passes"),
    ("GET", "/v1/passes?customer_id=cust-1"),
    ("GET", "/v1/passes/pass_x"),
    ("POST", "/v1/passes/pass_x/refunds"),
    ("POST", "/v1/passes/pass_x/cancel"),
    ("GET", "/v1/fastlane/quote?channel=voice"),
]


@pytest.mark.parametrize(("method", "path"), PASS_ROUTES)
def test_pass_and_quote_routes_need_a_billing_key(
    client: TestClient, fake_clock: FakeClock, method: str, path: str
) -> None:
    missing = client.request(method, path)
    unknown = client.request(method, path, headers={"Authorization": "Bearer not-a-real-key-0001"})
    assert (missing.status_code, unknown.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    for key in (ACD_KEY, ADMIN_KEY):
        response = client.request(method, path, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 403
        assert response.json()["detail"] == "this API key lacks the 'billing' scope"
    assert count(client, PassRow.__table__) == 0  # type: ignore[attr-defined]
