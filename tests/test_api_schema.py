"""The OpenAPI contract, fuzzed in-process: no request gets a 5xx, every response is documented.

Schemathesis generates valid and invalid requests for every operation of the app's own
OpenAPI document and checks each response: not a server error, a documented status code, a
documented content type, a body and headers matching the schema, invalid input rejected with a
4xx, auth enforced, undocumented methods answered with 405 and a correct `Allow` header.

One check stays off: `positive_data_acceptance`. A schema-valid contact may still name a
segment or channel the active rules do not know; the vocabularies live in the hot-reloadable
rules, not in the static schema, so such a contact gets 422 by design (see
tests/test_api_bad_input.py).

Each operation gets a fresh app (lifespan running, SQLite file in tmp_path) with the demo
agents and a few contacts in every state, and generated ids are often swapped for ids that
exist, so requests reach routing, dispatch and the database instead of stopping at 404.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from service.app import create_app
from service.demo import demo_agents
from service.settings import Settings
from tests.conftest import contact, make_settings

ALL_SCOPES_KEY = "test-all-scopes-key-000000001"
AUTH = {"Authorization": f"Bearer {ALL_SCOPES_KEY}"}

# The demo rules' vocabularies: generated names are mapped onto these, most of the time.
CHANNELS = ["voice", "chat", "email", "callback"]
VOCABULARY = {
    "channel": CHANNELS,
    "segment": ["consumer", "smb", "enterprise"],
    "inquiry_type": ["billing", "technical", "sales", "cancellation", "setup"],
    "journey_stage": ["prospect", "onboarding", "established", "renewal", "at_risk"],
    "language": ["en", "es"],
}
SKILLS = ["billing", "technical", "sales", "retention", "onboarding", "enterprise_care"]


def all_scopes_settings(tmp_path: Path) -> Settings:
    """Test settings with one key that may call every operation."""
    return make_settings(tmp_path, api_keys={ALL_SCOPES_KEY: ["route", "admin", "billing"]})


class AppUnderTest:
    """The ASGI app schemathesis calls: a fresh, seeded app per test, swapped in by a fixture."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the `seeded_app` fixture sets the app under test"
        await self.app(scope, receive, send)


APP_UNDER_TEST = AppUnderTest()
# Ids that exist in the current app, by path parameter name (filled by `seeded_app`).
EXISTING: dict[str, list[Any]] = {}

# The document the app serves at /openapi.json (building it needs no lifespan).
schema = schemathesis.openapi.from_dict(
    create_app(all_scopes_settings(Path(tempfile.gettempdir())), run_background=False).openapi(),
    config=schemathesis.Config.from_dict(
        {
            "base-url": "http://testserver",
            "headers": AUTH,
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    ),
)
schema.app = APP_UNDER_TEST


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half of the time, path ids name a contact, reservation, agent or version that exists."""
    names = [name for name in path_parameters or {} if EXISTING.get(name)]
    if not path_parameters or not names:
        return st.just(path_parameters)
    existing = st.fixed_dictionaries({name: st.sampled_from(EXISTING[name]) for name in names})
    return st.one_of(st.just(path_parameters), existing.map(lambda ids: {**path_parameters, **ids}))


def _digest(value: object) -> int:
    return zlib.crc32(repr(value).encode("utf-8", "surrogatepass"))


def _known(value: object, names: list[str], digest: int) -> object:
    """A schema-valid name becomes a known one; anything else stays as generated.

    Only schema-valid strings are replaced, and by schema-valid strings, so a request that
    schemathesis generated as invalid stays invalid.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return value
    return names[(digest + _digest(value)) % len(names)]


def _known_keys(mapping: object, names: list[str], digest: int) -> object:
    """Rename a mapping's keys one-to-one onto known names (never merging two keys)."""
    if not isinstance(mapping, dict) or len(mapping) > len(names):
        return mapping
    if not all(isinstance(k, str) and 1 <= len(k) <= 64 for k in mapping):
        return mapping
    return {names[(digest + i) % len(names)]: v for i, v in enumerate(mapping.values())}


@schema.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """Three in four contacts and agents use the rules' vocabularies, so they reach routing.

    The rest keep their generated names and meet the vocabulary check (422).
    """
    digest = _digest(body)
    if not isinstance(body, dict) or digest % 4 == 0:
        return body
    path = context.operation.path if context.operation else ""
    if path == "/v1/route":
        return {
            k: _known(v, VOCABULARY[k], digest) if k in VOCABULARY else v for k, v in body.items()
        }
    if path == "/v1/agents/{agent_id}":
        mapped = dict(body)
        if "skills" in mapped:
            mapped["skills"] = _known_keys(mapped["skills"], SKILLS, digest)
        if "capacity" in mapped:
            mapped["capacity"] = _known_keys(mapped["capacity"], CHANNELS, digest)
        if isinstance(mapped.get("languages"), list):
            mapped["languages"] = [
                _known(v, VOCABULARY["language"], digest) for v in mapped["languages"]
            ]
        return mapped
    return body


def _call(method: str, path: str, **case: Any) -> Any:
    """Send one hand-made request through schemathesis's in-process transport."""
    operation = schema[path][method]
    return operation.Case(headers=AUTH, **case).call()


@pytest.fixture
def seeded_app(tmp_path: Path) -> Iterator[FastAPI]:
    """A running app with the twelve demo agents and contacts reserved, connected and queued."""
    app = create_app(all_scopes_settings(tmp_path), run_background=False)
    APP_UNDER_TEST.app = app  # the first request starts its lifespan; the plugin ends it
    EXISTING.clear()
    EXISTING.update(agent_id=[], contact_id=[], reservation_id=[], version=[1])
    for agent_id, body in demo_agents():
        response = _call(
            "PUT",
            "/v1/agents/{agent_id}",
            path_parameters={"agent_id": agent_id},
            body=body.model_dump(),
            media_type="application/json",
        )
        assert response.status_code == 201, response.text
        EXISTING["agent_id"].append(agent_id)
    for number in range(16):
        inquiry = VOCABULARY["inquiry_type"][number % 5]
        response = _call(
            "POST",
            "/v1/route",
            media_type="application/json",
            body=contact(f"c-{number}", inquiry_type=inquiry),
        )
        assert response.status_code == 201, response.text
        decision = response.json()
        EXISTING["contact_id"].append(decision["contact_id"])
        if decision["reservation"]:
            EXISTING["reservation_id"].append(decision["reservation"]["reservation_id"])
    # One reserved contact becomes connected, so that `complete` has something to complete.
    accepted = _call(
        "POST",
        "/v1/reservations/{reservation_id}/accept",
        path_parameters={"reservation_id": EXISTING["reservation_id"][0]},
    )
    assert accepted.status_code == 200, accepted.text
    queue = _call("GET", "/v1/queue").json()
    assert queue["waiting"] > 0, "some contacts must be waiting"
    yield app
    EXISTING.clear()
    APP_UNDER_TEST.app = None


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented_and_never_with_a_server_error(
    case: schemathesis.Case, seeded_app: FastAPI
) -> None:
    # The app (and its state) is shared by all examples of one operation, as a live service is.
    # The key is passed explicitly: on an operation with a header parameter (Idempotency-Key)
    # schemathesis would otherwise count the configured Authorization header as generated data
    # and expect a valid request to be refused.
    case.call_and_validate(headers=AUTH)
