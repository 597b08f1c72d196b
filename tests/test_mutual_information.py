from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from torch import nn

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.data.base import IGNORE
from falsify.data.modular_addition import ModularAddition
from falsify.hooks import capture
from falsify.measures.mutual_information import (
    MutualInformation,
    class_bin_counts,
    mutual_information,
)
from falsify.models import build_model
from falsify.models.mlp import MLP
from falsify.models.transformer import TransformerSpec


class _Identity(nn.Module):
    """A model whose layer's output is its input: the activation table is ``x`` itself."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _reference_bins(a: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin index of each value of ``a``, as numpy's histogram assigns them."""
    edges = np.histogram_bin_edges(a, bins=bins)
    return np.digitize(a, edges[1:-1])  # 0..bins-1, the maximum in the last bin


def _mi(x: torch.Tensor, y: torch.Tensor, n_classes: int, bins: int, **kw) -> np.ndarray:
    counts = class_bin_counts(_Identity(), "layer", x, y, n_classes, bins, **kw)
    return mutual_information(counts).numpy()


def test_plug_in_estimate_matches_sklearn_on_the_same_bins() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (500,), generator=g)
    # Three units: the label plus noise, its square plus noise, and pure noise.
    noise = torch.randn(500, 3, generator=g, dtype=torch.float64)
    x = torch.stack([y + noise[:, 0], (y - 1.5) ** 2 + noise[:, 1], noise[:, 2]], dim=1)
    got = _mi(x, y, 4, 8)
    # sklearn.metrics.mutual_info_score(y, bin index): the plug-in MI in nats.
    ref = [mutual_info_score(y.numpy(), _reference_bins(x[:, u].numpy(), 8)) for u in range(3)]
    assert got == pytest.approx(ref, abs=1e-10)
    # Streaming: any batch size gives the same counts.
    for batch_size in (1, 7, 64):
        assert _mi(x, y, 4, 8, batch_size=batch_size) == pytest.approx(got, abs=1e-12)


def test_miller_madow_adds_the_occupied_cell_term() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (90,), generator=g)
    x = (y + torch.randn(90, generator=g)).unsqueeze(1)
    counts = class_bin_counts(_Identity(), "layer", x, y, 3, 12)
    bins = _reference_bins(x[:, 0].numpy(), 12)
    table = contingency_matrix(y.numpy(), bins)  # [classes, occupied bins]
    # I_MM = I + (m_A + m_Y − m_AY − 1) / (2N), each entropy with Miller–Madow's (m − 1)/(2N).
    m_a, m_y, m_ay = table.shape[1], table.shape[0], int((table > 0).sum())
    ref = mutual_info_score(y.numpy(), bins) + (m_a + m_y - m_ay - 1) / (2 * 90)
    assert float(mutual_information(counts, "miller_madow")[0]) == pytest.approx(ref, abs=1e-12)


def test_a_unit_equal_to_the_label_carries_its_entropy_and_noise_carries_none() -> None:
    g = torch.Generator().manual_seed(2)
    n = 20_000
    y = torch.randint(0, 5, (n,), generator=g)
    x = torch.stack([y.to(torch.float32), torch.rand(n, generator=g)], dim=1)
    mi = _mi(x, y, 5, 10)
    # scipy.stats.entropy(class counts): H(label) in nats, ≈ ln 5.
    h = stats.entropy(np.bincount(y.numpy()))
    assert mi[0] == pytest.approx(h, abs=1e-9)
    # Independent noise: the plug-in bias is about (B − 1)(C − 1)/(2N) = 36/40000 nats.
    assert 0 <= mi[1] < 3 * 36 / (2 * n)
    corrected = mutual_information(
        class_bin_counts(_Identity(), "layer", x, y, 5, 10), "miller_madow"
    )
    assert abs(float(corrected[1])) < 36 / (2 * n)


def test_a_constant_unit_carries_no_information() -> None:
    y = torch.tensor([0, 1, 0, 1])
    assert _mi(torch.ones(4, 1), y, 2, 4).tolist() == [0.0]


def test_the_kind_reads_post_relu_units_and_sequence_answers() -> None:
    model = MLP(2, (2,), n_classes=2).eval()
    with torch.no_grad():
        model.hidden1.linear.weight.copy_(torch.eye(2))
        model.hidden1.linear.bias.zero_()
    # Unit 0 is positive for class 1 only; unit 1 is negative (silent after the ReLU) always.
    x = torch.tensor([[-1.0, -1.0], [2.0, -2.0], [-3.0, -1.0], [1.0, -3.0]])
    y = torch.tensor([0, 1, 0, 1])
    spec = MutualInformation(kind="mutual_information", bins=4)
    got = spec.measure(model, "hidden1", x, y, 2)
    assert got.tolist() == pytest.approx([np.log(2), 0.0], abs=1e-6)
    # Per-position labels of a sequence task: the class is the one scored position's answer.
    per_position = torch.full((4, 3), IGNORE)
    per_position[:, 2] = y
    assert torch.equal(spec.measure(model, "hidden1", x, per_position, 2), got)


def test_transformer_neurons_at_the_answer_position() -> None:
    # The same path as class selectivity (test_sequence_measures.py): MLP neurons read at the
    # '=' position, the class being the answer token.
    data = load_dataset(ModularAddition(kind="modular_addition", p=5, train_fraction=0.5))
    spec = TransformerSpec(
        kind="transformer",
        d_model=8,
        n_heads=2,
        d_head=4,
        d_mlp=6,
        units={"blocks.0.mlp.hook_post": {"axis": 2, "position": -1}},
    )
    torch.manual_seed(0)
    model = build_model(spec, (3,), 5).eval()
    x, y = data.x_test, data.y_test
    with capture(model, "blocks.0.mlp.hook_post") as out:
        model(x)
    act = out[0][:, -1].to(torch.float64).numpy()  # [n, 6] at the '=' position
    answer = y[:, -1].numpy()
    got = MutualInformation(kind="mutual_information", bins=6).measure(
        model, "blocks.0.mlp.hook_post", x, y, 5
    )
    # sklearn.metrics.mutual_info_score(answer, bin index) per neuron.
    ref = [mutual_info_score(answer, _reference_bins(act[:, u], 6)) for u in range(6)]
    assert got.tolist() == pytest.approx(ref, abs=1e-6)


ASSOCIATION = """\
id: tiny_mi
claim: Units with more information about the class matter more (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: association
  layers: [hidden1]
  x: {kind: mutual_information, bins: 8}
  y: {kind: unit_ablation, metric: loss_increase}
prediction:
  direction: positive
  sesoi: 0.1
"""


def test_mutual_information_as_the_x_of_an_association(write, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    path = write(ASSOCIATION)
    code = main(["run", str(path), "--out", str(out), "--cache", str(tmp_path / "c"), "--quiet"])
    assert code == 0
    summary = json.loads((out / "tiny_mi.json").read_text())
    assert summary["n_replicates"] == 3
    assert "mutual information with the class" in (out / "tiny_mi.md").read_text()


def test_bad_bins_is_one_located_line(write, tmp_path: Path, capsys) -> None:
    path = write(ASSOCIATION.replace("bins: 8", "bins: 1"))
    assert main(["check", str(path), "--cache", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "'test.x.bins'" in err and len(err.strip().splitlines()) == 1
