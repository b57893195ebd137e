"""MotionBooth-style customisation (Wu et al., NeurIPS 2024) on the shared CogVideoX backbone.

MotionBooth fine-tunes a video UNet on a few subject images with three losses and steers the
subject's motion at inference without training (docs/BASELINES.md, "MotionBooth-style"). Here it trains
through the one trainer (:func:`dualreal.engine.trainer.train`: ``loss_fn``, ``extra_losses`` and
``forward_fn`` hooks, an ``alternate`` :class:`~dualreal.engine.trainer.CaseBatchSource`) and generates
with a stock ``CogVideoXPipeline`` whose attention processors are :class:`SubjectAttnProcessor`.

Adapting the UNet method to the DiT — every choice is an option of :class:`MotionBoothConfig`:

* **Which parameters train** (``trainable``). The original fine-tunes the whole UNet (lr 5e-6).
  A full copy of a 5B DiT with AdamW states does not fit beside the other methods, so the default
  ``"attn"`` fine-tunes the joint-attention projections ``to_q, to_k, to_v, to_out.0`` (weights and
  biases) of every block — 1.59 B parameters at 5B, the analogue of MotionBooth's cross-attention
  option, and the layers its attention loss acts on. ``"blocks"`` fine-tunes every parameter of the
  42 blocks (the memory-budget flag: needs 8-bit AdamW / gradient checkpointing on one GPU). The
  trained tensors are float32 clones inside a weight-sharing copy of the transformer; the shared
  backbone is never modified. Checkpoint: the trained tensors only (``weights.safetensors``).
* **Batches** (``CaseBatchSource(schedule="alternate")``): identity image (1 per step, a 1-frame
  video, prompt ``"<class> *"``) and motion clip (1 per step) alternate, as MotionBooth alternates
  subject images and ordinary videos. The "ordinary videos" of the video-preservation loss are the
  case's motion clips (the only real clips at hand; MotionBooth used Panda-70M samples).
* **Subject-region loss** (identity steps): :func:`masked_v_loss` on the v-prediction target — the
  squared error summed over the masked latent pixels and all channels, divided by the number of
  masked latent pixels (MotionBooth's normalisation, ported from ε- to v-prediction). Masks come from
  :mod:`baselines.masks` (shipped → GrabCut fallback; ``mask_source`` recorded in the checkpoint
  config and in every video's extras), resized bilinearly to the latent grid and binarised (> 0).
* **Video-preservation loss** (motion steps): the plain v-MSE, weight ``video_loss_weight`` = 1.0.
* **Subject-token attention loss** (identity steps only), weight ``attn_loss_weight`` = 0.01: binary
  cross-entropy between the soft mask resized to the token grid and the subject-token attention map.
  A CogVideoX block has no cross-attention; the map is the **video-query × text-key block** of its
  joint attention with the softmax taken over the text keys only (a cross-attention map), computed
  from the block's own normalised, rotary-embedded queries and keys at ``n_v × n_t`` cost, never
  the dense ``(n_t + n_v)²`` matrix. It is averaged over heads, over the subject tokens (the
  ``"<class> *"`` phrase, located by tokenizer offsets; MotionBooth: ``"sks <class>"``) and over
  ``attn_layers`` (default all 42 blocks: every DiT block works at the one token resolution, and
  MotionBooth averages all cross-attention layers of its chosen resolution).
* **Optimiser** as MotionBooth: AdamW lr 5e-6, β (0.9, 0.999), weight decay 0.01, grad-clip 1.0,
  constant learning rate, 300 steps (3 on ``tiny``). The original batch (10 images, accumulation 2)
  becomes 1 image or 1 clip per step, as DualReal's identity steps.
* **Motion control** (``box_source``). MotionBooth steers along a user-drawn box per frame and never
  learns from reference clips. ``"flow"`` (default) derives a box path per latent frame from the
  first motion clip by OpenCV Farnebäck optical flow (:mod:`baselines.boxes`), resampled to the
  generated video's latent frames; ``"off"`` generates without motion control. Inside the box the
  subject tokens' attention logits get ``+edit_scale · (1 − box area)`` (``edit_scale`` 10) during
  the first ``amp_fraction`` of the denoising steps (15 of 50); outside the box they get
  ``suppress_value`` (−1e4 ≈ −∞) at every step (``suppress="all"``, as MotionBooth's code; ``"amp"``
  limits it to the boosted steps). Only the conditional branch of classifier-free guidance is
  steered, in every block, as MotionBooth edits only its text-conditioned pass. MotionBooth also
  suppresses every other prompt word outside of "background" phrases; with T5's 226 text tokens
  and no phrase annotations that would delete the prompt, so only the subject tokens are steered.
  The bias is applied inside the fused attention (:class:`SubjectAttnProcessor`).
* **Camera control** (latent shift) is not ported: the benchmark's prompts ask for none.
* Evaluation prompts keep the ``*`` token (training prompts are ``"<class> *"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dualreal.engine.config import TrainingConfig
from dualreal.engine.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings

__all__ = [
    "MotionBoothConfig",
    "MotionBoothMethod",
    "trainable_parameter_names",
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
        steer: ``(B, n_v)`` additive logit bias for the subject tokens (0: unchanged), or ``None``.
        steer_tokens: ``(B, n_t)`` {0, 1}: which text keys get :attr:`steer`.
        steer_layers: blocks that steer (``None`` = every block).
    """

    layers: list[int] | None = None
    record: bool = False
    store: bool = True
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
            with torch.autocast(query.device.type, enabled=False):  # float32 even under bf16 training
                logits = torch.einsum("bhqd,bhkd->bhqk", query[:, :, n_t:].float(), key[:, :, :n_t].float()) * scale
                if steer:
                    logits = logits + c.steer.float()[:, None, :, None] * c.steer_tokens.float()[:, None, None, :]
                probs = logits.softmax(dim=-1)  # (B, h, n_v, n_t)
                tok = c.token_mask.to(probs)  # (B, n_t)
                amap = torch.einsum("bhqk,bk->bq", probs, tok) / attn.heads
                if c.store:
                    c.maps.append(amap)

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


# ---------------------------------------------------------------------------------------------
# 4. Configuration
# ---------------------------------------------------------------------------------------------

_TRAINABLE = ("attn", "blocks")
_BOX_SOURCES = ("flow", "off")
_SUPPRESS = ("all", "amp")
_ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class MotionBoothConfig(TrainingConfig):
    """MotionBooth-style options (reasons in the module docstring).

    The training fields are :class:`~dualreal.engine.config.TrainingConfig`'s; the values that
    differ from the engine's (DualReal's optimiser) are re-declared below with their source,
    MotionBooth's training config ``configs/zeroscope.yaml`` (repository ``jianzongwu/MotionBooth``).

    Attributes:
        trainable: ``attn`` (joint-attention projections of every block) or ``blocks`` (all block
            parameters).
        attn_loss_weight: weight of the subject-token attention loss (0.01); 0 disables it.
        video_loss_weight: weight of the video-preservation loss (1.0).
        subject_loss: ``masked`` (subject-region loss) or ``plain`` (v-MSE on the whole image).
        mask_source: ``auto`` / ``data`` / ``grabcut`` / ``ones`` (:mod:`baselines.masks`).
        mask_margin: GrabCut's initial rectangle leaves this fraction of each side out (0.1).
        attn_layers: blocks whose maps enter the attention loss (``None``: all).
        box_source: ``flow`` (box path from the motion clips' optical flow) or ``off``.
        box_clip: which motion clip gives the path (index, modulo the clip count).
        edit_scale: MotionBooth's steering strength (10).
        amp_fraction: fraction of denoising steps with the in-box boost (0.3 = 15 of 50).
        suppress: ``all`` (suppress outside the box at every step) or ``amp`` (only while boosting).
        suppress_value: logit bias outside the box (−1e4).
        steer_layers: blocks that steer (``None``: all).
    """

    PAPER_STEPS: ClassVar[int] = 300  # zeroscope.yaml: max_train_steps 300
    WARMUP_FRACTION: ClassVar[float] = 0.0  # zeroscope.yaml: lr_warmup_steps 0
    # One clip per video-preservation step, as identity steps take one image (zeroscope.yaml's
    # batch of 10 with accumulation 2 does not fit a 5B DiT; docs/BASELINES.md, "MotionBooth-style").
    PAPER_MOTION_BATCH: ClassVar[int] = 1

    learning_rate: float = 5e-6  # zeroscope.yaml: learning_rate 5e-6
    adam_beta2: float = 0.999  # zeroscope.yaml: adam_beta2 0.999
    weight_decay: float = 0.01  # zeroscope.yaml: adam_weight_decay 0.01
    lr_scheduler: str = "constant"  # zeroscope.yaml: lr_scheduler constant
    trainable: str = "attn"
    attn_loss_weight: float = 0.01
    video_loss_weight: float = 1.0
    subject_loss: str = "masked"
    mask_source: str = "auto"
    mask_margin: float = 0.1
    attn_layers: tuple[int, ...] | None = None
    box_source: str = "flow"
    box_clip: int = 0
    edit_scale: float = 10.0
    amp_fraction: float = 0.3
    suppress: str = "all"
    suppress_value: float = -1e4
    steer_layers: tuple[int, ...] | None = None

    def validate(self) -> None:
        from baselines.masks import MASK_SOURCES

        super().validate()
        if self.trainable not in _TRAINABLE:
            raise ValueError(f"trainable must be one of {_TRAINABLE}, got {self.trainable!r}")
        if self.subject_loss not in ("masked", "plain"):
            raise ValueError(f"subject_loss must be 'masked' or 'plain', got {self.subject_loss!r}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {self.mask_source!r}")
        if self.box_source not in _BOX_SOURCES:
            raise ValueError(f"box_source must be one of {_BOX_SOURCES}, got {self.box_source!r}")
        if self.suppress not in _SUPPRESS:
            raise ValueError(f"suppress must be one of {_SUPPRESS}, got {self.suppress!r}")
        if not 0.0 <= self.amp_fraction <= 1.0:
            raise ValueError(f"amp_fraction must be in [0, 1], got {self.amp_fraction}")
        if self.attn_loss_weight < 0 or self.video_loss_weight < 0:
            raise ValueError("loss weights must be >= 0")


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
    """MotionBooth-style baseline (``motionbooth``); see the module docstring.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: :class:`MotionBoothConfig` fields (unknown keys are an error); resolved into :attr:`config`.
    """

    name = "motionbooth"
    trainable = True
    config_class = MotionBoothConfig
    config: MotionBoothConfig
    #: Options that only change the inference-time steering: left out of the checkpoint config.
    STEERING_OPTIONS = ("box_source", "box_clip", "edit_scale", "amp_fraction", "suppress", "suppress_value", "steer_layers")

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.pipe = None
        self.control: SubjectAttention | None = None
        self.class_word = ""
        self.box_path: torch.Tensor | None = None
        self.mask_info: dict[str, Any] = {}
        self.last_fit: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
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
            identity_batch_size=cfg.identity_batch_size,
            condition=False,
        )
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
            if ctx.kind == "motion":
                return cfg.video_loss_weight * v_prediction_loss(ctx.model_output, ctx.target)
            if cfg.subject_loss == "plain":
                return v_prediction_loss(ctx.model_output, ctx.target)
            h, w = ctx.model_output.shape[-2:]
            m = torch.stack([resize_mask(masks[i], (h, w)) > 0 for i in ctx.batch.extras["indices"]])
            return masked_v_loss(ctx.model_output, ctx.target, m.unsqueeze(1).to(ctx.model_output.device))

        def attention_loss(ctx):
            if ctx.kind != "identity" or cfg.attn_loss_weight <= 0:
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
        from dualreal.engine.trainer import load_finished

        cfg = self.config
        workdir = Path(workdir)
        masks, info = subject_masks(
            case.identity_images, getattr(case, "identity_masks", None), source=cfg.mask_source, margin=cfg.mask_margin
        )
        ckpt_cfg = self.checkpoint_config(exclude=self.STEERING_OPTIONS, _mask_source=info.get("mask_source"))
        done = load_finished(workdir, torch.nn.Module(), checkpoint_config=ckpt_cfg, load_fn=lambda m, f: None)
        if done is None:
            done = self._train(case, workdir, masks, ckpt_cfg, progress)
        self.class_word = case.class_word
        self.mask_info = info
        self.box_path = None
        if cfg.box_source == "flow" and case.motion_clips:
            self.box_path = box_path_from_clips(
                case.motion_clips, clip_index=cfg.box_clip, temporal_compression=int(self.backbone.transformer.config.temporal_compression_ratio)
            )
        self.pipe, self.control = self._inference_pipeline(workdir)
        self.last_fit = {"resumed": done.resumed, "steps": done.steps, **info}

    def _inference_pipeline(self, workdir: Path):
        from safetensors.torch import load_file

        from baselines.common import shared_weights_copy
        from dualreal.engine.trainer import WEIGHTS_NAME

        tr = self.backbone.transformer
        model = shared_weights_copy(tr)
        dtype = next(tr.parameters()).dtype
        tensors = {k: v.to(dtype) for k, v in load_file(str(Path(workdir) / WEIGHTS_NAME)).items()}
        unknown = sorted(set(tensors) - dict(model.named_parameters()).keys())
        if unknown:
            raise ValueError(f"{workdir}: checkpoint tensors not in the transformer: {unknown[:3]}")
        with torch.no_grad():
            _replace_parameters(model, {k: v.to(tr.device) for k, v in tensors.items()}, requires_grad=False)
        control = SubjectAttention(steer_layers=list(self.config.steer_layers) if self.config.steer_layers is not None else None)
        install_subject_attention(model, control)
        model.eval()
        return self.backbone.pipeline(transformer=model), control

    # ------------------------------------------------------------------ inference
    def steering_plan(self, prompt: str, settings: GenerationSettings) -> dict[str, Any] | None:
        """What steering a generation will apply: token mask, per-step biases; ``None`` when off."""
        cfg = self.config
        if self.box_path is None:
            return None
        from baselines.boxes import box_token_mask, resample_path

        tc = self.backbone.transformer.config
        if getattr(tc, "patch_size_t", None):
            raise ValueError("MotionBooth-style box steering supports spatial patches only (CogVideoX 1.0 geometry)")
        d = self.backbone.defaults
        frames = settings.num_frames or d["num_frames"]
        height, width = settings.height or d["height"], settings.width or d["width"]
        scale = int(self.pipe.vae_scale_factor_spatial) * int(tc.patch_size)  # pixels per video token
        latent_frames = (frames - 1) // int(tc.temporal_compression_ratio) + 1
        tokens, phrase = subject_token_mask(self.backbone.tokenizer, prompt, self.class_word, self.backbone.max_text_seq_length)
        if not tokens.any():
            return None
        path = resample_path(self.box_path, latent_frames)
        inside = box_token_mask(path, height // scale, width // scale)
        steps = settings.num_inference_steps
        amp_steps = int(round(cfg.amp_fraction * steps))
        return {
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
        """One video, steered along the flow-derived box path unless ``box_source="off"``.

        Raises:
            RuntimeError: :meth:`fit` was not called.
        """
        from baselines.cogvideox import generate_with_pipeline

        self.check_fitted(self.pipe)
        control = self.control
        plan = self.steering_plan(prompt, settings)
        extras: dict[str, Any] = {**self.mask_info, "motion_control": "off"}
        kwargs: dict[str, Any] = {}
        if plan is not None:
            cfg_branches = settings.guidance_scale > 1.0
            rows = 2 if cfg_branches else 1
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
                motion_control="flow-boxes",
                subject_phrase=plan["phrase"],
                amp_steps=plan["amp_steps"],
                box_path=[[round(float(x), 4) for x in box] for box in plan["path"]],
            )
        try:
            frames = generate_with_pipeline(self.pipe, self.backbone, prompt, seed, settings, **kwargs)
        finally:
            control.steer = control.steer_tokens = None
        return GeneratedVideo(frames=frames, fps=settings.fps, extras=extras)
