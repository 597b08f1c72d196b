"""Base classes and reusable field types of the hypothesis file model (pydantic only).

Every model is frozen and forbids unknown keys, so a typo such as ``alpah:`` is an error. Every
model defers building its validation schema to first use, so the unions of kinds
(:mod:`falsify.hypothesis.kinds`) include every kind registered by then, plugins included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from falsify.hypothesis.units import UnitViews

__all__ = [
    "IMPORT_PATH",
    "IMPORT_PATH_KEYS",
    "IMPORT_PATH_TAG",
    "MAX_SEEDS",
    "Checkpointed",
    "Epoch",
    "EpochWindow",
    "FromFiles",
    "Frozen",
    "LayerNames",
    "Layers",
    "Seed",
    "Split",
    "UnitLayers",
    "WeightLayers",
    "hash_by_json",
]


class Frozen(BaseModel):
    # ``allow_inf_nan=False``: ``.inf`` and ``.nan`` pass range checks such as ``gt=0`` (or
    # fail them with a message that does not say why), so every float field refuses them.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)


# A seed of a random generator, for every seed field: scikit-learn's ``random_state`` and
# numpy's ``SeedSequence`` take 0 <= seed < 2**32, so a negative one is refused at the door
# rather than when the data is loaded.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# The most replicates a population may have: each seed trains a model, and a count beyond this
# is a typo (``seeds: 1000000``), not a study.
MAX_SEEDS = 10_000

# Which split of the data a measure or outcome is read on.
Split = Literal["test", "train"]

# A count of epochs of training done: 0 is the initialization, ``training.epochs`` the end.
Epoch = Annotated[int, Field(ge=0)]


def _ordered_window(v: tuple[int, int]) -> tuple[int, int]:
    if v[0] > v[1]:
        raise ValueError(
            "a window [from, until] with from <= until (epochs of training done when it opens "
            "and when it closes)"
        )
    return v


# ``[a, b]``: from the end of epoch a to the end of epoch b (counting epochs done), i.e. the
# 1-based epochs a + 1 … b; ``[0, epochs]`` is the whole run, ``[a, a]`` is never.
EpochWindow = Annotated[tuple[Epoch, Epoch], AfterValidator(_ordered_window)]


def _distinct_layers(v: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(v)) != len(v):
        raise ValueError("a list of distinct layer names")
    return v


@dataclass(frozen=True)
class LayerNames:
    """Marks a field of layer names, which the runner checks against the real model: each must
    be a layer of it, and hold units (``units``: it has a unit view) or weights (``weights``:
    it is, or holds exactly one, linear or conv layer). Found by this mark, not by field name."""

    holds: Literal["units", "weights"]


# Layer names read through their unit view; empty usually means every unit layer.
UnitLayers = Annotated[tuple[str, ...], LayerNames("units")]
# Layer names whose weights are read (e.g. clustered); empty usually means every unit layer.
WeightLayers = Annotated[tuple[str, ...], LayerNames("weights")]
# The layers a test names: distinct, as each is a part of the hypothesis.
Layers = Annotated[
    tuple[str, ...],
    LayerNames("units"),
    AfterValidator(_distinct_layers),
    Field(json_schema_extra={"uniqueItems": True}),
]

# The union tag of a user's own model or data, picked by the presence of the import-path key.
IMPORT_PATH_TAG = "import_path"
# union field -> the key that names the user's function instead of a built-in ``kind``
IMPORT_PATH_KEYS = {"model": "factory", "data": "loader"}
IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


def hash_by_json(self: BaseModel) -> int:
    # ``kwargs`` is a dict, so the default field-tuple hash would fail; specs are memo keys.
    return hash((type(self).__name__, self.model_dump_json()))


class FromFiles(Frozen):
    """A spec naming files: relative paths resolve against the hypothesis file's folder.

    The loader passes that folder as the validation context ``base_dir``; it is kept as a
    private attribute, so dumps (the lock, the cache recipe) hold the paths as written. A spec
    built without that context resolves against the working directory.
    """

    _base_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _remember_base_dir(self, info: ValidationInfo) -> FromFiles:
        base = (info.context or {}).get("base_dir")
        if base is not None:
            self._base_dir = Path(base)
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def resolve(self, path: str) -> Path:
        """``path`` made absolute against the hypothesis file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


class Checkpointed(FromFiles):
    """A model spec that may name trained weights instead of being trained by falsify.

    ``checkpoint`` is a path template with ``{seed}`` or a list of paths, one per seed, each a
    safetensors file or a ``.pt`` state dict (see :mod:`falsify.models.checkpoint`). Left out of
    dumps when unset, so specs without one keep their cache keys and lock entries.
    """

    checkpoint: str | tuple[str, ...] | None = None
    # Where the units of named layers live, declared in the file (docs/own-models-and-data.md);
    # left out of dumps when empty, so cache keys and locks stay as they were.
    units: UnitViews = Field((), exclude_if=lambda v: not v)

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _path_or_paths(cls, v: object) -> object:
        ok = v is None or isinstance(v, str)
        ok = ok or (isinstance(v, list | tuple) and all(isinstance(p, str) for p in v))
        if not ok:
            raise ValueError("a path template with '{seed}' or a list of paths, one per seed")
        return v

    @model_serializer(mode="wrap")
    def _omit_unset_checkpoint(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if out.get("checkpoint", 0) is None:
            del out["checkpoint"]
        return out
