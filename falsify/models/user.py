"""The user's own architecture, from a function named by import path.

``model: {factory: "pkg.module:make_net", kwargs: {...}}`` calls ``make_net(**kwargs)``, which
must return a ``torch.nn.Module`` mapping ``[batch, *input_shape]`` to class logits
``[batch, n_classes]``. The function is called under the replicate's seed (``torch.manual_seed``),
so initial weights drawn from torch's global RNG are reproducible. Layers are named by the
module's own ``named_modules()`` paths.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from falsify._imports import UserCodeError, call_user, import_callable, source_sha256
from falsify.hypothesis.kinds import ArchitectureKind, register
from falsify.hypothesis.types import IMPORT_PATH, hash_by_json

__all__ = ["UserModel", "build_user_model", "factory_identity"]

_LOC = ("population", "model", "factory")


@register
class UserModel(ArchitectureKind):
    """The user's own model: ``factory`` is ``"package.module:function"`` returning an
    ``nn.Module``, called with ``kwargs``."""

    factory: str = Field(pattern=IMPORT_PATH)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    label: ClassVar[str] = "the user's model (factory)"
    docs: ClassVar[str] = "docs/own-models-and-data.md"
    import_path_key: ClassVar[str | None] = "factory"
    example: ClassVar[dict[str, Any]] = {"factory": "package.module:function"}

    @property
    def kind(self) -> str:
        return "factory"

    __hash__ = hash_by_json

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        return build_user_model(self, input_shape, n_classes)

    def identity(self) -> dict[str, Any]:
        return factory_identity(self)


def build_user_model(spec: UserModel, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``factory(**kwargs)``; the input shape and class count are the user's to match."""
    fn = import_callable(spec.factory, _LOC, [spec.base_dir])
    model = call_user(fn, _LOC, spec.factory, **spec.kwargs)
    if not isinstance(model, nn.Module):
        raise UserCodeError(
            _LOC,
            "a function returning a torch.nn.Module",
            f"{spec.factory} -> {type(model).__name__}",
        )
    return model


def factory_identity(spec: UserModel) -> dict[str, Any]:
    """What besides the spec's own fields determines the model: the factory's source file."""
    fn = import_callable(spec.factory, _LOC, [spec.base_dir])
    return {"factory_source_sha256": source_sha256(fn)}
