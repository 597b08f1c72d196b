"""Content-addressed cache of trained models: safetensors weights + JSON metadata.

The key is the SHA-256 of everything that determines the weights: the population's data,
model and training recipe, the seed, the device type, the torch version and the version of
falsify's training code. Both files are written to a temporary name in the same folder and
renamed into place (atomic on POSIX) after their data is flushed to disk, weights first and
metadata last, so an entry whose metadata exists is whole; a run killed at any moment leaves at
most an orphaned temp file. The metadata holds the SHA-256 of the weights file, checked on every
load: an entry damaged later (a disk error, a careless edit) is a miss, retrained and
overwritten, and the run's provenance says so (``ModelCache.read``).

Two processes wanting one entry take its lock (``ModelCache.lock``, a ``filelock`` under
``root/locks/``): the second waits for the first to publish the entry and then loads it instead
of training the same model again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from falsify._io import atomic_write, atomic_write_text

__all__ = [
    "TRAINING_CODE_VERSION",
    "ModelCache",
    "checkpoint_key",
    "replicate_key",
    "weights_blob",
]

# Bump when a change to falsify's training code changes the weights it produces.
TRAINING_CODE_VERSION = 2


def replicate_key(recipe: dict[str, Any], seed: int, device: torch.device) -> str:
    """Hash of everything that determines one replicate's weights."""
    payload = {
        "recipe": recipe,
        "seed": seed,
        "device": device.type,
        "torch": torch.__version__.split("+")[0],
        "training_code": TRAINING_CODE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_key(recipe: dict[str, Any], epoch: int, seed: int, device: torch.device) -> str:
    """Hash of one replicate's checkpoint after ``epoch`` epochs of training under ``recipe``
    (``training.checkpoint_epochs``): the replicate's key material and the epoch."""
    return replicate_key({**recipe, "checkpoint_epoch": epoch}, seed, device)


class ModelCache:
    """``root/models/<key[:2]>/<key>.{safetensors,json}``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / "models" / key[:2]
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    def contains(self, key: str) -> bool:
        weights, meta = self._paths(key)
        return weights.exists() and meta.exists()

    def verified(self, key: str) -> bool:
        """Whether ``key`` holds a whole entry whose weights match their stored hash."""
        weights, meta = self._paths(key)
        try:
            expected = json.loads(meta.read_text()).get("weights_sha256")
            return expected == hashlib.sha256(weights.read_bytes()).hexdigest()
        except (OSError, ValueError, AttributeError):
            return False

    @contextmanager
    def lock(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the locks of ``keys`` (taken in sorted order, so two holders never deadlock)."""
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(FileLock(folder / f"{key}.lock"))
            yield

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the entry into ``model`` and return its metadata, or None on a miss."""
        return self.read(key, model)[0]

    def read(self, key: str, model: nn.Module) -> tuple[dict[str, Any] | None, str]:
        """``(metadata, "")`` after loading the entry into ``model``; ``(None, problem)`` on a miss.

        The problem is "" when there is no entry, else why the entry present cannot be used (a
        weights hash that does not match, an unreadable or empty file); the next save overwrites
        it. An entry from before the hash was stored is checked by loading and then gets one.
        """
        weights, meta = self._paths(key)
        if not (weights.exists() and meta.exists()):
            return None, ""
        try:
            info = json.loads(meta.read_text())
            blob = weights.read_bytes()
        except (OSError, ValueError) as e:
            return None, f"unreadable ({type(e).__name__})"
        digest = hashlib.sha256(blob).hexdigest()
        expected = info.get("weights_sha256") if isinstance(info, dict) else None
        if expected is not None and expected != digest:
            return None, "weights do not match their stored SHA-256"
        try:
            state = load(blob)
            model.load_state_dict({k: v.to(_device_of(model)) for k, v in state.items()})
        except (ValueError, RuntimeError, KeyError, SafetensorError) as e:
            return None, f"unreadable ({type(e).__name__})"
        if expected is None:
            info["weights_sha256"] = digest
            atomic_write_text(meta, json.dumps(info, indent=2))
        return info, ""

    def save(self, key: str, model: nn.Module, info: dict[str, Any]) -> None:
        self.store(key, weights_blob(model), info)

    def store(self, key: str, blob: bytes, info: dict[str, Any]) -> None:
        """Publish an entry from its safetensors bytes (a model trained on another machine)."""
        weights, meta = self._paths(key)
        weights.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(weights, lambda tmp: tmp.write_bytes(blob))
        info = info | {"weights_sha256": hashlib.sha256(blob).hexdigest()}
        atomic_write_text(meta, json.dumps(info, indent=2))


def weights_blob(model: nn.Module) -> bytes:
    """The model's weights as the bytes of a safetensors file (what an entry stores)."""
    return save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
