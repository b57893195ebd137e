"""MotionBooth-style customisation (Wu et al., NeurIPS 2024) ported to the CogVideoX DiT.

PLACEHOLDER: the method class is added once the shared trainer exists; this module currently holds
the attention processor, the losses and the token helpers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "SubjectAttention",
    "SubjectAttnProcessor",
    "install_subject_attention",
    "subject_token_mask",
    "masked_v_loss",
    "attention_bce_loss",
    "steering_values",
]


# ---------------------------------------------------------------------------------------------
# 1. Losses
# ---------------------------------------------------------------------------------------------


def masked_v_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MotionBooth's subject-region loss on the v-prediction target.

    ``Σ mask · (pred − target)² / Σ mask``: the squared error summed over the masked latent pixels
    *and all channels*, divided by the number of masked latent pixels (not pixels × channels) —
    MotionBooth's normalisation (``masked_mse_loss`` in its ``scripts/utils.py`` counts the mask
    before broadcasting it over channels). With no masked pixel the loss is 0.

    Args:
        pred, target: ``(B, F, C, H, W)`` (CogVideoX latent layout).
        mask: ``(B, F, H, W)`` or ``(B, 1, H, W)``, bool or {0, 1} float, at latent resolution.

    Returns:
        A scalar float32 tensor.
    """
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"pred and target must both be (B, F, C, H, W); got {tuple(pred.shape)}, {tuple(target.shape)}")
    b, f, _, h, w = pred.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] not in (1, f) or tuple(mask.shape[2:]) != (h, w):
        raise ValueError(f"mask must be (B, F or 1, H, W) = ({b}, {f}, {h}, {w}); got {tuple(mask.shape)}")
    m = mask.to(torch.float32).expand(b, f, h, w).unsqueeze(2)  # (B, F, 1, H, W)
    sq = (pred.float() - target.float()).pow(2) * m
    count = m.sum()
    if count == 0:
        return sq.sum() * 0.0
    return sq.sum() / count


def attention_bce_loss(attn_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MotionBooth's subject-token attention loss: mean binary cross-entropy.

    Args:
        attn_map: ``(B, T, h, w)`` probabilities in ``[0, 1]`` (subject-token attention averaged over
            heads, tokens and layers; see :class:`SubjectAttention`).
        mask: ``(B, T or 1, h, w)`` soft subject mask in ``[0, 1]`` on the same token grid.

    Returns:
        ``mean(−[m log a + (1 − m) log(1 − a)])`` (logs clamped at −100, as PyTorch does), float32.
    """
    if attn_map.ndim != 4 or mask.ndim != 4:
        raise ValueError(f"attn_map and mask must be (B, T, h, w); got {tuple(attn_map.shape)}, {tuple(mask.shape)}")
    mask = mask.to(torch.float32).expand_as(attn_map)
    return F.binary_cross_entropy(attn_map.float().clamp(0.0, 1.0), mask, reduction="mean")


# ---------------------------------------------------------------------------------------------
# 2. Subject tokens
# ---------------------------------------------------------------------------------------------


def subject_token_mask(tokenizer, prompt: str, class_word: str, max_length: int) -> tuple[torch.Tensor, str]:
    """Which text positions hold the subject phrase ``"<class> *"`` of ``prompt``.

    The phrase is located in characters (``<class>`` followed by ``*``; else the ``*`` alone; else
    the class word alone) and mapped to tokens by the fast tokenizer's offsets, so it works for the
    T5 sentencepiece tokenizer and for the tiny byte-level one alike.

    Returns:
        ``(mask, phrase)``: bool ``(max_length,)`` and the matched text (``""`` when nothing matched,
        then the mask is all false).
    """
    patterns = [rf"\b{re.escape(class_word)}\s*\*", r"\*", rf"\b{re.escape(class_word)}\b"] if class_word else [r"\*"]
    span = None
    for pat in patterns:
        m = re.search(pat, prompt)
        if m:
            span = m.span()
            break
    mask = torch.zeros(max_length, dtype=torch.bool)
    if span is None:
        return mask, ""
    enc = tokenizer(
        prompt,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_offsets_mapping=True,
    )
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and a < span[1] and b > span[0]:
            mask[i] = True
    return mask, prompt[span[0] : span[1]]


# ---------------------------------------------------------------------------------------------
# 3. Attention: subject-token maps and box steering without the dense attention matrix
# ---------------------------------------------------------------------------------------------


@dataclass
class SubjectAttention:
    """State shared by every :class:`SubjectAttnProcessor` of one transformer.

    Attributes:
        layers: indices of the blocks whose maps are recorded (``None`` = every block).
        record: when true, recorded blocks append their subject-token map to :attr:`maps`.
        token_mask: float ``(B, n_t)`` weights of the subject tokens per sample (rows summing to 1
            for samples with subject tokens, zeros otherwise); set before a forward pass.
        maps: per recorded block, ``(B, n_v)`` float32: the video-query × text-key attention,
            softmax over the text keys only, of the subject tokens, averaged over heads and tokens.
        steer: ``(B, n_v)`` additive logit bias for the subject tokens (0: unchanged), or ``None``.
        steer_tokens: ``(B, n_t)`` {0, 1}: which text keys get :attr:`steer`.
        steer_layers: blocks that steer (``None`` = every block).
    """

    layers: list[int] | None = None
    record: bool = False
    token_mask: torch.Tensor | None = None
    maps: list[torch.Tensor] = field(default_factory=list)
    steer: torch.Tensor | None = None
    steer_tokens: torch.Tensor | None = None
    steer_layers: list[int] | None = None

    def reset(self) -> None:
        self.maps = []

    def mean_map(self) -> torch.Tensor:
        """Average of the recorded maps over blocks: ``(B, n_v)``."""
        if not self.maps:
            raise RuntimeError("no subject attention maps were recorded (record=False or no recorded block ran)")
        return torch.stack(self.maps).mean(0)


class SubjectAttnProcessor:
    """CogVideoX joint-attention processor with subject-token maps and box steering.

    With recording and steering off it computes exactly what diffusers'
    ``CogVideoXAttnProcessor2_0`` computes (joint ``[text; video]`` attention, q/k layer norm,
    rotary embedding on the video part, one ``scaled_dot_product_attention``).

    *Maps.* The video-query × text-key block ``softmax_text(q_v k_tᵀ / √d)`` — a
    cross-attention-like map with softmax over the ``n_t`` text keys only — costs
    ``n_v × n_t`` per head (17 550 × 226 at 5B), never the dense ``(n_t + n_v)²`` matrix.

    *Steering.* MotionBooth adds a bias to the attention logits of the subject tokens:
    ``logit[q, k] += a[q]`` for video query ``q`` and subject key ``k``. Because this bias is rank
    one per sample (``a[q] · e[k]``), it is folded into the fused attention by appending one
    dimension to queries and keys: ``q' = [q, a]``, ``k' = [k, e / s]``, scale ``s = 1/√d`` ⇒
    ``s · q'·k' = s · q·k + a · e``. Attention then still runs through one
    ``scaled_dot_product_attention`` call (flash / memory-efficient kernels on GPU; the head dim is
    padded by 8 to keep kernels aligned) and the dense bias matrix is never built.
    """

    def __init__(self, control: SubjectAttention, layer_index: int) -> None:
        self.control = control
        self.layer_index = layer_index

    def _active(self, layers: list[int] | None) -> bool:
        return layers is None or self.layer_index in layers

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``hidden_states`` ``(B, n_v, C)``, ``encoder_hidden_states`` ``(B, n_t, C)``.
        Returns ``(video (B, n_v, C), text (B, n_t, C))`` as the stock processor."""
        from diffusers.models.embeddings import apply_rotary_emb

        n_t = encoder_hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        b, n, _ = x.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, n, b)
            attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])

        query, key, value = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        d = key.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, d).transpose(1, 2)
        key = key.view(b, -1, attn.heads, d).transpose(1, 2)
        value = value.view(b, -1, attn.heads, d).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, n_t:] = apply_rotary_emb(query[:, :, n_t:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, n_t:] = apply_rotary_emb(key[:, :, n_t:], image_rotary_emb)

        scale = 1.0 / math.sqrt(d)
        c = self.control
        steer = c.steer is not None and c.steer_tokens is not None and self._active(c.steer_layers)

        # (a) subject-token map: video queries × text keys, softmax over text keys only
        if c.record and c.token_mask is not None and self._active(c.layers):
            logits = torch.einsum("bhqd,bhkd->bhqk", query[:, :, n_t:].float(), key[:, :, :n_t].float()) * scale
            if steer:
                logits = logits + c.steer.float()[:, None, :, None] * c.steer_tokens.float()[:, None, None, :]
            probs = logits.softmax(dim=-1)  # (B, h, n_v, n_t)
            tok = c.token_mask.to(probs)  # (B, n_t)
            c.maps.append(torch.einsum("bhqk,bk->bq", probs, tok) / attn.heads)

        # (b) attention, optionally with the rank-one steering bias folded into an extra dimension
        if steer:
            pad = 8
            a = torch.zeros(b, attn.heads, n, pad, dtype=query.dtype, device=query.device)
            a[:, :, n_t:, 0] = c.steer.to(query.dtype)[:, None, :]
            e = torch.zeros(b, attn.heads, n, pad, dtype=key.dtype, device=key.device)
            e[:, :, :n_t, 0] = (c.steer_tokens.to(key.dtype) / scale)[:, None, :]
            q2, k2 = torch.cat([query, a], -1), torch.cat([key, e], -1)
            v2 = torch.cat([value, torch.zeros_like(a, dtype=value.dtype)], -1)
            out = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=scale)
            out = out[..., :d]
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)

        out = out.transpose(1, 2).reshape(b, -1, attn.heads * d)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        text, video = out.split([n_t, out.size(1) - n_t], dim=1)
        return video, text


def install_subject_attention(transformer, control: SubjectAttention) -> None:
    """Give every block's joint attention a :class:`SubjectAttnProcessor` sharing ``control``."""
    for i, block in enumerate(transformer.transformer_blocks):
        block.attn1.set_processor(SubjectAttnProcessor(control, i))


def steering_values(
    inside: torch.Tensor,
    *,
    edit_scale: float,
    amplify: bool,
    suppress: bool,
    suppress_value: float = -1e4,
) -> torch.Tensor:
    """MotionBooth's per-video-token logit bias for the subject tokens.

    Inside the frame's box: ``edit_scale · (1 − box area fraction)`` when ``amplify``; outside:
    ``suppress_value`` (≈ −∞ after softmax) when ``suppress``; 0 otherwise.

    Args:
        inside: bool ``(T, h, w)`` box masks on the latent token grid (see
            :func:`baselines.boxes.box_token_mask`).

    Returns:
        float32 ``(T · h · w,)`` in the transformer's video-token order (frame, row, column).
    """
    t, h, w = inside.shape
    inside_f = inside.float()
    area = inside_f.sum((1, 2), keepdim=True) / (h * w)
    bias = torch.zeros(t, h, w)
    if amplify:
        bias = bias + edit_scale * (1.0 - area) * inside_f
    if suppress:
        bias = torch.where(inside, bias, torch.full_like(bias, suppress_value))
    return bias.reshape(-1)
