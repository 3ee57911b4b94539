"""The `skillroute` command: serve, rules validate/schema/lint, simulate, db upgrade."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="skillroute: skills-based routing for contact centers",
    no_args_is_help=True,
    add_completion=False,
)
rules_app = typer.Typer(help="Routing rules: validate, lint, JSON Schema", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from settings)")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="uvicorn worker processes; more than 1 needs SKILLROUTE_REDIS_URL and PostgreSQL",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (settings come from SKILLROUTE_* environment variables)."""
    import uvicorn

    from service.settings import Settings

    settings = Settings()
    if workers > 1 and (settings.redis_url is None or settings.database_url.startswith("sqlite")):
        # Without Redis, queues, reservations and agent load live in process memory: every
        # worker would hand out the same agents. SQLite takes one writer at a time.
        typer.echo(
            f"error: --workers {workers}: several workers share their real-time state in Redis "
            "and their records in PostgreSQL; set SKILLROUTE_REDIS_URL and a postgresql:// "
            "SKILLROUTE_DATABASE_URL, or run one worker.",
            err=True,
        )
        raise typer.Exit(2)
    uvicorn.run(
        "service.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


class _BadInput(Exception):
    """An input file the command cannot use; the message names the problem."""


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadInput(f"{path}: not UTF-8 (byte {exc.start})") from None


def _agent_skills(path: Path) -> set[str]:
    """The skills of the agents in a JSON file: a list of agents, or GET /v1/agents' answer."""
    text = _read_utf8(path)
    try:
        agents = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadInput(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(agents, dict) and isinstance(agents.get("items"), list):
        agents = agents["items"]
    if not isinstance(agents, list):
        raise _BadInput(
            f'{path}: expected a JSON list of agents like [{{"skills": {{"billing": 3}}}}]'
            " (or the object GET /v1/agents returns)"
        )
    skills: set[str] = set()
    for index, agent in enumerate(agents):
        if not isinstance(agent, dict):
            raise _BadInput(f"{path}: agent {index} is not an object")
        agent_skills = agent.get("skills", {})
        if not isinstance(agent_skills, dict):
            raise _BadInput(f"{path}: agent {index}: skills is not an object of skill: level")
        skills.update(agent_skills)
    return skills


@rules_app.command("validate")
def rules_validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    agents_file: Annotated[
        Path | None,
        typer.Option(
            "--agents",
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSON list of agents ({skills: {...}}) to lint skill coverage",
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Validate and lint a rules file; exit 1 on errors (warnings alone exit 0)."""
    from routing_rules.lint import lint_rules
    from routing_rules.problems import RulesInvalid
    from routing_rules.validation import validate_rules_text

    try:
        text = _read_utf8(file)
        skills = None if agents_file is None else _agent_skills(agents_file)
    except _BadInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    errors, warnings = [], []
    try:
        validated = validate_rules_text(text, file=str(file))
        warnings = lint_rules(validated, agent_skills=skills)
    except RulesInvalid as exc:
        errors = exc.problems
    if output == "json":
        typer.echo(
            json.dumps(
                {
                    "valid": not errors,
                    "errors": [p.as_dict() for p in errors],
                    "warnings": [p.as_dict() for p in warnings],
                },
                indent=2,
            )
        )
    else:
        for problem in [*errors, *warnings]:
            typer.echo(str(problem), err=problem.severity == "error")
        summary = f"{file}: {len(errors)} error(s), {len(warnings)} warning(s)"
        typer.echo(summary, err=bool(errors))
    raise typer.Exit(1 if errors else 0)


@rules_app.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of the rules format (for editors)."""
    from routing_rules.schema import RuleSet

    schema = RuleSet.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "skillroute routing rules"
    typer.echo(json.dumps(schema, indent=2))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations to SKILLROUTE_DATABASE_URL."""
    from service.settings import Settings
    from service.storage.db import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    typer.echo("database is at the newest migration")


@app.command()
def simulate(
    scenario: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="scenario YAML")
    ],
    rules: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, readable=True, help="rules (default: demo)"),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="second rule set to compare with"
        ),
    ] = None,
    policy: Annotated[str, typer.Option(help="optimal, greedy or longest-idle")] = "optimal",
    compare_policy: Annotated[
        str | None, typer.Option(help="second policy to compare with (same rules)")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="simulated days (seeds 1..N)")] = 5,
    out: Annotated[
        Path, typer.Option(file_okay=False, help="folder for report.md, .html and .json")
    ] = Path("simulation-report"),
    progress: Annotated[bool, typer.Option(help="show a progress bar on stderr")] = True,
) -> None:
    """Simulate a day of SCENARIO under the rules; compare two rule sets or two policies."""
    from routing_rules.compiled import compile_rules
    from routing_rules.problems import RulesInvalid
    from routing_rules.validation import validate_rules_text
    from service.settings import DEMO_RULES
    from simulator.loading import load_scenario
    from simulator.policies import POLICIES, Policy
    from simulator.report import as_json, html_page, markdown
    from simulator.runner import Arm, expected_contacts, quiet_logs, run_experiment

    for name in (policy, compare_policy):
        if name is not None and name not in POLICIES:
            typer.echo(f"error: unknown policy {name!r}; known: {', '.join(POLICIES)}", err=True)
            raise typer.Exit(2)
    if compare is not None and compare_policy is not None:
        typer.echo("error: compare either two rule sets or two policies, not both", err=True)
        raise typer.Exit(2)
    rules_path = rules or DEMO_RULES
    try:
        base = validate_rules_text(_read_utf8(rules_path), file=str(rules_path)).ruleset
        other = (
            None
            if compare is None
            else validate_rules_text(_read_utf8(compare), file=str(compare)).ruleset
        )
        loaded = load_scenario(_read_utf8(scenario), base, file=str(scenario))
        if other is not None:
            load_scenario(_read_utf8(scenario), other, file=str(scenario))
    except _BadInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except RulesInvalid as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None
    first: Policy = policy  # type: ignore[assignment]  # checked against POLICIES above
    arms = [Arm(rules_path.stem, compile_rules(base), first)]
    if other is not None and compare is not None:
        arms = [
            Arm(f"A: {rules_path.stem}", arms[0].rules, first),
            Arm(f"B: {compare.stem}", compile_rules(other), first),
        ]
    elif compare_policy is not None:
        second: Policy = compare_policy  # type: ignore[assignment]
        arms = [Arm(first, arms[0].rules, first), Arm(second, arms[0].rules, second)]
    quiet_logs()
    total = expected_contacts(loaded, seeds) * len(arms)
    with typer.progressbar(
        length=total, label="simulating", file=sys.stderr, hidden=not progress
    ) as bar:
        experiment = run_experiment(loaded, arms, seeds=seeds, progress=bar.update)
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(experiment)
    (out / "report.md").write_text(report, encoding="utf-8")
    (out / "report.html").write_text(html_page(experiment), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(as_json(experiment), indent=2), encoding="utf-8")
    typer.echo(report)
    typer.echo(f"report written to {out}/report.md, report.html and report.json", err=True)
