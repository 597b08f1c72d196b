"""One registry per slot of kinds; the file format's unions are built from them.

A *kind* is one thing a hypothesis file can name with ``kind:`` — a dataset, an architecture,
a per-unit measure, a per-unit effect, a model-level outcome, a contrast, a test shape — or, for
a training-time regularizer, by the key of its block (``training: {selectivity: {...}}``). Each kind
is one class, in one module, that is at once the spec (a frozen pydantic model: the fields a file
may set) and the implementation (its methods), and declares its display ``label``, the ``docs``
page that describes it and its capabilities as class variables (captum's one class per method
that declares its own name and capabilities). A kind registers itself with :func:`register`.

Built-in kinds live in the modules of :data:`HOME_PACKAGES`; third-party kinds arrive through a
Python entry point in the slot's group (``falsify.unit_measures``, …; see docs/extending.md)
whose value names a module or a kind class. Both are registered by the same :func:`register`,
so a plugin is validated exactly like a built-in. The unions are assembled when a file is first
validated (every model defers building its schema), after :func:`load_kinds` has imported the
built-ins and the plugins.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from collections.abc import Iterator
from importlib import metadata
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Discriminator, Field, GetCoreSchemaHandler, Tag, field_validator
from pydantic_core import CoreSchema

from falsify.errors import FalsifyError
from falsify.hypothesis.types import IMPORT_PATH_TAG, Checkpointed, Epoch, EpochWindow, Frozen

__all__ = [
    "ARCHITECTURES",
    "CONTRASTS",
    "DATASETS",
    "HOME_PACKAGES",
    "OUTCOMES",
    "REGISTRIES",
    "REGULARIZERS",
    "SHAPES",
    "UNIT_EFFECTS",
    "UNIT_MEASURES",
    "ArchitectureKind",
    "Comparison",
    "ContrastKind",
    "DataKind",
    "Kind",
    "Kinds",
    "ModelOutcome",
    "OutcomeKind",
    "Registry",
    "RegularizerKind",
    "ShapeKind",
    "UnitEffect",
    "UnitEffectKind",
    "UnitMeasure",
    "UnitMeasureKind",
    "check_against_data",
    "kinds_in",
    "load_kinds",
    "register",
]

# The packages whose modules hold the built-in kinds; every module in them is imported once
# by :func:`load_kinds`, so a new built-in kind is a new module and nothing else.
HOME_PACKAGES = (
    "falsify.data",
    "falsify.models",
    "falsify.measures",
    "falsify.interventions",
    "falsify.shapes",
)

_CAPABILITY_TYPES = (bool, int, str)


class Kind(Frozen):
    """Base of every kind. Subclasses set ``kind: Literal["name"]`` and the class variables."""

    slot: ClassVar[str] = ""  # set by each slot's base class
    label: ClassVar[str] = ""  # how reports and figures name it
    docs: ClassVar[str] = ""  # the docs page (relative to the repository) that describes it
    # The fields beyond ``kind`` that make a valid instance, for the contract tests.
    example: ClassVar[dict[str, Any]] = {}
    # The key that names a user's function instead of ``kind`` (user data and models).
    import_path_key: ClassVar[str | None] = None

    @classmethod
    def tag(cls) -> str:
        """The ``kind:`` value that names this class in a file."""
        if cls.import_path_key is not None:
            return IMPORT_PATH_TAG
        field = cls.model_fields.get("kind")
        args = typing.get_args(field.annotation) if field is not None else ()
        if field is None or typing.get_origin(field.annotation) is not Literal or len(args) != 1:
            raise FalsifyError(
                f"The kind class {cls.__module__}.{cls.__qualname__} must declare "
                "kind: Literal['its-name'] (one string)."
            )
        return str(args[0])

    @classmethod
    def capabilities(cls) -> dict[str, object]:
        """The class variables a slot declares as capabilities, with this kind's values."""
        return {name: getattr(cls, name) for name in CAPABILITIES.get(cls.slot, ())}

    def describe(self) -> str:
        """How reports name this instance: ``label``, or with the settings that change it."""
        return self.label

    def check_data(self, data: Any, loc: tuple[str | int, ...]) -> None:
        """Checks against the loaded dataset before training (e.g. class indices within
        ``data.n_classes``); raise :class:`~falsify.errors.LocatedError` under ``loc``, this
        kind's place in the file. Default: none. Called by :func:`check_against_data`."""


def kinds_in(
    spec: object, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Kind]]:
    """``(location, kind)`` of ``spec`` itself when it is a kind, then of every kind anywhere in
    its fields, depth first."""
    if isinstance(spec, Kind):
        yield loc, spec
    for name in getattr(type(spec), "model_fields", {}):
        value = getattr(spec, name)
        items = enumerate(value) if isinstance(value, tuple | list) else [(None, value)]
        for i, item in items:
            if hasattr(type(item), "model_fields"):
                yield from kinds_in(item, (*loc, name) if i is None else (*loc, name, i))


def check_against_data(spec: object, data: Any, loc: tuple[str | int, ...]) -> None:
    """:meth:`Kind.check_data` of every kind anywhere in ``spec`` (``spec`` itself included),
    each with its location; the runner calls it on the test before training."""
    for where, kind in kinds_in(spec, loc):
        kind.check_data(data, where)


# --- the slots -----------------------------------------------------------------------------------
# Each base documents the method its kinds implement. Arguments are torch objects; the
# annotations are strings (nothing here imports torch).


class DataKind(Kind):
    """A dataset. ``load() -> falsify.data.Dataset``: train/test tensors, deterministic.

    A kind that ``streams`` also has ``streamed() -> falsify.data.stream.StreamedDataset``, the
    same examples read in batches from map-style torch Datasets; a file asks for it with
    ``stream: true`` (docs/performance.md, "Data that does not fit in memory"). Streaming reads
    the same values, so it is not part of the cache key.
    """

    slot: ClassVar[str] = "datasets"
    streams: ClassVar[bool] = False  # offers streamed(): examples read per index, not held

    # Left out of dumps while false, so locks and reports of files without it stay as they were.
    stream: bool = Field(
        False,
        exclude_if=lambda v: not v,
        description="read the examples in batches instead of holding them in memory",
    )

    @field_validator("stream")
    @classmethod
    def _streams_if_asked(cls, v: bool) -> bool:
        if v and not cls.streams:
            streaming = ", ".join(
                f"{k.import_path_key}:" if k.import_path_key else tag
                for tag, k in DATASETS.items()
                if k.streams
            )
            raise ValueError(
                f"false for {cls.tag()!r}, which is loaded into memory whole (the datasets "
                f"read per example, which can stream, are: {streaming})"
            )
        return v

    def load(self) -> Any:
        raise NotImplementedError

    def streamed(self) -> Any:
        """The examples read in batches (``falsify.data.stream.StreamedDataset``), for kinds
        that ``stream``."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What besides its fields identifies the data (e.g. a folder's absolute path), for the
        cache key; empty keeps a built-in's key as it always was."""
        return {}


class ArchitectureKind(Checkpointed, Kind):
    """An architecture. ``build(input_shape, n_classes) -> nn.Module`` (weights from the global
    RNG, which the caller seeds)."""

    slot: ClassVar[str] = "architectures"
    ensemble: ClassVar[bool] = False  # several seeds can be trained as one stacked model

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> Any:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What besides its fields determines the weights (e.g. a factory's source), for the
        cache key; empty keeps a built-in's key as it always was."""
        return {}

    def ensemble_ready(self) -> bool:
        """True when these settings can be trained as a stacked ensemble (see ``ensemble``)."""
        return self.ensemble and getattr(self, "checkpoint", None) is None


class UnitMeasureKind(Kind):
    """A per-unit measure. ``measure(model, layer, x, y, n_classes) -> [units]``."""

    slot: ClassVar[str] = "unit_measures"
    # Reads its inputs in batches when the data is streamed (``population.data.stream``).
    streams: ClassVar[bool] = False
    uses_gradients: ClassVar[bool] = False
    # Reads what only a sequence model has (attention patterns, token inputs).
    needs_sequences: ClassVar[bool] = False

    def measure(self, model: Any, layer: str, x: Any, y: Any, n_classes: int) -> Any:
        raise NotImplementedError


class UnitEffectKind(Kind):
    """A per-unit effect of an intervention. ``effects(model, layer, x, y) -> [units]``."""

    slot: ClassVar[str] = "unit_effects"
    # Reads its inputs in batches when the data is streamed (``population.data.stream``).
    streams: ClassVar[bool] = False

    def effects(self, model: Any, layer: str, x: Any, y: Any) -> Any:
        raise NotImplementedError


class OutcomeKind(Kind):
    """A model-level outcome: one number per trained model.

    ``compute(trained) -> float``, with ``trained`` a :class:`falsify.measures.model_level.
    TrainedModel`; ``details(trained)`` may return ``{"value": …, **what it was computed
    from}`` for an outcome whose report shows more than the number itself (drawn by the
    figure ``detail_figure`` names).

    Every outcome may be read ``at_epoch`` e: on the model as it was after e epochs of its
    training run, a checkpoint the population saves (``training.checkpoint_epochs``); unset,
    on the trained model (docs/between-conditions.md, "Outcomes during training").
    """

    slot: ClassVar[str] = "outcomes"
    # Reads its inputs in batches when the data is streamed (``population.data.stream``).
    streams: ClassVar[bool] = False
    needs_unit_layers: ClassVar[bool] = False  # reads layers (by default every unit layer)
    needs_sequences: ClassVar[bool] = False  # reads what only a sequence model has
    detail_figure: ClassVar[str] = ""  # the report figure drawing ``details``; "" for none

    # Left out of dumps while unset, so locks and reports of files without it stay as they were.
    at_epoch: Epoch | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="read on the checkpoint after this many epochs; unset: the trained model",
    )

    def compute(self, trained: Any) -> float:
        raise NotImplementedError

    def details(self, trained: Any) -> dict[str, float] | None:
        return None

    def described(self) -> str:
        """How reports name the outcome: :meth:`describe`, with the epoch it is read at."""
        at = "" if self.at_epoch is None else f" at epoch {self.at_epoch}"
        return self.describe() + at


class ContrastKind(Kind):
    """How a between-conditions test compares its conditions (see falsify.shapes.contrasts)."""

    slot: ClassVar[str] = "contrasts"
    effect_size_kind: ClassVar[str] = ""
    wording: ClassVar[str] = ""  # "difference in", "slope of", …

    def validate_grid(self, hf: Any, conditions: list[Any], loc: tuple[str | int, ...]) -> None:
        """Checks against the grid before training (raises LocatedError)."""
        raise NotImplementedError

    def fit(
        self, hf: Any, table: Any, conditions: list[Any], loc: tuple[str | int, ...], model: str
    ) -> Any:
        """``(BetweenFit, [(part name, estimate key), …])`` in condition order."""
        raise NotImplementedError


class ShapeKind(Kind):
    """A test shape (PRODUCT.md §3): see :class:`falsify.shapes.base.Shape` for the protocol."""

    slot: ClassVar[str] = "shapes"
    # Reads its inputs in batches when the data is streamed (``population.data.stream``).
    streams: ClassVar[bool] = False
    compares_conditions: ClassVar[bool] = False  # accepts a population grid
    figure: ClassVar[str] = ""  # the report drawer of its main figure
    simulator: ClassVar[str] = ""  # the calibration family that checks its verdict rule

    def check(self, hf: Any, model: Any, data: Any) -> None:
        """Checks that need the real (untrained) model; raise LocatedError. Default: none."""

    def replicate_evidence(self, hf: Any, data: Any, replicate: Any) -> Any:
        """One trained model's share of the evidence, as plain picklable data (no model): a
        shape that implements it and :meth:`pooled_evidence` has its replicates evaluated on
        the nodes of a cluster (falsify.shapes.base.run_shape). Default: not split."""
        raise NotImplementedError

    def pooled_evidence(self, hf: Any, data: Any, replicates: list[Any], results: list[Any]) -> Any:
        """The evidence from every replicate's :meth:`replicate_evidence` (in replicate order)."""
        raise NotImplementedError

    def evidence(self, hf: Any, data: Any, replicates: list[Any]) -> Any:
        """The shape's :class:`falsify.shapes.base.Evidence`; by default pooled from each
        replicate's share, computed in this process."""
        results = [self.replicate_evidence(hf, data, rep) for rep in replicates]
        return self.pooled_evidence(hf, data, replicates, results)

    @classmethod
    def splits_evidence(cls) -> bool:
        """Whether the shape computes its evidence replicate by replicate (and can so be
        evaluated on a cluster's nodes)."""
        return cls.replicate_evidence is not ShapeKind.replicate_evidence


class RegularizerKind(Kind):
    """A training-time regularizer: a term added to the cross-entropy loss on every mini-batch.

    Named in a file by the key of its block of ``training`` (``training: {selectivity: {alpha:
    -1}}``), so its ``kind`` has a default and is left out of dumps. ``active`` is False at its
    neutral setting (e.g. α = 0), where it trains exactly as plain cross-entropy does;
    ``check(model, loc)`` raises LocatedError (its layer fields are checked by the runner
    through their :class:`~falsify.hypothesis.types.LayerNames` mark first); ``build(model,
    n_classes, steps_per_epoch)`` returns the term (:class:`falsify.models.regularizers.
    RegularizerTerm`); ``achieved(model, x, y, n_classes)`` computes ``{metric: value}``, what
    the term achieved, which reports show when some condition has the term on.

    Every regularizer may be switched on for a ``window`` of epochs only (``window: [5, 30]``:
    from the end of epoch 5 to the end of epoch 30); unset, it is on for the whole run. The
    window is checked against ``training.epochs`` by :class:`falsify.hypothesis.schema.
    TrainingSpec` and added to the cache recipe by :meth:`cache_recipe`, in one place for every
    kind (docs/file-format.md, "Training-time regularizers").
    """

    slot: ClassVar[str] = "regularizers"
    # Reads its inputs in batches when the data is streamed (``population.data.stream``).
    streams: ClassVar[bool] = False
    # A stacked ensemble (falsify.models.ensemble) reproduces the recipe with the term on: the
    # term reads only the layers' outputs and the labels (not the weights), so that trainer
    # adds it replicate by replicate.
    ensemble: ClassVar[bool] = False
    metric: ClassVar[str] = ""  # the model-level record of what it achieved; "" for none
    # Deprecated flat names of ``training`` (before the blocks) -> this block's field.
    legacy_fields: ClassVar[dict[str, str]] = {}

    # Left out of dumps while unset, so recipes and locks without a window stay as they were.
    window: EpochWindow | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="[from, until]: on from the end of epoch 'from' to the end of epoch "
        "'until'; unset: the whole run",
    )

    @property
    def active(self) -> bool:
        raise NotImplementedError

    @property
    def trains(self) -> bool:
        """Whether the term is ever added: active, and with a window that is not empty."""
        return self.active and (self.window is None or self.window[0] < self.window[1])

    def on_in_epoch(self, epoch: int) -> bool:
        """Whether the term is added in the epoch with 0-based index ``epoch``."""
        return self.window is None or self.window[0] <= epoch < self.window[1]

    def check(self, model: Any, loc: tuple[str | int, ...]) -> None:
        """Checks that need the real (untrained) model, while active; raise LocatedError."""

    def build(self, model: Any, n_classes: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError

    def achieved(self, model: Any, x: Any, y: Any, n_classes: int) -> dict[str, float]:
        return {}

    def recipe(self) -> dict[str, Any]:
        """Its part of the cache recipe's ``training``: empty while inactive (so a recipe
        without the term keeps the key it had before the term existed), else its fields; the
        window is not among them (:meth:`cache_recipe` adds it)."""
        if not self.active:
            return {}
        return {self.tag(): self.model_dump(mode="json", exclude={"window"})}

    def cache_recipe(self) -> dict[str, Any]:
        """:meth:`recipe`, plus ``<tag>_window`` while a window is set and the term active (a
        window of an inactive term changes nothing, so it does not split the cache)."""
        out = self.recipe()
        if self.window is not None and self.active:
            out[f"{self.tag()}_window"] = list(self.window)
        return out


# slot -> the class variables that are its capabilities (shown by ``falsify kinds``, checked
# by the contract tests)
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "datasets": ("streams",),
    "architectures": ("ensemble",),
    "unit_measures": ("uses_gradients", "needs_sequences", "streams"),
    "unit_effects": ("streams",),
    "outcomes": ("needs_unit_layers", "needs_sequences", "detail_figure", "streams"),
    "contrasts": ("effect_size_kind", "wording"),
    "shapes": ("compares_conditions", "figure", "simulator", "streams"),
    "regularizers": ("ensemble", "metric", "streams"),
}


class Registry:
    """The kinds of one slot, by tag. Built-ins and plugins are registered the same way."""

    def __init__(self, slot: str, base: type[Kind]) -> None:
        self.slot = slot
        self.base = base
        self.group = f"falsify.{slot}"
        self._kinds: dict[str, type[Kind]] = {}

    def add(self, cls: type[Kind]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise FalsifyError(f"{cls!r} is not a {self.base.__name__} (slot {self.slot}).")
        tag = cls.tag()
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(cls.label, str) or not cls.label.strip():
            raise FalsifyError(f"The kind {tag!r} ({where}) must declare a non-empty label.")
        if not isinstance(cls.docs, str) or not cls.docs.strip():
            raise FalsifyError(f"The kind {tag!r} ({where}) must name its docs page (docs = ...).")
        for name, value in cls.capabilities().items():
            if not isinstance(value, _CAPABILITY_TYPES):
                raise FalsifyError(
                    f"The capability {name!r} of kind {tag!r} ({where}) must be one of "
                    f"{[t.__name__ for t in _CAPABILITY_TYPES]}; got {type(value).__name__}."
                )
        old = self._kinds.get(tag)
        if old is not None and old is not cls:
            raise FalsifyError(
                f"Two {self.slot} kinds are named {tag!r}: "
                f"{old.__module__}.{old.__qualname__} and {where}."
            )
        self._kinds[tag] = cls

    def __getitem__(self, tag: str) -> type[Kind]:
        load_kinds()
        return self._kinds[tag]

    def __iter__(self) -> Iterator[str]:
        load_kinds()
        return iter(sorted(self._kinds))

    def items(self) -> list[tuple[str, type[Kind]]]:
        load_kinds()
        return sorted(self._kinds.items())

    def classes(self) -> list[type[Kind]]:
        return [cls for _, cls in self.items()]


DATASETS = Registry("datasets", DataKind)
ARCHITECTURES = Registry("architectures", ArchitectureKind)
UNIT_MEASURES = Registry("unit_measures", UnitMeasureKind)
UNIT_EFFECTS = Registry("unit_effects", UnitEffectKind)
OUTCOMES = Registry("outcomes", OutcomeKind)
CONTRASTS = Registry("contrasts", ContrastKind)
SHAPES = Registry("shapes", ShapeKind)
REGULARIZERS = Registry("regularizers", RegularizerKind)
REGISTRIES: dict[str, Registry] = {
    r.slot: r
    for r in (
        DATASETS,
        ARCHITECTURES,
        UNIT_MEASURES,
        UNIT_EFFECTS,
        OUTCOMES,
        CONTRASTS,
        SHAPES,
        REGULARIZERS,
    )
}


K = TypeVar("K", bound=type[Kind])


def register(cls: K) -> K:
    """Class decorator: add a kind to its slot's registry (the slot is its base class's)."""
    registry = REGISTRIES.get(cls.slot)
    if registry is None:
        raise FalsifyError(
            f"{cls.__module__}.{cls.__qualname__} must subclass one of the slot bases "
            f"({', '.join(r.base.__name__ for r in REGISTRIES.values())})."
        )
    registry.add(cls)
    return cls


_loaded = False


def load_kinds() -> None:
    """Import every built-in kind module, then every plugin's entry point (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in HOME_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            importlib.import_module(info.name)
    for registry in REGISTRIES.values():
        for ep in metadata.entry_points(group=registry.group):
            try:
                obj = ep.load()
            except Exception as exc:
                raise FalsifyError(
                    f"The plugin entry point {ep.name!r} = {ep.value!r} (group {registry.group}) "
                    f"cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            if isinstance(obj, type):
                if not issubclass(obj, registry.base):
                    raise FalsifyError(
                        f"The plugin entry point {ep.name!r} = {ep.value!r} (group "
                        f"{registry.group}) must name a {registry.base.__name__} subclass or a "
                        f"module of them; got {obj.__module__}.{obj.__qualname__}."
                    )
                registry.add(obj)


class Kinds:
    """``Annotated[SlotBase, Kinds(REGISTRY)]``: a field holding any kind of that slot.

    The discriminated union is assembled from the registry when the schema is first built;
    ``import_key`` is the key that picks the user's own kind when ``kind`` is absent. With
    ``only``, the field holds that one kind (a regularizer's block), looked up just as late.
    """

    def __init__(
        self, registry: Registry, import_key: str | None = None, only: str | None = None
    ) -> None:
        self.registry = registry
        self.import_key = import_key
        self.only = only

    def members(self) -> list[type[Kind]]:
        if self.only is not None:
            return [self.registry[self.only]]
        return self.registry.classes()

    def tag_of(self, value: Any) -> str | None:
        if isinstance(value, dict):
            if "kind" in value:
                return value["kind"]
            return IMPORT_PATH_TAG if self.import_key and self.import_key in value else None
        if self.import_key and hasattr(value, self.import_key):
            return IMPORT_PATH_TAG
        return getattr(value, "kind", None)

    def __get_pydantic_core_schema__(
        self, _source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        if self.only is not None:
            return handler.generate_schema(self.registry[self.only])
        members = tuple(typing.Annotated[cls, Tag(cls.tag())] for cls in self.members())
        if not members:
            raise FalsifyError(f"No {self.registry.slot} kinds are registered.")
        union: Any = typing.Union[members] if len(members) > 1 else members[0]  # noqa: UP007
        return handler.generate_schema(typing.Annotated[union, Discriminator(self.tag_of)])


# Fields holding any kind of one slot: the file format's unions.
UnitMeasure = typing.Annotated[UnitMeasureKind, Kinds(UNIT_MEASURES)]
UnitEffect = typing.Annotated[UnitEffectKind, Kinds(UNIT_EFFECTS)]
ModelOutcome = typing.Annotated[OutcomeKind, Kinds(OUTCOMES)]
Comparison = typing.Annotated[ContrastKind, Kinds(CONTRASTS)]
