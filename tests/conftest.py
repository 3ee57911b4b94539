"""Shared fixtures: an app on a temporary SQLite file, API keys per client type, a clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import clock
from service.app import create_app
from service.settings import DEMO_RULES, Settings

ACD_KEY = "test-acd-key-000000000001"
ADMIN_KEY = "test-admin-key-00000000001"
BILLING_KEY = "test-billing-key-000000001"
IN_CI = os.environ.get("CI", "").lower() == "true"


class FakeClock:
    """Wall-clock time that only moves when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Routing time under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(clock, "now", fake)
    return fake


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test app: real keys (not demo), demo rules, a fresh SQLite file."""
    values: dict[str, Any] = {
        "demo": False,
        "database_url": f"sqlite:///{tmp_path / 'skillroute.db'}",
        "api_keys": {ACD_KEY: ["route"], ADMIN_KEY: ["admin"], BILLING_KEY: ["billing"]},
        "rules_file": DEMO_RULES,
        "log_level": "warning",
        "log_requests": False,
        "write_flush_interval_seconds": 0.01,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default test settings."""
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings, fake_clock: FakeClock) -> Iterator[TestClient]:
    """A running app (lifespan included, no background timer) and a client for it."""
    app = create_app(settings, run_background=False)
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def acd_headers() -> dict[str, str]:
    """Headers of an ACD/IVR (scope route)."""
    return {"Authorization": f"Bearer {ACD_KEY}"}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Headers of a contact-center admin (scope admin)."""
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def billing_headers() -> dict[str, str]:
    """Headers of a billing system (scope billing)."""
    return {"Authorization": f"Bearer {BILLING_KEY}"}


def contact(contact_id: str, **fields: Any) -> dict[str, Any]:
    """A route request body with sensible defaults."""
    body: dict[str, Any] = {
        "contact_id": contact_id, "customer_id": f"cust-{contact_id}", "channel": "voice",
        "segment": "consumer", "inquiry_type": "billing", "journey_stage": "established",
        "language": "en", "attributes": {},
    }
    body.update(fields)
    return body


def agent(skills: dict[str, int], *, status: str = "available", languages: list[str] | None = None,
          capacity: dict[str, int] | None = None, name: str = "Agent") -> dict[str, Any]:
    """An agent profile body."""
    return {"name": name, "skills": skills, "languages": languages or ["en"],
            "capacity": capacity or {"voice": 1}, "status": status}


def tick(client: TestClient) -> None:
    """Run the periodic dispatch once (expiry, relaxation), as the timer would."""
    assert client.portal is not None
    client.portal.call(client.app.state.routing.tick)  # type: ignore[attr-defined]
