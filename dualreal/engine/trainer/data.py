"""Training data: a case encoded once (VAE posteriors, prompt and reference-image embeddings) and
the batch sources that serve it to :func:`dualreal.engine.trainer.train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from dualreal.engine.prompts import prompt_embeddings

__all__ = ["TrainBatch", "BatchSource", "EncodedCase", "MIN_CLIP_FRAMES", "conform_clip", "encode_case", "CaseBatchSource"]

#: Fewest frames a training clip may have (:func:`conform_clip`): a single frame holds no motion.
MIN_CLIP_FRAMES = 2


@dataclass
class TrainBatch:
    """One micro-batch.

    Attributes:
        kind: the step kind that produced it (``"identity"``, ``"motion"``, …).
        latents: ``(B, F, C, H, W)`` clean, scaled VAE latents (``F = 1`` for images).
        prompt_embeds: ``(B, L, D)`` text-encoder output.
        model_kwargs: extra keyword arguments of the model's forward (DualReal: ``condition``).
        loss_mask: optional mask broadcastable to ``latents`` (masked mean of the loss).
        extras: anything hooks need (indices, subject masks, boxes, …); not moved to the device.
    """

    kind: str
    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_mask: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class BatchSource(Protocol):
    """Which batch comes next."""

    def next_kind(self, step: int, generator: torch.Generator) -> str:
        """The kind of optimiser step ``step`` (same ``generator`` state on every process)."""
        ...

    def next_batch(self, kind: str, generator: torch.Generator) -> TrainBatch:
        """One micro-batch of ``kind`` (``generator`` seeded per process)."""
        ...


@dataclass
class EncodedCase:
    """A case encoded once for training (VAE latents cached; docs/METHOD.md §3).

    Attributes:
        identity_latents: per image, the VAE posterior parameters ``(1, 2C, 1, h, w)`` (mean and
            log-variance, CPU float32) of the image as a 1-frame video.
        identity_prompt_embeds: per image ``(1, L, D)`` embeddings of its prompt (``"dog *"``).
        motion_latents: per clip ``(1, 2C, F_lat, h, w)`` posterior parameters.
        motion_prompt_embeds: per clip ``(1, L, D)``.
        motion_frame_embeds: per clip ``(F, e)`` reference-image-encoder embeddings of every frame
            (``None`` without an encoder).
        ref_embedding: ``(1, e)`` embedding of the case's reference image (``None`` without encoder).
        scaling_factor: the VAE's latent scaling factor.
        num_frames: frames per training clip (every clip has exactly this many).
        frames_padded: per clip, how many of its ``num_frames`` frames repeat its last frame
            (:func:`conform_clip`; 0 for a clip at least ``num_frames`` long).
    """

    identity_latents: list[torch.Tensor]
    identity_prompt_embeds: list[torch.Tensor]
    motion_latents: list[torch.Tensor]
    motion_prompt_embeds: list[torch.Tensor]
    motion_frame_embeds: list[torch.Tensor] | None
    ref_embedding: torch.Tensor | None
    scaling_factor: float
    num_frames: int
    frames_padded: list[int] = field(default_factory=list)


def conform_clip(frames: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, int]:
    """The training clip of ``frames``: its first ``num_frames`` frames; a shorter clip is padded
    by repeating its last frame up to ``num_frames``.

    The frames are consecutive frames of the source at its own frame rate (stride 1): the DualReal
    release reads them so (``wenc-k/DualReal`` ``train/train_adapter.py`` lines 848–863: consecutive
    indices from frame 0; its ``--fps`` is stored, line 724, and never used to resample). Padding
    with the last frame is CogVideo's rule for clips shorter than the training length
    (``THUDM/CogVideo`` ``sat/data_video.py`` lines 148–158, ``pad_last_frame``); the release
    instead cut a short clip to its longest 4k+1 prefix (lines 872–879), and its collate
    (``torch.cat``, line 1462) then fails on clips of unequal length — a shorter clip must not
    shorten the others.

    Args:
        frames: ``(F, H, W, C)``, any dtype, ``F >= 2``.
        num_frames: the training frame count (4k+1).

    Returns:
        ``(clip, padded)``: ``clip`` ``(num_frames, H, W, C)`` (a view when nothing is padded) and
        the number of padded frames ``max(0, num_frames - F)``.

    Raises:
        ValueError: a clip of fewer than 2 frames — a single frame holds no motion, and padding it
            would train the motion adapter on a still.
    """
    n = int(frames.shape[0])
    if n < MIN_CLIP_FRAMES:
        raise ValueError(f"a training clip needs at least {MIN_CLIP_FRAMES} frames (one frame holds no motion), got {n}")
    if n >= num_frames:
        return frames[:num_frames], 0
    pad = num_frames - n
    return torch.cat([frames, frames[-1:].expand(pad, *frames.shape[1:])]), pad


def _to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` → float ``(1, 3, F, H, W)`` in ``[-1, 1]``."""
    return frames.permute(3, 0, 1, 2).unsqueeze(0).float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_case(
    backbone: Any,
    case: Any,
    *,
    num_frames: int | None = None,
    image_encoder: Any | None = None,
) -> EncodedCase:
    """Encode a :class:`~dualreal.engine.protocol.CaseData` once: VAE posteriors, prompt embeddings
    (through the engine's prompt cache, :mod:`dualreal.engine.prompts`) and reference-image embeddings.

    Identity images become 1-frame videos. Every motion clip trains on exactly ``num_frames``
    frames (default: the backbone's): its first ones, a shorter clip padded with its last frame
    (:func:`conform_clip`; ``frames_padded`` of the result says how many per clip).

    Raises:
        ValueError: no data, frames not 4k+1, a motion clip of one frame, or a resolution the
            VAE × patch size cannot take.
    """
    if not case.identity_images and not case.motion_clips:
        raise ValueError(f"case {case.name!r} has neither identity images nor motion clips")
    num_frames = int(num_frames or backbone.defaults["num_frames"])
    if (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
    try:
        conformed = [conform_clip(clip, num_frames) for clip in case.motion_clips]
    except ValueError as exc:
        raise ValueError(f"case {case.name!r}: {exc}") from None
    clips = [clip for clip, _ in conformed]
    vae = backbone.vae
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    pipe = backbone.pipeline()

    def embed_prompt(prompt: str) -> torch.Tensor:  # the engine's one prompt cache
        return prompt_embeddings(pipe, prompt, max_sequence_length=backbone.max_text_seq_length).float().cpu()

    def posterior(frames: torch.Tensor) -> torch.Tensor:
        h, w = int(frames.shape[1]), int(frames.shape[2])
        if h % 16 or w % 16:
            raise ValueError(f"training frames must have H and W divisible by 16, got {h}×{w}")
        dist = vae.encode(_to_pixels(frames).to(device=device, dtype=dtype)).latent_dist
        return dist.parameters.detach().float().cpu()

    def per_item(prompts: list[str], n: int, what: str, default: str | None = None) -> list[str]:
        prompts = list(prompts) or ([default] if default else [])
        if len(prompts) == 1:
            return prompts * n
        if len(prompts) != n:
            raise ValueError(f"case {case.name!r}: {len(prompts)} {what} prompts for {n} {what} items")
        return prompts

    identity_prompts = per_item(case.identity_prompts, len(case.identity_images), "identity", f"{case.class_word} *")
    motion_prompts = per_item(case.motion_prompts, len(case.motion_clips), "motion")
    identity_latents = [posterior(img.unsqueeze(0)) for img in case.identity_images]
    motion_latents = [posterior(clip) for clip in clips]
    frame_embeds = ref = None
    if image_encoder is not None:
        frame_embeds = [image_encoder.encode(clip) for clip in clips]
        ref = image_encoder.encode(case.ref_image.unsqueeze(0))
    return EncodedCase(
        identity_latents=identity_latents,
        identity_prompt_embeds=[embed_prompt(p) for p in identity_prompts],
        motion_latents=motion_latents,
        motion_prompt_embeds=[embed_prompt(p) for p in motion_prompts],
        motion_frame_embeds=frame_embeds,
        ref_embedding=ref,
        scaling_factor=float(vae.config.scaling_factor),
        num_frames=num_frames,
        frames_padded=[pad for _, pad in conformed],
    )


class CaseBatchSource:
    """Batches of one encoded case: identity images and motion clips in separate batches.

    Args:
        encoded: the :class:`EncodedCase`.
        motion_ratio (`float`, defaults to `0.5`): ``γ``: probability of a motion step
            (``schedule="bernoulli"``); 0 → identity only, 1 → motion only.
        schedule (`str`, defaults to `"bernoulli"`): ``"bernoulli"`` (Z ~ Bernoulli(γ) per step) or
            ``"alternate"`` (identity, motion, identity, …).
        motion_batch_size (`int`, defaults to `3`): clips per motion batch (without replacement
            when there are enough clips).
        identity_batch_size (`int`, defaults to `1`): images per identity batch.
        condition (`bool`, defaults to `True`): motion batches carry ``model_kwargs["condition"]``,
            the embedding of a frame drawn afresh at every step from each clip (the released code
            drew it once at load time); identity batches carry none.
    """

    def __init__(
        self,
        encoded: EncodedCase,
        *,
        motion_ratio: float = 0.5,
        schedule: str = "bernoulli",
        motion_batch_size: int = 3,
        identity_batch_size: int = 1,
        condition: bool = True,
    ) -> None:
        if schedule not in ("bernoulli", "alternate"):
            raise ValueError(f"schedule must be 'bernoulli' or 'alternate', got {schedule!r}")
        if not 0.0 <= motion_ratio <= 1.0:
            raise ValueError(f"motion_ratio must be in [0, 1], got {motion_ratio}")
        needs_identity = schedule == "alternate" or motion_ratio < 1.0
        needs_motion = schedule == "alternate" or motion_ratio > 0.0
        if needs_identity and not encoded.identity_latents:
            raise ValueError("identity steps requested but the case has no identity images")
        if needs_motion and not encoded.motion_latents:
            raise ValueError("motion steps requested but the case has no motion clips")
        if condition and needs_motion and encoded.motion_frame_embeds is None:
            raise ValueError("condition=True needs reference-image embeddings (encode_case(image_encoder=…))")
        self.encoded = encoded
        self.motion_ratio = float(motion_ratio)
        self.schedule = schedule
        self.motion_batch_size = int(motion_batch_size)
        self.identity_batch_size = int(identity_batch_size)
        self.condition = bool(condition)

    def next_kind(self, step: int, generator: torch.Generator) -> str:
        if self.schedule == "alternate":
            return "motion" if step % 2 else "identity"
        z = torch.rand((), generator=generator).item()  # drawn even when γ ∈ {0, 1}: same stream
        return "motion" if z < self.motion_ratio else "identity"

    @staticmethod
    def _pick(n: int, k: int, generator: torch.Generator) -> list[int]:
        if k <= n:
            return torch.randperm(n, generator=generator)[:k].tolist()
        return torch.randint(0, n, (k,), generator=generator).tolist()

    def _sample_latents(self, params: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        out = []
        for p in params:
            z = DiagonalGaussianDistribution(p).sample(generator=generator) * self.encoded.scaling_factor
            out.append(z.permute(0, 2, 1, 3, 4))  # (1, C, F, h, w) → (1, F, C, h, w)
        return torch.cat(out)

    def next_batch(self, kind: str, generator: torch.Generator) -> TrainBatch:
        enc = self.encoded
        if kind == "identity":
            idx = self._pick(len(enc.identity_latents), self.identity_batch_size, generator)
            return TrainBatch(
                kind=kind,
                latents=self._sample_latents([enc.identity_latents[i] for i in idx], generator),
                prompt_embeds=torch.cat([enc.identity_prompt_embeds[i] for i in idx]),
                extras={"indices": idx},
            )
        if kind == "motion":
            idx = self._pick(len(enc.motion_latents), self.motion_batch_size, generator)
            latents = self._sample_latents([enc.motion_latents[i] for i in idx], generator)
            kwargs: dict[str, Any] = {}
            frames: list[int] = []
            if self.condition:
                embeds = [enc.motion_frame_embeds[i] for i in idx]
                frames = [int(torch.randint(0, e.shape[0], (), generator=generator)) for e in embeds]
                kwargs["condition"] = torch.stack([e[f] for e, f in zip(embeds, frames)])
            return TrainBatch(
                kind=kind,
                latents=latents,
                prompt_embeds=torch.cat([enc.motion_prompt_embeds[i] for i in idx]),
                model_kwargs=kwargs,
                extras={"indices": idx, "condition_frames": frames},
            )
        raise ValueError(f"unknown step kind {kind!r} (expected 'identity' or 'motion')")
