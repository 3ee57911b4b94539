"""Rate limits per API key: 429 with Retry-After, per scope, shared across replicas via Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import FakeClock, make_settings, serve


def _over_limit(response_status: int, headers: dict[str, str], body: dict) -> None:
    assert response_status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    assert body["status"] == 429
    assert "rate limit" in body["detail"]


def test_a_key_over_its_limit_gets_429_with_retry_after_and_other_scopes_carry_on(
    tmp_path: Path,
    fake_clock: FakeClock,
    admin_headers: dict[str, str],
    billing_headers: dict[str, str],
) -> None:
    settings = make_settings(tmp_path, rate_limit_admin="3/minute")
    with serve(settings) as client:
        for _ in range(3):
            assert client.get("/v1/rules/versions", headers=admin_headers).status_code == 200
        refused = client.get("/v1/rules/versions", headers=admin_headers)
        _over_limit(refused.status_code, dict(refused.headers), refused.json())
        assert refused.headers["content-type"] == "application/problem+json"
        # The billing key has its own, separate limit.
        listed = client.get("/v1/passes?customer_id=c", headers=billing_headers)
        assert listed.status_code == 200


def test_a_rate_limit_that_is_not_one_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        make_settings(tmp_path, rate_limit_route="fast please")


def test_a_rate_limit_store_that_is_down_lets_requests_through(
    tmp_path: Path, fake_clock: FakeClock, admin_headers: dict[str, str]
) -> None:
    settings = make_settings(
        tmp_path, rate_limit_admin="1/minute", redis_url="redis://127.0.0.1:1/0"
    )
    with serve(settings) as client:
        for _ in range(3):
            assert client.get("/v1/rules/versions", headers=admin_headers).status_code == 200


@pytest.mark.integration
def test_two_replicas_sharing_redis_share_one_limit_per_key(
    tmp_path: Path, fake_clock: FakeClock, admin_headers: dict[str, str], redis_url: str
) -> None:
    # One deployment: the same Redis and key prefix.
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    first: Settings = make_settings(
        tmp_path / "a", rate_limit_admin="5/minute", redis_url=redis_url, redis_prefix=prefix
    )
    second: Settings = make_settings(
        tmp_path / "b", rate_limit_admin="5/minute", redis_url=redis_url, redis_prefix=prefix
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve(first) as replica_a, serve(second) as replica_b:
        statuses = []
        for replica in (replica_a, replica_b, replica_a, replica_b, replica_a, replica_b):
            statuses.append(replica.get("/v1/rules/versions", headers=admin_headers).status_code)
        assert statuses == [200, 200, 200, 200, 200, 429]
