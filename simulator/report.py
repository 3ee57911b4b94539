"""The simulation report: a markdown table, a JSON document, and an HTML page with plots.

The plots are inline SVG drawn here (no plotting library, no scripts): the page is one file
that opens anywhere.
"""

from __future__ import annotations

import html
import math
from typing import Any

from simulator.runner import Experiment
from simulator.stats import METRICS, Estimate, hourly

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _fmt(e: Estimate | None, digits: int = 1) -> str:
    if e is None or math.isnan(e.mean):
        return "–"
    mean = e.mean if round(e.mean, digits) != 0 else 0.0  # no "-0.0"
    if math.isnan(e.half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {e.half_width:.{digits}f}"


def _digits(name: str) -> int:
    return 0 if name in ("offered", "revenue_per_contact") else 1


def _heading(experiment: Experiment) -> list[str]:
    days = experiment.arms[0].days
    contacts = sum(day.demand.size for day in days) / len(days)
    lines = [
        f"# Simulation: {experiment.scenario.name}",
        "",
        f"{len(experiment.seeds)} seed(s), {contacts:,.0f} contacts per simulated day on average. "
        "Figures are means over seeds with 95 % confidence intervals (±)"
        + (
            "; the difference is paired by seed (same customers in both arms)."
            if experiment.difference
            else "."
        ),
        "",
    ]
    for result in experiment.arms:
        lines.append(
            f"- **{result.arm.label}**: rules `{result.arm.rules.ruleset.name}`, policy "
            f"`{result.arm.policy}`, {result.seconds:.1f} s for {len(result.days)} day(s)"
        )
    return [*lines, ""]


def markdown(experiment: Experiment) -> str:
    """The report as markdown."""
    arms = experiment.arms
    header = ["figure", *(r.arm.label for r in arms)]
    if experiment.difference is not None:
        header.append(f"{arms[1].arm.label} − {arms[0].arm.label}")
    lines = [*_heading(experiment), "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for name, title in METRICS.items():
        row = [title, *(_fmt(r.figures.get(name), _digits(name)) for r in arms)]
        if experiment.difference is not None:
            row.append(_fmt(experiment.difference.get(name), _digits(name)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def as_json(experiment: Experiment) -> dict[str, Any]:
    """The report as a JSON-ready document."""

    def estimate(e: Estimate) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        return {"mean": clean(e.mean), "ci95_half_width": clean(e.half_width), "seeds": e.n}

    return {
        "scenario": experiment.scenario.name,
        "seeds": experiment.seeds,
        "arms": [
            {
                "label": r.arm.label,
                "rules": r.arm.rules.ruleset.name,
                "policy": r.arm.policy,
                "contacts": sum(day.demand.size for day in r.days),
                "seconds": round(r.seconds, 3),
                "figures": {name: estimate(e) for name, e in r.figures.items()},
            }
            for r in experiment.arms
        ],
        "difference": None
        if experiment.difference is None
        else {name: estimate(e) for name, e in experiment.difference.items()},
    }


def _line_chart(title: str, y_label: str, series: dict[str, dict[int, float]]) -> str:
    """An SVG line chart of y by hour of day, one line per series."""
    width, height, left, bottom, top, right = 640, 300, 56, 40, 30, 150
    points = [(x, y) for s in series.values() for x, y in s.items() if not math.isnan(y)]
    if not points:
        return f"<p>{html.escape(title)}: no data.</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) + 1
    y1 = max(p[1] for p in points) * 1.1 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / max(1, x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y1 * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
        f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
        "hour of arrival</text>",
        f'<text x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>',
    ]
    for k in range(5):
        y = y1 * k / 4
        parts.append(
            f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{y:.0f}</text>"
        )
    for hour in range(int(x0), int(x1) + 1, max(1, (int(x1) - int(x0)) // 12)):
        parts.append(
            f'<text x="{sx(hour):.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{hour}</text>'
        )
    for n, (label, values) in enumerate(series.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        coords = " ".join(
            f"{sx(x + 0.5):.1f},{sy(y):.1f}" for x, y in sorted(values.items()) if not math.isnan(y)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        parts.append(
            f'<text x="{left + plot_w + 8}" y="{top + 14 + 16 * n}" font-size="11" '
            f'fill="{colour}">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def html_page(experiment: Experiment) -> str:
    """The report as a self-contained HTML page: the table and per-hour plots by tier."""
    table_md = markdown(experiment).split("\n")
    rows = [line for line in table_md if line.startswith("|") and not line.startswith("|---")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    table = ["<table>"]
    for i, row in enumerate(cells):
        tag = "th" if i == 0 else "td"
        table.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>")
    table.append("</table>")
    intro = [
        html.escape(line.lstrip("#- ").replace("**", "").replace("`", ""))
        for line in _heading(experiment)
    ]
    charts = []
    for tier, name in (("standard", "standard"), ("fast_lane", "fast lane")):
        by_arm = {r.arm.label: hourly(r.days, tier) for r in experiment.arms}
        if not any(by_arm.values()):
            continue
        charts.append(
            _line_chart(
                f"Mean wait by hour, {name}",
                "seconds",
                {label: {h: v[0] for h, v in values.items()} for label, values in by_arm.items()},
            )
        )
        charts.append(
            _line_chart(
                f"% within SLA by hour, {name}",
                "%",
                {label: {h: v[1] for h, v in values.items()} for label, values in by_arm.items()},
            )
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
    )
    title = html.escape(experiment.scenario.name)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Simulation: {title}</title><style>{style}</style></head><body>\n"
        f"<h1>Simulation: {title}</h1>\n"
        + "".join(f"<p>{line}</p>\n" for line in intro[2:] if line)
        + "\n".join(table)
        + "\n"
        + "\n".join(charts)
        + "\n</body></html>\n"
    )
