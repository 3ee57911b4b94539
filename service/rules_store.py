"""The active routing rules: versions in the database, hot reload from a file, rollback."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import func, update
from sqlalchemy import text as sql_text
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
# Reasons why live state cannot take these rules now (empty: no objection).
# Why rules cannot be activated now (empty: they can); may be a coroutine function.
Veto = Callable[[CompiledRules], list[str] | Awaitable[list[str]]]
FOLLOW_SECONDS = 1.0  # how soon a version stored by another replica becomes active here
_PG_STORE_LOCK = 0x7275_6C65  # "rule": one rules store at a time across replicas
FILE_ORIGIN = "file"
# When watchfiles itself fails (not one change), watch again after this long.
WATCH_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class _Candidate:
    """A draft that validated and compiled, not yet stored (its version is still 0)."""

    checksum: str
    compiled: CompiledRules
    warnings: list[RuleProblem]

    def activated(self, row: RuleVersionRow) -> ActiveRules:
        """The active rules once stored as `row`."""
        compiled = dataclasses.replace(self.compiled, version=row.version, checksum=row.checksum)
        return ActiveRules(compiled, row, self.warnings)


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
        self._vetoes: list[Veto] = []
        self._lock = asyncio.Lock()
        self._vetoed_version: int | None = None  # a stored version this process cannot take yet
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

    async def _veto_reasons(self, compiled: CompiledRules) -> list[str]:
        reasons: list[str] = []
        for veto in self._vetoes:
            found = veto(compiled)
            reasons += await found if inspect.isawaitable(found) else found
        return reasons

    def add_veto(self, callback: Veto) -> None:
        """Ask `callback` before each change; any reason it returns refuses the new rules.

        It runs on the event loop with the new rules compiled, before anything is stored.
        """
        self._vetoes.append(callback)

    def bootstrap(self) -> None:
        """Activate the stored active version, or the rules file if the file itself changed.

        The file wins only when its text differs from the newest version that came from the
        file (origin "file"): a restart with an unchanged file keeps whatever is active, even a
        version from PUT /v1/rules or a rollback. A file edited while the service was down is
        activated (as a new version) if it is valid; if not, the error is logged and the active
        version stays. Without any active version the file must be readable and valid.
        """
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
            if self._active is not None and text == self._file_source():
                log.info(
                    "rules.file_unchanged",
                    file=str(self._file),
                    kept_version=self._active.row.version,
                    kept_origin=self._active.row.origin,
                )
                return
            candidate = self._prepare(
                text, file=str(self._file), agent_skills=self.agent_skills() or None
            )
            row = self._store(
                text, checksum=candidate.checksum, origin=FILE_ORIGIN, author=self._file.name
            )
            self._active = candidate.activated(row)
        except (OSError, UnicodeDecodeError, RulesInvalid) as exc:
            if self._active is None:
                raise
            log.error("rules.file_rejected", file=str(self._file), error=_describe(exc))

    def _file_source(self) -> str | None:
        """The source of the newest version that came from the rules file, if any."""
        with Session(self._engine) as session:
            return session.exec(
                select(RuleVersionRow.source)
                .where(RuleVersionRow.origin == FILE_ORIGIN)
                .order_by(col(RuleVersionRow.version).desc())
                .limit(1)
            ).first()

    def _compile(self, row: RuleVersionRow) -> ActiveRules:
        return _compiled_row(row, self.agent_skills() or None)

    @staticmethod
    def _prepare(text: str, *, file: str, agent_skills: Collection[str] | None) -> _Candidate:
        # CPU-bound (YAML, pydantic, numpy): callers on the event loop run it in a thread.
        validated = validate_rules_text(text, file=file)
        compiled = compile_rules(validated.ruleset, checksum=validated.checksum)
        warnings = lint_rules(validated, agent_skills=agent_skills)
        return _Candidate(validated.checksum, compiled, warnings)

    def check(
        self, text: str, *, file: str, agent_skills: Collection[str] | None
    ) -> tuple[list[RuleProblem], list[RuleProblem]]:
        """Errors and lint warnings of a draft, applying nothing (CPU-bound: run it in a thread).

        `agent_skills` are the skills agents have (take `agent_skills()` on the event loop), or
        None to skip the coverage lint.
        """
        try:
            validated = validate_rules_text(text, file=file)
        except RulesInvalid as exc:
            return exc.problems, []
        return [], lint_rules(validated, agent_skills=agent_skills)

    async def apply(self, text: str, *, origin: str, author: str) -> ActiveRules:
        """Validate, ask the vetoes, store as a new version and activate.

        RulesInvalid (errors in the text, or a veto's reasons) leaves everything unchanged.
        """
        async with self._lock:
            # The agent list belongs to the event loop: take the skills here, not in the thread.
            skills = self.agent_skills() or None
            candidate = await asyncio.to_thread(
                self._prepare, text, file=origin, agent_skills=skills
            )
            reasons = await self._veto_reasons(candidate.compiled)
            if reasons:
                log.warning("rules.vetoed", origin=origin, author=author, reasons=reasons)
                raise RulesInvalid(
                    [
                        RuleProblem(origin, 1, 1, "vocabularies", reason, code="in_use")
                        for reason in reasons
                    ]
                )
            row = await asyncio.to_thread(
                self._store, text, checksum=candidate.checksum, origin=origin, author=author
            )
            self._active = candidate.activated(row)
            metrics.RULES_RELOADS.labels(result="applied").inc()
            log.info("rules.activated", version=row.version, origin=origin, author=author)
            for callback in self._on_change:
                await callback(self._active.compiled)
            return self._active

    async def rollback(self, version: int, *, author: str) -> ActiveRules:
        """Activate the source of an earlier version again, as a new version."""
        row = await asyncio.to_thread(self.version, version)
        return await self.apply(row.source, origin=f"rollback:{version}", author=author)

    async def adopt_stored(self) -> bool:
        """Activate the stored active version if it is newer than ours (another replica stored
        it: a PUT, a rollback, or its rules file); whether it did.

        It was validated (and vetoed against that replica's live state) where it was stored;
        here it is compiled and handed to the subscribers like any change.
        """
        row = await asyncio.to_thread(self._stored_active)
        async with self._lock:
            if row is None or row.version <= self.active.row.version:
                return False
            # The agent list belongs to the event loop: take the skills here, not in the thread.
            skills = self.agent_skills() or None
            try:
                active = await asyncio.to_thread(_compiled_row, row, skills)
            except RulesInvalid as exc:  # valid where it was stored; a different build here
                metrics.RULES_RELOADS.labels(result="rejected").inc()
                log.error("rules.follow_rejected", version=row.version, error=_describe(exc))
                return False
            # Checked against this process's live contacts too; refused, it is tried again each
            # second (and logged once) until they no longer use what it drops.
            reasons = await self._veto_reasons(active.compiled)
            if reasons:
                if self._vetoed_version != row.version:
                    self._vetoed_version = row.version
                    metrics.RULES_RELOADS.labels(result="rejected").inc()
                    log.warning("rules.follow_vetoed", version=row.version, reasons=reasons)
                return False
            self._active = active
            metrics.RULES_RELOADS.labels(result="followed").inc()
            log.info("rules.followed", version=row.version, origin=row.origin)
            for callback in self._on_change:
                await callback(active.compiled)
            return True

    async def follow(self, interval: float = FOLLOW_SECONDS) -> None:
        """Adopt versions stored by other replicas, checking every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.adopt_stored()
            except Exception:  # a database outage: try again at the next check
                log.exception("rules.follow_failed")

    def _stored_active(self) -> RuleVersionRow | None:
        with Session(self._engine) as session:
            return session.exec(
                select(RuleVersionRow).where(col(RuleVersionRow.active)).limit(1)
            ).first()

    def _store(self, text: str, *, checksum: str, origin: str, author: str) -> RuleVersionRow:
        with Session(self._engine) as session:
            # Replicas may store at the same moment: one at a time, each numbering after the
            # last. PostgreSQL: an advisory transaction lock. SQLite: a write statement first
            # takes the database's write lock before the newest version is read.
            if session.get_bind().dialect.name == "postgresql":
                session.execute(sql_text(f"SELECT pg_advisory_xact_lock({_PG_STORE_LOCK})"))
            else:
                session.execute(
                    update(RuleVersionRow)
                    .where(col(RuleVersionRow.version) == -1)
                    .values(active=False)
                )
            newest = session.exec(
                select(RuleVersionRow).order_by(col(RuleVersionRow.version).desc()).limit(1)
            ).first()
            if (
                origin == FILE_ORIGIN
                and newest is not None
                and newest.active
                and (newest.origin, newest.checksum) == (origin, checksum)
            ):
                # Every replica watches the file: the edit another replica stored just now is
                # that version, not one more of the same text.
                session.expunge(newest)
                session.rollback()
                return newest
            session.execute(update(RuleVersionRow).values(active=False))
            latest = None if newest is None else newest.version
            row = RuleVersionRow(
                version=(latest or 0) + 1,
                checksum=checksum,
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
        """Hot-reload the rules file whenever it changes; keep the last good version if not.

        Nothing one change does (an unreadable file, invalid rules, a veto, a failing
        subscriber) stops the watching; if watchfiles itself fails, watching starts again.
        """
        if self._file is None:
            return
        from watchfiles import awatch

        path = self._file.resolve()
        while True:
            try:
                async for _changes in awatch(path.parent, recursive=False, debounce=200):
                    await self._reload(path)
                return
            except Exception:
                log.exception("rules.watch_failed", file=str(path), retry_in=WATCH_RETRY_SECONDS)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _reload(self, path: Path) -> None:
        """Apply the file if it changed since it was last stored; log (never raise) a failure."""
        try:
            try:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                metrics.RULES_RELOADS.labels(result="rejected").inc()
                log.error("rules.file_unreadable", file=str(path), error=str(exc))
                return
            # Compared with the file's own last version, not the active one: the watcher also
            # wakes for other files in the directory, and must not undo an API change then.
            if text == await asyncio.to_thread(self._file_source):
                return
            await self.apply(text, origin=FILE_ORIGIN, author=path.name)
        except RulesInvalid as exc:
            metrics.RULES_RELOADS.labels(result="rejected").inc()
            log.error(
                "rules.file_rejected",
                file=str(path),
                error=_describe(exc),
                kept_version=self.active.row.version,
            )
        except Exception:
            metrics.RULES_RELOADS.labels(result="failed").inc()
            log.exception(
                "rules.reload_failed", file=str(path), active_version=self.active.row.version
            )


def _compiled_row(row: RuleVersionRow, agent_skills: Collection[str] | None) -> ActiveRules:
    """A stored version, validated, compiled and linted."""
    validated = validate_rules_text(row.source, file=f"version {row.version}")
    compiled = compile_rules(validated.ruleset, version=row.version, checksum=row.checksum)
    warnings = lint_rules(validated, agent_skills=agent_skills)
    return ActiveRules(compiled, row, warnings)


def _describe(exc: Exception) -> str:
    if isinstance(exc, RulesInvalid):
        return "; ".join(str(p) for p in exc.problems[:10])
    return str(exc)
