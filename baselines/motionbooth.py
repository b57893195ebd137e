"""MotionBooth-style customisation (Wu et al., NeurIPS 2024) on the shared CogVideoX backbone.

MotionBooth fine-tunes a video UNet on a few subject images with three losses and steers the
subject's motion at inference without training (docs/BASELINES.md, "MotionBooth-style"). Here it trains
through the one trainer (:func:`dualreal.engine.trainer.train`: ``loss_fn``, ``extra_losses`` and
``forward_fn`` hooks) and generates with a stock ``CogVideoXPipeline`` whose attention processors
are :class:`SubjectAttnProcessor`. Numbers from the original cite ``jianzongwu/MotionBooth``
(``configs/zeroscope.yaml``, ``scripts/train.py``, ``scripts/utils.py``,
``src/datasets/motionbooth.py``, ``src/models/unet_3d_condition_edit_cross_attn.py``,
``scripts/inference.py``) by file and line.

Adapting the UNet method to the DiT — every choice is an option of :class:`MotionBoothConfig`:

* **Which parameters train** (``trainable``). The original fine-tunes the whole UNet
  (``zeroscope.yaml:3`` ``unet_trained_parameters: full``). A full copy of a 5B DiT with AdamW
  states does not fit beside the other methods, so the default ``"attn"`` fine-tunes the
  joint-attention projections ``to_q, to_k, to_v, to_out.0`` (weights and biases) of every block —
  1.59 B parameters at 5B, the analogue of MotionBooth's ``cross`` option, and the layers its
  attention loss acts on. ``"blocks"`` fine-tunes every parameter of the 42 blocks (needs 8-bit
  AdamW / gradient checkpointing on one GPU). The trained tensors are float32 clones inside a
  weight-sharing copy of the transformer (float32 under bf16 mixed precision, as the original
  requires, ``train.py:208-216``); the shared backbone is never modified. Checkpoint: the trained
  tensors only (``weights.safetensors``).
* **Data per step, as the original** (``schedule="paired"``). The original's loader yields an image
  batch and then one video (``src/datasets/motionbooth.py:292-311``, video batch size 1 at
  ``train.py:258-265``), and accumulates 2 micro-batches per optimiser step (``zeroscope.yaml:40``):
  every step sees ``train_batch_size`` = 10 subject images (``zeroscope.yaml:37``; a DataLoader over
  the subject's images, so all of them when there are fewer than 10) **and** one video, for 300
  steps (``zeroscope.yaml:46``). Here: ``gradient_accumulation_steps=2``, the first micro-batch
  ``min(10, images)`` identity images (1-frame videos, prompt ``"<class> *"``), the second one clip
  (:class:`PairedBatchSource`); each micro-batch's loss is halved by the accumulation, as in the
  original.
* **Video-preservation clips** (``preservation``). The original's videos are generic Panda-70M
  clips (``zeroscope.yaml:11-13``), not the subject's motion: MotionBooth never learns motion from
  reference clips. ``"other-motions"`` (default) trains on ``preservation_clips`` clips of the
  benchmark's *other* motions (chosen and decoded by the benchmark,
  :attr:`~dualreal.engine.protocol.CaseData.preservation_clips`); when the data has no other motion
  the case's own clips are used and the fallback is recorded. ``"target-motion"`` uses the case's
  own motion clips.
* **Subject-region loss** (image micro-batch): :func:`masked_v_loss` on the v-prediction target —
  the squared error summed over the masked latent pixels and all channels, divided by the number of
  masked latent pixels × ``C / 4``. The rule: the original divides by the masked pixels only
  (``scripts/utils.py:48-74``), over the 4 latent channels of its Stable-Diffusion VAE, so its
  subject loss is 4 × the per-element masked mean while the video loss is the plain per-element
  mean (``train.py:418``). CogVideoX has 16 latent channels; dividing by the pixels alone would make
  the subject loss 16 × the per-element mean and quadruple its weight relative to the preservation
  loss. Dividing by ``pixels × 16 / 4`` keeps it at 4 × the masked per-element mean
  (``subject_loss_channels`` = 4), so the two losses weigh against each other as in the original.
  Masks come from :mod:`baselines.masks` (shipped masks first, GrabCut fallback; the source is
  recorded per case), resized bilinearly to the latent grid and binarised (> 0), as
  ``scripts/utils.py:52-54``.
* **Video-preservation loss** (clip micro-batch): the plain v-MSE, weight ``video_loss_weight`` = 1.0
  (``zeroscope.yaml:33``).
* **Subject-token attention loss** (image micro-batch only), weight ``attn_loss_weight`` = 0.01
  (``zeroscope.yaml:35``): binary cross-entropy between the soft mask resized to the token grid and
  the subject-token attention map (``scripts/utils.py:119-141``). A CogVideoX block has no
  cross-attention; the map is the **video-query × text-key block** of its joint attention with the
  softmax taken over the text keys only (a cross-attention map), computed from the block's own
  normalised, rotary-embedded queries and keys at ``n_v × n_t`` cost, never the dense
  ``(n_t + n_v)²`` matrix. It is averaged over heads, over the subject tokens (the ``"<class> *"``
  phrase, located by tokenizer offsets; MotionBooth: ``"sks <class>"``) and over ``attn_layers``
  (default all 42 blocks). It is logged per step (``loss_attention`` in ``train_state.json``).
* **Optimiser** as MotionBooth: AdamW lr 5e-6, β (0.9, 0.999), ε 1e-8, weight decay 0.01
  (``zeroscope.yaml:16-20``), constant learning rate without warm-up (``:23-24``), grad-clip 1.0
  (``:42``), 300 steps (3 on ``tiny``).
* **Budget** (``budget``, :mod:`baselines.common`): ``"equal"`` trains with DualReal's budget
  instead — ``train_steps`` (1000) steps alternating 1 image and 3 clips, no accumulation
  (``schedule="alternate"``).
* **Motion control** (``box_source``). MotionBooth steers along a user-drawn box per frame and never
  learns from reference clips. ``"flow"`` (default) derives a box path covering the moving subject
  from one motion clip (:mod:`baselines.boxes`: union of the moving pixels over a window, at least
  0.3 × 0.3 of the frame), resampled to the generated video's latent frames; ``"off"`` generates
  without motion control (registry ``motionbooth-nobox``). Inside the box the subject tokens'
  attention logits get ``+edit_scale · (1 − box area)`` (``edit_scale`` 10, ``inference.py:141``;
  the area term, ``unet_3d_condition_edit_cross_attn.py:58``) during the first ``amp_fraction``
  of the denoising steps (15 of 50, ``inference.py:142``); outside the box they get
  ``suppress_value`` (−1e4 ≈ −∞; the original adds ``edit_scale · −1e10``, ``:60,66``) at every
  step (``suppress="all"``; ``"amp"`` limits it to the boosted steps). Only the conditional branch
  of classifier-free guidance is steered (``pipeline_motionbooth.py:349-378``), in every block.
  MotionBooth also suppresses every other prompt word outside of "background" phrases; with T5's
  226 text tokens and no phrase annotations that would delete the prompt, so only the subject
  tokens are steered.
* **Calibration for joint attention** (``steer_calibration="text-mass"``). The original's bias acts
  on a softmax over the 77 text keys of a cross-attention; here the softmax also runs over ~17 550
  video keys. Derivation: for a video query let ``S``, ``O``, ``V`` be the summed exponentiated
  logits of the subject keys, the other text keys and the video keys, and ``p = S / (S + O)`` the
  subject tokens' share of the query's *text* attention. In the original (``V`` absent) a bias
  ``b`` on the subject keys moves that share to ``p' = p eᵇ / (p eᵇ + 1 − p)`` and leaves the text
  part's total at 1 (its self-attention is a separate layer). Adding ``b`` alone to the joint
  logits gives the same ``p'`` but also raises the text part's total mass
  ``(S + O) / (S + O + V)`` at the expense of the video keys — an effect the original never has
  (and ``b = −∞`` lowers it). So every text key of the query also gets
  ``δ = −log(1 + p (eᵇ − 1))`` (subject keys: ``b + δ``; other text keys: ``δ``; video keys: 0).
  Then ``e^δ (S eᵇ + O) = S + O``: the text part keeps its mass, the video part of the attention
  row is unchanged, and within the text part the subject's share is the original's ``p'`` exactly.
  ``p`` is computed per sample, head and video query from the block's own logits (the ``n_v × n_t``
  map, as for the attention loss). ``"none"`` adds ``b`` to the subject keys only.
* **Fallbacks are recorded, never renamed.** Each video's extras (``videos/pXXX_sYY.json``) state the
  control actually used: ``motion_control`` is ``"flow-boxes"`` with the box path, the boosted
  steps, the subject phrase and the calibration, or ``"off"`` — then ``motion_control_fallback``
  says why when boxes were asked for (no moving region in the clip; no subject phrase in the
  prompt). The mask source and the preservation clips' source are recorded too.
* **Camera control** (latent shift) is not ported: the benchmark's prompts ask for none.
* Evaluation prompts keep the ``*`` token (training prompts are ``"<class> *"``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from baselines.common import BaselineConfig, count_parameters
from dualreal.engine.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings, TrainingRun

__all__ = [
    "MotionBoothConfig",
    "MotionBoothMethod",
    "PairedBatchSource",
    "trainable_parameter_names",
    "SubjectAttention",
    "SubjectAttnProcessor",
    "install_subject_attention",
    "subject_token_mask",
    "subject_text_share",
    "calibrated_offsets",
    "masked_v_loss",
    "attention_bce_loss",
    "steering_values",
]


# ---------------------------------------------------------------------------------------------
# 1. Losses
# ---------------------------------------------------------------------------------------------


def masked_v_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, reference_channels: int | None = None
) -> torch.Tensor:
    """MotionBooth's subject-region loss on the v-prediction target.

    ``Σ mask · (pred − target)² / (Σ mask · C / C_ref)``: the squared error summed over the masked
    latent pixels *and all C channels*, divided by the number of masked latent pixels (MotionBooth's
    ``masked_mse_loss``, ``scripts/utils.py:48-74``, counts the mask before broadcasting it over
    channels) times ``C / C_ref``. With ``reference_channels = C_ref`` the loss is ``C_ref`` × the
    per-element masked mean whatever the latent's channel count — the original's weight against a
    per-element-mean loss when ``C_ref`` is its channel count (4; module docstring). ``None``: divide
    by the masked pixels only. With no masked pixel the loss is 0.

    Args:
        pred, target: ``(B, F, C, H, W)`` (CogVideoX latent layout).
        mask: ``(B, F, H, W)`` or ``(B, 1, H, W)``, bool or {0, 1} float, at latent resolution.
        reference_channels: ``C_ref`` (> 0) or ``None``.

    Returns:
        A scalar float32 tensor.
    """
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"pred and target must both be (B, F, C, H, W); got {tuple(pred.shape)}, {tuple(target.shape)}")
    b, f, c, h, w = pred.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] not in (1, f) or tuple(mask.shape[2:]) != (h, w):
        raise ValueError(f"mask must be (B, F or 1, H, W) = ({b}, {f}, {h}, {w}); got {tuple(mask.shape)}")
    if reference_channels is not None and reference_channels < 1:
        raise ValueError(f"reference_channels must be >= 1, got {reference_channels}")
    m = mask.to(torch.float32).expand(b, f, h, w).unsqueeze(2)  # (B, F, 1, H, W)
    sq = (pred.float() - target.float()).pow(2) * m
    count = m.sum()
    if count == 0:
        return sq.sum() * 0.0
    if reference_channels is not None:
        count = count * (c / reference_channels)
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

    The phrase is located in characters (``<class>`` followed by ``*``, case-insensitive; else the
    ``*`` alone; else the class word alone) and mapped to tokens by the fast tokenizer's offsets, so it works for the
    T5 sentencepiece tokenizer and for the tiny byte-level one alike.

    Returns:
        ``(mask, phrase)``: bool ``(max_length,)`` and the matched text (``""`` when nothing matched,
        then the mask is all false).
    """
    patterns = [rf"\b{re.escape(class_word)}\s*\*", r"\*", rf"\b{re.escape(class_word)}\b"] if class_word else [r"\*"]
    span = None
    for pat in patterns:
        m = re.search(pat, prompt, flags=re.IGNORECASE)  # eval prompts capitalise: "Plushie * biking"
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

_CALIBRATIONS = ("text-mass", "none")


def subject_text_share(query_v: torch.Tensor, key_t: torch.Tensor, tokens: torch.Tensor, scale: float) -> torch.Tensor:
    """Each video query's attention on the subject tokens, softmax over the text keys only.

    ``p[b, h, q] = Σ_k tokens[b, k] · softmax_k(scale · q_v[b, h, q] · k_t[b, h, k])``, computed in
    float32, a few heads at a time (at most ~2²⁶ logits at once: 256 MB), never the dense
    ``(n_t + n_v)²`` matrix.

    Args:
        query_v: ``(B, h, n_v, d)`` video queries (normalised, rotary-embedded).
        key_t: ``(B, h, n_t, d)`` text keys.
        tokens: ``(B, n_t)`` token weights (a 0/1 indicator gives the subject tokens' share; rows
            summing to 1 give their mean attention, the attention-loss map).

    Returns:
        float32 ``(B, h, n_v)``.
    """
    b, heads, n_v, _ = query_v.shape
    n_t = key_t.shape[2]
    step = max(1, (1 << 26) // max(1, b * n_v * n_t))
    tok = tokens.float()[:, None, None, :]
    out = []
    with torch.autocast(query_v.device.type, enabled=False):  # float32 even under bf16 training
        for h0 in range(0, heads, step):
            logits = torch.einsum("bhqd,bhkd->bhqk", query_v[:, h0 : h0 + step].float(), key_t[:, h0 : h0 + step].float()) * scale
            out.append((logits.softmax(dim=-1) * tok).sum(-1))
    return torch.cat(out, dim=1)


def calibrated_offsets(share: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The text-mass-preserving offset ``δ = −log(1 + p (eᵇ − 1))`` of every text key (module
    docstring, "Calibration"): with ``b + δ`` on the subject keys and ``δ`` on the other text keys,
    the text part of a query's attention keeps its total mass and the subject's share within it
    becomes ``p eᵇ / (p eᵇ + 1 − p)``, the original's cross-attention edit.

    Args:
        share: ``(B, h, n_v)`` subject share ``p`` of each query's text attention (:func:`subject_text_share`).
        bias: ``(B, n_v)`` the original's bias ``b`` per video query (0: no change; −1e4 ≈ −∞).

    Returns:
        float32 ``(B, h, n_v)``; computed as ``−logaddexp(log p + b, log(1 − p))`` (stable for large
        ``|b|``), with ``p`` clamped to ``[0, 1 − 1e-6]``.
    """
    p = share.float().clamp(0.0, 1.0 - 1e-6)
    return -torch.logaddexp(torch.log(p) + bias.float()[:, None, :], torch.log1p(-p))


@dataclass
class SubjectAttention:
    """State shared by every :class:`SubjectAttnProcessor` of one transformer.

    Attributes:
        layers: indices of the blocks whose maps are recorded (``None`` = every block).
        record: when true, recorded blocks compute their subject-token map and (with :attr:`store`)
            append it to :attr:`maps`.
        store: when false, maps are computed but not kept: set after the forward pass, so that
            backward's recomputation under gradient checkpointing runs the same operations without
            keeping a second copy of every map (and of its graph).
        token_mask: float ``(B, n_t)`` weights of the subject tokens per sample (rows summing to 1
            for samples with subject tokens, zeros otherwise); set before a forward pass.
        maps: per recorded block, ``(B, n_v)`` float32: the video-query × text-key attention,
            softmax over the text keys only, of the subject tokens, averaged over heads and tokens.
        steer: ``(B, n_v)`` the original's logit bias ``b`` for the subject tokens per video query
            (0: unchanged), or ``None``.
        steer_tokens: ``(B, n_t)`` {0, 1}: which text keys are the subject tokens.
        steer_layers: blocks that steer (``None`` = every block).
        steer_calibration: ``"text-mass"`` (every text key also gets :func:`calibrated_offsets`) or
            ``"none"`` (``b`` on the subject keys only).
    """

    layers: list[int] | None = None
    record: bool = False
    store: bool = True
    token_mask: torch.Tensor | None = None
    maps: list[torch.Tensor] = field(default_factory=list)
    steer: torch.Tensor | None = None
    steer_tokens: torch.Tensor | None = None
    steer_layers: list[int] | None = None
    steer_calibration: str = "text-mass"

    def __post_init__(self) -> None:
        if self.steer_calibration not in _CALIBRATIONS:
            raise ValueError(f"steer_calibration must be one of {_CALIBRATIONS}, got {self.steer_calibration!r}")

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

    *Steering.* Video query ``q`` gets ``a_s[q]`` on the subject keys and ``a_o[q]`` on the other
    text keys (``a_s = b``, ``a_o = 0`` uncalibrated; ``a_s = b + δ``, ``a_o = δ`` calibrated, per
    head). The bias is rank two per head (``a_s[q]·e_s[k] + a_o[q]·e_o[k]`` with indicator vectors
    ``e``), so it is folded into the fused attention by appending dimensions to queries and keys:
    ``q' = [q, a_s, a_o]``, ``k' = [k, e_s / s, e_o / s]``, scale ``s = 1/√d`` ⇒
    ``s · q'·k' = s · q·k + a_s e_s + a_o e_o``. Attention then still runs through one
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
        a_subject = a_other = None
        if steer:  # the per-query biases of the subject keys and (calibrated) of the other text keys
            bias, tok = c.steer.float(), c.steer_tokens.float()
            if c.steer_calibration == "text-mass":
                share = subject_text_share(query[:, :, n_t:], key[:, :, :n_t], tok, scale)
                a_other = calibrated_offsets(share, bias)  # (B, h, n_v)
                a_subject = bias[:, None, :] + a_other
            else:
                a_subject = bias[:, None, :].expand(b, attn.heads, -1)

        # (a) subject-token map: video queries × text keys, softmax over text keys only, mean over heads
        if c.record and c.token_mask is not None and self._active(c.layers):
            if steer:
                raise RuntimeError("subject-token maps are recorded in training, steering is applied at inference: not both")
            amap = subject_text_share(query[:, :, n_t:], key[:, :, :n_t], c.token_mask, scale).mean(1)
            if c.store:  # computed either way: backward's recomputation must save what the forward saved
                c.maps.append(amap)

        # (b) attention, with the steering biases folded into extra query / key dimensions
        if steer:
            pad = 8
            tok = c.steer_tokens.to(key.dtype)
            a = torch.zeros(b, attn.heads, n, pad, dtype=query.dtype, device=query.device)
            e = torch.zeros(b, attn.heads, n, pad, dtype=key.dtype, device=key.device)
            a[:, :, n_t:, 0] = a_subject.to(query.dtype)
            e[:, :, :n_t, 0] = (tok / scale)[:, None, :]
            if a_other is not None:
                a[:, :, n_t:, 1] = a_other.to(query.dtype)
                e[:, :, :n_t, 1] = ((1 - tok) / scale)[:, None, :]
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


# ---------------------------------------------------------------------------------------------
# 4. Configuration
# ---------------------------------------------------------------------------------------------

_TRAINABLE = ("attn", "blocks")
_BOX_SOURCES = ("flow", "off")
_SUPPRESS = ("all", "amp")
_SCHEDULES = ("paired", "alternate")
_PRESERVATION = ("other-motions", "target-motion")
_ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class MotionBoothConfig(BaselineConfig):
    """MotionBooth-style options (reasons in the module docstring).

    The training fields are :class:`~dualreal.engine.config.TrainingConfig`'s; the values that
    differ from the engine's (DualReal's optimiser) are re-declared below with their source,
    MotionBooth's ``configs/zeroscope.yaml`` and ``scripts/train.py`` (repository
    ``jianzongwu/MotionBooth``).

    Attributes:
        trainable: ``attn`` (joint-attention projections of every block) or ``blocks`` (all block
            parameters).
        schedule: ``paired`` (every optimiser step: an image micro-batch and a clip micro-batch,
            ``gradient_accumulation_steps = 2``; the original) or ``alternate`` (one kind per step).
        identity_batch_size: images of an image micro-batch (10; at most the subject's image count).
        attn_loss_weight: weight of the subject-token attention loss (0.01); 0 disables it.
        video_loss_weight: weight of the video-preservation loss (1.0).
        subject_loss: ``masked`` (subject-region loss) or ``plain`` (v-MSE on the whole image).
        subject_loss_channels: ``C_ref`` of :func:`masked_v_loss` (4: the original's latent channels).
        preservation: ``other-motions`` (clips of the benchmark's other motions) or ``target-motion``.
        preservation_clips: how many other-motion clips the benchmark decodes for a case (6).
        mask_source: ``auto`` / ``data`` / ``grabcut`` / ``ones`` (:mod:`baselines.masks`).
        mask_margin: GrabCut's initial rectangle leaves this fraction of each side out (0.1).
        attn_layers: blocks whose maps enter the attention loss (``None``: all).
        box_source: ``flow`` (box path from a motion clip's optical flow) or ``off``.
        box_clip: which motion clip gives the path (index, modulo the clip count).
        box_window: frames whose moving pixels are united per box (9, :func:`baselines.boxes.clip_box_path`).
        box_min_side: smallest box side as a fraction of the frame (0.3).
        edit_scale: MotionBooth's steering strength (10).
        amp_fraction: fraction of denoising steps with the in-box boost (0.3 = 15 of 50).
        suppress: ``all`` (suppress outside the box at every step) or ``amp`` (only while boosting).
        suppress_value: logit bias outside the box (−1e4).
        steer_layers: blocks that steer (``None``: all).
        steer_calibration: ``text-mass`` (module docstring) or ``none``.
        budget: ``original`` or ``equal`` (:mod:`baselines.common`).
    """

    PAPER_STEPS: ClassVar[int] = 300  # zeroscope.yaml:46 max_train_steps 300
    WARMUP_FRACTION: ClassVar[float] = 0.0  # zeroscope.yaml:24 lr_warmup_steps 0
    # One video per clip micro-batch: train.py:258-265 builds the loader with video batch size 1.
    PAPER_MOTION_BATCH: ClassVar[int] = 1
    # budget="equal": DualReal's steps, 1 image / 3 clips alternating, no accumulation (baselines/common.py)
    EQUAL_BUDGET_FIELDS: ClassVar[tuple[str, ...]] = (
        "identity_batch_size", "motion_batch_size", "gradient_accumulation_steps", "schedule"
    )

    learning_rate: float = 5e-6  # zeroscope.yaml:16 learning_rate 5e-6
    adam_beta2: float = 0.999  # zeroscope.yaml:18 adam_beta2 0.999
    weight_decay: float = 0.01  # zeroscope.yaml:20 adam_weight_decay 0.01
    lr_scheduler: str = "constant"  # zeroscope.yaml:23 lr_scheduler constant
    identity_batch_size: int = 10  # zeroscope.yaml:37 train_batch_size 10 (the image batch)
    gradient_accumulation_steps: int = 2  # zeroscope.yaml:40: an image batch + a video per step
    trainable: str = "attn"
    schedule: str = "paired"
    attn_loss_weight: float = 0.01
    video_loss_weight: float = 1.0
    subject_loss: str = "masked"
    subject_loss_channels: int = 4
    preservation: str = "other-motions"
    preservation_clips: int = 6
    mask_source: str = "auto"
    mask_margin: float = 0.1
    attn_layers: tuple[int, ...] | None = None
    box_source: str = "flow"
    box_clip: int = 0
    box_window: int = 9
    box_min_side: float = 0.3
    edit_scale: float = 10.0
    amp_fraction: float = 0.3
    suppress: str = "all"
    suppress_value: float = -1e4
    steer_layers: tuple[int, ...] | None = None
    steer_calibration: str = "text-mass"

    def validate(self) -> None:
        from baselines.masks import MASK_SOURCES

        super().validate()
        choices = {
            "trainable": _TRAINABLE, "schedule": _SCHEDULES, "preservation": _PRESERVATION, "mask_source": MASK_SOURCES,
            "box_source": _BOX_SOURCES, "suppress": _SUPPRESS, "steer_calibration": _CALIBRATIONS,
            "subject_loss": ("masked", "plain"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.schedule == "paired" and self.gradient_accumulation_steps != 2:
            raise ValueError(
                "schedule='paired' takes one image micro-batch and one clip micro-batch per step: "
                f"gradient_accumulation_steps must be 2, got {self.gradient_accumulation_steps}"
            )
        if not 0.0 <= self.amp_fraction <= 1.0:
            raise ValueError(f"amp_fraction must be in [0, 1], got {self.amp_fraction}")
        if self.attn_loss_weight < 0 or self.video_loss_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.subject_loss_channels < 1 or self.preservation_clips < 1 or self.box_window < 1:
            raise ValueError("subject_loss_channels, preservation_clips and box_window must be >= 1")
        if not 0.0 <= self.box_min_side <= 1.0:
            raise ValueError(f"box_min_side must be in [0, 1], got {self.box_min_side}")

    def resolve(self, backbone: Any) -> MotionBoothConfig:
        """The engine's resolution; ``budget="equal"`` replaces steps, batches and the schedule."""
        out = super().resolve(backbone)
        if self.budget != "equal":
            return out
        eq = self.equal_budget(backbone)
        return dataclasses.replace(
            out, train_steps=eq.total_steps, identity_batch_size=eq.identity_batch, motion_batch_size=eq.motion_batch,
            gradient_accumulation_steps=1, schedule="alternate",
        )


class PairedBatchSource:
    """MotionBooth's optimiser step (``schedule="paired"``): the step's first micro-batch is an image
    batch, its second a clip batch, drawn from a :class:`~dualreal.engine.trainer.CaseBatchSource`
    (the original's loader alternates image and video batches, ``src/datasets/motionbooth.py:292-311``,
    and accumulates two, ``zeroscope.yaml:40``). The step kind is ``"paired"``; each batch keeps its
    own kind (``"identity"`` / ``"motion"``), which the loss hooks read."""

    KIND = "paired"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._micro = 0

    def next_kind(self, step: int, generator: torch.Generator) -> str:
        self._micro = 0
        return self.KIND

    def next_batch(self, kind: str, generator: torch.Generator):
        if kind != self.KIND:
            raise ValueError(f"PairedBatchSource serves {self.KIND!r} steps, got {kind!r}")
        sub = ("identity", "motion")[self._micro % 2]
        self._micro += 1
        return self.inner.next_batch(sub, generator)


# ---------------------------------------------------------------------------------------------
# 5. The method
# ---------------------------------------------------------------------------------------------


def trainable_parameter_names(transformer, trainable: str) -> list[str]:
    """Names of the parameters MotionBooth fine-tunes under ``trainable`` (``attn`` / ``blocks``)."""
    names = []
    for name, _ in transformer.named_parameters():
        if not name.startswith("transformer_blocks."):
            continue
        if trainable == "blocks" or any(f".attn1.{t}." in name for t in _ATTN_TARGETS):
            names.append(name)
    return names


def _replace_parameters(model, tensors: dict[str, torch.Tensor], *, requires_grad: bool) -> list[torch.nn.Parameter]:
    """Swap the named parameters of ``model`` (a weight-sharing copy) for new ones holding ``tensors``."""
    modules = dict(model.named_modules())
    out = []
    for name, value in tensors.items():
        owner, _, attr = name.rpartition(".")
        param = torch.nn.Parameter(value, requires_grad=requires_grad)
        setattr(modules[owner], attr, param)
        out.append(param)
    return out


class MotionBoothMethod(CustomizationMethod):
    """MotionBooth-style baseline (``motionbooth``, ``motionbooth-nobox``); see the module docstring.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: :class:`MotionBoothConfig` fields (unknown keys are an error); resolved into :attr:`config`.
    """

    name = "motionbooth"
    trainable = True
    config_class = MotionBoothConfig
    config: MotionBoothConfig
    #: Options that only change the inference-time steering: left out of the checkpoint config.
    STEERING_OPTIONS = (
        "box_source", "box_clip", "box_window", "box_min_side", "edit_scale", "amp_fraction", "suppress",
        "suppress_value", "steer_layers", "steer_calibration",
    )
    #: Left out of the checkpoint config: the steering options and ``budget`` (its effect is in the
    #: resolved steps, batch sizes and schedule, which are in it).
    CHECKPOINT_EXCLUDE = (*STEERING_OPTIONS, "budget")

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.pipe = None
        self.control: SubjectAttention | None = None
        self.class_word = ""
        self.box_path: torch.Tensor | None = None
        self.box_info: dict[str, Any] = {}
        self.data_info: dict[str, Any] = {}
        self.identity_batch: int = self.config.identity_batch_size
        self.last_fit: dict[str, Any] = {}

    def preservation_clip_count(self) -> int:
        """``preservation_clips`` with ``preservation="other-motions"``, else 0."""
        return self.config.preservation_clips if self.config.preservation == "other-motions" else 0

    def training_budget(self) -> list[TrainingRun]:
        """One run: ``paired`` steps see an image batch and a clip each, ``alternate`` steps one kind."""
        cfg = self.config
        names = set(trainable_parameter_names(self.backbone.transformer, cfg.trainable))
        n = count_parameters(p for name, p in self.backbone.transformer.named_parameters() if name in names)
        return [TrainingRun.from_schedule(
            "subject+video", steps=cfg.train_steps, motion_ratio=0.5, paired=cfg.schedule == "paired",
            images_per_step=self.identity_batch, clips_per_step=cfg.motion_batch_size,
            learning_rate=cfg.learning_rate, trainable_parameters=n,
        )]

    # ------------------------------------------------------------------ training
    def _training_case(self, case: CaseData) -> tuple[CaseData, str]:
        """The case with the clips of the video-preservation loss as its motion clips, and their source."""
        cfg = self.config
        if cfg.preservation == "target-motion":
            return case, "target motion (preservation='target-motion')"
        if case.preservation_clips:
            clips = case.preservation_clips
            return dataclasses.replace(case, motion_clips=clips, motion_prompts=list(case.preservation_prompts)), (
                case.preservation_source or f"{len(clips)} clips of other motions"
            )
        why = case.preservation_source or "the case carries no clips of other motions"
        return case, f"target motion (fallback: {why})"

    def _train(self, case: CaseData, workdir: Path, masks: list[torch.Tensor], ckpt_cfg: dict[str, Any], progress: Any | None):
        from baselines.common import shared_weights_copy
        from baselines.masks import resize_mask
        from dualreal.engine.trainer import CaseBatchSource, encode_case, train, v_prediction_loss

        cfg = self.config
        tr = self.backbone.transformer
        model = shared_weights_copy(tr)
        names = trainable_parameter_names(model, cfg.trainable)
        own = dict(model.named_parameters())
        params = _replace_parameters(model, {n: own[n].detach().float().clone() for n in names}, requires_grad=True)
        control = SubjectAttention(layers=list(cfg.attn_layers) if cfg.attn_layers is not None else None)
        install_subject_attention(model, control)
        encoded = encode_case(self.backbone, case, num_frames=cfg.train_frames)
        source = CaseBatchSource(
            encoded,
            schedule="alternate",
            motion_batch_size=cfg.motion_batch_size,
            identity_batch_size=self.identity_batch,
            condition=False,
        )
        if cfg.schedule == "paired":
            source = PairedBatchSource(source)
        n_t = self.backbone.max_text_seq_length
        prompts = list(case.identity_prompts) or [f"{case.class_word} *"]
        if len(prompts) == 1:  # one prompt for every image (as encode_case accepts)
            prompts = prompts * len(case.identity_images)
        tokens = []
        for prompt in prompts:
            mask, _ = subject_token_mask(self.backbone.tokenizer, prompt, case.class_word, n_t)
            tokens.append(mask.float() / mask.sum().clamp_min(1.0))
        patch = int(tr.config.patch_size)

        def forward(m, batch, noisy, timesteps, rotary):
            control.reset()
            record = batch.kind == "identity" and cfg.attn_loss_weight > 0
            control.record = record
            control.token_mask = torch.stack([tokens[i] for i in batch.extras["indices"]]).to(noisy.device) if record else None
            control.store = True
            out = m(hidden_states=noisy, encoder_hidden_states=batch.prompt_embeds, timestep=timesteps,
                    image_rotary_emb=rotary, return_dict=False)[0]
            control.store = False  # backward's recomputation (gradient checkpointing) keeps no maps
            return out

        def loss(ctx):
            if ctx.batch.kind == "motion":
                return cfg.video_loss_weight * v_prediction_loss(ctx.model_output, ctx.target)
            if cfg.subject_loss == "plain":
                return v_prediction_loss(ctx.model_output, ctx.target)
            h, w = ctx.model_output.shape[-2:]
            m = torch.stack([resize_mask(masks[i], (h, w)) > 0 for i in ctx.batch.extras["indices"]])
            return masked_v_loss(ctx.model_output, ctx.target, m.unsqueeze(1).to(ctx.model_output.device),
                                 reference_channels=cfg.subject_loss_channels)

        def attention_loss(ctx):
            if ctx.batch.kind != "identity" or cfg.attn_loss_weight <= 0:
                return None
            if not bool((control.token_mask.sum(-1) > 0).all()):  # a prompt without "<class> *"
                control.reset()
                return None
            b, f, _, h, w = ctx.model_output.shape
            amap = control.mean_map().reshape(b, f, h // patch, w // patch)
            m = torch.stack([resize_mask(masks[i], (h // patch, w // patch)) for i in ctx.batch.extras["indices"]])
            control.reset()
            return cfg.attn_loss_weight * attention_bce_loss(amap, m.unsqueeze(1).to(amap.device))

        try:
            return train(
                model,
                {"attention" if cfg.trainable == "attn" else "blocks": params},
                source,
                noise_scheduler=self.backbone.scheduler,
                config=cfg.trainer_config("motionbooth"),
                forward_fn=forward,
                loss_fn=loss,
                extra_losses={"loss_attention": attention_loss},
                workdir=workdir,
                checkpoint_config=ckpt_cfg,
                load_fn=lambda m, f: None,
                progress=progress,
            )
        finally:
            control.record, control.store = False, True
            control.reset()

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:
        """Fine-tune on ``case`` into ``workdir`` (or load a finished checkpoint); derive the box path.

        Raises:
            ValueError: a checkpoint trained with another configuration, or bad data.
        """
        from baselines.boxes import box_path_from_clips
        from baselines.masks import subject_masks
        from dualreal.engine.trainer import WEIGHTS_NAME, load_finished, read_checkpoint

        cfg = self.config
        workdir = Path(workdir)
        masks, info = subject_masks(case.identity_images, case.identity_masks, source=cfg.mask_source, margin=cfg.mask_margin)
        # the original's image loader never repeats an image in a batch: at most all of them
        self.identity_batch = min(cfg.identity_batch_size, len(case.identity_images)) or cfg.identity_batch_size
        training_case, preservation = self._training_case(case)
        ckpt_cfg = self.checkpoint_config(
            exclude=self.CHECKPOINT_EXCLUDE, _mask_source=info.get("mask_source"), _preservation=preservation,
            _identity_batch=self.identity_batch,
        )
        # a finished checkpoint's file is checked (header: keys and shapes) here, read at inference
        done = load_finished(workdir, torch.nn.Module(), checkpoint_config=ckpt_cfg,
                             load_fn=lambda m, f: read_checkpoint(Path(f) / WEIGHTS_NAME, self._expected(), tensors=False))
        if done is None:
            done = self._train(training_case, workdir, masks, ckpt_cfg, progress)
        self.class_word = case.class_word
        self.data_info = {**info, "preservation": preservation}
        self.box_path, self.box_info = None, {}
        if cfg.box_source == "flow":
            if case.motion_clips:
                boxes = box_path_from_clips(
                    case.motion_clips, clip_index=cfg.box_clip, window=cfg.box_window, min_side=cfg.box_min_side,
                    temporal_compression=int(self.backbone.transformer.config.temporal_compression_ratio),
                )
                clip = cfg.box_clip % len(case.motion_clips)
                self.box_path = boxes.path
                self.box_info = {"box_clip": clip, "box_frames_detected": f"{boxes.detected_frames}/{boxes.frames}"}
                if boxes.path is None:
                    self.box_info["fallback"] = f"no moving region found in motion clip {clip}"
            else:
                self.box_info = {"fallback": "the case has no motion clip to derive boxes from"}
        self.pipe, self.control = self._inference_pipeline(workdir)
        losses = [entry["loss_attention"] for entry in done.logs if "loss_attention" in entry]
        self.last_fit = {"resumed": done.resumed, "steps": done.steps, **self.data_info, "loss_attention": losses}

    def _expected(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every fine-tuned tensor, exactly what the checkpoint holds (strict: a
        missing one would leave that base weight in place)."""
        own = dict(self.backbone.transformer.named_parameters())
        return {n: tuple(own[n].shape) for n in trainable_parameter_names(self.backbone.transformer, self.config.trainable)}

    def _inference_pipeline(self, workdir: Path):
        from baselines.common import shared_weights_copy
        from dualreal.engine.trainer import WEIGHTS_NAME, read_checkpoint

        tr = self.backbone.transformer
        model = shared_weights_copy(tr)
        dtype = next(tr.parameters()).dtype
        tensors = {k: v.to(dtype) for k, v in read_checkpoint(Path(workdir) / WEIGHTS_NAME, self._expected()).items()}
        with torch.no_grad():  # the fine-tuned tensors replace the copy's (shared) base weights
            _replace_parameters(model, {k: v.to(tr.device) for k, v in tensors.items()}, requires_grad=False)
        cfg = self.config
        control = SubjectAttention(
            steer_layers=list(cfg.steer_layers) if cfg.steer_layers is not None else None,
            steer_calibration=cfg.steer_calibration,
        )
        install_subject_attention(model, control)
        model.eval()
        return self.backbone.pipeline(transformer=model), control

    # ------------------------------------------------------------------ inference
    def steering_plan(self, prompt: str, settings: GenerationSettings) -> dict[str, Any]:
        """What control a generation will apply.

        Returns:
            ``{"motion_control": "off"}`` (plus ``"motion_control_fallback"``, the reason, when boxes
            were asked for but cannot be used), or ``{"motion_control": "flow-boxes", ...}`` with the
            token mask, the per-step biases, the box path and the subject phrase.
        """
        cfg = self.config
        if cfg.box_source == "off":
            return {"motion_control": "off"}
        if self.box_path is None:
            return {"motion_control": "off", "motion_control_fallback": self.box_info.get("fallback", "no box path")}
        from baselines.boxes import box_token_mask, resample_path

        tc = self.backbone.transformer.config
        if getattr(tc, "patch_size_t", None):
            raise ValueError("MotionBooth-style box steering supports spatial patches only (CogVideoX 1.0 geometry)")
        tokens, phrase = subject_token_mask(self.backbone.tokenizer, prompt, self.class_word, self.backbone.max_text_seq_length)
        if not tokens.any():
            return {"motion_control": "off",
                    "motion_control_fallback": f"no subject phrase ('{self.class_word} *', '*' or '{self.class_word}') in the prompt"}
        geo = settings.geometry(self.backbone)
        scale = int(self.pipe.vae_scale_factor_spatial) * int(tc.patch_size)  # pixels per video token
        latent_frames = (geo["num_frames"] - 1) // int(tc.temporal_compression_ratio) + 1
        path = resample_path(self.box_path, latent_frames)
        inside = box_token_mask(path, geo["height"] // scale, geo["width"] // scale)
        steps = settings.num_inference_steps
        amp_steps = int(round(cfg.amp_fraction * steps))
        return {
            "motion_control": "flow-boxes",
            "tokens": tokens,
            "phrase": phrase,
            "inside": inside,
            "amp_steps": amp_steps,
            "path": path,
            "biases": [
                steering_values(
                    inside,
                    edit_scale=cfg.edit_scale,
                    amplify=i < amp_steps,
                    suppress=cfg.suppress == "all" or i < amp_steps,
                    suppress_value=cfg.suppress_value,
                )
                for i in range(steps)
            ],
        }

    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """One video, steered along the flow-derived box path unless ``box_source="off"`` or a
        fallback applies; the extras record the control actually used (module docstring).

        Raises:
            RuntimeError: :meth:`fit` was not called.
        """
        from baselines.cogvideox import generate_with_pipeline

        self.check_fitted(self.pipe)
        cfg = self.config
        control = self.control
        plan = self.steering_plan(prompt, settings)
        extras: dict[str, Any] = {**self.data_info, **{k: v for k, v in self.box_info.items() if k != "fallback"},
                                  "motion_control": plan["motion_control"]}
        if "motion_control_fallback" in plan:
            extras["motion_control_fallback"] = plan["motion_control_fallback"]
        kwargs: dict[str, Any] = {}
        if plan["motion_control"] == "flow-boxes":
            rows = 2 if settings.guidance_scale > 1.0 else 1
            tok = torch.zeros(rows, plan["tokens"].numel())
            tok[-1] = plan["tokens"].float()  # conditional branch only ([uncond; cond])
            device = self.backbone.device

            def set_step(i: int) -> None:
                if i >= len(plan["biases"]):
                    control.steer = None
                    return
                bias = torch.zeros(rows, plan["biases"][i].numel())
                bias[-1] = plan["biases"][i]
                control.steer = bias.to(device)

            def on_step_end(pipe, i, t, callback_kwargs):
                set_step(i + 1)
                return {}

            control.steer_tokens = tok.to(device)
            set_step(0)
            kwargs["callback_on_step_end"] = on_step_end
            extras.update(
                subject_phrase=plan["phrase"],
                amp_steps=plan["amp_steps"],
                edit_scale=cfg.edit_scale,
                suppress=cfg.suppress,
                steer_calibration=cfg.steer_calibration,
                box_path=[[round(float(x), 4) for x in box] for box in plan["path"]],
            )
        try:
            frames = generate_with_pipeline(self.pipe, self.backbone, prompt, seed, settings, **kwargs)
        finally:
            control.steer = control.steer_tokens = None
        return GeneratedVideo(frames=frames, fps=settings.fps, extras=extras)
