"""The CUDA subset: what ``--device cuda`` computes, checked against the CPU.

Every test here skips without a GPU. ``FALSIFY_TEST_DEVICE`` names the device under test
(``cuda`` by default); ``FALSIFY_TEST_DEVICE=cpu`` runs the same checks CPU against CPU, which
exercises the code of this file on a machine without a GPU (the comparisons are then trivially
tight). benchmarks/gpu_check.sh runs this file first on a lent GPU machine (docs/performance.md,
"On a GPU").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, fill_values, single_unit_masks
from falsify.models import build_model
from falsify.models.cnn import CNNSpec
from falsify.models.ensemble import train_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.resnet import ResNet20Spec
from falsify.models.training import evaluate, train_replicate

DEVICE = torch.device(os.environ.get("FALSIFY_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def _population(model: object, epochs: int = 2, **training: object) -> Population:
    return Population(
        data=DigitsData(kind="digits"),
        model=model,  # type: ignore[arg-type]
        training=TrainingSpec(epochs=epochs, **training),  # type: ignore[arg-type]
        seeds=2,
    )


ARCHITECTURES = {
    "mlp": (MLPSpec(kind="mlp", hidden=(64, 32)), "hidden1", ["rank_one", "split", "hooks"]),
    "cnn": (CNNSpec(kind="cnn", channels=(16, 32), batch_norm=True), "conv1", ["auto", "hooks"]),
    "resnet20": (ResNet20Spec(kind="resnet20", width=8), "layer2.1", ["auto", "hooks"]),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsData(kind="digits"))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("value", ["zero", "mean"])
def test_ablation_effects_agree_with_the_cpu(digits, name: str, value: str) -> None:
    """The engine's effects on the device equal the CPU's to 1e-5, for every strategy."""
    spec, layer, strategies = ARCHITECTURES[name]
    model = train_replicate(_population(spec, epochs=1), digits, 0, CPU).model.eval()
    x, y = digits.x_test, digits.y_test
    units = fill_values(model, layer, x[:1], "zero").shape[0]
    masks = single_unit_masks(units)
    on_device = build_model(spec, digits.input_shape, digits.n_classes)
    on_device.load_state_dict(model.state_dict())
    on_device = on_device.to(DEVICE).eval()
    for metric in ("loss_increase", "accuracy_drop"):
        kwargs = {"value": value, "metric": metric}
        cpu = ablation_effects(model, layer, x, y, masks, **kwargs)
        for strategy in strategies:
            got = ablation_effects(
                on_device,
                layer,
                x.to(DEVICE),
                y.to(DEVICE),
                masks.to(DEVICE),
                strategy=strategy,  # type: ignore[arg-type]
                **kwargs,
            )
            worst = (got.cpu().double() - cpu.double()).abs().max().item()
            assert worst <= 1e-5, (name, metric, strategy, worst)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_trained_replicate_matches_the_cpu_in_accuracy(digits, name: str) -> None:
    """The same seed trained on the device and on the CPU: the kernels sum in other orders, so
    the weights drift apart in their last bits, but test accuracy agrees within 2 points."""
    spec = ARCHITECTURES[name][0]
    pop = _population(spec, epochs=5)
    cpu = train_replicate(pop, digits, 3, CPU)
    dev = train_replicate(pop, digits, 3, DEVICE)
    assert next(dev.model.parameters()).device.type == DEVICE.type
    assert abs(cpu.test_accuracy - dev.test_accuracy) <= 0.02
    # Its own accuracy is what the device's evaluation gives for its weights.
    again = evaluate(dev.model, digits.x_test.to(DEVICE), digits.y_test.to(DEVICE))
    assert again == dev.test_accuracy


def test_training_on_the_device_repeats(digits) -> None:
    """Two trainings of one seed on the device give the same weights (deterministic kernels)."""
    pop = _population(ARCHITECTURES["cnn"][0], epochs=2)
    a = train_replicate(pop, digits, 1, DEVICE).model.state_dict()
    b = train_replicate(pop, digits, 1, DEVICE).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "spec",
    [
        MLPSpec(kind="mlp", hidden=(64, 32), batch_norm=True),
        CNNSpec(kind="cnn", channels=(16, 32), batch_norm=True),
    ],
    ids=["mlp-bn", "cnn-bn"],
)
def test_an_ensemble_on_the_device_matches_sequential_training(digits, spec) -> None:
    """Each replicate of a device ensemble against the same seed trained alone on the device:
    equal bit for bit where the probes found batched kernels that sum as the single ones, else
    the per-replicate fallbacks; either way within 1e-4 after 2 epochs, and equally accurate."""
    pop = _population(spec, epochs=2)
    seeds = [0, 1, 2]
    stacked = train_ensemble(pop, digits, seeds, DEVICE)
    for seed, got in zip(seeds, stacked, strict=True):
        alone = train_replicate(pop, digits, seed, DEVICE)
        sa, sb = got.model.state_dict(), alone.model.state_dict()
        for k in sa:
            assert torch.allclose(sa[k].double(), sb[k].double(), atol=1e-4), (seed, k)
        assert abs(got.test_accuracy - alone.test_accuracy) <= 0.01


def test_a_hypothesis_file_runs_on_the_device(tmp_path: Path) -> None:
    """A bundled-style claim end to end with ``--device``: a report with a verdict."""
    from falsify.cli.main import main

    src = (ROOT / "hypotheses" / "batchnorm_reduces_single_direction_reliance.yaml").read_text()
    path = tmp_path / "claim.yaml"
    path.write_text(src.replace("$schema=../", f"$schema={ROOT}/"))
    code = main(
        [
            "run",
            str(path),
            "--device",
            DEVICE.type,
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "reports"),
            "--quiet",
        ]
    )
    assert code == 0  # 1: the file failed to run
    report = (tmp_path / "reports" / "batchnorm_reduces_single_direction_reliance.md").read_text()
    assert any(v in report for v in ("SUPPORTED", "FALSIFIED", "INCONCLUSIVE"))
