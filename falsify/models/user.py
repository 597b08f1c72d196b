"""The user's own architecture, from a function named by import path.

``model: {factory: "pkg.module:make_net", kwargs: {...}}`` calls ``make_net(**kwargs)``, which
must return a ``torch.nn.Module`` mapping ``[batch, *input_shape]`` to class logits
``[batch, n_classes]``. The function is called under the replicate's seed (``torch.manual_seed``),
so initial weights drawn from torch's global RNG are reproducible. Layers are named by the
module's own ``named_modules()`` paths.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from falsify._imports import UserCodeError, import_callable, source_sha256
from falsify.hypothesis.schema import UserModel

__all__ = ["build_user_model", "factory_identity"]

_LOC = ("population", "model", "factory")


def build_user_model(spec: UserModel, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``factory(**kwargs)``; the input shape and class count are the user's to match."""
    fn = import_callable(spec.factory, _LOC, [spec.base_dir])
    model = fn(**spec.kwargs)
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
