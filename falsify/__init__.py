"""falsify: interpretability claims as experiments that can come out against the claim.

The public names import their modules on first use, so ``import falsify`` (and the command
line's ``--help``) does not load torch, pandas or statsmodels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falsify._lazy import lazy_attributes

if TYPE_CHECKING:
    from falsify.api import from_dict, load, replicate, run
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
    "replicate",
    "run",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "FalsifyError": "falsify.errors",
        "Hypothesis": "falsify.hypothesis",
        "HypothesisError": "falsify.errors",
        "HypothesisFile": "falsify.hypothesis",
        "Outcome": "falsify.runner",
        "Verdict": "falsify.stats",
        "from_dict": "falsify.api",
        "load": "falsify.api",
        "replicate": "falsify.api",
        "run": "falsify.api",
    },
)
