"""The ablation sweep engine: many unit or group ablations (Morcos et al. 2018) per forward pass.

A sweep asks, for each of G masks over the units of one layer, how a per-example score (correct
or not, cross-entropy, …) changes when the masked units are clamped to a fill value. The naive
sweep (and captum's ``LayerFeatureAblation``) runs the whole network once per mask. This engine
computes the same numbers with far less work, using four facts that are exact:

1. **The prefix does not depend on the ablation.** Where the model is a chain of modules (an
   ``nn.Sequential``, or a module whose ``forward`` composes its children in order, as the
   built-in MLP does; checked bit for bit on the data before it is trusted) the network is cut at
   the layer: the prefix runs once over the inputs and its output ``h`` is cached; only the
   suffix runs per ablation. Any other model uses the generic path: a forward hook on the layer
   replaces its output, and the prefix is recomputed for each row (still batched, never one
   forward per mask).
2. **An example whose masked units already equal the fill value is unchanged** (a ReLU unit
   that is off, ablated to zero). Only the affected ``(mask, example)`` pairs are evaluated; the
   others contribute the intact score. The pairs are put on one leading dimension and evaluated
   in chunks whose working set fits a memory budget in bytes.
3. **A linear module after the layer turns an ablation into a low-rank update.** If the first
   non-identity module of the suffix is ``nn.Linear`` with weight ``W`` ``[out, units]``, its
   output for mask ``m`` is ``z − ((h − fill) ⊙ m) Wᵀ``, where ``z`` is the intact output computed
   once; for a single-unit mask that is the rank-one term ``(h_u − fill_u) · W[:, u]``, costing
   ``out`` instead of ``units × out`` multiply-adds per example.

4. **A conv after the layer turns a channel ablation into a one-channel convolution.** If the
   first non-identity module of the suffix is a zero-padded ``nn.Conv2d`` (or a block whose
   ``forward(x)`` is ``after_conv1(x, conv1(x))``, as resnet20's residual blocks are), its output
   for mask ``m`` is ``z − conv((h − fill) ⊙ m)`` without the bias; for one channel ``c`` that is
   the convolution of ``h_c − fill_c`` with the kernel slice ``W[:, c]``. Everything after the
   conv runs in full on the corrected pre-activation (for a block, with its shortcut on the
   ablated input). Blocks that offer ``folded()`` (resnet20's) run with their batch norms
   folded into the convs, the update included (equal to the modules up to float rounding).

5. **A transformer resumes from the ablated block.** A model with ``cut(x, layer)`` and
   ``resume(layer, carry, h)`` (falsify's ``transformer``, :mod:`falsify.models.transformer`,
   for its head and neuron layers) is run once to the layer: the residual stream ``carry`` and
   the layer's output ``h`` are cached (for heads, the attention pattern and everything else
   before ``hook_z`` is in ``h``), and each (mask, example) row only resumes from the edited
   ``h``: the rest of block ``i``, the later blocks and the unembedding. Checked bit for bit on
   the data before it is trusted, like a chain.

Units are read and set through the layer's unit view (:mod:`falsify.units`); the fill is the
same for every example (zero, mean) or one row per example (resample), and the rank-one path
is taken only where the view puts the units on the last axis of a ``[batch, units]`` output.
All tensors stay on the device of ``x``; the code is device-agnostic, so CUDA runs the same
arithmetic as the CPU. Results differ from a full forward only by float rounding (the low-rank
update and the full matrix product sum in different orders); see docs/performance.md for the
differences measured against captum and the plain hook loop. The examples may also be streamed
from a map-style torch Dataset, in blocks that fit the memory budget, each swept as above
(docs/performance.md, "Data that does not fit in memory").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset as TorchDataset

from falsify.data.base import per_example_scores
from falsify.data.stream import batches, gather, is_stream
from falsify.hooks import capture, get_layer, hooked
from falsify.units import UnitView, unit_view

__all__ = [
    "DEFAULT_MAX_BYTES",
    "STRATEGIES",
    "RowStats",
    "SweepResult",
    "ablation_sweep",
    "plan_strategy",
    "row_stats_correct_ce",
]

DEFAULT_MAX_BYTES = 256 * 2**20
_PROBE = 64  # examples the chain check runs on
_CPU_CHUNK_BYTES = 8 * 2**20

Strategy = Literal["auto", "resume", "rank_one", "conv_delta", "split", "hooks"]
STRATEGIES: tuple[str, ...] = ("auto", "resume", "rank_one", "conv_delta", "split", "hooks")

# (logits [rows, classes], labels [rows]) -> per-row statistics [rows, K], float64
RowStats = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Modules that are the identity in evaluation mode: skipped when looking for the next linear.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.AlphaDropout,
)


def row_stats_correct_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[rows, 2]``: 1 where the prediction is correct, and the cross-entropy of the row (for a
    sequence, their means over its scored positions: :func:`falsify.data.base.per_example_scores`)."""
    return torch.stack(per_example_scores(logits, y), dim=-1)


@dataclass(frozen=True)
class SweepResult:
    """Summed row statistics over the examples: intact ``[K]`` and per mask ``[groups, K]``."""

    intact: torch.Tensor
    ablated: torch.Tensor
    strategy: str
    rows_evaluated: int  # (mask, example) pairs that went through the suffix
    chunk_rows: int  # pairs per chunk allowed by the budget


@dataclass(frozen=True)
class _Chain:
    """The model as ``prefix ∘ suffix``, cut just after ``layer``."""

    prefix: list[nn.Module]
    suffix: list[nn.Module]

    def run_prefix(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.prefix:
            x = m(x)
        return x

    def run_suffix(self, h: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for m in self.suffix[start:stop]:
            h = m(h)
        return h

    def next_linear(self) -> int | None:
        """Index in ``suffix`` of the first module that is not a pass-through, if it is linear."""
        for i, m in enumerate(self.suffix):
            if isinstance(m, _PASS_THROUGH):
                continue
            return i if isinstance(m, nn.Linear) else None
        return None

    def next_conv(self) -> int | None:
        """Index in ``suffix`` of the first module that is not a pass-through, if it is a
        :func:`_linear_conv` or a :func:`_conv_block`."""
        for i, m in enumerate(self.suffix):
            if isinstance(m, _PASS_THROUGH):
                continue
            return i if (_linear_conv(m) or _conv_block(m)) else None
        return None


def _linear_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` whose output is linear in its input plus the bias (zero padding, one
    group), so ``conv(h − d) = conv(h) − conv_without_bias(d)`` holds exactly in real arithmetic."""
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"


def _conv_block(m: nn.Module) -> bool:
    """A block (a residual block, for instance) whose ``forward(x)`` is
    ``after_conv1(x, conv1(x))`` with a :func:`_linear_conv` ``conv1``: the conv update applies
    to ``conv1``, and ``after_conv1`` (the shortcut included) runs on the ablated input. The
    identity is checked on the data before it is trusted (:func:`_conv_delta_applies`)."""
    conv1 = getattr(m, "conv1", None)
    after = getattr(m, "after_conv1", None)
    return isinstance(conv1, nn.Module) and _linear_conv(conv1) and callable(after)


def _conv_of(m: nn.Module) -> tuple[nn.Conv2d, Any]:
    """The conv that the update applies to, and the block around it (``None`` for a bare conv)."""
    if isinstance(m, nn.Conv2d):
        return m, None
    return m.conv1, m  # type: ignore[return-value]


def _chain(model: nn.Module, expand: set[str], prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Children of ``model`` in registration order, expanding those named in ``expand``."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if full in expand:
            out.extend(_chain(child, expand, f"{full}."))
        else:
            out.append((full, child))
    return out


def _find_chain(
    model: nn.Module, layer: str, probe: torch.Tensor, want_linear: bool
) -> _Chain | None:
    """Cut ``model`` after ``layer`` if composing its modules in order reproduces ``model``.

    The ancestors of ``layer`` are expanded into their children; with ``want_linear`` the first
    module after the layer is expanded too until a linear module (or a leaf) comes next. The
    cut is trusted only if the composition equals ``model(probe)`` bit for bit.
    """
    parts = layer.split(".")
    expand = {".".join(parts[:i]) for i in range(1, len(parts))}
    stages = _chain(model, expand)
    for _ in range(64):  # bounded descent into nested first children
        names = [n for n, _ in stages]
        if layer not in names:
            return None
        cut = names.index(layer) + 1
        chain = _Chain([m for _, m in stages[:cut]], [m for _, m in stages[cut:]])
        if not want_linear:
            break
        nxt = next(
            ((n, m) for n, m in stages[cut:] if not isinstance(m, _PASS_THROUGH)),
            None,
        )
        if (
            nxt is None
            or isinstance(nxt[1], nn.Linear)
            or _linear_conv(nxt[1])
            or _conv_block(nxt[1])
            or not list(nxt[1].children())
        ):
            break
        expand.add(nxt[0])
        stages = _chain(model, expand)
    with torch.no_grad():
        try:
            composed = chain.run_suffix(chain.run_prefix(probe))
        except (RuntimeError, TypeError, ValueError):
            return None
        intact = model(probe)
    if not isinstance(intact, torch.Tensor) or not torch.equal(composed, intact):
        return None
    return chain


def plan_strategy(
    model: nn.Module, layer: str, probe: torch.Tensor, strategy: Strategy = "auto"
) -> tuple[str, _Chain | None]:
    """The fastest exact strategy for ``layer`` (or the one asked for, if the model allows it).

    ``rank_one`` needs a chain whose layer output is ``[batch, units]``, with the units on the
    axis the layer's unit view names, followed (through pass-through modules) by an
    ``nn.Linear`` over those units; ``conv_delta`` needs a chain whose layer output is
    ``[batch, channels, H, W]`` with channel units (mean view) followed (through pass-through
    modules) by a zero-padded, ungrouped ``nn.Conv2d`` over those channels; ``resume`` needs a
    model whose ``cut`` and ``resume`` accept ``layer`` (:func:`_resume_applies`); ``split``
    needs a chain;
    ``hooks`` works for any model whose examples do not interact in evaluation mode.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "hooks":
        return "hooks", None
    if strategy in ("auto", "resume"):
        if _resume_applies(model, layer, probe):
            return "resume", None
        if strategy == "resume":
            raise ValueError(f"the model cannot resume its forward from {layer!r}")
    chain = None
    if strategy in ("auto", "rank_one"):
        chain = _find_chain(model, layer, probe, want_linear=True)
        if chain is not None and _rank_one_applies(chain, probe, unit_view(model, layer)):
            return "rank_one", chain
        if strategy == "rank_one":
            raise ValueError(f"the model is not a chain with nn.Linear after {layer!r}")
    if strategy in ("auto", "conv_delta"):
        chain = _find_chain(model, layer, probe, want_linear=True)
        if chain is not None and _conv_delta_applies(chain, probe, unit_view(model, layer)):
            return "conv_delta", chain
        if strategy == "conv_delta":
            raise ValueError(f"the model is not a chain with nn.Conv2d after {layer!r}")
    chain = _find_chain(model, layer, probe, want_linear=False)
    if chain is not None:
        return "split", chain
    if strategy == "split":
        raise ValueError(f"the model cannot be cut after {layer!r} into a chain of modules")
    return "hooks", None


def _resume_applies(model: nn.Module, layer: str, probe: torch.Tensor) -> bool:
    """Whether ``model`` resumes from ``layer``: it has ``resumable(layer)``, ``cut`` and
    ``resume`` (:class:`falsify.models.transformer.Transformer` does), and on ``probe`` the cut
    run and its resumption both reproduce ``model(probe)`` bit for bit. Any other model (a
    Hugging Face one, say) gets ``False``."""
    resumable = getattr(model, "resumable", None)
    if not (callable(resumable) and resumable(layer)):
        return False
    with torch.no_grad():
        carry, h, logits = model.cut(probe, layer)  # type: ignore[operator]
        again = model.resume(layer, carry, h)  # type: ignore[operator]
        intact = model(probe)
    return torch.equal(logits, intact) and torch.equal(again, intact)


def _resume_row_bytes(model: nn.Module, layer: str, x1: torch.Tensor) -> int:
    """Bytes one (mask, example) row needs when it resumes from ``layer``: every module output
    of the resumed part (an upper bound on what is alive at once, as in
    :func:`_probe_row_bytes`), the gathered carry and layer rows, indices and statistics."""
    carry, h, _ = model.cut(x1, layer)  # type: ignore[operator]
    sizes = _output_bytes(model, lambda: model.resume(layer, carry, h))  # type: ignore[operator]
    return sizes + (carry.numel() + 2 * h.numel()) * h.element_size() + 64 + h.numel()


def _output_bytes(model: nn.Module, run: Callable[[], Any]) -> int:
    """The summed size of the outputs of ``model``'s leaf modules during ``run()``."""
    sizes: list[int] = []

    def record(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return sum(sizes)


def _rank_one_applies(chain: _Chain, probe: torch.Tensor, view: UnitView) -> bool:
    lin = chain.next_linear()
    if lin is None:
        return False
    linear = chain.suffix[lin]
    with torch.no_grad():
        h = chain.run_prefix(probe[:1])
    units_last = h.dim() == 2 and view.axis in (1, -1) and view.position is None
    return units_last and isinstance(linear, nn.Linear) and linear.in_features == h.shape[1]


def _conv_delta_applies(chain: _Chain, probe: torch.Tensor, view: UnitView) -> bool:
    nxt = chain.next_conv()
    if nxt is None:
        return False
    conv, block = _conv_of(chain.suffix[nxt])
    with torch.no_grad():
        h = chain.run_prefix(probe)
        if block is not None and not torch.equal(block.after_conv1(h, conv(h)), block(h)):
            return False
    channels = h.dim() == 4 and view.axis in (1, -3) and view.position is None
    return channels and conv.in_channels == h.shape[1]


def _probe_row_bytes(model: nn.Module, layer: str, x1: torch.Tensor, chain: _Chain | None) -> int:
    """Bytes one (mask, example) row needs in the suffix (or in the whole model).

    The sum of every module output's size is an upper bound on what is alive at once (autograd
    is off, so intermediate tensors are freed as soon as the next module has consumed them).
    """
    layer_numel: list[int] = []
    with hooked(model, {layer: lambda _m, _i, o: layer_numel.append(o[0].numel())}):
        total = _output_bytes(model, lambda: model(x1)) + x1.numel() * x1.element_size()
    if chain is not None:
        # Only the suffix runs per row: count what comes after the layer's output.
        h = chain.run_prefix(x1)
        suffix_sizes: list[int] = []
        for m in chain.suffix:
            h = m(h)
            suffix_sizes.append(h.numel() * h.element_size())
        total = sum(suffix_sizes) + 2 * layer_numel[0] * x1.element_size()
    # Indices (mask, example), the gathered mask row and the statistics of a row.
    return total + 64 + layer_numel[0]


def _affected(
    differs: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:  # [N, U] bool, [g, U] bool -> [N, g] bool
    """Examples on which each mask changes something: any masked unit differs from its fill."""
    hits = differs.to(torch.float32) @ masks.to(torch.float32).T  # exact counts below 2**24
    return hits > 0


@torch.no_grad()
def ablation_sweep(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor | None,
    masks: torch.Tensor,
    fill: torch.Tensor,
    *,
    row_stats: RowStats = row_stats_correct_ce,
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strategy: Strategy = "auto",
    device: torch.device | None = None,
) -> SweepResult:
    """Sum ``row_stats`` over ``x`` for the intact model and with each mask of ``masks`` applied.

    ``masks`` ``[groups, units]`` (bool) selects the units of ``layer`` (as its unit view reads
    them) that each ablation sets to ``fill``: ``[…]`` (the layer's output shape without the
    batch) for every example, or ``[len(x), …]``, one row per example (the resample fill of
    :func:`falsify.interventions.ablation.fill_values`). ``batch_size`` examples go through the
    prefix at a time; at most ``max_rows`` (mask, example) pairs, and no more than fit in
    ``max_bytes`` of suffix activations, are evaluated per forward.

    ``x`` may instead be a map-style torch Dataset of ``(x, y)`` items, with ``y=None``: the
    examples are then streamed onto ``device`` (default the CPU) in blocks, and everything the
    sweep holds (a block's inputs and cached activations, the pair bookkeeping, a chunk's
    working set) is sized to fit ``max_bytes`` together (docs/performance.md, "Data that does
    not fit in memory"). The sums are those of the in-memory sweep over the same examples.
    """
    model.eval()
    stream = is_stream(x)
    if stream:
        device = device or torch.device("cpu")
        probe = gather(x, range(min(_PROBE, len(x))))[0].to(device)  # type: ignore[arg-type]
    else:
        device = x.device  # type: ignore[union-attr]
        probe = x[:_PROBE]  # type: ignore[index]
    masks = masks.to(device=device, dtype=torch.bool)
    fill = fill.to(device)
    get_layer(model, layer)  # a clear error for an unknown layer name
    view = unit_view(model, layer)
    # A few examples suffice to check that the chain reproduces the model bit for bit.
    name, chain = plan_strategy(model, layer, probe, strategy)
    if name == "resume":
        row_bytes = _resume_row_bytes(model, layer, probe[:1])
    else:
        row_bytes = _probe_row_bytes(model, layer, probe[:1], chain)
    # Streamed, a quarter of the budget goes to a chunk, a quarter to the pair bookkeeping and
    # half to a block of examples; in memory the inputs are the caller's and not counted.
    chunk_rows = max(1, min(max_rows, (max_bytes // 4 if stream else max_bytes) // row_bytes))
    if device.type == "cpu":
        # Chunks whose tensors stay in the allocator's reused memory: a fresh multi-megabyte
        # tensor per chunk is mapped and zeroed by the kernel each time, which costs more than
        # the arithmetic (measured in docs/performance.md).
        chunk_rows = min(chunk_rows, max(64, _CPU_CHUNK_BYTES // row_bytes))
    lin = chain.next_linear() if (chain is not None and name == "rank_one") else None
    conv_plan = None
    if chain is not None and name == "conv_delta":
        lin = chain.next_conv()
        conv_plan = _plan_conv(chain, lin, probe)
    sweep = _Sweep(
        model=model,
        layer=layer,
        view=view,
        name=name,
        chain=chain,
        lin=lin,
        masks=masks,
        row_stats=row_stats,
        chunk_rows=chunk_rows,
        book_bytes=max_bytes // 4,
        conv_plan=conv_plan,
    )
    if not stream:
        base_rows, delta, evaluated = sweep.run([(x, y)], fill, batch_size)  # type: ignore[list-item]
    else:
        per_ex = _example_bytes(model, probe[:1])
        block = max(1, (max_bytes // 2) // per_ex)
        blocks = batches(x, block, device=device)  # type: ignore[arg-type]
        base_rows, delta, evaluated = sweep.run(blocks, fill, min(batch_size, block))
    intact = base_rows.sum(dim=0)
    return SweepResult(
        intact=intact,
        ablated=intact.unsqueeze(0) + delta,
        strategy=name,
        rows_evaluated=evaluated,
        chunk_rows=chunk_rows,
    )


@dataclass(frozen=True)
class _ConvPlan:
    """How ``conv_delta`` evaluates a row: the conv the update applies to (``weight``, geometry,
    and called on the intact input), the block around it (``after_conv1``) or ``None``, the
    modules (or equivalent callables) that run after it, and for a small input map the conv as
    one dense matrix per input channel (:func:`_dense_responses`), else ``None``."""

    conv: Any
    block: Any
    rest: list[Callable[[torch.Tensor], torch.Tensor]]
    dense: torch.Tensor | None = None


def _plan_conv(chain: _Chain, lin: int, probe: torch.Tensor) -> _ConvPlan:
    """The conv update's plan: with folded batch norms where the modules offer ``folded()``
    (resnet20's blocks: :meth:`falsify.models.resnet.BasicBlock.folded`), and after a bare conv
    the modules rewritten for its channels-last output (:func:`_channels_last_tail`), if on
    ``probe`` that run gives the model's logits to float rounding; the modules themselves
    otherwise."""
    conv, block = _conv_of(chain.suffix[lin])
    h = chain.run_suffix(chain.run_prefix(probe), 0, lin)
    shape, rest = tuple(h.shape[1:]), list(chain.suffix[lin + 1 :])

    def exact() -> _ConvPlan:  # the dense responses are built only for the plan returned
        return _ConvPlan(conv, block, rest, _dense_responses(conv, shape))

    if block is None:
        fast = _ConvPlan(conv, None, _channels_last_tail(rest), _dense_responses(conv, shape))
        z = conv(h).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # as _conv_delta's
        got = _run(fast.rest, z)
    elif callable(getattr(block, "folded", None)):
        fast_block = block.folded()
        fast = _ConvPlan(
            fast_block.conv1,
            fast_block,
            _folded(rest),
            _dense_responses(fast_block.conv1, shape),
        )
        got = _run(fast.rest, fast_block(h))
    else:
        return exact()
    want = chain.run_suffix(h, lin)
    # A guard against a wrong rewrite (an error of the order of the logits), not the precision
    # bound: the effects' 1e-6 agreement with the hook loop is what the tests check.
    return fast if bool((got - want).abs().max() <= 1e-4 * (1 + want.abs().max())) else exact()


# The dense form of the conv update is used while the input map has at most this many positions
# per kernel tap: it then costs at most this many times the multiply-adds of the patches, and
# needs no patches (on 4×4 maps under a 3×3 kernel it took the cnn sweep's update from 0.39 s to
# 0.29 s: docs/performance.md).
_DENSE_PER_TAP = 2


def _dense_responses(conv: Any, in_shape: tuple[int, ...]) -> torch.Tensor | None:
    """``[C, H·W, H'·W'·out]``: row ``p`` of matrix ``c`` is the conv's output (no bias, channels
    last) for a one at position ``p`` of input channel ``c``, so the update of a single-channel
    difference ``d`` ``[rows, H·W]`` is ``d @ matrix[c]``; ``None`` for larger maps
    (:data:`_DENSE_PER_TAP`)."""
    c, hh, ww = in_shape
    kh, kw = conv.kernel_size
    if hh * ww > _DENSE_PER_TAP * kh * kw:
        return None
    weight = conv.weight  # [out, C, kh, kw]
    out = weight.shape[0]
    eye = torch.eye(hh * ww, dtype=weight.dtype, device=weight.device).view(-1, 1, hh, ww)
    per_channel = weight.transpose(0, 1).reshape(c * out, 1, kh, kw)
    with torch.no_grad():
        basis = F.conv2d(eye, per_channel, None, conv.stride, conv.padding, conv.dilation)
    _, _, ho, wo = basis.shape
    # [H·W, C·out, H', W'] -> [C, H·W, H', W', out]
    basis = basis.view(hh * ww, c, out, ho, wo).permute(1, 0, 3, 4, 2)
    return basis.reshape(c, hh * ww, ho * wo * out).contiguous()


class _PoolThenReLU:
    """``ReLU`` then ``MaxPool2d`` computed as the pool then the ReLU (in place on the pooled
    tensor): equal, since the ReLU is monotone, and it runs on the smaller map."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        self.pool = pool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x).relu_()


class _ChannelsLastHead:
    """``Flatten`` then ``Linear`` on a channels-last ``[rows, C, H, W]`` tensor without the copy
    that flattening it in ``C, H, W`` order takes: the linear weight's columns are permuted once
    to the ``H, W, C`` order of memory (equal to float rounding). Any other input is flattened."""

    def __init__(self, flatten: nn.Flatten, linear: nn.Linear) -> None:
        self.flatten, self.linear = flatten, linear
        self._weights: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() != 4
            or x.is_contiguous()
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            return self.linear(self.flatten(x))
        key = tuple(x.shape[1:])
        if key not in self._weights:
            w = self.linear.weight
            self._weights[key] = w.view(-1, *key).permute(0, 2, 3, 1).reshape(len(w), -1)
        flat = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # a view: the memory order
        return F.linear(flat, self._weights[key], self.linear.bias)


def _channels_last_tail(
    modules: list[Callable[[torch.Tensor], torch.Tensor]],
) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """``modules`` with each ``ReLU`` followed (through pass-throughs) by a ``MaxPool2d`` run as
    :class:`_PoolThenReLU`, and each ``Flatten`` over all but the batch followed by a ``Linear``
    as :class:`_ChannelsLastHead` (the children of an ``nn.Sequential`` rewritten in turn)."""
    flat: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for m in modules:
        flat.extend(list(m) if isinstance(m, nn.Sequential) else [m])
    out: list[Callable[[torch.Tensor], torch.Tensor]] = []
    i = 0
    while i < len(flat):
        m = flat[i]
        j = i + 1
        while j < len(flat) and isinstance(flat[j], _PASS_THROUGH):
            j += 1
        nxt = flat[j] if j < len(flat) else None
        if isinstance(m, nn.ReLU) and isinstance(nxt, nn.MaxPool2d):
            out.append(_PoolThenReLU(nxt))
            i = j + 1
        elif (
            isinstance(m, nn.Flatten)
            and m.start_dim == 1
            and m.end_dim == -1
            and isinstance(nxt, nn.Linear)
        ):
            out.append(_ChannelsLastHead(m, nxt))
            i = j + 1
        else:
            out.append(m)
            i += 1
    return out


def _folded(modules: list[nn.Module]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """``modules`` with each one that offers ``folded()`` replaced by it, and the children of an
    ``nn.Sequential`` folded in turn."""
    out: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for m in modules:
        if callable(getattr(m, "folded", None)):
            out.append(m.folded())  # type: ignore[operator]
        elif isinstance(m, nn.Sequential):
            out.extend(_folded(list(m)))
        else:
            out.append(m)
    return out


def _run(
    steps: list[Callable[[torch.Tensor], torch.Tensor]], h: torch.Tensor, in_place: bool = False
) -> torch.Tensor:
    """Apply ``steps`` in order; with ``in_place`` (``h`` is the caller's own tensor) the ReLUs and
    pass-throughs that come first are applied in place, sparing an allocation."""
    for m in steps:
        if in_place and isinstance(m, (*_PASS_THROUGH, nn.ReLU)):
            if isinstance(m, nn.ReLU):
                h.relu_()
            continue
        in_place = False
        h = m(h)
    return h


def _example_bytes(model: nn.Module, x1: torch.Tensor) -> int:
    """Bytes one example of a streamed block costs at most: its input three times (the items or
    what makes them, and the stacked batch), and three times every module output of a forward
    (the prefix's working set, and the cached layer and linear outputs with their concatenated
    copies)."""
    return 3 * x1.numel() * x1.element_size() + 3 * _output_bytes(model, lambda: model(x1)) + 64


@dataclass(frozen=True)
class _Sweep:
    """What a sweep has planned (strategy, chain, chunk size), run over blocks of examples."""

    model: nn.Module
    layer: str
    view: UnitView
    name: str
    chain: _Chain | None
    lin: int | None
    masks: torch.Tensor
    row_stats: RowStats
    chunk_rows: int
    book_bytes: int
    conv_plan: _ConvPlan | None

    def run(
        self,
        blocks: Iterable[tuple[torch.Tensor, torch.Tensor]],
        fill: torch.Tensor,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-example intact statistics ``[N, K]``, the summed change per mask ``[groups, K]``
        and the pairs evaluated, over ``blocks`` of examples taken one after another. A
        per-example ``fill`` ``[N, …]`` is cut into the rows of each block."""
        chain, lin, name, masks = self.chain, self.lin, self.name, self.masks
        w_t = (
            chain.suffix[lin].weight.T.contiguous()
            if (chain is not None and lin is not None and name == "rank_one")
            else None
        )
        single = masks.sum(dim=1) == 1
        unit_of = masks.to(torch.int64).argmax(dim=1)  # the unit of a single-unit mask
        base: list[torch.Tensor] = []
        delta: torch.Tensor | None = None
        evaluated, offset = 0, 0
        for xb, yb in blocks:
            h_all, z, base_rows = self._cache(xb, yb, batch_size)
            base.append(base_rows)
            per_example = fill.dim() == h_all.dim()  # fill [N, …]: one row per example (resample)
            f = fill[offset : offset + len(xb)] if per_example else fill
            offset += len(xb)
            if delta is None:
                delta = torch.zeros(
                    masks.shape[0], base_rows.shape[1], dtype=torch.float64, device=masks.device
                )
            evaluated += self._pairs(
                xb, yb, h_all, z, base_rows, f, per_example, w_t, single, unit_of, delta
            )
        if delta is None:
            raise ValueError("an ablation sweep needs at least one example")
        return torch.cat(base), delta, evaluated

    def _cache(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The layer's output for every example of the block, computed once, the linear or conv
        output (with resume, the carry), and the intact statistics ``[n, K]``."""
        model, layer, chain, lin, name = self.model, self.layer, self.chain, self.lin, self.name
        plan = self.conv_plan
        hs: list[torch.Tensor] = []
        zs: list[torch.Tensor] = []  # the linear or conv output; with resume, the carry
        base: list[torch.Tensor] = []
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if name == "resume":
                carry, h, logits = model.cut(xb, layer)  # type: ignore[operator]
                zs.append(carry)
            elif chain is not None:
                h = chain.run_prefix(xb)
                if plan is not None and lin is not None:
                    # The conv's intact output is kept for the conv updates.
                    zc = plan.conv(chain.run_suffix(h, 0, lin))
                    zs.append(zc.permute(0, 2, 3, 1).contiguous())  # [B, H', W', out]
                    # The intact rows run in the layout of the updated ones (channels last).
                    after = (
                        zs[-1].permute(0, 3, 1, 2)
                        if plan.block is None
                        else plan.block.after_conv1(h, zc)
                    )
                    logits = _run(plan.rest, after)
                elif lin is not None:
                    # The linear module's intact output is kept for the low-rank updates.
                    zs.append(chain.run_suffix(h, 0, lin + 1))
                    logits = chain.run_suffix(zs[-1], lin + 1)
                else:
                    logits = chain.run_suffix(h)
            else:
                with capture(model, layer) as seen:
                    logits = model(xb)
                h = seen[0]
            hs.append(h)
            base.append(self.row_stats(logits, yb))
        return torch.cat(hs), (torch.cat(zs) if zs else None), torch.cat(base)

    def _pairs(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        h_all: torch.Tensor,  # [N, …]: the layer's output
        z: torch.Tensor | None,  # [N, out]
        base_rows: torch.Tensor,  # [N, K]
        fill: torch.Tensor,
        per_example: bool,
        w_t: torch.Tensor | None,
        single: torch.Tensor,
        unit_of: torch.Tensor,
        delta: torch.Tensor,  # [groups, K], added to
    ) -> int:
        """Add to ``delta`` the change of every affected (mask, example) pair of the block; the
        number of pairs evaluated."""
        model, layer, chain, lin, name = self.model, self.layer, self.chain, self.lin, self.name
        masks, view, chunk_rows = self.masks, self.view, self.chunk_rows
        plan = self.conv_plan
        n_groups = masks.shape[0]
        differs = view.changed(h_all, fill)  # [N, U]
        # Bound the [N, groups] bookkeeping (affected flags and pair indices) by the budget too.
        groups_per_block = max(1, self.book_bytes // (len(x) * 24 + 1))
        evaluated = 0
        for g0 in range(0, n_groups, groups_per_block):
            block = masks[g0 : g0 + groups_per_block]
            if bool(single[g0 : g0 + groups_per_block].all()):
                affected = differs[:, unit_of[g0 : g0 + groups_per_block]]
            else:
                affected = _affected(differs, block)
            pairs = affected.T.nonzero()  # [P, 2]: (mask in block, example)
            for p0 in range(0, len(pairs), chunk_rows):
                g_loc, b = pairs[p0 : p0 + chunk_rows].unbind(dim=1)
                g = g_loc + g0
                evaluated += len(b)
                if chain is not None and z is not None and w_t is not None and lin is not None:
                    zr = _low_rank(z, w_t, h_all, fill, per_example, masks, single, unit_of, g, b)
                    logits = chain.run_suffix(zr, _relu_in_place(chain, lin + 1, zr))
                elif plan is not None and z is not None:
                    zr = _conv_delta(
                        plan, z, h_all, fill, per_example, masks, single, unit_of, g, b
                    )
                    if plan.block is not None:
                        rows = view.apply(h_all[b], masks[g], fill[b] if per_example else fill)
                        # The block's convs run faster on a contiguous input than channels last.
                        c1 = zr.contiguous()
                        logits = _run(plan.rest, plan.block.after_conv1(rows, c1))
                    else:  # zr is this chunk's own tensor: the ReLUs after the conv run in place
                        logits = _run(plan.rest, zr, in_place=True)
                else:
                    rows = view.apply(h_all[b], masks[g], fill[b] if per_example else fill)
                    if name == "resume" and z is not None:
                        logits = model.resume(layer, z[b], rows)  # type: ignore[operator]
                    elif chain is not None:
                        logits = chain.run_suffix(rows)
                    else:
                        with hooked(model, {layer: lambda _m, _i, _o, r=rows: r}):
                            logits = model(x[b])
                delta.index_add_(0, g, self.row_stats(logits, y[b]) - base_rows[b])
        return evaluated


def _relu_in_place(chain: _Chain, start: int, rows: torch.Tensor) -> int:
    """Apply the ReLUs that follow (through pass-throughs) in place on ``rows``, a fresh tensor
    this chunk owns, sparing an allocation; the index of the first module still to run."""
    i = start
    while i < len(chain.suffix) and isinstance(chain.suffix[i], (*_PASS_THROUGH, nn.ReLU)):
        if isinstance(chain.suffix[i], nn.ReLU):
            rows.relu_()
        i += 1
    return i


def _low_rank(
    z: torch.Tensor,  # [N, out] intact output of the linear module
    w_t: torch.Tensor,  # [units, out]
    h: torch.Tensor,  # [N, units]
    fill: torch.Tensor,  # [units], or [N, units] with per_example
    per_example: bool,
    masks: torch.Tensor,  # [groups, units]
    single: torch.Tensor,  # [groups] bool
    unit_of: torch.Tensor,  # [groups]
    g: torch.Tensor,  # [rows]
    b: torch.Tensor,  # [rows]
) -> torch.Tensor:  # [rows, out]
    """The linear module's output with mask ``g`` applied to example ``b``: ``z − (d ⊙ m) Wᵀ``."""
    out = z.index_select(0, b)  # a fresh copy, updated in place: two passes over memory fewer
    if bool(single[g].all()):
        u = unit_of[g]
        d = h[b, u] - (fill[b, u] if per_example else fill[u])  # [rows]
        return out.addcmul_(d.unsqueeze(1), w_t.index_select(0, u), value=-1.0)
    f = fill.index_select(0, b) if per_example else fill.unsqueeze(0)
    d = (h.index_select(0, b) - f) * masks.index_select(0, g)
    return out.addmm_(d, w_t, alpha=-1.0)


def _conv_delta(
    plan: _ConvPlan,  # its conv is one for which _linear_conv holds
    z: torch.Tensor,  # [N, H', W', out] intact output of the conv, channels last
    h: torch.Tensor,  # [N, C, H, W] the layer's output, the conv's input
    fill: torch.Tensor,  # [C, H, W], or [N, C, H, W] with per_example
    per_example: bool,
    masks: torch.Tensor,  # [groups, C]
    single: torch.Tensor,  # [groups] bool
    unit_of: torch.Tensor,  # [groups]
    g: torch.Tensor,  # [rows], sorted: the pairs come mask by mask
    b: torch.Tensor,  # [rows]
) -> torch.Tensor:  # [rows, out, H', W']
    """The conv's output with mask ``g`` applied to example ``b``: ``z − conv(d ⊙ m)`` without
    the bias, where ``d = h − fill``; the conv analogue of :func:`_low_rank`.

    For single-channel masks the correction is a one-channel convolution with the kernel slice
    ``W[:, u]``, one in-place matrix product per mask of the chunk: of ``d``'s map by the
    channel's dense response matrix on a small map (``plan.dense``), else of the patches of
    ``d`` by the slice (``out`` instead of ``C × out`` multiply-adds per output pixel and tap).
    """
    conv = plan.conv
    # z is kept as [N, H', W', out] (channels last): max pooling after the conv runs about 15
    # times faster on CPU in that layout (docs/performance.md); the values are the same.
    out = z.index_select(0, b)  # [rows, H', W', out]
    if bool(single[g].all()):
        u = unit_of[g]
        f = fill[b, u] if per_example else fill[u]
        d = h[b, u] - f  # [rows, H, W]
        segs, counts = torch.unique_consecutive(g, return_counts=True)
        start = 0
        if plan.dense is not None:
            # [rows, H·W] times channel c's [H·W, H'·W'·out] responses, into [rows, H'·W'·out].
            flat, cols = out.view(len(b), -1), d.flatten(1)
            for c, n in zip(unit_of[segs].tolist(), counts.tolist(), strict=True):
                rows = slice(start, start + n)
                flat[rows].addmm_(cols[rows], plan.dense[c], alpha=-1.0)
                start += n
            return out.permute(0, 3, 1, 2)
        # Patches [rows, H'·W', k·k] times the kernel slice W[:, c] [out, k·k] of each mask's
        # channel c (the rows of one mask are consecutive): one matrix product per mask.
        cols = _patches(d, conv, out.shape[1:3])  # [rows, H'·W', k·k]
        kernels = conv.weight.flatten(2).transpose(0, 1)  # [C, out, k·k]
        hw = cols.shape[1]
        flat = out.view(-1, out.shape[-1])  # [rows·H'·W', out]
        cols = cols.view(-1, cols.shape[-1])  # [rows·H'·W', k·k]
        for c, n in zip(unit_of[segs].tolist(), counts.tolist(), strict=True):
            rows = slice(start * hw, (start + n) * hw)
            flat[rows].addmm_(cols[rows], kernels[c].T, alpha=-1.0)  # in place: no product
            start += n
        return out.permute(0, 3, 1, 2)  # [rows, out, H', W'], channels last in memory
    f = fill.index_select(0, b) if per_example else fill.unsqueeze(0)
    d = (h.index_select(0, b) - f) * masks.index_select(0, g)[:, :, None, None]
    corr = F.conv2d(d, conv.weight, None, conv.stride, conv.padding, conv.dilation)
    return out.permute(0, 3, 1, 2).sub_(corr)


def _patches(d: torch.Tensor, conv: nn.Conv2d, size: torch.Size) -> torch.Tensor:
    """``[rows, H, W]`` → ``[rows, H'·W', k·k]``: the input under each kernel tap at each output
    position (zero padding), as ``F.unfold`` would give, from ``k·k`` strided slices; ``unfold``
    loops over the rows on CPU and costs more than the products it feeds."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = conv.padding  # type: ignore[misc]
    ho, wo = size
    padded = F.pad(d, (pw, pw, ph, ph))
    taps = [
        padded[
            :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
        ]
        for i in range(kh)
        for j in range(kw)
    ]
    return torch.stack(taps, dim=-1).view(len(d), ho * wo, kh * kw)
