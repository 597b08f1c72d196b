"""The replicates of one recipe as one stacked network, with the sequential arithmetic.

S models of the same architecture become one network whose parameters are the S models'
parameters stacked on a new first dimension (``[S, *shape]``). Activations are laid out so
that each operation runs once for all replicates:

* dense activations (MLP blocks, heads) as ``rows`` ``[S, batch, features]``: a linear layer
  is one batched matrix product (``torch.baddbmm``);
* image activations as ``channels`` ``[batch, S·C, H, W]``, replicate s owning channels
  ``s·C … (s+1)·C - 1``: a convolution can be one grouped convolution (``groups=S``), batch norm
  over the S·C channels is each replicate's own batch norm, ReLU and max pooling act per
  channel.

Whether a batched kernel sums in the same order as the single-replicate kernel sequential
training uses depends on the backend and the shapes, not on the values. So each operation is
probed once per shape, on random data, against the sequential operation (``nn.Linear``,
``nn.Conv2d``, ``nn.BatchNorm*d`` and their autograd backward, one replicate at a time); of
the variants (the batched kernel, a per-replicate loop of the sequential operation, for a
convolution each on contiguous or channels-last tensors) the fastest bit-identical one is used
(:func:`fastest_exact`), and :class:`NotExact` is raised if none matches. Dropout draws each
replicate's mask from that replicate's own generator, with the shape and call sequential
training uses, so the masks are the sequential ones. See docs/performance.md ("Ensemble
training").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from falsify.data.base import IGNORE
from falsify.models.cnn import CNN
from falsify.models.mlp import MLP
from falsify.models.resnet import ResNet20
from falsify.units import CHANNELS

__all__ = ["LOSS", "OP_PLANS", "NotExact", "StackedNet", "fastest_exact", "plan_loss", "stack"]


class NotExact(Exception):
    """No variant of an operation reproduces the sequential arithmetic."""


# ---------------------------------------------------------------------------------------------
# Linear layers, rows layout: h [S, B, in], w [S, out, in], b [S, out], g [S, B, out].
_FORWARD = (
    lambda h, w, b: torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)),
    lambda h, w, b: torch.stack([torch.addmm(b[s], h[s], w[s].t()) for s in range(len(w))]),
)
_GRAD_INPUT = (
    lambda g, w: torch.bmm(g, w),
    lambda g, w: torch.stack([g[s].mm(w[s]) for s in range(len(w))]),
)
_GRAD_WEIGHT = (
    lambda g, h: torch.bmm(g.transpose(1, 2), h),
    lambda g, h: torch.stack([g[s].t().mm(h[s]) for s in range(len(h))]),
)
_GRAD_BIAS = (
    lambda g: g.sum(dim=1),
    lambda g: torch.stack([g[s].sum(dim=0) for s in range(len(g))]),
)


# Each replicate's mean cross-entropy (logits [S, B, C], labels [S, B] -> [S]); for sequences
# (logits [S, B, T, C], labels [S, B, T]) over the scored positions, the others being IGNORE.
def _batched_loss(lg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), reduction="none")
    if lg.dim() == 3:
        return ce.view(y.shape).mean(dim=1)
    return ce.view(len(y), -1).sum(dim=1) / (y != IGNORE).view(len(y), -1).sum(dim=1)


LOSS = (
    _batched_loss,
    # One replicate's loss as falsify.models.training._cross_entropy computes it.
    lambda lg, y: torch.stack(
        [F.cross_entropy(a.flatten(0, -2), b.flatten()) for a, b in zip(lg, y, strict=True)]
    ),
)


def fastest_exact(
    variants: list[Callable[[], Any]], exact: Callable[[Any], bool], device: torch.device
) -> int:
    """The index of the fastest of ``variants`` whose result ``exact`` accepts.

    Each variant is called once for the check (which also warms up the backend's kernel); if
    more than one is accepted, each of those is then timed: the best of up to three calls, one
    if a call takes longer than 20 ms. Exact variants compute the same bits, so the choice
    changes only the speed; it is measured rather than assumed because the faster kernel
    depends on the backend and the shapes (on this CPU a grouped convolution beats a loop of
    single ones on 4×4 images and loses on 32×32 ones; docs/performance.md, "Ensemble
    training").
    """
    accepted = [k for k, fn in enumerate(variants) if exact(fn())]
    if not accepted:
        raise NotExact
    if len(accepted) == 1:
        return accepted[0]
    times: dict[int, float] = {}
    for k in accepted:
        fn = variants[k]
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
            if best > 0.02:
                break
        times[k] = best
    return min(times, key=times.__getitem__)


def _pick(
    variants: tuple, args: tuple, ref: list[torch.Tensor | None], device: torch.device
) -> int:
    def exact(got: torch.Tensor) -> bool:
        return all(torch.equal(got[i], r) for i, r in enumerate(ref) if r is not None)

    return fastest_exact([partial(fn, *args) for fn in variants], exact, device)


@dataclass(frozen=True)
class _LinearPlan:
    """Which variant of each operation reproduces ``nn.Linear``'s autograd bit for bit."""

    forward: int
    grad_input: int
    grad_weight: int
    grad_bias: int


def _plan_linear(s: int, b: int, d_in: int, d_out: int, device: torch.device) -> _LinearPlan:
    """Probe which variants equal ``F.linear`` and its backward exactly for these shapes.

    The fastest exact variant of each is taken (:func:`fastest_exact`).
    """
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(s, b, d_in, generator=gen).to(device)
    w = torch.randn(s, d_out, d_in, generator=gen).to(device)
    bias = torch.randn(s, d_out, generator=gen).to(device)
    g = torch.randn(s, b, d_out, generator=gen).to(device)
    ref_out, ref_gin, ref_gw, ref_gb = [], [], [], []
    for i in range(s):
        hi = h[i].clone().requires_grad_()
        wi = w[i].clone().requires_grad_()
        bi = bias[i].clone().requires_grad_()
        out = F.linear(hi, wi, bi)
        out.backward(g[i])
        ref_out.append(out.detach())
        ref_gin.append(hi.grad)
        ref_gw.append(wi.grad)
        ref_gb.append(bi.grad)
    return _LinearPlan(
        forward=_pick(_FORWARD, (h, w, bias), ref_out, device),
        grad_input=_pick(_GRAD_INPUT, (g, w), ref_gin, device),
        grad_weight=_pick(_GRAD_WEIGHT, (g, h), ref_gw, device),
        grad_bias=_pick(_GRAD_BIAS, (g,), ref_gb, device),
    )


def plan_loss(shape: tuple[int, ...], device: torch.device) -> int:
    """The fastest variant of ``LOSS`` whose gradient equals ``nn.CrossEntropyLoss``'s exactly,
    for logits of ``shape`` (``[S, B, C]``, or ``[S, B, T, C]`` with about half the positions
    unscored).

    The batched variant's loss value may differ from the per-replicate mean in the last bit
    (its sum runs in another order); only the gradient moves the weights.
    """
    gen = torch.Generator().manual_seed(1)
    s, c = shape[0], shape[-1]
    logits = (3 * torch.randn(*shape, generator=gen)).to(device)
    y = torch.randint(0, c, shape[:-1], generator=gen)
    if len(shape) == 4:
        y[torch.rand(shape[:-1], generator=gen) < 0.5] = IGNORE
        y[:, :, -1] = 0  # every replicate scores some position
    y = y.to(device)
    ref = []
    for i in range(s):
        li = logits[i].clone().requires_grad_()
        F.cross_entropy(li.flatten(0, -2), y[i].flatten()).backward()
        ref.append(li.grad)

    def grad(fn: Callable[..., torch.Tensor]) -> torch.Tensor | None:
        lg = logits.clone().requires_grad_()
        fn(lg, y).sum().backward()
        return lg.grad

    def exact(got: torch.Tensor | None) -> bool:
        return got is not None and all(torch.equal(got[i], r) for i, r in enumerate(ref))

    return fastest_exact([partial(grad, fn) for fn in LOSS], exact, device)


class _StackedLinear(torch.autograd.Function):
    """S independent ``nn.Linear`` layers applied to S batches, with the plan's arithmetic."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, plan: _LinearPlan
    ) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        ctx.plan = plan
        return _FORWARD[plan.forward](h, w, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h, w = ctx.saved_tensors
        plan: _LinearPlan = ctx.plan
        g = g.contiguous()  # as probed (a strided operand can change the kernel)
        gin = _GRAD_INPUT[plan.grad_input](g, w) if ctx.needs_input_grad[0] else None
        return gin, _GRAD_WEIGHT[plan.grad_weight](g, h), _GRAD_BIAS[plan.grad_bias](g), None


# ---------------------------------------------------------------------------------------------
# Convolutions, channels layout: x [B, S·Cin, H, W], w [S, Cout, Cin, k, k], b [S, Cout] | None.
# Each variant takes and returns contiguous tensors; those in channels-last memory format convert
# on the way in and out (the backend's kernel, and so its summation order, depends on the
# format), and that conversion is part of what is timed.
_CL = torch.channels_last


@dataclass(frozen=True)
class _ConvPlan:
    forward: int  # an index into _CONV_FORWARD
    backward: int  # an index into _CONV_BACKWARD


def _chunks(
    t: torch.Tensor, s: int, fmt: torch.memory_format = torch.contiguous_format
) -> list[torch.Tensor]:
    """Replicate i's part of a channels-layout tensor, contiguous (as sequential has it) or in
    memory format ``fmt``."""
    return [c.contiguous(memory_format=fmt) for c in t.chunk(s, dim=1)]


def _grouped_forward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int, fmt: torch.memory_format
) -> torch.Tensor:
    flat_b = None if b is None else b.flatten()
    x = x.contiguous(memory_format=fmt)
    return F.conv2d(
        x, w.flatten(0, 1), flat_b, stride, w.shape[-1] // 2, 1, w.shape[0]
    ).contiguous()


def _looped_forward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int, fmt: torch.memory_format
) -> torch.Tensor:
    s, pad = w.shape[0], w.shape[-1] // 2
    xs = _chunks(x, s, fmt)
    outs = [F.conv2d(xs[i], w[i], None if b is None else b[i], stride, pad) for i in range(s)]
    return torch.cat(outs, 1).contiguous()


def _conv_backward_call(
    g: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    c_out: int | None,
    stride: int,
    groups: int,
    mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pad = [w.shape[-1] // 2] * 2
    return torch.ops.aten.convolution_backward(
        g,
        x,
        w,
        None if c_out is None else [c_out],
        [stride] * 2,
        pad,
        [1, 1],
        False,
        [0, 0],
        groups,
        mask,
    )


_ConvGrads = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]


def _grouped_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    bias: bool,
    stride: int,
    mask: list[bool],
    fmt: torch.memory_format,
) -> _ConvGrads:
    s, c_out = w.shape[0], w.shape[1]
    g, x = g.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt)
    gi, gw, gb = _conv_backward_call(
        g, x, w.flatten(0, 1), s * c_out if bias else None, stride, s, mask
    )
    return (
        gi.contiguous() if mask[0] else None,
        gw.reshape(w.shape),
        gb.view(s, c_out) if bias else None,
    )


def _looped_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    bias: bool,
    stride: int,
    mask: list[bool],
    fmt: torch.memory_format,
) -> _ConvGrads:
    s, c_out = w.shape[0], w.shape[1]
    gs, xs = _chunks(g, s, fmt), _chunks(x, s, fmt)
    parts = [
        _conv_backward_call(gs[i], xs[i], w[i], c_out if bias else None, stride, 1, mask)
        for i in range(s)
    ]
    g_in = torch.cat([p[0] for p in parts], 1).contiguous() if mask[0] else None
    g_b = torch.stack([p[2] for p in parts]) if bias else None
    return g_in, torch.stack([p[1].contiguous() for p in parts]), g_b


# The grouped variants first: the fast plan (``exact=False``) uses index 0 for both.
_CONV_FORWARD: tuple[Callable[..., torch.Tensor], ...] = (
    partial(_grouped_forward, fmt=torch.contiguous_format),
    partial(_grouped_forward, fmt=_CL),
    partial(_looped_forward, fmt=torch.contiguous_format),
    partial(_looped_forward, fmt=_CL),
)
_CONV_BACKWARD: tuple[Callable[..., _ConvGrads], ...] = (
    partial(_grouped_backward, fmt=torch.contiguous_format),
    partial(_grouped_backward, fmt=_CL),
    partial(_looped_backward, fmt=torch.contiguous_format),
    partial(_looped_backward, fmt=_CL),
)


class _StackedConv(torch.autograd.Function):
    """S independent ``nn.Conv2d`` (3×3, padding 1) applied to S batches, with the plan's
    arithmetic."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        stride: int,
        plan: _ConvPlan,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.plan, ctx.stride, ctx.bias = plan, stride, b is not None
        return _CONV_FORWARD[plan.forward](x, w, b, stride)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        g = g.contiguous()  # as probed
        mask = [ctx.needs_input_grad[0], True, ctx.bias]
        gi, gw, gb = _CONV_BACKWARD[ctx.plan.backward](g, x, w, ctx.bias, ctx.stride, mask)
        return gi, gw, gb, None, None


def _plan_conv(
    s: int,
    b: int,
    c_in: int,
    hw: tuple[int, int],
    shape: tuple[int, int, int, int],
    stride: int,
    bias: bool,
    input_grad: bool,
    device: torch.device,
) -> _ConvPlan:
    """Probe each variant against ``F.conv2d`` and its autograd, replicate by replicate (images
    ``hw``, a replicate's weight ``shape``; the kernel the backend picks depends on all of them),
    and take the fastest exact forward and backward (:func:`fastest_exact`)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(b, s * c_in, *hw, generator=gen).to(device)
    w = torch.randn(s, *shape, generator=gen).to(device)
    bb = torch.randn(s, shape[0], generator=gen).to(device) if bias else None
    out_hw = [(n - 1) // stride + 1 for n in hw]
    g = torch.randn(b, s * shape[0], *out_hw, generator=gen).to(device)
    mask = [input_grad, True, bias]
    refs = []
    for i, (xi, gi) in enumerate(zip(_chunks(x, s), _chunks(g, s), strict=True)):
        xi = xi.clone().requires_grad_(input_grad)
        wi = w[i].clone().requires_grad_()
        bi = None if bb is None else bb[i].clone().requires_grad_()
        out = F.conv2d(xi, wi, bi, stride, shape[-1] // 2)
        out.backward(gi)
        refs.append((out.detach(), xi.grad, wi.grad, None if bi is None else bi.grad))

    def forward_ok(out: torch.Tensor) -> bool:
        parts = _chunks(out, s)
        return all(torch.equal(p, r[0]) for p, r in zip(parts, refs, strict=True))

    def backward_ok(grads: _ConvGrads) -> bool:
        gi, gw, gb = grads
        g_in = None if gi is None else _chunks(gi, s)
        for i, r in enumerate(refs):
            if g_in is not None and not torch.equal(g_in[i], r[1]):
                return False
            if not torch.equal(gw[i], r[2]) or (gb is not None and not torch.equal(gb[i], r[3])):
                return False
        return True

    fwd = [partial(fn, x, w, bb, stride) for fn in _CONV_FORWARD]
    bwd = [partial(fn, g, x, w, bias, stride, mask) for fn in _CONV_BACKWARD]
    return _ConvPlan(
        fastest_exact(fwd, forward_ok, device), fastest_exact(bwd, backward_ok, device)
    )


# ---------------------------------------------------------------------------------------------
# Batch norm in training mode, either layout; parameters and running statistics [S, C].
def _bn_batched(
    x: torch.Tensor,
    rows: bool,
    w: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    s, c = w.shape
    # Rows [S, B, C] as [B, S·C]: the S·C channels are normalized independently.
    h = x.transpose(0, 1).reshape(x.shape[1], s * c) if rows else x
    out = F.batch_norm(
        h, mean.view(-1), var.view(-1), w.flatten(), b.flatten(), True, momentum, eps
    )
    return out.view(x.shape[1], s, c).transpose(0, 1).contiguous() if rows else out


def _bn_looped(
    x: torch.Tensor,
    rows: bool,
    w: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    s = w.shape[0]
    xs = list(x) if rows else _chunks(x, s)
    outs = [F.batch_norm(xs[i], mean[i], var[i], w[i], b[i], True, momentum, eps) for i in range(s)]
    return torch.stack(outs) if rows else torch.cat(outs, 1)


_BATCH_NORM = (_bn_batched, _bn_looped)


def _plan_batch_norm(
    s: int, shape: tuple[int, ...], rows: bool, momentum: float, eps: float, device: torch.device
) -> int:
    """The fastest variant of ``_BATCH_NORM`` equal to ``F.batch_norm`` (outputs, gradients and
    running statistics), replicate by replicate; ``shape`` is one replicate's input shape."""
    gen = torch.Generator().manual_seed(3)
    c = shape[1]
    full = (s, *shape) if rows else (shape[0], s * c, *shape[2:])
    x = torch.randn(*full, generator=gen).to(device)
    g = torch.randn(*full, generator=gen).to(device)
    w, b = (torch.randn(s, c, generator=gen).to(device) for _ in range(2))
    mean = torch.randn(s, c, generator=gen).to(device)
    var = torch.rand(s, c, generator=gen).to(device) + 0.5

    def parts(t: torch.Tensor) -> list[torch.Tensor]:
        return list(t) if rows else _chunks(t, s)

    refs = []
    for i, (xi, gi) in enumerate(zip(parts(x), parts(g), strict=True)):
        xi = xi.clone().requires_grad_()
        wi, bi = w[i].clone().requires_grad_(), b[i].clone().requires_grad_()
        mi, vi = mean[i].clone(), var[i].clone()
        out = F.batch_norm(xi, mi, vi, wi, bi, True, momentum, eps)
        out.backward(gi)
        refs.append((out.detach(), xi.grad, wi.grad, bi.grad, mi, vi))

    def run(fn: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, ...]:
        xk = x.clone().requires_grad_()
        wk, bk = w.clone().requires_grad_(), b.clone().requires_grad_()
        mk, vk = mean.clone(), var.clone()
        out = fn(xk, rows, wk, bk, mk, vk, momentum, eps)
        out.backward(g)
        return out.detach(), xk.grad, wk.grad, bk.grad, mk, vk  # type: ignore[return-value]

    def exact(got: tuple[torch.Tensor, ...]) -> bool:
        out, gx, gw, gb, mk, vk = got
        per_replicate = zip(parts(out), parts(gx), gw, gb, mk, vk, strict=True)
        return all(
            torch.equal(u, v)
            for gi, ri in zip(per_replicate, refs, strict=True)
            for u, v in zip(gi, ri, strict=True)
        )

    return fastest_exact([partial(run, fn) for fn in _BATCH_NORM], exact, device)


# ---------------------------------------------------------------------------------------------
# ReLU then 2×2 max pooling, channels layout. The channels-last forward kernel is several times
# faster on the CPU for these small images than the contiguous one; the backward (a scatter to
# the indices) stays contiguous. Both kernels take the first maximum of a window, so even ties
# agree (probed). ReLU commutes with the maximum, values and gradients alike (a window whose
# maximum is not positive passes no gradient either way), so it can act on the pooled output, a
# quarter of the size.
class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        cl = x.contiguous(memory_format=torch.channels_last)
        out, idx = F.max_pool2d(cl, 2, return_indices=True)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            g.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx
        )


_RELU_MAX_POOL: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    lambda x: torch.relu(_ChannelsLastMaxPool.apply(x)),  # type: ignore[arg-type]
    lambda x: _ChannelsLastMaxPool.apply(torch.relu(x)),  # type: ignore[misc]
    lambda x: F.max_pool2d(torch.relu(x), 2),
)


def _plan_relu_max_pool(s: int, shape: tuple[int, ...], device: torch.device) -> int:
    """The fastest variant of ``_RELU_MAX_POOL`` equal to ``F.max_pool2d(F.relu(x), 2)`` and
    its backward, replicate by replicate, on data with many ties, zeros and negative windows
    (``shape`` is one replicate's input shape)."""
    gen = torch.Generator().manual_seed(4)
    full = (shape[0], s * shape[1], *shape[2:])
    x = (2 * torch.randn(*full, generator=gen)).round().to(device)
    refs = []
    for xi in _chunks(x, s):
        xi = xi.clone().requires_grad_()
        out = F.max_pool2d(F.relu(xi), 2)
        g = torch.arange(out.numel(), dtype=out.dtype, device=device).view(out.shape)
        out.backward(g)
        refs.append((out.detach(), g, xi.grad))
    g = torch.cat([r[1] for r in refs], 1)

    def run(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        xk = x.clone().requires_grad_()
        out = fn(xk)
        out.backward(g)
        assert xk.grad is not None
        return out.detach(), xk.grad

    def exact(got: tuple[torch.Tensor, torch.Tensor]) -> bool:
        parts = zip(_chunks(got[0], s), _chunks(got[1], s), refs, strict=True)
        return all(torch.equal(o, r[0]) and torch.equal(gr, r[2]) for o, gr, r in parts)

    return fastest_exact([partial(run, fn) for fn in _RELU_MAX_POOL], exact, device)


# ---------------------------------------------------------------------------------------------
def _rows(x: torch.Tensor, s: int) -> torch.Tensor:
    """Channels layout ``[B, S·C, …]`` -> rows ``[S, B, C·…]`` (each replicate's flatten)."""
    return x.reshape(x.shape[0], s, -1).transpose(0, 1).contiguous()


def _dropout_mask(
    shape: tuple[int, ...], p: float, gens: list[torch.Generator], rows: bool
) -> torch.Tensor:
    """Each replicate's dropout multiplier, drawn as ``F.dropout`` draws it on the CPU
    (``empty_like(input).bernoulli_(1 - p)``, then divided by ``1 - p``) from its generator."""
    masks = [torch.empty(shape).bernoulli_(1 - p, generator=g) for g in gens]
    noise = torch.stack(masks) if rows else torch.cat(masks, 1)
    return noise.div_(1 - p)


# The operations' probed variants in this process, by device, threads, replicates and key.
OP_PLANS: dict[tuple, Any] = {}


class StackedNet:
    """S replicates of one built-in architecture as stacked tensors; see the module docstring.

    ``params`` and ``buffers`` map each ``state_dict`` name of the models to its stacked tensor
    (parameters as leaves for the optimizer, in ``named_parameters()`` order). ``gens`` are the
    replicates' generators for dropout (each the state of the global RNG after the replicate's
    model was built, as in sequential training).
    """

    def __init__(
        self,
        models: list[nn.Module],
        gens: list[torch.Generator],
        device: torch.device,
        exact: bool,
    ) -> None:
        self.models, self.gens, self.device, self.exact = models, gens, device, exact
        self.s = len(models)
        stacked = {
            n: torch.stack([m.get_parameter(n).detach() for m in models])
            for n, _ in models[0].named_parameters()
        }
        # All parameters in one flat tensor, so the optimizer updates it with a dozen
        # elementwise operations per step rather than a dozen per parameter (elementwise, so
        # the same numbers); each parameter is a leaf sharing its storage.
        self.flat = torch.cat([t.flatten() for t in stacked.values()])
        self.params: dict[str, torch.Tensor] = {}
        offset = 0
        for n, t in stacked.items():
            view = self.flat[offset : offset + t.numel()].view(t.shape)
            self.params[n] = view.detach().requires_grad_()
            offset += t.numel()
        # The persistent buffers (running statistics), those write_back copies into the models;
        # others (a transformer's causal masks) are the same in every replicate.
        state = models[0].state_dict()
        self.buffers = {
            n: torch.stack([m.get_buffer(n) for m in models])
            for n, _ in models[0].named_buffers()
            if n in state
        }
        self._plans: dict[tuple, Any] = {}
        self.dropout = 0.0  # set by the architecture
        # Unit layers whose outputs a forward pass keeps (for regularizer terms), and what the
        # latest forward kept: name -> (output in its stacked layout, laid out as rows).
        self.keep: set[str] = set()
        self.kept: dict[str, tuple[torch.Tensor, bool]] = {}

    def _plan(self, key: tuple, probe: Callable[[], Any], fast: Any, shared: bool = True) -> Any:
        """The variant ``probe`` finds for ``key`` (``fast`` without ``exact``). An operation's
        probe depends only on the backend, the shapes, the number of replicates, the device and
        the number of threads, so its answer is kept for the process (:data:`OP_PLANS`, by all
        of them) and later ensembles skip it;
        ``shared=False`` keeps it for this network only (a probe that reads the models)."""
        if not self.exact:
            return fast
        plans, full = self._plans, key
        if shared:
            plans, full = OP_PLANS, (str(self.device), torch.get_num_threads(), self.s, *key)
        if full not in plans:
            plans[full] = probe()
        return plans[full]

    def linear(self, h: torch.Tensor, name: str) -> torch.Tensor:
        w, b = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        key = ("linear", h.shape[1], w.shape[2], w.shape[1])
        plan = self._plan(
            key, lambda: _plan_linear(self.s, *key[1:], self.device), _LinearPlan(0, 0, 0, 0)
        )
        return _StackedLinear.apply(h, w, b, plan)

    def conv(self, x: torch.Tensor, name: str, stride: int = 1) -> torch.Tensor:
        w, b = self.params[f"{name}.weight"], self.params.get(f"{name}.bias")
        grad = x.requires_grad
        hw = (x.shape[2], x.shape[3])
        key = ("conv", x.shape[0], hw, tuple(w.shape[1:]), stride, grad, b is not None)
        plan = self._plan(
            key,
            lambda: _plan_conv(
                self.s,
                x.shape[0],
                x.shape[1] // self.s,
                hw,
                tuple(w.shape[1:]),
                stride,
                b is not None,
                grad,
                self.device,
            ),
            _ConvPlan(0, 0),
        )
        return _StackedConv.apply(x, w, b, stride, plan)

    def batch_norm(self, x: torch.Tensor, name: str, rows: bool) -> torch.Tensor:
        module = self.models[0].get_submodule(name)
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        momentum, eps = module.momentum, module.eps
        assert momentum is not None
        mean, var = self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"]
        self.buffers[f"{name}.num_batches_tracked"] += 1
        shape = tuple(x.shape[1:]) if rows else (x.shape[0], x.shape[1] // self.s, *x.shape[2:])
        key = ("bn", shape, rows)
        k = self._plan(
            key, lambda: _plan_batch_norm(self.s, shape, rows, momentum, eps, self.device), 0
        )
        w, b = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        return _BATCH_NORM[k](x, rows, w, b, mean, var, momentum, eps)

    def relu_max_pool(self, x: torch.Tensor) -> torch.Tensor:
        """``F.max_pool2d(F.relu(x), 2)``, per replicate."""
        shape = (x.shape[0], x.shape[1] // self.s, *x.shape[2:])
        k = self._plan(
            ("relu-pool", shape), lambda: _plan_relu_max_pool(self.s, shape, self.device), 0
        )
        return _RELU_MAX_POOL[k](x)

    def drop(self, x: torch.Tensor, rows: bool) -> torch.Tensor:
        if self.dropout == 0:
            return x
        shape = tuple(x.shape[1:]) if rows else (x.shape[0], x.shape[1] // self.s, *x.shape[2:])
        return x * _dropout_mask(shape, self.dropout, self.gens, rows).to(x.device)

    def _keep(self, name: str, h: torch.Tensor, rows: bool) -> torch.Tensor:
        """Record block ``name``'s output ``h`` of this forward if it is asked for."""
        if name in self.keep:
            self.kept[name] = (h, rows)
        return h

    def replicate_outputs(self, name: str) -> list[torch.Tensor]:
        """Each replicate's output of unit layer ``name`` in the latest forward, as the module
        gives it in sequential training (``[B, …]``, contiguous) and with its autograd history:
        a term built from it sends its gradient to the stacked output in one piece (the
        backward of one split), which is added to the rest of that output's gradient."""
        return self.split(*self.kept[name])

    def split(self, h: torch.Tensor, rows: bool) -> list[torch.Tensor]:
        """A stacked output ``h`` (rows or channels layout) as each replicate's own, contiguous."""
        return list(h.unbind(0)) if rows else _chunks(h, self.s)  # rows: [B, F] contiguous

    def unit_rows(self, h: torch.Tensor, rows: bool) -> torch.Tensor:
        """A stacked output ``h`` of a unit layer whose view is :data:`falsify.units.CHANNELS`
        (units on axis 1, averaged over the rest: the built-in layers' view) read for all
        replicates at once, ``[S, B, units]``: replicate s's rows are what the view reads from
        its own output (a dense layer's ``[S, B, F]`` as it is, a conv layer's channels
        averaged over space)."""
        return h if rows else CHANNELS.read(h).unflatten(1, (self.s, -1)).transpose(0, 1)

    def gather_grad(self) -> None:
        """Set ``flat.grad`` to the parameters' gradients, after a backward pass."""
        grads = [p.grad for p in self.params.values()]
        self.flat.grad = torch.cat(
            [
                torch.zeros(p.numel(), device=p.device) if g is None else g.flatten()
                for p, g in zip(self.params.values(), grads, strict=True)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[S, B, classes]`` of each replicate's batch ``x[s]`` (``[S, B, *input]``)."""
        raise NotImplementedError

    def write_back(self) -> None:
        """Copy each replicate's trained parameters and buffers into its model."""
        with torch.no_grad():
            for i, model in enumerate(self.models):
                state = model.state_dict()
                for name, t in (self.params | self.buffers).items():
                    state[name].copy_(t[i])


class _StackedMLP(StackedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.models[0]
        assert isinstance(model, MLP)
        h = x.flatten(2)
        for i in range(1, model.n_hidden + 1):
            block = f"hidden{i}"
            h = self.linear(h, f"{block}.linear")
            if isinstance(model.get_submodule(f"{block}.norm"), nn.BatchNorm1d):
                h = self.batch_norm(h, f"{block}.norm", rows=True)
            h = self._keep(block, self.drop(torch.relu(h), rows=True), rows=True)
        return self.linear(h, "head")


class _StackedCNN(StackedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.models[0]
        assert isinstance(model, CNN)
        h = _channels(x)
        for i in range(1, model.n_blocks + 1):
            block = f"conv{i}"
            h = self.conv(h, f"{block}.conv")
            if isinstance(model.get_submodule(f"{block}.norm"), nn.BatchNorm2d):
                h = self.batch_norm(h, f"{block}.norm", rows=False)
            if isinstance(model.get_submodule(f"{block}.pool"), nn.MaxPool2d):
                h = self.relu_max_pool(h)
            else:
                h = torch.relu(h)
            h = self._keep(block, self.drop(h, rows=False), rows=False)
        return self.linear(_rows(h, self.s), "head")


class _StackedResNet20(StackedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.models[0]
        assert isinstance(model, ResNet20)
        h = torch.relu(self.batch_norm(self.conv(_channels(x), "stem.conv"), "stem.bn", False))
        for stage in (1, 2, 3):
            for b in range(3):
                name = f"layer{stage}.{b}"
                block = model.get_submodule(name)
                out = self.conv(h, f"{name}.conv1", block.stride)
                out = torch.relu(self.batch_norm(out, f"{name}.bn1", rows=False))
                out = self.batch_norm(self.conv(out, f"{name}.conv2"), f"{name}.bn2", False)
                h = torch.relu(out + self._shortcut(h, block.stride, block.pad))
                self._keep(name, h, rows=False)
        pooled = h.mean(dim=(2, 3))  # [B, S·C]
        return self.linear(_rows(pooled, self.s), "head")

    def _shortcut(self, x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
        """Option A per replicate: subsample, zero-pad each replicate's channels."""
        if stride == 1 and pad == 0:
            return x
        x = x[:, :, ::stride, ::stride]
        parts = x.unflatten(1, (self.s, -1))  # [B, S, C, H, W]
        parts = F.pad(parts, (0, 0, 0, 0, pad // 2, pad - pad // 2))
        return parts.flatten(1, 2)


def _channels(x: torch.Tensor) -> torch.Tensor:
    """Rows of images ``[S, B, C, H, W]`` -> channels layout ``[B, S·C, H, W]``."""
    return x.transpose(0, 1).flatten(1, 2).contiguous()


_STACKED: dict[type, type[StackedNet]] = {
    MLP: _StackedMLP,
    CNN: _StackedCNN,
    ResNet20: _StackedResNet20,
}


def stack(
    models: list[nn.Module], gens: list[torch.Generator], device: torch.device, exact: bool
) -> StackedNet | None:
    """The stacked network of ``models`` (one built-in architecture), or None if it has none."""
    # Imported here: the stacked transformer builds on StackedNet.
    from falsify.models.stacked_transformer import StackedTransformer
    from falsify.models.transformer import Transformer

    kind = (_STACKED | {Transformer: StackedTransformer}).get(type(models[0]))
    if kind is None:
        return None
    net = kind(models, gens, device, exact)
    drops = [m.p for m in models[0].modules() if isinstance(m, nn.Dropout)]
    net.dropout = drops[0] if drops else 0.0
    return net
