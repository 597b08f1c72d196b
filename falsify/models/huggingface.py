"""A Hugging Face ``transformers`` causal language model built from a local config.

``model: {kind: huggingface, config: {model_type: gpt2, n_layer: 2, ...}}`` (or ``config:
path/to/config.json``, relative to the hypothesis file) builds
``AutoModelForCausalLM.from_config`` with random weights drawn from the replicate's seed: no
hub access, nothing downloaded. falsify trains it on a sequence task like its own
``transformer`` (docs/sequence-models.md, "Hugging Face models"). Layers are the model's own
``named_modules()`` paths (``transformer.h.0.mlp.act`` for a GPT-2); its units are declared in
the file (``population.model.units``, docs/own-models-and-data.md, "Declaring a unit view").

The wrapper takes token ids ``[batch, T]`` and returns the logits tensor ``[batch, T,
n_classes]`` (the model's output object's ``logits``, cut to the task's answer tokens), which is
what every falsify measure and intervention reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.kinds import ArchitectureKind, register

__all__ = ["HuggingFaceLM", "HuggingFaceSpec"]

_LOC = ("population", "model", "config")


class HuggingFaceLM(nn.Module):
    """A ``transformers`` causal LM whose forward returns the logits tensor.

    The model's top-level children are registered on this module under their own names, so
    ``named_modules()`` paths and state-dict keys are the Hugging Face model's own.
    """

    def __init__(self, hf: nn.Module, n_classes: int) -> None:
        super().__init__()
        for name, child in hf.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_hf", hf)  # not a submodule: its children are ours already
        self.n_classes = n_classes

    def train(self, mode: bool = True) -> HuggingFaceLM:
        super().train(mode)
        self._hf.training = mode
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [b, T] -> [b, T, n_classes]
        if tokens.is_floating_point():
            raise FalsifyError(
                "The Hugging Face model's input must be token ids [batch, T] (a sequence task "
                f"such as kind: induction). Got a {tokens.dtype} tensor instead."
            )
        return self._hf(input_ids=tokens, use_cache=False).logits[..., : self.n_classes]


@register
class HuggingFaceSpec(ArchitectureKind):
    """A ``transformers`` causal LM from a local config: a mapping of its fields (with
    ``model_type``) or the path of a ``config.json``."""

    kind: Literal["huggingface"]
    config: str | dict[str, Any]
    # Unset: the task's token count (n_classes + 1) and sequence length.
    vocab_size: int | None = Field(None, ge=1)
    n_positions: int | None = Field(None, ge=1)

    label: ClassVar[str] = "Hugging Face transformers model (local config)"
    docs: ClassVar[str] = "docs/sequence-models.md"
    example: ClassVar[dict[str, Any]] = {
        "config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2}
    }

    def identity(self) -> dict[str, Any]:
        if isinstance(self.config, str):
            return {"config_sha256": hashlib.sha256(self._config_path().read_bytes()).hexdigest()}
        return {}

    def _config_path(self) -> Path:
        path = self.resolve(self.config) if isinstance(self.config, str) else None
        if path is None or not path.is_file():
            raise LocatedError(_LOC, "a config.json file", str(path))
        return path

    def _fields(self) -> dict[str, Any]:
        if isinstance(self.config, dict):
            return dict(self.config)
        path = self._config_path()
        try:
            fields = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LocatedError(_LOC, "a readable JSON config", f"{path} ({e})") from None
        if not isinstance(fields, dict):
            raise LocatedError(_LOC, "a JSON object", f"{path}: {type(fields).__name__}")
        return fields

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> HuggingFaceLM:
        import transformers

        if len(input_shape) != 1:
            raise FalsifyError(
                "The 'population.model' must be an architecture for this data: a Hugging Face "
                f"language model needs token sequences [T]. Got inputs of shape "
                f"{list(input_shape)} instead (use a sequence task such as kind: induction)."
            )
        fields = self._fields()
        model_type = fields.pop("model_type", None)
        if model_type not in transformers.CONFIG_MAPPING:
            known = sorted(transformers.CONFIG_MAPPING.keys())
            raise LocatedError(
                (*_LOC, "model_type"), "a transformers model type", model_type, known
            )
        if fields.get("tie_word_embeddings"):
            raise LocatedError(
                (*_LOC, "tie_word_embeddings"),
                "false (falsify stores weights as safetensors, which refuses shared tensors)",
                "true",
            )
        vocab = self.vocab_size or n_classes + 1
        if vocab < n_classes + 1:
            raise LocatedError(
                ("population", "model", "vocab_size"),
                f"at least the task's token count ({n_classes + 1})",
                vocab,
            )
        fields.update(vocab_size=vocab, tie_word_embeddings=False)
        fields.setdefault("n_positions", self.n_positions or int(input_shape[0]))
        for special in ("bos_token_id", "eos_token_id", "pad_token_id"):
            fields.setdefault(special, None)  # the tasks have no such tokens
        try:
            config = transformers.AutoConfig.for_model(model_type, **fields)
            hf = transformers.AutoModelForCausalLM.from_config(config)
        except (TypeError, ValueError) as e:
            raise LocatedError(_LOC, f"a config {model_type} models accept", str(e)) from None
        return HuggingFaceLM(hf, n_classes)
