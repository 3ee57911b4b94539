"""Stopping a one-process worker pool at once, even in the middle of a task."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing


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
