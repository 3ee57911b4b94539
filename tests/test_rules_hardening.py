"""Rules input that is hostile or surprising is refused cleanly, and rule changes stay put:
deep or explosive YAML, a hot reload that fails in any way, a restart after an API change,
a veto from live state, rules work off the event loop, and the CLI's refusals."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import watchfiles
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import service.rules_store as rules_store
from routing_rules.compiled import CompiledRules
from routing_rules.problems import RulesInvalid
from routing_rules.validation import validate_rules_text
from routing_rules.yaml_source import MAX_DEPTH, MAX_VALUES, YamlSourceError, parse_located
from service.cli import app as cli
from service.settings import DEMO_RULES
from tests.conftest import ADMIN_KEY, make_settings, metric_value, serve

YAML = {"Content-Type": "application/yaml"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DEMO_TEXT = DEMO_RULES.read_text(encoding="utf-8")
DEEP = "a: " + "[" * 5000 + "]" * 5000
# Billion laughs: six levels of ten aliases each expand to a million strings.
ALIAS_BOMB = (
    "\n".join(
        [
            'l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]',
            *(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)),
        ]
    )
    + "\n"
)
TOO_BIG = f"the document expands to more than {MAX_VALUES} values"


def single_error(text: str) -> tuple[int, int, str, str]:
    """The only problem validation reports for `text`, as (line, column, field, message)."""
    with pytest.raises(RulesInvalid) as caught:
        validate_rules_text(text, file="rules.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    problem = caught.value.problems[0]
    assert (problem.file, problem.code, problem.severity) == ("rules.yaml", "yaml", "error")
    return problem.line, problem.column, problem.field, problem.message


# ---- YAML that would exhaust the stack or the CPU --------------------------------------------
def test_yaml_nested_deeper_than_the_limit_is_an_error_at_the_first_level_too_deep() -> None:
    # The root mapping is level 1; the 64th "[" (column 4 + 63) would be level 65.
    assert single_error(DEEP) == (1, 67, "", f"nesting deeper than {MAX_DEPTH} levels")


def test_yaml_nested_exactly_to_the_limit_is_read() -> None:
    value = parse_located("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH).value
    for _ in range(MAX_DEPTH):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == 1
    with pytest.raises(YamlSourceError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_located("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_aliases_that_nest_past_the_limit_are_an_error_at_the_anchored_value_and_field() -> None:
    # Each half is within the limit; the alias puts one inside the other.
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    # Positions of an alias's values are those of the anchored text ("a: &a " is 6 columns).
    assert single_error(text) == (
        1,
        6 + MAX_DEPTH - half,
        "b" + "[0]" * (MAX_DEPTH - 1),
        f"nesting deeper than {MAX_DEPTH} levels",
    )


def test_an_alias_inside_its_own_anchor_is_an_error_not_endless_recursion() -> None:
    line, column, _field, message = single_error("a: &loop [*loop]\n")
    assert (line, column, message) == (1, 4, f"nesting deeper than {MAX_DEPTH} levels")


def test_an_alias_bomb_is_refused_once_it_expands_past_the_value_limit() -> None:
    _line, _column, field, message = single_error(ALIAS_BOMB)
    assert message.startswith(TOO_BIG)
    # Found while expanding one of the last anchors, long before the whole million.
    assert field.split("[")[0] in {"l4", "l5"}


def test_a_merge_key_bomb_is_refused_once_it_expands_past_the_value_limit() -> None:
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: {j}" for j in range(10)) + "}"]
    for i in range(1, 6):
        lines.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}")
    _line, _column, _field, message = single_error("\n".join(lines) + "\n")
    assert message.startswith(TOO_BIG)


def test_an_alias_of_a_sequence_as_a_mapping_key_is_named_by_kind_without_expanding_it() -> None:
    text = "\n".join(ALIAS_BOMB.splitlines()[:4]) + "\n? *l3\n: x\n"
    # The key's position is that of the anchored sequence it names (line 4, at "&l3").
    assert single_error(text) == (4, 5, "", "mapping keys must be strings, got a sequence")


ANCHORED = """\
schema_version: 1
vocabularies:
  segments: [consumer]
  inquiry_types: [billing, technical]
  journey_stages: [established]
  channels: [voice]
  languages: [en]
  skills: [billing, technical]
rules:
  - name: billing
    match: {inquiry_type: billing}
    require: &both
      skills: {billing: 2, technical: 1}
    fallback: &wait {action: keep_waiting}
  - name: default
    require: *both
    fallback:
      <<: *wait
"""


def test_ordinary_anchors_aliases_and_merge_keys_in_rules_still_work() -> None:
    spelled_out = (
        ANCHORED.replace("&both", "")
        .replace("&wait ", "")
        .replace("require: *both", "require: {skills: {billing: 2, technical: 1}}")
        .replace("fallback:\n      <<: *wait", "fallback: {action: keep_waiting}")
    )
    assert "*" not in spelled_out and "&" not in spelled_out
    anchored = validate_rules_text(ANCHORED).ruleset
    assert anchored == validate_rules_text(spelled_out).ruleset
    assert anchored.rules[1].require == anchored.rules[0].require


@pytest.fixture
def center(tmp_path: Path) -> Iterator[TestClient]:
    """A running app whose active rules are the demo file, as version 1."""
    with serve(make_settings(tmp_path)) as running:
        yield running


def active_version(client: TestClient) -> tuple[int, str]:
    """(version, origin) of the active rules."""
    body = client.get("/v1/rules", headers=ADMIN).json()
    return body["version"], body["origin"]


def test_deep_yaml_and_an_alias_bomb_through_the_api_are_422_and_invalid_not_500(
    center: TestClient,
) -> None:
    headers = {**ADMIN, **YAML}
    for text, message in ((DEEP, f"nesting deeper than {MAX_DEPTH} levels"), (ALIAS_BOMB, TOO_BIG)):
        put = center.put("/v1/rules", content=text, headers=headers)
        assert put.status_code == 422, put.text
        assert put.json()["errors"][0]["message"].startswith(message)
        draft = center.post("/v1/rules/validate", content=text, headers=headers)
        assert draft.status_code == 200, draft.text
        assert draft.json()["valid"] is False
        assert draft.json()["errors"][0]["message"].startswith(message)
    assert active_version(center) == (1, "file")


# ---- hot reload keeps watching whatever one change does ----------------------------------
def fake_awatch(steps: list[Callable[[], None]]) -> Callable[..., AsyncIterator[set[Any]]]:
    """A stand-in for watchfiles.awatch that runs each step, then reports one change."""

    async def changes(*_args: Any, **_kwargs: Any) -> AsyncIterator[set[Any]]:
        for step in steps:
            step()
            yield {(watchfiles.Change.modified, "rules.yaml")}

    return changes


def test_the_watcher_survives_an_undecodable_file_and_a_failing_subscriber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_file = tmp_path / "rules.yaml"
    shutil.copy(DEMO_RULES, rules_file)
    v2 = DEMO_TEXT.replace("priority: 90", "priority: 91", 1)
    v3 = DEMO_TEXT.replace("priority: 90", "priority: 92", 1)
    failures: list[int] = []

    async def flaky_subscriber(_compiled: CompiledRules) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("subscriber bug")

    steps = [
        lambda: rules_file.write_bytes(b"schema_version: 1\nname: caf\xe9\n"),  # Latin-1
        lambda: rules_file.write_text(v2, encoding="utf-8"),
        lambda: rules_file.write_text(v3, encoding="utf-8"),
    ]
    monkeypatch.setattr(watchfiles, "awatch", fake_awatch(steps))
    with serve(make_settings(tmp_path, rules_file=rules_file)) as client:
        store = client.app.state.rules  # type: ignore[attr-defined]
        store.subscribe(flaky_subscriber)
        rejected = metric_value(client, "skillroute_rules_reloads_total", result="rejected")
        failed = metric_value(client, "skillroute_rules_reloads_total", result="failed")
        assert client.portal is not None
        client.portal.call(store.watch)
        body = client.get("/v1/rules", headers=ADMIN).json()
        assert (body["version"], body["origin"], body["source"]) == (3, "file", v3)
        assert failures == [1]
        assert metric_value(client, "skillroute_rules_reloads_total", result="rejected") == (
            rejected + 1
        )
        assert metric_value(client, "skillroute_rules_reloads_total", result="failed") == (
            failed + 1
        )


def test_the_watcher_starts_watching_again_when_watchfiles_itself_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_file = tmp_path / "rules.yaml"
    shutil.copy(DEMO_RULES, rules_file)
    edited = DEMO_TEXT.replace("priority: 90", "priority: 91", 1)
    edit = fake_awatch([lambda: rules_file.write_text(edited, encoding="utf-8")])
    starts: list[int] = []

    def awatch(*args: Any, **kwargs: Any) -> AsyncIterator[set[Any]]:
        starts.append(1)
        if len(starts) == 1:
            raise OSError("inotify watch limit reached")
        return edit(*args, **kwargs)

    monkeypatch.setattr(watchfiles, "awatch", awatch)
    monkeypatch.setattr(rules_store, "WATCH_RETRY_SECONDS", 0.0, raising=False)
    with serve(make_settings(tmp_path, rules_file=rules_file)) as client:
        assert client.portal is not None
        client.portal.call(client.app.state.rules.watch)  # type: ignore[attr-defined]
        assert len(starts) == 2
        assert active_version(client) == (2, "file")


def test_the_watcher_leaves_an_api_change_alone_when_the_file_did_not_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_file = tmp_path / "rules.yaml"
    shutil.copy(DEMO_RULES, rules_file)
    # Another file in the same directory changes: the watcher wakes, the rules file is as it was.
    monkeypatch.setattr(
        watchfiles, "awatch", fake_awatch([lambda: (tmp_path / "notes.txt").write_text("hi")])
    )
    with serve(make_settings(tmp_path, rules_file=rules_file)) as client:
        changed = DEMO_TEXT.replace("priority: 90", "priority: 95", 1)
        put = client.put("/v1/rules", content=changed, headers={**ADMIN, **YAML})
        assert put.status_code == 200, put.text
        assert client.portal is not None
        client.portal.call(client.app.state.rules.watch)  # type: ignore[attr-defined]
        assert active_version(client) == (2, "api")


# ---- restart: the file wins only when the file changed -----------------------------------
def test_a_restart_keeps_rules_put_through_the_api_and_rolled_back_when_the_file_is_unchanged(
    tmp_path: Path,
) -> None:
    rules_file = tmp_path / "rules.yaml"
    shutil.copy(DEMO_RULES, rules_file)
    settings = make_settings(tmp_path, rules_file=rules_file)
    first = DEMO_TEXT.replace("priority: 90", "priority: 95", 1)
    second = DEMO_TEXT.replace("priority: 90", "priority: 96", 1)
    with serve(settings) as client:
        headers = {**ADMIN, **YAML}
        assert client.put("/v1/rules", content=first, headers=headers).status_code == 200
        assert client.put("/v1/rules", content=second, headers=headers).status_code == 200
        rolled = client.post("/v1/rules/versions/2/rollback", headers=ADMIN)
        assert rolled.status_code == 200, rolled.text
        assert active_version(client) == (4, "rollback:2")

    with serve(settings) as client:
        assert active_version(client) == (4, "rollback:2")
        assert client.get("/v1/rules", headers=ADMIN).json()["source"] == first
        assert client.get("/v1/rules/versions", headers=ADMIN).json()["total"] == 4


def test_a_restart_activates_the_file_when_it_was_edited_while_the_service_was_down(
    tmp_path: Path,
) -> None:
    rules_file = tmp_path / "rules.yaml"
    shutil.copy(DEMO_RULES, rules_file)
    settings = make_settings(tmp_path, rules_file=rules_file)
    with serve(settings) as client:
        changed = DEMO_TEXT.replace("priority: 90", "priority: 95", 1)
        put = client.put("/v1/rules", content=changed, headers={**ADMIN, **YAML})
        assert put.status_code == 200, put.text

    edited = DEMO_TEXT.replace("priority: 90", "priority: 80", 1)
    rules_file.write_text(edited, encoding="utf-8")
    with serve(settings) as client:
        assert active_version(client) == (3, "file")
        assert client.get("/v1/rules", headers=ADMIN).json()["source"] == edited


# ---- veto from live state ------------------------------------------------------------------
def test_a_veto_refuses_new_rules_with_422_naming_the_reason_and_stores_nothing(
    center: TestClient,
) -> None:
    reason = "3 waiting contacts use channel 'fax', which the new rules drop"
    seen: list[tuple[int, ...]] = []

    def veto(compiled: CompiledRules) -> list[str]:
        priorities = tuple(rule.priority for rule in compiled.rules)
        seen.append(priorities)
        return [reason] if 95 in priorities else []

    store = center.app.state.rules  # type: ignore[attr-defined]
    store.add_veto(veto)
    headers = {**ADMIN, **YAML}
    vetoed = DEMO_TEXT.replace("priority: 90", "priority: 95", 1)
    response = center.put("/v1/rules", content=vetoed, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "file": "api",
            "line": 1,
            "column": 1,
            "field": "vocabularies",
            "severity": "error",
            "code": "in_use",
            "message": reason,
        }
    ]
    assert 95 in seen[-1]
    assert active_version(center) == (1, "file")
    assert center.get("/v1/rules/versions", headers=ADMIN).json()["total"] == 1

    allowed = DEMO_TEXT.replace("priority: 90", "priority: 96", 1)
    assert center.put("/v1/rules", content=allowed, headers=headers).status_code == 200
    assert active_version(center) == (2, "api")


# ---- rules work off the event loop -----------------------------------------------------------
def test_validation_compilation_and_lint_of_put_and_validate_run_off_the_event_loop(
    center: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                calls.append((name, "event loop"))
            except RuntimeError:
                calls.append((name, "thread"))
            return real(*args, **kwargs)

        return wrapped

    for name in ("validate_rules_text", "compile_rules", "lint_rules"):
        monkeypatch.setattr(rules_store, name, spy(name, getattr(rules_store, name)))
    headers = {**ADMIN, **YAML}
    changed = DEMO_TEXT.replace("priority: 90", "priority: 95", 1)
    assert center.put("/v1/rules", content=changed, headers=headers).status_code == 200
    assert center.post("/v1/rules/validate", content=changed, headers=headers).status_code == 200
    assert {name for name, _ in calls} == {"validate_rules_text", "compile_rules", "lint_rules"}
    assert {where for _, where in calls} == {"thread"}


# ---- CLI -----------------------------------------------------------------------------------
def test_serve_refuses_more_than_one_worker_without_shared_state_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    monkeypatch.setenv("SKILLROUTE_DEMO", "true")
    monkeypatch.delenv("SKILLROUTE_REDIS_URL", raising=False)
    monkeypatch.delenv("SKILLROUTE_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--workers", "4"])
    assert result.exit_code == 2, result.output
    assert started == []
    assert "--workers 4" in result.stderr
    assert "SKILLROUTE_REDIS_URL" in result.stderr

    # Redis without PostgreSQL is refused too: SQLite takes one writer at a time.
    monkeypatch.setenv("SKILLROUTE_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert CliRunner().invoke(cli, ["serve", "--workers", "4"]).exit_code == 2
    assert started == []

    one = CliRunner().invoke(cli, ["serve", "--workers", "1"])
    assert one.exit_code == 0, one.output
    monkeypatch.setenv("SKILLROUTE_DATABASE_URL", "postgresql://db.example/skillroute")
    four = CliRunner().invoke(cli, ["serve", "--workers", "4"])
    assert four.exit_code == 0, four.output
    assert [call["workers"] for call in started] == [1, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "not valid JSON (line 1, column 3: Expecting property name"),
        ('{"agent": 1}', "expected a JSON list of agents"),
        ("[1, 2]", "agent 0 is not an object"),
        ('[{"skills": ["billing"]}]', "agent 0: skills is not an object of skill: level"),
        (b'["caf\xe9"]', "not UTF-8 (byte 5)"),
    ],
)
def test_rules_validate_with_a_malformed_agents_file_exits_1_with_a_clear_message(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    agents = tmp_path / "agents.json"
    agents.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(
        cli, ["rules", "validate", str(DEMO_RULES), "--agents", str(agents)]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.startswith(f"error: {agents}: {message}"), result.stderr


def test_rules_validate_accepts_the_agent_list_the_api_returns(tmp_path: Path) -> None:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps({"items": [{"skills": {"billing": 3}}], "total": 1}))
    result = CliRunner().invoke(
        cli, ["rules", "validate", str(DEMO_RULES), "--agents", str(agents), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert "unknown_agent_skill" in {w["code"] for w in report["warnings"]}


def test_rules_validate_of_a_file_that_is_not_utf8_exits_1_with_a_clear_message(
    tmp_path: Path,
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_bytes(b"name: caf\xe9\n")
    result = CliRunner().invoke(cli, ["rules", "validate", str(rules_file)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr == f"error: {rules_file}: not UTF-8 (byte 9)\n"
