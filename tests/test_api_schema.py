"""Every operation of the OpenAPI schema, fuzzed in-process: no 5xx, every response as documented."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from service.app import create_app
from tests.conftest import agent, contact, make_settings

ALL_SCOPES_KEY = "test-all-scopes-key-0000001"
AUTH = {"Authorization": f"Bearer {ALL_SCOPES_KEY}"}
KNOWN: dict[str, list[Any]] = {}


def _settings(tmp: Path):
    return make_settings(tmp, api_keys={ALL_SCOPES_KEY: ["route", "admin", "billing"]})


schema = schemathesis.openapi.from_dict(
    create_app(_settings(Path(tempfile.gettempdir())), run_background=False).openapi(),
    config=schemathesis.Config.from_dict({"headers": AUTH}),
)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    names = [n for n in path_parameters if KNOWN.get(n)]
    if not names:
        return st.just(path_parameters)
    known = st.fixed_dictionaries({n: st.sampled_from(KNOWN[n]) for n in names})
    return st.one_of(st.just(path_parameters), known.map(lambda k: {**path_parameters, **k}))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    app = create_app(_settings(tmp_path), run_background=False)
    put = schema["/v1/agents/{agent_id}"]["PUT"]
    for agent_id, skills in {"b1": {"billing": 5}, "t1": {"technical": 3}}.items():
        r = put.Case(path_parameters={"agent_id": agent_id}, body=agent(skills), headers=AUTH).call(app=app)
        assert r.status_code in (200, 201), r.text
    route = schema["/v1/route"]["POST"]
    KNOWN.clear()
    KNOWN.update(agent_id=["b1", "t1"], contact_id=[], reservation_id=[], version=[1])
    for cid in ("c1", "c2", "c3"):
        r = route.Case(body=contact(cid), headers=AUTH, media_type="application/json").call(app=app)
        assert r.status_code == 201, r.text
        KNOWN["contact_id"].append(cid)
        if r.json()["reservation"]:
            KNOWN["reservation_id"].append(r.json()["reservation"]["reservation_id"])
    print(KNOWN)
    yield app
    KNOWN.clear()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: schemathesis.Case, app) -> None:
    case.call_and_validate(app=app)
