"""Performance-based routing: agents' outcomes, shrunk toward the team, steer who gets whom.

Unit tests check the figures, shrinkage and score by hand; acceptance tests seed the outcomes
table, start the service and show that with `scoring.performance` on, an agent who resolves
this kind of contact gets it ahead of one who has been idle longer, but not on a handful of
outcomes and not with the weight at 0.
"""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from sqlalchemy import insert

from routing_rules.assignment import solve
from routing_rules.compiled import compile_rules
from routing_rules.explanation import explain_candidates, terms_for_rows
from routing_rules.schema import Performance, PerformanceMeasure
from routing_rules.scoring import (
    ContactKind,
    FloatArray,
    build_arcs,
    rank_for_one,
)
from service import performance_store
from service.api.performance import CSV_COLUMNS
from service.performance import PerformanceBook
from service.performance_store import OUTCOMES, PerformanceStore
from service.settings import Settings
from service.storage.db import make_engine, upgrade
from tests.conftest import (
    ACD_KEY,
    ADMIN_KEY,
    FakeClock,
    agent,
    contact,
    demo_rules_with,
    libpq_url,
    make_settings,
    put_agents,
    route,
    serve,
    with_search_path,
)
from tests.test_assignment_properties import (
    LADDER_RULESET,
    PROPERTY_SETTINGS,
    Floor,
    english_voice_contact,
    english_voice_pool,
    floors,
)

KIND = ("billing", "consumer", "established")
NOW = 1_800_000_000.0


def outcome(contact_id: str, agent_id: str, **fields: Any) -> dict[str, Any]:
    """An outcome row (the `outcomes` columns) of a billing contact of a consumer."""
    row: dict[str, Any] = {
        "contact_id": contact_id,
        "customer_id": f"cust-{contact_id}",
        "agent_id": agent_id,
        "channel": "voice",
        "segment": "consumer",
        "inquiry_type": "billing",
        "journey_stage": "established",
        "tier": "standard",
        "resolved": True,
        "durable": True,
        "repeat_of": None,
        "repeated_by": None,
        "revenue_minor": 0,
        "currency": None,
        "upsell": False,
        "cross_sell": False,
        "nps": None,
        "handle_seconds": 300.0,
        "tags": {},
        "contact_created_at": NOW - 7200,
        "completed_at": NOW - 3600,
        "recorded_at": NOW - 3600,
    }
    row.update(fields)
    return row


def record(agent_id: str, count: int, resolved: int, *, prefix: str = "") -> list[dict[str, Any]]:
    """`count` outcomes of an agent, the first `resolved` of them resolved (and durable)."""
    return [
        outcome(f"{prefix}{agent_id}-{i}", agent_id, resolved=i < resolved, durable=i < resolved)
        for i in range(count)
    ]


# ---- the book: figures, shrinkage, score -------------------------------------------------


def test_shrunk_figures_and_score_match_the_hand_computation() -> None:
    every_measure = PerformanceMeasure(durable_resolution=1, resolution=1, nps=1, revenue=1)
    book = PerformanceBook(
        Performance(
            prior_contacts=2, measure=every_measure, currency="EUR", revenue_reference_minor=1000
        )
    )
    # Agent a: 3 outcomes, all resolved, 2 durable; NPS 10, 7, 3; 600 EUR + 900 USD revenue.
    book.add(outcome("a1", "a", nps=10, revenue_minor=600, currency="EUR", handle_seconds=100))
    book.add(outcome("a2", "a", nps=7, revenue_minor=900, currency="USD", handle_seconds=200))
    book.add(outcome("a3", "a", durable=False, nps=3, handle_seconds=300))
    # Agent b: 1 unresolved outcome, no NPS answer.
    book.add(outcome("b1", "b", resolved=False, durable=False, handle_seconds=400))
    [a, b] = book.records()
    # Team: 4 outcomes, 3 resolved, 2 durable; NPS (1 - 1) / 3 = 0; 600 EUR / 4 = 150.
    assert (a.team_contacts, a.team_nps_answers) == (4, 3)
    assert a.team.resolution_rate == 0.75
    assert a.team.durable_resolution_rate == 0.5
    assert a.team.nps == 0.0
    assert a.team.revenue_per_interaction == 150.0
    assert a.team.handle_seconds == 250.0
    # a raw: 3/3, 2/3, NPS 0, 200 EUR per interaction, 200 s.
    assert (a.contacts, a.nps_answers) == (3, 3)
    assert a.raw.resolution_rate == 1.0
    assert a.raw.durable_resolution_rate == pytest.approx(2 / 3)
    assert a.raw.revenue_per_interaction == 200.0
    # a shrunk with k = 2: (3 + 2 * 0.75) / 5 = 0.9; (2 + 2 * 0.5) / 5 = 0.6;
    # NPS (0 + 2 * 0) / 5 = 0; revenue (600 + 2 * 150) / 5 = 180; handle (600 + 500) / 5 = 220.
    assert a.shrunk.resolution_rate == pytest.approx(0.9)
    assert a.shrunk.durable_resolution_rate == pytest.approx(0.6)
    assert a.shrunk.nps == pytest.approx(0.0)
    assert a.shrunk.revenue_per_interaction == pytest.approx(180.0)
    assert a.shrunk.handle_seconds == pytest.approx(220.0)
    # Score: mean of 0.6, 0.9, (0 + 100) / 200 = 0.5, 180 / 1000 = 0.18.
    assert a.score == pytest.approx((0.6 + 0.9 + 0.5 + 0.18) / 4)
    # b shrunk: (0 + 1.5) / 3 = 0.5, (0 + 1) / 3; no answers: the team's NPS; (0 + 300) / 3.
    assert b.shrunk.resolution_rate == pytest.approx(0.5)
    assert b.shrunk.durable_resolution_rate == pytest.approx(1 / 3)
    assert b.raw.nps is None and b.shrunk.nps == 0.0
    assert b.shrunk.revenue_per_interaction == pytest.approx(100.0)
    assert b.score == pytest.approx((1 / 3 + 0.5 + 0.5 + 0.1) / 4)
    # The team score: mean of 0.5, 0.75, 0.5, 0.15.
    assert a.team_score == pytest.approx((0.5 + 0.75 + 0.5 + 0.15) / 4)
    scores = book.scores(KIND, ["b", "nobody", "a"])
    assert scores.tolist() == pytest.approx([b.score, a.team_score, a.score])


def test_nps_shrinks_over_answers_only_toward_the_team() -> None:
    only_nps = PerformanceMeasure(durable_resolution=0, nps=1)
    book = PerformanceBook(Performance(prior_contacts=4, measure=only_nps))
    # a: two promoters and two outcomes without an answer; b: one detractor, one passive.
    for i, nps in enumerate((10, 9, None, None)):
        book.add(outcome(f"a{i}", "a", nps=nps))
    book.add(outcome("b0", "b", nps=0))
    book.add(outcome("b1", "b", nps=8))
    [a, b] = book.records()
    # Team: 4 answers, 2 promoters, 1 detractor: NPS 25. a: (200 + 4 * 25) / (2 + 4) = 50.
    assert a.team.nps == 25.0
    assert a.raw.nps == 100.0 and a.shrunk.nps == pytest.approx(50.0)
    # b: (-100 + 100) / (2 + 4) = 0; NPS 0 scores 0.5.
    assert b.raw.nps == -50.0 and b.shrunk.nps == pytest.approx(0.0)
    assert (a.score, b.score) == pytest.approx((0.75, 0.5))


def test_revenue_scores_pro_rata_up_to_the_reference_and_in_the_performance_currency() -> None:
    book = PerformanceBook(
        Performance(
            prior_contacts=1,
            measure=PerformanceMeasure(durable_resolution=0, revenue=3),
            revenue_reference_minor=100,
        )
    )
    book.add(outcome("a0", "a", revenue_minor=1000, currency="EUR"))
    book.add(outcome("b0", "b", revenue_minor=1000, currency="GBP"))
    [a, b] = book.records()
    # Team: 1000 EUR over 2 outcomes = 500. a: (1000 + 500) / 2 = 750 -> capped at 1.
    assert a.score == 1.0
    # b sold in GBP: (0 + 500) / 2 = 250 EUR -> still over the reference.
    assert b.shrunk.revenue_per_interaction == 250.0 and b.score == 1.0
    book.configure(
        Performance(
            prior_contacts=1,
            measure=PerformanceMeasure(durable_resolution=0, revenue=3),
            revenue_reference_minor=1000,
            currency="GBP",
        )
    )
    [a, b] = book.records()
    assert (a.score, b.score) == pytest.approx((0.25, 0.75))


def test_all_weights_zero_score_everyone_zero_and_an_unknown_kind_scores_everyone_alike() -> None:
    zero = PerformanceMeasure(durable_resolution=0, resolution=0, nps=0, revenue=0)
    book = PerformanceBook(Performance(measure=zero))
    for row in record("a", 5, 5) + record("b", 5, 0):
        book.add(row)
    assert book.scores(KIND, ["a", "b"]).tolist() == [0.0, 0.0]
    book.configure(Performance())
    assert book.scores(KIND, ["a", "b"])[0] > book.scores(KIND, ["a", "b"])[1]
    other = ("technical", "consumer", "established")
    assert book.scores(other, ["a", "b", "c"]).tolist() == [0.0, 0.0, 0.0]


def test_remove_and_replace_undo_exactly_and_old_outcomes_do_not_count() -> None:
    book = PerformanceBook(Performance(prior_contacts=1), since=NOW - 86400)
    first = outcome("a0", "a")
    book.add(first)
    book.add(outcome("b0", "b", resolved=False, durable=False))
    before = book.scores(KIND, ["a", "b"]).tolist()
    # A later repeat contact makes a0 non-durable: the listener pair replaces the row.
    version = book.version
    book.apply([(first, {**first, "durable": False, "repeated_by": "a9"})])
    assert book.version != version
    [a, _] = book.records()
    assert a.raw.durable_resolution_rate == 0.0 and a.raw.resolution_rate == 1.0
    book.apply([({**first, "durable": False, "repeated_by": "a9"}, first)])
    assert book.scores(KIND, ["a", "b"]).tolist() == before
    # Completed before the window: neither added nor removed.
    book.add(outcome("old", "c", completed_at=NOW - 2 * 86400))
    assert {r.agent_id for r in book.records()} == {"a", "b"}
    book.remove(first)
    book.remove(outcome("b0", "b", resolved=False, durable=False))
    assert book.records() == []
    assert book.scores(KIND, ["a"]).tolist() == [0.0]


def test_the_table_filters_by_agent_and_kind_fields() -> None:
    book = PerformanceBook()
    book.add(outcome("1", "a"))
    book.add(outcome("2", "b", segment="smb"))
    book.add(outcome("3", "a", journey_stage="onboarding"))
    rows = book.records()
    assert [(r.agent_id, r.kind) for r in rows] == [
        ("a", ("billing", "consumer", "established")),
        ("a", ("billing", "consumer", "onboarding")),
        ("b", ("billing", "smb", "established")),
    ]
    assert [r.agent_id for r in book.records(segment="smb")] == ["b"]
    assert [r.kind[2] for r in book.records(agent_id="a", journey_stage="onboarding")] == [
        "onboarding"
    ]
    assert book.records(inquiry_type="technical") == []


# ---- scoring: the term in the match score -------------------------------------------------

RULES = compile_rules(LADDER_RULESET)
WEIGHTED = compile_rules(
    LADDER_RULESET.model_copy(
        update={"scoring": LADDER_RULESET.scoring.model_copy(update={"performance": 3.0})}
    )
)


class FixedScores:
    """A performance lookup with a fixed score per agent row, different per kind."""

    def __init__(self, size: int, seed: int) -> None:
        self.version = 1
        self._by_kind: dict[ContactKind, FloatArray] = {}
        self._size, self._seed = size, seed

    def scores(self, kind: ContactKind, ids: Any) -> FloatArray:
        """Pseudo-random scores, the same for the same kind."""
        if kind not in self._by_kind:
            rng = np.random.default_rng([self._seed, len(self._by_kind)])
            self._by_kind[kind] = rng.random(self._size)
        return self._by_kind[kind]


KINDS = st.sampled_from([KIND, ("technical", "smb", "onboarding")])


@PROPERTY_SETTINGS
@given(floor=floors(), seed=st.integers(0, 2**32 - 1), kinds=st.lists(KINDS, min_size=8))
def test_with_the_term_on_a_lone_contact_still_gets_what_the_full_solve_gives(
    floor: Floor, seed: int, kinds: list[ContactKind]
) -> None:
    lookup = FixedScores(floor.pool.size, seed)
    contacts = [
        replace(c, kind=k)
        for c, k in zip(floor.contacts, kinds[: len(floor.contacts)], strict=True)
    ]
    for one in contacts:
        ranked, eligible = rank_for_one(WEIGHTED, floor.pool, one, limit=5, performance=lookup)
        arcs, _ = build_arcs(WEIGHTED, floor.pool, [one], one.channel, lookup)
        assert eligible == arcs.size
        if arcs.size:
            solved = solve(1, floor.pool.free[:, one.channel].astype("int64"), arcs)
            assert ranked[0] == int(solved.agent_of[0])
            # The term is exactly weight x score in every pair's value.
            plain, _ = build_arcs(WEIGHTED, floor.pool, [one], one.channel)
            term = np.rint(3.0 * lookup.scores(one.kind, None)[arcs.agent] * 1000)
            assert np.all(np.abs(arcs.value - plain.value - term) <= 1)
    for channel in range(floor.pool.free.shape[1]):
        queue = [c for c in contacts if c.channel == channel]
        # Grouped by kind too: the same as building each contact's arcs alone.
        arcs, _ = build_arcs(WEIGHTED, floor.pool, queue, channel, lookup)
        alone = {
            (i, int(j)): int(v)
            for i, c in enumerate(queue)
            for j, v in _pairs(build_arcs(WEIGHTED, floor.pool, [c], channel, lookup)[0])
        }
        pairs = zip(arcs.contact.tolist(), arcs.agent.tolist(), strict=True)
        assert dict(zip(pairs, arcs.value.tolist(), strict=True)) == alone


def _pairs(arcs: Any) -> list[tuple[int, int]]:
    """(agent row, value) of each arc."""
    return list(zip(arcs.agent.tolist(), arcs.value.tolist(), strict=True))


@PROPERTY_SETTINGS
@given(floor=floors(), seed=st.integers(0, 2**32 - 1), kinds=st.lists(KINDS, min_size=8))
def test_weight_zero_or_no_lookup_leaves_every_value_exactly_as_without_the_term(
    floor: Floor, seed: int, kinds: list[ContactKind]
) -> None:
    lookup = FixedScores(floor.pool.size, seed)
    contacts = [
        replace(c, kind=k)
        for c, k in zip(floor.contacts, kinds[: len(floor.contacts)], strict=True)
    ]
    for channel in range(floor.pool.free.shape[1]):
        queue = [c for c in contacts if c.channel == channel]
        plain, had = build_arcs(RULES, floor.pool, queue, channel)
        looked, had_too = build_arcs(RULES, floor.pool, queue, channel, lookup)
        assert looked.contact.tolist() == plain.contact.tolist()
        assert looked.agent.tolist() == plain.agent.tolist()
        assert looked.value.tolist() == plain.value.tolist()
        assert had.tolist() == had_too.tolist()
    for one in contacts:
        assert explain_candidates(RULES, floor.pool, one, performance=lookup) == (
            explain_candidates(RULES, floor.pool, one)
        )


def test_explanations_show_the_term_and_include_it_in_the_total() -> None:
    pool = english_voice_pool(
        {"junior": ({"billing": 3}, 600.0), "expert": ({"billing": 5}, 60.0), "sales": ({}, 0.0)}
    )
    lookup = FixedScores(pool.size, 7)
    one = replace(english_voice_contact("c1", 0, 30.0), kind=KIND)
    scores = lookup.scores(KIND, pool.ids)
    with_term = explain_candidates(WEIGHTED, pool, one, performance=lookup)
    without = {t.agent_id: t for t in explain_candidates(WEIGHTED, pool, one)}
    assert [t.agent_id for t in with_term] == ["expert", "junior", "sales"]
    rows = {"junior": 0, "expert": 1, "sales": 2}
    for t in with_term[:2]:
        row = rows[t.agent_id]
        assert t.performance == pytest.approx(3.0 * scores[row])
        assert t.total == pytest.approx(without[t.agent_id].total + t.performance)
    assert not with_term[2].eligible and with_term[2].total == 0.0
    chosen = terms_for_rows(WEIGHTED, pool, one, [1, 0], lookup)
    assert [t.performance for t in chosen] == pytest.approx([3.0 * scores[1], 3.0 * scores[0]])
    assert [t.total for t in chosen] == pytest.approx([t.total for t in with_term[:2]])


class CountingLookup(FixedScores):
    """Counts how often scores are computed."""

    def __init__(self, size: int) -> None:
        super().__init__(size, 1)
        self.calls = 0

    def scores(self, kind: ContactKind, ids: Any) -> FloatArray:
        """Count, then score."""
        self.calls += 1
        return super().scores(kind, ids)


def test_score_vectors_are_computed_once_per_lookup_version_kind_and_agent_profile() -> None:
    pool = replace(
        english_voice_pool({"a": ({"billing": 3}, 0.0), "b": ({"billing": 3}, 0.0)}),
        profile_version=987_654_321,
    )
    lookup = CountingLookup(pool.size)
    one = replace(english_voice_contact("c1", 0, 0.0), kind=KIND)
    for _ in range(3):
        rank_for_one(WEIGHTED, pool, one, limit=2, performance=lookup)
        build_arcs(WEIGHTED, pool, [one, replace(one, contact_id="c2")], 0, lookup)
    assert lookup.calls == 1
    rank_for_one(
        WEIGHTED,
        pool,
        replace(one, kind=("technical", "smb", "onboarding")),
        limit=2,
        performance=lookup,
    )
    assert lookup.calls == 2
    lookup.version = 2  # an outcome was recorded
    rank_for_one(WEIGHTED, pool, one, limit=2, performance=lookup)
    assert lookup.calls == 3
    rank_for_one(WEIGHTED, replace(pool, profile_version=None), one, limit=2, performance=lookup)
    assert lookup.calls == 4


# ---- the store: the outcomes table, the window, writes during a rebuild ------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outcomes.db'}"
        upgrade(url)
        yield url
        return
    postgres_url = request.getfixturevalue("postgres_url")
    schema = f"skillroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        url = with_search_path(postgres_url, schema)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def store_rows(url: str, rows: list[dict[str, Any]]) -> None:
    """Insert outcome rows and commit."""
    if not rows:
        return
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(OUTCOMES), rows)
    finally:
        engine.dispose()


def test_the_store_sums_the_window_in_the_database_as_the_book_sums_rows(
    database_url: str, fake_clock: FakeClock
) -> None:
    fake_clock.now = NOW
    in_window = [
        outcome("a1", "a", nps=10, revenue_minor=600, currency="EUR", handle_seconds=100),
        outcome("a2", "a", nps=7, revenue_minor=900, currency="USD", handle_seconds=200.5),
        outcome("a3", "a", durable=False, nps=3, revenue_minor=-50, currency="EUR"),
        outcome("b1", "b", resolved=False, durable=False, nps=0),
        outcome("b2", "b", segment="smb", completed_at=NOW - 29 * 86400),
    ]
    old = [outcome("a0", "a", resolved=False, durable=False, completed_at=NOW - 31 * 86400)]
    store_rows(database_url, in_window + old)
    every_measure = PerformanceMeasure(durable_resolution=1, resolution=1, nps=1, revenue=1)
    settings = Performance(window_days=30, prior_contacts=3, measure=every_measure)
    engine = make_engine(database_url)
    try:
        store = PerformanceStore(engine, settings)
        store.refresh()
    finally:
        engine.dispose()
    expected = PerformanceBook(settings)
    for row in in_window:
        expected.add(row)
    assert store.book.since == NOW - 30 * 86400
    assert store.book.records() == expected.records()
    assert [(r.agent_id, r.contacts) for r in store.book.records()] == [
        ("a", 3),
        ("b", 1),
        ("b", 1),
    ]


@pytest.mark.parametrize("when", ["before the snapshot", "after the snapshot"])
def test_a_write_during_a_rebuild_is_counted_exactly_once(
    database_url: str, when: str, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_clock.now = NOW
    first = outcome("a1", "a")
    store_rows(database_url, [first])
    engine = make_engine(database_url)
    store = PerformanceStore(engine, Performance())
    store.refresh()
    # While the rebuild reads, a repeat contact makes a1 non-durable and a2 is recorded.
    changed, added = {**first, "durable": False, "repeated_by": "a2"}, outcome("a2", "a")
    aggregate = performance_store._tallies

    def write() -> None:
        with engine.begin() as connection:
            connection.execute(
                OUTCOMES.update()
                .where(OUTCOMES.c.contact_id == "a1")
                .values(durable=False, repeated_by="a2")
            )
            connection.execute(insert(OUTCOMES), [added])
        store.on_outcomes([(first, changed), (None, added)])

    def tallies_with_a_write(connection: Any, since: float) -> Any:
        if when == "before the snapshot":
            write()
        found = list(aggregate(connection, since))
        if when == "after the snapshot":
            write()
        return found

    monkeypatch.setattr(performance_store, "_tallies", tallies_with_a_write)
    try:
        store.refresh()
        [a] = store.book.records()
        assert (a.contacts, a.raw.resolution_rate, a.raw.durable_resolution_rate) == (2, 1.0, 0.5)
        monkeypatch.setattr(performance_store, "_tallies", aggregate)
        store.refresh()  # and a plain rebuild agrees
        assert store.book.records() == [a]
    finally:
        engine.dispose()


# ---- through the API: routing, explanations, the table -----------------------------------


@contextlib.contextmanager
def floor(
    tmp_path: Path, clock: FakeClock, *, weight: float, rows: list[dict[str, Any]]
) -> Iterator[TestClient]:
    """The service with outcomes stored before it starts, and two billing agents.

    Agent B signs in half an hour before agent A, so on idle time alone B is first in line.
    """
    rules = tmp_path / "rules.yaml"
    rules.write_text(demo_rules_with(f"scoring: {{performance: {weight}}}"), encoding="utf-8")
    settings: Settings = make_settings(tmp_path, rules_file=rules)
    upgrade(settings.database_url)
    store_rows(settings.database_url, rows)
    clock.now = NOW
    with serve(settings) as client:
        headers = {"Authorization": f"Bearer {ACD_KEY}"}
        put_agents(client, headers, {"B": agent({"billing": 3}, name="B")})
        clock.advance(1800)
        put_agents(client, headers, {"A": agent({"billing": 3}, name="A")})
        yield client


ACD = {"Authorization": f"Bearer {ACD_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MANY = record("A", 60, 60) + record("B", 60, 6)
FEW = record("A", 2, 2) + record("B", 2, 0)


@pytest.mark.parametrize(
    ("weight", "rows", "winner"),
    [
        pytest.param(1.0, MANY, "A", id="60 of 60 beats 6 of 60 and half an hour of idle time"),
        pytest.param(1.0, FEW, "B", id="2 of 2 against 0 of 2 says too little: idle time wins"),
        pytest.param(0.0, MANY, "B", id="weight 0: idle time alone"),
        pytest.param(1.0, [], "B", id="no outcomes: idle time alone"),
    ],
)
def test_the_agent_who_resolves_this_kind_of_contact_gets_it_when_the_evidence_is_strong(
    tmp_path: Path, fake_clock: FakeClock, weight: float, rows: list[dict[str, Any]], winner: str
) -> None:
    with floor(tmp_path, fake_clock, weight=weight, rows=rows) as client:
        decision = route(client, ACD, contact("c1"))
        assert decision["agent_id"] == winner


@pytest.mark.parametrize(("weight", "winner"), [(1.0, "A"), (0.0, "B")])
def test_a_full_dispatch_weighs_performance_too(
    tmp_path: Path, fake_clock: FakeClock, weight: float, winner: str
) -> None:
    with floor(tmp_path, fake_clock, weight=weight, rows=MANY) as client:
        away = [{"agent_id": a, "status": "break"} for a in ("A", "B")]
        back = [{"agent_id": a, "status": "available"} for a in ("B", "A")]
        response = client.post("/v1/agents/status", json={"changes": away}, headers=ACD)
        assert response.status_code == 200, response.text
        assert route(client, ACD, contact("c1"))["outcome"] == "queued"
        # Both come back in one change: one dispatch, equal idle time, B first on the floor.
        response = client.post("/v1/agents/status", json={"changes": back}, headers=ACD)
        assert response.json()["assigned"] == 1
        assert client.get("/v1/contacts/c1", headers=ACD).json()["agent_id"] == winner


def test_explain_shows_the_performance_term_of_each_candidate(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    technical = [
        outcome(f"t{i}", "B", inquiry_type="technical", resolved=True, durable=True)
        for i in range(10)
    ]
    with floor(tmp_path, fake_clock, weight=1.0, rows=MANY + technical) as client:
        route(client, ACD, contact("c1"))
        explained = client.get("/v1/contacts/c1/explain", headers=ACD).json()
        terms = {c["agent_id"]: c for c in explained["candidates"]}
        # Team 66 of 120 = 0.55; A (60 + 20 * 0.55) / 80, B (6 + 20 * 0.55) / 80.
        assert terms["A"]["performance"] == 0.8875
        assert terms["B"]["performance"] == 0.2125
        assert terms["A"]["total"] > terms["B"]["total"]
        # A waiting technical contact: B is free but not eligible; the live explanation
        # still shows B's score on technical contacts (10 of 10, the whole team: 1.0).
        queued = route(client, ACD, contact("c2", inquiry_type="technical"))
        assert queued["outcome"] == "queued"
        live = client.get("/v1/contacts/c2/explain", headers=ACD).json()
        [b] = live["candidates"]
        assert (b["agent_id"], b["eligible"], b["performance"]) == ("B", False, 1.0)


def test_recorded_outcomes_reach_the_table_at_once_and_a_repeat_contact_ends_durability(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with floor(tmp_path, fake_clock, weight=1.0, rows=[]) as client:
        assert client.get("/v1/performance", headers=ADMIN).json()["items"] == []
        assert serve_and_record(client, contact("c1", customer_id="cust-1"), resolved=True) == "B"
        [row] = client.get("/v1/performance", headers=ADMIN).json()["items"]
        assert (row["agent_id"], row["contacts"], row["durable_resolution_rate"]) == ("B", 1, 1.0)
        # The same customer calls again about the same thing, within the repeat window; B has
        # been idle as long as A since c1 ended and comes first in the floor.
        fake_clock.advance(3600)
        assert serve_and_record(client, contact("c2", customer_id="cust-1"), resolved=False) == "B"
        [row] = client.get("/v1/performance", headers=ADMIN).json()["items"]
        # c1 was resolved but is no longer durable; c2 was not resolved.
        assert (row["contacts"], row["resolution_rate"], row["durable_resolution_rate"]) == (
            2,
            0.5,
            0.0,
        )


def serve_and_record(client: TestClient, body: dict[str, Any], *, resolved: bool) -> str:
    """Route a contact, accept its offer, complete it and record its outcome: the agent."""
    decision = route(client, ACD, body)
    reservation = decision["reservation"]["reservation_id"]
    contact_id = body["contact_id"]
    for path in (f"/v1/reservations/{reservation}/accept", f"/v1/contacts/{contact_id}/complete"):
        response = client.post(path, headers=ACD)
        assert response.status_code == 200, response.text
    response = client.put(
        f"/v1/contacts/{contact_id}/outcome", json={"resolved": resolved}, headers=ACD
    )
    assert response.status_code == 201, response.text
    return str(decision["agent_id"])


TECHNICAL = [outcome(f"t{i}", "B", inquiry_type="technical", nps=9) for i in range(4)]


def test_the_table_lists_raw_shrunk_and_team_figures_sorted_with_filters_and_pages(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with floor(tmp_path, fake_clock, weight=1.0, rows=MANY + TECHNICAL) as client:
        page = client.get("/v1/performance", headers=ADMIN).json()
        assert {k: page[k] for k in ("currency", "prior_contacts", "window_days", "total")} == {
            "currency": "EUR",
            "prior_contacts": 20,
            "window_days": 90,
            "total": 3,
        }
        assert page["since"] == NOW - 90 * 86400
        assert page["measure"] == {
            "durable_resolution": 1.0,
            "resolution": 0.0,
            "nps": 0.0,
            "revenue": 0.0,
        }
        a, b_billing, b_technical = page["items"]
        assert (a["agent_id"], a["inquiry_type"], a["segment"], a["journey_stage"]) == (
            "A",
            "billing",
            "consumer",
            "established",
        )
        assert {k: a[k] for k in ("contacts", "resolution_rate", "resolution_rate_shrunk")} == {
            "contacts": 60,
            "resolution_rate": 1.0,
            "resolution_rate_shrunk": 0.8875,
        }
        assert (a["score"], a["team_contacts"], a["team_score"]) == (0.8875, 120, 0.55)
        assert (a["nps"], a["nps_shrunk"], a["team_nps"]) == (None, None, None)
        assert (b_billing["agent_id"], b_billing["score"]) == ("B", 0.2125)
        assert (b_technical["inquiry_type"], b_technical["nps"], b_technical["nps_answers"]) == (
            "technical",
            100.0,
            4,
        )

        def rows(**params: Any) -> list[tuple[str, str]]:
            got = client.get("/v1/performance", params=params, headers=ADMIN)
            assert got.status_code == 200, got.text
            return [(r["agent_id"], r["inquiry_type"]) for r in got.json()["items"]]

        assert rows(agent_id="B") == [("B", "billing"), ("B", "technical")]
        assert rows(inquiry_type="technical") == [("B", "technical")]
        assert rows(agent_id="A", inquiry_type="technical") == []
        assert rows(segment="consumer", journey_stage="established", inquiry_type="billing") == [
            ("A", "billing"),
            ("B", "billing"),
        ]
        assert rows(segment="smb") == []
        assert rows(offset=1, limit=1) == [("B", "billing")]
        assert rows(offset=3) == []


def test_the_table_as_csv_by_format_or_accept(tmp_path: Path, fake_clock: FakeClock) -> None:
    with floor(tmp_path, fake_clock, weight=1.0, rows=MANY) as client:
        by_format = client.get("/v1/performance?format=csv&agent_id=A", headers=ADMIN)
        by_accept = client.get(
            "/v1/performance?agent_id=A", headers={**ADMIN, "Accept": "text/csv"}
        )
        for response in (by_format, by_accept):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            header, line = list(csv.reader(io.StringIO(response.text)))
            assert header == CSV_COLUMNS
            row = dict(zip(header, line, strict=True))
            assert (row["agent_id"], row["contacts"], row["score"], row["nps"]) == (
                "A",
                "60",
                "0.8875",
                "",
            )
        json_anyway = client.get(
            "/v1/performance?format=json", headers={**ADMIN, "Accept": "text/csv"}
        )
        assert json_anyway.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("offset=-1", "offset"),
        ("agent_id=", "agent_id"),
        ("segment=" + "x" * 65, "segment"),
        ("format=xml", "format"),
        ("agent_id=A&agent_id=B", "agent_id"),
    ],
)
def test_bad_table_queries_are_refused_naming_the_parameter(
    client: TestClient, admin_headers: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/v1/performance?{query}", headers=admin_headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == f"query.{field}" for e in response.json()["errors"])


def test_the_table_needs_an_admin_key(
    client: TestClient, acd_headers: dict[str, str], billing_headers: dict[str, str]
) -> None:
    assert client.get("/v1/performance").status_code == 401
    assert (
        client.get("/v1/performance", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert client.get("/v1/performance", headers=acd_headers).status_code == 403
    assert client.get("/v1/performance", headers=billing_headers).status_code == 403
