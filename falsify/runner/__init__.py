"""Running hypotheses: devices, the model cache, replicates, and the test shapes."""

from falsify.runner.cache import ModelCache
from falsify.runner.device import resolve_device
from falsify.runner.outcome import Outcome
from falsify.runner.run import Plan, plan, run_hypothesis

__all__ = ["ModelCache", "Outcome", "Plan", "plan", "resolve_device", "run_hypothesis"]
