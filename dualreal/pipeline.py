"""DualReal inference: a stock ``CogVideoXPipeline`` with adapters, controller and the
reference-image condition (docs/METHOD.md §4).

The pipeline is diffusers' own; :class:`DualRealPipeline` only attaches a
:class:`~dualreal.adapters.DualRealModel` to the pipeline's transformer for the duration of a call,
hands the motion adapters the identity's reference-image embedding, and records the controller's
weights at every denoising step (the paper's Fig. 7).

Classifier-free guidance runs both branches in one batch ``[unconditional; conditional]``; the
controller weights are per sample, so the two branches may get different weights. The reference
embedding is the same for both branches (released code, ``uncond_condition="same"``) or zeros in
the unconditional branch (``"zeros"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dualreal.engine.backbone import GeometryRules
from dualreal.engine.errors import finite_latents_callback
from dualreal.engine.prompts import pipeline_prompt_kwargs
from dualreal.engine.protocol import GenerationSettings, frames_to_uint8

__all__ = ["DualRealPipeline", "DualRealPipelineOutput", "format_trace", "generate_with_adapters"]

_DEFAULTS = GenerationSettings()  # the one place the sampler defaults live (50 steps, guidance 6)


def format_trace(
    trace: list[dict[str, Any]], *, num_groups: int, fusion_scale: float, controller: str, branches: list[str]
) -> dict[str, Any]:
    """JSON-able controller trace.

    Returns:
        ``{"num_groups", "fusion_scale", "controller", "branches", "timesteps", "w_id", "w_mo"}``
        where ``w_id[step][branch][group]`` (and ``w_mo``) are floats and ``timesteps[step]`` the
        scheduler timestep of each denoising step.
    """
    timesteps, w_id, w_mo = [], [], []
    for entry in trace:
        t = entry["timestep"]
        timesteps.append(int(t[0]) if isinstance(t, list) else (int(t) if t is not None else None))
        w_id.append(entry["w_id"].tolist())
        w_mo.append(entry["w_mo"].tolist())
    return {
        "num_groups": num_groups,
        "fusion_scale": fusion_scale,
        "controller": controller,
        "branches": branches,
        "timesteps": timesteps,
        "w_id": w_id,
        "w_mo": w_mo,
    }


@dataclass
class DualRealPipelineOutput:
    """Output of :class:`DualRealPipeline`.

    Attributes:
        frames: uint8 ``(F, H, W, 3)`` on CPU.
        controller_trace: see :func:`format_trace`.
    """

    frames: torch.Tensor
    controller_trace: dict[str, Any] = field(default_factory=dict)


class DualRealPipeline:
    """Text-to-video with DualReal on a stock ``CogVideoXPipeline``.

    Args:
        pipe: a diffusers ``CogVideoXPipeline`` whose transformer is ``model.transformer``.
        model: the :class:`~dualreal.adapters.DualRealModel` (adapters + controller).
        image_encoder: encodes ``ref_image`` (:mod:`dualreal.engine.image_encoder`); optional when the
            caller passes ``ref_embedding``.
        uncond_condition (`str`, defaults to `"same"`): the unconditional branch's condition:
            ``"same"`` (released code) or ``"zeros"``.
    """

    def __init__(self, pipe: Any, model: Any, image_encoder: Any | None = None, *, uncond_condition: str = "same") -> None:
        if pipe.transformer is not model.transformer:
            raise ValueError("the pipeline's transformer must be the DualRealModel's transformer")
        self.pipe = pipe
        self.model = model
        self.image_encoder = image_encoder
        self.uncond_condition = uncond_condition

    @classmethod
    def from_backbone(cls, backbone: Any, model: Any, image_encoder: Any | None = None, **kwargs: Any) -> DualRealPipeline:
        """Build on a :class:`~dualreal.engine.backbone.Backbone`'s components (no weights copied)."""
        return cls(backbone.pipeline(transformer=model.transformer), model, image_encoder, **kwargs)

    # 1. Inputs --------------------------------------------------------------------------------
    def check_inputs(
        self,
        prompt: str,
        ref_image: torch.Tensor | None,
        ref_embedding: torch.Tensor | None,
        num_frames: int,
        height: int,
        width: int,
        uncond_condition: str,
    ) -> None:
        """One precise error per bad input or combination."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if ref_image is not None and ref_embedding is not None:
            raise ValueError("pass ref_image or ref_embedding, not both")
        if ref_image is not None:
            if self.image_encoder is None:
                raise ValueError("ref_image needs an image_encoder; pass one or give ref_embedding")
            if ref_image.dtype != torch.uint8 or ref_image.ndim != 3 or ref_image.shape[-1] != 3:
                raise ValueError(f"ref_image must be uint8 (H, W, 3), got {ref_image.dtype} {tuple(ref_image.shape)}")
        if ref_embedding is not None:
            e = self.model.adapters.condition_dim
            if ref_embedding.ndim != 2 or ref_embedding.shape != (1, e):
                raise ValueError(f"ref_embedding must be (1, {e}), got {tuple(ref_embedding.shape)}")
        GeometryRules.from_configs(self.pipe.transformer.config, self.pipe.vae.config).check(num_frames, height, width)
        if uncond_condition not in ("same", "zeros"):
            raise ValueError(f"uncond_condition must be 'same' or 'zeros', got {uncond_condition!r}")

    def encode_reference(self, ref_image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` → ``(1, e)`` float32 embedding."""
        return self.image_encoder.encode(ref_image.unsqueeze(0))

    # 2. Generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        *,
        ref_image: torch.Tensor | None = None,
        ref_embedding: torch.Tensor | None = None,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        negative_prompt: str | None = None,
        uncond_condition: str | None = None,
        max_sequence_length: int | None = None,
    ) -> DualRealPipelineOutput:
        """Generate one video.

        Args:
            prompt: text prompt (``"dog * is playing guitar on the beach"``).
            ref_image: uint8 ``(H, W, 3)`` reference image of the identity, or
            ref_embedding: its ``(1, e)`` embedding; neither → the motion adapters run without
                their condition term.
            num_frames, height, width: video geometry (a frame count the VAE decodes exactly, 8k+1 on
                CogVideoX; multiples of 16: :class:`~dualreal.engine.backbone.GeometryRules`).
            num_inference_steps, guidance_scale: ``None`` → :class:`~dualreal.engine.protocol.GenerationSettings`
                defaults.
            seed / generator: the CPU generator seed (or a generator); same seed → same video on CPU.
            negative_prompt: the unconditional branch's prompt (default empty). The prompt and the
                negative prompt are encoded once per process and reused
                (:func:`dualreal.engine.prompts.pipeline_prompt_kwargs`).
            uncond_condition: overrides the pipeline's ``uncond_condition`` for this call.
            max_sequence_length: T5 tokens (default: the transformer's ``max_text_seq_length``).

        Returns:
            :class:`DualRealPipelineOutput` with uint8 frames ``(F, H, W, 3)`` and the controller trace.

        Raises:
            ValueError: a bad input (:meth:`check_inputs`).
            dualreal.engine.errors.NonFiniteError: NaN/inf latents at a denoising step (named) or
                NaN/inf frames; no video is returned.
        """
        steps = num_inference_steps if num_inference_steps is not None else _DEFAULTS.num_inference_steps
        scale = guidance_scale if guidance_scale is not None else _DEFAULTS.guidance_scale
        mode = self.uncond_condition if uncond_condition is None else uncond_condition
        # 1. Check inputs
        self.check_inputs(prompt, ref_image, ref_embedding, num_frames, height, width, mode)
        device = next(self.model.transformer.parameters()).device
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))

        # 2. Reference-image condition, per guidance branch
        cond = self.encode_reference(ref_image) if ref_image is not None else ref_embedding
        cfg = scale > 1.0
        if cond is not None:
            cond = cond.to(device=device, dtype=torch.float32)
            if cfg and mode == "zeros":
                cond = torch.cat([torch.zeros_like(cond), cond])  # [unconditional; conditional]

        # 3. Prompt embeddings, once per prompt (the engine's cache: dualreal.engine.prompts)
        text = pipeline_prompt_kwargs(
            self.pipe, prompt, guidance_scale=scale, negative_prompt=negative_prompt,
            max_sequence_length=(int(self.model.transformer.config.max_text_seq_length) if max_sequence_length is None
                                 else max_sequence_length),
        )

        # 4. Denoise with the stock pipeline, adapters attached, controller traced
        trace: list[dict[str, Any]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.attached(condition=cond, trace=trace):
                out = self.pipe(
                    **text,
                    num_frames=num_frames,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=scale,
                    generator=generator,
                    output_type="pt",
                    callback_on_step_end=finite_latents_callback(steps),
                )
        finally:
            self.model.train(was_training)

        # 5. Frames and trace
        frames = frames_to_uint8(out.frames[0])
        controller = "stageblender" if any(True for _ in self.model.controller.parameters()) else "fixed"
        return DualRealPipelineOutput(
            frames=frames,
            controller_trace=format_trace(
                trace,
                num_groups=self.model.num_groups,
                fusion_scale=float(self.model.controller.scale),
                controller=controller,
                branches=["unconditional", "conditional"] if cfg else ["conditional"],
            ),
        )


def generate_with_adapters(
    backbone: Any,
    model: Any,
    prompt: str,
    seed: int,
    settings: GenerationSettings,
    *,
    ref_embedding: torch.Tensor | None,
    uncond_condition: str,
) -> DualRealPipelineOutput:
    """One video of a :class:`~dualreal.adapters.DualRealModel` under the benchmark's sampler
    settings (DualReal and the DreamVideo-style baseline generate through this).

    Args:
        backbone: the :class:`~dualreal.engine.backbone.Backbone` the model is attached to.
        model: the trained :class:`~dualreal.adapters.DualRealModel`.
        prompt, seed: as :meth:`DualRealPipeline.__call__`.
        settings: geometry (``None`` → the backbone's defaults), denoising steps, guidance scale.
        ref_embedding: ``(1, e)`` reference-image embedding, or ``None``.
        uncond_condition: ``"same"`` or ``"zeros"`` (:class:`DualRealPipeline`).

    Returns:
        :class:`DualRealPipelineOutput`: uint8 frames ``(F, H, W, 3)`` and the controller trace.
    """
    pipe = DualRealPipeline.from_backbone(backbone, model, uncond_condition=uncond_condition)
    return pipe(
        prompt,
        ref_embedding=ref_embedding,
        **settings.geometry(backbone),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        seed=seed,
    )
