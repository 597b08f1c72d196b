"""The hypothesis file model: frozen pydantic models, validated once at the door.

A hypothesis file (YAML) names a *population* of trained models, a *test* (one of the shapes of
PRODUCT.md §3) and a *prediction* (direction, smallest effect size of interest, α). Every model
here is frozen and forbids unknown keys, so a typo such as ``alpah:`` is an error, and every
choice between kinds is a discriminated union on ``kind`` so an unknown kind lists the valid ones.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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

from falsify.hypothesis.units import Fill, UnitViews

__all__ = [
    "ENMESHMENT_FIELDS",
    "IMPORT_PATH_KEYS",
    "IMPORT_PATH_TAG",
    "AblationCurveOutcome",
    "AccuracyOutcome",
    "AdversarialAccuracyOutcome",
    "AssociationTest",
    "BetweenConditionsTest",
    "CIFAR10Data",
    "CNNSpec",
    "Checkpointed",
    "ClassSelectivity",
    "ClusterSpecializationTest",
    "ClusterabilityOutcome",
    "CorruptionAccuracyOutcome",
    "DataSpec",
    "DigitsData",
    "DirectionAblationOutcome",
    "EffectiveDimensionalityOutcome",
    "GradientXActivationScore",
    "Hypothesis",
    "LayerConductanceScore",
    "LayerIntegratedGradientsScore",
    "LayerNoiseOutcome",
    "LevelContrast",
    "MLPSpec",
    "MNISTData",
    "MeanSelectivityOutcome",
    "ModelSpec",
    "OutcomePart",
    "Population",
    "Prediction",
    "ReferenceContrast",
    "ResNet20Spec",
    "Source",
    "SyntheticData",
    "TargetedTest",
    "TestSpec",
    "TrainingSpec",
    "TrendContrast",
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
    split_seed: int = Field(0, ge=0)


class SyntheticData(Frozen):
    """A generated task with planted ground truth (see :mod:`falsify.data.synthetic`)."""

    kind: Literal["synthetic"]
    n_samples: int = Field(2000, ge=20)
    n_classes: int = Field(4, ge=2)
    n_features: int = Field(16, ge=2)
    noise: float = Field(0.3, ge=0.0)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)

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


class MLPSpec(Checkpointed):
    """A multilayer perceptron; hidden block ``i`` is named ``hidden{i}`` (post-ReLU output)."""

    kind: Literal["mlp"]
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 64), min_length=1)
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CNNSpec(Checkpointed):
    """A small conv net; block ``i`` is ``conv{i}`` (conv → ReLU → 2×2 max pool, post-ReLU)."""

    kind: Literal["cnn"]
    channels: tuple[Annotated[int, Field(ge=1)], ...] = Field((16, 32), min_length=1)
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
    | Annotated[ResNet20Spec, Tag("resnet20")]
    | Annotated[CNNSpec, Tag("cnn")],
    Discriminator(_kind_or_import_path("factory")),
]


class TrainingSpec(Frozen):
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    # Leavitt & Morcos (2021): loss = CE − α · mean SI; α < 0 discourages class selectivity.
    selectivity_alpha: float = 0.0
    # Layers the selectivity regularizer reads; empty means every unit layer of the model.
    selectivity_layers: tuple[str, ...] = ()
    # Morcos et al. (2018): this fraction of training labels is replaced by random classes.
    label_noise: float = Field(0.0, ge=0.0, le=1.0)
    # Golechha, Cope & Schoots (2024): loss = CE + λ · mean over layers of (1 − C(W, clusters)).
    enmeshment_lambda: float = Field(0.0, ge=0.0)
    # Layers whose weights the enmeshment term clusters; empty means every unit layer.
    enmeshment_layers: tuple[str, ...] = ()
    enmeshment_k: int = Field(4, ge=2)  # bipartite clusters per layer
    # Optimizer steps between re-clusterings; None: once per epoch.
    enmeshment_recluster_every: int | None = Field(None, ge=1)


# Settings that do nothing while ``enmeshment_lambda`` is 0. The cache recipe leaves them out
# then, so every recipe without the term keeps the key it had before the term existed.
ENMESHMENT_FIELDS = (
    "enmeshment_lambda",
    "enmeshment_layers",
    "enmeshment_k",
    "enmeshment_recluster_every",
)


class Population(Frozen):
    """Architecture × dataset × recipe × seeds. Each seed is one replicate (one trained model).

    ``conditions`` crosses recipe fields (dotted, e.g. ``training.selectivity_alpha``) with
    lists of values into a grid; every condition is trained at the same seeds. It is checked
    and expanded by :mod:`falsify.hypothesis.conditions`.
    """

    data: DataSpec
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    seeds: tuple[int, ...]
    conditions: dict[str, tuple[Any, ...]] = Field(default_factory=dict)

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
    epsilon: float = Field(1e-7, gt=0.0)


class LayerConductanceScore(Frozen):
    """Mean |layer conductance| of each unit toward the true class (Dhamdhere et al. 2019)."""

    kind: Literal["layer_conductance"]
    n_steps: int = Field(32, ge=2)
    baseline: Literal["zero", "mean"] = "zero"


class LayerIntegratedGradientsScore(Frozen):
    """Mean |layer integrated gradients| of each unit toward the true class (Sundararajan 2017)."""

    kind: Literal["layer_integrated_gradients"]
    n_steps: int = Field(32, ge=2)
    baseline: Literal["zero", "mean"] = "zero"


class GradientXActivationScore(Frozen):
    """Mean |activation × gradient of the true-class logit| of each unit (Shrikumar 2017)."""

    kind: Literal["gradient_x_activation"]


UnitMeasure = Annotated[
    ClassSelectivity
    | LayerConductanceScore
    | LayerIntegratedGradientsScore
    | GradientXActivationScore,
    Field(discriminator="kind"),
]


class UnitAblationEffect(Frozen):
    """Damage done by ablating each unit on its own (Morcos et al. 2018)."""

    kind: Literal["unit_ablation"]
    value: Fill = "zero"
    metric: Literal["accuracy_drop", "loss_increase"] = "accuracy_drop"


UnitEffect = UnitAblationEffect


# --- tests ------------------------------------------------------------------------------------


def _distinct_layers(v: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(v)) != len(v):
        raise ValueError("a list of distinct layer names")
    return v


# The layers a test names: distinct, as each is a part of the hypothesis.
Layers = Annotated[tuple[str, ...], AfterValidator(_distinct_layers)]


class AssociationTest(Frozen):
    """Per-unit x vs per-unit y within each model, pooled over models (PRODUCT.md §3)."""

    kind: Literal["association"]
    layers: Layers = Field(min_length=1)
    x: UnitMeasure
    y: UnitEffect
    correlation: Literal["spearman", "pearson", "kendall"] = "spearman"
    pooling: Literal["t", "random_effects"] = "t"
    split: Literal["test", "train"] = "test"


class TargetedTest(Frozen):
    """Ablate the k units ranked highest by a score vs k random units (PRODUCT.md §3).

    Per replicate, layer, score and k: the effect of ablating the top-k units by the score,
    minus the mean effect of ``draws`` random groups of k units of the same layer. The
    differences are pooled over replicates by a one-sample t; every layer × score × k is one
    part of the hypothesis.
    """

    kind: Literal["targeted"]
    layers: Layers = Field(min_length=1)
    scores: tuple[UnitMeasure, ...]
    k: tuple[int | float, ...]
    draws: int = Field(20, ge=2)
    control_seed: int = 0
    value: Fill = "zero"
    metric: Literal["accuracy_drop", "loss_increase"] = "accuracy_drop"
    split: Literal["test", "train"] = "test"

    @field_validator("scores")
    @classmethod
    def _distinct_scores(cls, v: tuple[UnitMeasure, ...]) -> tuple[UnitMeasure, ...]:
        # Checked here rather than by min_length, which would add a second, misleading error
        # line whenever one score is invalid.
        if not v:
            raise ValueError("a list of at least one per-unit score")
        kinds = [s.kind for s in v]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"scores of distinct kinds (they name the parts), got {kinds}")
        return v

    @field_validator("k", mode="before")
    @classmethod
    def _counts_or_fractions(cls, v: object) -> object:
        items = v if isinstance(v, list | tuple) else [v]
        if not items:
            raise ValueError("a list of at least one k")
        for item in items:
            ok = (isinstance(item, int) and not isinstance(item, bool) and item >= 1) or (
                isinstance(item, float) and 0.0 < item < 1.0
            )
            if not ok:
                raise ValueError(
                    "a list of unit counts (integers ≥ 1) or fractions of the layer "
                    f"(0 < k < 1); {item!r} is neither"
                )
        if len(set(items)) != len(items):
            raise ValueError("a list of distinct k values")
        return tuple(items)


class ClusterSpecializationTest(Frozen):
    """Do a layer's weight clusters specialize in classes more than random groups of units?

    Golechha, Cope & Schoots (2024); modularity.md. Per replicate and layer: co-cluster the
    layer's incoming weights into ``k`` bipartite clusters, ablate each cluster's units and
    take the specialization of its per-class accuracy drops (``statistic``: the share of the
    damage on the ``m`` most damaged classes, or the Gini coefficient), minus the mean
    specialization of ``draws`` random groups of the same size. The replicate's difference is
    the mean over its clusters; differences are pooled over replicates by a one-sample t (the
    targeted-vs-control design of PRODUCT.md §3); every layer is one part.
    """

    kind: Literal["cluster_specialization"]
    layers: Layers = Field(min_length=1)
    k: int = Field(4, ge=2)
    statistic: Literal["top_share", "gini"] = "top_share"
    m: int = Field(1, ge=1)  # top_share only: the number of most damaged classes
    draws: int = Field(20, ge=2)
    control_seed: int = 0
    value: Fill = "zero"
    split: Literal["test", "train"] = "test"


# --- model-level outcomes (one number per trained model) ---------------------------------------


class AccuracyOutcome(Frozen):
    """Accuracy of each model; on ``train`` it is scored against the labels it was trained on."""

    kind: Literal["accuracy"]
    split: Literal["test", "train"] = "test"


class MeanSelectivityOutcome(Frozen):
    """Mean over layers of the mean class selectivity index over units (Leavitt & Morcos 2021)."""

    kind: Literal["mean_selectivity"]
    layers: tuple[str, ...] = ()  # empty: every unit layer of the model
    split: Literal["test", "train"] = "test"


class AblationCurveOutcome(Frozen):
    """Area under the cumulative random-order ablation curve (Morcos et al. 2018).

    Units of each layer are ablated one more at a time in ``orders`` random orders; the area
    under accuracy / intact accuracy vs fraction ablated is 1 for a model that ignores the layer.
    """

    kind: Literal["ablation_auc"]
    layers: tuple[str, ...] = ()  # empty: every unit layer; the outcome is the mean over layers
    orders: int = Field(5, ge=1)
    value: Fill = "zero"
    split: Literal["test", "train"] = "test"
    seed: int = 0  # with the replicate's seed, fixes the random orders


class DirectionAblationOutcome(Frozen):
    """Area under the curve of cumulative ablation of random orthonormal directions of a layer
    (Morcos et al. 2018); 1 for a model that ignores the layer."""

    kind: Literal["direction_ablation_auc"]
    layers: tuple[str, ...] = ()
    orders: int = Field(3, ge=1)  # random bases per model
    split: Literal["test", "train"] = "test"
    seed: int = 0


class LayerNoiseOutcome(Frozen):
    """Area under accuracy / intact accuracy vs the scale of Gaussian noise added to a layer,
    each unit's noise scaled by its own standard deviation (Morcos et al. 2018)."""

    kind: Literal["noise_auc"]
    layers: tuple[str, ...] = ()
    scales: tuple[Annotated[float, Field(ge=0.0)], ...] = Field(
        (0.0, 0.5, 1.0, 1.5, 2.0), min_length=2
    )
    draws: int = Field(3, ge=1)  # noise draws per scale
    split: Literal["test", "train"] = "test"
    seed: int = 0

    @field_validator("scales")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("an increasing list of noise scales")
        return v


class CorruptionAccuracyOutcome(Frozen):
    """Mean accuracy over naturalistic corruptions × severities (Hendrycks & Dietterich 2019)."""

    kind: Literal["corruption_accuracy"]
    corruptions: tuple[Literal["gaussian_noise", "blur", "contrast"], ...] = Field(
        ("gaussian_noise", "blur", "contrast"), min_length=1
    )
    severities: tuple[Annotated[int, Field(ge=0, le=5)], ...] = Field((1, 2, 3, 4, 5), min_length=1)
    split: Literal["test", "train"] = "test"
    seed: int = 0


class AdversarialAccuracyOutcome(Frozen):
    """Accuracy under an L∞ attack: FGSM (Goodfellow et al. 2015) or PGD (Madry et al. 2018)."""

    kind: Literal["adversarial_accuracy"]
    attack: Literal["fgsm", "pgd"] = "fgsm"
    epsilon: float = Field(gt=0.0)
    steps: int = Field(10, ge=1)  # PGD only
    step_size: float | None = Field(None, gt=0.0)  # PGD only; default 2.5 · ε / steps
    bounds: tuple[float, float] | None = (0.0, 1.0)  # the data's range; null: no clipping
    split: Literal["test", "train"] = "test"
    seed: int = 0


class EffectiveDimensionalityOutcome(Frozen):
    """Effective dimensionality of the layers' representations, mean over layers."""

    kind: Literal["effective_dimensionality"]
    measure: Literal["participation_ratio", "pcs_95"] = "participation_ratio"
    layers: tuple[str, ...] = ()
    split: Literal["test", "train"] = "test"


class ClusterabilityOutcome(Frozen):
    """Clusterability of the named layers' weights, mean over layers (Golechha, Cope & Schoots
    2024; modularity.md): spectral co-clustering of |W| into ``k`` bipartite clusters, then the
    share of the squared weight inside them; optionally minus a baseline.

    ``baseline``: ``none`` (C itself); ``random_partition`` (C − its expectation under a random
    partition with the co-clustering's cluster sizes, ≈ 1/k); ``shuffled`` (C − the mean C of
    ``shuffle_draws`` edge-shuffled copies of the same weights, each co-clustered afresh: the
    null that includes the co-clustering's own search, which the random partition does not).
    """

    kind: Literal["clusterability"]
    layers: tuple[str, ...] = ()  # empty: every unit layer (the linear layer feeding it)
    k: int = Field(4, ge=2)
    baseline: Literal["none", "random_partition", "shuffled"] = "none"
    shuffle_draws: int = Field(5, ge=1)
    seed: int = 0  # with the replicate's seed, fixes the shuffles


ModelOutcome = Annotated[
    ClusterabilityOutcome
    | AccuracyOutcome
    | MeanSelectivityOutcome
    | AblationCurveOutcome
    | DirectionAblationOutcome
    | LayerNoiseOutcome
    | CorruptionAccuracyOutcome
    | AdversarialAccuracyOutcome
    | EffectiveDimensionalityOutcome,
    Field(discriminator="kind"),
]


class ReferenceContrast(Frozen):
    """Each condition against the reference condition, paired by seed: one part per contrast."""

    kind: Literal["reference"]
    reference: dict[str, Any]  # grid field -> the reference value, for every grid field


class TrendContrast(Frozen):
    """The slope of the outcome over an ordered grid of one field: one part."""

    kind: Literal["trend"]
    factor: str  # the grid field, e.g. training.selectivity_alpha
    scale: Literal["value", "rank"] = "value"  # slope per unit of the value, or per grid step


class LevelContrast(Frozen):
    """The outcome's mean in each listed condition against 0, over seeds: one part per
    condition. Meant for an outcome that is already a difference from its own baseline (e.g.
    clusterability minus its shuffled-weights baseline)."""

    kind: Literal["level"]
    # each entry: grid field -> value, for every grid field; empty: every condition
    conditions: tuple[dict[str, Any], ...] = ()


Comparison = Annotated[
    ReferenceContrast | TrendContrast | LevelContrast, Field(discriminator="kind")
]


class OutcomePart(Frozen):
    """One of several outcomes of a between-conditions test, with its own predicted direction
    and, optionally, its own comparison (default: the test's ``compare``)."""

    name: str = Field(min_length=1)
    outcome: ModelOutcome
    direction: Literal["positive", "negative", "none"] | None = None  # default: the prediction's
    compare: Comparison | None = None


class BetweenConditionsTest(Frozen):
    """A model-level outcome compared across the conditions of a grid (PRODUCT.md §3).

    Either one ``outcome``, or several named ``outcomes`` (each comparison of each outcome is
    a part; all parts are adjusted together).
    """

    kind: Literal["between_conditions"]
    outcome: ModelOutcome | None = None
    outcomes: tuple[OutcomePart, ...] = ()
    compare: Comparison
    model: Literal["ols", "mixed"] = "ols"

    # That exactly one of outcome / outcomes is given, with distinct names, is checked with
    # line-aware errors by falsify.runner.between.validate_between before anything is trained.

    def named_outcomes(self) -> list[OutcomePart]:
        """The outcomes as parts; a single ``outcome`` is one unnamed part."""
        if self.outcome is not None:
            return [OutcomePart(name=self.outcome.kind, outcome=self.outcome)]
        return list(self.outcomes)


TestSpec = Annotated[
    AssociationTest | TargetedTest | BetweenConditionsTest | ClusterSpecializationTest,
    Field(discriminator="kind"),
]


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
