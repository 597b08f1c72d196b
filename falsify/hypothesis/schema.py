"""The hypothesis file model: frozen pydantic models, validated once at the door.

A hypothesis file (YAML) names a *population* of trained models, a *test* (one of the shapes of
PRODUCT.md §3) and a *prediction* (direction, smallest effect size of interest, α). Every model
here is frozen and forbids unknown keys, so a typo such as ``alpah:`` is an error, and every
choice between kinds is a discriminated union on ``kind`` so an unknown kind lists the valid ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "IMPORT_PATH_KEYS",
    "IMPORT_PATH_TAG",
    "AssociationTest",
    "CIFAR10Data",
    "Checkpointed",
    "ClassSelectivity",
    "DataSpec",
    "DigitsData",
    "Hypothesis",
    "MLPSpec",
    "MNISTData",
    "ModelSpec",
    "Population",
    "Prediction",
    "ResNet20Spec",
    "Source",
    "SyntheticData",
    "TestSpec",
    "TrainingSpec",
    "UnitAblationEffect",
    "UserData",
    "UserModel",
]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


# The union tag of a user's own model or data, picked by the presence of the import-path key.
IMPORT_PATH_TAG = "import_path"
# union field -> the key that names the user's function instead of a built-in ``kind``
IMPORT_PATH_KEYS = {"model": "factory", "data": "loader"}
_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


def _kind_or_import_path(key: str):
    """Callable discriminator: ``kind`` picks a built-in, else the presence of ``key`` the user's.

    ``kind`` wins when both are given, so the error is about the one key that does not belong.
    """

    def tag(v: Any) -> str | None:
        if isinstance(v, dict):
            return v.get("kind", IMPORT_PATH_TAG if key in v else None)
        return IMPORT_PATH_TAG if hasattr(v, key) else getattr(v, "kind", None)

    return tag


def _hash_by_json(self: BaseModel) -> int:
    # ``kwargs`` is a dict, so the default field-tuple hash would fail; specs are memo keys.
    return hash((type(self).__name__, self.model_dump_json()))


# --- data -------------------------------------------------------------------------------------


class DigitsData(Frozen):
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes)."""

    kind: Literal["digits"]
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0


class SyntheticData(Frozen):
    """A generated task with planted ground truth (see :mod:`falsify.data.synthetic`)."""

    kind: Literal["synthetic"]
    n_samples: int = Field(2000, ge=20)
    n_classes: int = Field(4, ge=2)
    n_features: int = Field(16, ge=2)
    noise: float = Field(0.3, ge=0.0)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = 0

    @model_validator(mode="after")
    def _enough_features(self) -> SyntheticData:
        if self.n_features < self.n_classes:
            raise ValueError(
                f"n_features at least n_classes ({self.n_classes}) so that each class has a feature"
            )
        return self


class _StandardData(FromFiles):
    root: str = Field(min_length=1)
    limit_train: int | None = Field(None, ge=10)
    limit_test: int | None = Field(None, ge=10)
    subset_seed: int = 0


class MNISTData(_StandardData):
    """MNIST (LeCun et al. 1998) from its idx files in ``root`` (plain or ``.gz``).

    ``limit_train`` / ``limit_test`` keep a class-stratified subset fixed by ``subset_seed``.
    """

    kind: Literal["mnist"]


class CIFAR10Data(_StandardData):
    """CIFAR-10 (Krizhevsky 2009), binary version (``data_batch_1.bin`` …) in ``root``."""

    kind: Literal["cifar10"]


class UserData(FromFiles):
    """The user's own data: ``loader`` is ``"package.module:function"``, called with ``kwargs``.

    The function returns ``(x_train, y_train, x_test, y_test)`` tensors or a pair of
    ``torch.utils.data.Dataset`` (train, test) whose items are ``(x, y)``.
    """

    loader: str = Field(pattern=_IMPORT_PATH)
    kwargs: dict[str, Any] = {}

    @property
    def kind(self) -> str:
        return "loader"

    __hash__ = _hash_by_json


DataSpec = Annotated[
    Annotated[UserData, Tag(IMPORT_PATH_TAG)]
    | Annotated[DigitsData, Tag("digits")]
    | Annotated[SyntheticData, Tag("synthetic")]
    | Annotated[MNISTData, Tag("mnist")]
    | Annotated[CIFAR10Data, Tag("cifar10")],
    Discriminator(_kind_or_import_path("loader")),
]


# --- models -----------------------------------------------------------------------------------


class Checkpointed(FromFiles):
    """A model spec that may name trained weights instead of being trained by falsify.

    ``checkpoint`` is a path template with ``{seed}`` or a list of paths, one per seed, each a
    safetensors file or a ``.pt`` state dict (see :mod:`falsify.models.checkpoint`). Left out of
    dumps when unset, so specs without one keep their cache keys and lock entries.
    """

    checkpoint: str | tuple[str, ...] | None = None

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


class MLPSpec(Checkpointed):
    """A multilayer perceptron; hidden block ``i`` is named ``hidden{i}`` (post-ReLU output)."""

    kind: Literal["mlp"]
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 64), min_length=1)
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ResNet20Spec(Checkpointed):
    """CIFAR-style ResNet-20 (He et al. 2016, §4.2); see :mod:`falsify.models.resnet`."""

    kind: Literal["resnet20"]
    width: int = Field(16, ge=1)  # channels of the first stage; the paper's 16 / 32 / 64


class UserModel(Checkpointed):
    """The user's own model: ``factory`` is ``"package.module:function"`` returning an
    ``nn.Module``, called with ``kwargs``."""

    factory: str = Field(pattern=_IMPORT_PATH)
    kwargs: dict[str, Any] = {}

    @property
    def kind(self) -> str:
        return "factory"

    __hash__ = _hash_by_json


ModelSpec = Annotated[
    Annotated[UserModel, Tag(IMPORT_PATH_TAG)]
    | Annotated[MLPSpec, Tag("mlp")]
    | Annotated[ResNet20Spec, Tag("resnet20")],
    Discriminator(_kind_or_import_path("factory")),
]


class TrainingSpec(Frozen):
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class Population(Frozen):
    """Architecture × dataset × recipe × seeds. Each seed is one replicate (one trained model)."""

    data: DataSpec
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    seeds: tuple[int, ...]

    @field_validator("seeds", mode="before")
    @classmethod
    def _expand_seeds(cls, v: object) -> object:
        if isinstance(v, bool):
            return v  # let pydantic reject it as not an int
        if isinstance(v, int):
            if v < 2:
                raise ValueError(
                    "at least 2 seeds: the replicate is the trained model, and one model gives "
                    "no confidence interval"
                )
            return tuple(range(v))
        return v

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2:
            raise ValueError(
                "a list of at least 2 seeds: the replicate is the trained model, and one model "
                "gives no confidence interval"
            )
        if len(set(v)) != len(v):
            raise ValueError("a list of distinct seeds (a repeated seed is the same model twice)")
        return v


# --- measures and interventions ----------------------------------------------------------------


class ClassSelectivity(Frozen):
    """Class selectivity index of each unit (Morcos et al. 2018), PRODUCT.md §6."""

    kind: Literal["class_selectivity"]
    epsilon: float = Field(1e-7, ge=0.0)


UnitMeasure = ClassSelectivity


class UnitAblationEffect(Frozen):
    """Damage done by ablating each unit on its own (Morcos et al. 2018)."""

    kind: Literal["unit_ablation"]
    value: Literal["zero", "mean"] = "zero"
    metric: Literal["accuracy_drop", "loss_increase"] = "accuracy_drop"


UnitEffect = UnitAblationEffect


# --- tests ------------------------------------------------------------------------------------


class AssociationTest(Frozen):
    """Per-unit x vs per-unit y within each model, pooled over models (PRODUCT.md §3)."""

    kind: Literal["association"]
    layers: tuple[str, ...] = Field(min_length=1)
    x: UnitMeasure
    y: UnitEffect
    correlation: Literal["spearman", "pearson", "kendall"] = "spearman"
    pooling: Literal["t", "random_effects"] = "t"
    split: Literal["test", "train"] = "test"

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a list of distinct layer names")
        return v


TestSpec = AssociationTest


# --- the claim ----------------------------------------------------------------------------------


class Prediction(Frozen):
    """What the claim predicts, and how the verdict is decided (PRODUCT.md §4)."""

    direction: Literal["positive", "negative", "none"]
    sesoi: float = Field(ge=0.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    combine: Literal["all", "any"] = "all"
    adjust: Literal["holm", "bonferroni", "none"] = "holm"


class Source(Frozen):
    citation: str
    finding: str | None = None
    url: str | None = None


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class Hypothesis(Frozen):
    id: str
    claim: str = Field(min_length=1)
    source: Source | None = None
    population: Population
    test: TestSpec
    prediction: Prediction

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("letters, digits, '_' and '-' only (it names the report file)")
        return v
