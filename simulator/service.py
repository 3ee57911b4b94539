"""Simulations on behalf of the API: a draft rule set against the active one, off the server.

A simulation is seconds to minutes of CPU. It runs in a separate worker process (one at a
time per replica, started on first use), so the event loop and the route path are not slowed;
a run over its time limit is stopped by killing the worker. Inputs are checked in the request
first, so a bad draft or scenario is a 422 with file, line and field at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from routing_rules.compiled import compile_rules
from routing_rules.schema import RuleSet
from routing_rules.validation import validate_rules_text
from service.worker_pool import kill_pool, reap
from simulator.loading import load_scenario
from simulator.policies import Policy
from simulator.report import as_json, markdown
from simulator.runner import Arm, mean_contacts_per_day, quiet_logs, run_experiment
from simulator.scenario import Scenario

log = structlog.get_logger(__name__)

EXAMPLE_SCENARIO = Path(__file__).resolve().parent / "examples" / "center-200.yaml"


@dataclass(frozen=True)
class SimulationRequest:
    """Everything a run needs, as plain text (it crosses a process boundary)."""

    draft: str
    active: str | None  # None: simulate the draft alone
    scenario: str
    policy: Policy
    seeds: int


class SimulationBusy(Exception):
    """Another simulation is running on this replica."""


class SimulationTimedOut(Exception):
    """The run took longer than the limit and was stopped."""


class SimulationFailed(Exception):
    """The run could not finish (the worker died, or the simulation raised)."""


def check_request(request: SimulationRequest) -> tuple[RuleSet, Scenario]:
    """Validate the draft (and active) rules and the scenario; raise RulesInvalid if not valid."""
    draft = validate_rules_text(request.draft, file="draft").ruleset
    scenario = load_scenario(request.scenario, draft, file="scenario")
    if request.active is not None:
        active = validate_rules_text(request.active, file="active").ruleset
        load_scenario(request.scenario, active, file="scenario")
    return draft, scenario


def simulated_contacts(draft: RuleSet, scenario: Scenario, request: SimulationRequest) -> float:
    """How many contacts the run would simulate, expected from the rates (nothing is drawn):
    every arm and seed, and the history days of performance routing."""
    rule_sets = [draft]
    if request.active is not None:
        rule_sets.append(validate_rules_text(request.active, file="active").ruleset)
    days = 0
    for ruleset in rule_sets:
        history = scenario.history_days if ruleset.scoring.performance > 0 else 0
        days += request.seeds * (1 + history)
    return mean_contacts_per_day(scenario) * days


def run_request(request: SimulationRequest) -> dict[str, Any]:
    """Run the simulation (in the worker process); the report as JSON with its markdown."""
    quiet_logs()
    draft, scenario = check_request(request)
    arms = []
    if request.active is not None:
        active = validate_rules_text(request.active, file="active").ruleset
        arms.append(Arm("active", compile_rules(active), request.policy))
    arms.append(Arm("draft", compile_rules(draft), request.policy))
    experiment = run_experiment(scenario, arms, seeds=request.seeds)
    return {**as_json(experiment), "markdown": markdown(experiment)}


class SimulationWorker:
    """One simulation at a time in a spawned worker process, with a time limit."""

    def __init__(self, time_limit: float) -> None:
        self._time_limit = time_limit
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._busy = asyncio.Lock()

    async def run(self, request: SimulationRequest) -> dict[str, Any]:
        """The report of `request`; SimulationBusy or SimulationTimedOut if it cannot be had."""
        if self._busy.locked():
            raise SimulationBusy("another simulation is running on this replica")
        async with self._busy:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                )
            future = asyncio.get_running_loop().run_in_executor(self._pool, run_request, request)
            try:
                return await asyncio.wait_for(future, self._time_limit)
            except TimeoutError:
                await asyncio.to_thread(self.close)
                raise SimulationTimedOut(
                    f"the simulation took longer than {self._time_limit:g} s and was stopped; "
                    "use fewer seeds or a smaller scenario, or run `skillroute simulate`"
                ) from None
            except asyncio.CancelledError:
                # The caller went away: stop its run too, or it would hold the worker while
                # the next request (let in once this one is gone) waits behind it.
                self.close()
                raise
            except concurrent.futures.process.BrokenProcessPool:
                await asyncio.to_thread(self.close)
                raise SimulationFailed("the simulation worker stopped unexpectedly") from None
            except Exception as exc:  # raised inside the worker: the run, not the server
                log.error("simulation.failed", error=repr(exc))
                raise SimulationFailed(f"the simulation failed: {type(exc).__name__}") from None

    def close(self) -> None:
        """Stop the worker process (a run in progress with it)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        reap(kill_pool(pool), 5.0)
