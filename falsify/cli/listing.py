"""What ``falsify list`` shows: a hypothesis file's id, test shape and claim, from a light read.

Only the YAML is parsed (safe loader); nothing is validated beyond those three fields, so no
model, dataset or heavy library is loaded. ``falsify check`` is the full validation. Problems
reading those fields use the one error template, naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from falsify.errors import HypothesisError, field_error
from falsify.hypothesis.loader import parse_mapping, read_text

__all__ = ["Listing", "read_listing"]


@dataclass(frozen=True)
class Listing:
    id: str
    shape: str  # the test's ``kind``
    claim: str


def read_listing(path: Path) -> Listing:
    """The id, ``test.kind`` and claim of the hypothesis file at ``path``."""
    raw, node = parse_mapping(read_text(path), path)
    hid = _field(path, raw, node, "id", str, "a valid string")
    test = _field(path, raw, node, "test", dict, "a valid dictionary")
    shape = _field(path, test, _child(node, "test"), "kind", str, "a valid string", "test.")
    return Listing(hid, shape, _field(path, raw, node, "claim", str, "a valid string"))


def _field(
    path: Path,
    raw: dict[str, Any],
    node: yaml.Node | None,
    key: str,
    kind: type,
    expected: str,
    prefix: str = "",
) -> Any:
    """``raw[key]`` if it is a ``kind``; else the loader's message for a missing or bad field."""
    if key not in raw:
        raise HypothesisError(
            f"The '{prefix}{key}' of {path} (line {_line(node)}) is required but missing."
        )
    value = raw[key]
    if not isinstance(value, kind):
        line = _line(_child(node, key))
        raise HypothesisError(field_error(path, prefix + key, expected, value, line))
    return value


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None
