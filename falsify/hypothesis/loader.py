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

from falsify.errors import FalsifyDeprecationWarning, HypothesisError, did_you_mean, field_error
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
            f"The override {text!r} must be KEY=VALUE, e.g. population.training.epochs=5."
        )
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise HypothesisError(f"The value of override {text!r} is not valid YAML: {exc}") from None
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
    """The file's text, or the one-line error for a file that cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HypothesisError(f"{path} cannot be read: {exc.strerror}.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HypothesisError(f"{path} is not UTF-8 text (a hypothesis file is YAML).") from None


def parse_mapping(text: str, path: Path) -> tuple[dict[str, Any], yaml.Node]:
    """The YAML mapping in ``text`` (safe loader) and its node tree, for line numbers."""
    try:
        raw = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise HypothesisError(f"{path}{where} is not valid YAML: {problem}.") from None
    if not isinstance(raw, dict):
        raise HypothesisError(
            f"{path} must hold a YAML mapping (id:, claim:, population:, test:, prediction:). "
            f"Got {type(raw).__name__ if raw is not None else 'an empty file'} instead."
        )
    return raw, node


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
        lines = []
        for err in exc.errors():
            line = _format(path, raw, node, err)
            where = _data_path(raw, tuple(err["loc"]))
            for key, text_ in keys.items():
                if where[: len(key)] == key:
                    line += f" (The value came from the override {text_!r}.)"
            lines.append(line)
        raise HypothesisError("\n".join(dict.fromkeys(lines))) from None
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
    for k, v in node.value:
        if k.value == str(key):
            return v
    return None


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
            f"The {name!r} of {path} (line {key_line}) is not a known field: expected "
            f"{expected}. Got {loc[-1]!r} instead.{did_you_mean(loc[-1], allowed)}"
        )
    if kind == "missing":
        name = f"{name}.{loc[-1]}" if name != "file" else str(loc[-1])
        return f"The {name!r} of {path} (line {line}) is required but missing."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag", found if kind == "union_tag_invalid" else None)
        kind_name = f"{name}.kind" if not name.endswith("kind") else name
        kind_line = _locate(raw, node, (*_data_path(raw, loc), "kind"))[1] or line
        user_key = IMPORT_PATH_KEYS.get(str(loc[-1]))
        if tag is None and user_key is not None:
            return (
                f"The {kind_name!r} of {path} (line {line}) is required but missing (or give "
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
            if "kind" in data and ann is not None and data["kind"] in typing.get_args(ann.annotation):
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
