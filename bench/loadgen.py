"""A small HTTP/1.1 keep-alive load generator on raw asyncio sockets.

Python HTTP clients spend more CPU per request than the server under test; this one builds
each request as bytes and parses only the status line and Content-Length, so one client
process can drive a one-worker server to saturation on a two-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

RequestFactory = Callable[[int], bytes]


@dataclass
class LoadResult:
    """Latencies (seconds) and status counts of one run."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return float(np.percentile(np.asarray(self.latencies), q) * 1000) if self.latencies else 0


def post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One keep-alive POST as raw bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(
    host: str, port: int, make: RequestFactory, *, total: int, connections: int
) -> LoadResult:
    """`connections` clients each send their next request as soon as the last one answers."""
    result = LoadResult()
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                started = time.perf_counter()
                writer.write(make(i))
                status = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed = time.perf_counter() - began
    return result


async def open_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> LoadResult:
    """Send at a fixed rate whatever the answers do; latency counts from the scheduled time.

    Measuring from the scheduled send time (not the actual one) keeps queueing delay in the
    figures instead of hiding it ("coordinated omission").
    """
    result = LoadResult()
    total = int(rate * seconds)
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    began = time.perf_counter()

    async def one(i: int, scheduled: float) -> None:
        reader, writer = await idle.get()
        writer.write(make(i))
        status = await _read_response(reader)
        result.latencies.append(time.perf_counter() - scheduled)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        idle.put_nowait((reader, writer))

    tasks = []
    for i in range(total):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - began
    while not idle.empty():
        _, writer = idle.get_nowait()
        writer.close()
    return result
