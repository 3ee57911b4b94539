"""Route throughput and latency: embedded, and one and two replicas on Redis + PostgreSQL.

    python -m bench.bench_replicas [--agents 1000] [--requests 12000] [--concurrency 32]
                                   [--rate 500] [--seconds 8] [--max-seconds 20]
                                   [--database-url postgresql://postgres@127.0.0.1:5432/test]
                                   [--redis-url redis://127.0.0.1:6379/14]

Measures, in one run and one configuration after another (only one configuration's servers
run at a time):
1. embedded: one `skillroute serve` process, SQLite in a temporary directory, in-process state;
2. Redis + PostgreSQL, one replica;
3. Redis + PostgreSQL, two replicas: two `skillroute serve` processes on two ports sharing one
   Redis prefix and one PostgreSQL schema.
Each configuration gets a fresh PostgreSQL schema (dropped at the end) and a fresh Redis key
prefix (its keys deleted at the end), the same agents (loaded through the API) and the same
request mix as `bench.bench_route`. The load generator is `bench.loadgen` on uvloop in this
process; with two replicas, request i goes to replica i mod 2 over connections split evenly
between them, as a round-robin load balancer would send it. A closed loop gives throughput
(`--requests`, cut short after `--max-seconds`); an open loop at `--rate` gives p50/p99
latency, counted from each request's scheduled time (skipped, and said so, where the closed
loop did not reach that rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import psycopg
import redis
import uvloop
from psycopg import sql

from bench.bench_route import KEY, ROOT, _agents, _contact_bodies, _free_port
from bench.loadgen import LoadResult, closed_loop, open_loop, post

T = TypeVar("T")
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 90.0
WARM_UP_REQUESTS = 2000
WARM_UP_SECONDS = 5.0
ROUND_SECONDS = 4.0
AGENT_LOAD_CONNECTIONS = 4
EMBEDDED = "embedded (SQLite, in-process state)"
SHARED_1 = "Redis+PG, 1 replica"
SHARED_2 = "Redis+PG, 2 replicas"


class ReplicaFailed(RuntimeError):
    """A replica did not become ready, or died; the message carries its log."""


@dataclass(frozen=True)
class Configuration:
    """One deployment under test."""

    name: str
    replicas: int
    shared: bool  # Redis + PostgreSQL, or embedded


@dataclass
class Replica:
    """One `skillroute serve` process and the file that collects its output."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the replica's stdout and stderr."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:] if text else "(empty log)"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (0 where /proc is missing)."""
        return _process_cpu_seconds(self.process.pid)


@dataclass
class Outcome:
    """What one configuration measured, or why it could not."""

    configuration: Configuration
    throughput: LoadResult | None = None
    latency: LoadResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    logs: dict[int, str] = field(default_factory=dict)


# --- processes and CPU accounting ---------------------------------------------------------


def _process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 of /proc/PID/stat (utime, stime) are the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass
class CpuUse:
    """CPU used during one measured phase, in cores (1.0 = one core busy the whole time)."""

    machine: float
    servers: float
    load_generator: float


@contextmanager
def _cpu_meter(replicas: Sequence[Replica], sink: list[CpuUse]) -> Iterator[None]:
    busy0, total0 = _machine_ticks()
    servers0 = sum(r.cpu_seconds() for r in replicas)
    own0 = time.process_time()
    wall0 = time.perf_counter()
    yield
    wall = time.perf_counter() - wall0
    busy1, total1 = _machine_ticks()
    cores = os.cpu_count() or 1
    machine = (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0
    servers = (sum(r.cpu_seconds() for r in replicas) - servers0) / wall
    sink.append(CpuUse(machine, servers, (time.process_time() - own0) / wall))


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("skillroute")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from service.cli import app; app()", "serve"]


def _start_replica(env: dict[str, str], port: int, log: Path) -> Replica:
    """Start `skillroute serve` on `port` and wait until /readyz answers 200."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _serve_command(),
            env={**env, "SKILLROUTE_PORT": str(port)},
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    replica = Replica(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ReplicaFailed(
                f"replica on port {port} exited with code {code} before it was ready; "
                f"its output:\n{replica.log_tail()}"
            )
        try:
            answer = httpx.get(f"http://{HOST}:{port}/readyz", timeout=2)
            if answer.status_code == 200:
                return replica
            last = f"{answer.status_code} {answer.text}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    _stop(replica)
    raise ReplicaFailed(
        f"replica on port {port} not ready after {START_TIMEOUT_SECONDS:.0f} s "
        f"(last /readyz: {last}); its output:\n{replica.log_tail()}"
    )


def _stop(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.terminate()
        try:
            replica.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(timeout=10)


# --- PostgreSQL schemas and Redis prefixes -------------------------------------------------


def _libpq(url: str) -> str:
    """A SQLAlchemy-style PostgreSQL URL as psycopg takes it (no `+driver`)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def _schema_url(url: str, schema: str) -> str:
    """`url` with the connection option that makes `schema` the only search path."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _create_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(_libpq(database_url), autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def _drop_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(_libpq(database_url), autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key that contains `prefix` (plain `prefix:` or hash-tagged `{prefix}:`)."""
    client = redis.Redis.from_url(redis_url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


# --- load ------------------------------------------------------------------------------------


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # uvloop: the load generator shares two cores with the servers, so it must be cheap.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _round_robin(bodies: list[bytes], replicas: int, k: int, port: int) -> Callable[[int], bytes]:
    """Requests for replica `k` of `replicas`: bodies k, k + replicas, k + 2 * replicas, ..."""
    share = bodies[k::replicas]
    headers = {"Authorization": f"Bearer {KEY}"}
    host = f"{HOST}:{port}"

    def make(i: int) -> bytes:
        return post(host, "/v1/route", share[i % len(share)], headers)

    return make


def _merge(parts: Sequence[LoadResult], elapsed: float) -> LoadResult:
    merged = LoadResult(elapsed=elapsed)
    for part in parts:
        merged.latencies.extend(part.latencies)
        for status, count in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged


async def _closed(
    ports: Sequence[int], bodies: list[bytes], connections: int, budget: float
) -> LoadResult:
    """Closed loop over all replicas (request i to replica i mod n, `connections` split evenly).

    It runs in rounds of about ROUND_SECONDS and stops early once `budget` seconds have passed,
    so that a slow configuration cannot stretch the run: the throughput is requests completed
    over the time taken. Each round ends with a short ramp-down (the last requests in flight),
    about 1 % of a round at these sizes, the same in every configuration.
    """
    n = len(ports)
    parts: list[LoadResult] = []
    sent = 0
    size = max(4 * connections, 64)  # a small first round to learn the rate
    began = time.perf_counter()
    while sent < len(bodies):
        batch = bodies[sent : sent + size]
        parts.extend(
            await asyncio.gather(
                *(
                    closed_loop(
                        HOST,
                        port,
                        _round_robin(batch, n, k, port),
                        total=len(batch[k::n]),
                        connections=max(1, connections // n),
                    )
                    for k, port in enumerate(ports)
                )
            )
        )
        sent += len(batch)
        elapsed = time.perf_counter() - began
        if elapsed >= budget:
            break
        rate = sent / elapsed
        size = max(64, int(rate * min(ROUND_SECONDS, budget - elapsed)))
    return _merge(parts, time.perf_counter() - began)


async def _open(
    ports: Sequence[int], bodies: list[bytes], rate: float, seconds: float
) -> LoadResult:
    """Open loop at `rate` in all; replica k sends at rate/n, offset by k/rate seconds."""
    n = len(ports)

    async def one(k: int, port: int) -> LoadResult:
        await asyncio.sleep(k / rate)
        return await open_loop(
            HOST, port, _round_robin(bodies, n, k, port), rate=rate / n, seconds=seconds
        )

    began = time.perf_counter()
    parts = await asyncio.gather(*(one(k, port) for k, port in enumerate(ports)))
    return _merge(parts, time.perf_counter() - began)


# --- one configuration -------------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLROUTE_")}
    env.update(
        {
            "SKILLROUTE_HOST": HOST,
            "SKILLROUTE_API_KEYS": json.dumps({KEY: ["route", "admin"]}),
            "SKILLROUTE_RULES_FILE": str(ROOT / "routing_rules/examples/demo.yaml"),
            "SKILLROUTE_LOG_LEVEL": "warning",
            "SKILLROUTE_LOG_REQUESTS": "false",
            # The benchmark measures the service, not its rate limit.
            "SKILLROUTE_RATE_LIMIT_ROUTE": "1000000/second",
            "SKILLROUTE_RATE_LIMIT_ADMIN": "1000000/second",
            "SKILLROUTE_RESERVATION_TTL_SECONDS": "600",
        }
    )
    return env


async def _load_agents(port: int, count: int) -> None:
    """PUT the agents of `bench.bench_route` through the API, a few requests at a time."""
    agents = _agents(count, random.Random(3))
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as client:

        async def put_some(share: list[tuple[str, dict[str, object]]]) -> None:
            for agent_id, body in share:
                answer = await client.put(f"/v1/agents/{agent_id}", json=body)
                if answer.status_code not in (200, 201):
                    raise RuntimeError(
                        f"PUT /v1/agents/{agent_id}: {answer.status_code} {answer.text}"
                    )

        await asyncio.gather(
            *(put_some(agents[k::AGENT_LOAD_CONNECTIONS]) for k in range(AGENT_LOAD_CONNECTIONS))
        )


def _agent_check(ports: Sequence[int], expected: int, notes: list[str]) -> None:
    """Note when a replica does not list every agent, or lists one loaded beyond capacity."""
    headers = {"Authorization": f"Bearer {KEY}"}
    for port in ports:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = httpx.get(
                f"http://{HOST}:{port}/v1/agents",
                params={"offset": offset, "limit": 1000},
                headers=headers,
                timeout=30,
            )
            if answer.status_code != 200:
                notes.append(f"port {port}: GET /v1/agents answered {answer.status_code}")
                return
            page = answer.json()
            items.extend(page["items"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        over = [
            a["agent_id"]
            for a in items
            if any(a["load"].get(ch, 0) > cap for ch, cap in a["capacity"].items())
        ]
        busy = sum(1 for a in items if any(a["load"].values()))
        notes.append(
            f"port {port} after the run: {len(items)} agents listed (loaded {expected}), "
            f"{busy} with load, {len(over)} beyond capacity"
            + (f" (e.g. {', '.join(over[:3])})" if over else "")
        )


def _measure(
    configuration: Configuration,
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    outcome: Outcome,
) -> None:
    replicas: list[Replica] = []
    try:
        for _ in range(configuration.replicas):
            # One after the other: the first applies the migrations to the fresh schema.
            port = _free_port()
            replicas.append(_start_replica(env, port, logs / f"replica-{port}.log"))
        ports = [r.port for r in replicas]
        rng = random.Random(7)  # the same request mix in every configuration
        warm = _contact_bodies(min(WARM_UP_REQUESTS, args.requests), rng, "warm")
        throughput_bodies = _contact_bodies(args.requests, rng, "tp")
        latency_bodies = _contact_bodies(int(args.rate * args.seconds), rng, "lat")
        cpu: list[CpuUse] = []

        async def phases() -> None:
            started = time.perf_counter()
            await _load_agents(ports[0], args.agents)
            print(f"  loaded {args.agents} agents in {time.perf_counter() - started:.1f} s")
            await _closed(ports, warm, args.concurrency, WARM_UP_SECONDS)
            with _cpu_meter(replicas, cpu):
                closed = await _closed(ports, throughput_bodies, args.concurrency, args.max_seconds)
            outcome.throughput = closed
            print(
                f"  closed loop: {len(closed.latencies)} requests, {closed.throughput:,.1f} req/s"
            )
            if len(closed.latencies) < args.requests:
                outcome.notes.append(
                    f"closed loop stopped at its {args.max_seconds:.0f} s budget after "
                    f"{len(closed.latencies)} of {args.requests} requests"
                )
            if closed.throughput < args.rate:
                outcome.notes.append(
                    f"open loop skipped: {args.rate:.0f} req/s is above this configuration's "
                    f"closed-loop throughput, so its latency would only measure the backlog"
                )
                return
            try:
                with _cpu_meter(replicas, cpu):
                    outcome.latency = await asyncio.wait_for(
                        _open(ports, latency_bodies, args.rate, args.seconds),
                        timeout=3 * args.seconds + 15,
                    )
            except TimeoutError:
                outcome.notes.append(
                    f"open loop at {args.rate:.0f} req/s not done {3 * args.seconds + 15:.0f} s "
                    "after it began: the configuration does not sustain that rate"
                )

        _run(phases())
        for phase, use in zip(("closed loop", f"at {args.rate:.0f} req/s"), cpu, strict=False):
            outcome.notes.append(
                f"CPU in cores during {phase}: machine {use.machine:.2f} of "
                f"{os.cpu_count()}, replicas {use.servers:.2f}, "
                f"load generator {use.load_generator:.2f}"
            )
        _agent_check(ports, args.agents, outcome.notes)
    except Exception as exc:  # reported with the replicas' output; the next configuration runs
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        for replica in replicas:
            code = replica.process.poll()
            if code is not None:
                outcome.notes.append(f"replica on port {replica.port} died (exit code {code})")
            elif outcome.error is not None:
                outcome.notes.append(f"replica on port {replica.port} was running at the failure")
            _stop(replica)
            if code is not None or outcome.error is not None or _errors(outcome) > 0:
                outcome.logs[replica.port] = replica.log_tail()


def _errors(outcome: Outcome) -> int:
    return sum(
        count
        for result in (outcome.throughput, outcome.latency)
        if result is not None
        for status, count in result.statuses.items()
        if status >= 500
    )


def _run_configuration(
    configuration: Configuration, args: argparse.Namespace, tmp: Path, run_id: str
) -> Outcome:
    outcome = Outcome(configuration)
    env = _base_env()
    slug = re.sub(r"[^a-z0-9]+", "_", configuration.name.lower()).strip("_")[:24]
    logs = tmp / f"{slug}_{run_id}"
    logs.mkdir()
    if not configuration.shared:
        env["SKILLROUTE_DATABASE_URL"] = f"sqlite:///{logs / 'bench.db'}"
        _measure(configuration, args, env, logs, outcome)
        return outcome
    schema = f"skillroute_bench_{run_id}_{configuration.replicas}"
    prefix = f"skillroute-bench-{run_id}-{configuration.replicas}"
    try:
        _create_schema(args.database_url, schema)
    except psycopg.Error as exc:
        outcome.error = f"PostgreSQL at {args.database_url}: {exc}".strip()
        return outcome
    try:
        env["SKILLROUTE_DATABASE_URL"] = _schema_url(args.database_url, schema)
        env["SKILLROUTE_REDIS_URL"] = args.redis_url
        env["SKILLROUTE_REDIS_PREFIX"] = prefix
        _measure(configuration, args, env, logs, outcome)
    finally:
        _drop_schema(args.database_url, schema)
        try:
            deleted = _delete_prefix(args.redis_url, prefix)
            outcome.notes.append(f"deleted {deleted} Redis keys under {prefix}")
        except redis.RedisError as exc:
            outcome.notes.append(f"could not delete Redis keys under {prefix}: {exc}")
    return outcome


# --- report --------------------------------------------------------------------------------------


def _non_2xx(result: LoadResult | None) -> dict[int, int]:
    if result is None:
        return {}
    return {s: c for s, c in sorted(result.statuses.items()) if not 200 <= s < 300}


def _print_table(outcomes: Sequence[Outcome], rate: float) -> None:
    print(
        f"\n| configuration | closed-loop requests | throughput req/s | "
        f"p50 ms at {rate:.0f} req/s | p99 ms at {rate:.0f} req/s | 5xx | non-2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for o in outcomes:
        if o.throughput is None:
            print(f"| {o.configuration.name} | failed | | | | | |")
            continue
        non_2xx = _non_2xx(o.throughput)
        for status, count in _non_2xx(o.latency).items():
            non_2xx[status] = non_2xx.get(status, 0) + count
        p50 = f"{o.latency.percentile(50):.2f}" if o.latency else "-"
        p99 = f"{o.latency.percentile(99):.2f}" if o.latency else "-"
        print(
            f"| {o.configuration.name} | {len(o.throughput.latencies)} | "
            f"{o.throughput.throughput:,.1f} | {p50} | {p99} | {_errors(o)} | "
            f"{non_2xx or 'none'} |"
        )


def _ratio(outcomes: dict[str, Outcome], top: str, bottom: str) -> str:
    a, b = outcomes[top].throughput, outcomes[bottom].throughput
    if a is None or b is None or not b.throughput:
        return "n/a (a configuration failed)"
    return f"{a.throughput / b.throughput:.2f}"


def main() -> None:
    """Run the three configurations and print a markdown table with the scaling ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=12000, help="closed-loop requests")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="open-loop duration")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="closed-loop time budget per configuration (fewer requests if it runs out)",
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--only", choices=["embedded", "shared"], default=None, help="run only some configurations"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure 1 and 2 Redis+PG replicas this many times, alternately; the median ratio",
    )
    args = parser.parse_args()
    print("command: python -m bench.bench_replicas " + " ".join(sys.argv[1:]))
    configurations = [
        Configuration(EMBEDDED, 1, shared=False),
        Configuration(SHARED_1, 1, shared=True),
        Configuration(SHARED_2, 2, shared=True),
    ]
    if args.only:
        configurations = [c for c in configurations if c.shared == (args.only == "shared")]
    run_id = uuid.uuid4().hex[:8]
    outcomes: dict[str, Outcome] = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skillroute-bench-") as tmp:
        for configuration in configurations:
            print(f"{configuration.name}:", flush=True)
            outcome = _run_configuration(configuration, args, Path(tmp), run_id)
            outcomes[configuration.name] = outcome
            if outcome.error:
                print(f"  FAILED: {outcome.error.splitlines()[0]}", flush=True)
        ratios = []
        if SHARED_1 in outcomes and SHARED_2 in outcomes:
            ratios.append(_ratio(outcomes, SHARED_2, SHARED_1))
            for round_ in range(2, args.rounds + 1):
                again: dict[str, Outcome] = {}
                for configuration in configurations:
                    if configuration.shared:
                        print(f"{configuration.name}, round {round_}:", flush=True)
                        again[configuration.name] = _run_configuration(
                            configuration, args, Path(tmp), f"{run_id}r{round_}"
                        )
                ratios.append(_ratio(again, SHARED_2, SHARED_1))
                for name, outcome in again.items():
                    if outcome.throughput is not None:
                        print(f"  {name}: {outcome.throughput.throughput:.1f} req/s", flush=True)
    print(f"\nwall time {time.perf_counter() - began:.0f} s")
    _print_table(list(outcomes.values()), args.rate)
    if SHARED_1 in outcomes and SHARED_2 in outcomes:
        print(
            f"\nRedis+PG 2 replicas / Redis+PG 1 replica throughput: "
            f"{_ratio(outcomes, SHARED_2, SHARED_1)} (target >= 1.70)"
        )
        if len(ratios) > 1:
            measured = sorted(float(r) for r in ratios if not r.startswith("n/a"))
            median = measured[len(measured) // 2] if measured else float("nan")
            print(f"ratios over {len(ratios)} rounds: {', '.join(ratios)}; median {median:.2f}")
    if SHARED_1 in outcomes and EMBEDDED in outcomes:
        print(f"Redis+PG 1 replica / embedded throughput: {_ratio(outcomes, SHARED_1, EMBEDDED)}")
    for o in outcomes.values():
        for phase, result in (("closed loop", o.throughput), ("open loop", o.latency)):
            if _non_2xx(result):
                print(f"non-2xx in {o.configuration.name}, {phase}: {_non_2xx(result)}")
    for o in outcomes.values():
        for note in o.notes:
            print(f"{o.configuration.name}: {note}")
    for o in outcomes.values():
        if o.error:
            print(f"\nFAILED {o.configuration.name}: {o.error}")
        for port, text in o.logs.items():
            print(f"\n--- {o.configuration.name}, replica on port {port}: end of its output ---")
            print(text.rstrip())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    o.configuration.name: {
                        "error": o.error,
                        "throughput_rps": o.throughput.throughput if o.throughput else None,
                        "p50_ms": o.latency.percentile(50) if o.latency else None,
                        "p99_ms": o.latency.percentile(99) if o.latency else None,
                        "statuses": {
                            "closed_loop": o.throughput.statuses if o.throughput else None,
                            "open_loop": o.latency.statuses if o.latency else None,
                        },
                        "notes": o.notes,
                    }
                    for o in outcomes.values()
                },
                indent=2,
            )
        )
    if any(o.error for o in outcomes.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
