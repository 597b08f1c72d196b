"""Examples streamed in batches from a map-style ``torch.utils.data.Dataset``, for data that does
not fit in memory (docs/performance.md, "Data that does not fit in memory").

A *source* is either an in-memory pair ``(x, y)`` of tensors or a map-style torch Dataset whose
items are ``(x, y)``. :func:`batches` iterates either in batches of at most ``batch_size``
examples, in index order or in a given order; :func:`gather` fetches the examples at some
indices. A Dataset may define ``__getitems__(indices) -> (x, y)`` returning the whole batch at
once (as :class:`falsify.data.generated_images.GeneratedImages` does, generating it vectorized);
otherwise its items are fetched one by one and stacked by torch's ``default_collate``. Either
way inputs come out float32 (int64 inputs are kept: token ids) and labels int64, as the
in-memory datasets hold them, so a streamed batch equals the same rows of the in-memory tensors
bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate
from torch.utils.data import Dataset as TorchDataset

__all__ = [
    "Inputs",
    "Relabelled",
    "Source",
    "StreamedDataset",
    "batches",
    "first_inputs",
    "gather",
    "inputs_of",
    "is_stream",
    "labels_of",
    "model_batches",
    "n_examples",
    "on_device",
    "with_labels",
]

Source = tuple[torch.Tensor, torch.Tensor] | TorchDataset


def is_stream(source: Any) -> bool:
    """Whether ``source`` is a map-style torch Dataset (streamed) rather than tensors."""
    return isinstance(source, TorchDataset)


def n_examples(source: Source) -> int:
    """The number of examples of ``source``."""
    return len(source) if is_stream(source) else len(source[0])  # type: ignore[arg-type,index]


def _as_batch(items: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Items as a batch ``(x, y)``: a batch ``__getitems__`` already made, or stacked items."""
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], torch.Tensor):
        x, y = items
    else:
        x, y = default_collate(items)
    x = torch.as_tensor(x)
    if x.dtype != torch.int64:  # int64 inputs are token ids; the rest are values, as float32
        x = x.to(torch.float32)
    return x, torch.as_tensor(y).to(torch.int64)


def gather(source: Source, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of ``source`` at ``idx``, in that order, as ``(x [len(idx), …], y)``."""
    if not is_stream(source):
        x, y = source  # type: ignore[misc]
        return x[idx], y[idx]
    indices = [int(i) for i in idx]
    getitems = getattr(source, "__getitems__", None)
    if callable(getitems):
        return _as_batch(getitems(indices))
    return _as_batch([source[i] for i in indices])  # type: ignore[index]


def batches(
    source: Source,
    batch_size: int,
    order: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of at most ``batch_size`` examples, in index order or in ``order``.

    Tensors are sliced; a Dataset is read through a ``DataLoader`` (no worker processes, so the
    batches and their order are the same on every run). ``device`` moves each batch there.
    """
    n = n_examples(source)
    if not is_stream(source):
        x, y = source  # type: ignore[misc]
        for start in range(0, n, batch_size):
            if order is None:
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                xb, yb = x[idx], y[idx]
            yield (xb, yb) if device is None else (xb.to(device), yb.to(device))
        return
    sampler = (order if order is not None else torch.arange(n)).tolist()
    chunks = [sampler[i : i + batch_size] for i in range(0, n, batch_size)]
    loader = DataLoader(source, batch_sampler=chunks, collate_fn=_as_batch)  # type: ignore[arg-type]
    for xb, yb in loader:
        yield (xb, yb) if device is None else (xb.to(device), yb.to(device))


def model_batches(
    model: torch.nn.Module, x: torch.Tensor | TorchDataset, y: torch.Tensor, batch_size: int = 1024
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches for ``model``, in index order: slices of the tensors ``x`` and ``y``
    as they are, or a streamed split's batches (its items carry the labels ``y``,
    :meth:`StreamedDataset.split`) moved onto the model's device."""
    if is_stream(x):
        return batches(x, batch_size, device=next(model.parameters()).device)
    return batches((x, y), batch_size)  # type: ignore[arg-type]


def labels_of(source: Source, batch_size: int = 1024) -> torch.Tensor:
    """Every label of ``source``, int64 ``[n]``: a Dataset's ``targets`` attribute where it has
    one (torchvision's convention; :class:`~falsify.data.generated_images.GeneratedImages`), or
    one pass over its items otherwise. Labels are small, so they are held in memory."""
    if not is_stream(source):
        return source[1]  # type: ignore[index]
    targets = getattr(source, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).to(torch.int64)
    return torch.cat([yb for _, yb in batches(source, batch_size)])


@dataclass(frozen=True)
class StreamedDataset:
    """A train/test split streamed from two map-style torch Datasets; the counterpart of
    :class:`falsify.data.base.Dataset` for data that is not held in memory. The labels
    (:func:`labels_of`, int64 ``[n]``) are small and held."""

    name: str
    train: TorchDataset
    test: TorchDataset
    y_train: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(gather(self.train, [0])[0].shape[1:])

    def split(self, which: str) -> tuple[TorchDataset, torch.Tensor]:
        """``(dataset, labels)`` of the ``"train"`` or ``"test"`` split, as
        :meth:`falsify.data.base.Dataset.split` gives ``(x, y)``: what a kind that streams
        (``streams``) receives as its ``x`` and ``y`` (docs/performance.md)."""
        if which == "train":
            return self.train, self.y_train
        return self.test, self.y_test


class Relabelled(TorchDataset):
    """``dataset``'s inputs with the labels ``y`` (int64 ``[n]``, held): a streamed split read
    with other labels than its items carry, e.g. the training labels after label noise
    (:func:`falsify.data.labels.training_labels`), so every consumer of ``(x, y)`` items sees
    the labels the caller means."""

    def __init__(self, dataset: TorchDataset, y: torch.Tensor) -> None:
        self.dataset = dataset
        self.targets = y.cpu()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return gather(self.dataset, [i])[0][0], self.targets[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return gather(self.dataset, indices)[0], self.targets[indices]


def with_labels(x: torch.Tensor | TorchDataset, y: torch.Tensor, labels: torch.Tensor) -> Any:
    """``x`` read with ``labels`` instead of ``y``: a tensor as it is (the caller passes the
    labels), a streamed split relabelled (:class:`Relabelled`) unless they are ``y`` itself."""
    if not is_stream(x) or labels is y:
        return x
    return Relabelled(x, labels)  # type: ignore[arg-type]


def first_inputs(x: torch.Tensor | TorchDataset, n: int = 1) -> torch.Tensor:
    """The first ``n`` inputs of ``x``, a tensor or a streamed split, as a tensor (what a
    check or a unit count runs the model on)."""
    if is_stream(x):
        return gather(x, range(min(n, len(x))))[0]  # type: ignore[arg-type]
    return x[:n]  # type: ignore[index]


def on_device(x: torch.Tensor | TorchDataset, device: torch.device) -> Any:
    """A tensor moved to ``device``; a streamed split as it is (each batch is moved to the
    model's device as it is read)."""
    return x if is_stream(x) else x.to(device)  # type: ignore[union-attr]


class Inputs:
    """The inputs of a streamed split, fetched by index onto ``device``: ``inputs[idx]`` (an index
    tensor, a list or a slice) is ``gather(dataset, idx)``'s inputs, as ``x[idx]`` of the
    in-memory tensor would be. Training reads its mini-batches this way."""

    def __init__(self, dataset: TorchDataset, device: torch.device) -> None:
        self.dataset = dataset
        self.device = device

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, idx: torch.Tensor | slice | Sequence[int]) -> torch.Tensor:
        if isinstance(idx, slice):
            idx = range(len(self))[idx]
        elif isinstance(idx, torch.Tensor):
            idx = idx.tolist()
        return gather(self.dataset, idx)[0].to(self.device)


def inputs_of(data: Any, which: str, device: torch.device) -> torch.Tensor | Inputs:
    """The inputs of split ``which`` of ``data`` on ``device``: the tensor of an in-memory
    :class:`~falsify.data.base.Dataset`, or :class:`Inputs` of a :class:`StreamedDataset`."""
    if isinstance(data, StreamedDataset):
        return Inputs(data.split(which)[0], device)
    return data.split(which)[0].to(device)
