"""Read hypothesis files: YAML (safe loader) → validated :class:`Hypothesis`.

Validation errors are mapped back to the YAML line of the offending field and always name the
file, so a user sees e.g. "The 'prediction.alpah' of hypotheses/x.yaml (line 14) is not a known
field: expected one of ['adjust', 'alpha', ...]. Got 'alpah' instead. Did you mean 'alpha'?".
"""

from __future__ import annotations

import hashlib
import re
import types
import typing
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from falsify.errors import (
    FalsifyDeprecationWarning,
    HypothesisError,
    did_you_mean,
    field_error,
    quote,
    truncate,
)
from falsify.hypothesis.conditions import ConditionError, expand
from falsify.hypothesis.kinds import Kinds
from falsify.hypothesis.schema import Hypothesis, TrainingSpec
from falsify.hypothesis.types import IMPORT_PATH_KEYS, IMPORT_PATH_TAG

__all__ = [
    "HypothesisFile",
    "apply_overrides",
    "discover",
    "load",
    "loads",
    "parse_override",
]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class HypothesisFile:
    """A validated hypothesis with what is needed to point back into its file."""

    hypothesis: Hypothesis
    path: Path
    sha256: str  # of the file's bytes, before overrides
    overrides: tuple[str, ...] = ()
    _raw: Any = field(default=None, repr=False, compare=False)
    _node: yaml.Node | None = field(default=None, repr=False, compare=False)

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the YAML node at ``loc`` (or of its nearest present parent)."""
        return _locate(self._raw, self._node, loc)[1]

    def error(self, loc: Loc, expected: str, found: object, choices: Iterable[str] | None = None):
        """A :class:`HypothesisError` about the field at ``loc`` in the one template."""
        name, line = _locate(self._raw, self._node, loc)
        return HypothesisError(field_error(self.path, name, expected, found, line, choices))


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into the sorted list of hypothesis files they name."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not files:
                raise HypothesisError(f"{p} is a folder with no hypothesis files (*.yaml, *.yml).")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise HypothesisError(f"{p} does not exist (expected a hypothesis file or a folder).")
    return found


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Parse ``a.b.c=value`` (value read as YAML) into a key path and a value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise HypothesisError(
            f"The override {quote(text)} must be KEY=VALUE, e.g. population.training.epochs=5."
        )
    source = f"The value of override {quote(text)}"
    try:
        parsed, _ = _read_yaml(value, source)
    except (yaml.YAMLError, _Refused) as exc:
        raise HypothesisError(f"{source} is not valid YAML: {_problem(exc)}.") from None
    return tuple(key.strip().split(".")), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=value`` override set (parents are created)."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if not isinstance(child, dict):
                child = {}
                node[k] = child
            node = child
        node[keys[-1]] = value
    return out


def load(path: str | Path, overrides: Sequence[str] = ()) -> HypothesisFile:
    """Read and validate one hypothesis file; raise :class:`HypothesisError` on any problem."""
    path = Path(path)
    return loads(read_text(path), path, overrides)


def read_text(path: Path) -> str:
    """The file's text, or the one-line error for a file that cannot be read, is larger than
    :data:`MAX_BYTES` or is not UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more, whatever the file's size
    except OSError as exc:
        raise HypothesisError(f"{path} cannot be read: {exc.strerror}.") from None
    _check_size(path, len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HypothesisError(f"{path} is not UTF-8 text (a hypothesis file is YAML).") from None


def parse_mapping(text: str, path: Path) -> tuple[dict[str, Any], yaml.Node]:
    """The YAML mapping in ``text`` and its node tree, for line numbers.

    Read with PyYAML's safe loader within the limits of :class:`_Loader`; a key given twice in
    one mapping is refused, naming both lines.
    """
    _check_size(path, len(text.encode("utf-8")))
    try:
        raw, node = _read_yaml(text, str(path))
    except _Refused as exc:
        raise HypothesisError(f"{path}{_where(exc.mark)} is refused: {exc.problem}.") from None
    except yaml.YAMLError as exc:
        where = _where(getattr(exc, "problem_mark", None))
        raise HypothesisError(f"{path}{where} is not valid YAML: {_problem(exc)}.") from None
    if not isinstance(raw, dict):
        raise HypothesisError(
            f"{path} must hold a YAML mapping (id:, claim:, population:, test:, prediction:). "
            f"Got {type(raw).__name__ if raw is not None else 'an empty file'} instead."
        )
    return raw, node


# --- reading YAML within limits -----------------------------------------------------------------
# A real hypothesis file is a few kilobytes and a few hundred values. These limits stop a hostile
# or broken one (a "billion laughs" of nested aliases, a megabyte of brackets) within a fraction
# of a second and a few megabytes, before anything expands it (docs/file-format.md#limits).

MAX_BYTES = 1 << 20  # 1 MiB
MAX_VALUES = 100_000  # YAML values (nodes), an alias counting as all the values it repeats
MAX_DEPTH = 50  # nested mappings and lists, through aliases too
MAX_ERROR_LINES = 20  # per file; the rest are counted


def _check_size(path: Path, n_bytes: int) -> None:
    if n_bytes > MAX_BYTES:
        raise HypothesisError(
            f"{path} is larger than {MAX_BYTES // 1024} KiB, the limit for a hypothesis file "
            "(a real one is a few kilobytes); refused without parsing it."
        )


class _Refused(Exception):
    """A document beyond the limits, with where in the text it went beyond."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, counting what each node expands to while composing it.

    Composing keeps an alias as a reference to its anchored node, so counting is cheap; the
    expansion that costs time and memory happens later (validation, error messages), on a
    document that by then is known to be small.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, nesting depth)

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise _Refused("an alias refers to the value that contains it (a loop)", mark)
            self._aliases += 1
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(self._too_deep(), mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes = [self._sizes[id(c)] for c in children]
        values = 1 + sum(v for v, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if values > MAX_VALUES:
            via = " once its aliases are expanded" if self._aliases else ""
            raise _Refused(
                f"it holds more than {MAX_VALUES:,} values{via} (a hypothesis file needs a few "
                "hundred)",
                mark,
            )
        if depth > MAX_DEPTH:
            raise _Refused(self._too_deep(), mark)
        self._sizes[id(node)] = (values, depth)
        return node

    def _too_deep(self) -> str:
        via = ", through its aliases" if self._aliases else ""
        return f"its mappings and lists nest more than {MAX_DEPTH} levels deep{via}"

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. a date 2024-13-45, a 5000-digit int
            problem = f"the value {quote(node.value, 60)} cannot be read ({truncate(str(exc))})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


def _read_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The one YAML document in ``text`` and its node; refuses repeated keys (naming
    ``source``, the file)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _refuse_repeated_keys(node, source)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _refuse_repeated_keys(root: yaml.Node, source: str) -> None:
    """One error line per key that appears twice in a mapping, naming both lines (YAML says
    keys are unique; PyYAML keeps the last, which would silently change a pre-registration)."""
    found: list[tuple[int, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, name = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{name}[{i}]") for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # a merge's keys may be overridden; other keys are refused later
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                line = earlier.start_mark.line + 1
                inside = f"in {quote(name)}" if name else "at the top level"
                found.append(
                    (
                        line,
                        f"{source} (lines {line} and {key.start_mark.line + 1}): the key "
                        f"{quote(key.value)} appears twice {inside} (a key may be given once).",
                    )
                )
            stack.append((value, f"{name}.{key.value}" if name else str(key.value)))
    if found:
        raise HypothesisError(_cap([message for _, message in sorted(found)], source))


def _cap(lines: Sequence[str], source: object, more: int = 0) -> str:
    """At most :data:`MAX_ERROR_LINES` distinct lines, then how many more problems there are
    (``more``: problems not formatted at all)."""
    lines = list(dict.fromkeys(lines))
    more += max(0, len(lines) - MAX_ERROR_LINES)
    shown = lines[:MAX_ERROR_LINES]
    return "\n".join([*shown, f"{source}: {more} more problems not shown."] if more else shown)


def _where(mark: yaml.Mark | None) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


def _problem(exc: Exception) -> str:
    return truncate(str(getattr(exc, "problem", None) or exc))


def loads(
    text: str, path: str | Path = "<string>", overrides: Sequence[str] = ()
) -> HypothesisFile:
    """Validate hypothesis YAML given as text; ``path`` only names it in errors and reports."""
    path = Path(path)
    raw, node = parse_mapping(text, path)
    raw = apply_overrides(raw, overrides)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FalsifyDeprecationWarning)
            # Relative paths in the file (data roots, checkpoints) resolve against its folder.
            hyp = Hypothesis.model_validate(raw, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        keys = {parse_override(o)[0]: o for o in overrides}
        errors = exc.errors()
        lines: dict[str, None] = {}
        used = 0  # errors formatted; the rest are only counted
        for err in errors:
            used += 1
            line = _format(path, raw, node, err)
            where = _data_path(raw, tuple(err["loc"]))
            for key, text_ in keys.items():
                if where[: len(key)] == key:
                    line += f" (The value came from the override {quote(text_)}.)"
            lines[line] = None
            if len(lines) == MAX_ERROR_LINES:
                break
        raise HypothesisError(_cap(list(lines), path, len(errors) - used)) from None
    notes = [str(w.message) for w in caught if issubclass(w.category, FalsifyDeprecationWarning)]
    if notes:  # one note per file, however many old names it uses
        warnings.warn(
            FalsifyDeprecationWarning(f"{path}: {'; '.join(dict.fromkeys(notes))}"), stacklevel=2
        )
    try:
        expand(hyp.population)
    except ConditionError as exc:
        name, line = _locate(raw, node, exc.loc)
        raise HypothesisError(
            field_error(path, name, exc.expected, exc.found, line, exc.choices)
        ) from None
    return HypothesisFile(
        hypothesis=hyp,
        path=path,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        overrides=tuple(overrides),
        _raw=raw,
        _node=node,
    )


# --- mapping pydantic errors back to the file --------------------------------------------------


def _has(raw: Any, key: str | int) -> bool:
    if isinstance(raw, dict):
        return key in raw
    return isinstance(raw, list) and isinstance(key, int) and 0 <= key < len(raw)


def _steps(raw: Any, loc: Loc) -> Iterator[tuple[str | int, Any]]:
    """The elements of ``loc`` that are real keys or indexes of the data, with their values.

    Other elements (pydantic's union tags, validator names) are skipped.
    """
    for key in loc:
        if _has(raw, key):
            raw = raw[key]
            yield key, raw


def _as_written(raw: Any, loc: Loc) -> Loc:
    """``loc`` with a regularizer block's field (``training.enmeshment.layers``) spelled by the
    deprecated flat name (``training.enmeshment_layers``) where the file uses that name."""
    for i, key in enumerate(loc[:-1]):
        if isinstance(raw, dict) and key not in raw and isinstance(key, str):
            block = TrainingSpec.blocks().get(key)
            old = {new: old for old, new in (block.legacy_fields if block else {}).items()}
            name = old.get(str(loc[i + 1]))
            if name in raw:
                return (*loc[:i], name, *loc[i + 2 :])
        if not _has(raw, key):
            continue
        raw = raw[key]
    return loc


def _locate(raw: Any, node: yaml.Node | None, loc: Loc) -> tuple[str, int | None]:
    """Follow ``loc`` through the data and the YAML nodes; return (dotted name, line)."""
    loc = _as_written(raw, loc)
    name = ""
    line = node.start_mark.line + 1 if node is not None else None
    for key, _ in _steps(raw, loc):
        if isinstance(key, int):
            node = node.value[key] if isinstance(node, yaml.SequenceNode) else None
            name = f"{name}[{key}]"
        else:
            node = _child(node, key)
            name = f"{name}.{key}" if name else key
        if node is not None:
            line = node.start_mark.line + 1
    return name or "file", line


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    # The last match: a key given explicitly after a merge (``<<: *base``) wins over the merged.
    found = None
    for k, v in node.value:
        if k.value == str(key):
            found = v
    return found


def _key_line(node: yaml.Node | None, loc: Loc) -> int | None:
    """Line of the *key* at the end of ``loc`` (for unknown fields, whose value may be a block)."""
    *parent, last = loc
    for key in parent:
        if isinstance(node, yaml.MappingNode):
            node = _child(node, key) or node
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if k.value == str(last):
                return k.start_mark.line + 1
    return None


def _format(path: Path, raw: Any, node: yaml.Node, err: Any) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    name, line = _locate(raw, node, loc)
    found = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_fields(raw, loc[:-1])
        key_line = _key_line(node, loc) or line
        expected = f"one of the known fields {allowed}" if allowed else "a known field"
        return (
            f"The {quote(name)} of {path} (line {key_line}) is not a known field: expected "
            f"{expected}. Got {quote(loc[-1])} instead.{did_you_mean(loc[-1], allowed)}"
        )
    if kind == "missing":
        name = f"{name}.{loc[-1]}" if name != "file" else str(loc[-1])
        return f"The {quote(name)} of {path} (line {line}) is required but missing."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag", found if kind == "union_tag_invalid" else None)
        kind_name = f"{name}.kind" if not name.endswith("kind") else name
        kind_line = _locate(raw, node, (*_data_path(raw, loc), "kind"))[1] or line
        user_key = IMPORT_PATH_KEYS.get(str(loc[-1]))
        if tag is None and user_key is not None:
            return (
                f"The {quote(kind_name)} of {path} (line {line}) is required but missing (or give "
                f"'{user_key}:' with an import path 'module:function')."
            )
        expected = f"one of {[t for t in tags if t != IMPORT_PATH_TAG]}"
        if IMPORT_PATH_TAG in tags and user_key is not None:
            expected += f", or no kind and '{user_key}:' with an import path 'module:function'"
        tags = [t for t in tags if t != IMPORT_PATH_TAG]
        return field_error(path, kind_name, expected, tag, kind_line, tags)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return field_error(path, name, f"one of {choices}", found, line, choices)
    msg = str(err.get("msg", ""))
    msg = re.sub(r"^(Value error, |Input should be |Assertion failed, )", "", msg)
    return field_error(path, name, msg, found, line)


def _data_path(raw: Any, loc: Loc) -> Loc:
    return tuple(k for k, _ in _steps(raw, loc))


def _allowed_fields(raw: Any, loc: Loc) -> list[str]:
    """The field names of the pydantic model that validates the mapping at ``loc``."""
    cls: Any = Hypothesis
    for key, value in _steps(raw, loc):
        cls = _item_type(cls, value) if isinstance(key, int) else _field_type(cls, key, value)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return sorted(cls.model_fields)
    return []


def _candidates(tp: Any) -> list[Any]:
    """Flatten Annotated/Optional/Union annotations into their member types."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        kinds = [m for m in tp.__metadata__ if isinstance(m, Kinds)]
        if kinds:
            return list(kinds[0].members())
        return _candidates(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(tp) for c in _candidates(arg)]
    return [tp]


def _pick(members: list[Any], data: Any) -> Any:
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) > 1 and isinstance(data, dict):
        for m in models:
            ann = m.model_fields.get("kind")
            if (
                "kind" in data
                and ann is not None
                and data["kind"] in typing.get_args(ann.annotation)
            ):
                return m
            key = getattr(m, "import_path_key", None)
            if "kind" not in data and key is not None and key in data:
                return m
    return models[0] if models else None


def _field_type(cls: Any, key: str, data: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or key not in cls.model_fields:
        return None
    info = cls.model_fields[key]
    # pydantic keeps an Annotated field's metadata (e.g. a union of kinds) apart from its type
    kinds = [m for m in info.metadata if isinstance(m, Kinds)]
    members = list(kinds[0].members()) if kinds else _candidates(info.annotation)
    return _pick(members, data) or info.annotation


def _item_type(tp: Any, data: Any) -> Any:
    for member in _candidates(tp):
        args = typing.get_args(member)
        if args:
            return _pick(_candidates(args[0]), data)
    return None
