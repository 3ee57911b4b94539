"""Parse YAML while remembering where every value came from (line and column).

PyYAML's composer gives each node its position; we build plain Python values from the nodes and
keep a map from the value's path (``("rules", 2, "require")``) to its position, so that a schema
error can name the exact line, column and field. Duplicate keys are errors here, where PyYAML
would silently keep the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DOCUMENT_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in the source text."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class SourceError:
    """A problem found while reading the YAML itself."""

    line: int
    column: int
    field: str
    message: str


class YamlSourceError(Exception):
    """The text is not a YAML document we can read."""

    def __init__(self, errors: list[SourceError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


@dataclass
class LocatedDocument:
    """The parsed value plus where each path in it starts in the text."""

    value: Any
    positions: dict[Path, Position]
    key_positions: dict[Path, Position]

    def position_of(self, path: Path) -> tuple[Position, Path]:
        """The position of `path`, or of its nearest ancestor that exists in the text."""
        candidate = path
        while candidate:
            if candidate in self.key_positions:
                return self.key_positions[candidate], candidate
            if candidate in self.positions:
                return self.positions[candidate], candidate
            candidate = candidate[:-1]
        return self.positions.get((), Position(1, 1)), ()


def format_path(path: Path) -> str:
    """Render a path the way an admin reads it: ``rules[2].require.skills``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def parse_located(text: str) -> LocatedDocument:
    """Parse one YAML document into values and positions; raise YamlSourceError if unreadable."""
    if len(text.encode("utf-8", errors="replace")) > MAX_DOCUMENT_BYTES:
        raise YamlSourceError(
            [SourceError(1, 1, "", f"document is larger than {MAX_DOCUMENT_BYTES} bytes")]
        )
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader rejects control characters up front
        raise YamlSourceError([_unreadable(text, exc)]) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise YamlSourceError([SourceError(1, 1, "", "the document is empty")])
        positions: dict[Path, Position] = {}
        key_positions: dict[Path, Position] = {}
        errors: list[SourceError] = []
        value = _build(loader, root, (), positions, key_positions, errors)
        if errors:
            raise YamlSourceError(errors)
        return LocatedDocument(value, positions, key_positions)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSourceError([SourceError(line, column, "", f"YAML syntax: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise YamlSourceError([SourceError(1, 1, "", f"YAML: {exc}")]) from exc
    finally:
        loader.dispose()


def _unreadable(text: str, exc: yaml.reader.ReaderError) -> SourceError:
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
    return SourceError(line, column, "", f"YAML: unacceptable character {character}: {exc.reason}")


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    positions: dict[Path, Position],
    key_positions: dict[Path, Position],
    errors: list[SourceError],
) -> Any:
    positions[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                errors.append(
                    SourceError(
                        *_astuple(_mark(key_node)),
                        format_path(path),
                        f"mapping keys must be strings, got {key!r}",
                    )
                )
                continue
            child = (*path, key)
            if key in result:
                errors.append(
                    SourceError(
                        *_astuple(_mark(key_node)),
                        format_path(child),
                        f"duplicate key {key!r}",
                    )
                )
                continue
            key_positions[child] = _mark(key_node)
            result[key] = _build(loader, value_node, child, positions, key_positions, errors)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, index), positions, key_positions, errors)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def _astuple(position: Position) -> tuple[int, int]:
    return position.line, position.column
