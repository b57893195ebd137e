"""The one customisation trainer: every trainable method of dualbench (DualReal, its ablations, the
LoRA / DreamVideo-style / MotionBooth-style baselines) trains through :func:`train`.

It is a library function with hooks, not a script. One optimiser step is::

    kind  = source.next_kind(step, kind_rng)          # e.g. "identity" / "motion" (Bernoulli(γ))
    keep  = active_groups(kind)                        # the gradient mask: groups that may change
    for each of gradient_accumulation_steps micro-batches:
        batch = source.next_batch(kind, data_rng)      # TrainBatch: cached VAE latents, prompt embeds…
        t ~ U{0..999}, ε ~ N(0, I)
        x_t = add_noise(x_0, ε, t);  v = get_velocity(x_0, ε, t)       # CogVideoX's scheduler
        v̂   = forward_fn(model, batch, x_t, t, rotary)
        loss = loss_fn(ctx) (default: v-MSE, masked by batch.loss_mask) + Σ extra_losses[name](ctx)
        accelerator.backward(loss)
    clip_grad_norm_(active, max_grad_norm); optimizer.step(); lr_scheduler.step(); zero_grad(None)

Hook API (all keyword arguments of :func:`train`):

* ``parameter_groups: dict[str, list[Parameter]]`` — **which parameters train**, by group name
  (DualReal: ``identity``, ``motion``, ``controller``; LoRA: ``lora``; …). Disjoint, all inside
  ``model``. One AdamW param group per name.
* ``source: BatchSource`` — **which batch comes next**: ``next_kind(step, rng) → str`` once per
  optimiser step (``rng`` is identical on every process, so every rank agrees on the kind), then
  ``next_batch(kind, rng) → TrainBatch`` per micro-batch (``rng`` differs per rank).
  :class:`CaseBatchSource` serves a :class:`~dualreal.protocol.CaseData` (identity images as
  1-frame videos, motion clips, Bernoulli(γ) or alternating kinds, reference-image conditions).
* ``active_groups(kind) → iterable of group names`` — **the gradient mask** (``None``: every group
  trains every step). See "Gradient mask" below.
* ``forward_fn(model, batch, noisy_latents, timesteps, image_rotary_emb) → v̂`` — how to call the
  model (default: ``model(hidden_states=…, encoder_hidden_states=batch.prompt_embeds, timestep=…,
  image_rotary_emb=…, return_dict=False, **batch.model_kwargs)[0]``).
* ``loss_fn(ctx: StepContext) → scalar`` — replaces the v-prediction MSE (rarely needed).
* ``extra_losses: dict[str, (ctx) → scalar | None]`` — **extra losses**, already weighted, added to
  the main loss (``None`` skips it for this batch, e.g. an attention loss on image batches only).
  ``ctx`` carries the step, kind, batch, model, prediction, target, noisy latents, timesteps, noise.
* ``save_fn(model, folder)`` / ``load_fn(model, folder)`` — checkpoint format (default: the named
  trainable parameters in ``weights.safetensors``); ``checkpoint_config`` — a JSON dict saved as
  ``config.json`` and compared on resume.
* ``on_step_end(info: StepEnd)`` — called after every optimiser step with the step, kind, losses,
  learning rate, the (prepared) model, optimiser and accelerator (tests inspect AdamW state here).
* ``context`` — a context manager entered around the whole loop (e.g. ``model.attached()`` so that
  hooks outlive backward under gradient checkpointing).

Gradient mask. Before the micro-batches of a step, every parameter of an inactive group gets
``requires_grad=False``: no gradient is computed for it at all, so it stays ``None``; after each
backward any gradient an inactive parameter still has is dropped (belt and braces). AdamW (torch and
bitsandbytes) skips parameters whose gradient is ``None``: their weights, moments, step counts and
weight decay are untouched — ``θ ← θ − M ⊙ ∇L`` exactly. Supported settings: a single process;
several processes each training their own model (``distributed="local"``, the default: the run loop
shards *cases* across ``accelerate launch`` processes, so no rank may wait for another);
data-parallel DDP of one model (``distributed="ddp"``, multi-GPU / multi-node; built with
``find_unused_parameters=True``, which leaves globally unused gradients untouched; the kind is drawn
identically on every rank); gradient accumulation (the kind is fixed for the whole step); no/bf16/
fp16 mixed precision. Engines that own the optimiser step or shard parameters (DeepSpeed, FSDP,
Megatron) are **refused** — the released code masked gradients after ``backward`` under DeepSpeed
ZeRO, which steps inside backward, so its mask silently did nothing. Tests prove the invariant for
one process, gradient accumulation, bf16 autocast and 2-process DDP.

Resume: when ``workdir/train_state.json`` says ``finished`` (it is written last, atomically) the
checkpoint is loaded instead of training; a different ``checkpoint_config`` is an error naming the
fields. Loss: CogVideoX's native objective, v-prediction with uniform ``t``; diffusers' scripts write
it as ``‖x̂₀ − x₀‖² / (1 − ᾱ_t)``, which equals the plain v-MSE used here.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from torch import nn

from dualreal.config import PAPER_OPTIMIZER

__all__ = [
    "TrainBatch",
    "BatchSource",
    "TrainerConfig",
    "StepContext",
    "StepEnd",
    "TrainResult",
    "EncodedCase",
    "CaseBatchSource",
    "encode_case",
    "train",
    "v_prediction_loss",
    "rotary_embeddings",
    "save_trainable",
    "load_trainable",
    "load_finished",
    "write_checkpoint",
    "MaskUnsupportedError",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "STATE_NAME",
]

WEIGHTS_NAME = "weights.safetensors"
CONFIG_NAME = "config.json"
STATE_NAME = "train_state.json"
_VERSION_KEYS = {"_dualbench_version", "_diffusers_version", "_torch_version"}


class MaskUnsupportedError(ValueError):
    """A gradient mask was requested under an engine that cannot guarantee it."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
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
    """A case encoded once for training (VAE latents cached; METHOD.md §3).

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
        num_frames: frames per training clip.
    """

    identity_latents: list[torch.Tensor]
    identity_prompt_embeds: list[torch.Tensor]
    motion_latents: list[torch.Tensor]
    motion_prompt_embeds: list[torch.Tensor]
    motion_frame_embeds: list[torch.Tensor] | None
    ref_embedding: torch.Tensor | None
    scaling_factor: float
    num_frames: int


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
    """Encode a :class:`~dualreal.protocol.CaseData` once: VAE posteriors, prompt embeddings and
    reference-image embeddings.

    Identity images become 1-frame videos. Motion clips are cut to their first ``num_frames``
    frames (default: the backbone's; a shorter clip set uses the largest 4k+1 all clips have).

    Raises:
        ValueError: no data, frames not 4k+1, or a resolution the VAE × patch size cannot take.
    """
    if not case.identity_images and not case.motion_clips:
        raise ValueError(f"case {case.name!r} has neither identity images nor motion clips")
    num_frames = int(num_frames or backbone.defaults["num_frames"])
    if (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
    if case.motion_clips:
        shortest = min(int(c.shape[0]) for c in case.motion_clips)
        if shortest < num_frames:
            num_frames = (shortest - 1) // 4 * 4 + 1
    vae = backbone.vae
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    pipe = backbone.pipeline()
    prompt_cache: dict[str, torch.Tensor] = {}

    def embed_prompt(prompt: str) -> torch.Tensor:
        if prompt not in prompt_cache:
            embeds, _ = pipe.encode_prompt(
                prompt,
                do_classifier_free_guidance=False,
                max_sequence_length=backbone.max_text_seq_length,
                device=device,
            )
            prompt_cache[prompt] = embeds.detach().float().cpu()
        return prompt_cache[prompt]

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
    motion_latents = [posterior(clip[:num_frames]) for clip in case.motion_clips]
    frame_embeds = ref = None
    if image_encoder is not None:
        frame_embeds = [image_encoder.encode(clip[:num_frames]) for clip in case.motion_clips]
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


# ---------------------------------------------------------------------------------------------
# Loss and geometry
# ---------------------------------------------------------------------------------------------
def v_prediction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the velocity, optionally masked.

    Args:
        pred, target: ``(B, F, C, H, W)``; computed in float32.
        mask: broadcastable to ``pred``; the masked sum divided by the number of masked elements.

    Returns:
        A float32 scalar.
    """
    sq = (pred.float() - target.float()) ** 2
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype).expand_as(sq)
    return (sq * m).sum() / m.sum().clamp_min(1.0)


def rotary_embeddings(transformer_config: Any, latent_frames: int, latent_height: int, latent_width: int, device) -> Any:
    """The rotary embeddings the stock ``CogVideoXPipeline`` would build for this latent geometry.

    Calls the pipeline's own ``_prepare_rotary_positional_embeddings`` on a stand-in (so training
    and inference use one formula); ``None`` for backbones without rotary embeddings.
    """
    if not transformer_config.use_rotary_positional_embeddings:
        return None
    from diffusers import CogVideoXPipeline

    stand_in = SimpleNamespace(vae_scale_factor_spatial=1, transformer=SimpleNamespace(config=transformer_config))
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(
        stand_in, latent_height, latent_width, latent_frames, device
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _named_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> dict[str, nn.Parameter]:
    wanted = {id(p) for p in params}
    named = {name: p for name, p in model.named_parameters() if id(p) in wanted}
    if len(named) != len(wanted):
        raise ValueError("some trainable parameters are not parameters of the model")
    return named


def save_trainable(model: nn.Module, parameter_groups: Mapping[str, Sequence[nn.Parameter]], folder: Path) -> None:
    """Default ``save_fn``: the named trainable parameters in ``folder/weights.safetensors``."""
    from safetensors.torch import save_file

    tensors, groups = {}, {}
    for group, params in parameter_groups.items():
        named = _named_trainable(model, params)
        groups[group] = sorted(named)
        tensors.update({n: p.detach().cpu().contiguous() for n, p in named.items()})
    save_file(tensors, str(Path(folder) / WEIGHTS_NAME), metadata={"format": "pt", "groups": json.dumps(groups)})


def load_trainable(model: nn.Module, folder: Path, expected: Iterable[nn.Parameter] | None = None) -> list[str]:
    """Default ``load_fn``: copy ``folder/weights.safetensors`` into the model's parameters by name.

    Args:
        expected: parameters that must all be in the file (default: none checked).

    Returns:
        The loaded names.

    Raises:
        ValueError: a name the model lacks, a shape mismatch, or an expected parameter missing.
    """
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{folder}: checkpoint tensors not in the model: {unknown[:5]}{' …' if len(unknown) > 5 else ''}")
    if expected is not None:
        missing = sorted(set(_named_trainable(model, expected)) - set(tensors))
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
            if p.shape != value.shape:
                raise ValueError(f"{folder}: {name} has shape {tuple(value.shape)}, the model {tuple(p.shape)}")
            p.copy_(value.to(dtype=p.dtype))
    return sorted(tensors)


def write_checkpoint(
    workdir: Path,
    write_weights: Callable[[Path], None],
    config: Mapping[str, Any] | None,
    state: Mapping[str, Any],
) -> None:
    """Write a checkpoint folder atomically: weights and ``config.json`` first, ``train_state.json``
    (the "finished" marker) last, each renamed into place from a temporary folder."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_weights(tmp)
        if config is not None:
            (tmp / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2, default=str) + "\n")
        (tmp / STATE_NAME).write_text(json.dumps(dict(state), indent=2, default=str) + "\n")
        (workdir / STATE_NAME).unlink(missing_ok=True)  # a half-replaced folder is never "finished"
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == STATE_NAME):
            item.replace(workdir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = {k for k in (*saved, *current) if k not in _VERSION_KEYS}
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if norm(saved.get(k)) != norm(current.get(k))}


def load_finished(
    workdir: Path | None,
    model: nn.Module,
    *,
    checkpoint_config: Mapping[str, Any] | None = None,
    load_fn: Callable[[nn.Module, Path], Any] | None = None,
) -> TrainResult | None:
    """Load a finished checkpoint from ``workdir`` into ``model``; ``None`` when there is none.

    Raises:
        ValueError: the checkpoint was trained with a different ``checkpoint_config``.
    """
    if workdir is None:
        return None
    workdir = Path(workdir)
    state_file = workdir / STATE_NAME
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        return None  # corrupt: train again
    if not state.get("finished"):
        return None
    if checkpoint_config is not None:
        cfg_file = workdir / CONFIG_NAME
        saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        diff = _config_diff(saved, checkpoint_config)
        if diff:
            lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{workdir} holds a finished checkpoint trained with another configuration ({lines}); "
                "delete the folder or use another output folder"
            )
    (load_fn or (lambda m, f: load_trainable(m, f)))(model, workdir)
    return TrainResult(
        steps=int(state.get("steps", 0)),
        kinds=list(state.get("kinds", [])),
        losses=list(state.get("losses", [])),
        seconds=float(state.get("seconds", 0.0)),
        resumed=True,
        workdir=workdir,
    )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """Optimiser, schedule and engine settings (defaults: METHOD.md §3.6, the paper's).

    Attributes:
        train_steps: optimiser steps (1000).
        learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon: AdamW (1e-3, 0.9, 0.95,
            1e-4, 1e-8).
        max_grad_norm: gradient-norm clip (1.0); ``None`` disables clipping.
        lr_scheduler, lr_num_cycles, lr_warmup_steps: diffusers ``get_scheduler`` name, cycles,
            warm-up steps (``cosine_with_restarts``, 1, 200).
        gradient_accumulation_steps: micro-batches per optimiser step (1).
        mixed_precision: ``no`` / ``bf16`` / ``fp16`` (accelerate autocast; trainable parameters
            stay float32).
        use_8bit_adam: bitsandbytes AdamW8bit.
        seed: seeds the step kinds (shared by all ranks) and the batches, noise and timesteps
            (``seed + 1 + rank``).
        device: ``None`` → the device of the model's parameters.
        distributed: ``"local"`` (default): every process trains its own model on its own data with
            no communication — the run loop shards *cases* across processes, so ranks train different
            cases and must never synchronise; ``"ddp"``: all processes train one model together
            (DistributedDataParallel, gradients averaged, rank 0 writes the checkpoint).
        description: progress-bar label.
    """

    train_steps: int = 1000
    learning_rate: float = PAPER_OPTIMIZER["learning_rate"]
    adam_beta1: float = PAPER_OPTIMIZER["adam_beta1"]
    adam_beta2: float = PAPER_OPTIMIZER["adam_beta2"]
    weight_decay: float = PAPER_OPTIMIZER["weight_decay"]
    adam_epsilon: float = PAPER_OPTIMIZER["adam_epsilon"]
    max_grad_norm: float | None = PAPER_OPTIMIZER["max_grad_norm"]
    lr_scheduler: str = PAPER_OPTIMIZER["lr_scheduler"]
    lr_num_cycles: int = PAPER_OPTIMIZER["lr_num_cycles"]
    lr_warmup_steps: int = 200
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    use_8bit_adam: bool = False
    seed: int = 42
    device: str | None = None
    distributed: str = "local"
    description: str = "train"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class StepContext:
    """What loss hooks see for one micro-batch."""

    step: int
    micro_step: int
    kind: str
    batch: TrainBatch
    model: nn.Module
    model_output: torch.Tensor
    target: torch.Tensor
    noisy_latents: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor
    noise_scheduler: Any
    accelerator: Any


@dataclass
class StepEnd:
    """What ``on_step_end`` sees after each optimiser step."""

    step: int
    kind: str
    logs: dict[str, Any]
    model: nn.Module
    optimizer: Any
    lr_scheduler: Any
    accelerator: Any


@dataclass
class TrainResult:
    """What :func:`train` did: per-step kinds and losses, time, whether it resumed."""

    steps: int
    kinds: list[str]
    losses: list[float]
    seconds: float
    resumed: bool = False
    workdir: Path | None = None
    logs: list[dict[str, float]] = field(default_factory=list)


def _default_forward(model, batch: TrainBatch, noisy, timesteps, rotary):
    return model(
        hidden_states=noisy,
        encoder_hidden_states=batch.prompt_embeds,
        timestep=timesteps,
        image_rotary_emb=rotary,
        return_dict=False,
        **batch.model_kwargs,
    )[0]


def _make_accelerator(config: TrainerConfig, device: torch.device, masked: bool):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    def build():
        return Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            cpu=device.type == "cpu",
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    try:
        accelerator = build()
    except ValueError as exc:
        # accelerate keeps precision and device in a process-wide singleton. In a single process a
        # later run with other settings (e.g. tests, or fp32 after bf16) starts it afresh; inside a
        # distributed run that would break the process group, so it stays an error.
        if "already been initialized" not in str(exc) or PartialState._shared_state.get("num_processes", 1) > 1:  # noqa: SLF001
            raise
        AcceleratorState._reset_state()  # noqa: SLF001
        accelerator = build()
    if accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.FSDP,
        DistributedType.MEGATRON_LM,
    ):
        why = (
            "the gradient mask cannot be guaranteed" if masked else "the shared trainer does not support it"
        )
        raise MaskUnsupportedError(
            f"{accelerator.distributed_type.value}: {why} — the engine owns the optimiser step (DeepSpeed "
            "steps inside backward) or shards parameters into flat buffers; launch with plain DDP "
            "(`accelerate launch --multi_gpu`) or a single process"
        )
    return accelerator


def train(
    transformer: nn.Module,
    parameter_groups: Mapping[str, Sequence[nn.Parameter]],
    source: BatchSource,
    *,
    noise_scheduler: Any,
    config: TrainerConfig | None = None,
    model: nn.Module | None = None,
    active_groups: Callable[[str], Iterable[str]] | None = None,
    forward_fn: Callable[..., torch.Tensor] | None = None,
    loss_fn: Callable[[StepContext], torch.Tensor] | None = None,
    extra_losses: Mapping[str, Callable[[StepContext], torch.Tensor | None]] | None = None,
    workdir: str | Path | None = None,
    checkpoint_config: Mapping[str, Any] | None = None,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    load_fn: Callable[[nn.Module, Path], Any] | None = None,
    on_step_end: Callable[[StepEnd], None] | None = None,
    context: contextlib.AbstractContextManager | None = None,
    progress: Any | None = None,
) -> TrainResult:
    """Train ``parameter_groups`` of ``model`` on batches from ``source`` (see the module docstring).

    Args:
        transformer: the stock ``CogVideoXTransformer3DModel`` (its config gives the rotary
            embeddings and its dtype the input dtype).
        parameter_groups: group name → parameters to train (disjoint, all inside ``model``).
        source: a :class:`BatchSource`.
        noise_scheduler: the backbone's ``CogVideoXDPMScheduler`` (``add_noise``, ``get_velocity``).
        config: :class:`TrainerConfig` (default: the paper's settings).
        model: the module to run and prepare with accelerate (default: ``transformer``, e.g. with
            peft LoRA layers inside); DualReal passes its :class:`~dualreal.adapters.DualRealModel`.
        active_groups, forward_fn, loss_fn, extra_losses, save_fn, load_fn, on_step_end, context:
            the hooks (module docstring).
        workdir: checkpoint folder (``None``: no checkpoint, no resume).
        checkpoint_config: JSON dict saved as ``config.json`` and compared on resume.
        progress: a ``rich.progress.Progress`` to add a task to; ``None`` → a tqdm bar on a TTY.

    Returns:
        A :class:`TrainResult`. The model ends in eval mode, unwrapped, on the training device.

    Raises:
        ValueError: bad groups (overlap, not in the model, unknown names from ``active_groups``), a
            checkpoint with another config; :class:`MaskUnsupportedError` for a mask under
            DeepSpeed / FSDP.
    """
    config = config or TrainerConfig()
    if config.distributed not in ("local", "ddp"):
        raise ValueError(f"distributed must be 'local' or 'ddp', got {config.distributed!r}")
    model = model if model is not None else transformer
    workdir = Path(workdir) if workdir is not None else None

    # 1. Check the groups
    all_params = [p for ps in parameter_groups.values() for p in ps]
    if not all_params:
        raise ValueError("parameter_groups holds no parameters")
    if len({id(p) for p in all_params}) != len(all_params):
        raise ValueError("parameter groups overlap: every parameter must be in exactly one group")
    model_ids = {id(p) for p in model.parameters()}
    if any(id(p) not in model_ids for p in all_params):
        raise ValueError("every trainable parameter must belong to `model` (accelerate prepares `model`)")
    if any(not p.is_floating_point() for p in all_params):
        raise ValueError("trainable parameters must be floating point")
    if config.mixed_precision == "fp16" and any(p.dtype != torch.float32 for p in all_params):
        raise ValueError("fp16 mixed precision needs float32 trainable parameters (the GradScaler unscales them)")
    group_names = set(parameter_groups)

    def keep_of(kind: str) -> set[str]:
        if active_groups is None:
            return group_names
        keep = set(active_groups(kind))
        unknown = keep - group_names
        if unknown:
            raise ValueError(f"active_groups({kind!r}) names unknown groups {sorted(unknown)}; known: {sorted(group_names)}")
        return keep

    # 2. Resume: a finished checkpoint is loaded, not retrained
    default_load = lambda m, f: load_trainable(m, f, expected=all_params)  # noqa: E731
    done = load_finished(workdir, model, checkpoint_config=checkpoint_config, load_fn=load_fn or default_load)
    if done is not None:
        model.eval()
        return done

    # 3. Accelerator, optimiser, schedule
    device = torch.device(config.device) if config.device else next(model.parameters()).device
    accelerator = _make_accelerator(config, device, masked=active_groups is not None)
    for p in all_params:
        p.requires_grad_(True)  # DDP registers its hooks at prepare time
    param_groups = [{"params": list(ps), "name": name} for name, ps in parameter_groups.items()]
    opt_kwargs = dict(
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
    )
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("use_8bit_adam needs bitsandbytes (pip install bitsandbytes)") from None
        optimizer = bnb.optim.AdamW8bit(param_groups, **opt_kwargs)
    else:
        optimizer = torch.optim.AdamW(param_groups, **opt_kwargs)
    from diffusers.optimization import get_scheduler

    ddp = config.distributed == "ddp"
    # accelerate steps a prepared scheduler once per process; the diffusers scripts scale by it.
    n_proc = accelerator.num_processes if ddp else 1
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * n_proc,
        num_training_steps=config.train_steps * n_proc,
        num_cycles=config.lr_num_cycles,
    )
    if ddp:
        prepared, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    else:  # local: no DDP wrapper, no barrier; autocast is applied around the forward below
        if config.device is not None:
            model.to(device)
        prepared, optimizer = model, accelerator.prepare(optimizer)
    data_device = next(prepared.parameters()).device
    rank = accelerator.process_index if ddp else 0
    main = accelerator.is_main_process if ddp else True
    input_dtype = next(transformer.parameters()).dtype
    forward = forward_fn or _default_forward
    extra_losses = dict(extra_losses or {})
    kind_rng = torch.Generator().manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed + 1 + rank)
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    rotary_cache: dict[tuple[int, int, int], Any] = {}

    # 4. Progress
    bar = task = None
    show = accelerator.is_local_main_process or not ddp
    if progress is not None and show:
        task = progress.add_task(config.description, total=config.train_steps)
    elif show and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=config.train_steps, desc=config.description, leave=False)

    # 5. The loop
    kinds: list[str] = []
    losses: list[float] = []
    logs: list[dict[str, float]] = []
    t_start = time.perf_counter()
    prepared.train()
    optimizer.zero_grad(set_to_none=True)
    with context if context is not None else contextlib.nullcontext():
        for step in range(config.train_steps):
            kind = source.next_kind(step, kind_rng)
            keep = keep_of(kind)
            # 5a. Gradient mask, part 1: inactive groups compute no gradient at all.
            for name, ps in parameter_groups.items():
                for p in ps:
                    p.requires_grad_(name in keep)
            active = [p for name, ps in parameter_groups.items() if name in keep for p in ps]
            inactive = [p for name, ps in parameter_groups.items() if name not in keep for p in ps]
            step_loss = 0.0
            step_logs: dict[str, float] = {}
            for micro in range(config.gradient_accumulation_steps):
                batch = source.next_batch(kind, data_rng)
                with accelerator.accumulate(prepared):
                    # 5b. Noise, timesteps, v-target (CogVideoX's scheduler)
                    latents = batch.latents.to(data_device, torch.float32)
                    bsz, frames, _, height, width = latents.shape
                    noise = torch.randn(latents.shape, generator=data_rng).to(data_device)
                    timesteps = torch.randint(0, num_train_timesteps, (bsz,), generator=data_rng).to(data_device)
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                    key = (frames, height, width)
                    if key not in rotary_cache:
                        rotary_cache[key] = rotary_embeddings(transformer.config, frames, height, width, data_device)
                    batch.prompt_embeds = batch.prompt_embeds.to(data_device, input_dtype)
                    batch.model_kwargs = {
                        k: v.to(data_device) if isinstance(v, torch.Tensor) else v
                        for k, v in batch.model_kwargs.items()
                    }
                    if batch.loss_mask is not None:
                        batch.loss_mask = batch.loss_mask.to(data_device)
                    # 5c. Forward and losses
                    with accelerator.autocast():
                        pred = forward(prepared, batch, noisy.to(input_dtype), timesteps, rotary_cache[key])
                    ctx = StepContext(
                        step=step, micro_step=micro, kind=kind, batch=batch, model=prepared,
                        model_output=pred, target=target, noisy_latents=noisy, timesteps=timesteps,
                        noise=noise, noise_scheduler=noise_scheduler, accelerator=accelerator,
                    )
                    loss = loss_fn(ctx) if loss_fn is not None else v_prediction_loss(pred, target, batch.loss_mask)
                    step_logs["loss_main"] = step_logs.get("loss_main", 0.0) + float(loss.detach()) / config.gradient_accumulation_steps
                    for name, fn in extra_losses.items():
                        extra = fn(ctx)
                        if extra is not None:
                            loss = loss + extra
                            step_logs[name] = step_logs.get(name, 0.0) + float(extra.detach()) / config.gradient_accumulation_steps
                    accelerator.backward(loss)
                    step_loss += float(loss.detach()) / config.gradient_accumulation_steps
                    # 5d. Gradient mask, part 2: drop anything an inactive parameter still holds.
                    for p in inactive:
                        p.grad = None
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        with_grad = [p for p in active if p.grad is not None]
                        if with_grad:
                            accelerator.clip_grad_norm_(with_grad, config.max_grad_norm)
                    optimizer.step()
                    if ddp:
                        lr_scheduler.step()  # accelerate's wrapper skips non-sync and overflow steps
                    elif accelerator.sync_gradients and not optimizer.step_was_skipped:
                        lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"{config.description}: loss became {step_loss} at step {step} ({kind})")
            kinds.append(kind)
            losses.append(step_loss)
            entry = {"step": step, "kind": kind, "loss": step_loss, "lr": float(lr_scheduler.get_last_lr()[0]), **step_logs}
            logs.append(entry)
            if on_step_end is not None:
                on_step_end(StepEnd(step, kind, entry, prepared, optimizer, lr_scheduler, accelerator))
            if task is not None:
                progress.update(task, advance=1, description=f"{config.description} · {kind} · loss {step_loss:.4f}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kind=kind, loss=f"{step_loss:.4f}")
    seconds = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    if task is not None:
        progress.remove_task(task)

    # 6. Restore: every trainable parameter trainable again, model unwrapped, eval mode
    for p in all_params:
        p.requires_grad_(True)
    if ddp:
        accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    unwrapped.eval()
    result = TrainResult(
        steps=config.train_steps, kinds=kinds, losses=losses, seconds=seconds, workdir=workdir, logs=logs
    )

    # 7. Checkpoint (main process), written atomically, "finished" marker last
    if workdir is not None and main:
        state = {
            "finished": True,
            "steps": config.train_steps,
            "kinds": kinds,
            "losses": losses,
            "seconds": round(seconds, 3),
            "trainer": config.to_dict(),
            "num_processes": n_proc,
        }
        writer = (lambda folder: save_fn(unwrapped, folder)) if save_fn else (
            lambda folder: save_trainable(unwrapped, parameter_groups, folder)
        )
        write_checkpoint(workdir, writer, checkpoint_config, state)
    if ddp:
        accelerator.wait_for_everyone()
    accelerator.free_memory()
    return result
