"""Writers for the standard dataset formats, so tests can build small MNIST / CIFAR-10 folders.

The byte layouts follow the datasets' own documentation (yann.lecun.com/exdb/mnist, "FILE
FORMATS FOR THE MNIST DATABASE"; cs.toronto.edu/~kriz/cifar.html, "Binary version"), written
here independently of falsify's readers.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: magic 0x0000 08 DD, big-endian uint32 sizes, the data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes(order="C")


def class_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images: class ``k`` lights a band of rows, plus noise; balanced labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    rows = shape[-2]
    band = max(1, rows // 10)
    for i, k in enumerate(y):
        x[i, ..., k * band : (k + 1) * band, :] = 255
    return x, y.astype(np.uint8)


def write_mnist(
    root: Path, n_train: int = 200, n_test: int = 100, gz: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four MNIST idx files (28×28 images), plain or ``.gz``; returns the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = class_images(n_train, (28, 28), seed)
    x_te, y_te = class_images(n_test, (28, 28), seed + 1)
    arrays = {
        "train-images-idx3-ubyte": x_tr,
        "train-labels-idx1-ubyte": y_tr,
        "t10k-images-idx3-ubyte": x_te,
        "t10k-labels-idx1-ubyte": y_te,
    }
    for name, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


def cifar_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """Records of 1 label byte + 1024 red + 1024 green + 1024 blue bytes (rows in order)."""
    out = bytearray()
    for img, label in zip(x, y, strict=True):  # img [3, 32, 32]
        out.append(int(label))
        for channel in range(3):
            for row in range(32):
                out.extend(int(v) for v in img[channel, row])
    return bytes(out)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0) -> dict:
    """data_batch_1..5.bin and test_batch.bin; returns the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(1, 6):
        x, y = class_images(per_batch, (3, 32, 32), seed + i)
        (root / f"data_batch_{i}.bin").write_bytes(cifar_bytes(x, y))
        out[f"data_batch_{i}"] = (x, y)
    x, y = class_images(n_test, (3, 32, 32), seed + 10)
    (root / "test_batch.bin").write_bytes(cifar_bytes(x, y))
    out["test_batch"] = (x, y)
    return out
