"""The user's own data, from a function named by import path (``data: {loader: "pkg.mod:fn"}``).

The function is called with ``kwargs`` and returns either ``(x_train, y_train, x_test, y_test)``
(tensors or arrays; ``y`` holds class indices) or a pair ``(train, test)`` of
``torch.utils.data.Dataset`` whose items are ``(x, y)``. :meth:`UserData.load` holds
everything in memory as float32 inputs and int64 labels, like the built-in datasets;
:meth:`UserData.stream` keeps a pair of map-style Datasets as they are and reads them in batches
(:mod:`falsify.data.stream`; docs/own-models-and-data.md, "Data that does not fit in memory").
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from falsify._imports import UserCodeError, call_user, import_callable, source_sha256
from falsify.data.base import Dataset
from falsify.data.stream import StreamedDataset, gather, labels_of
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import IMPORT_PATH, FromFiles, hash_by_json

__all__ = ["load_user_data", "stream_user_data"]

_LOC = ("population", "data", "loader")
_SHAPE = "(x_train, y_train, x_test, y_test) tensors or a (train, test) pair of torch Datasets"


@register
class UserData(FromFiles, DataKind):
    """The user's own data: ``loader`` is ``"package.module:function"``, called with ``kwargs``.

    The function returns ``(x_train, y_train, x_test, y_test)`` tensors or a pair of
    ``torch.utils.data.Dataset`` (train, test) whose items are ``(x, y)``.
    """

    loader: str = Field(pattern=IMPORT_PATH)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    label: ClassVar[str] = "the user's data (loader)"
    streams: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/own-models-and-data.md"
    import_path_key: ClassVar[str | None] = "loader"
    example: ClassVar[dict[str, Any]] = {"loader": "package.module:function"}

    @property
    def kind(self) -> str:
        return "loader"

    __hash__ = hash_by_json

    def load(self) -> Dataset:
        return load_user_data(self)

    def streamed(self) -> StreamedDataset:
        """The function's ``(train, test)`` Datasets, not materialized: streamed in batches.
        Tensors it returns are wrapped as they are (they are in memory already)."""
        return stream_user_data(self)

    def identity(self) -> dict[str, Any]:
        # Editing the loader's source file changes the data, so it retrains.
        fn = import_callable(self.loader, _LOC, [self.base_dir])
        return {"loader_source_sha256": source_sha256(fn)}


def _as_tensor(v: Any, what: str, text: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    raise UserCodeError(
        _LOC, f"a function returning {_SHAPE}", f"{text} -> {what} of type {type(v).__name__}"
    )


def _materialize(ds: TorchDataset, what: str, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        batches = list(DataLoader(ds, batch_size=1024, shuffle=False))
        xs, ys = zip(*batches, strict=True)
        return torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserCodeError(
            _LOC,
            f"a function returning {_SHAPE}, whose items are (x, y)",
            f"{text} -> a {what} dataset whose items cannot be batched ({exc})",
        ) from None


def load_user_data(spec: UserData) -> Dataset:
    fn = import_callable(spec.loader, _LOC, [spec.base_dir])
    result = call_user(fn, _LOC, spec.loader, **spec.kwargs)
    text = spec.loader
    if isinstance(result, tuple | list) and len(result) == 2:
        if not all(isinstance(d, TorchDataset) for d in result):
            raise UserCodeError(
                _LOC,
                f"a function returning {_SHAPE}",
                f"{text} -> a pair of {[type(d).__name__ for d in result]}",
            )
        x_tr, y_tr = _materialize(result[0], "train", text)
        x_te, y_te = _materialize(result[1], "test", text)
    elif isinstance(result, tuple | list) and len(result) == 4:
        names = ("x_train", "y_train", "x_test", "y_test")
        x_tr, y_tr, x_te, y_te = (
            _as_tensor(v, n, text) for v, n in zip(result, names, strict=True)
        )
    else:
        found = (
            f"a {len(result)}-tuple" if isinstance(result, tuple | list) else type(result).__name__
        )
        raise UserCodeError(_LOC, f"a function returning {_SHAPE}", f"{text} -> {found}")
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        problem = None
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            problem = f"y_{split} of shape {list(y.shape)} and dtype {y.dtype} (class indices: 1-D integers)"
        elif len(x) != len(y):
            problem = f"{len(x)} x_{split} rows but {len(y)} labels"
        elif len(y) == 0:
            problem = f"an empty {split} split"
        elif int(y.min()) < 0:
            problem = f"a negative class index in y_{split}"
        if problem:
            raise UserCodeError(_LOC, f"a function returning {_SHAPE}", f"{text} -> {problem}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserCodeError(
            _LOC,
            "a function returning train and test inputs of the same shape",
            f"{text} -> {list(x_tr.shape[1:])} vs {list(x_te.shape[1:])}",
        )
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(
        name=f"loader {text}",
        x_train=x_tr.to(torch.float32),
        y_train=y_tr.to(torch.int64),
        x_test=x_te.to(torch.float32),
        y_test=y_te.to(torch.int64),
        n_classes=n_classes,
    )


def stream_user_data(spec: UserData) -> StreamedDataset:
    """The user's data as a :class:`~falsify.data.stream.StreamedDataset`: a returned pair of
    Datasets is kept (its first item of each split is checked to batch into ``(x, y)``, and the
    labels are read once, as :func:`falsify.data.stream.labels_of` does); four tensors are
    checked as :func:`load_user_data` checks them and wrapped in ``TensorDataset``."""
    fn = import_callable(spec.loader, _LOC, [spec.base_dir])
    result = call_user(fn, _LOC, spec.loader, **spec.kwargs)
    text = spec.loader
    if not (
        isinstance(result, tuple | list)
        and len(result) == 2
        and all(isinstance(d, TorchDataset) for d in result)
    ):
        data = load_user_data(spec)
        return StreamedDataset(
            data.name,
            TensorDataset(data.x_train, data.y_train),
            TensorDataset(data.x_test, data.y_test),
            data.y_train,
            data.y_test,
            data.n_classes,
        )
    ys = []
    for ds, split in zip(result, ("train", "test"), strict=True):
        try:
            if len(ds) == 0:
                raise ValueError("no items")
            x1, _ = gather(ds, [0])
            y = labels_of(ds)
        except (TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise UserCodeError(
                _LOC,
                f"a function returning {_SHAPE}, whose items are (x, y)",
                f"{text} -> a {split} dataset whose items cannot be batched ({exc})",
            ) from None
        if int(y.min()) < 0:
            raise UserCodeError(
                _LOC,
                f"a function returning {_SHAPE}",
                f"{text} -> a negative class index in y_{split}",
            )
        ys.append((x1.shape[1:], y))
    if ys[0][0] != ys[1][0]:
        raise UserCodeError(
            _LOC,
            "a function returning train and test inputs of the same shape",
            f"{text} -> {list(ys[0][0])} vs {list(ys[1][0])}",
        )
    n_classes = int(max(ys[0][1].max(), ys[1][1].max())) + 1
    return StreamedDataset(f"loader {text}", *result, ys[0][1], ys[1][1], n_classes)
