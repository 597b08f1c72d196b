"""Trained weights a user supplies: safetensors files or ``.pt`` state dicts, one per seed.

``checkpoint: "ckpt/net_{seed}.safetensors"`` (a template formatted with each seed) or a list of
paths, one per seed in order. A ``.safetensors`` file is read with safetensors; any other file
with ``torch.load(..., weights_only=True)``, which only reconstructs tensors and plain
containers: a pickled full module (``torch.save(model)``) is refused, never unpickled, since
unpickling runs whatever code the file names. Relative paths resolve against the hypothesis
file's folder.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from falsify._imports import UserCodeError
from falsify.hypothesis.types import Checkpointed

__all__ = ["checkpoint_paths", "file_sha256", "load_checkpoint", "read_state_dict"]

_LOC = ("population", "model", "checkpoint")
_STATE_DICT = "a state dict (torch.save(model.state_dict(), path) or safetensors)"


def checkpoint_paths(spec: Checkpointed, seeds: tuple[int, ...]) -> dict[int, Path]:
    """Seed → checkpoint file, from a ``{seed}`` template or a list with one path per seed."""
    ckpt = spec.checkpoint
    if ckpt is None:
        return {}
    if isinstance(ckpt, str):
        if "{seed}" not in ckpt:
            raise UserCodeError(
                _LOC,
                "a path template containing '{seed}', or a list of paths with one per seed "
                "(one file for every seed would make every replicate the same model)",
                ckpt,
            )
        return {s: spec.resolve(ckpt.replace("{seed}", str(s))) for s in seeds}
    if len(ckpt) != len(seeds):
        raise UserCodeError(
            _LOC, f"a list of {len(seeds)} paths, one per seed {list(seeds)}", f"{len(ckpt)} paths"
        )
    return {s: spec.resolve(p) for s, p in zip(seeds, ckpt, strict=True)}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, loaded on the CPU without unpickling any code."""
    if not path.is_file():
        raise UserCodeError(_LOC, "an existing checkpoint file", str(path))
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserCodeError(_LOC, "a readable safetensors file", f"{path} ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        raise UserCodeError(
            _LOC,
            f"{_STATE_DICT}; a pickled full module (torch.save(model)) is refused, since "
            "unpickling it would run code",
            f"{path}, a pickle that needs " + (needs.group(1) if needs else "arbitrary code"),
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UserCodeError(_LOC, _STATE_DICT, f"{path}, unreadable ({exc})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        found = type(state).__name__
        if isinstance(state, dict):
            bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
            found = f"a dict with non-tensor entries {bad[:3]}"
        raise UserCodeError(_LOC, f"{_STATE_DICT}: names mapped to tensors", f"{path}: {found}")
    return state


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; the first key or shape that differs is named."""
    state = read_state_dict(path)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise UserCodeError(
                _LOC, "a state dict with the model's keys", f"{path}: missing key {key!r}"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserCodeError(
                _LOC,
                "a state dict with the model's shapes",
                f"{path}: {key!r} has shape {list(state[key].shape)}, the model's "
                f"{list(tensor.shape)}",
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise UserCodeError(
            _LOC, "a state dict with the model's keys", f"{path}: unexpected key {extra[0]!r}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
