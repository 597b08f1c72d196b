"""The built-in transformer's replicates as one stacked network, with the sequential arithmetic.

Activations are laid out ``[S, batch, T, …]`` (replicate first), parameters ``[S, *shape]``.
Each step of :class:`falsify.models.transformer.Transformer`'s forward pass is an :class:`_Op`:
the expression the model evaluates for one replicate (``single``), and formulations of it for
all replicates at once (``batched``: the same einsum with the replicate as one more batch index,
a batched matrix product for a linear layer, the replicates' embedding tables as one table). As
in :mod:`falsify.models.stacked`, which formulation sums in the sequential order depends on the
backend and the shapes, not on the values, so each step is probed once per shape on random data
(its output, and through autograd the gradient of every floating-point input) against
``single`` run replicate by replicate on contiguous tensors; the first batched formulation that
is bit-identical is used, else a per-replicate loop of ``single`` (which is the sequential
arithmetic itself). See docs/performance.md ("Ensemble training").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from falsify.models.stacked import StackedNet, fastest_exact
from falsify.models.transformer import Transformer

__all__ = ["StackedTransformer"]

Fn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Op:
    """One step of the forward pass: ``single`` for one replicate (arguments without the
    replicate dimension), ``batched`` the candidate formulations for stacked arguments."""

    single: Fn
    batched: tuple[Fn, ...]


def _looped(single: Fn) -> Fn:
    """``single`` applied replicate by replicate (the sequential arithmetic), results stacked."""

    def run(*args: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [single(*parts) for parts in zip(*(a.unbind(0) for a in args), strict=True)]
        )

    return run


def _variants(op: _Op) -> tuple[Fn, ...]:
    """``op``'s batched expressions, then the loop of its single one."""
    return (*op.batched, _looped(op.single))


def _probe(op: _Op, args: tuple[torch.Tensor, ...]) -> int:
    """The index in :func:`_variants` of the fastest that equals ``op.single`` replicate by
    replicate (output and the gradients of the floating-point arguments). An index, not the
    function: an operation's expression may close over one model's state (the causal mask),
    and plans are kept for the process.

    Floating-point arguments are replaced by random ones of the same shape; integer ones (token
    ids) are kept, since their repeats decide how an embedding's gradient is accumulated.
    """
    gen = torch.Generator().manual_seed(5)
    probe = [
        torch.randn(a.shape, generator=gen).to(a.device) if a.is_floating_point() else a
        for a in args
    ]
    s = len(args[0])
    refs = []
    for i in range(s):
        parts = [a[i].clone().requires_grad_(a.is_floating_point()) for a in probe]
        out = op.single(*parts)
        g = torch.randn(out.shape, generator=gen).to(out.device)
        out.backward(g)
        refs.append((out.detach(), g, [p.grad for p in parts]))
    g_all = torch.stack([r[1] for r in refs])

    def run(fn: Fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        parts = [a.clone().requires_grad_(a.is_floating_point()) for a in probe]
        out = fn(*parts)
        out.backward(g_all)
        return out.detach(), parts

    def exact(got: tuple[torch.Tensor, list[torch.Tensor]]) -> bool:
        out, parts = got
        return all(
            torch.equal(out[i], r[0])
            and all(
                gr is None or (p.grad is not None and torch.equal(p.grad[i], gr))
                for p, gr in zip(parts, r[2], strict=True)
            )
            for i, r in enumerate(refs)
        )

    return fastest_exact([partial(run, fn) for fn in _variants(op)], exact, args[0].device)


# ---------------------------------------------------------------------------------------------
# The steps, as Transformer computes them (falsify/models/transformer.py).
def _embed_single(tokens: torch.Tensor, w_e: torch.Tensor, w_p: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(tokens.shape[-1], device=tokens.device)
    return F.embedding(tokens, w_e) + F.embedding(positions, w_p)


def _embed_batched(tokens: torch.Tensor, w_e: torch.Tensor, w_p: torch.Tensor) -> torch.Tensor:
    # Replicate s's table is rows s·V … (s+1)·V − 1 of one table.
    replicate = torch.arange(w_e.shape[0], device=tokens.device)
    positions = (
        torch.arange(tokens.shape[-1], device=tokens.device) + w_p.shape[1] * replicate[:, None]
    )
    tok = F.embedding(tokens + w_e.shape[1] * replicate[:, None, None], w_e.flatten(0, 1))
    return tok + F.embedding(positions, w_p.flatten(0, 1)).unsqueeze(1)


EMBED = _Op(_embed_single, (_embed_batched,))
QK = _Op(
    lambda x, w: torch.einsum("btd,hde->bhte", x, w),
    (lambda x, w: torch.einsum("sbtd,shde->sbhte", x, w),),
)
V = _Op(
    lambda x, w: torch.einsum("btd,hde->bthe", x, w),
    (lambda x, w: torch.einsum("sbtd,shde->sbthe", x, w),),
)
Z = _Op(
    lambda pattern, v: torch.einsum("bhqk,bkhe->bqhe", pattern, v),
    (lambda pattern, v: torch.einsum("sbhqk,sbkhe->sbqhe", pattern, v),),
)
OUT = _Op(
    lambda z, w, b: torch.einsum("bqhe,hed->bqd", z, w) + b,
    (lambda z, w, b: torch.einsum("sbqhe,shed->sbqd", z, w) + b[:, None, None],),
)
LINEAR = _Op(
    F.linear,
    (
        lambda x, w, b: torch.baddbmm(b.unsqueeze(1), x.flatten(1, 2), w.transpose(1, 2)).view(
            *x.shape[:-1], -1
        ),
    ),
)
UNEMBED = _Op(
    F.linear,
    (lambda x, w: torch.bmm(x.flatten(1, 2), w.transpose(1, 2)).view(*x.shape[:-1], -1),),
)


def _pattern(causal: torch.Tensor) -> _Op:
    """Attention probabilities from queries and keys: the same expression for one replicate
    (``[b, h, T, e]``) and for all (``[S, b, h, T, e]``, a batched matrix product over S·b·h)."""

    def fn(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        t = q.shape[-2]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return scores.masked_fill(~causal[:t, :t], float("-inf")).softmax(dim=-1)

    return _Op(fn, (fn,))


def _layer_norm(eps: float) -> _Op:
    """``nn.LayerNorm`` over the last dimension, replicate by replicate: normalizing all at once
    and then scaling by each replicate's weight (with ``*`` and ``+`` or ``addcmul``) differs
    from the fused kernel in the last bits (probed here on the CPU)."""
    return _Op(lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, eps), ())


class StackedTransformer(StackedNet):
    """S replicates of :class:`falsify.models.transformer.Transformer` (token ids ``[S, B,
    T]`` -> logits ``[S, B, T, classes]``)."""

    def _run(self, name: str, op: _Op, *args: torch.Tensor) -> torch.Tensor:
        key = (name, *(tuple(a.shape) for a in args))
        k = self._plan(key, lambda: _probe(op, args), 0)  # fast: the first batched, if any
        return _variants(op)[k](*args)

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        module = self.models[0].get_submodule(name)
        if not isinstance(module, nn.LayerNorm):
            return x
        w, b = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        return self._run("ln", _layer_norm(module.eps), x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.models[0]
        assert isinstance(model, Transformer)
        p = self.params
        h = self._run("embed", EMBED, x, p["embed.weight"], p["pos_embed.weight"])
        for i, block in enumerate(model.blocks):
            name = f"blocks.{i}"
            a = self._norm(h, f"{name}.ln1")
            q = self._run("qk", QK, a, p[f"{name}.attn.W_Q"])
            k = self._run("qk", QK, a, p[f"{name}.attn.W_K"])
            v = self._run("v", V, a, p[f"{name}.attn.W_V"])
            pattern = self._run("pattern", _pattern(block.attn.causal), q, k)
            z = self._run("z", Z, pattern, v)
            h = h + self._run("out", OUT, z, p[f"{name}.attn.W_O"], p[f"{name}.attn.b_O"])
            if block.mlp is not None:
                m = self._norm(h, f"{name}.ln2")
                m = self._run(
                    "linear", LINEAR, m, p[f"{name}.mlp.W_in.weight"], p[f"{name}.mlp.W_in.bias"]
                )
                m = torch.relu(m)
                m = self._run(
                    "linear", LINEAR, m, p[f"{name}.mlp.W_out.weight"], p[f"{name}.mlp.W_out.bias"]
                )
                h = h + m
        return self._run("unembed", UNEMBED, self._norm(h, "ln_final"), p["unembed.weight"])
