"""Idempotency-Key: a billing system's retries, duplicates and mistakes never sell or refund twice.

Through the API (purchases and refunds, on SQLite and on real PostgreSQL) and on the store
itself (in-progress claims, expiry, a stale claim taken over).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from service.app import create_app
from service.idempotency import (
    Claim,
    IdempotencyStore,
    StoredResponse,
    request_hash,
    run_once,
    write_transaction,
)
from service.problems import Conflict, InvalidInput
from service.storage.db import make_engine, upgrade
from service.storage.tables import IdempotencyRow, PassRow, RefundRow
from tests.conftest import BILLING_KEY, FakeClock, make_settings
from tests.test_passes_api import billing, buy, count, new_key, pass_body
from tests.test_postgres import PgDatabase, pg  # noqa: F401  (the `pg` fixture)

PASSES = PassRow.__table__  # type: ignore[attr-defined]
OTHER_BILLING_KEY = "test-billing-key-000000002"


def concurrent_purchases(client: TestClient, key: str, body: dict[str, Any], n: int) -> list[Any]:
    """`n` identical purchases with one key, released at the same moment from `n` threads."""
    barrier = threading.Barrier(n)

    def one(_: int) -> Any:
        barrier.wait()
        return client.post("/v1/passes", json=body, headers=billing(key))

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def assert_one_pass_sold(responses: list[Any]) -> str:
    """Every answer is the sale, its replay, or 409 in progress; the same pass each time."""
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    sold = [r for r in responses if r.status_code == 201]
    assert len({r.json()["pass_id"] for r in sold}) == 1
    assert [r.headers.get("idempotent-replay") for r in sold].count(None) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["detail"] == (
                "a request with this Idempotency-Key is in progress; retry it shortly"
            )
            assert response.headers["retry-after"] == "1"
    return str(sold[0].json()["pass_id"])


def test_twenty_concurrent_purchases_with_one_key_sell_exactly_one_pass(
    client: TestClient, fake_clock: FakeClock
) -> None:
    responses = concurrent_purchases(client, "order-concurrent", pass_body("cust-c"), 20)

    pass_id = assert_one_pass_sold(responses)
    assert count(client, PASSES) == 1
    retry = client.post("/v1/passes", json=pass_body("cust-c"), headers=billing("order-concurrent"))
    assert (retry.status_code, retry.json()["pass_id"]) == (201, pass_id)
    assert retry.headers["idempotent-replay"] == "true"


@pytest.mark.integration
def test_twenty_concurrent_purchases_with_one_key_sell_one_pass_on_postgresql(
    tmp_path: Path,
    fake_clock: FakeClock,
    pg: PgDatabase,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, database_url=pg.url)
    with TestClient(create_app(settings, run_background=False)) as client:
        responses = concurrent_purchases(client, "order-pg", pass_body("cust-pg"), 20)

        pass_id = assert_one_pass_sold(responses)
    assert pg.rows("SELECT pass_id FROM passes") == [(pass_id,)]
    assert pg.rows("SELECT count(*) FROM outbox WHERE type = 'pass.created'") == [(1,)]


def test_a_retry_replays_the_stored_sale_with_the_replay_header(
    client: TestClient, fake_clock: FakeClock
) -> None:
    key = new_key()
    first = client.post("/v1/passes", json=pass_body(), headers=billing(key))
    fake_clock.advance(120)
    # Same body with keys in another order and other whitespace: the same request.
    retry = client.post(
        "/v1/passes",
        content=b'{"currency": "EUR",  "price_amount": 1500, "kind": "single_incident",'
        b' "customer_id": "cust-1"}',
        headers={**billing(key), "Content-Type": "application/json"},
    )

    assert first.status_code == retry.status_code == 201
    assert "idempotent-replay" not in first.headers
    assert retry.headers["idempotent-replay"] == "true"
    assert retry.json() == first.json()
    assert count(client, PASSES) == 1


def test_the_same_key_with_another_body_is_422_and_sells_nothing_more(
    client: TestClient, fake_clock: FakeClock
) -> None:
    key = new_key()
    assert client.post("/v1/passes", json=pass_body(), headers=billing(key)).status_code == 201

    response = client.post("/v1/passes", json=pass_body(price_amount=1400), headers=billing(key))

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "this Idempotency-Key was already used for a different request; "
        "use a new key for a new request"
    )
    assert count(client, PASSES) == 1


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        (None, "missing Idempotency-Key header: name each request, reuse it on retries"),
        ("", "missing Idempotency-Key header: name each request, reuse it on retries"),
        ("k" * 256, "Idempotency-Key is longer than 255 characters"),
        ("tab\tinside", "Idempotency-Key must be printable ASCII"),
    ],
)
def test_a_purchase_without_a_usable_key_is_400_and_sells_nothing(
    client: TestClient, fake_clock: FakeClock, key: str | None, detail: str
) -> None:
    headers = {"Authorization": f"Bearer {BILLING_KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = client.post("/v1/passes", json=pass_body(), headers=headers)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert count(client, PASSES) == 0


def test_a_255_character_key_is_accepted(client: TestClient, fake_clock: FakeClock) -> None:
    response = client.post("/v1/passes", json=pass_body(), headers=billing("k" * 255))
    assert response.status_code == 201


def test_a_failed_request_frees_its_key_for_a_corrected_retry(
    client: TestClient, fake_clock: FakeClock
) -> None:
    key = new_key()
    refused = client.post("/v1/passes", json=pass_body(kind="subscription"), headers=billing(key))
    corrected = client.post(
        "/v1/passes",
        json=pass_body(kind="subscription", valid_until=fake_clock.now + 30 * 86400),
        headers=billing(key),
    )

    assert refused.status_code == 422
    assert corrected.status_code == 201
    assert "idempotent-replay" not in corrected.headers
    assert count(client, IdempotencyRow.__table__) == 1  # type: ignore[attr-defined]


def test_keys_belong_to_one_api_key(tmp_path: Path, fake_clock: FakeClock) -> None:
    settings = make_settings(
        tmp_path,
        api_keys={BILLING_KEY: ["billing"], OTHER_BILLING_KEY: ["billing"]},
    )
    with TestClient(create_app(settings, run_background=False)) as client:
        ours = client.post("/v1/passes", json=pass_body("a"), headers=billing("shared-key"))
        theirs = client.post(
            "/v1/passes",
            json=pass_body("b"),
            headers={
                "Authorization": f"Bearer {OTHER_BILLING_KEY}",
                "Idempotency-Key": "shared-key",
            },
        )

        assert ours.status_code == theirs.status_code == 201
        assert ours.json()["pass_id"] != theirs.json()["pass_id"]
        assert count(client, PASSES) == 2


def test_a_retried_refund_never_refunds_twice(client: TestClient, fake_clock: FakeClock) -> None:
    sold = buy(client)
    key = new_key()
    body = {"amount": 400, "currency": "EUR", "reason": "agent was late"}

    first = client.post(f"/v1/passes/{sold['pass_id']}/refunds", json=body, headers=billing(key))
    retry = client.post(f"/v1/passes/{sold['pass_id']}/refunds", json=body, headers=billing(key))

    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotent-replay"] == "true"
    assert retry.json() == first.json()
    assert count(client, RefundRow.__table__) == 1  # type: ignore[attr-defined]
    stored = client.get(f"/v1/passes/{sold['pass_id']}", headers=billing()).json()
    assert stored["refunded_amount"] == 400


def test_a_refund_key_reused_on_another_pass_is_422(
    client: TestClient, fake_clock: FakeClock
) -> None:
    first, second = buy(client), buy(client)
    key = new_key()
    body = {"amount": 100, "currency": "EUR", "reason": "goodwill"}
    assert (
        client.post(f"/v1/passes/{first['pass_id']}/refunds", json=body, headers=billing(key))
    ).status_code == 201

    response = client.post(
        f"/v1/passes/{second['pass_id']}/refunds", json=body, headers=billing(key)
    )

    assert response.status_code == 422
    assert count(client, RefundRow.__table__) == 1  # type: ignore[attr-defined]


def test_a_refund_without_a_key_is_400(client: TestClient, fake_clock: FakeClock) -> None:
    sold = buy(client)
    response = client.post(
        f"/v1/passes/{sold['pass_id']}/refunds",
        json={"amount": 100, "currency": "EUR", "reason": "x"},
        headers=billing(),
    )
    assert response.status_code == 400
    assert count(client, RefundRow.__table__) == 0  # type: ignore[attr-defined]


# ---- the store itself ------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def claim(store: IdempotencyStore, *, key: str = "k", body: Any = None, now: float) -> Any:
    return store.claim(
        caller="caller-1",
        operation="pass.purchase",
        key=key,
        request_hash=request_hash(body or {"n": 1}),
        now=now,
    )


def test_the_request_hash_ignores_key_order_and_whitespace_but_not_values_or_target() -> None:
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})
    assert request_hash({"a": 1}, target="pass_1") != request_hash({"a": 1}, target="pass_2")


def test_a_second_claim_while_the_first_runs_is_409_and_a_finished_one_is_replayed(
    engine: Engine,
) -> None:
    store = IdempotencyStore(engine, ttl_seconds=3600)
    first = claim(store, now=1000.0)
    assert isinstance(first, Claim)

    with pytest.raises(Conflict):
        claim(store, now=1001.0)
    store.record(first, status_code=201, body={"pass_id": "p1"})

    assert claim(store, now=1002.0) == StoredResponse(201, {"pass_id": "p1"})
    with pytest.raises(InvalidInput):
        claim(store, body={"n": 2}, now=1003.0)


def test_an_abandoned_claim_lets_the_next_request_run(engine: Engine) -> None:
    store = IdempotencyStore(engine, ttl_seconds=3600)
    first = claim(store, now=1000.0)
    store.abandon(first)

    again = claim(store, body={"n": 2}, now=1001.0)

    assert isinstance(again, Claim)
    assert again.request_hash == request_hash({"n": 2})


def test_keys_expire_after_the_ttl(engine: Engine) -> None:
    store = IdempotencyStore(engine, ttl_seconds=3600, purge_every_seconds=10**9)
    store.record(claim(store, now=1000.0), status_code=201, body={"pass_id": "p1"})

    later = claim(store, body={"n": 2}, now=1000.0 + 3601)

    assert isinstance(later, Claim)  # a different body is welcome: the old key is forgotten
    assert store.purge(now=1000.0 + 3601 + 3601) == 1
    with engine.connect() as connection:
        rows = connection.execute(
            select(func.count()).select_from(IdempotencyRow.__table__)  # type: ignore[attr-defined]
        ).scalar_one()
    assert rows == 0


def test_a_stale_in_progress_claim_is_taken_over_and_its_owner_cannot_record_any_more(
    engine: Engine,
) -> None:
    store = IdempotencyStore(engine, ttl_seconds=3600, stale_after_seconds=60)
    crashed = claim(store, now=1000.0)

    takeover = claim(store, now=1061.0)

    assert isinstance(takeover, Claim)
    with pytest.raises(Conflict):
        store.record(crashed, status_code=201, body={"pass_id": "late"})
    store.record(takeover, status_code=201, body={"pass_id": "p2"})
    assert claim(store, now=1062.0) == StoredResponse(201, {"pass_id": "p2"})


async def test_a_cancelled_request_frees_its_key_off_the_event_loop(engine: Engine) -> None:
    store = IdempotencyStore(engine, ttl_seconds=3600)
    started = asyncio.Event()
    writer_held = threading.Event()
    release_writer = threading.Event()

    async def client_goes_away(claim: Claim) -> tuple[int, dict[str, Any]]:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("cancelled before this")

    def busy_writer() -> None:
        # Another writer holds the database until the test lets go (bounded, so a regression
        # fails instead of hanging).
        with write_transaction(engine):
            writer_held.set()
            release_writer.wait(30)

    request = asyncio.create_task(
        run_once(
            store,
            caller="caller-1",
            operation="pass.purchase",
            key="k",
            fingerprint=request_hash({"n": 1}),
            now=1000.0,
            action=client_goes_away,
        )
    )
    await started.wait()  # the key is claimed and the request is running
    holder = threading.Thread(target=busy_writer)
    holder.start()
    assert writer_held.wait(5)

    request.cancel()
    # The cancellation completes at once although freeing the key must wait for the writer:
    # the delete runs in a worker thread, not on the event loop.
    done, _ = await asyncio.wait({request}, timeout=2)
    key_kept_while_writer_busy = _key_exists(engine)
    release_writer.set()
    holder.join(5)
    for _ in range(500):
        if not _key_exists(engine):
            break
        await asyncio.sleep(0.01)

    assert done == {request} and request.cancelled()
    assert key_kept_while_writer_busy is True
    assert not _key_exists(engine)
    assert isinstance(claim(store, body={"n": 2}, now=1001.0), Claim)


def _key_exists(engine: Engine) -> bool:
    with engine.connect() as connection:
        rows = connection.execute(
            select(func.count()).select_from(IdempotencyRow.__table__)  # type: ignore[attr-defined]
        ).scalar_one()
    return bool(rows)
