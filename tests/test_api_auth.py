"""API keys and scopes: every /v1 route refuses a missing, unknown or wrong-scope key.

The routes come from the app itself, so a new route is covered (or makes these tests fail until
someone says which scope it needs) without editing this file.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import DEMO_RULES, Settings
from tests.conftest import ACD_KEY, ADMIN_KEY, BILLING_KEY, make_settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
KEY_OF_SCOPE = {"route": ACD_KEY, "admin": ADMIN_KEY, "billing": BILLING_KEY}
# Which scope each family of paths needs. A /v1 route outside these families fails
# `test_every_v1_route_belongs_to_a_scope_family` until it is added here.
SCOPE_OF_PREFIX = {
    "/v1/route": "route",
    "/v1/contacts/": "route",
    "/v1/reservations/": "route",
    "/v1/agents": "route",
    "/v1/queue": "route",
    "/v1/rules": "admin",
    "/v1/passes": "billing",
    "/v1/fastlane": "billing",
    "/v1/appointments": "route",
    "/v1/webhooks": "admin",
    "/v1/reports": "admin",
    "/v1/performance": "admin",
}
OPEN_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"]


def _v1_routes() -> list[tuple[str, str]]:
    """(method, path template) of every /v1 route of a freshly created app."""
    app = create_app(make_settings(Path(tempfile.gettempdir())), run_background=False)
    routes = set()
    for context in iter_route_contexts(app.routes):
        path = getattr(context.route, "path_format", context.path)
        if path.startswith("/v1"):
            routes.update((method, path) for method in context.methods or () if method != "HEAD")
    return sorted(routes, key=lambda r: (r[1], r[0]))


V1_ROUTES = _v1_routes()
ROUTE_IDS = [f"{method} {path}" for method, path in V1_ROUTES]


def required_scope(path: str) -> str | None:
    """The scope a path needs, by its family; None for a path of no known family."""
    for prefix, scope in SCOPE_OF_PREFIX.items():
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return scope
    return None


def concrete(path: str) -> str:
    """A valid-looking URL for a path template: every path parameter becomes `1`."""
    return re.sub(r"\{[^}]+\}", "1", path)


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    return client.request(method, concrete(path), headers=headers)


def assert_problem(response: Any, status: int, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["instance"] == concrete(path)
    return body


@pytest.fixture
def demo_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app in demo mode: no configured keys, demo rules and agents."""
    settings = Settings(
        demo=True,
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        api_keys={},
        rules_file=DEMO_RULES,
        log_level="warning",
        log_requests=False,
        write_flush_interval_seconds=0.01,
    )
    with TestClient(create_app(settings, run_background=False)) as test_client:
        yield test_client


def test_the_app_has_v1_routes_of_both_scopes() -> None:
    # Guards the enumeration itself: an empty or partial list would make every test below pass.
    assert ("POST", "/v1/route") in V1_ROUTES
    assert ("PUT", "/v1/rules") in V1_ROUTES
    assert ("GET", "/v1/agents/{agent_id}") in V1_ROUTES
    assert len(V1_ROUTES) >= 18


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_belongs_to_a_scope_family(method: str, path: str) -> None:
    assert required_scope(path) is not None, f"which scope does {method} {path} need?"


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_without_an_api_key_is_401_with_a_bearer_challenge(
    client: TestClient, method: str, path: str
) -> None:
    response = call(client, method, path, headers={})
    body = assert_problem(response, 401, path)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["detail"] == "missing API key: send `Authorization: Bearer KEY`"


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_with_an_unknown_api_key_is_401(
    client: TestClient, method: str, path: str
) -> None:
    response = call(
        client, method, path, headers={"Authorization": "Bearer not-a-key-of-this-service-0001"}
    )
    body = assert_problem(response, 401, path)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["detail"] == "unknown API key"


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_refuses_a_key_sent_with_another_scheme_than_bearer(
    client: TestClient, method: str, path: str
) -> None:
    response = call(client, method, path, headers={"Authorization": f"Basic {ACD_KEY}"})
    assert_problem(response, 401, path)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_refuses_keys_without_its_scope_with_403(
    client: TestClient, method: str, path: str
) -> None:
    needed = required_scope(path)
    wrong = [scope for scope in KEY_OF_SCOPE if scope != needed]
    assert len(wrong) == len(KEY_OF_SCOPE) - 1  # every other scope's key is refused
    for scope in wrong:
        response = call(
            client, method, path, headers={"Authorization": f"Bearer {KEY_OF_SCOPE[scope]}"}
        )
        body = assert_problem(response, 403, path)
        assert body["detail"] == f"this API key lacks the {needed!r} scope"
        assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=ROUTE_IDS)
def test_every_v1_route_lets_a_key_with_its_scope_through(
    client: TestClient, method: str, path: str
) -> None:
    needed = required_scope(path)
    assert needed is not None
    response = call(
        client, method, path, headers={"Authorization": f"Bearer {KEY_OF_SCOPE[needed]}"}
    )
    # Past authentication the request may still be incomplete (422) or name nothing (404).
    assert response.status_code not in (401, 403), response.text


def test_the_openapi_document_declares_bearer_auth_401_and_403_on_every_v1_operation(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path in V1_ROUTES:
        operation = document["paths"][path][method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}], f"{method} {path}"
        assert {"401", "403"} <= operation["responses"].keys(), f"{method} {path}"


def test_demo_keys_are_unknown_outside_demo_mode(client: TestClient) -> None:
    for key, path in [
        ("demo-acd-key", "/v1/queue"),
        ("demo-admin-key", "/v1/rules"),
        ("demo-billing-key", "/v1/queue"),
    ]:
        response = client.get(path, headers={"Authorization": f"Bearer {key}"})
        body = assert_problem(response, 401, path)
        assert body["detail"] == "unknown API key"


def test_in_demo_mode_each_demo_key_has_exactly_its_own_scope(demo_client: TestClient) -> None:
    def status(key: str, path: str) -> int:
        return demo_client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code

    assert (status("demo-acd-key", "/v1/queue"), status("demo-acd-key", "/v1/rules")) == (200, 403)
    assert (status("demo-admin-key", "/v1/queue"), status("demo-admin-key", "/v1/rules")) == (
        403,
        200,
    )
    assert (status("demo-billing-key", "/v1/queue"), status("demo-billing-key", "/v1/rules")) == (
        403,
        403,
    )
    assert status("demo-operator-key", "/v1/queue") == 401


def _settings_error(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make_settings(tmp_path, **values)
    return str(caught.value)


def test_settings_refuse_to_start_without_api_keys_outside_demo_mode(tmp_path: Path) -> None:
    message = _settings_error(tmp_path, api_keys={})
    assert "SKILLROUTE_API_KEYS is empty" in message


@pytest.mark.parametrize(
    "key", ["changeme", "secret", "CHANGE-ME", "demo-acd-key", "short-key-15chr"]
)
def test_settings_refuse_a_placeholder_demo_or_short_key_outside_demo_mode(
    tmp_path: Path, key: str
) -> None:
    message = _settings_error(tmp_path, api_keys={ACD_KEY: ["route"], key: ["admin"]})
    assert f"API key {key[:4]}… is a placeholder or shorter than 16 characters" in message


def test_a_refused_configuration_does_not_print_the_real_keys_beside_the_bad_one() -> None:
    real_key = "a-real-production-key-0001"
    with pytest.raises(ValidationError) as caught:
        Settings(demo=False, api_keys={"changeme": ["admin"], real_key: ["route"]})
    message = str(caught.value)
    assert "API key chan… is a placeholder" in message
    assert "0001" not in message


def test_settings_accept_a_16_character_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys={"k" * 16: ["route"]})
    assert settings.keys == {"k" * 16: frozenset({"route"})}


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_metrics_and_api_docs_need_no_key(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
