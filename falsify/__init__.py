"""falsify: interpretability claims as experiments that can come out against the claim."""

from falsify.errors import FalsifyError, HypothesisError
from falsify.hypothesis import Hypothesis, HypothesisFile, load

__all__ = ["FalsifyError", "Hypothesis", "HypothesisError", "HypothesisFile", "load"]
