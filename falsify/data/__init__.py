"""Datasets, looked up by ``kind``. Nothing is downloaded: ``digits`` ships with scikit-learn;
``mnist`` and ``cifar10`` are read from a folder the user names; ``loader`` is the user's own."""

from __future__ import annotations

import functools

from falsify.data.base import Dataset
from falsify.data.standard import files_stamp
from falsify.data.stream import StreamedDataset
from falsify.errors import FalsifyError
from falsify.hypothesis.kinds import DataKind

__all__ = ["Dataset", "load_dataset"]


def load_dataset(spec: DataKind) -> Dataset | StreamedDataset:
    """Load the dataset a validated spec names (memoized: specs are frozen and hashable); with
    ``stream: true``, its :class:`~falsify.data.stream.StreamedDataset`, read in batches.

    Data read from a folder is memoized with its files' sizes and times, so an edited or
    replaced file is read again.
    """
    return _load(spec, files_stamp(spec))


@functools.lru_cache(maxsize=8)
def _load(spec: DataKind, _stamp: tuple[tuple[str, int, int], ...]) -> Dataset:
    try:
        return spec.streamed() if spec.stream else spec.load()  # type: ignore[attr-defined]
    except ValueError as exc:
        # scikit-learn's split refuses e.g. a test set smaller than the number of classes.
        raise FalsifyError(
            f"The 'population.data' ({spec.kind}) cannot be split as asked: {exc}"
        ) from None
