"""The active routing rules: versions in the database, hot reload from a file, rollback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from routing_rules.compiled import CompiledRules, compile_rules
from routing_rules.lint import lint_rules
from routing_rules.problems import RuleProblem, RulesInvalid
from routing_rules.validation import validate_rules_text
from service import metrics
from service.problems import NotFound
from service.storage.tables import RuleVersionRow

log = structlog.get_logger(__name__)

OnChange = Callable[[CompiledRules], Awaitable[None]]


@dataclass(frozen=True)
class ActiveRules:
    """The compiled active rules with the version row they came from."""

    compiled: CompiledRules
    row: RuleVersionRow
    warnings: list[RuleProblem]


class RulesStore:
    """Owns which rules version is active; every change goes through `apply`."""

    def __init__(self, engine: Engine, *, rules_file: Path | None) -> None:
        self._engine = engine
        self._file = rules_file
        self._active: ActiveRules | None = None
        self._on_change: list[OnChange] = []
        self._lock = asyncio.Lock()
        self.agent_skills: Callable[[], Collection[str]] = lambda: ()

    @property
    def active(self) -> ActiveRules:
        """The active rules (bootstrap must have run)."""
        if self._active is None:
            raise RuntimeError("no routing rules are active")
        return self._active

    @property
    def compiled(self) -> CompiledRules:
        """The active rules, compiled."""
        return self.active.compiled

    def subscribe(self, callback: OnChange) -> None:
        """Call `callback` after each change of the active rules."""
        self._on_change.append(callback)

    def bootstrap(self) -> None:
        """Activate the stored active version, then the rules file if it differs and is valid."""
        with Session(self._engine) as session:
            row = session.exec(
                select(RuleVersionRow).where(col(RuleVersionRow.active)).limit(1)
            ).first()
        if row is not None:
            self._active = self._compile(row)
        if self._file is None:
            if self._active is None:
                raise RuntimeError(
                    "no routing rules: set SKILLROUTE_RULES_FILE (or SKILLROUTE_DEMO=true)"
                )
            return
        try:
            text = self._file.read_text(encoding="utf-8")
            if self._active is None or self._active.row.source != text:
                row = self._store(text, origin="file", author=str(self._file.name))
                self._active = self._compile(row)
        except (OSError, RulesInvalid) as exc:
            if self._active is None:
                raise
            log.error("rules.file_rejected", file=str(self._file), error=_describe(exc))

    def _compile(self, row: RuleVersionRow) -> ActiveRules:
        validated = validate_rules_text(row.source, file=f"version {row.version}")
        compiled = compile_rules(validated.ruleset, version=row.version, checksum=row.checksum)
        warnings = lint_rules(validated, agent_skills=self.agent_skills() or None)
        return ActiveRules(compiled, row, warnings)

    def check(self, text: str, *, file: str) -> tuple[list[RuleProblem], list[RuleProblem]]:
        """Errors and lint warnings of a draft, applying nothing."""
        try:
            validated = validate_rules_text(text, file=file)
        except RulesInvalid as exc:
            return exc.problems, []
        return [], lint_rules(validated, agent_skills=self.agent_skills() or None)

    async def apply(self, text: str, *, origin: str, author: str) -> ActiveRules:
        """Validate, store as a new version and activate; RulesInvalid leaves all unchanged."""
        async with self._lock:
            validate_rules_text(text, file=origin)
            row = await asyncio.to_thread(self._store, text, origin=origin, author=author)
            self._active = self._compile(row)
            metrics.RULES_RELOADS.labels(result="applied").inc()
            log.info("rules.activated", version=row.version, origin=origin, author=author)
            for callback in self._on_change:
                await callback(self._active.compiled)
            return self._active

    async def rollback(self, version: int, *, author: str) -> ActiveRules:
        """Activate the source of an earlier version again, as a new version."""
        row = await asyncio.to_thread(self.version, version)
        return await self.apply(row.source, origin=f"rollback:{version}", author=author)

    def _store(self, text: str, *, origin: str, author: str) -> RuleVersionRow:
        validated = validate_rules_text(text, file=origin)
        with Session(self._engine) as session:
            latest = session.exec(select(func.max(RuleVersionRow.version))).one()
            session.execute(update(RuleVersionRow).values(active=False))
            row = RuleVersionRow(
                version=(latest or 0) + 1,
                checksum=validated.checksum,
                source=text,
                origin=origin[:32],
                author=author[:128],
                created_at=time.time(),
                active=True,
            )
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def version(self, version: int) -> RuleVersionRow:
        """One stored version."""
        with Session(self._engine) as session:
            row = session.get(RuleVersionRow, version)
        if row is None:
            raise NotFound(f"rules version {version} does not exist")
        return row

    def versions(self, *, offset: int, limit: int) -> tuple[list[RuleVersionRow], int]:
        """Stored versions, newest first, and how many there are."""
        with Session(self._engine) as session:
            total = session.exec(select(func.count()).select_from(RuleVersionRow)).one()
            rows = session.exec(
                select(RuleVersionRow)
                .order_by(col(RuleVersionRow.version).desc())
                .offset(offset)
                .limit(limit)
            ).all()
        return list(rows), int(total)

    async def watch(self) -> None:
        """Hot-reload the rules file whenever it changes; keep the last good version if not."""
        if self._file is None:
            return
        from watchfiles import awatch

        path = self._file.resolve()
        async for _changes in awatch(path.parent, recursive=False, debounce=200):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                log.error("rules.file_unreadable", file=str(path), error=str(exc))
                continue
            if text == self.active.row.source:
                continue
            try:
                await self.apply(text, origin="file", author=path.name)
            except RulesInvalid as exc:
                metrics.RULES_RELOADS.labels(result="rejected").inc()
                log.error(
                    "rules.file_rejected",
                    file=str(path),
                    error=_describe(exc),
                    kept_version=self.active.row.version,
                )


def _describe(exc: Exception) -> str:
    if isinstance(exc, RulesInvalid):
        return "; ".join(str(p) for p in exc.problems[:10])
    return str(exc)
