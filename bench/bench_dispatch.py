"""Dispatch time versus problem size, against the bare OR-Tools solve and a greedy baseline.

Run from the repository root:

    python -m bench.bench_dispatch            # every case, a few minutes on 2 cores
    python -m bench.bench_dispatch --quick    # the small cases only, a few seconds
    python -m bench.bench_dispatch --json bench-dispatch.json

For each contacts x agents size and each eligibility density it measures, as medians:
- dispatch: `build_arcs` (grouping, eligibility, scoring) + `solve(method="auto")`;
- bare MCF: only the OR-Tools calls of a min-cost-flow solve on arc arrays built beforehand,
  i.e. the floor that any dispatch built on OR-Tools pays;
- LSA and MCF: `solve(method="lsa")` and `solve(method="mcf")` on the same arcs;
- greedy: first come, first served (`assignment.greedy`), with how many contacts it serves and
  the share of the optimal total value it reaches.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import ortools
from ortools.graph.python import min_cost_flow

from bench.workload import Eligibility, Workload, make_workload
from routing_rules.assignment import Assignment, greedy, solve
from routing_rules.scoring import BASE, SCALE, Arcs, build_arcs

IntArray = npt.NDArray[np.int64]
T = TypeVar("T")

SIZES: tuple[tuple[int, int], ...] = (
    (10, 50),
    (100, 200),
    (500, 500),
    (1000, 1000),
    (2000, 2000),
    (2000, 200),
)
QUICK_SIZES = SIZES[:2]
ELIGIBILITIES: tuple[Eligibility, ...] = ("sparse", "dense")


@dataclass(frozen=True)
class CaseResult:
    """Medians (milliseconds) and outcomes of one size x eligibility case."""

    eligibility: str
    contacts: int
    agents: int
    pairs: int
    density: float
    repeats: int
    auto_method: str
    dispatch_ms: float
    build_ms: float
    bare_mcf_ms: float
    lsa_ms: float
    mcf_ms: float
    greedy_ms: float
    served_optimal: int
    served_greedy: int
    value_optimal: int
    value_greedy: int
    match_points_optimal: float
    match_points_greedy: float
    totals_agree: bool

    @property
    def dispatch_over_bare(self) -> float:
        """How many times the bare OR-Tools solve the whole dispatch costs."""
        return self.dispatch_ms / self.bare_mcf_ms

    @property
    def greedy_over_optimal(self) -> float:
        """Greedy's total value as a share of the optimum."""
        return self.value_greedy / self.value_optimal if self.value_optimal else 1.0


@dataclass(frozen=True)
class BareGraph:
    """A min-cost-flow graph as the numpy arrays OR-Tools takes, built outside the timer."""

    tails: IntArray
    heads: IntArray
    capacities: IntArray
    costs: IntArray
    supply_nodes: IntArray
    supplies: IntArray
    pair_arcs: IntArray


def bare_graph(n_contacts: int, capacity: IntArray, arcs: Arcs) -> BareGraph:
    """Source → contact → agent → sink with a source → sink bypass for contacts left waiting."""
    n_agents = int(capacity.size)
    source, sink = 0, n_contacts + n_agents + 1
    contact_node = 1 + np.arange(n_contacts, dtype=np.int64)
    agent_node = 1 + n_contacts + np.arange(n_agents, dtype=np.int64)
    tails = np.concatenate(
        [np.full(n_contacts, source), contact_node[arcs.contact], agent_node, [source]]
    ).astype(np.int64)
    heads = np.concatenate(
        [contact_node, agent_node[arcs.agent], np.full(n_agents, sink), [sink]]
    ).astype(np.int64)
    capacities = np.concatenate([np.ones(n_contacts + arcs.size), capacity, [n_contacts]]).astype(
        np.int64
    )
    costs = np.concatenate([np.zeros(n_contacts), -arcs.value, np.zeros(n_agents + 1)]).astype(
        np.int64
    )
    return BareGraph(
        tails=tails,
        heads=heads,
        capacities=capacities,
        costs=costs,
        supply_nodes=np.array([source, sink], dtype=np.int64),
        supplies=np.array([n_contacts, -n_contacts], dtype=np.int64),
        pair_arcs=n_contacts + np.arange(arcs.size, dtype=np.int64),
    )


def solve_bare(graph: BareGraph) -> int:
    """Only the OR-Tools calls: load the arcs, set supplies, solve, read the pair flows."""
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        graph.tails, graph.heads, graph.capacities, graph.costs
    )
    flow.set_nodes_supplies(graph.supply_nodes, graph.supplies)
    status = flow.solve()
    if status != flow.OPTIMAL:
        raise RuntimeError(f"bare min-cost flow returned status {status}")
    flow.flows(graph.pair_arcs)
    return -int(flow.optimal_cost())


def clocked(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall time of one call of `fn` in milliseconds, and its result."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000.0, result


def repeats_for(pairs: int) -> int:
    """Fewer repeats where one solve takes seconds, so the full run stays within minutes."""
    if pairs >= 2_000_000:
        return 3
    if pairs >= 500_000:
        return 5
    if pairs >= 50_000:
        return 9
    return 25


def dispatch_once(workload: Workload) -> tuple[float, Assignment]:
    """One full dispatch; returns the time spent building arcs (ms) and the assignment."""
    start = time.perf_counter()
    arcs, _ = build_arcs(workload.rules, workload.pool, workload.contacts, workload.channel)
    built = time.perf_counter()
    capacity = workload.pool.free[:, workload.channel].astype(np.int64)
    assignment = solve(len(workload.contacts), capacity, arcs, method="auto")
    return (built - start) * 1000.0, assignment


def match_points(assignment: Assignment) -> float:
    """Mean value per served contact above BASE: how good the matches are, in score points."""
    served = int((assignment.agent_of >= 0).sum())
    if served == 0:
        return 0.0
    return (assignment.total_value / SCALE - BASE * served) / served


def run_case(eligibility: Eligibility, n_contacts: int, n_agents: int, seed: int) -> CaseResult:
    """Measure every variant on one reproducible workload."""
    workload = make_workload(eligibility, n_contacts, n_agents, seed=seed)
    capacity = workload.pool.free[:, workload.channel].astype(np.int64)
    arcs, _ = build_arcs(workload.rules, workload.pool, workload.contacts, workload.channel)
    repeats = repeats_for(arcs.size)

    graph = bare_graph(n_contacts, capacity, arcs)
    # Variants take turns within each repeat, so a slow spell of a shared machine (other
    # processes, frequency changes) lands on all of them instead of skewing one.
    times: dict[str, list[float]] = {
        name: [] for name in ("dispatch", "build", "bare", "lsa", "mcf", "greedy")
    }
    for _ in range(repeats):
        gc.collect()
        dispatch_ms, (build_ms, optimal) = clocked(lambda: dispatch_once(workload))
        times["dispatch"].append(dispatch_ms)
        times["build"].append(build_ms)
        bare_ms, bare_total = clocked(lambda: solve_bare(graph))
        times["bare"].append(bare_ms)
        lsa_ms, lsa = clocked(lambda: solve(n_contacts, capacity, arcs, method="lsa"))
        times["lsa"].append(lsa_ms)
        mcf_ms, mcf = clocked(lambda: solve(n_contacts, capacity, arcs, method="mcf"))
        times["mcf"].append(mcf_ms)
        greedy_ms, first_come = clocked(lambda: greedy(n_contacts, capacity, arcs))
        times["greedy"].append(greedy_ms)
    median = {name: statistics.median(values) for name, values in times.items()}

    totals = {optimal.total_value, bare_total, lsa.total_value, mcf.total_value}
    return CaseResult(
        eligibility=eligibility,
        contacts=n_contacts,
        agents=n_agents,
        pairs=arcs.size,
        density=arcs.size / (n_contacts * n_agents),
        repeats=repeats,
        auto_method=optimal.method,
        dispatch_ms=median["dispatch"],
        build_ms=median["build"],
        bare_mcf_ms=median["bare"],
        lsa_ms=median["lsa"],
        mcf_ms=median["mcf"],
        greedy_ms=median["greedy"],
        served_optimal=int((optimal.agent_of >= 0).sum()),
        served_greedy=int((first_come.agent_of >= 0).sum()),
        value_optimal=optimal.total_value,
        value_greedy=first_come.total_value,
        match_points_optimal=match_points(optimal),
        match_points_greedy=match_points(first_come),
        totals_agree=len(totals) == 1,
    )


def markdown_table(results: Sequence[CaseResult]) -> str:
    """The results as a markdown table, one row per case."""
    header = (
        "| contactsxagents | eligibility | pairs (density) | auto | dispatch ms | build ms "
        "| bare MCF ms | dispatch/bare | LSA ms | MCF ms | greedy ms | served opt/greedy "
        "| value greedy/opt | match pts opt/greedy | reps |"
    )
    separator = "|" + "---|" * (header.count("|") - 1)
    rows = [header, separator]
    for r in results:
        check = "" if r.totals_agree else " ✗"
        rows.append(
            f"| {r.contacts}x{r.agents} | {r.eligibility} | {r.pairs:,} ({r.density:.1%}) "
            f"| {r.auto_method}{check} | {r.dispatch_ms:.2f} | {r.build_ms:.2f} "
            f"| {r.bare_mcf_ms:.2f} | {r.dispatch_over_bare:.2f}x | {r.lsa_ms:.2f} "
            f"| {r.mcf_ms:.2f} | {r.greedy_ms:.2f} | {r.served_optimal}/{r.served_greedy} "
            f"| {r.greedy_over_optimal:.4f} "
            f"| {r.match_points_optimal:.2f}/{r.match_points_greedy:.2f} | {r.repeats} |"
        )
    return "\n".join(rows)


def warm_up(seed: int) -> None:
    """Import OR-Tools' solvers and touch every code path once, outside any timer."""
    run_case("sparse", 20, 20, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the command, the environment and a markdown table."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dispatch", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    args = parser.parse_args(args_list)

    command = shlex.join(["python", "-m", "bench.bench_dispatch", *args_list])
    environment = {
        "python": platform.python_version(),
        "ortools": ortools.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        # Other work on the machine inflates every figure; the load says how much there was.
        "load average (1 min) at start": round(os.getloadavg()[0], 2),
    }
    print(f"command: {command}")
    print("environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()))
    print("times are medians in milliseconds; dispatch = build_arcs + solve(auto)\n", flush=True)

    warm_up(args.seed)
    results: list[CaseResult] = []
    started = time.perf_counter()
    for n_contacts, n_agents in QUICK_SIZES if args.quick else SIZES:
        for eligibility in ELIGIBILITIES:
            result = run_case(eligibility, n_contacts, n_agents, args.seed)
            results.append(result)
            print(
                f"  {n_contacts}x{n_agents} {eligibility}: dispatch {result.dispatch_ms:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - started
    print(markdown_table(results))
    print(f"\nwall time {elapsed:.1f} s")
    disagreements = [r for r in results if not r.totals_agree]
    if disagreements:
        print("✗ dispatch, bare MCF, LSA and MCF totals differ in the cases marked ✗")
    if args.json:
        document = {
            "command": command,
            "environment": environment,
            "wall_seconds": elapsed,
            "cases": [
                asdict(r)
                | {
                    "dispatch_over_bare": r.dispatch_over_bare,
                    "greedy_over_optimal": r.greedy_over_optimal,
                }
                for r in results
            ],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        print(f"results written to {args.json}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
