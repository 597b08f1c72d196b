from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

# One intra-op thread: the test models are tiny, and on a small shared CPU several threads
# spin against other processes (measured: the between-conditions tests took 212 s wall with
# 2 threads at load 9, 30 s with 1).
torch.set_num_threads(1)

TINY = """\
id: tiny
claim: Selective units matter more (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: association
  layers: [hidden1]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation, metric: loss_increase}
prediction:
  direction: positive
  sesoi: 0.1
"""


@pytest.fixture
def tiny_yaml() -> str:
    return TINY


@pytest.fixture
def write(tmp_path: Path):
    """Write a hypothesis file into tmp_path and return its path."""

    def _write(text: str, name: str = "h.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return _write
