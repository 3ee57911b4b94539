"""Errors and warnings about a rules document, each pointing at file, line, column and field."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One validation error or lint warning."""

    file: str
    line: int
    column: int
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"
    code: str = "invalid"

    def as_dict(self) -> dict[str, object]:
        """Plain dict for JSON responses."""
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity}[{self.code}]{field} {self.message}"


class RulesInvalid(Exception):
    """A rules document has errors; nothing was applied."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__(f"{len(problems)} error(s) in routing rules")
        self.problems = problems
