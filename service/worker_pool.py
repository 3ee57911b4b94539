"""Stopping a one-process worker pool at once, even in the middle of a task."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import time


def kill_pool(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> list[multiprocessing.process.BaseProcess]:
    """Kill the pool's processes and shut it down; the processes, to be joined (reaped).

    shutdown() does not stop a worker in the middle of a task: it would keep a core busy until
    the task ends. The pool keeps its processes in `_processes`.
    """
    processes: list[multiprocessing.process.BaseProcess] = list((pool._processes or {}).values())
    for process in processes:
        with contextlib.suppress(ValueError):  # already closed
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    return processes


def reap(processes: list[multiprocessing.process.BaseProcess], timeout: float = 5.0) -> None:
    """Wait (up to `timeout` in all) until each killed process's exit is recorded.

    `join` alone can return early: the pool's own management thread reaps its processes too,
    and a join that loses that race sees "no such child" and leaves the exit unrecorded for a
    moment, so the process still looks alive.
    """
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
