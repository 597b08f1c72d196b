"""Running hypotheses: devices, the model cache, replicates, and the test shapes.

The names below import their modules on first use, so the command line can read
``falsify.runner.device.DEVICES`` for its ``--help`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falsify._lazy import lazy_attributes

if TYPE_CHECKING:
    from falsify.runner.cache import ModelCache
    from falsify.runner.device import resolve_device
    from falsify.runner.outcome import Outcome
    from falsify.runner.run import Plan, plan, run_hypothesis

__all__ = ["ModelCache", "Outcome", "Plan", "plan", "resolve_device", "run_hypothesis"]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "ModelCache": "falsify.runner.cache",
        "Outcome": "falsify.runner.outcome",
        "Plan": "falsify.runner.run",
        "plan": "falsify.runner.run",
        "resolve_device": "falsify.runner.device",
        "run_hypothesis": "falsify.runner.run",
    },
)
