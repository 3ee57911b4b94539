"""Bad input gets a 4xx problem+json that says what is wrong and where, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import DEMO_RULES
from tests.conftest import FakeClock, agent, contact, make_settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
YAML = {"content-type": "application/yaml"}
DEMO_YAML = DEMO_RULES.read_text(encoding="utf-8")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status, about the requested path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["type"].startswith("https://skillroute.dev/problems/")
    assert body["title"] and body["detail"]
    return body


@pytest.fixture
def acd(client: TestClient, acd_headers: dict[str, str]) -> TestClient:
    """The client with the ACD's key on every request."""
    client.headers.update(acd_headers)
    return client


@pytest.fixture
def center(acd: TestClient, admin_headers: dict[str, str]) -> TestClient:
    """One agent serving a contact, one on break, one contact waiting."""
    for agent_id, body in {
        "a1": agent({"billing": 3}),
        "a2": agent({"billing": 5}, status="break"),
    }.items():
        assert acd.put(f"/v1/agents/{agent_id}", json=body).status_code == 201
    assert acd.post("/v1/route", json=contact("c-served")).json()["agent_id"] == "a1"
    assert acd.post("/v1/route", json=contact("c-waiting")).json()["outcome"] == "queued"
    return acd


def snapshot(client: TestClient, admin_headers: dict[str, str]) -> dict[str, Any]:
    """Everything a bad request must leave alone: queue, agents, active rules, versions."""
    return {
        "queue": client.get("/v1/queue").json(),
        "agents": client.get("/v1/agents").json(),
        "rules": client.get("/v1/rules", headers=admin_headers).json(),
        "versions": client.get("/v1/rules/versions", headers=admin_headers).json(),
        "contacts": [client.get(f"/v1/contacts/{c}").json() for c in ("c-served", "c-waiting")],
    }


@pytest.fixture
def unchanged(center: TestClient, admin_headers: dict[str, str]) -> Iterator[TestClient]:
    """The seeded center; after the test, the same state as before it."""
    before = snapshot(center, admin_headers)
    yield center
    assert snapshot(center, admin_headers) == before


# ---- POST /v1/route ---------------------------------------------------------------------------


def test_a_contact_without_segment_is_422_naming_the_missing_field(unchanged: TestClient) -> None:
    body = contact("c-new")
    del body["segment"]
    problem = assert_problem(unchanged.post("/v1/route", json=body), 422)
    assert problem["errors"] == [
        {"field": "segment", "message": "Field required", "type": "missing"}
    ]
    assert problem["detail"] == "segment: Field required"
    assert_problem(unchanged.get("/v1/contacts/c-new"), 404)


def test_a_contact_with_a_field_the_api_does_not_know_is_422_naming_that_field(
    unchanged: TestClient,
) -> None:
    problem = assert_problem(unchanged.post("/v1/route", json=contact("c-new", priority=99)), 422)
    assert problem["errors"] == [
        {
            "field": "priority",
            "type": "extra_forbidden",
            "message": "Extra inputs are not permitted",
        }
    ]
    assert_problem(unchanged.get("/v1/contacts/c-new"), 404)


def test_a_contact_with_a_number_as_channel_is_422_naming_the_channel(
    unchanged: TestClient,
) -> None:
    problem = assert_problem(unchanged.post("/v1/route", json=contact("c-new", channel=5)), 422)
    assert problem["errors"] == [
        {"field": "channel", "type": "string_type", "message": "Input should be a valid string"}
    ]


def test_a_contact_attribute_whose_value_is_an_object_is_422_naming_the_attribute(
    unchanged: TestClient,
) -> None:
    response = unchanged.post("/v1/route", json=contact("c-new", attributes={"plan": {"a": 1}}))
    problem = assert_problem(response, 422)
    # One error per accepted kind of value (string, integer, number, boolean).
    assert len(problem["errors"]) == 4
    assert all(e["field"].startswith("attributes.plan.") for e in problem["errors"])
    assert problem["detail"].startswith("attributes.plan.")


def test_an_unknown_segment_is_422_and_lists_the_segments_the_rules_know(
    unchanged: TestClient,
) -> None:
    problem = assert_problem(
        unchanged.post("/v1/route", json=contact("c-new", segment="consumr")), 422
    )
    assert problem["errors"][0]["field"] == "segment"
    assert problem["errors"][0]["message"] == (
        "unknown segment 'consumr'; known: consumer, smb, enterprise"
    )
    assert_problem(unchanged.get("/v1/contacts/c-new"), 404)


def test_an_attribute_of_the_wrong_declared_type_is_422_naming_the_attribute(
    unchanged: TestClient,
) -> None:
    response = unchanged.post("/v1/route", json=contact("c-new", attributes={"tenure_days": "x"}))
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "field": "attributes.tenure_days",
            "type": "type_mismatch",
            "message": "attribute 'tenure_days' must be a number",
        }
    ]


def test_a_route_body_that_is_not_json_is_422_with_line_and_column(
    unchanged: TestClient,
) -> None:
    response = unchanged.post(
        "/v1/route",
        content=b'{"contact_id": "c-new",',
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "field": "",
            "type": "json_invalid",
            "message": "Invalid JSON: EOF while parsing a value at line 1 column 23",
        }
    ]
    assert problem["detail"] == "Invalid JSON: EOF while parsing a value at line 1 column 23"


def test_an_empty_route_body_is_422(unchanged: TestClient) -> None:
    response = unchanged.post(
        "/v1/route", content=b"", headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"


@pytest.fixture
def small_limit_client(
    tmp_path: Path, fake_clock: FakeClock, acd_headers: dict[str, str]
) -> Iterator[TestClient]:
    """An app that accepts request bodies of at most 2048 bytes."""
    app = create_app(make_settings(tmp_path, max_body_bytes=2048), run_background=False)
    with TestClient(app, headers=acd_headers) as test_client:
        yield test_client


def big_contact() -> dict[str, Any]:
    return contact("c-big", attributes={"plan": "x" * 3000})


def test_a_body_over_the_size_limit_with_content_length_is_413_and_not_routed(
    small_limit_client: TestClient,
) -> None:
    response = small_limit_client.post("/v1/route", json=big_contact())
    assert int(response.request.headers["content-length"]) > 2048
    problem = assert_problem(response, 413)
    assert problem["detail"] == "the request body exceeds 2048 bytes"
    assert_problem(small_limit_client.get("/v1/contacts/c-big"), 404)
    assert small_limit_client.get("/v1/queue").json()["waiting"] == 0


def test_a_streamed_body_over_the_size_limit_without_content_length_is_413(
    small_limit_client: TestClient,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"contact_id": "c-big", "attributes": {"plan": "'
        yield from [b"x" * 1000] * 3
        yield b'"}}'

    response = small_limit_client.post(
        "/v1/route", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413)
    assert_problem(small_limit_client.get("/v1/contacts/c-big"), 404)


def test_a_body_arriving_in_many_chunks_is_cut_off_as_soon_as_it_passes_the_limit(
    small_limit_client: TestClient,
) -> None:
    # Straight to the ASGI app, so the body really arrives as separate messages.
    chunks = [b"x" * 1000] * 10
    consumed = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal consumed
        consumed += 1
        return {
            "type": "http.request",
            "body": chunks[consumed - 1],
            "more_body": consumed < len(chunks),
        }

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/route",
        "raw_path": b"/v1/route",
        "root_path": "",
        "query_string": b"",
        "server": ("testserver", 80),
        "client": ("testclient", 5000),
        "state": {},
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            *[
                (k.encode(), v.encode())
                for k, v in small_limit_client.headers.items()
                if k == "authorization"
            ],
        ],
    }
    assert small_limit_client.portal is not None
    small_limit_client.portal.call(small_limit_client.app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert consumed == 3  # 3000 bytes > 2048: the other 7000 are never read


# ---- PUT /v1/agents/{agent_id} ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            agent({"biling": 3}),
            {
                "field": "skills.biling",
                "type": "unknown_name",
                "message": "unknown skill 'biling'; known: billing, technical, sales, retention, "
                "onboarding, enterprise_care",
            },
        ),
        (
            agent({"billing": 6}),
            {
                "field": "skills.billing",
                "type": "less_than_equal",
                "message": "Input should be less than or equal to 5",
            },
        ),
        (
            agent({"billing": 3}, capacity={"voice": 1, "fax": 1}),
            {
                "field": "capacity.fax",
                "type": "unknown_name",
                "message": "unknown channel 'fax'; known: voice, chat, email, callback",
            },
        ),
        (
            {**agent({"billing": 3}), "languages": []},
            {
                "field": "languages",
                "type": "too_short",
                "message": "List should have at least 1 item after validation, not 0",
            },
        ),
        (
            agent({"billing": 3}, languages=["en", "de"]),
            {
                "field": "languages.1",
                "type": "unknown_name",
                "message": "unknown language 'de'; known: en, es",
            },
        ),
    ],
    ids=["unknown-skill", "level-6", "unknown-channel", "no-language", "unknown-language"],
)
def test_an_invalid_agent_profile_is_422_naming_the_field_and_keeps_the_old_profile(
    unchanged: TestClient, body: dict[str, Any], error: dict[str, str]
) -> None:
    problem = assert_problem(unchanged.put("/v1/agents/a2", json=body), 422)
    assert problem["errors"] == [error]
    assert_problem(unchanged.put("/v1/agents/new-agent", json=body), 422)
    assert_problem(unchanged.get("/v1/agents/new-agent"), 404)


def test_an_agent_body_that_is_not_json_is_422_with_line_and_column(
    unchanged: TestClient,
) -> None:
    response = unchanged.put(
        "/v1/agents/a2",
        content=b'{"name": "A",\n  skills}',
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "field": "",
            "type": "json_invalid",
            "message": "Invalid JSON: Expecting property name enclosed in double quotes "
            "at line 2 column 3",
        }
    ]


def test_an_agent_put_without_a_body_is_422(unchanged: TestClient) -> None:
    problem = assert_problem(unchanged.put("/v1/agents/a2"), 422)
    assert problem["errors"] == [{"field": "body", "type": "missing", "message": "Field required"}]


def test_a_query_parameter_out_of_range_is_422_naming_it(unchanged: TestClient) -> None:
    problem = assert_problem(unchanged.get("/v1/agents", params={"limit": 0}), 422)
    assert problem["errors"] == [
        {
            "field": "query.limit",
            "type": "greater_than_equal",
            "message": "Input should be greater than or equal to 1",
        }
    ]


def test_a_bulk_status_change_naming_an_unknown_agent_is_404_and_changes_no_agent(
    unchanged: TestClient,
) -> None:
    response = unchanged.post(
        "/v1/agents/status",
        json={
            "changes": [
                {"agent_id": "a2", "status": "available"},
                {"agent_id": "nobody", "status": "available"},
            ]
        },
    )
    problem = assert_problem(response, 404)
    assert problem["detail"] == "unknown agent(s): nobody"
    assert unchanged.get("/v1/agents/a2").json()["status"] == "break"
    assert unchanged.get("/v1/contacts/c-waiting").json()["status"] == "queued"


def test_a_method_a_path_does_not_support_is_405_listing_every_supported_method(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    for method, path, allowed in [
        ("DELETE", "/v1/agents/a1", "GET, PUT"),
        ("OPTIONS", "/v1/rules", "GET, PUT"),
        ("GET", "/v1/route", "POST"),
    ]:
        response = unchanged.request(method, path, headers=admin_headers)
        assert_problem(response, 405)
        assert response.headers["allow"] == allowed, (method, path)


def test_status_is_the_bulk_endpoint_not_an_agent_id(unchanged: TestClient) -> None:
    response = unchanged.put("/v1/agents/status", json=agent({"billing": 3}))
    assert_problem(response, 405)
    assert response.headers["allow"] == "POST"
    assert [a["agent_id"] for a in unchanged.get("/v1/agents").json()["items"]] == ["a1", "a2"]


# ---- contacts and reservations ----------------------------------------------------------------


@pytest.mark.parametrize("action", ["accept", "reject"])
def test_acting_on_an_unknown_reservation_is_404(unchanged: TestClient, action: str) -> None:
    problem = assert_problem(unchanged.post(f"/v1/reservations/no-such-offer/{action}"), 404)
    assert problem["detail"] == (
        "reservation no-such-offer is not open (expired, rejected or unknown)"
    )


def test_completing_a_contact_that_is_still_queued_is_409(unchanged: TestClient) -> None:
    problem = assert_problem(unchanged.post("/v1/contacts/c-waiting/complete"), 409)
    assert problem["detail"] == (
        "contact c-waiting is queued; only a connected contact can be completed"
    )


def test_an_unknown_contact_is_404(unchanged: TestClient) -> None:
    for path in ("/v1/contacts/nobody", "/v1/contacts/nobody/explain"):
        assert assert_problem(unchanged.get(path), 404)["detail"] == (
            "contact nobody does not exist"
        )
    assert_problem(unchanged.post("/v1/contacts/nobody/complete"), 404)


# ---- routing rules ----------------------------------------------------------------------------


def put_rules(client: TestClient, headers: dict[str, str], text: str | bytes) -> Any:
    return client.put("/v1/rules", content=text, headers={**headers, **YAML})


def line_of(text: str, needle: str) -> int:
    """1-based line number of the only line containing `needle`."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_malformed_yaml_is_422_at_file_line_and_column_and_the_rules_stay(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    text = "schema_version: 1\nrules:\n  - name: x\n    match: {segment: [consumer\n"
    problem = assert_problem(put_rules(unchanged, admin_headers, text), 422)
    assert problem["errors"] == [
        {
            "file": "api",
            "line": 5,
            "column": 1,
            "field": "",
            "severity": "error",
            "code": "yaml",
            "message": "YAML syntax: expected ',' or ']', but got '<stream end>'",
        }
    ]


def test_a_wrongly_typed_rule_field_is_422_at_its_exact_line_and_field(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    text = DEMO_YAML.replace("priority: 90", "priority: high", 1)
    problem = assert_problem(put_rules(unchanged, admin_headers, text), 422)
    assert problem["errors"] == [
        {
            "file": "api",
            "line": line_of(text, "priority: high"),
            "column": 5,
            "field": "rules[0].priority",
            "message": "Input should be a valid integer",
            "severity": "error",
            "code": "int_type",
        }
    ]


def test_rules_with_a_control_character_are_422_at_its_line_and_column(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    problem = assert_problem(put_rules(unchanged, admin_headers, "a: 1\nb: x\x07y\n"), 422)
    assert [(e["line"], e["column"], e["code"]) for e in problem["errors"]] == [(2, 5, "yaml")]
    assert "#x0007" in problem["errors"][0]["message"]


def test_an_empty_rules_document_is_422(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    for path, method in (("/v1/rules", "PUT"), ("/v1/rules/validate", "POST")):
        response = unchanged.request(method, path, content=b"", headers={**admin_headers, **YAML})
        problem = assert_problem(response, 422)
        assert problem["detail"] == "the request body is empty: send the rules YAML document"


def test_rules_over_a_megabyte_are_413_even_when_the_body_limit_is_higher(
    tmp_path: Path, fake_clock: FakeClock, admin_headers: dict[str, str]
) -> None:
    app = create_app(make_settings(tmp_path, max_body_bytes=2_000_000), run_background=False)
    with TestClient(app, headers=admin_headers) as admin:
        text = DEMO_YAML + "#" * (1_000_001 - len(DEMO_YAML.encode()))
        problem = assert_problem(admin.put("/v1/rules", content=text, headers=YAML), 413)
        assert problem["detail"] == "rules document is larger than 1000000 bytes"
        assert admin.get("/v1/rules").json()["version"] == 1


def test_validating_a_draft_reports_its_errors_and_applies_nothing(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    text = DEMO_YAML.replace("priority: 90", "priority: high", 1)
    response = unchanged.post("/v1/rules/validate", content=text, headers={**admin_headers, **YAML})
    assert response.status_code == 200
    report = response.json()
    assert report["valid"] is False
    assert [(e["file"], e["line"], e["field"]) for e in report["errors"]] == [
        ("draft", line_of(text, "priority: high"), "rules[0].priority")
    ]

    valid = unchanged.post(
        "/v1/rules/validate",
        content=DEMO_YAML.replace("priority: 90", "priority: 95", 1),
        headers={**admin_headers, **YAML},
    )
    assert (valid.status_code, valid.json()["valid"], valid.json()["errors"]) == (200, True, [])


def test_a_valid_rules_put_makes_version_2_and_rollback_to_1_makes_version_3_with_its_source(
    center: TestClient, admin_headers: dict[str, str]
) -> None:
    original = center.get("/v1/rules/versions/1", headers=admin_headers).json()["source"]
    changed = DEMO_YAML.replace("priority: 90", "priority: 95", 1)
    applied = put_rules(center, admin_headers, changed)
    assert applied.status_code == 200, applied.text
    assert (applied.json()["version"], applied.json()["origin"]) == (2, "api")

    versions = center.get("/v1/rules/versions", headers=admin_headers).json()
    assert versions["total"] == 2
    assert [(v["version"], v["active"]) for v in versions["items"]] == [(2, True), (1, False)]

    rolled = center.post("/v1/rules/versions/1/rollback", headers=admin_headers)
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["origin"]) == (3, "rollback:1")
    assert rolled.json()["source"] == original
    active = center.get("/v1/rules", headers=admin_headers).json()
    assert (active["version"], active["source"]) == (3, original)


def test_a_rollback_to_a_version_that_does_not_exist_is_404_and_changes_nothing(
    unchanged: TestClient, admin_headers: dict[str, str]
) -> None:
    problem = assert_problem(
        unchanged.post("/v1/rules/versions/9/rollback", headers=admin_headers), 404
    )
    assert problem["detail"] == "rules version 9 does not exist"


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/v1/agents?offset=1&offset=x", "acd"),
        ("/v1/queue?limit=5&limit=6", "acd"),
        ("/v1/rules/versions?limit=1&limit=2", "admin"),
    ],
)
def test_a_list_parameter_given_twice_is_422_naming_it(
    client: TestClient,
    acd_headers: dict[str, str],
    admin_headers: dict[str, str],
    path: str,
    key: str,
) -> None:
    headers = acd_headers if key == "acd" else admin_headers
    response = client.get(path, headers=headers)
    assert response.status_code == 422
    name = path.split("?")[1].split("=")[0]
    assert response.json()["errors"][0]["field"] == f"query.{name}"
