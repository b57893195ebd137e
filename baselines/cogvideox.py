"""CogVideoX with no customisation: the reference point for what each method adds.

Decision (docs/BASELINES.md, "CogVideoX"): the identity token ``*`` is removed from the evaluation
prompt ("dog * wearing a cape" → "dog wearing a cape"), since the untuned model has never seen it;
the same normalisation CLIP-T applies to the text. The method has no options (its config is the
empty :class:`~dualreal.engine.config.MethodConfig`).
"""

from __future__ import annotations

import re

import torch

from dualreal.engine.errors import finite_latents_callback
from dualreal.engine.prompts import pipeline_prompt_kwargs
from dualreal.engine.protocol import CustomizationMethod, GeneratedVideo, GenerationSettings, frames_to_uint8

__all__ = ["CogVideoXMethod", "strip_identity_token", "generate_with_pipeline"]

_TOKEN = re.compile(r"\s*\*")


def strip_identity_token(prompt: str) -> str:
    """``"dog * wearing a cape"`` → ``"dog wearing a cape"``."""
    return _TOKEN.sub("", prompt).strip()


def generate_with_pipeline(pipe, backbone, prompt: str, seed: int, settings: GenerationSettings, **kwargs) -> torch.Tensor:
    """Run a CogVideoX pipeline once; returns uint8 frames ``(F, H, W, 3)`` on CPU.

    ``None`` geometry in ``settings`` falls back to the backbone's defaults
    (:meth:`~dualreal.engine.protocol.GenerationSettings.geometry`). The generator lives on the CPU
    so a seed gives the same initial noise on every device. The prompt and the empty negative
    prompt are encoded once per process (:func:`dualreal.engine.prompts.pipeline_prompt_kwargs`).
    ``kwargs`` go to the pipeline call (a ``callback_on_step_end`` of the caller's runs after the
    latents' finiteness check).

    Raises:
        NonFiniteError: NaN/inf latents at a denoising step (named), or NaN/inf frames.
    """
    kwargs["callback_on_step_end"] = finite_latents_callback(settings.num_inference_steps,
                                                             kwargs.get("callback_on_step_end"))
    text = pipeline_prompt_kwargs(pipe, prompt, guidance_scale=settings.guidance_scale,
                                  max_sequence_length=backbone.max_text_seq_length)
    out = pipe(
        **text,
        **settings.geometry(backbone),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pt",
        **kwargs,
    ).frames[0]  # (F, 3, H, W) float in [0, 1]
    return frames_to_uint8(out)


class CogVideoXMethod(CustomizationMethod):
    """The pretrained backbone, prompts with ``*`` removed; :meth:`fit` is a no-op."""

    name = "cogvideox"
    trainable = False

    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        pipe = self.backbone.pipeline()
        text = strip_identity_token(prompt)
        frames = generate_with_pipeline(pipe, self.backbone, text, seed, settings)
        return GeneratedVideo(frames=frames, fps=settings.fps, extras={"prompt_used": text})
