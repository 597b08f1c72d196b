from __future__ import annotations

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.synthetic import SyntheticData
from falsify.errors import FalsifyError
from falsify.interventions import (
    ablated,
    ablation_effects,
    capture,
    fill_values,
    get_layer,
    hooked,
    single_unit_masks,
)
from falsify.measures import class_conditional_means
from falsify.models.planted import planted_model

SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=200)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _interventions(model, x, y):
    fill = fill_values(model, "hidden1", x, "mean")
    mask = torch.zeros(10, dtype=torch.bool)
    mask[0] = True
    return {
        "ablated": lambda: ablated(model, "hidden1", mask, fill),
        "capture": lambda: capture(model, "hidden1"),
        "hooked": lambda: hooked(model, {"hidden1": lambda m, i, o: o * 0}),
    }


@pytest.mark.parametrize("name", ["ablated", "capture", "hooked"])
@pytest.mark.parametrize("fail", [False, True])
def test_no_hook_left_and_weights_unchanged(name: str, fail: bool) -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _interventions(model, data.x_test, data.y_test)[name]
    with pytest.raises(RuntimeError) if fail else _nullcontext(), ctx():
        assert _hook_count(model) == 1
        model(data.x_test)
        if fail:
            raise RuntimeError("forced error inside the intervention")
    assert _hook_count(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sweeps_leave_no_hooks_even_when_the_model_fails() -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    ablation_effects(model, "hidden1", data.x_test, data.y_test, single_unit_masks(10))
    class_conditional_means(model, "hidden1", data.x_test, data.y_test, SPEC.n_classes)
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError):
        # Wrong input width: the forward pass fails inside the hooked block.
        ablation_effects(model, "hidden1", data.x_test[:, :3], data.y_test, single_unit_masks(10))
    assert _hook_count(model) == 0


def test_unknown_layer_lists_real_names() -> None:
    model, _ = planted_model(SPEC)
    with pytest.raises(FalsifyError, match=r"hidden1.*Did you mean 'hidden1'"):
        get_layer(model, "hiden1")


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
