"""The method protocol: what every customisation method (DualReal, its ablations, the baselines)
offers the benchmark's run loop.

A method is built with a :class:`~dualreal.engine.backbone.Backbone`, **fits** one case (identity images +
motion clips) into a folder, and **generates** one video per (prompt, seed). The run loop owns the
grid, sharding, resume, writing mp4s and scoring; a method owns only its parameters.

Data handed to a method is already decoded (uint8, channels last) and its training images and
clips resized to the training resolution, so methods never read files and never depend on the
benchmark package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from dualreal.engine.config import MethodConfig
from dualreal.engine.errors import check_finite

__all__ = ["CaseData", "GenerationSettings", "GeneratedVideo", "TrainingRun", "CustomizationMethod", "frames_to_uint8"]


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """A pipeline's ``output_type="pt"`` video → the protocol's frame format.

    Args:
        frames: float ``(F, 3, H, W)`` in ``[0, 1]`` (values outside are clamped).

    Returns:
        uint8 ``(F, H, W, 3)`` on CPU, rounded to the nearest level.

    Raises:
        NonFiniteError: a NaN or infinite value (diverged latents decode to NaN, which a cast to
            uint8 would silently turn into black pixels): the video fails instead.
    """
    check_finite(frames, "the generated frames")
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


@dataclass
class CaseData:
    """One benchmark case, decoded.

    Attributes:
        name: case id, e.g. ``"dog__playingGuitar"``.
        class_word: the identity's class noun (``"dog"``); the identity prompt is ``f"{class_word} *"``.
        identity_images: list of uint8 tensors ``(H, W, 3)`` at the training resolution.
        identity_prompts: one prompt per identity image (``"dog *"``).
        motion_clips: list of uint8 tensors ``(F, H, W, 3)`` at the training resolution, F >= 2
            (the benchmark hands exactly the training frame count, 4k+1; the trainer brings any
            other length to it by :func:`dualreal.engine.trainer.conform_clip`).
        motion_prompts: one prompt per clip (``"a person is playing guitar"``).
        ref_image: uint8 ``(H, W, 3)`` at any size (the benchmark hands the native image): the
            identity reference image that conditions the motion adapter at inference (``ref_image``
            of cases.json); the reference-image encoder resizes it itself.
        identity_masks: one bool ``(H, W)`` subject mask per identity image (same order and size),
            when the identity folder ships ``masks/``; ``None`` otherwise.
        preservation_clips: uint8 ``(F, H, W, 3)`` clips of *other* motions than the case's, for
            methods that keep general video ability with them (MotionBooth's video-preservation
            loss); filled only when the method asks (:meth:`CustomizationMethod.preservation_clip_count`).
        preservation_prompts: one prompt per preservation clip.
        preservation_source: where the preservation clips come from (their files), or why there are
            none (``""``: not asked for).
    """

    name: str
    class_word: str
    identity_images: list[torch.Tensor]
    identity_prompts: list[str]
    motion_clips: list[torch.Tensor]
    motion_prompts: list[str]
    ref_image: torch.Tensor
    identity_masks: list[torch.Tensor] | None = None
    preservation_clips: list[torch.Tensor] = field(default_factory=list)
    preservation_prompts: list[str] = field(default_factory=list)
    preservation_source: str = ""


@dataclass(frozen=True)
class GenerationSettings:
    """Sampler settings shared by every method (docs/METHOD.md §4: DPM, 50 steps, guidance 6,
    49 frames, 480×720, 8 fps). ``None`` geometry takes the backbone's defaults (:meth:`geometry`)."""

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    fps: int = 8

    def geometry(self, backbone: Any) -> dict[str, int]:
        """``{"num_frames", "height", "width"}`` with ``None`` replaced by ``backbone.defaults`` (``0`` is a
        value, kept: the pipeline refuses it)."""
        d = backbone.defaults
        return {k: int(d[k] if getattr(self, k) is None else getattr(self, k)) for k in ("num_frames", "height", "width")}


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

    def __post_init__(self) -> None:
        """Refuse frames the run loop cannot write as they are.

        Raises:
            NonFiniteError: float frames holding NaN or inf (a diverged method).
            ValueError: anything but uint8 ``(F, H, W, 3)`` (float frames: convert them with
                :func:`frames_to_uint8`).
        """
        f = self.frames
        if not isinstance(f, torch.Tensor):
            raise ValueError(f"GeneratedVideo.frames must be a uint8 tensor (F, H, W, 3), got {type(f).__name__}")
        if f.is_floating_point():
            check_finite(f, "the generated frames")
        if f.dtype != torch.uint8 or f.ndim != 4 or f.shape[-1] != 3 or 0 in f.shape:
            raise ValueError(f"GeneratedVideo.frames must be uint8 (F, H, W, 3), got {f.dtype} {tuple(f.shape)}"
                             + (" (convert a pipeline's float output with frames_to_uint8)" if f.is_floating_point() else ""))


@dataclass(frozen=True)
class TrainingRun:
    """The training budget of one run of a method (one adapter, or one joint run): what
    ``dualbench table`` prints under the table and every record carries (``training_budget``).

    Attributes:
        name: the run (``"identity"``, ``"motion"``, ``"joint"``).
        steps: optimiser steps.
        image_steps: optimiser steps that see identity images — the expected count under a random
            image / clip sampler (``(1 − γ) · steps``), so it may be fractional.
        clip_steps: optimiser steps that see motion clips (likewise); a step may see both
            (MotionBooth accumulates an image batch and a clip into one step).
        images_per_step: identity images per image step (over all its micro-batches).
        clips_per_step: motion clips per clip step.
        learning_rate: the peak learning rate.
        trainable_parameters: parameters the run updates.
    """

    name: str
    steps: int
    image_steps: float
    clip_steps: float
    images_per_step: int
    clips_per_step: int
    learning_rate: float
    trainable_parameters: int

    @classmethod
    def from_schedule(
        cls,
        name: str,
        *,
        steps: int,
        motion_ratio: float,
        images_per_step: int,
        clips_per_step: int,
        learning_rate: float,
        trainable_parameters: int,
        paired: bool = False,
    ) -> TrainingRun:
        """A run's budget from its schedule.

        Args:
            steps: optimiser steps.
            motion_ratio: fraction of the steps on clips (``γ``: 0 identity only, 1 motion only, 0.5
                DualReal's sampler or an alternating schedule).
            paired: every step sees an image batch *and* a clip batch (``motion_ratio`` ignored).
        """
        if paired:
            image_steps = clip_steps = float(steps)
        else:
            clip_steps = float(motion_ratio) * int(steps)
            image_steps = int(steps) - clip_steps
        return cls(
            name=name,
            steps=int(steps),
            image_steps=image_steps,
            clip_steps=clip_steps,
            images_per_step=int(images_per_step) if image_steps else 0,
            clips_per_step=int(clips_per_step) if clip_steps else 0,
            learning_rate=float(learning_rate),
            trainable_parameters=int(trainable_parameters),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, field by field."""
        return asdict(self)


class CustomizationMethod(ABC):
    """Base class of every method in the registry.

    Subclasses set :attr:`name` (the registry name) and :attr:`config_class`, implement
    :meth:`generate`, and, when they learn anything, :meth:`fit`. ``fit`` must be resumable: if
    ``workdir`` already holds a finished checkpoint it loads it instead of training again.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: fields of :attr:`config_class` (an unknown key is a ``ValueError`` naming the
            valid ones); the registry passes its ablation switches, ``dualbench run
            --train-steps`` passes ``train_steps``.

    Attributes:
        config: the typed config, resolved for ``backbone`` (``config_class.from_overrides(
            **options).resolve(backbone)``) — the one place a method reads its options from.
    """

    #: Registry name, e.g. ``"dualreal"``.
    name: ClassVar[str] = ""
    #: Whether :meth:`fit` learns anything.
    trainable: ClassVar[bool] = False
    #: The method's config class (a :class:`~dualreal.engine.config.MethodConfig`).
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, backbone: Any, **options: Any) -> None:
        self.backbone = backbone
        self.config = self.config_class.from_overrides(**options).resolve(backbone)

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:  # noqa: B027
        """Adapt to ``case``; write (or, when present, load) the checkpoint in ``workdir``.

        The default does nothing: the method is not trainable.
        """

    @abstractmethod
    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """Generate one video for ``prompt`` with ``seed``; deterministic on CPU for a given seed."""

    def training_budget(self) -> list[TrainingRun] | None:
        """The training budget of the last :meth:`fit`, one :class:`TrainingRun` per run; ``[]`` for
        a method that learns nothing. The run loop copies it into every record. It may depend on the
        case (e.g. how many identity images a step can take); before :meth:`fit` a method gives the
        configured budget, or raises ``RuntimeError`` when it needs the fitted model to count.

        The default: ``[]`` when :attr:`trainable` is false, else ``None`` — a trainable method that
        does not report its budget (tables then say "not recorded", never "no training").
        """
        return None if self.trainable else []

    def training_frames(self) -> int | None:
        """Frames per training clip (4k+1) of a trainable method — its config's ``train_frames``,
        resolved — so that the run loop decodes that many from each clip; ``None`` for a method that
        learns nothing (or has no such field)."""
        frames = getattr(self.config, "train_frames", None) if self.trainable else None
        return None if frames is None else int(frames)

    def preservation_clip_count(self) -> int:
        """How many clips of other motions the method wants in :attr:`CaseData.preservation_clips`
        (0, the default: none; the run loop then decodes none)."""
        return 0

    def check_fitted(self, fitted: Any) -> None:
        """For :meth:`generate`: raise unless ``fitted`` (the state :meth:`fit` sets) is not ``None``.

        Raises:
            RuntimeError: :meth:`fit` was not called; the message names the method and says so.
        """
        if fitted is None:
            raise RuntimeError(f"{self.name}.generate needs a fitted case: call fit(case, workdir) first")

    def describe(self) -> dict[str, Any]:
        """JSON-able configuration, hashed into every record's ``config_hash``."""
        return {"method": self.name, **self.config.describe()}

    def checkpoint_config(self, *, exclude: tuple[str, ...] = (), **metadata: Any) -> dict[str, Any]:
        """The ``config.json`` of a training run, compared field by field on resume.

        Args:
            exclude: config fields left out — options that do not change what this run trains
                (inference-only options), so that a finished run is reused when only they change.
            **metadata: extra entries; their names start with ``_`` (e.g. ``_run="identity"``).

        Returns:
            :meth:`~dualreal.engine.config.MethodConfig.to_json_dict` without ``exclude``, then
            ``metadata``, the backbone's ``source`` and weight fingerprint.

        Raises:
            ValueError: a metadata name without the leading ``_``.
        """
        bad = [k for k in metadata if not k.startswith("_")]
        if bad:
            raise ValueError(f"checkpoint metadata names must start with '_', got {bad}")
        fields = {k: v for k, v in self.config.to_json_dict().items() if k not in exclude}
        return {
            **fields,
            **metadata,
            "_backbone": self.backbone.source,
            "_backbone_fingerprint": self.backbone.fingerprint(),
        }
