"""A hand-set two-layer attention-only transformer with a known induction circuit.

The circuit of Elhage et al. 2021 ("A mathematical framework for transformer circuits") and
Olsson et al. 2022 ("In-context learning and induction heads"), wired by hand into
:class:`falsify.models.transformer.Transformer` for the ``induction`` task (docs/
sequence-models.md, "Planted circuit"), so a test can check that head scores, ablation and
patching find exactly the planted heads:

- layer 0, head ``PREV_HEAD``: a previous-token head. Its query at position ``t`` and key at
  ``s`` read the one-hot positions so that it attends to ``s = t − 1``; its OV circuit copies
  that token into a "previous token" subspace of the residual stream.
- layer 1, head ``INDUCTION_HEAD``: an induction head. Its query reads the current token and
  its key the previous-token subspace, so at ``t`` it attends to the ``s`` whose predecessor is
  the token at ``t`` (the token after its earlier copy), and its OV circuit copies the token
  there into an answer subspace that the unembedding reads.
- every other head (seeded random query, key and value weights) writes only into a junk
  subspace that nothing reads: ablating or patching it changes no logit.

The residual stream ``d_model = 2·(V + 1) + T + V + junk`` holds, in order, the token one-hot
(V + 1 ids with BOS), the previous-token one-hot, the position one-hot, the answer subspace
(V) and the junk subspace.
"""

from __future__ import annotations

import math

import torch

from falsify.models.transformer import Transformer

__all__ = ["INDUCTION_HEAD", "PREV_HEAD", "planted_induction_model"]

PREV_HEAD = 0  # of layer 0
INDUCTION_HEAD = 1  # of layer 1
_JUNK = 4  # dimensions of the subspace the other heads write to
_SHARP = 40.0  # attention logit of a matching key: softmax ≈ one-hot


@torch.no_grad()
def planted_induction_model(vocab: int, n_ctx: int, n_heads: int = 3, seed: int = 0) -> Transformer:
    """The hand-set circuit for token ids ``0..vocab`` (``vocab`` is BOS) and ``n_ctx``
    positions; the ``n_heads − 1`` other heads per layer get random weights from ``seed``."""
    tokens, answers = vocab + 1, vocab
    tok, prev, pos = 0, tokens, 2 * tokens
    ans = pos + n_ctx
    junk = ans + answers
    d_model, d_head = junk + _JUNK, max(tokens, n_ctx)
    model = Transformer(answers, n_ctx, 2, d_model, n_heads, d_head, 0, False)
    for p in model.parameters():
        p.zero_()
    eye = torch.eye(d_model)
    model.embed.weight.copy_(eye[tok : tok + tokens])
    model.pos_embed.weight.copy_(eye[pos : pos + n_ctx])
    beta = _SHARP * math.sqrt(d_head)  # the attention divides by sqrt(d_head)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    for t in range(n_ctx):
        a0.W_Q[PREV_HEAD, pos + t, t] = beta  # query: "I am at t"
        if t + 1 < d_head:
            a0.W_K[PREV_HEAD, pos + t, t + 1] = 1.0  # key: "I am at (t + 1) − 1"
    for v in range(tokens):
        a0.W_V[PREV_HEAD, tok + v, v] = 1.0
        a0.W_O[PREV_HEAD, v, prev + v] = 1.0
        a1.W_Q[INDUCTION_HEAD, tok + v, v] = beta  # query: the current token
        a1.W_K[INDUCTION_HEAD, prev + v, v] = 1.0  # key: the token before the key's position
    for v in range(answers):
        a1.W_V[INDUCTION_HEAD, tok + v, v] = 1.0
        a1.W_O[INDUCTION_HEAD, v, ans + v] = 1.0
        model.unembed.weight[v, ans + v] = 10.0
    g = torch.Generator().manual_seed(seed)
    for attn, planted in ((a0, PREV_HEAD), (a1, INDUCTION_HEAD)):
        for h in range(n_heads):
            if h == planted:
                continue
            for w in (attn.W_Q, attn.W_K, attn.W_V):
                w[h] = torch.randn(d_model, d_head, generator=g) / math.sqrt(d_model)
            attn.W_O[h, :, junk:] = torch.randn(d_head, _JUNK, generator=g)
    return model.eval()
