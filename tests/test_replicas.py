"""Several real server processes on one Redis and one PostgreSQL, as production runs them.

Each test starts `skillroute serve` replicas on a PostgreSQL schema and a Redis key prefix of
its own (both removed afterwards) and drives them over HTTP as an ACD, a billing system and the
agents' desktops would: any replica answers any call, a Redis flush is recovered from
PostgreSQL, and an offer made by a replica that died still expires and is offered again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ACD_KEY, BILLING_KEY, contact
from tests.replica_procs import Replica, ReplicaSet, SharedStores, shared_stores

# Real processes and a 1,000-contact run: slow, and on PostgreSQL already (so not part of the
# second, all-on-PostgreSQL pass of `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACD = {"Authorization": f"Bearer {ACD_KEY}"}
BILLING = {"Authorization": f"Bearer {BILLING_KEY}"}
ALL_SKILLS = {"billing": 3, "technical": 3, "sales": 3}


@pytest.fixture
def stores(postgres_url: str, redis_url: str) -> Iterator[SharedStores]:
    """A PostgreSQL schema and a Redis prefix for this test alone."""
    with shared_stores(postgres_url, redis_url) as made:
        yield made


@pytest.fixture
def cluster(stores: SharedStores, tmp_path: Path) -> Iterator[ReplicaSet]:
    """Replicas on the test's stores, all stopped at the end (before the stores go)."""
    replicas = ReplicaSet(stores, tmp_path)
    try:
        yield replicas
    finally:
        replicas.stop_all()


def agent_body(
    skills: dict[str, int], capacity: dict[str, int], status: str = "available"
) -> dict[str, Any]:
    """An agent profile."""
    return {
        "name": "Agent",
        "skills": skills,
        "languages": ["en"],
        "capacity": capacity,
        "status": status,
    }


def api(replica: Replica, headers: dict[str, str]) -> httpx.Client:
    """A client of one replica (idle connections closed before the server's keep-alive ends)."""
    return httpx.Client(
        base_url=replica.url,
        headers=headers,
        timeout=30.0,
        limits=httpx.Limits(keepalive_expiry=1.0),
    )


def ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The JSON body of a response that must have one of `statuses`."""
    expected = statuses or (200,)
    assert response.status_code in expected, (
        f"{response.request.method} {response.request.url} -> "
        f"{response.status_code} {response.text[:500]} (expected {expected})"
    )
    return dict(response.json())


def poll(
    client: httpx.Client, path: str, until: Any, *, timeout: float, interval: float = 0.1
) -> dict[str, Any]:
    """GET `path` until `until(body)` holds; fail with the last body after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = ok(client.get(path))
        if until(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"GET {path}: condition not met within {timeout} s; last: {last}")


# ---- 1: two replicas under load, with agent churn ------------------------------------------
CONTACTS = 1000
LINES = 120  # contacts the ACD handles at once (route, wait, offer, talk, hang up)
AGENTS = 40
CAPACITY = {"voice": 1, "chat": 2}


@dataclass
class Ledger:
    """What the ACD saw: unexpected answers, and which contacts hold which agent's slots."""

    problems: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    abandoned: set[str] = field(default_factory=set)
    talking: Counter[tuple[str, str]] = field(default_factory=Counter)
    trail: defaultdict[str, list[tuple[float, str, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    samples: int = 0
    completed: int = 0


class Acd:
    """An ACD with a connection pool to each replica, recording every unexpected answer."""

    def __init__(self, replicas: list[Replica], ledger: Ledger) -> None:
        # Idle connections are dropped before the server's keep-alive timeout (5 s) closes them.
        limits = httpx.Limits(
            max_connections=LINES + 20, max_keepalive_connections=LINES + 20, keepalive_expiry=1.0
        )
        self.clients = [
            httpx.AsyncClient(base_url=r.url, headers=ACD, timeout=30.0, limits=limits)
            for r in replicas
        ]
        self.ledger = ledger

    async def call(
        self,
        replica: int,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """The JSON answer, or None (recorded as a problem) if the status is not expected."""
        try:
            response = await self.clients[replica].request(method, path, json=json)
        except httpx.HTTPError as exc:
            self.ledger.problems.append(f"{method} {path} on replica {replica}: {exc!r}")
            return None
        self.ledger.statuses[response.status_code] += 1
        if response.status_code not in expect:
            self.ledger.problems.append(
                f"{method} {path} {json} on replica {replica}: {response.status_code} "
                f"{response.text[:300]} (expected {expect})"
            )
            return None
        return dict(response.json())

    async def close(self) -> None:
        """Close both pools."""
        for client in self.clients:
            await client.aclose()


async def floor_snapshot(acd: Acd, channel: str) -> str:
    """Who is free on `channel` and who waits there, as replica 0 sees it right now."""
    agents = await acd.call(0, "GET", "/v1/agents?limit=1000")
    queue = await acd.call(0, "GET", "/v1/queue?limit=5000")
    if agents is None or queue is None:
        return "no snapshot"
    free = {
        a["agent_id"]: a["free"][channel]
        for a in agents["items"]
        if a["status"] == "available" and a["free"].get(channel)
    }
    waiting = [i["contact_id"] for i in queue["items"] if i["channel"] == channel]
    return f"free {channel} slots now: {free}; waiting: {waiting[:20]}"


async def serve_one(acd: Acd, index: int, rng: random.Random) -> None:
    """One contact's life, as the ACD drives it: route on one replica, everything else on the
    other; every 25th customer hangs up right after routing."""
    ledger = acd.ledger
    home, other = index % 2, 1 - index % 2
    contact_id = f"load-{index:04d}"
    # A third voice, two thirds chat: about the floor's capacity, so contacts queue when agents
    # take breaks but no queue outlasts the run (lower-priority contacts would starve in one).
    channel = "chat" if index % 3 else "voice"
    inquiry = rng.choice(("billing", "technical", "sales"))
    decision = await acd.call(
        home,
        "POST",
        "/v1/route",
        expect=(201,),
        json=contact(contact_id, channel=channel, inquiry_type=inquiry),
    )
    if decision is None:
        return
    if index % 25 == 0:
        ended = await acd.call(other, "POST", f"/v1/contacts/{contact_id}/abandon")
        if ended is not None and ended["status"] != "abandoned":
            ledger.problems.append(f"abandon {contact_id}: status {ended['status']}")
        ledger.abandoned.add(contact_id)
        return
    reservation = decision["reservation"]["reservation_id"] if decision["reservation"] else None
    trail = ledger.trail[contact_id]  # what the ACD saw, for failure messages
    trail.append((time.time(), f"route: {decision['outcome']}", reservation))
    refused: dict[str, float] = {}  # offers gone (agent on break) before the accept: when
    seen: dict[str, Any] | None = None
    deadline = time.monotonic() + 45.0
    while True:
        if time.monotonic() > deadline:
            last = seen and {k: seen[k] for k in ("status", "agent_id", "reservation_id")}
            ledger.problems.append(
                f"{contact_id} ({channel}) never connected within 45 s: last seen {last}, "
                f"offers withdrawn before the accept: {sorted(refused)}; "
                + await floor_snapshot(acd, channel)
            )
            return
        if reservation is None:
            await asyncio.sleep(rng.uniform(0.2, 0.4))
            seen = await acd.call(rng.randrange(2), "GET", f"/v1/contacts/{contact_id}")
            if seen is None:
                return
            if not trail or trail[-1][1:] != (seen["status"], seen["reservation_id"]):
                trail.append((time.time(), seen["status"], seen["reservation_id"]))
            if seen["status"] == "reserved" and seen["reservation_id"] not in refused:
                reservation = seen["reservation_id"]
            elif seen["status"] == "reserved" and time.time() - refused[seen["reservation_id"]] > 5:
                # The contact's record must follow its offers: one that accept calls not open
                # may be shown only for as long as it takes to record what replaced it.
                ledger.problems.append(
                    f"GET /v1/contacts/{contact_id} still shows offer {seen['reservation_id']} "
                    f"{time.time() - refused[seen['reservation_id']]:.1f} s after its accept "
                    f"answered 404 (not open); the ACD saw {trail}"
                )
                return
            elif seen["status"] not in ("queued", "reserved"):
                ledger.problems.append(f"{contact_id}: {seen['status']} before it was accepted")
                return
            continue
        answer = await acd.call(
            other, "POST", f"/v1/reservations/{reservation}/accept", expect=(200, 404)
        )
        if answer is None:
            return
        trail.append((time.time(), f"accept: {answer.get('status', 404)}", reservation))
        if answer.get("status") == "accepted":
            break
        refused[reservation] = time.time()
        reservation = None
    agent_id = answer["agent_id"]
    if answer["contact_id"] != contact_id or answer["contact_status"] != "connected":
        ledger.problems.append(f"accept of {reservation} for {contact_id} answered {answer}")
    if contact_id in ledger.accepted:
        ledger.problems.append(f"{contact_id} accepted twice: {ledger.accepted[contact_id]}")
    ledger.accepted[contact_id] = (reservation, agent_id, time.time())
    # Every contact whose accept came back and whose complete was not sent yet holds a slot
    # of its agent at this moment: more of them than the agent's capacity is a double claim.
    ledger.talking[agent_id, channel] += 1
    if ledger.talking[agent_id, channel] > CAPACITY[channel]:
        ledger.problems.append(
            f"{agent_id} is connected to {ledger.talking[agent_id, channel]} {channel} "
            f"contacts at once (capacity {CAPACITY[channel]})"
        )
    await asyncio.sleep(rng.uniform(0.02, 0.1))
    ledger.talking[agent_id, channel] -= 1
    done = await acd.call(other, "POST", f"/v1/contacts/{contact_id}/complete")
    if done is not None and done["status"] != "completed":
        ledger.problems.append(f"complete {contact_id}: status {done['status']}")
    ledger.completed += 1


async def churn(
    acd: Acd, agents: list[str], resting: set[str], stop: asyncio.Event, rng: random.Random
) -> None:
    """Agents take short breaks: off through one replica, back through the other."""
    turn = 0
    while not stop.is_set():
        choices = [a for a in agents if a not in resting]
        group = rng.sample(choices, 1 if turn % 4 else 3)
        resting.update(group)
        away, back = turn % 2, 1 - turn % 2
        if len(group) == 1:
            path = f"/v1/agents/{group[0]}/status"
            await acd.call(away, "POST", path, json={"status": "break"})
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            await acd.call(back, "POST", path, json={"status": "available"})
        else:
            changes = [{"agent_id": a, "status": "break"} for a in group]
            await acd.call(away, "POST", "/v1/agents/status", json={"changes": changes})
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            changes = [{"agent_id": a, "status": "available"} for a in group]
            await acd.call(back, "POST", "/v1/agents/status", json={"changes": changes})
        resting.difference_update(group)
        turn += 1
        await asyncio.sleep(rng.uniform(0.02, 0.1))


def capacity_problems(agents: list[dict[str, Any]], where: str) -> list[str]:
    """Agents whose load on a channel is above its capacity (or below zero)."""
    found = []
    for agent in agents:
        for channel, load in agent["load"].items():
            if not 0 <= load <= agent["capacity"].get(channel, 0):
                found.append(f"{where}: {agent['agent_id']} has load {agent['load']}")
    return found


async def sample_capacity(acd: Acd, stop: asyncio.Event) -> None:
    """GET /v1/agents every 0.2 s, alternating replicas: nobody above capacity."""
    turn = 0
    while not stop.is_set():
        page = await acd.call(turn % 2, "GET", "/v1/agents?limit=1000")
        if page is not None:
            acd.ledger.samples += 1
            acd.ledger.problems.extend(capacity_problems(page["items"], f"sample {turn}"))
        turn += 1
        await asyncio.sleep(0.2)


async def load_run(replicas: list[Replica], ledger: Ledger) -> None:
    """1,000 contacts over two replicas with agent churn and capacity sampling."""
    acd = Acd(replicas, ledger)
    agents = [f"agent-{i:02d}" for i in range(AGENTS)]
    try:
        for i, agent_id in enumerate(agents):
            await acd.call(
                i % 2,
                "PUT",
                f"/v1/agents/{agent_id}",
                expect=(201,),
                json=agent_body(ALL_SKILLS, CAPACITY),
            )
        lines = asyncio.Semaphore(LINES)

        async def line(index: int) -> None:
            async with lines:
                await serve_one(acd, index, random.Random(index))

        stop = asyncio.Event()
        resting: set[str] = set()
        background = [
            asyncio.create_task(churn(acd, agents, resting, stop, random.Random(s)))
            for s in range(3)
        ]
        background.append(asyncio.create_task(sample_capacity(acd, stop)))
        lives = [asyncio.create_task(line(i)) for i in range(CONTACTS)]
        try:
            _, unfinished = await asyncio.wait(lives, timeout=75.0)
            for task in unfinished:
                task.cancel()
            if unfinished:
                ledger.problems.append(
                    f"{len(unfinished)} contacts unfinished after 75 s "
                    f"({len(ledger.accepted)} accepted, {ledger.completed} completed)"
                )
        finally:
            stop.set()
            await asyncio.gather(*background)
    finally:
        await acd.close()


def test_two_replicas_route_1000_contacts_with_agent_churn_without_double_assignment(
    cluster: ReplicaSet, stores: SharedStores
) -> None:
    replicas = [cluster.start("a"), cluster.start("b")]
    ledger = Ledger()
    started = time.monotonic()
    asyncio.run(load_run(replicas, ledger))
    elapsed = time.monotonic() - started

    server_errors = {s: n for s, n in ledger.statuses.items() if s >= 500}
    assert server_errors == {}, ledger.problems[:20]
    assert ledger.problems == [], f"{len(ledger.problems)} problems: {ledger.problems[:20]}"
    assert ledger.samples >= 5, f"only {ledger.samples} capacity samples in {elapsed:.1f} s"
    served = set(ledger.accepted)
    assert len(served) + len(ledger.abandoned) == CONTACTS
    assert len(ledger.abandoned) == CONTACTS // 25

    # Afterwards every replica shows the same end: every contact ended as the ACD ended it,
    # nobody waiting, every agent available with no load.
    for replica in replicas:
        with api(replica, ACD) as client:
            agents = ok(client.get("/v1/agents?limit=1000"))["items"]
            assert len(agents) == AGENTS
            assert capacity_problems(agents, replica.name) == []
            assert {a["agent_id"]: a["load"] for a in agents if any(a["load"].values())} == {}
            assert {a["status"] for a in agents} == {"available"}
            assert ok(client.get("/v1/queue"))["waiting"] == 0
            for contact_id, (_, agent_id, _) in sorted(ledger.accepted.items()):
                seen = ok(client.get(f"/v1/contacts/{contact_id}"))
                assert (seen["status"], seen["agent_id"]) == ("completed", agent_id), seen
                assert seen["created_at"] <= seen["assigned_at"] <= seen["connected_at"]
                assert seen["connected_at"] <= seen["ended_at"], seen
            for contact_id in sorted(ledger.abandoned):
                seen = ok(client.get(f"/v1/contacts/{contact_id}"))
                assert seen["status"] == "abandoned", seen
                assert seen["connected_at"] is None, seen

    # PostgreSQL, the source of truth, says the same once the batch writers have flushed.
    expected = {c: "completed" for c in served} | {c: "abandoned" for c in ledger.abandoned}
    deadline = time.monotonic() + 10.0
    while True:
        stored = dict(stores.rows("SELECT contact_id, status FROM contacts"))
        if stored == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    wrong = {c: (stored.get(c), s) for c, s in expected.items() if stored.get(c) != s}
    assert wrong == {}, f"{len(wrong)} contacts stored as (stored, expected): {list(wrong)[:20]}"
    time.sleep(0.3)  # the events of the last flush interval
    connected = {
        c: (agent_id, connected_at)
        for c, agent_id, connected_at in stores.rows(
            "SELECT contact_id, agent_id, connected_at FROM contacts WHERE status = 'completed'"
        )
    }
    assert {c: a for c, (a, _) in connected.items()} == {
        c: agent_id for c, (_, agent_id, _) in ledger.accepted.items()
    }
    assert all(at is not None for _, at in connected.values())
    offers: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for contact_id, reservation_id, agent_id, at in stores.rows(
        "SELECT contact_id, reservation_id, agent_id, at FROM decisions "
        "WHERE outcome = 'assigned' ORDER BY at"
    ):
        offers[contact_id].append((reservation_id, agent_id, at))
    requeued: dict[str, list[tuple[str, float]]] = defaultdict(list)
    events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for kind, data, at in stores.rows(
        "SELECT type, payload->'data', created_at FROM outbox "
        "WHERE type LIKE 'contact.%' ORDER BY created_at"
    ):
        events[data["contact_id"]].append(
            (kind, at, data.get("requeued_after"), data.get("agent_id"), data.get("reservation_id"))
        )
        if kind == "contact.queued" and data.get("requeued_after"):
            requeued[data["contact_id"]].append((data["requeued_after"], at))
    mismatched = []
    for contact_id, (reservation_id, agent_id, accepted_at) in ledger.accepted.items():
        made = offers[contact_id]
        ids = [r for r, _, _ in made]
        if len(set(ids)) != len(ids) or (reservation_id, agent_id) not in {
            (r, a) for r, a, _ in made
        }:
            mismatched.append(
                f"{contact_id}: accepted {reservation_id} ({agent_id}), offers {made}"
            )
        elif any(at > accepted_at for _, _, at in made):
            mismatched.append(f"{contact_id}: offered again after it was accepted: {made}")
        elif len(made) != len(requeued[contact_id]) + 1:
            # Every offer but the accepted one must have ended (withdrawn or expired) and put
            # the contact back in the queue before the next one was made.
            mismatched.append(
                f"{contact_id}: offers (reservation, agent, at) {made}, accepted "
                f"{reservation_id} at {accepted_at}, but requeues {requeued[contact_id]}; "
                f"the ACD saw {ledger.trail[contact_id]}; events {events[contact_id]}"
            )
    assert mismatched == [], (
        f"{len(mismatched)} contacts whose offers and requeues differ: {mismatched[:10]}"
    )
    print(
        f"\n{CONTACTS} contacts in {elapsed:.1f} s; answers {dict(ledger.statuses)}; "
        f"{ledger.samples} capacity samples; {sum(map(len, requeued.values()))} offers withdrawn"
    )


# ---- 2: Redis loses its data in the middle of a run -----------------------------------------
async def watch_readiness(
    replica: Replica, seen: list[tuple[float, int, dict[str, str]]], stop: asyncio.Event
) -> None:
    """Poll /readyz every 10 ms, keeping each change of answer."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=5.0) as client:
        while not stop.is_set():
            try:
                response = await client.get("/readyz")
                answer = (response.status_code, dict(response.json()["checks"]))
            except httpx.HTTPError as exc:
                answer = (0, {"transport": repr(exc)})
            if not seen or seen[-1][1:] != answer:
                seen.append((time.monotonic(), *answer))
            await asyncio.sleep(0.01)


async def keep_routing(
    replicas: list[Replica], stop: asyncio.Event, answers: dict[str, int], problems: list[str]
) -> None:
    """An ACD that keeps routing email contacts (nobody takes email: they stay queued)."""
    async with (
        httpx.AsyncClient(base_url=replicas[0].url, headers=ACD, timeout=30.0) as first,
        httpx.AsyncClient(base_url=replicas[1].url, headers=ACD, timeout=30.0) as second,
    ):
        index = 0
        while not stop.is_set():
            contact_id = f"bg-{index:04d}"
            client = (first, second)[index % 2]
            response = await client.post(
                "/v1/route", json=contact(contact_id, channel="email", inquiry_type="sales")
            )
            answers[contact_id] = response.status_code
            if response.status_code == 503:
                missing = [
                    what
                    for what, present in (
                        (
                            "problem JSON",
                            response.headers.get("content-type") == "application/problem+json",
                        ),
                        ("Retry-After", "Retry-After" in response.headers),
                    )
                    if not present
                ]
                if missing:
                    problems.append(
                        f"POST /v1/route {contact_id}: 503 without {' and '.join(missing)}: "
                        f"{response.text[:300]}"
                    )
            elif response.status_code != 201:
                problems.append(f"{contact_id}: {response.status_code} {response.text[:300]}")
            index += 1
            await asyncio.sleep(0.02)


async def flush_redis_while_routing(
    stores: SharedStores, replicas: list[Replica]
) -> tuple[list[list[tuple[float, int, dict[str, str]]]], dict[str, int], list[str], float]:
    """Route in the background, delete every key of the prefix at once, and wait until both
    replicas have answered /readyz with 503 and then 200 again."""
    stop = asyncio.Event()
    seen: list[list[tuple[float, int, dict[str, str]]]] = [[], []]
    answers: dict[str, int] = {}
    problems: list[str] = []
    watchers = [
        asyncio.create_task(watch_readiness(r, s, stop))
        for r, s in zip(replicas, seen, strict=True)
    ]
    router = asyncio.create_task(keep_routing(replicas, stop, answers, problems))
    try:
        await asyncio.sleep(0.5)
        assert len(stores.redis_keys()) > 0
        flushed_at = time.monotonic()
        assert stores.wipe_redis() > 0
        deadline = flushed_at + 30.0
        while time.monotonic() < deadline:
            recovered = [
                any(s[1] == 503 for s in history) and history[-1][1] == 200 for history in seen
            ]
            if all(recovered):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a little routing after the recovery too
    finally:
        stop.set()
        await asyncio.gather(*watchers, router)
    return seen, answers, problems, flushed_at


def fast_lane_of_another_contact(client: httpx.Client, contact_id: str) -> str:
    """The tier of a new chat contact of the fast-lane customer (it waits: no chat agents)."""
    decision = ok(
        client.post(
            "/v1/route",
            json=contact(contact_id, customer_id="cust-fast", channel="chat", inquiry_type="sales"),
        ),
        201,
    )
    assert decision["outcome"] == "queued"
    return str(decision["tier"])


def test_a_redis_flush_mid_run_is_rebuilt_from_postgresql_with_every_contact_and_pass_in_place(
    cluster: ReplicaSet, stores: SharedStores
) -> None:
    ttl = 20.0
    a = cluster.start("a", reservation_ttl_seconds=ttl)
    b = cluster.start("b", reservation_ttl_seconds=ttl)
    with (
        api(a, ACD) as on_a,
        api(b, ACD) as on_b,
        api(b, BILLING) as billing,
    ):
        # Three billing agents, one voice call each; nobody takes technical calls yet.
        for agent_id in ("bill-1", "bill-2", "bill-3"):
            ok(
                on_a.put(f"/v1/agents/{agent_id}", json=agent_body({"billing": 3}, {"voice": 1})),
                201,
            )
        sold = ok(
            billing.post(
                "/v1/passes",
                json={
                    "customer_id": "cust-fast",
                    "kind": "single_incident",
                    "price_amount": 1500,
                    "currency": "EUR",
                },
                headers={"Idempotency-Key": "order-fast-1"},
            ),
            201,
        )
        pass_id = sold["pass_id"]
        assert sold["status"] == "active"
        time.sleep(1.2)  # the pass index of the other replica refreshes every second

        talking = ok(on_a.post("/v1/route", json=contact("c-talking")), 201)
        ok(on_b.post(f"/v1/reservations/{talking['reservation']['reservation_id']}/accept"))
        kept = ok(on_b.post("/v1/route", json=contact("c-kept")), 201)
        lapsing = ok(on_a.post("/v1/route", json=contact("c-lapsing")), 201)
        waiting = ok(on_b.post("/v1/route", json=contact("c-waiting")), 201)
        fast = ok(
            on_a.post(
                "/v1/route",
                json=contact("c-fast", customer_id="cust-fast", inquiry_type="technical"),
            ),
            201,
        )
        # The pass is held by that contact: the customer's next contact is standard, whichever
        # replica routes it.
        assert fast_lane_of_another_contact(on_b, "c-fast-2") == "standard"
        assert [d["outcome"] for d in (talking, kept, lapsing, waiting, fast)] == [
            "assigned",
            "assigned",
            "assigned",
            "queued",
            "queued",
        ]
        assert fast["tier"] == "fast_lane"
        assert len({d["agent_id"] for d in (talking, kept, lapsing)}) == 3
        before = {
            c: ok(on_a.get(f"/v1/contacts/{c}"))
            for c in ("c-talking", "c-kept", "c-lapsing", "c-waiting", "c-fast", "c-fast-2")
        }

        seen, answers, problems, flushed_at = asyncio.run(flush_redis_while_routing(stores, [a, b]))
        for replica, history in zip((a, b), seen, strict=True):
            assert any(
                status == 503 and checks.get("realtime_state", "").startswith("error")
                for _, status, checks in history
            ), f"{replica.name} never answered /readyz 503 (realtime_state): {history}"
            assert history[-1][1] == 200, f"{replica.name} not ready again: {history}"
        refused = sorted(c for c, status in answers.items() if status == 503)
        accepted = sorted(c for c, status in answers.items() if status == 201)
        assert accepted, answers

        # Every contact is where it was, on both replicas.
        for client in (on_a, on_b):
            now = {c: ok(client.get(f"/v1/contacts/{c}")) for c in before}
            for contact_id, was in before.items():
                same = ("status", "agent_id", "reservation_id", "tier", "pass_id", "connected_at")
                assert {k: now[contact_id][k] for k in same} == {k: was[k] for k in same}
                assert now[contact_id]["reservation_expires_at"] == pytest.approx(
                    was["reservation_expires_at"], abs=1e-3
                )
            agents = {x["agent_id"]: x for x in ok(client.get("/v1/agents?limit=100"))["items"]}
            assert {k: v["load"] for k, v in agents.items()} == {
                "bill-1": {"voice": 1},
                "bill-2": {"voice": 1},
                "bill-3": {"voice": 1},
            }
            for contact_id in accepted:
                assert ok(client.get(f"/v1/contacts/{contact_id}"))["status"] == "queued"
        # An ACD retries what was refused: each is routed once and waits.
        for contact_id in refused:
            index = int(contact_id.split("-")[1])
            again = (on_a, on_b)[index % 2].post(
                "/v1/route", json=contact(contact_id, channel="email", inquiry_type="sales")
            )
            assert ok(again, 200, 201)["outcome"] == "queued"
        queue = ok(on_b.get("/v1/queue?limit=5000"))
        assert {i["contact_id"] for i in queue["items"]} == {
            "c-waiting",
            "c-fast",
            "c-fast-2",
            *answers,
        }
        assert ok(billing.get(f"/v1/passes/{pass_id}"))["status"] == "active"

        # The pass is still held by the waiting fast-lane contact: another contact of the same
        # customer, on the other replica, is in the standard tier.
        assert fast_lane_of_another_contact(on_b, "c-fast-3") == "standard"

        # The kept offer is accepted with the id the ACD was given before the flush.
        ok(on_a.post(f"/v1/reservations/{kept['reservation']['reservation_id']}/accept"))
        # The waiting contact is still dispatchable: the talking one ends and frees its agent.
        ok(on_a.post("/v1/contacts/c-talking/complete"))
        offered = poll(
            on_b, "/v1/contacts/c-waiting", lambda c: c["status"] == "reserved", timeout=5.0
        )
        assert offered["agent_id"] == talking["agent_id"]
        # A technical agent arrives: the fast-lane contact is offered, accepted, and uses the pass.
        ok(on_b.put("/v1/agents/tech-1", json=agent_body({"technical": 3}, {"voice": 1})), 201)
        offer = poll(on_a, "/v1/contacts/c-fast", lambda c: c["status"] == "reserved", timeout=5.0)
        assert (offer["agent_id"], offer["tier"]) == ("tech-1", "fast_lane")
        ok(on_b.post(f"/v1/reservations/{offer['reservation_id']}/accept"))
        used = poll(
            billing, f"/v1/passes/{pass_id}", lambda p: p["status"] == "consumed", timeout=5.0
        )
        assert used["contact_id"] == "c-fast"

        # The lapsing offer keeps its original expiry, then expires and is not that agent's.
        expires_at = lapsing["reservation"]["expires_at"]
        time.sleep(max(0.0, expires_at - time.time()) + 2.5)
        after = ok(on_b.get("/v1/contacts/c-lapsing"))
        assert after["reservation_id"] != lapsing["reservation"]["reservation_id"]
        assert after["status"] in ("queued", "reserved")
        assert after["agent_id"] != lapsing["agent_id"]
        assert ok(
            on_a.post(f"/v1/reservations/{lapsing['reservation']['reservation_id']}/accept"), 404
        )
        assert problems == []
        recovery = [round(h[-1][0] - flushed_at, 2) for h in seen]
        print(f"\nready again {recovery} s after the flush; {len(refused)} routes refused with 503")


# ---- 3: an offer outlives the replica that made it ------------------------------------------
@pytest.mark.parametrize(
    ("exclusion", "second_agent"),
    [(120.0, True), (2.0, False)],
    ids=["to-another-agent", "to-the-same-agent-after-its-exclusion"],
)
def test_an_offer_of_a_killed_replica_expires_and_is_offered_again_by_the_survivor(
    cluster: ReplicaSet, stores: SharedStores, exclusion: float, second_agent: bool
) -> None:
    ttl = 3.0
    settings = {"reservation_ttl_seconds": ttl, "reject_exclusion_seconds": exclusion}
    a = cluster.start("a", **settings)
    b = cluster.start("b", **settings)
    skills = {"technical": 3}
    with (
        api(a, ACD) as on_a,
        api(b, ACD) as on_b,
    ):
        ok(on_a.put("/v1/agents/first", json=agent_body(skills, {"voice": 1})), 201)
        ok(on_a.put("/v1/agents/second", json=agent_body(skills, {"voice": 1}, "offline")), 201)
        first = ok(on_a.post("/v1/route", json=contact("c-1", inquiry_type="technical")), 201)
        assert (first["outcome"], first["agent_id"]) == ("assigned", "first")
        offered = first["reservation"]["reservation_id"]
        if second_agent:
            ok(on_b.post("/v1/agents/second/status", json={"status": "available"}))
        time.sleep(0.3)  # A's batch writer has committed the decision
        a.kill()
        assert ok(on_b.get("/readyz"))["status"] == "ready"
        seen = ok(on_b.get("/v1/contacts/c-1"))
        assert (seen["status"], seen["reservation_id"], seen["agent_id"]) == (
            "reserved",
            offered,
            "first",
        )

        again = poll(
            on_b,
            "/v1/contacts/c-1",
            lambda c: c["status"] == "reserved" and c["reservation_id"] != offered,
            timeout=ttl + (0.0 if second_agent else exclusion) + 5.0,
        )
        assert again["agent_id"] == ("second" if second_agent else "first")
        assert again["reservation_expires_at"] > first["reservation"]["expires_at"]
        assert ok(on_b.post(f"/v1/reservations/{offered}/accept"), 404)
        accepted = ok(on_b.post(f"/v1/reservations/{again['reservation_id']}/accept"))
        assert (accepted["contact_id"], accepted["contact_status"]) == ("c-1", "connected")
        assert ok(on_b.post("/v1/contacts/c-1/complete"))["status"] == "completed"

    time.sleep(0.3)  # B's batch writer
    offers = stores.rows(
        "SELECT reservation_id, agent_id, at FROM decisions "
        "WHERE contact_id = 'c-1' AND outcome = 'assigned' ORDER BY at"
    )
    assert [(r, agent) for r, agent, _ in offers] == [
        (offered, "first"),
        (again["reservation_id"], again["agent_id"]),
    ]
    if not second_agent:
        # The same agent only once the exclusion after the expiry had run out.
        assert offers[1][2] >= first["reservation"]["expires_at"] + exclusion - 0.05
    requeues = stores.rows(
        "SELECT payload->'data'->>'requeued_after' FROM outbox "
        "WHERE type = 'contact.queued' AND payload->'data'->>'contact_id' = 'c-1'"
    )
    assert requeues == [("expired",)]
    assert stores.rows("SELECT status, agent_id FROM contacts WHERE contact_id = 'c-1'") == [
        ("completed", again["agent_id"])
    ]
