"""Generated colour images of CIFAR-10's size, made per index from a seed, so they stream.

``generated_images`` has CIFAR-10's shape (Krizhevsky 2009): 50,000 training and 10,000 test
images ``[3, 32, 32]`` in [0, 1], 10 classes, by default. Nothing is stored: image ``i`` of a
split is computed when it is asked for, from the seed, the split and ``i`` alone, so the 614 MB
of float32 training inputs never sit in memory as one tensor when they are streamed
(:meth:`GeneratedImagesData.stream`, docs/performance.md, "Data that does not fit in memory").

The classes have real structure. Each class ``k`` has a prototype: a smooth colour pattern, a
``[3, 4, 4]`` draw of U(0, 1) from the seed, upsampled bilinearly to 32 × 32. Image ``i`` has
class ``y_i = π(i) mod n_classes`` (π a permutation of the split from the seed, so the classes are
balanced and interleaved) and is its class's prototype with a random contrast ``c ~ U(0.5, 1.5)``
about 0.5, moved by a random circular shift of up to ``shift`` pixels along each axis, plus
pixel noise of standard deviation ``noise`` (one of 512 N(0, 1) fields, randomly shifted and
signed: :class:`GeneratedImages`), clipped to [0, 1]. A model must learn the class patterns under
shifts and noise, as on natural images; a linear model cannot read the class off one pixel.
At the defaults (``noise`` 1.0, ``shift`` 8) the task is about as hard as CIFAR-10 for small
models: trained for 3 epochs on 5,000 images (Adam, lr 0.001, batches of 128), an MLP
(256, 128) reached 60% test accuracy and the built-in cnn 68% (chance is 10%).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset as TorchDataset

from falsify.data.base import Dataset
from falsify.data.stream import StreamedDataset, gather
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import Seed

__all__ = ["GeneratedImages", "GeneratedImagesData"]

_SHAPE = (3, 32, 32)
_BANK = 512  # noise fields drawn from the seed, each moved per image


@register
class GeneratedImagesData(DataKind):
    """CIFAR-10-sized generated colour images with class structure, made per index from
    ``seed`` (see :mod:`falsify.data.generated_images`); streamable."""

    kind: Literal["generated_images"]
    n_train: int = Field(50_000, ge=10)
    n_test: int = Field(10_000, ge=10)
    n_classes: int = Field(10, ge=2, le=100)
    noise: float = Field(1.0, ge=0.0)
    shift: int = Field(8, ge=0, le=16)
    seed: Seed = 0

    label: ClassVar[str] = "generated CIFAR-10-sized images"
    streams: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/performance.md"
    example: ClassVar[dict[str, Any]] = {"n_train": 200, "n_test": 100}

    def streamed(self) -> StreamedDataset:
        """The two splits as map-style torch Datasets; nothing is generated until asked for."""
        train, test = GeneratedImages(self, "train"), GeneratedImages(self, "test")
        return StreamedDataset(
            "generated_images", train, test, train.targets, test.targets, self.n_classes
        )

    def load(self) -> Dataset:
        """Every image generated and held in memory: the same values as :meth:`stream` gives."""
        parts = []
        for split in (GeneratedImages(self, "train"), GeneratedImages(self, "test")):
            parts.extend(gather(split, range(len(split))))
        return Dataset("generated_images", *parts, n_classes=self.n_classes)


class GeneratedImages(TorchDataset):
    """One split of :class:`GeneratedImagesData` as a map-style Dataset of ``(x, y)`` items.

    What varies per image (class, contrast, shift, which noise field and how it is moved) is a
    few numbers per index drawn once from the seed (:attr:`params`, about 50 bytes an image);
    the pixels are computed from them when the image is asked for. The noise is one of
    ``_BANK`` fields of N(0, 1) pixels drawn from the seed, moved by a random circular shift and
    sign: about 10⁶ distinct noise images. An image is computed by elementwise operations and
    gathers alone, so it is the same bit for bit whichever batch it is made in.
    """

    def __init__(self, spec: GeneratedImagesData, split: Literal["train", "test"]) -> None:
        self.spec = spec
        self.split = split
        self.n = spec.n_train if split == "train" else spec.n_test

    def __len__(self) -> int:
        return self.n

    @cached_property
    def prototypes(self) -> torch.Tensor:
        """``[n_classes, 3, 32, 32]``: each class's smooth colour pattern (shared by the splits)."""
        g = torch.Generator().manual_seed(self.spec.seed)
        coarse = torch.rand(self.spec.n_classes, 3, 4, 4, generator=g)
        return F.interpolate(coarse, size=_SHAPE[1:], mode="bilinear", align_corners=False)

    @cached_property
    def noise_bank(self) -> torch.Tensor:
        """``[_BANK, 3, 32, 32]`` fields of N(0, 1) pixel noise (shared by the splits)."""
        g = torch.Generator().manual_seed(self.spec.seed + 2**32)
        return torch.randn(_BANK, *_SHAPE, generator=g)

    @cached_property
    def params(self) -> dict[str, torch.Tensor]:
        """Per image of the split: ``targets`` (class), ``contrast``, ``shift`` ``[n, 2]`` of
        the prototype, ``pick``, ``noise_shift`` ``[n, 2]`` and ``sign`` of the noise field."""
        split_bit = 0 if self.split == "train" else 1
        g = torch.Generator().manual_seed(2 * self.spec.seed + split_bit + 1)
        n, s = self.n, self.spec.shift
        return {
            "targets": torch.randperm(n, generator=g) % self.spec.n_classes,
            "contrast": 0.5 + torch.rand(n, generator=g),
            "shift": torch.randint(-s, s + 1, (n, 2), generator=g),
            "pick": torch.randint(0, _BANK, (n,), generator=g),
            "noise_shift": torch.randint(0, _SHAPE[1], (n, 2), generator=g),
            "sign": 2.0 * torch.randint(0, 2, (n,), generator=g) - 1.0,
        }

    @property
    def targets(self) -> torch.Tensor:
        """``[n]`` int64: the class of every image of the split (small, so held)."""
        return self.params["targets"]

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """``[len(idx), 3, 32, 32]``: the images at indices ``idx``, in [0, 1]."""
        p = {k: v[idx] for k, v in self.params.items()}
        proto = _rolled(self.prototypes, p["targets"], p["shift"])
        noise = _rolled(self.noise_bank, p["pick"], p["noise_shift"])
        c, sign = p["contrast"][:, None, None, None], p["sign"][:, None, None, None]
        # 0.5 + c · (proto − 0.5) + noise · sign · field, in place: two image-sized buffers.
        img = proto.sub_(0.5).mul_(c).add_(0.5).add_(noise.mul_(self.spec.noise * sign))
        return img.clamp_(0.0, 1.0)

    def _index(self, indices: list[int]) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            bad = next(i for i in indices if not 0 <= i < self.n)
            raise IndexError(f"image {bad} of a split of {self.n}")
        return idx

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._index([i])
        return self.images(idx)[0], self.targets[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch at once (torch's ``DataLoader`` calls this): ``(x [n, 3, 32, 32], y [n])``."""
        idx = self._index(indices)
        return self.images(idx), self.targets[idx]


def _rolled(fields: torch.Tensor, which: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``fields[which[i]]`` circularly shifted by ``shift[i] = (rows, cols)``, ``[n, 3, H, W]``:
    ``torch.roll`` per image, as one gather."""
    _, h, w = _SHAPE
    rows = (torch.arange(h)[None, :] - shift[:, :1]) % h  # [n, H]
    cols = (torch.arange(w)[None, :] - shift[:, 1:]) % w  # [n, W]
    b = which[:, None, None, None]
    ch = torch.arange(_SHAPE[0])[None, :, None, None]
    return fields[b, ch, rows[:, None, :, None], cols[:, None, None, :]]
