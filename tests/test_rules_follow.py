"""Replicas on one database follow each other's rules: a version stored by one (PUT, rollback)
becomes active on the other within about a second, and re-matches its waiting contacts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.settings import DEMO_RULES
from tests.conftest import (
    ADMIN_KEY,
    agent,
    contact,
    fresh_schema,
    make_settings,
    put_agents,
    route,
    serve,
)
from tests.test_service_lifecycle import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/yaml"}
DEMO_TEXT = DEMO_RULES.read_text(encoding="utf-8")


def test_a_version_stored_by_one_replica_becomes_active_on_the_other_within_a_second(
    tmp_path: Path, acd_headers: dict[str, str]
) -> None:
    # One database (a file both replicas open), no rules file: the API owns the rules.
    shared = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'shared.db'}")
    with serve(shared) as first:
        assert first.get("/v1/rules", headers=ADMIN).json()["version"] == 1
    settings = make_settings(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'shared.db'}", rules_file=None
    )
    with serve(settings, run_background=True) as one, serve(settings, run_background=True) as two:
        put_agents(two, acd_headers, {"biller": agent({"billing": 3})})
        waiting = route(two, acd_headers, contact("c-1", inquiry_type="cancellation"))
        assert waiting["outcome"] == "queued" and waiting["rule"] == "cancellation"

        # Replica one lowers the cancellation desk's requirement to billing skills.
        edited = DEMO_TEXT.replace("skills: {retention: 3}", "skills: {billing: 1}", 1)
        stored = one.put("/v1/rules", content=edited, headers=ADMIN)
        assert (stored.status_code, stored.json()["version"]) == (200, 2)
        started = time.monotonic()
        assert wait_until(
            lambda: two.get("/v1/rules", headers=ADMIN).json()["version"] == 2, timeout=5
        )
        followed_after = time.monotonic() - started
        assert followed_after < 2.5, followed_after  # checked every second
        # Replica two re-matched its waiting contact under the new rules and placed it.
        assert wait_until(
            lambda: two.get("/v1/contacts/c-1", headers=acd_headers).json()["status"] == "reserved",
            timeout=5,
        )

        # A rollback on replica two reaches replica one the same way.
        back = two.post("/v1/rules/versions/1/rollback", headers=ADMIN)
        assert (back.status_code, back.json()["version"]) == (200, 3)
        assert wait_until(
            lambda: one.get("/v1/rules", headers=ADMIN).json()["source"] == DEMO_TEXT, timeout=5
        )
        assert one.get("/v1/rules", headers=ADMIN).json()["version"] == 3


def test_adopting_does_nothing_when_no_newer_version_is_stored(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as client:
        store = client.app.state.rules  # type: ignore[attr-defined]
        assert client.portal.call(store.adopt_stored) is False  # type: ignore[union-attr]
        assert store.active.row.version == 1


def test_a_replica_takes_a_stored_version_only_once_its_own_contacts_allow_it(
    tmp_path: Path, acd_headers: dict[str, str]
) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    with serve(make_settings(tmp_path, database_url=database)):
        pass  # stores the demo rules as version 1
    settings = make_settings(tmp_path, database_url=database, rules_file=None)
    with serve(settings, run_background=True) as one, serve(settings, run_background=True) as two:
        route(two, acd_headers, contact("c-mail", channel="email"))  # nobody takes email
        without_email = DEMO_TEXT.replace(
            "channels: [voice, chat, email, callback]", "channels: [voice, chat, callback]"
        )
        stored = one.put("/v1/rules", content=without_email, headers=ADMIN)
        if settings.redis_url:
            # Replicas sharing Redis see every replica's contacts: refused where it is asked.
            assert stored.status_code == 422, stored.text
            assert "active contact(s) use channel 'email'" in stored.text
            assert two.post("/v1/contacts/c-mail/abandon", headers=acd_headers).status_code == 200
            stored = one.put("/v1/rules", content=without_email, headers=ADMIN)
            assert (stored.status_code, stored.json()["version"]) == (200, 2)
            assert wait_until(
                lambda: two.get("/v1/rules", headers=ADMIN).json()["version"] == 2, timeout=5
            )
            return
        assert (stored.status_code, stored.json()["version"]) == (200, 2)
        time.sleep(2.5)  # two checks have passed: replica two must still be on version 1
        assert two.get("/v1/rules", headers=ADMIN).json()["version"] == 1
        assert two.get("/v1/contacts/c-mail", headers=acd_headers).json()["status"] == "queued"
        abandoned = two.post("/v1/contacts/c-mail/abandon", headers=acd_headers)
        assert abandoned.status_code == 200
        assert wait_until(
            lambda: two.get("/v1/rules", headers=ADMIN).json()["version"] == 2, timeout=5
        )


def _concurrent_puts(tmp_path: Path, database_url: str) -> None:
    """Two replicas store rules at the same moment: every PUT a version, one active."""
    with serve(make_settings(tmp_path, database_url=database_url)) as first:
        assert first.get("/v1/rules", headers=ADMIN).json()["version"] == 1
    settings = make_settings(tmp_path, database_url=database_url, rules_file=None)
    with serve(settings) as one, serve(settings) as two:
        texts = [DEMO_TEXT + f"\n# change {n}\n" for n in range(12)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(
                pool.map(
                    lambda n: (one, two)[n % 2].put("/v1/rules", content=texts[n], headers=ADMIN),
                    range(len(texts)),
                )
            )
        assert [a.status_code for a in answers] == [200] * len(texts), [a.text for a in answers]
        versions = sorted(a.json()["version"] for a in answers)
        assert versions == list(range(2, 2 + len(texts)))
        stored = one.get("/v1/rules/versions?limit=100", headers=ADMIN).json()["items"]
        assert [v["version"] for v in stored if v["active"]] == [max(versions)]


def test_rules_stored_at_once_by_two_replicas_get_distinct_versions_and_one_is_active(
    tmp_path: Path,
) -> None:
    _concurrent_puts(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


def test_the_same_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with fresh_schema(postgres_url) as database_url:
        _concurrent_puts(tmp_path, database_url)


def test_an_edit_of_the_file_both_replicas_watch_is_stored_once(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(DEMO_TEXT, encoding="utf-8")
    settings = make_settings(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'shared.db'}", rules_file=rules
    )
    with serve(settings, run_background=True) as one, serve(settings, run_background=True) as two:
        rules.write_text(DEMO_TEXT + "\n# edited\n", encoding="utf-8")
        assert wait_until(
            lambda: all(
                c.get("/v1/rules", headers=ADMIN).json()["source"].endswith("# edited\n")
                for c in (one, two)
            ),
            timeout=10,
        )
        time.sleep(1.5)  # both watchers have woken by now
        stored = one.get("/v1/rules/versions?limit=100", headers=ADMIN).json()["items"]
        assert [v["version"] for v in stored] == [2, 1]
        assert {c.get("/v1/rules", headers=ADMIN).json()["version"] for c in (one, two)} == {2}
