"""Hypothesis files: the schema (pydantic models) and the loader (YAML → validated objects)."""

from falsify.hypothesis.loader import HypothesisFile, apply_overrides, discover, load
from falsify.hypothesis.schema import Hypothesis

__all__ = ["Hypothesis", "HypothesisFile", "apply_overrides", "discover", "load"]
