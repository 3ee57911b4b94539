"""Webhooks as a receiving system lives with them: signed, retried, recorded, never lost.

Every delivery goes over real HTTP to a receiver on 127.0.0.1 that verifies it with the
receiver side of `standardwebhooks`, as an integrator's endpoint would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service import clock
from service.events.delivery import WebhookDeliverer, new_secret, retry_delay
from service.events.endpoints import WebhookEndpoints
from service.events.outbox import EventType, emit
from service.settings import Settings
from service.storage.db import make_engine, upgrade
from service.storage.tables import WebhookDeliveryRow
from service.webhook_models import WebhookEndpointIn
from tests.conftest import (
    ACD_KEY,
    BILLING_KEY,
    FakeClock,
    libpq_url,
    make_settings,
    serve,
    with_search_path,
)

START = "2027-01-15T08:00:00Z"  # the fake clock's start, as event timestamps show it


# ---- a real receiver ------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    """One request as the receiver got it, and what verifying it with the secret gave."""

    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None  # None: the signature did not verify

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]


class _Server(ThreadingHTTPServer):
    # A listen backlog deeper than the deliverers' concurrency: a full backlog drops
    # connections, which would show up as failed attempts that the service did not cause.
    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that verifies each webhook and answers as scripted."""

    def __init__(self, port: int = 0) -> None:
        self.secret = ""
        self.answers: list[int] = []  # status codes for the next requests; 200 after them
        self.delay = 0.0  # seconds each answer takes
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    payload = None
                with receiver._lock:
                    receiver.requests.append(Received(headers, body, payload))
                    scripted = receiver.answers.pop(0) if receiver.answers else 200
                time.sleep(receiver.delay)
                # The sender may have stopped waiting (a service shut down mid-attempt).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(scripted if payload is not None else 400)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self._server = _Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def types(self) -> list[str]:
        """Event types received, in the order they arrived."""
        return [r.payload["type"] if r.payload else "<unverified>" for r in self.requests]

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers (on a chosen port if given); all stopped after the test."""
    started: list[Receiver] = []

    def start(port: int = 0) -> Receiver:
        receiver = Receiver(port)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if receiver._thread.is_alive():
            receiver.stop()


@pytest.fixture
def receiver(receivers: Callable[..., Receiver]) -> Receiver:
    """One running receiver."""
    return receivers()


# ---- helpers --------------------------------------------------------------------------------
def register(
    client: TestClient, headers: dict[str, str], receiver: Receiver, **fields: Any
) -> dict[str, Any]:
    """Register the receiver's URL; it learns the secret from the answer, as an operator does."""
    response = client.post(
        "/v1/webhooks/endpoints", json={"url": receiver.url, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    endpoint = dict(response.json())
    receiver.secret = endpoint["secret"]
    return endpoint


def emit_event(client: TestClient, type_: EventType, data: dict[str, Any]) -> str:
    """Commit one event the way the service's own changes do."""
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        return emit(connection, type_, data, now=clock.now())


def deliver(client: TestClient) -> int:
    """One delivery cycle, waited to its end (attempts made and recorded)."""
    assert client.portal is not None
    deliverer: WebhookDeliverer = client.app.state.webhooks  # type: ignore[attr-defined]
    return client.portal.call(deliverer.deliver_due)


def deliveries(
    client: TestClient, headers: dict[str, str], endpoint_id: str, **query: Any
) -> list[dict[str, Any]]:
    """An endpoint's deliveries, newest first."""
    response = client.get(
        f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", params=query, headers=headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def attempt_codes(delivery: dict[str, Any]) -> list[int | None]:
    return [a["status_code"] for a in delivery["attempts"]]


# ---- delivery -------------------------------------------------------------------------------
def test_a_registered_endpoint_receives_every_event_signed_so_the_receiver_verifies_it(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    endpoint = register(client, admin_headers, receiver, description="billing CRM")
    assert endpoint["secret"].startswith("whsec_")
    assert (endpoint["url"], endpoint["event_types"], endpoint["active"]) == (
        receiver.url,
        [],
        True,
    )
    created = emit_event(client, "pass.created", {"pass_id": "p-1", "customer_id": "cust-9"})
    queued = emit_event(client, "contact.queued", {"contact_id": "c-1", "queue_position": 3})

    assert deliver(client) == 2
    got = sorted(receiver.requests, key=lambda r: r.event_id != created)
    assert [r.event_id for r in got] == [created, queued]
    assert [r.payload for r in got] == [
        {
            "type": "pass.created",
            "timestamp": START,
            "data": {"pass_id": "p-1", "customer_id": "cust-9"},
        },
        {
            "type": "contact.queued",
            "timestamp": START,
            "data": {"contact_id": "c-1", "queue_position": 3},
        },
    ]
    assert {r.headers["content-type"] for r in got} == {"application/json"}

    listed = deliveries(client, admin_headers, endpoint["endpoint_id"])
    assert [(d["event_id"], d["event_type"], d["status"]) for d in listed] == [
        (queued, "contact.queued", "delivered"),
        (created, "pass.created", "delivered"),
    ]
    assert [(d["delivered_at"], d["next_attempt_at"]) for d in listed] == [
        (fake_clock.now, None)
    ] * 2
    assert [
        [(a["attempt"], a["status_code"], a["error"]) for a in d["attempts"]] for d in listed
    ] == [[(1, 200, None)]] * 2

    assert deliver(client) == 0  # delivered once, never again
    assert len(receiver.requests) == 2


def test_a_tampered_body_or_another_secret_fails_verification_at_the_receiver(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    register(client, admin_headers, receiver)
    emit_event(client, "pass.refunded", {"pass_id": "p-7", "amount": 1500, "currency": "EUR"})
    assert deliver(client) == 1
    (got,) = receiver.requests
    assert Webhook(receiver.secret).verify(got.body, got.headers)["data"]["amount"] == 1500

    tampered = got.body.replace(b"1500", b"15000")
    assert tampered != got.body
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(receiver.secret).verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(new_secret()).verify(got.body, got.headers)


def test_a_receiver_answering_500_gets_the_same_event_again_after_the_backoff(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    endpoint = register(client, admin_headers, receiver)
    receiver.answers = [500]
    event_id = emit_event(client, "appointment.booked", {"appointment_id": "a-1"})

    assert deliver(client) == 1
    (waiting,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
    assert (waiting["status"], attempt_codes(waiting)) == ("pending", [500])
    assert waiting["attempts"][0]["error"] == "HTTP 500"
    # The first retry waits webhook_backoff_seconds (5 s), stretched by at most 10 % jitter.
    assert fake_clock.now + 5.0 <= waiting["next_attempt_at"] <= fake_clock.now + 5.5

    assert deliver(client) == 0  # not due yet
    fake_clock.advance(5.5)
    assert deliver(client) == 1

    (done,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
    assert (done["status"], attempt_codes(done), done["last_status_code"]) == (
        "delivered",
        [500, 200],
        200,
    )
    assert [a["attempt"] for a in done["attempts"]] == [1, 2]
    first, second = receiver.requests
    # Same event, same id (receivers deduplicate on it), same body; both verified.
    assert first.event_id == second.event_id == event_id
    assert first.body == second.body
    assert first.payload == second.payload is not None


def test_a_delivery_fails_after_its_last_attempt_and_an_admin_retry_delivers_it(
    tmp_path: Path, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    with serve(make_settings(tmp_path, webhook_max_attempts=2)) as client:
        endpoint = register(client, admin_headers, receiver)
        receiver.answers = [503, 503]
        emit_event(client, "pass.cancelled", {"pass_id": "p-3"})
        assert deliver(client) == 1
        fake_clock.advance(6)
        assert deliver(client) == 1
        (failed,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
        assert (failed["status"], attempt_codes(failed), failed["next_attempt_at"]) == (
            "failed",
            [503, 503],
            None,
        )
        fake_clock.advance(86_400)
        assert deliver(client) == 0  # given up: no more attempts on its own

        retried = client.post(
            f"/v1/webhooks/deliveries/{failed['delivery_id']}/retry", headers=admin_headers
        )
        assert retried.status_code == 202, retried.text
        assert (retried.json()["status"], retried.json()["next_attempt_at"]) == (
            "pending",
            fake_clock.now,
        )
        assert deliver(client) == 1
        (delivered,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
        assert (delivered["status"], attempt_codes(delivered)) == ("delivered", [503, 503, 200])
        assert [a["attempt"] for a in delivered["attempts"]] == [1, 2, 3]

        again = client.post(
            f"/v1/webhooks/deliveries/{failed['delivery_id']}/retry", headers=admin_headers
        )
        assert again.status_code == 409
        assert again.json()["detail"] == (
            f"delivery {failed['delivery_id']} is delivered: only a failed one is retried"
        )
    assert len(receiver.requests) == 3


def test_a_receiver_slower_than_the_timeout_counts_as_a_failed_attempt(
    tmp_path: Path, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    receiver.delay = 1.0
    with serve(make_settings(tmp_path, webhook_timeout_seconds=0.2)) as client:
        endpoint = register(client, admin_headers, receiver)
        emit_event(client, "contact.queued", {"contact_id": "c-1"})
        assert deliver(client) == 1
        (slow,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
    (attempt,) = slow["attempts"]
    assert (slow["status"], attempt["status_code"], attempt["error"]) == (
        "pending",
        None,
        "no answer within 0.2 s",
    )
    assert attempt["duration_ms"] >= 190  # the whole wait, cut off at the timeout


def test_an_endpoint_subscribed_to_pass_events_gets_only_those(
    client: TestClient,
    admin_headers: dict[str, str],
    receivers: Callable[..., Receiver],
    fake_clock: FakeClock,
) -> None:
    billing, everything = receivers(), receivers()
    register(client, admin_headers, billing, event_types=["pass.created", "pass.refunded"])
    register(client, admin_headers, everything)
    for type_ in ("contact.queued", "pass.created", "appointment.booked", "pass.refunded"):
        emit_event(client, type_, {"n": type_})

    assert deliver(client) == 6
    assert sorted(billing.types()) == ["pass.created", "pass.refunded"]
    assert sorted(everything.types()) == [
        "appointment.booked",
        "contact.queued",
        "pass.created",
        "pass.refunded",
    ]


def test_a_deactivated_endpoint_gets_nothing_more_and_its_waiting_delivery_is_cancelled(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    endpoint = register(client, admin_headers, receiver)
    path = f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}"
    receiver.answers = [500]
    emit_event(client, "sla.breach_warning", {"contact_id": "c-5"})
    assert deliver(client) == 1

    assert client.delete(path, headers=admin_headers).status_code == 204
    assert client.get(path, headers=admin_headers).json()["active"] is False
    (cancelled,) = deliveries(client, admin_headers, endpoint["endpoint_id"])
    assert (cancelled["status"], cancelled["next_attempt_at"]) == ("cancelled", None)

    emit_event(client, "sla.breach_warning", {"contact_id": "c-6"})
    fake_clock.advance(3600)
    assert deliver(client) == 0
    assert len(receiver.requests) == 1
    assert len(deliveries(client, admin_headers, endpoint["endpoint_id"])) == 1

    retry = client.post(
        f"/v1/webhooks/deliveries/{cancelled['delivery_id']}/retry", headers=admin_headers
    )
    assert retry.status_code == 409
    rotate = client.post(f"{path}/rotate-secret", headers=admin_headers)
    assert rotate.status_code == 409
    assert rotate.json()["detail"] == f"webhook endpoint {endpoint['endpoint_id']} is deactivated"
    assert client.delete(path, headers=admin_headers).status_code == 204  # repeatable


def test_after_a_secret_rotation_deliveries_verify_with_the_new_secret_only(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    endpoint = register(client, admin_headers, receiver)
    old_secret = endpoint["secret"]
    path = f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}"
    rotated = client.post(f"{path}/rotate-secret", headers=admin_headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"].startswith("whsec_") and new["secret"] != old_secret
    assert {k: v for k, v in new.items() if k != "secret"} == {
        k: v for k, v in endpoint.items() if k != "secret"
    }
    # The secret is shown on creation and rotation only.
    assert "secret" not in client.get(path, headers=admin_headers).json()
    listed = client.get("/v1/webhooks/endpoints", headers=admin_headers).json()
    assert [("secret" in item) for item in listed["items"]] == [False]

    receiver.secret = new["secret"]
    emit_event(client, "pass.consumed", {"pass_id": "p-2"})
    assert deliver(client) == 1
    (got,) = receiver.requests
    assert got.payload is not None
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(got.body, got.headers)


# ---- restarts -------------------------------------------------------------------------------
def test_an_event_committed_before_a_shutdown_is_delivered_by_the_next_instance(
    tmp_path: Path, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    settings = make_settings(tmp_path)
    with serve(settings) as before:
        endpoint = register(before, admin_headers, receiver)
        event_id = emit_event(before, "appointment.rescheduled", {"appointment_id": "a-9"})
    assert receiver.requests == []

    with serve(settings) as after:
        assert deliver(after) == 1
        (delivery,) = deliveries(after, admin_headers, endpoint["endpoint_id"])
        assert (delivery["event_id"], delivery["status"]) == (event_id, "delivered")
    (got,) = receiver.requests
    assert (got.event_id, got.payload and got.payload["type"]) == (
        event_id,
        "appointment.rescheduled",
    )


def test_an_event_whose_receiver_was_down_is_delivered_by_the_next_instance_after_the_backoff(
    tmp_path: Path,
    admin_headers: dict[str, str],
    receivers: Callable[..., Receiver],
    fake_clock: FakeClock,
) -> None:
    settings = make_settings(tmp_path)
    down = receivers()
    down.stop()
    with serve(settings) as before:
        endpoint = register(before, admin_headers, down)
        emit_event(before, "contact.assigned", {"contact_id": "c-1", "agent_id": "a-1"})
        assert deliver(before) == 1
        (refused,) = deliveries(before, admin_headers, endpoint["endpoint_id"])
        assert (refused["status"], attempt_codes(refused)) == ("pending", [None])
        assert refused["attempts"][0]["error"].startswith("ConnectError")

    back = receivers(down.port)
    back.secret = endpoint["secret"]
    fake_clock.advance(5.5)
    with serve(settings) as after:
        assert deliver(after) == 1
        (delivered,) = deliveries(after, admin_headers, endpoint["endpoint_id"])
        assert (delivered["status"], attempt_codes(delivered)) == ("delivered", [None, 200])
    assert back.types() == ["contact.assigned"]


def test_an_attempt_cut_off_by_a_shutdown_is_made_again_at_once_by_the_next_instance(
    tmp_path: Path, admin_headers: dict[str, str], receiver: Receiver
) -> None:
    settings = make_settings(tmp_path, webhook_poll_seconds=0.05)
    receiver.delay = 1.0  # still answering when the service stops
    with serve(settings, run_background=True) as before:
        endpoint = register(before, admin_headers, receiver)
        event_id = emit_event(before, "pass.created", {"pass_id": "p-1"})
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.event_id for r in receiver.requests] == [event_id]
    stopped_at = time.time()

    receiver.delay = 0.0
    with serve(settings) as after:
        (cut_off,) = deliveries(after, admin_headers, endpoint["endpoint_id"])
        # The lease was handed back: due now, not after the lease of a whole batch.
        assert (cut_off["status"], cut_off["attempts"]) == ("pending", [])
        assert cut_off["next_attempt_at"] <= stopped_at
        assert deliver(after) == 1
        (delivered,) = deliveries(after, admin_headers, endpoint["endpoint_id"])
        assert (delivered["status"], attempt_codes(delivered)) == ("delivered", [200])
    # At least once: the receiver saw the event twice, under the same webhook-id.
    assert [r.event_id for r in receiver.requests] == [event_id, event_id]


def test_the_background_loop_delivers_on_its_own_and_outlives_a_database_error(
    tmp_path: Path,
    admin_headers: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fan_out = WebhookDeliverer._fan_out
    failures: list[float] = []

    def flaky_fan_out(self: WebhookDeliverer, now: float) -> int:
        if not failures:
            failures.append(now)
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return fan_out(self, now)

    monkeypatch.setattr(WebhookDeliverer, "_fan_out", flaky_fan_out)
    settings = make_settings(tmp_path, webhook_poll_seconds=0.05)
    with serve(settings, run_background=True) as client:
        register(client, admin_headers, receiver)
        event_id = emit_event(client, "pass.created", {"pass_id": "p-1"})
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(failures) == 1
    assert [r.event_id for r in receiver.requests] == [event_id]


# ---- retry schedule -------------------------------------------------------------------------
def test_retries_wait_twice_as_long_each_time_up_to_an_hour_plus_at_most_ten_percent() -> None:
    assert [retry_delay(n, base=5.0, jitter=0.0) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert retry_delay(11, base=5.0, jitter=0.0) == 3600.0  # 5·2^10 = 5120 s, capped
    assert retry_delay(1, base=5.0, jitter=1.0) == pytest.approx(5.5)
    assert retry_delay(10_000, base=3600.0, jitter=1.0) == pytest.approx(3960.0)


# ---- admin API ------------------------------------------------------------------------------
WEBHOOK_ROUTES = [
    ("POST", "/v1/webhooks/endpoints"),
    ("GET", "/v1/webhooks/endpoints"),
    ("GET", "/v1/webhooks/endpoints/ep_1"),
    ("DELETE", "/v1/webhooks/endpoints/ep_1"),
    ("POST", "/v1/webhooks/endpoints/ep_1/rotate-secret"),
    ("GET", "/v1/webhooks/endpoints/ep_1/deliveries"),
    ("POST", "/v1/webhooks/deliveries/dlv_1/retry"),
]


@pytest.mark.parametrize(("method", "path"), WEBHOOK_ROUTES)
def test_webhook_admin_routes_need_an_admin_key(client: TestClient, method: str, path: str) -> None:
    body = {"url": "https://crm.example.com/hooks"} if method == "POST" else None
    missing = client.request(method, path, json=body)
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    for key in (ACD_KEY, BILLING_KEY):
        wrong = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        assert wrong.status_code == 403
        assert wrong.json()["detail"] == "this API key lacks the 'admin' scope"
    assert client.get("/v1/webhooks/endpoints", headers={}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://crm.example.com/hooks"}, "url"),
        ({"url": "https://user:password@crm.example.com/hooks"}, "url"),
        ({"url": "https://crm.example.com/a hook"}, "url"),
        ({"url": "https://crm.example.com:70000/hooks"}, "url"),
        ({"url": "https://crm.example.com/" + "h" * 2000}, "url"),
        ({"url": 42}, "url"),
        ({"event_types": []}, "url"),
        (
            {"url": "https://crm.example.com/", "event_types": ["contact.teleported"]},
            "event_types.0",
        ),
        (
            {"url": "https://crm.example.com/", "event_types": ["pass.created", "pass.created"]},
            "event_types",
        ),
        ({"url": "https://crm.example.com/", "description": "d" * 501}, "description"),
        ({"url": "https://crm.example.com/", "secret": "whsec_bWluZQ=="}, "secret"),
    ],
)
def test_a_bad_endpoint_registration_is_refused_with_its_field_and_registers_nothing(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/webhooks/endpoints", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert client.get("/v1/webhooks/endpoints", headers=admin_headers).json()["total"] == 0


def test_unknown_endpoints_and_deliveries_are_404_and_bad_paging_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for method, path in WEBHOOK_ROUTES[2:]:
        response = client.request(method, path, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/webhooks/endpoints/ep_1", headers=admin_headers).json()["detail"] == (
        "webhook endpoint ep_1 does not exist"
    )
    for query in ({"limit": 0}, {"offset": -1}, {"limit": 501}):
        response = client.get("/v1/webhooks/endpoints", params=query, headers=admin_headers)
        assert response.status_code == 422, query
    registered = client.post(
        "/v1/webhooks/endpoints", json={"url": "https://crm.example.com/"}, headers=admin_headers
    ).json()
    bad_status = client.get(
        f"/v1/webhooks/endpoints/{registered['endpoint_id']}/deliveries",
        params={"status": "lost"},
        headers=admin_headers,
    )
    assert bad_status.status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        "offset=x&offset=1",  # only the last value would have been read: x went unchecked
        "offset=2&offset=1",
        "limit=1&limit=abc",
        "offset=1&limit=5&limit=6",
    ],
)
def test_a_paging_parameter_given_twice_is_422_on_both_webhook_lists(
    client: TestClient, admin_headers: dict[str, str], query: str
) -> None:
    registered = client.post(
        "/v1/webhooks/endpoints", json={"url": "https://crm.example.com/"}, headers=admin_headers
    ).json()
    lists = [
        "/v1/webhooks/endpoints",
        f"/v1/webhooks/endpoints/{registered['endpoint_id']}/deliveries",
    ]
    for path in lists:
        response = client.get(f"{path}?{query}", headers=admin_headers)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "given more than once" in response.json()["detail"]
        assert client.get(f"{path}?{query}").status_code == 401  # the key is checked first
    assert client.get(f"{lists[0]}?offset=0&limit=5", headers=admin_headers).status_code == 200


def test_endpoints_page_oldest_first_and_deliveries_newest_first_with_a_status_filter(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver, fake_clock: FakeClock
) -> None:
    ids = []
    for number in range(3):
        ids.append(register(client, admin_headers, receiver, description=f"crm {number}"))
        fake_clock.advance(1)
    page = client.get(
        "/v1/webhooks/endpoints", params={"offset": 1, "limit": 1}, headers=admin_headers
    ).json()
    assert (page["total"], [e["description"] for e in page["items"]]) == (3, ["crm 1"])

    receiver.secret = ids[0]["secret"]
    for id_ in ids[1:]:
        client.delete(f"/v1/webhooks/endpoints/{id_['endpoint_id']}", headers=admin_headers)
    receiver.answers = [500]  # the first event's first attempt fails
    events = []
    for number in range(3):
        events.append(emit_event(client, "contact.queued", {"contact_id": f"c-{number}"}))
        assert deliver(client) == 1
        fake_clock.advance(1)

    endpoint_id = ids[0]["endpoint_id"]
    newest = deliveries(client, admin_headers, endpoint_id, limit=2)
    assert [d["event_id"] for d in newest] == [events[2], events[1]]
    assert [d["event_id"] for d in deliveries(client, admin_headers, endpoint_id, offset=2)] == [
        events[0]
    ]
    assert [
        d["event_id"] for d in deliveries(client, admin_headers, endpoint_id, status="pending")
    ] == [events[0]]
    assert [
        d["event_id"] for d in deliveries(client, admin_headers, endpoint_id, status="delivered")
    ] == [events[2], events[1]]


# ---- PostgreSQL -----------------------------------------------------------------------------
@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections see only a fresh schema, dropped afterwards."""
    schema = f"skillroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_url, schema)
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.integration
async def test_on_postgresql_four_replicas_deliver_every_event_exactly_once(
    pg_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    upgrade(pg_url)
    settings: Settings = make_settings(tmp_path, database_url=pg_url)
    engines = [make_engine(pg_url) for _ in range(4)]
    replicas = [WebhookDeliverer(engine, settings) for engine in engines]
    receiver.delay = 0.6  # attempts are still in flight when the later replicas look

    async def cycle_after(replica: WebhookDeliverer, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return await replica.deliver_due()

    try:
        registry = WebhookEndpoints(engines[0], replicas[0])
        endpoint = await registry.register(WebhookEndpointIn(url=receiver.url))
        receiver.secret = endpoint.secret
        with engines[0].begin() as connection:
            event_ids = {
                emit(connection, "contact.queued", {"contact_id": f"c-{n}"}, now=clock.now())
                for n in range(40)
            }
        sent = 0
        for _ in range(10):
            if len(receiver.requests) >= 40:
                break
            # Two replicas fan out and claim at the same moment, on their own connections;
            # two more claim while those attempts are under way.
            counts = await asyncio.gather(
                *(cycle_after(r, s) for r, s in zip(replicas, (0.0, 0.0, 0.15, 0.3), strict=True))
            )
            sent += sum(counts)
        with engines[0].connect() as connection:
            statuses = connection.execute(
                select(WebhookDeliveryRow.status, WebhookDeliveryRow.attempts)  # type: ignore[call-overload]
            ).all()
            pending_outbox = connection.execute(
                text("SELECT count(*) FROM outbox WHERE NOT fanned_out")
            ).scalar_one()
    finally:
        for replica in replicas:
            await replica.close()
        for engine in engines:
            engine.dispose()
    assert sent == 40  # no attempt was made twice
    assert sorted(r.event_id for r in receiver.requests) == sorted(event_ids)
    assert all(r.payload is not None for r in receiver.requests)
    assert (len(statuses), set(statuses), pending_outbox) == (40, {("delivered", 1)}, 0)


@pytest.mark.integration
def test_on_postgresql_an_event_committed_before_a_shutdown_is_delivered_after_it(
    pg_url: str,
    tmp_path: Path,
    admin_headers: dict[str, str],
    receiver: Receiver,
    fake_clock: FakeClock,
) -> None:
    settings = make_settings(tmp_path, database_url=pg_url)
    with serve(settings) as before:
        endpoint = register(before, admin_headers, receiver, event_types=["pass.refunded"])
        emit_event(before, "pass.created", {"pass_id": "p-1"})
        refunded = emit_event(before, "pass.refunded", {"pass_id": "p-1", "amount": 900})
    with serve(settings) as after:
        assert deliver(after) == 1
        (delivery,) = deliveries(after, admin_headers, endpoint["endpoint_id"])
        assert (delivery["event_id"], delivery["status"], attempt_codes(delivery)) == (
            refunded,
            "delivered",
            [200],
        )
    assert [r.event_id for r in receiver.requests] == [refunded]
    assert receiver.requests[0].payload == {
        "type": "pass.refunded",
        "timestamp": START,
        "data": {"pass_id": "p-1", "amount": 900},
    }
