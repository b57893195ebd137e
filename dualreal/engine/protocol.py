"""The method protocol: what every customisation method (DualReal, its ablations, the baselines)
offers the benchmark's run loop.

A method is built with a :class:`~dualreal.engine.backbone.Backbone`, **fits** one case (identity images +
motion clips) into a folder, and **generates** one video per (prompt, seed). The run loop owns the
grid, sharding, resume, writing mp4s and scoring; a method owns only its parameters.

Data handed to a method is already decoded and resized (uint8, channels last), so methods never
read files and never depend on the benchmark package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["CaseData", "GenerationSettings", "GeneratedVideo", "CustomizationMethod"]


@dataclass
class CaseData:
    """One benchmark case, decoded.

    Attributes:
        name: case id, e.g. ``"dog__playingGuitar"``.
        class_word: the identity's class noun (``"dog"``); the identity prompt is ``f"{class_word} *"``.
        identity_images: list of uint8 tensors ``(H, W, 3)`` at the training resolution.
        identity_prompts: one prompt per identity image (``"dog *"``).
        motion_clips: list of uint8 tensors ``(F, H, W, 3)``, F = 4k+1, at the training resolution.
        motion_prompts: one prompt per clip (``"a person is playing guitar"``).
        ref_image: uint8 ``(H, W, 3)``: the identity reference image that conditions the motion
            adapter at inference (``ref_image`` of cases.json).
    """

    name: str
    class_word: str
    identity_images: list[torch.Tensor]
    identity_prompts: list[str]
    motion_clips: list[torch.Tensor]
    motion_prompts: list[str]
    ref_image: torch.Tensor


@dataclass(frozen=True)
class GenerationSettings:
    """Sampler settings shared by every method (METHOD.md §4: DPM, 50 steps, guidance 6, 49 frames,
    480×720, 8 fps). ``None`` fields take the backbone's defaults."""

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    fps: int = 8


@dataclass
class GeneratedVideo:
    """One generated video.

    Attributes:
        frames: uint8 ``(F, H, W, 3)`` on CPU.
        fps: frames per second to write it with.
        extras: method-specific JSON-able data saved beside the video (e.g. the StageBlender
            controller's weights per denoising step and group).
    """

    frames: torch.Tensor
    fps: int
    extras: dict[str, Any] = field(default_factory=dict)


class CustomizationMethod(ABC):
    """Base class of every method in the registry.

    Subclasses set :attr:`name` (the registry name), implement :meth:`generate`, and, when they
    learn anything, :meth:`fit`. ``fit`` must be resumable: if ``workdir`` already holds a finished
    checkpoint it loads it instead of training again.
    """

    #: Registry name, e.g. ``"dualreal"``.
    name: ClassVar[str] = ""
    #: Whether :meth:`fit` learns anything.
    trainable: ClassVar[bool] = False

    def __init__(self, backbone, **config: Any) -> None:
        self.backbone = backbone
        self.config = config

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:  # noqa: B027
        """Adapt to ``case``; write (or, when present, load) the checkpoint in ``workdir``.

        The default does nothing: the method is not trainable.
        """

    @abstractmethod
    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """Generate one video for ``prompt`` with ``seed``; deterministic on CPU for a given seed."""

    def describe(self) -> dict[str, Any]:
        """JSON-able configuration, hashed into every record's ``config_hash``."""
        return {"method": self.name, **{k: v for k, v in sorted(self.config.items())}}
