"""A simulated day of the 200-agent example center, and the routing policies side by side.

Run from the repository root:

    python -m bench.bench_simulate              # 3 seeds per arm
    python -m bench.bench_simulate --seeds 5

The scenario is `simulator/examples/center-200.yaml` (about 20,000 contacts between 08:00 and
20:00, 200 agents in nine teams on three shifts) on the demo rules. Arms, all on the same
customers (seeds 1..N):

- `optimal + performance`: the service's dispatch with `scoring.performance` set (outcomes of
  the previous simulated day, then of the day itself, feed the performance table);
- `optimal`: the service's dispatch as the demo rules configure it (no performance weight);
- `greedy`: same scores, one contact at a time, most urgent first;
- `longest-idle`: the classic ACD, the most urgent contact to the agent idle longest.

Printed: seconds per simulated day (target: at most 60 s for the optimal policy) and a table
of resolution rate, revenue per contact and % within SLA per tier with 95 % intervals, then
each arm's difference to `optimal`, paired by seed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from routing_rules.compiled import compile_rules
from routing_rules.validation import validate_rules_text
from service.settings import DEMO_RULES
from simulator.loading import load_scenario
from simulator.runner import Arm, quiet_logs, run_arm
from simulator.service import EXAMPLE_SCENARIO
from simulator.stats import Estimate, paired_difference

PERFORMANCE_WEIGHT = 4.0
COLUMNS = (
    ("resolution_rate", "% resolved", 1),
    ("revenue_per_contact", "revenue/contact (cents)", 0),
    ("sla_standard", "% in SLA standard", 1),
    ("sla_fast_lane", "% in SLA fast lane", 1),
    ("mean_wait", "mean wait s", 1),
    ("abandonment", "% abandoned", 1),
)


def _cell(e: Estimate, digits: int) -> str:
    return f"{e.mean:.{digits}f} ± {e.half_width:.{digits}f}"


def _signed(e: Estimate, digits: int) -> str:
    return f"{e.mean:+.{digits}f} ± {e.half_width:.{digits}f}"


def main() -> None:
    """Run the arms and print the timing and the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    quiet_logs()
    ruleset = validate_rules_text(DEMO_RULES.read_text()).ruleset
    scenario = load_scenario(EXAMPLE_SCENARIO.read_text(), ruleset)
    scenario = scenario.model_copy(update={"history_days": 1})
    weighted = ruleset.model_copy(
        update={"scoring": ruleset.scoring.model_copy(update={"performance": PERFORMANCE_WEIGHT})}
    )
    arms = [
        Arm("optimal + performance", compile_rules(weighted), "optimal"),
        Arm("optimal", compile_rules(ruleset), "optimal"),
        Arm("greedy", compile_rules(ruleset), "greedy"),
        Arm("longest-idle", compile_rules(ruleset), "longest-idle"),
    ]
    seeds = list(range(1, args.seeds + 1))
    print(f"python {platform.python_version()}, {platform.machine()}; scenario {scenario.name}")
    results = []
    for arm in arms:
        started = time.perf_counter()
        result = run_arm(scenario, arm, seeds)
        seconds = time.perf_counter() - started
        contacts = statistics.fmean(day.demand.size for day in result.days)
        per_day = seconds / len(seeds)
        if arm.rules.ruleset.scoring.performance > 0:
            per_day /= 1 + scenario.history_days  # the history days are simulated too
        print(
            f"{arm.label:>22}: {per_day:5.1f} s per simulated day of {contacts:,.0f} contacts "
            f"({contacts / per_day:,.0f} contacts/s)"
        )
        results.append(result)
    print()
    print("| policy | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for result in results:
        cells = [_cell(result.figures[name], digits) for name, _, digits in COLUMNS]
        print(f"| {result.arm.label} | " + " | ".join(cells) + " |")
    print(f"\n{len(seeds)} seeds; ± is the 95 % interval over seeds (same customers in every arm)")
    base = next(r for r in results if r.arm.label == "optimal")
    print("\nDifference to `optimal`, paired by seed (the same customers and agents in both):\n")
    print("| policy | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for result in results:
        if result is base:
            continue
        difference = paired_difference(base.days, result.days)
        cells = [_signed(difference[name], digits) for name, _, digits in COLUMNS]
        print(f"| {result.arm.label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
