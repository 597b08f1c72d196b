"""MNIST and CIFAR-10 readers on files written in the datasets' published formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from falsify.cli.main import main
from falsify.data.standard import CIFAR10Data, MNISTData, load_cifar10, load_mnist
from falsify.errors import FalsifyError
from tests.helpers.formats import cifar_bytes, idx_bytes, write_cifar10, write_mnist


def _mnist(root: Path, **kw) -> MNISTData:
    return MNISTData(kind="mnist", root=str(root), **kw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz) -> None:
    arrays = write_mnist(tmp_path, n_train=50, n_test=20, gz=gz)
    ds = load_mnist(_mnist(tmp_path))
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    assert torch.equal(ds.x_train[:, 0], expected)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    assert ds.n_classes == 10


def test_limits_are_stratified_and_deterministic(tmp_path) -> None:
    write_mnist(tmp_path, n_train=200, n_test=100)
    full = load_mnist(_mnist(tmp_path))
    a = load_mnist(_mnist(tmp_path, limit_train=50, limit_test=30))
    b = load_mnist(_mnist(tmp_path, limit_train=50, limit_test=30))
    c = load_mnist(_mnist(tmp_path, limit_train=50, subset_seed=1))
    assert len(a.y_train) == 50 and len(a.y_test) == 30 and len(c.y_test) == 100
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train, minlength=10).tolist() == [5] * 10
    # Every kept example is one of the originals, with its own label.
    rows = {
        tuple(x.flatten().tolist()): int(y) for x, y in zip(full.x_train, full.y_train, strict=True)
    }
    assert all(
        rows[tuple(x.flatten().tolist())] == int(y)
        for x, y in zip(a.x_train, a.y_train, strict=True)
    )


def test_mnist_missing_file_names_it(tmp_path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FalsifyError, match=r"t10k-labels-idx1-ubyte.*no such file"):
        load_mnist(_mnist(tmp_path))
    with pytest.raises(FalsifyError, match=r"data root.*must be a folder"):
        load_mnist(_mnist(tmp_path / "nowhere"))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file(tmp_path, gz) -> None:
    write_mnist(tmp_path, n_train=30, n_test=10)
    name = "train-images-idx3-ubyte"
    data = (tmp_path / name).read_bytes()[:-100]
    if gz:
        (tmp_path / name).unlink()
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    else:
        (tmp_path / name).write_bytes(data)
    with pytest.raises(FalsifyError) as exc:
        load_mnist(_mnist(tmp_path))
    msg = str(exc.value)
    assert name in msg and "30×28×28 = 23520 data bytes" in msg and "Got 23420" in msg


def test_mnist_truncated_gzip_stream(tmp_path) -> None:
    write_mnist(tmp_path, n_train=30, n_test=10, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(FalsifyError, match=r"t10k-images-idx3-ubyte.gz' must be a complete gzip"):
        load_mnist(_mnist(tmp_path))


def test_mnist_wrong_magic(tmp_path) -> None:
    arrays = write_mnist(tmp_path, n_train=30, n_test=10)
    # A labels file where the images belong: magic 2049, not 2051.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"]))
    with pytest.raises(FalsifyError) as exc:
        load_mnist(_mnist(tmp_path))
    msg = str(exc.value)
    assert "train-images-idx3-ubyte" in msg and "magic number 2051" in msg
    assert "Got magic number 2049" in msg


def test_mnist_label_count_must_match(tmp_path) -> None:
    arrays = write_mnist(tmp_path, n_train=30, n_test=10)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(arrays["train-labels-idx1-ubyte"][:29])
    )
    with pytest.raises(FalsifyError, match=r"one label per image.*\(30\)\. Got 29 labels"):
        load_mnist(_mnist(tmp_path))


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_round_trip(tmp_path, nested) -> None:
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    arrays = write_cifar10(folder, per_batch=12, n_test=15)
    ds = load_cifar10(CIFAR10Data(kind="cifar10", root=str(tmp_path)))
    assert ds.x_train.shape == (60, 3, 32, 32) and ds.x_test.shape == (15, 3, 32, 32)
    x3, y3 = arrays["data_batch_3"]
    assert torch.equal(ds.x_train[24:36], torch.from_numpy(x3.astype(np.float32) / 255))
    assert ds.y_train[24:36].tolist() == y3.tolist()
    # The red plane comes first in each record: pixel (0, 0, 1) is byte 1 + 1 of record 0.
    raw = (folder / "test_batch.bin").read_bytes()
    assert ds.x_test[0, 0, 0, 1].item() == pytest.approx(raw[2] / 255)
    assert ds.x_test[0, 1, 0, 0].item() == pytest.approx(raw[1 + 1024] / 255)


def test_cifar10_truncated_and_wrong_format(tmp_path) -> None:
    write_cifar10(tmp_path, per_batch=4, n_test=4)
    p = tmp_path / "data_batch_2.bin"
    p.write_bytes(p.read_bytes()[:-10])
    spec = CIFAR10Data(kind="cifar10", root=str(tmp_path))
    with pytest.raises(FalsifyError, match=r"data_batch_2.bin.*whole records of 3073 bytes"):
        load_cifar10(spec)
    x = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    p.write_bytes(cifar_bytes(x, np.array([3, 42])))  # a label byte no CIFAR-10 record has
    with pytest.raises(FalsifyError, match=r"data_batch_2.bin.*Got label 42 in record 1"):
        load_cifar10(spec)


def test_cifar10_pickle_version_is_refused(tmp_path) -> None:
    for name in ("data_batch_1", "test_batch"):
        (tmp_path / name).write_bytes(b"\x80\x04not read")
    with pytest.raises(FalsifyError, match=r"binary version.*Got the Python \(pickle\) version"):
        load_cifar10(CIFAR10Data(kind="cifar10", root=str(tmp_path)))


_HYP = """\
id: mnist_tiny
claim: Selective units matter more, on MNIST files beside the hypothesis.
population:
  data: {kind: mnist, root: mnist_files, limit_train: 100, limit_test: 50}
  model: {kind: mlp, hidden: [12]}
  training: {epochs: 2, batch_size: 50, lr: 0.01}
  seeds: 2
test:
  kind: association
  layers: [hidden1]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation, metric: loss_increase}
prediction: {direction: positive, sesoi: 0.1}
"""


def test_relative_root_resolves_against_the_hypothesis_folder(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    write_mnist(study / "mnist_files", n_train=120, n_test=60, gz=True)
    (study / "h.yaml").write_text(_HYP)
    monkeypatch.chdir(tmp_path)  # not the hypothesis folder
    out, cache = tmp_path / "reports", tmp_path / "cache"
    assert main(["check", "study/h.yaml", "--cache", str(cache)]) == 0
    assert "2 replicates, 0 cached, 2 to train" in capsys.readouterr().out
    assert main(["run", "study/h.yaml", "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    assert "mnist_tiny" in capsys.readouterr().out
    # Trained on the images read (a band of rows per class): far above chance (0.1).
    report = (out / "mnist_tiny.md").read_text()
    per_replicate = report.split("## Per replicate")[1].split("##")[0]
    accuracies = [float(r.split("|")[5]) for r in per_replicate.splitlines() if "| hidden1 |" in r]
    assert len(accuracies) == 2 and min(accuracies) > 0.5

    # A broken file is reported by `check`, naming it, in one line.
    p = study / "mnist_files" / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(20)))
    assert main(["check", "study/h.yaml", "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(p) in err and "magic number 2049" in err and "Got magic number 2051" in err
