"""Content-addressed cache of trained models: safetensors weights + JSON metadata.

The key is the SHA-256 of everything that determines the weights: the population's data,
model and training recipe, the seed, the device type, the torch version and the version of
falsify's training code. Both files are written to a temporary name in the same folder and
renamed into place (atomic on POSIX), weights first and metadata last, so an entry whose
metadata exists is whole; a run killed at any moment leaves at most an orphaned temp file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from falsify._io import atomic_write, atomic_write_text

__all__ = ["TRAINING_CODE_VERSION", "ModelCache", "replicate_key"]

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

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the entry into ``model`` and return its metadata, or None on a miss.

        An unreadable entry (e.g. written by an incompatible version) counts as a miss and is
        overwritten by the next save.
        """
        weights, meta = self._paths(key)
        if not (weights.exists() and meta.exists()):
            return None
        try:
            info = json.loads(meta.read_text())
            model.load_state_dict(load_file(str(weights), device=str(_device_of(model))))
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError):
            return None
        return info

    def save(self, key: str, model: nn.Module, info: dict[str, Any]) -> None:
        weights, meta = self._paths(key)
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
        atomic_write_text(meta, json.dumps(info, indent=2))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
