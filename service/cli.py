"""The `skillroute` command: serve, rules validate/schema/lint, db upgrade."""

from __future__ import annotations

import json
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
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API (settings come from SKILLROUTE_* environment variables)."""
    import uvicorn

    from service.settings import Settings

    settings = Settings()
    uvicorn.run(
        "service.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


@rules_app.command("validate")
def rules_validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    agents_file: Annotated[
        Path | None,
        typer.Option(
            "--agents", help="JSON list of agents ({skills: {...}}) to lint skill coverage"
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Validate and lint a rules file; exit 1 on errors (warnings alone exit 0)."""
    from routing_rules.lint import lint_rules
    from routing_rules.problems import RulesInvalid
    from routing_rules.validation import validate_rules_text

    text = file.read_text(encoding="utf-8")
    errors, warnings = [], []
    try:
        validated = validate_rules_text(text, file=str(file))
        skills = None
        if agents_file is not None:
            agents = json.loads(agents_file.read_text(encoding="utf-8"))
            skills = {s for a in agents for s in a.get("skills", {})}
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
