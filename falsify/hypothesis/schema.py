"""The hypothesis file model: frozen pydantic models, validated once at the door.

A hypothesis file (YAML) names a *population* of trained models, a *test* (one of the shapes of
PRODUCT.md §3) and a *prediction* (direction, smallest effect size of interest, α). Every model
is frozen and forbids unknown keys, so a typo such as ``alpah:`` is an error. Each choice between
kinds (``data``, ``model``, ``test``, and inside a test its measures, outcomes and contrasts) is
a discriminated union on ``kind`` built from the kinds' registries
(:mod:`falsify.hypothesis.kinds`), so an unknown kind lists the valid ones, plugins included.

The built-in kinds live in their own modules (e.g. ``falsify.models.mlp.MLPSpec``,
``falsify.shapes.targeted.TargetedTest``); docs/extending.md lists them.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from falsify.errors import FalsifyDeprecationWarning
from falsify.hypothesis.kinds import (
    ARCHITECTURES,
    DATASETS,
    REGULARIZERS,
    SHAPES,
    ArchitectureKind,
    Comparison,
    DataKind,
    Kinds,
    ModelOutcome,
    RegularizerKind,
    ShapeKind,
    UnitEffect,
    UnitMeasure,
)
from falsify.hypothesis.types import MAX_SEEDS, Epoch, Frozen, Seed

__all__ = [
    "Comparison",
    "DataSpec",
    "Hypothesis",
    "Inclusion",
    "ModelOutcome",
    "ModelSpec",
    "Population",
    "Prediction",
    "Source",
    "TestSpec",
    "TrainingSpec",
    "UnitEffect",
    "UnitMeasure",
]

DataSpec = Annotated[DataKind, Kinds(DATASETS, import_key="loader")]
ModelSpec = Annotated[ArchitectureKind, Kinds(ARCHITECTURES, import_key="factory")]
TestSpec = Annotated[ShapeKind, Kinds(SHAPES)]


def _distinct_epochs(v: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(v)) != len(v):
        raise ValueError("a list of distinct epochs (a repeated epoch is the same checkpoint)")
    return v


def _block(tag: str) -> Any:
    """A field of ``training`` holding the block of the regularizer kind ``tag`` (its defaults
    when absent); the kind is looked up in the registry when first needed."""
    return Field(default_factory=lambda: REGULARIZERS[tag]())


class TrainingSpec(Frozen):
    """How each replicate is trained (docs/file-format.md; AdamW and warm-up for the
    transformers of docs/sequence-models.md). A ``batch_size`` at least the training set's size
    trains full-batch."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    epochs: int = Field(30, ge=1)
    # Optimizer steps to train for instead of ``epochs`` (new mini-batch orders as needed).
    steps: int | None = Field(None, ge=1)
    # The learning rate rises linearly from lr / warmup_steps to lr over these first steps.
    warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    # Morcos et al. (2018): this fraction of training labels is replaced by random classes.
    label_noise: float = Field(0.0, ge=0.0, le=1.0)
    # A control population (falsify.models.controls, docs/methods.md): the same architecture
    # untrained, its trained weights shuffled within each tensor, or trained on a seeded
    # permutation of the training labels.
    control: Literal["none", "untrained", "shuffled", "permuted_labels"] = "none"
    # The training-time regularizers, one block each (falsify.models.regularizers.Selectivity,
    # falsify.models.enmeshment.Enmeshment); a block at its defaults is off.
    selectivity: Annotated[RegularizerKind, Kinds(REGULARIZERS, only="selectivity")] = _block(
        "selectivity"
    )
    enmeshment: Annotated[RegularizerKind, Kinds(REGULARIZERS, only="enmeshment")] = _block(
        "enmeshment"
    )
    # After these many epochs the model is also cached, as a checkpoint an outcome can be read
    # at (``at_epoch``); 0 is the initialization. They leave the trained weights as they are.
    checkpoint_epochs: Annotated[
        tuple[Epoch, ...],
        AfterValidator(_distinct_epochs),
        Field(json_schema_extra={"uniqueItems": True}),
    ] = ()

    # Fields added after the first cache keys -> their default: left out of a recipe while at
    # it, so every recipe written before them keeps its key.
    LATER_FIELDS: ClassVar[dict[str, object]] = {
        "steps": None,
        "warmup_steps": 0,
        "control": "none",
    }
    # Fields that do not change the trained weights: never part of a recipe.
    NOT_IN_RECIPE: ClassVar[tuple[str, ...]] = ("checkpoint_epochs",)

    @classmethod
    def blocks(cls) -> dict[str, type[RegularizerKind]]:
        """Field name -> the regularizer kind whose block it holds."""
        out: dict[str, type[RegularizerKind]] = {}
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, Kinds) and meta.registry is REGULARIZERS:
                    (out[name],) = meta.members()
        return out

    def regularizers(self) -> tuple[RegularizerKind, ...]:
        """Every regularizer block, active or not, in field order."""
        return tuple(getattr(self, name) for name in self.blocks())

    @model_validator(mode="after")
    def _within_the_run(self) -> TrainingSpec:
        """Windows and checkpoints count epochs of this run: within ``epochs``, and only when
        the run is counted in epochs (not ``steps``). Each problem is located at its field."""
        placed: list[tuple[tuple[str | int, ...], object]] = [
            ((name, "window"), block.window)
            for name, block in zip(self.blocks(), self.regularizers(), strict=True)
            if block.window is not None
        ]
        placed += [(("checkpoint_epochs", i), e) for i, e in enumerate(self.checkpoint_epochs)]
        errors: list[InitErrorDetails] = []
        for loc, value in placed:
            last = max(value) if isinstance(value, tuple) else value
            if self.steps is not None:
                problem = (
                    "absent while 'steps' is set (windows and checkpoints count epochs; set "
                    "'epochs' instead)"
                )
            elif isinstance(last, int) and last > self.epochs:
                problem = (
                    f"a window within the run's {self.epochs} epochs ([from, until] with until "
                    f"<= {self.epochs})"
                    if isinstance(value, tuple)
                    else f"an epoch within the run's {self.epochs} epochs (0 to {self.epochs})"
                )
            else:
                continue
            found = list(value) if isinstance(value, tuple) else value
            errors.append(
                InitErrorDetails(
                    type="value_error", loc=loc, input=found, ctx={"error": ValueError(problem)}
                )
            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """The deprecated flat names (``selectivity_alpha``, ``enmeshment_lambda``, …) moved
        into their blocks, with one warning naming them all."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        renamed: list[str] = []
        for name, kind in cls.blocks().items():
            for old, new in kind.legacy_fields.items():
                if old not in data:
                    continue
                block = data.get(name, {})
                if isinstance(block, BaseModel):
                    block = block.model_dump(exclude_unset=True)
                if not isinstance(block, dict):
                    continue  # the block itself is invalid: pydantic says so
                if new in block:
                    raise ValueError(
                        f"given '{old}' (deprecated) or '{name}.{new}', not both: they are one "
                        "setting"
                    )
                data[name] = {**block, new: data.pop(old)}
                renamed.append(f"'{old}' (now '{name}.{new}')")
        if renamed:
            warnings.warn(
                FalsifyDeprecationWarning(
                    f"deprecated names in 'training': {', '.join(renamed)}; see docs/file-format.md"
                ),
                stacklevel=2,
            )
        return data


_SEEDS_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 2, "maximum": MAX_SEEDS},
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
            "minItems": 2,
            "maxItems": MAX_SEEDS,
            "uniqueItems": True,
        },
    ],
    "title": "Seeds",
}

# Dotted recipe field -> a non-empty list of values (the nested spelling is not offered).
_GRID_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "array", "minItems": 1},
    "title": "Conditions",
}


class Inclusion(Frozen):
    """A pre-registered rule for which trained replicates enter the statistics.

    A replicate that fails it is listed in the report with the reason and left out of every
    part; in a grid, its seed leaves every condition, as comparisons pair models by seed
    (docs/file-format.md, "Replicates that did not learn"). At its defaults every replicate is
    included. Read by :func:`falsify.runner.replicates.screen_replicates`.
    """

    # Leave out a replicate whose test accuracy is below this.
    min_test_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    # Leave out a replicate whose test accuracy is not above chance (a one-sided binomial test
    # against the majority-class rate of the test labels; docs/file-format.md).
    above_chance: bool = False

    @property
    def active(self) -> bool:
        return self != Inclusion()


class Population(Frozen):
    """Architecture × dataset × recipe × seeds. Each seed is one replicate (one trained model).

    ``conditions`` crosses recipe fields (dotted, e.g. ``training.selectivity.alpha``) with
    lists of values into a grid; every condition is trained at the same seeds. It is checked
    and expanded by :mod:`falsify.hypothesis.conditions`.
    """

    data: DataSpec
    model: ModelSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    # A count N (seeds 0..N-1) or a list; the JSON Schema says both (docs/file-format.md).
    seeds: Annotated[tuple[Seed, ...], WithJsonSchema(_SEEDS_SCHEMA)]
    conditions: Annotated[dict[str, tuple[Any, ...]], WithJsonSchema(_GRID_SCHEMA)] = Field(
        default_factory=dict
    )
    # Which trained replicates enter the statistics; not part of the recipe (cache keys) and
    # left out of dumps at its defaults, so lock entries stay as they were.
    include: Inclusion = Field(default_factory=Inclusion, exclude_if=lambda v: not v.active)

    @field_validator("conditions", mode="before")
    @classmethod
    def _flatten_conditions(cls, v: object) -> object:
        # ``training: {label_noise: [0, 0.5]}`` (what ``--set population.conditions.training.
        # label_noise=[0,0.5]`` builds) is the same grid as ``training.label_noise: [0, 0.5]``.
        if not isinstance(v, dict):
            return v
        flat: dict[object, object] = {}

        def walk(prefix: str, node: dict[object, object]) -> None:
            for key, value in node.items():
                name = f"{prefix}.{key}" if prefix else key
                if isinstance(value, dict):
                    walk(str(name), value)
                else:
                    flat[name] = value

        walk("", v)
        return flat

    @field_validator("conditions")
    @classmethod
    def _grid_values(cls, v: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"a non-empty list of values for {key!r}")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _expand_seeds(cls, v: object) -> object:
        if isinstance(v, bool):
            return v  # let pydantic reject it as not an int
        if isinstance(v, int):
            if v > MAX_SEEDS:  # before ``range``: ``seeds: 10**12`` must not build a tuple
                raise ValueError(f"at most {MAX_SEEDS:,} seeds (each trains one model)")
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
        if len(v) > MAX_SEEDS:
            raise ValueError(
                f"a list of at most {MAX_SEEDS:,} seeds (each trains one model). Got "
                f"{len(v):,} seeds"
            )
        if len(set(v)) != len(v):
            raise ValueError("a list of distinct seeds (a repeated seed is the same model twice)")
        return v


# --- the claim ----------------------------------------------------------------------------------


class Prediction(Frozen):
    """What the claim predicts, and how the verdict is decided (PRODUCT.md §4)."""

    direction: Literal["positive", "negative", "none"]
    sesoi: float = Field(ge=0.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    combine: Literal["all", "any"] = "all"
    adjust: Literal["holm", "bonferroni", "none"] = "holm"
    # How the CI and p-values come from the replicates (docs/methods.md): Student's t, a BCa
    # bootstrap, or an exact sign-flip (permutation) test.
    method: Literal["t", "bootstrap", "permutation"] = "t"


class Source(Frozen):
    citation: str
    finding: str | None = None
    url: str | None = None


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class Hypothesis(Frozen):
    id: str = Field(json_schema_extra={"pattern": _ID.pattern})
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
