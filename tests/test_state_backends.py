"""The real-time state contract, run against the in-process backend and the Redis backend.

Both must give the same answers, and the claim must be atomic: two replicas sharing one Redis
never give the last free slot of an agent to two contacts, nor one contact to two agents.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from routing_rules.compiled import CompiledRules, ContactFacts, compile_rules
from routing_rules.validation import validate_rules_text
from service.dispatch import Dispatcher
from service.settings import DEMO_RULES
from service.state.base import RealtimeState
from service.state.memory import MemoryState
from service.state.records import AgentRecord, Reservation, WaitingEntry
from service.state.redis_state import RedisState, entry_from_json, entry_json


def rules() -> CompiledRules:
    return compile_rules(validate_rules_text(DEMO_RULES.read_text()).ruleset)


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[RealtimeState]:
    if request.param == "memory":
        yield MemoryState(rules())
        return
    url = request.getfixturevalue("redis_url")
    client = Redis.from_url(url)
    backend = RedisState(client, rules(), prefix=f"test-{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        await backend.clear()
        await client.aclose()


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[list[RedisState]]:
    """Two state objects on one Redis namespace, each with its own connection: two replicas."""
    prefix = f"test-{uuid.uuid4().hex}"
    # Bounded pools that wait for a free connection, as a service would configure them.
    clients = [
        Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=20))
        for _ in range(2)
    ]
    states = [RedisState(c, rules(), prefix=prefix) for c in clients]
    try:
        yield states
    finally:
        await states[0].clear()
        for client in clients:
            await client.aclose()


def agent(agent_id: str, capacity: int = 1, status: str = "available", **skills: int) -> Any:
    return AgentRecord(
        agent_id,
        agent_id.title(),
        skills or {"billing": 3},
        ["en"],
        {"voice": capacity},
        status,  # type: ignore[arg-type]
        100.0,
    )


def entry(contact_id: str, at: float = 200.0, **changes: Any) -> WaitingEntry:
    facts = ContactFacts("voice", "consumer", "billing", "established", "en", {"plan": "pro"})
    values: dict[str, Any] = {
        "contact_id": contact_id,
        "facts": facts,
        "channel": "voice",
        "language": "en",
        "rule": "billing",
        "stage": 0,
        "priority": 50,
        "enqueued_at": at,
        "stage_entered_at": at,
        "last_eligible_free_at": at,
    }
    values.update(changes)
    return WaitingEntry(**values)


def offer(contact_id: str, agent_id: str, reservation_id: str | None = None) -> Reservation:
    return Reservation(
        reservation_id or f"r-{contact_id}", contact_id, agent_id, "voice", 300.0, 320.0
    )


def test_a_waiting_entry_survives_its_json_form() -> None:
    original = entry(
        "c-1", excluded_agents=frozenset({"b", "a"}), excluded_until=9.5, tier="fast_lane"
    )
    assert entry_from_json(entry_json(original)) == original
    assert entry_from_json(entry_json(entry("c-2"))).next_check_at == math.inf


async def test_agents_presence_and_idle_time(state: RealtimeState) -> None:
    await state.put_agent(agent("ann", capacity=2))
    await state.put_agent(agent("bob", status="offline"))
    assert {a.agent_id: a.status for a in await state.agents()} == {
        "ann": "available",
        "bob": "offline",
    }
    assert await state.set_status("bob", "available", 150.0)
    assert not await state.set_status("nobody", "available", 150.0)
    bob = await state.get_agent("bob")
    assert bob is not None and (bob.status, bob.status_since) == ("available", 150.0)
    assert await state.get_agent("nobody") is None
    pool = await state.pool("voice", 200.0)
    rows = {str(agent_id): i for i, agent_id in enumerate(pool.ids)}
    voice = rules().channels.index("voice")
    assert pool.free[rows["ann"], voice] == 2 and pool.free[rows["bob"], voice] == 1
    assert pool.idle_seconds[rows["ann"]] == 100.0 and pool.idle_seconds[rows["bob"]] == 50.0
    assert await state.free_slots("voice") == 3 and await state.staffed("voice") == 2
    await state.set_status("ann", "break", 210.0)
    assert await state.free_slots("voice") == 1 and await state.staffed("voice") == 1


async def test_the_waiting_set_keeps_arrival_order_counts_and_positions(
    state: RealtimeState,
) -> None:
    await state.add_waiting(entry("c-1", at=1.0))
    await state.add_waiting(entry("c-2", at=2.0, priority=80))
    await state.add_waiting(entry("c-3", at=3.0, tier="fast_lane"))
    await state.add_waiting(entry("c-1", at=9.0))  # already waiting: unchanged
    assert [e.contact_id for e in await state.waiting("voice")] == ["c-1", "c-2", "c-3"]
    assert [e.contact_id for e in await state.waiting()] == ["c-1", "c-2", "c-3"]
    assert await state.waiting("chat") == []
    assert await state.waiting_count("voice") == 3
    assert await state.position("voice", 50) == 3  # everyone at rank 50 or above
    assert await state.position("voice", 80) == 2  # priority 80 and the fast lane
    removed = await state.remove_waiting("c-2")
    assert removed is not None and removed.priority == 80
    assert await state.remove_waiting("c-2") is None
    assert await state.waiting_count("voice") == 2
    assert await state.position("voice", 80) == 1
    live = await state.waiting_entry("c-1")
    assert live is not None and live.enqueued_at == 1.0


async def test_relaxation_checks_come_due_once_and_again_only_when_rescheduled(
    state: RealtimeState,
) -> None:
    await state.add_waiting(entry("c-1", next_check_at=50.0))
    await state.add_waiting(entry("c-2", next_check_at=500.0))
    assert await state.due_for_check(40.0) == []
    assert [e.contact_id for e in await state.due_for_check(60.0)] == ["c-1"]
    assert await state.due_for_check(60.0) == []
    first = await state.waiting_entry("c-1")
    assert first is not None
    await state.update_waiting([first])  # same check time: not due again
    assert await state.due_for_check(70.0) == []
    await state.update_waiting([entry("c-1", next_check_at=80.0, stage=1)])
    due = await state.due_for_check(90.0)
    assert [(e.contact_id, e.stage) for e in due] == [("c-1", 1)]
    await state.update_waiting([entry("gone", next_check_at=1.0)])  # not waiting: ignored
    assert await state.waiting_entry("gone") is None


async def test_a_claim_takes_the_contact_and_one_slot_and_fails_when_it_cannot(
    state: RealtimeState,
) -> None:
    await state.put_agent(agent("ann", capacity=1))
    await state.put_agent(agent("bob", status="break"))
    for contact_id in ("c-1", "c-2", "c-3"):
        await state.add_waiting(entry(contact_id))
    assert await state.claim(entry("c-1"), offer("c-1", "ann"))
    assert not await state.claim(entry("c-1"), offer("c-1", "ann", "r-again"))  # not waiting
    assert not await state.claim(entry("c-2"), offer("c-2", "ann"))  # ann is full
    assert not await state.claim(entry("c-3"), offer("c-3", "bob"))  # bob is on a break
    assert not await state.claim(entry("c-3"), offer("c-3", "nobody"))
    assert [e.contact_id for e in await state.waiting("voice")] == ["c-2", "c-3"]
    assert await state.load_of("ann") == {"voice": 1}
    assert await state.free_slots("voice") == 0
    assert await state.reservation("r-c-1") == offer("c-1", "ann")
    assert await state.reservations_of("ann") == [offer("c-1", "ann")]
    assert await state.due_reservations(319.0) == []
    assert await state.due_reservations(320.0) == [offer("c-1", "ann")]


async def test_ending_a_reservation_keeps_or_frees_the_slot_once(state: RealtimeState) -> None:
    await state.put_agent(agent("ann", capacity=2))
    for contact_id in ("c-1", "c-2"):
        await state.add_waiting(entry(contact_id))
        assert await state.claim(entry(contact_id), offer(contact_id, "ann"))
    accepted = await state.end_reservation("r-c-1", keep_load=True, now=400.0)
    assert accepted == offer("c-1", "ann")
    assert await state.end_reservation("r-c-1", keep_load=False, now=400.0) is None
    assert await state.load_of("ann") == {"voice": 2}
    await state.end_reservation("r-c-2", keep_load=False, now=410.0)
    assert await state.load_of("ann") == {"voice": 1}
    assert await state.reservations_of("ann") == []
    await state.release("ann", "voice", 500.0)
    assert await state.load_of("ann") == {}
    pool = await state.pool("voice", 700.0)
    row = [str(a) for a in pool.ids].index("ann")
    assert pool.idle_seconds[row] == 200.0  # idle since the last slot was freed
    await state.release("ann", "voice", 600.0)  # nothing left to free: stays at zero
    assert await state.load_of("ann") == {}
    await state.add_load("ann", "voice")
    assert await state.load_of("ann") == {"voice": 1}


async def test_the_dispatcher_assigns_through_either_backend(state: RealtimeState) -> None:
    compiled = rules()
    await state.put_agent(agent("ann", billing=4))
    await state.put_agent(agent("bob", billing=2))
    await state.add_waiting(entry("c-1", at=10.0))
    await state.add_waiting(entry("c-2", at=20.0))
    await state.add_waiting(entry("c-3", at=30.0))
    dispatcher = Dispatcher(
        state, reservation_ttl=20.0, solve_time_limit=2.0, inline_max_arcs=100_000
    )
    result = await dispatcher.dispatch(compiled, "voice", trigger="test", now=100.0)
    placed = {p.entry.contact_id: p.reservation.agent_id for p in result.placements}
    assert sorted(placed.values()) == ["ann", "bob"] and set(placed) <= {"c-1", "c-2", "c-3"}
    assert await state.waiting_count("voice") == 1
    assert await state.free_slots("voice") == 0


async def test_two_replicas_never_give_one_slot_twice(replicas: list[RedisState]) -> None:
    one, two = replicas
    for n in range(20):
        await one.put_agent(agent(f"agent-{n:02d}", capacity=2))
    for n in range(200):
        await one.add_waiting(entry(f"c-{n:03d}", at=float(n)))

    async def grab(state: RedisState, contact: int, agent_no: int) -> bool:
        contact_id = f"c-{contact:03d}"
        reservation = Reservation(
            f"r-{contact_id}-{id(state)}", contact_id, f"agent-{agent_no:02d}", "voice", 1, 9
        )
        return await state.claim(entry(contact_id), reservation)

    # Every contact is tried by both replicas on two agents at once: 800 concurrent claims.
    attempts = [
        grab(state, contact, (contact + shift) % 20)
        for contact in range(200)
        for state in (one, two)
        for shift in (0, 7)
    ]
    won = await asyncio.gather(*attempts)
    assert sum(won) == 40  # 20 agents x 2 slots, not one more
    for n in range(20):
        assert await two.load_of(f"agent-{n:02d}") == {"voice": 2}
    reservations = [r for n in range(20) for r in await two.reservations_of(f"agent-{n:02d}")]
    assert len({r.contact_id for r in reservations}) == 40  # no contact taken twice
    assert await two.waiting_count("voice") == 160
    assert await two.free_slots("voice") == 0


async def test_a_profile_change_on_one_replica_reaches_the_other(
    replicas: list[RedisState],
) -> None:
    one, two = replicas
    await one.put_agent(agent("ann", billing=1))
    pool = await two.pool("voice", 0.0)
    billing = rules().skills.index("billing")
    assert pool.skills[0, billing] == 1
    await one.put_agent(agent("ann", billing=5))
    pool = await two.pool("voice", 0.0)
    assert pool.skills[0, billing] == 5
    await one.put_agent(
        AgentRecord("ann", "Ann", {"billing": 5}, ["en"], {"chat": 2}, "available", 0.0)
    )
    assert await two.free_slots("voice") == 0 and await two.free_slots("chat") == 2


async def test_the_redis_channel_indexes_agree_with_the_in_process_state_after_any_changes(
    redis_url: str,
) -> None:
    """Random presence, capacity and load changes applied to both backends: the same pools.

    The Redis backend answers `pool`, `free_slots` and `staffed` from per-channel indexes that
    every script keeps; the in-process backend computes them from the agents each time.
    """
    import random

    compiled = rules()
    memory = MemoryState(compiled)
    client = Redis.from_url(redis_url)
    shared = RedisState(client, compiled, prefix=f"test-{uuid.uuid4().hex}")
    both: list[RealtimeState] = [memory, shared]
    draw = random.Random(7)
    agents = [f"a{n}" for n in range(6)]
    channels = ["voice", "chat", "email"]
    statuses = ["available", "break", "busy", "available"]
    offers: list[Reservation] = []
    connected: list[tuple[str, str]] = []
    waiting = 0
    try:
        for step in range(400):
            now = 1000.0 + step
            move = draw.random()
            agent_id = draw.choice(agents)
            if move < 0.2:
                capacity = {
                    c: draw.randint(0, 3) for c in draw.sample(channels, draw.randint(1, 3))
                }
                record = AgentRecord(
                    agent_id, agent_id, {"billing": 3}, ["en"], capacity, draw.choice(statuses), now
                )
                for state in both:
                    await state.put_agent(record)
            elif move < 0.4:
                status = draw.choice(statuses)
                results = [await state.set_status(agent_id, status, now) for state in both]
                assert results[0] == results[1]
            elif move < 0.65:
                channel = draw.choice(channels)
                waiting += 1
                item = entry(f"c{waiting}", now, channel=channel)
                reservation = Reservation(
                    f"r{waiting}", item.contact_id, agent_id, channel, now, now + 20
                )
                claimed = []
                for state in both:
                    await state.add_waiting(item)
                    claimed.append(await state.claim(item, reservation))
                assert claimed[0] == claimed[1], step
                if claimed[0]:
                    offers.append(reservation)
            elif move < 0.85 and offers:
                offer = offers.pop(draw.randrange(len(offers)))
                keep = draw.random() < 0.5
                for state in both:
                    await state.end_reservation(offer.reservation_id, keep_load=keep, now=now)
                if keep:
                    connected.append((offer.agent_id, offer.channel))
            elif connected:
                agent_id, channel = connected.pop(draw.randrange(len(connected)))
                for state in both:
                    await state.release(agent_id, channel, now)
            for channel in channels:
                pools = [await state.pool(channel, now) for state in both]
                c = compiled.channels.index(channel)
                frees = [
                    {str(a): int(f) for a, f in zip(p.ids, p.free[:, c], strict=True) if f}
                    for p in pools
                ]
                assert frees[0] == frees[1], (step, channel)
                assert await memory.free_slots(channel) == await shared.free_slots(channel)
                assert await memory.staffed(channel) == await shared.staffed(channel)
    finally:
        await shared.clear()
        await client.aclose()
