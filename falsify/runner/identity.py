"""What determines a replicate's weights beyond the population's own fields.

The cache key hashes the population as written; for specs that point outside the file that is
not enough. A user's factory or loader is identified by its import path and kwargs (in the spec)
and by a hash of the source file defining it, so editing the user's code retrains; a dataset read
from a folder is identified by the folder's absolute path, since the same relative ``root`` in two
hypothesis files can name different folders. Looked up by ``kind``; built-ins that need nothing
add nothing, which keeps their cache keys unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from falsify._imports import import_callable, source_sha256
from falsify.hypothesis.schema import Population, UserData
from falsify.models.user import factory_identity

__all__ = ["DATA_IDENTITIES", "MODEL_IDENTITIES", "population_identity"]


def _root_identity(spec: Any) -> dict[str, Any]:
    return {"data_root": str(spec.resolve(spec.root))}


def _loader_identity(spec: UserData) -> dict[str, Any]:
    fn = import_callable(spec.loader, ("population", "data", "loader"), [spec.base_dir])
    return {"loader_source_sha256": source_sha256(fn)}


DATA_IDENTITIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "mnist": _root_identity,
    "cifar10": _root_identity,
    "loader": _loader_identity,
}
MODEL_IDENTITIES: dict[str, Callable[[Any], dict[str, Any]]] = {"factory": factory_identity}


def population_identity(population: Population) -> dict[str, Any]:
    """Extra fields for the cache key; empty for populations fully described by their fields."""
    out: dict[str, Any] = {}
    for spec, registry in (
        (population.data, DATA_IDENTITIES),
        (population.model, MODEL_IDENTITIES),
    ):
        fn = registry.get(spec.kind)
        if fn is not None:
            out |= fn(spec)
    return out
