"""Route endpoint throughput and latency against a running server, beside bare FastAPI.

    python -m bench.bench_route [--agents 1000] [--requests 20000] [--rate 1000]

Starts skillroute (one uvicorn worker, SQLite, in-process state, demo rules) and the bare
FastAPI app of `bench/bare_app.py` as separate processes, loads 1,000 agents, then measures in
one run: closed-loop throughput of both, and p50/p99 latency at a fixed 1,000 req/s.
Contacts vary over channels, segments, inquiry types, journey stages and languages; agents
take contacts until their capacity is full, after which contacts queue, as on a busy floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.loadgen import LoadResult, closed_loop, open_loop, post

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"
CHANNELS = ["voice", "chat", "email", "callback"]
SEGMENTS = ["consumer", "smb", "enterprise"]
INQUIRIES = ["billing", "technical", "sales", "cancellation", "setup"]
STAGES = ["prospect", "onboarding", "established", "renewal", "at_risk"]
SKILLS = ["billing", "technical", "sales", "retention", "onboarding", "enterprise_care"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                message = proc.stderr.read().decode() if proc.stderr else "exited"
                raise RuntimeError(message) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on port {port} did not start")


def _uvicorn(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


def _agents(n: int, rng: random.Random) -> list[tuple[str, dict[str, object]]]:
    agents = []
    for i in range(n):
        skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(2, 4))}
        languages = ["en", "es"] if rng.random() < 0.2 else ["en"]
        capacity = {"voice": 1, "chat": rng.choice([2, 3]), "email": 3, "callback": 1}
        agents.append(
            (
                f"agent-{i:05d}",
                {
                    "name": f"Agent {i}",
                    "skills": skills,
                    "languages": languages,
                    "capacity": capacity,
                    "status": "available",
                },
            )
        )
    return agents


def _contact_bodies(n: int, rng: random.Random, prefix: str) -> list[bytes]:
    bodies = []
    for i in range(n):
        body = {
            "contact_id": f"{prefix}-{i}",
            "customer_id": f"cust-{rng.randint(1, 10**6)}",
            "channel": rng.choice(CHANNELS),
            "segment": rng.choice(SEGMENTS),
            "inquiry_type": rng.choice(INQUIRIES),
            "journey_stage": rng.choice(STAGES),
            "language": "es" if rng.random() < 0.15 else "en",
            "attributes": {"tenure_days": rng.randint(0, 2000), "plan": "pro"},
        }
        bodies.append(orjson.dumps(body))
    return bodies


def _factory(bodies: list[bytes], port: int):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {KEY}"}
    host = f"127.0.0.1:{port}"
    return lambda i: post(host, "/v1/route", bodies[i % len(bodies)], headers)


def _summary(name: str, result: LoadResult) -> dict[str, object]:
    return {
        "name": name,
        "requests": len(result.latencies),
        "throughput_rps": round(result.throughput, 1),
        "p50_ms": round(result.percentile(50), 3),
        "p99_ms": round(result.percentile(99), 3),
        "statuses": result.statuses,
    }


async def _measure(args: argparse.Namespace, route_port: int, bare_port: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    warm = _contact_bodies(2000, rng, "warm")
    await closed_loop(
        "127.0.0.1", bare_port, _factory(warm, bare_port), total=2000, connections=args.connections
    )
    await closed_loop(
        "127.0.0.1",
        route_port,
        _factory(warm, route_port),
        total=2000,
        connections=args.connections,
    )
    for label, port in (("bare FastAPI", bare_port), ("skillroute /v1/route", route_port)):
        bodies = _contact_bodies(args.requests, rng, f"tp-{port}")
        result = await closed_loop(
            "127.0.0.1",
            port,
            _factory(bodies, port),
            total=args.requests,
            connections=args.connections,
        )
        rows.append(_summary(f"{label} throughput ({args.connections} connections)", result))
    for label, port in (("bare FastAPI", bare_port), ("skillroute /v1/route", route_port)):
        bodies = _contact_bodies(int(args.rate * args.seconds), rng, f"lat-{port}")
        result = await open_loop(
            "127.0.0.1", port, _factory(bodies, port), rate=args.rate, seconds=args.seconds
        )
        rows.append(_summary(f"{label} at {args.rate:.0f} req/s", result))
    return rows


def main() -> None:
    """Run the route benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print("command: python -m bench.bench_route " + " ".join(sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="skillroute-bench-"))
    route_port, bare_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "SKILLROUTE_API_KEYS": json.dumps({KEY: ["route", "admin"]}),
        "SKILLROUTE_RULES_FILE": str(ROOT / "routing_rules/examples/demo.yaml"),
        "SKILLROUTE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "SKILLROUTE_LOG_LEVEL": "warning",
        "SKILLROUTE_LOG_REQUESTS": "false",
        # The benchmark measures the service, not its rate limit.
        "SKILLROUTE_RATE_LIMIT_ROUTE": "1000000/second",
        "SKILLROUTE_RATE_LIMIT_BILLING": "1000000/second",
        "SKILLROUTE_RESERVATION_TTL_SECONDS": "600",
    }
    server = _start(_uvicorn("service.main:app", route_port), env, route_port)
    bare = _start(_uvicorn("bench.bare_app:app", bare_port), env, bare_port)
    try:
        started = time.perf_counter()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{route_port}",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        ) as client:
            for agent_id, body in _agents(args.agents, random.Random(3)):
                client.put(f"/v1/agents/{agent_id}", json=body).raise_for_status()
        print(f"loaded {args.agents} agents in {time.perf_counter() - started:.1f} s")
        rows = asyncio.run(_measure(args, route_port, bare_port))
    finally:
        for proc in (server, bare):
            proc.terminate()
            proc.wait(timeout=30)
    print("\n| run | requests | req/s | p50 ms | p99 ms | statuses |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['requests']} | {row['throughput_rps']} | "
            f"{row['p50_ms']} | {row['p99_ms']} | {row['statuses']} |"
        )
    ratio = rows[1]["throughput_rps"] / rows[0]["throughput_rps"]  # type: ignore[operator]
    print(f"\nroute/bare throughput ratio: {ratio:.2f} (target >= 0.50)")
    print(f"route p99 at {args.rate:.0f} req/s: {rows[3]['p99_ms']} ms (target <= 10 ms)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
