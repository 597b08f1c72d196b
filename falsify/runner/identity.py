"""What determines a replicate's weights beyond the population's own fields.

The cache key hashes the population as written; for specs that point outside the file that is
not enough. A user's factory or loader is identified by its import path and kwargs (in the spec)
and by a hash of the source file defining it, so editing the user's code retrains; a dataset read
from a folder is identified by the folder's absolute path, since the same relative ``root`` in two
hypothesis files can name different folders. Each kind says so itself (``identity()``); built-ins
that need nothing add nothing, which keeps their cache keys unchanged.
"""

from __future__ import annotations

from typing import Any

from falsify.hypothesis.schema import Population

__all__ = ["population_identity"]


def population_identity(population: Population) -> dict[str, Any]:
    """Extra fields for the cache key; empty for populations fully described by their fields."""
    return population.data.identity() | population.model.identity()
