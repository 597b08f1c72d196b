"""falsify: interpretability claims as experiments that can come out against the claim."""

from falsify.api import from_dict, load, run
from falsify.errors import FalsifyError, HypothesisError
from falsify.hypothesis import Hypothesis, HypothesisFile
from falsify.runner import Outcome
from falsify.stats import Verdict

__all__ = [
    "FalsifyError",
    "Hypothesis",
    "HypothesisError",
    "HypothesisFile",
    "Outcome",
    "Verdict",
    "from_dict",
    "load",
    "run",
]
