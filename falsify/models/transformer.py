"""A decoder-only transformer with named hook points, for the sequence tasks.

Token ids ``[batch, T]`` (int64, ids ``0..n_classes``, docs/sequence-models.md) go through a
token and a learned positional embedding, ``n_layers`` blocks (causal multi-head attention, then
an MLP unless ``d_mlp`` is 0; pre-layer-norm when ``layer_norm``), an optional final layer norm
and an unembedding to logits ``[batch, T, n_classes]``. Every component a claim can name is an
``nn.Identity`` hook point, so the forward hooks of :mod:`falsify.hooks` read and replace it by
its ``named_modules()`` path:

- ``blocks.{i}.hook_resid_pre``, ``blocks.{i}.hook_resid_post``: the residual stream ``[b, T,
  d_model]`` before and after block ``i``;
- ``blocks.{i}.attn.hook_pattern``: attention probabilities ``[b, heads, query, key]``;
- ``blocks.{i}.attn.hook_z``: each head's output before ``W_O``, ``[b, T, heads, d_head]``; the
  heads are its units (unit view axis 2, the head's whole output at every position);
- ``blocks.{i}.mlp.hook_post``: the MLP's post-ReLU neurons ``[b, T, d_mlp]``; the neurons are
  its units (axis 2, averaged over positions; a file reads them at one position with
  ``population.model.units``, e.g. ``{axis: 2, position: -1}`` for an answer at the end).

:meth:`Transformer.cut` runs the model once to a head or neuron layer and keeps that layer's
output and the residual stream; :meth:`Transformer.resume` runs the rest of the model from an
edited copy of the layer's output. The ablation engine's ``resume`` strategy uses them
(docs/performance.md, "Strategies"); ``forward`` is composed of the same pieces, so the two
agree bit for bit.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.errors import FalsifyError
from falsify.hypothesis.kinds import ArchitectureKind, register
from falsify.units import UnitView

__all__ = ["HEADS", "NEURONS", "Attention", "Block", "Transformer", "TransformerMLP"]

HEADS = UnitView(axis=2)  # hook_z [b, T, heads, d_head]: a head is its output at every position
NEURONS = UnitView(axis=2)  # mlp.hook_post [b, T, d_mlp]: a neuron averaged over positions


class Attention(nn.Module):
    """Causal multi-head attention with per-head weights ``W_Q, W_K, W_V`` ``[heads, d_model,
    d_head]`` and ``W_O`` ``[heads, d_head, d_model]`` (the layout of Elhage et al. 2021)."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int) -> None:
        super().__init__()
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(n_heads * d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("causal", torch.ones(n_ctx, n_ctx).tril().bool(), persistent=False)
        self.hook_pattern = nn.Identity()
        self.hook_z = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, T, d_model] -> [b, T, d_model]
        return self.out(self.z(x))

    def z(self, x: torch.Tensor) -> torch.Tensor:  # [b, T, d_model] -> hook_z [b, T, h, d_head]
        """Each head's output before ``W_O`` (after ``hook_z``)."""
        t = x.shape[1]
        q = torch.einsum("btd,hde->bhte", x, self.W_Q)
        k = torch.einsum("btd,hde->bhte", x, self.W_K)
        v = torch.einsum("btd,hde->bthe", x, self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [b, h, q, k]
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        return self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # [b, T, h, d_head]

    def out(self, z: torch.Tensor) -> torch.Tensor:  # [b, T, h, d_head] -> [b, T, d_model]
        """The heads' outputs through ``W_O``, summed over heads."""
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class TransformerMLP(nn.Module):
    """``W_out(ReLU(W_in x))`` at every position; ``hook_post`` holds the neurons."""

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.W_in = nn.Linear(d_model, d_mlp)
        self.act = nn.ReLU()
        self.hook_post = nn.Identity()
        self.W_out = nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, T, d_model] -> [b, T, d_model]
        return self.W_out(self.post(x))

    def post(self, x: torch.Tensor) -> torch.Tensor:  # [b, T, d_model] -> [b, T, d_mlp]
        """The neurons (after ``hook_post``)."""
        return self.hook_post(self.act(self.W_in(x)))


class Block(nn.Module):
    """``resid_mid = resid_pre + attn(ln1(resid_pre))``; ``resid_post = resid_mid +
    mlp(ln2(resid_mid))`` (the MLP term is absent for an attention-only model)."""

    def __init__(
        self, d_model: int, n_heads: int, d_head: int, d_mlp: int, layer_norm: bool, n_ctx: int
    ) -> None:
        super().__init__()
        self.hook_resid_pre = nn.Identity()
        self.ln1: nn.Module = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = Attention(d_model, n_heads, d_head, n_ctx)
        self.ln2: nn.Module = nn.LayerNorm(d_model) if layer_norm and d_mlp else nn.Identity()
        self.mlp: TransformerMLP | None = TransformerMLP(d_model, d_mlp) if d_mlp else None
        self.hook_resid_post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, T, d_model]
        x = self.hook_resid_pre(x)
        return self.from_z(x, self.attn.z(self.ln1(x)))

    def from_z(self, resid_pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``resid_post`` from ``resid_pre`` and the heads' outputs ``z`` (``hook_z``)."""
        x = resid_pre + self.attn.out(z)
        if self.mlp is None:
            return self.hook_resid_post(x)
        return self.from_post(x, self.mlp.post(self.ln2(x)))

    def from_post(self, resid_mid: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """``resid_post`` from the residual stream after attention and the MLP's neurons."""
        assert self.mlp is not None  # only called for a block with an MLP
        return self.hook_resid_post(resid_mid + self.mlp.W_out(post))


class Transformer(nn.Module):
    def __init__(
        self,
        n_classes: int,
        n_ctx: int,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_head: int,
        d_mlp: int,
        layer_norm: bool,
    ) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        # Token ids 0..n_classes: n_classes is the task's one token that is never an answer.
        self.embed = nn.Embedding(n_classes + 1, d_model)
        self.pos_embed = nn.Embedding(n_ctx, d_model)
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d_model))
        nn.init.normal_(self.pos_embed.weight, std=1 / math.sqrt(d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_head, d_mlp, layer_norm, n_ctx) for _ in range(n_layers)
        )
        self.ln_final: nn.Module = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.unembed = nn.Linear(d_model, n_classes, bias=False)
        self.unit_views: dict[str, UnitView] = {}
        for i in range(n_layers):
            self.unit_views[f"blocks.{i}.attn.hook_z"] = HEADS
            if d_mlp:
                self.unit_views[f"blocks.{i}.mlp.hook_post"] = NEURONS

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [b, T] -> [b, T, n_classes]
        return self.forward_from(0, self.embed_tokens(tokens))

    def forward_from(self, block: int, resid_pre: torch.Tensor) -> torch.Tensor:
        """Logits from the residual stream ``resid_pre`` ``[b, T, d_model]`` entering ``block``
        (``n_layers`` for the stream after the last block)."""
        x = resid_pre
        for blk in self.blocks[block:]:
            x = blk(x)
        return self.unembed(self.ln_final(x))

    def cut(
        self, tokens: torch.Tensor, layer: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The intact run cut at a unit layer (``blocks.{i}.attn.hook_z`` or
        ``blocks.{i}.mlp.hook_post``): ``(carry, h, logits)``, where ``h`` is the layer's output,
        ``carry`` the residual stream that :meth:`resume` adds the edited layer's output to
        (``resid_pre`` of block ``i``, or the stream after its attention) and ``logits`` the
        model's output. Everything before the layer in block ``i`` (the attention pattern
        included) is in ``h`` and ``carry``, so an edit of ``h`` needs only :meth:`resume`."""
        i, site = self._site(layer)
        x = self.stream_into(tokens, i)
        blk = self.blocks[i]
        x = blk.hook_resid_pre(x)
        z = blk.attn.z(blk.ln1(x))
        if site == "attn.hook_z":
            return x, z, self.forward_from(i + 1, blk.from_z(x, z))
        assert blk.mlp is not None  # _site checked it
        mid = x + blk.attn.out(z)
        post = blk.mlp.post(blk.ln2(mid))
        return mid, post, self.forward_from(i + 1, blk.from_post(mid, post))

    def resume(self, layer: str, carry: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Logits when the output of ``layer`` is ``h`` (edited or not), from :meth:`cut`'s
        ``carry``; rows of ``carry`` and ``h`` are matched one to one."""
        i, site = self._site(layer)
        blk = self.blocks[i]
        rest = blk.from_z(carry, h) if site == "attn.hook_z" else blk.from_post(carry, h)
        return self.forward_from(i + 1, rest)

    def stream_into(self, tokens: torch.Tensor, block: int) -> torch.Tensor:
        """The residual stream entering ``block`` (before its ``hook_resid_pre``)."""
        x = self.embed_tokens(tokens)
        for blk in self.blocks[:block]:
            x = blk(x)
        return x

    def resumable(self, layer: str) -> bool:
        """Whether :meth:`cut` and :meth:`resume` accept ``layer``."""
        try:
            self._site(layer)
        except ValueError:
            return False
        return True

    def _site(self, layer: str) -> tuple[int, str]:
        parts = layer.split(".", 2)
        ok = len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit()
        if ok and int(parts[1]) < len(self.blocks):
            i, site = int(parts[1]), parts[2]
            has_mlp = self.blocks[i].mlp is not None
            if site == "attn.hook_z" or (site == "mlp.hook_post" and has_mlp):
                return i, site
        raise ValueError(f"{layer!r} is not a head or neuron layer of this transformer")

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:  # [b, T] -> [b, T, d_model]
        """Token plus positional embedding (``resid_pre`` of block 0)."""
        if tokens.is_floating_point() or tokens.shape[-1] > self.n_ctx:
            raise FalsifyError(
                f"The transformer's input must be token ids [batch, T] with T at most n_ctx "
                f"({self.n_ctx}). Got a {tokens.dtype} tensor of shape {list(tokens.shape)} instead."
            )
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        return self.embed(tokens) + self.pos_embed(positions)


@register
class TransformerSpec(ArchitectureKind):
    """A decoder-only transformer (hook points in :mod:`falsify.models.transformer`)."""

    kind: Literal["transformer"]
    n_layers: int = Field(1, ge=1)
    d_model: int = Field(64, ge=1)
    n_heads: int = Field(4, ge=1)
    d_head: int = Field(16, ge=1)
    d_mlp: int = Field(0, ge=0)  # 0: attention-only
    layer_norm: bool = False
    n_ctx: int | None = Field(None, ge=1)  # None: the task's sequence length

    label: ClassVar[str] = "decoder-only transformer"
    ensemble: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/sequence-models.md"

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> Transformer:
        if len(input_shape) != 1:
            raise FalsifyError(
                "The 'population.model' must be an architecture for this data: a transformer "
                f"needs token sequences [T]. Got inputs of shape {list(input_shape)} instead "
                "(use a sequence task such as kind: induction)."
            )
        n_ctx = self.n_ctx or int(input_shape[0])
        if n_ctx < input_shape[0]:
            raise FalsifyError(
                f"The 'n_ctx' of population.model must be at least the task's sequence length "
                f"({input_shape[0]}). Got {n_ctx} instead."
            )
        return Transformer(
            n_classes,
            n_ctx,
            self.n_layers,
            self.d_model,
            self.n_heads,
            self.d_head,
            self.d_mlp,
            self.layer_norm,
        )
