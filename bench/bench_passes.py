"""Pass purchase throughput through the real app (one uvicorn worker, SQLite).

    python -m bench.bench_passes [--purchases 5000] [--connections 16]

Starts skillroute twice: on the demo rules without their capacity plan (so the sales guard has
nothing to judge) and on the demo rules with a staffing plan big enough that every pass sells (so
each sale pays for the guard: interval capacities, pass demand over the next 7 days). Each
run sells `--purchases` single-incident passes, each with its own Idempotency-Key, in a
closed loop; then sends every purchase again with the same key and body, which replays the
stored sale. Prints a markdown table of purchases/s and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import orjson
import yaml

from bench.bench_route import ROOT, _free_port, _start, _uvicorn
from bench.loadgen import LoadResult, RequestFactory, closed_loop, post

KEY = "bench-billing-key-0123456789"
# 400 agents on 4,500 contacts/h of 5-minute calls, every hour of the week: the ε limit is
# about 8 fast-lane contacts/h, room for ~17,000 single-incident passes.
PLAN = """
capacity_plan:
  timezone: UTC
  channels:
    voice:
      handle_seconds: 300
      intervals:
        - {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00",
           contacts_per_hour: 4500, agents: 400}
"""


def _bodies(n: int, run: str) -> list[tuple[str, bytes]]:
    return [
        (
            f"{run}-order-{i:07d}",
            orjson.dumps(
                {
                    "customer_id": f"cust-{i % 50_000}",
                    "kind": "single_incident",
                    "price_amount": 1500,
                    "currency": "EUR",
                    "external_ref": f"inv-{run}-{i}",
                }
            ),
        )
        for i in range(n)
    ]


def _factory(bodies: list[tuple[str, bytes]], port: int) -> RequestFactory:
    host = f"127.0.0.1:{port}"

    def make(i: int) -> bytes:
        key, body = bodies[i]
        return post(
            host,
            "/v1/passes",
            body,
            {"Authorization": f"Bearer {KEY}", "Idempotency-Key": key},
        )

    return make


def _row(name: str, result: LoadResult) -> dict[str, object]:
    return {
        "name": name,
        "requests": len(result.latencies),
        "per_second": round(result.throughput, 1),
        "p50_ms": round(result.percentile(50), 3),
        "p99_ms": round(result.percentile(99), 3),
        "statuses": result.statuses,
    }


async def _measure(port: int, label: str, args: argparse.Namespace) -> list[dict[str, object]]:
    warm = _bodies(500, f"warm-{label}")
    await closed_loop(
        "127.0.0.1", port, _factory(warm, port), total=len(warm), connections=args.connections
    )
    bodies = _bodies(args.purchases, label)
    sold = await closed_loop(
        "127.0.0.1", port, _factory(bodies, port), total=len(bodies), connections=args.connections
    )
    replayed = await closed_loop(
        "127.0.0.1", port, _factory(bodies, port), total=len(bodies), connections=args.connections
    )
    return [
        _row(f"{label}: new purchases", sold),
        _row(f"{label}: retries (replayed)", replayed),
    ]


def main() -> None:
    """Run the purchase benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purchases", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print("command: python -m bench.bench_passes " + " ".join(sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="skillroute-bench-passes-"))
    document = yaml.safe_load((ROOT / "routing_rules/examples/demo.yaml").read_text("utf-8"))
    document.pop("capacity_plan", None)
    demo = tmp / "unplanned.yaml"
    demo.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    document.update(yaml.safe_load(PLAN))
    planned = tmp / "planned.yaml"
    planned.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    rows: list[dict[str, object]] = []
    for label, rules in (("no plan (guard idle)", demo), ("capacity plan (guard on)", planned)):
        port = _free_port()
        env = {
            **os.environ,
            "SKILLROUTE_API_KEYS": json.dumps({KEY: ["billing"]}),
            "SKILLROUTE_RULES_FILE": str(rules),
            "SKILLROUTE_DATABASE_URL": f"sqlite:///{tmp / (str(port) + '.db')}",
            "SKILLROUTE_LOG_LEVEL": "warning",
            "SKILLROUTE_LOG_REQUESTS": "false",
            # The benchmark measures the service, not its rate limit.
            "SKILLROUTE_RATE_LIMIT_ROUTE": "1000000/second",
            "SKILLROUTE_RATE_LIMIT_BILLING": "1000000/second",
        }
        server = _start(_uvicorn("service.main:app", port), env, port)
        try:
            rows += asyncio.run(_measure(port, label, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\n{args.purchases} passes per run, {args.connections} connections, SQLite\n")
    print("| run | requests | per second | p50 ms | p99 ms | statuses |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['requests']} | {row['per_second']} | "
            f"{row['p50_ms']} | {row['p99_ms']} | {row['statuses']} |"
        )


if __name__ == "__main__":
    main()
