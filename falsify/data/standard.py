"""MNIST and CIFAR-10 read from a folder the user names, in their standard distribution formats.

Nothing is downloaded. MNIST (LeCun, Bottou, Bengio & Haffner 1998) is read from its four idx
files, plain or gzipped; CIFAR-10 (Krizhevsky 2009, "Learning multiple layers of features from
tiny images") from its *binary* version, never from the Python (pickle) version, since
unpickling a file runs whatever code it names.

Formats, as published with the datasets:

- idx: a 4-byte magic number ``0x0000 TT DD`` (``TT`` = 0x08 for unsigned bytes, ``DD`` the
  number of dimensions), then ``DD`` big-endian uint32 sizes, then the data in row-major order.
  Images are magic 2051 (``0x00000803``, sizes ``n, rows, cols``), labels magic 2049
  (``0x00000801``, size ``n``).
- CIFAR-10 binary: records of 3,073 bytes, one label byte (0–9) then 3,072 pixel bytes: the
  1,024 red values of the 32×32 image row by row, then the green, then the blue.

A missing, truncated or malformed file raises a :class:`FalsifyError` that names the file and
what was expected.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.model_selection import StratifiedShuffleSplit

from falsify.data.base import Dataset
from falsify.errors import FalsifyError
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import FromFiles, Seed

__all__ = [
    "files_stamp",
    "load_cifar10",
    "load_mnist",
    "read_cifar10_batch",
    "read_idx",
    "stratified_subset",
]

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_UBYTE = 0x08


class _StandardData(FromFiles, DataKind):
    root: str = Field(min_length=1)
    limit_train: int | None = Field(None, ge=10)
    limit_test: int | None = Field(None, ge=10)
    subset_seed: Seed = 0

    docs: ClassVar[str] = "docs/own-models-and-data.md"
    example: ClassVar[dict[str, Any]] = {"root": "data"}

    def identity(self) -> dict[str, Any]:
        # The same relative root in two hypothesis files can name different folders.
        return {"data_root": str(self.resolve(self.root))}


@register
class MNISTData(_StandardData):
    """MNIST (LeCun et al. 1998) from its idx files in ``root`` (plain or ``.gz``).

    ``limit_train`` / ``limit_test`` keep a class-stratified subset fixed by ``subset_seed``.
    """

    kind: Literal["mnist"]
    label: ClassVar[str] = "MNIST (local idx files)"

    def load(self) -> Dataset:
        return load_mnist(self)


@register
class CIFAR10Data(_StandardData):
    """CIFAR-10 (Krizhevsky 2009), binary version (``data_batch_1.bin`` …) in ``root``."""

    kind: Literal["cifar10"]
    label: ClassVar[str] = "CIFAR-10 (local binary files)"

    def load(self) -> Dataset:
        return load_cifar10(self)


def _fail(what: str, path: Path, expected: str, found: str) -> FalsifyError:
    return FalsifyError(f"The {what} {str(path)!r} must be {expected}. Got {found} instead.")


def _find(root: Path, name: str, what: str) -> Path:
    """``root/name`` or ``root/name.gz``; an error naming both when neither exists."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if not root.is_dir():
        raise _fail(
            "data root (population.data.root)", root, "a folder holding the dataset", "no folder"
        )
    raise _fail(what, root / name, f"a file in {str(root)!r} (or {name}.gz)", "no such file")


def _read_bytes(path: Path, what: str) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(what, path, "a complete gzip file", f"an unreadable one ({exc})") from None


def read_idx(path: Path, ndim: int, what: str = "MNIST file") -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions, as a uint8 array."""
    raw = _read_bytes(path, what)
    magic = (_UBYTE << 8) | ndim
    kind = "images" if ndim == 3 else "labels"
    expected = f"an idx file of {kind} (magic number {magic}: unsigned bytes, {ndim} dimensions)"
    if len(raw) < 4:
        raise _fail(what, path, expected, f"{len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise _fail(what, path, expected, f"magic number {found}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _fail(what, path, f"a {header}-byte idx header", f"{len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        dims = "×".join(map(str, shape))
        raise _fail(
            what,
            path,
            f"{dims} = {size} data bytes after its {header}-byte header",
            f"{len(raw) - header} (truncated or corrupt)",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: images ``[n, 3, 32, 32]`` uint8 and labels ``[n]`` int64."""
    what = "CIFAR-10 file"
    raw = _read_bytes(path, what)
    if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
        raise _fail(
            what,
            path,
            f"whole records of {_CIFAR_RECORD} bytes (1 label byte + 3072 pixel bytes)",
            f"{len(raw)} bytes, {len(raw) % _CIFAR_RECORD} past the last whole record "
            "(truncated, or not the binary version)",
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise _fail(
            what,
            path,
            "records whose first byte is a label 0–9 (the CIFAR-10 binary version)",
            f"label {labels[bad]} in record {bad}",
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def stratified_subset(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified subset of ``limit`` examples (all when ``None``)."""
    if limit is None or limit >= len(y):
        return np.arange(len(y))
    split = StratifiedShuffleSplit(n_splits=1, train_size=limit, random_state=seed)
    idx, _ = next(split.split(np.zeros(len(y)), y))
    return np.sort(idx)


def _to_dataset(
    name: str,
    spec: MNISTData | CIFAR10Data,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Dataset:
    out = []
    for (x, y), limit in ((train, spec.limit_train), (test, spec.limit_test)):
        idx = stratified_subset(y, limit, spec.subset_seed)
        # Subset before converting, so a small limit never holds the full float copy.
        out.append(torch.from_numpy(x[idx].astype(np.float32) / 255.0))
        out.append(torch.from_numpy(y[idx].astype(np.int64)))
    return Dataset(name, out[0], out[1], out[2], out[3], n_classes=10)


def load_mnist(spec: MNISTData) -> Dataset:
    """MNIST images in [0, 1], shape ``[n, 1, rows, cols]`` (28×28); labels 0–9."""
    root = spec.resolve(spec.root)
    parts = []
    for images_name, labels_name in _MNIST_FILES.values():
        images_path = _find(root, images_name, "MNIST file")
        labels_path = _find(root, labels_name, "MNIST file")
        images = read_idx(images_path, 3)
        labels = read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise _fail(
                "MNIST file",
                labels_path,
                f"one label per image of {images_path.name} ({len(images)})",
                f"{len(labels)} labels",
            )
        if labels.max(initial=0) > 9:
            raise _fail("MNIST file", labels_path, "labels 0–9", f"label {labels.max()}")
        parts.append((images[:, None], labels))
    return _to_dataset("mnist", spec, parts[0], parts[1])


def load_cifar10(spec: CIFAR10Data) -> Dataset:
    """CIFAR-10 images in [0, 1], shape ``[n, 3, 32, 32]``; labels 0–9.

    ``root`` is the folder holding the ``.bin`` batches, or the folder the official archive
    (cifar-10-binary.tar.gz) was extracted into, which holds ``cifar-10-batches-bin/``.
    """
    root = spec.resolve(spec.root)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    if not (root / _CIFAR_TRAIN[0]).exists() and (root / "data_batch_1").exists():
        raise _fail(
            "CIFAR-10 folder",
            root,
            "the binary version (data_batch_1.bin …, from cifar-10-binary.tar.gz)",
            "the Python (pickle) version, which falsify does not unpickle",
        )
    batches = [read_cifar10_batch(_find(root, name, "CIFAR-10 file")) for name in _CIFAR_TRAIN]
    train = (
        np.concatenate([b[0] for b in batches]),
        np.concatenate([b[1] for b in batches]),
    )
    test = read_cifar10_batch(_find(root, _CIFAR_TEST, "CIFAR-10 file"))
    return _to_dataset("cifar10", spec, train, test)


def files_stamp(spec: object) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of the files under a spec's ``root``; empty for other specs."""
    root = getattr(spec, "root", None)
    if root is None or not hasattr(spec, "resolve"):
        return ()
    folder = spec.resolve(root)
    if not folder.is_dir():
        return ()
    # The root and the archive's own subfolder, not a recursive walk of a possibly large tree.
    nested = folder / "cifar-10-batches-bin"
    files = [*folder.iterdir(), *(nested.iterdir() if nested.is_dir() else ())]
    return tuple(
        (str(p), st.st_size, st.st_mtime_ns)
        for p in sorted(files)
        if p.is_file() and (st := p.stat())
    )
