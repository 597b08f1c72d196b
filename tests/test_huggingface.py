"""A Hugging Face GPT-2 built from a local config: trained by falsify on a built-in task, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.errors import FalsifyError
from falsify.hooks import capture
from falsify.hypothesis import load
from falsify.models import build_model
from falsify.models.huggingface import HuggingFaceSpec
from falsify.models.training import train_replicate
from falsify.units import unit_view

GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 24}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_gpt2_from_a_config_returns_task_logits_and_keeps_its_own_layer_names() -> None:
    spec = HuggingFaceSpec(kind="huggingface", config=GPT2)
    torch.manual_seed(0)
    a = build_model(spec, (3,), 7)
    torch.manual_seed(0)
    b = build_model(spec, (3,), 7)
    names = [n for n, _ in a.named_modules()]
    assert "transformer.h.0.mlp.act" in names and "lm_head" in names
    assert "transformer.wte.weight" in a.state_dict()
    assert a.transformer.wte.weight.shape == (8, 16)  # the task's 7 answers and its '=' token
    for va, vb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    x = torch.tensor([[0, 1, 7], [2, 3, 7]])
    a.eval()
    with capture(a, "transformer.h.0.mlp.act") as acts:
        out = a(x)
    assert out.shape == (2, 3, 7)
    assert acts[0].shape == (2, 3, 24)
    with pytest.raises(FalsifyError, match="token ids"):
        a(x.float())


def test_a_config_json_beside_the_file_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(GPT2))
    spec = HuggingFaceSpec.model_validate(
        {"kind": "huggingface", "config": "tiny.json"}, context={"base_dir": tmp_path}
    )
    assert len(build_model(spec, (3,), 7).transformer.h) == 1
    assert len(spec.identity()["config_sha256"]) == 64
    bad = HuggingFaceSpec(kind="huggingface", config={**GPT2, "model_type": "gtp2"})
    with pytest.raises(FalsifyError, match=r"model_type.*gpt2"):
        build_model(bad, (3,), 7)
    tied = HuggingFaceSpec(kind="huggingface", config={**GPT2, "tie_word_embeddings": True})
    with pytest.raises(FalsifyError, match="tie_word_embeddings"):
        build_model(tied, (3,), 7)
    missing = HuggingFaceSpec(kind="huggingface", config="nope.json")
    with pytest.raises(FalsifyError, match=r"config\.json"):
        build_model(missing, (3,), 7)


CLAIM = """\
id: gpt2_neurons
claim: Selective GPT-2 MLP neurons matter more on modular addition.
population:
  data: {kind: modular_addition, p: 11, train_fraction: 0.6}
  model:
    kind: huggingface
    config: tiny.json
    units: {transformer.h.0.mlp.act: {axis: 2, position: -1}}
  training: {optimizer: adamw, lr: 0.01, weight_decay: 0.1, steps: 60, batch_size: 1000}
  seeds: 3
test:
  kind: association
  layers: [transformer.h.0.mlp.act]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation, value: mean, metric: loss_increase}
  correlation: spearman
prediction: {direction: positive, sesoi: 0.1, alpha: 0.05}
"""


@pytest.mark.slow
def test_a_claim_on_a_trained_gpt2_runs_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(GPT2))
    path = tmp_path / "gpt2_neurons.yaml"
    path.write_text(CLAIM)
    hf = load(path)
    pop = hf.hypothesis.population
    data = load_dataset(pop.data)
    trained = train_replicate(pop, data, 0, torch.device("cpu")).model.eval()
    assert unit_view(trained, "transformer.h.0.mlp.act").position == -1
    with torch.no_grad():
        guess = trained(data.x_train)[:, -1].argmax(-1)
    # Trained, not left at chance (1/11): after 60 steps it fits a share of the training pairs.
    assert (guess == data.y_train[:, -1]).float().mean() > 3 / 11
    args = ["run", str(path), "--out", str(tmp_path / "reports"), "--cache", str(tmp_path / "c")]
    assert main(args) == 0, capsys.readouterr()
    report = (tmp_path / "reports" / "gpt2_neurons.md").read_text()
    assert "transformer.h.0.mlp.act" in report
    assert any(v in report for v in ("SUPPORTED", "FALSIFIED", "INCONCLUSIVE"))
