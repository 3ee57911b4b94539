"""Parse YAML while remembering where every value came from (line and column).

PyYAML's composer gives each node its position; we build plain Python values from the nodes and
keep a map from the value's path (``("rules", 2, "require")``) to its position, so that a schema
error can name the exact line, column and field. Duplicate keys are errors here, where PyYAML
would silently keep the last one.

Rules arrive from admins over the API, so the reader is bounded: nesting deeper than
`MAX_DEPTH` collections is refused (PyYAML's composer and our builder both recurse, and Python's
stack would otherwise end the request with RecursionError), and so is a document that expands
to more than `MAX_VALUES` values, aliases counted once per use (a "billion laughs" document of
300 bytes otherwise expands to a million values and keeps a CPU busy for seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DOCUMENT_BYTES = 1_000_000
# A rules file nests about six levels deep and holds a few thousand values.
MAX_DEPTH = 64
MAX_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


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


def parse_located(text: str) -> LocatedDocument:
    """Parse one YAML document into values and positions; raise YamlSourceError if unreadable."""
    if len(text.encode("utf-8", errors="replace")) > MAX_DOCUMENT_BYTES:
        raise YamlSourceError(
            [SourceError(1, 1, "", f"document is larger than {MAX_DOCUMENT_BYTES} bytes")]
        )
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader rejects control characters up front
        raise YamlSourceError([_unreadable(text, exc)]) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise YamlSourceError([SourceError(1, 1, "", "the document is empty")])
        builder = _Builder(loader)
        value = builder.build(root, ())
        if builder.errors:
            raise YamlSourceError(builder.errors)
        return LocatedDocument(value, builder.positions, builder.key_positions)
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


def _too_deep(position: Position, path: Path) -> YamlSourceError:
    message = f"nesting deeper than {MAX_DEPTH} levels"
    return YamlSourceError([SourceError(*_astuple(position), format_path(path), message)])


def _too_many(position: Position, path: Path) -> YamlSourceError:
    message = (
        f"the document expands to more than {MAX_VALUES} values"
        " (each use of an alias counts the whole anchored value again)"
    )
    return YamlSourceError([SourceError(*_astuple(position), format_path(path), message)])


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and huge merges while flattening."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nesting = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Compose one node, refusing a collection nested past MAX_DEPTH."""
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        if self._nesting >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _too_deep(_position(event.start_mark), ())
        self._nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Expand merge keys (``<<: *defaults``) in place, as PyYAML does, but bounded.

        Each mapping is flattened once (in place), and the merged list is checked after each
        source, so no list grows past about twice MAX_VALUES however the merges are stacked.
        """
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        index = 0
        while index < len(node.value):
            key_node, value_node = node.value[index]
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == "tag:yaml.org,2002:value":
                    key_node.tag = "tag:yaml.org,2002:str"
                index += 1
                continue
            # Removed before recursing, so a mapping that merges itself stops here.
            del node.value[index]
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "expected a mapping or list of mappings for merging,"
                        f" but found {source.id}",
                        source.start_mark,
                    )
            flattened: list[list[tuple[yaml.Node, yaml.Node]]] = []
            size = len(merged) + len(node.value)
            for source in sources:
                self.flatten_mapping(source)
                size += len(source.value)
                if size > MAX_VALUES:
                    raise _too_many(_position(source.start_mark), ())
                flattened.append(source.value)
            # Earlier sources win over later ones: they come later, and the last key counts.
            for pairs in reversed(flattened):
                merged.extend(pairs)
        if merged:
            node.value = merged + node.value


class _Builder:
    """Builds plain values from composed nodes, recording positions and counting every value."""

    def __init__(self, loader: _BoundedLoader) -> None:
        self.loader = loader
        self.positions: dict[Path, Position] = {}
        self.key_positions: dict[Path, Position] = {}
        self.errors: list[SourceError] = []
        # An alias is built again at every use (each use has its own path and positions), so
        # this count is the expanded size of the document.
        self.built = 0
        self._node_positions: dict[yaml.Node, Position] = {}

    def build(self, node: yaml.Node, path: Path) -> Any:
        """The value of `node`, found at `path`."""
        position = self._node_positions.get(node)
        if position is None:
            position = self._node_positions[node] = _position(node.start_mark)
        self._count(position, path)
        self.positions[path] = position
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and len(path) >= MAX_DEPTH:
            # Composition already bounds the text; aliases can still nest one anchored value
            # inside another, or inside itself.
            raise _too_deep(position, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_position = _position(key_node.start_mark)
            self._count(key_position, path)
            key = self._key(key_node, key_position, path)
            if key is None:
                continue
            child = (*path, key)
            if key in result:
                self.errors.append(
                    SourceError(
                        *_astuple(key_position), format_path(child), f"duplicate key {key!r}"
                    )
                )
                continue
            self.key_positions[child] = key_position
            result[key] = self.build(value_node, child)
        return result

    def _key(self, key_node: yaml.Node, position: Position, path: Path) -> str | None:
        # A collection key is named by its kind, never built: it may be an alias bomb.
        if isinstance(key_node, yaml.SequenceNode | yaml.MappingNode):
            kind = "a sequence" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
        else:
            key = self.loader.construct_object(key_node, deep=True)
            if isinstance(key, str):
                return key
            kind = _shortened(repr(key))
        self.errors.append(
            SourceError(
                *_astuple(position), format_path(path), f"mapping keys must be strings, got {kind}"
            )
        )
        return None

    def _count(self, position: Position, path: Path) -> None:
        self.built += 1
        if self.built > MAX_VALUES:
            raise _too_many(position, path)


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _astuple(position: Position) -> tuple[int, int]:
    return position.line, position.column
