"""``DualRealConfig``: every hyperparameter and every ablation of DualReal as one value.

Each ablation of the paper's Tables 2-3 is a field value, never a code edit (METHOD.md §5):

==============================  =============================================================
variant                          config
==============================  =============================================================
full (n = 7)                     defaults
w/o Dual-aware Adaptation        ``joint=False, use_controller=False`` (two isolated runs, γ=0
                                 and γ=1, blended at inference with ``fixed_weights``)
w/o StageBlender Controller      ``use_controller=False`` (fixed ``w_id = w_mo = s/2 = 0.1``)
w/o weight groups / cardinality  ``num_groups`` ∈ {1, 2, 7, 42}
w/o gradient mask                ``gradient_mask=False``
neutral-at-init adapters         ``residual_in_adapter=False``
==============================  =============================================================

The config is saved as ``config.json`` beside every checkpoint with the class name and the package
versions (as diffusers' ``ConfigMixin`` does), and compared on resume.

``train_steps`` and the learning-rate warm-up depend on the backbone (:meth:`DualRealConfig.resolve`):
the paper's 1000 steps (200 warm-up) for a real CogVideoX, and :data:`TINY_TRAIN_STEPS` = 10 steps
(2 warm-up) for the random-weights ``tiny`` preset, whose only purpose is to run every code path —
both step kinds, the mask, the controller, checkpointing — in well under a minute on 2 CPU cores, so
that the whole smoke run (training, 2 videos, 7 metrics) stays within a few minutes.
``dualbench run --train-steps N`` (or the ``train_steps`` option) overrides both.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualreal.engine.config import PAPER_OPTIMIZER, versioned_config_dict

__all__ = ["DualRealConfig", "PAPER_TRAIN_STEPS", "TINY_TRAIN_STEPS", "config_diff"]

#: Training steps per case in the paper (§3.6).
PAPER_TRAIN_STEPS = 1000
#: Default training steps on the random-weights ``tiny`` backbone (a smoke test, not an experiment).
TINY_TRAIN_STEPS = 10
#: Warm-up as a fraction of the run: the paper's 200 of 1000 steps.
WARMUP_FRACTION = 0.2

_IMAGE_ENCODERS = ("auto", "ViT-H-14", "tiny-random")
_MIXED = ("auto", "no", "bf16", "fp16")


@dataclass
class DualRealConfig:
    """DualReal's configuration (METHOD.md). ``None`` fields are resolved per backbone.

    DA-Block adapters (§1):
        bottleneck_dim: ``d`` of all four adapters per block (64).
        condition_scale: ``λ`` of the motion adapters' condition term (1.0).
        residual_in_adapter: keep the released code's skip term ``x +`` inside each adapter (True).

    StageBlender controller (§2):
        use_controller: learn the fusion weights (True); False uses ``fixed_weights``.
        num_groups: ``n`` groups of consecutive blocks (7); must divide the block count.
        fusion_scale: ``s = w_id + w_mo`` (0.2).
        fixed_weights: ``(w_id, w_mo)`` without the controller; ``None`` → ``(s/2, s/2)`` = (0.1, 0.1).
        controller_head_dim: hidden width of the weight head (128).

    Dual-aware Adaptation (§3):
        joint: one joint run (True) or two isolated runs blended at inference (False).
        motion_ratio: ``γ``, probability of a motion step (0.5).
        gradient_mask: drop the inactive adapters' gradients each step (True).
        train_steps: optimiser steps (``None`` → 1000, or 10 on the ``tiny`` preset). In the
            isolated (``joint=False``) ablation each of the two runs takes ``train_steps``.
        learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon, max_grad_norm: AdamW
            (1e-3, 0.9, 0.95, 1e-4, 1e-8) and gradient clipping (1.0).
        lr_scheduler, lr_num_cycles: diffusers ``get_scheduler`` name and cycles
            (``cosine_with_restarts``, 1).
        lr_warmup_steps: ``None`` → 20 % of ``train_steps`` (the paper's 200 of 1000).
        motion_batch_size: clips per motion step (3); identity_batch_size: images per identity step (1).
        gradient_accumulation_steps: micro-batches per optimiser step (1).
        train_frames: frames per training clip (4k+1); ``None`` → the backbone's default (49 / 9).
        mixed_precision: ``auto`` (bf16 when the backbone is bf16, fp16 when fp16, else no), or
            ``no``/``bf16``/``fp16``.
        use_8bit_adam: bitsandbytes' AdamW8bit (optional dependency).
        gradient_checkpointing: the transformer's block checkpointing during training.
        seed: seed of adapter/controller init, step kinds, batches, noise and timesteps (42).

    Reference-image encoder:
        image_encoder: ``auto`` (``tiny-random`` on the tiny preset, else ``ViT-H-14``),
            ``ViT-H-14`` (OpenCLIP, laion2b_s32b_b79k) or ``tiny-random``.
        image_encoder_path: explicit checkpoint file or folder for the OpenCLIP weights.

    Inference (§4):
        uncond_condition: ``same`` (released: the reference embedding in both guidance branches)
            or ``zeros`` (zeros in the unconditional branch).
    """

    # 1. DA-Block adapters
    bottleneck_dim: int = 64
    condition_scale: float = 1.0
    residual_in_adapter: bool = True
    # 2. StageBlender controller
    use_controller: bool = True
    num_groups: int = 7
    fusion_scale: float = 0.2
    fixed_weights: tuple[float, float] | None = None
    controller_head_dim: int = 128
    # 3. Dual-aware Adaptation
    joint: bool = True
    motion_ratio: float = 0.5
    gradient_mask: bool = True
    train_steps: int | None = None
    learning_rate: float = PAPER_OPTIMIZER["learning_rate"]
    adam_beta1: float = PAPER_OPTIMIZER["adam_beta1"]
    adam_beta2: float = PAPER_OPTIMIZER["adam_beta2"]
    weight_decay: float = PAPER_OPTIMIZER["weight_decay"]
    adam_epsilon: float = PAPER_OPTIMIZER["adam_epsilon"]
    max_grad_norm: float = PAPER_OPTIMIZER["max_grad_norm"]
    lr_scheduler: str = PAPER_OPTIMIZER["lr_scheduler"]
    lr_num_cycles: int = PAPER_OPTIMIZER["lr_num_cycles"]
    lr_warmup_steps: int | None = None
    motion_batch_size: int = 3
    identity_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    train_frames: int | None = None
    mixed_precision: str = "auto"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    # Reference-image encoder
    image_encoder: str = "auto"
    image_encoder_path: str | None = None
    # 4. Inference
    uncond_condition: str = "same"
    # Filled by resolve(): what the defaults became on this backbone (for records, not for users).
    resolved_for: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.fixed_weights is not None:
            self.fixed_weights = tuple(float(w) for w in self.fixed_weights)  # JSON gives lists
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` with one precise message per bad value or combination."""
        if self.bottleneck_dim < 1:
            raise ValueError(f"bottleneck_dim must be >= 1, got {self.bottleneck_dim}")
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {self.num_groups}")
        if not 0.0 <= self.motion_ratio <= 1.0:
            raise ValueError(f"motion_ratio (γ) must be in [0, 1], got {self.motion_ratio}")
        if self.fusion_scale <= 0:
            raise ValueError(f"fusion_scale (s) must be > 0, got {self.fusion_scale}")
        if self.fixed_weights is not None and len(self.fixed_weights) != 2:
            raise ValueError(f"fixed_weights must be (w_id, w_mo), got {self.fixed_weights}")
        if not self.joint and self.use_controller:
            raise ValueError(
                "joint=False (w/o Dual-aware Adaptation) trains the two adapters in isolation and "
                "blends them with fixed weights: set use_controller=False as well"
            )
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")
        if self.lr_warmup_steps is not None and self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.motion_batch_size < 1 or self.identity_batch_size < 1:
            raise ValueError("motion_batch_size and identity_batch_size must be >= 1")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        if self.train_frames is not None and (self.train_frames < 1 or (self.train_frames - 1) % 4):
            raise ValueError(f"train_frames must be 4k+1 (the VAE compresses time by 4), got {self.train_frames}")
        if self.mixed_precision not in _MIXED:
            raise ValueError(f"mixed_precision must be one of {_MIXED}, got {self.mixed_precision!r}")
        if self.image_encoder not in _IMAGE_ENCODERS:
            raise ValueError(f"image_encoder must be one of {_IMAGE_ENCODERS}, got {self.image_encoder!r}")
        if self.uncond_condition not in ("same", "zeros"):
            raise ValueError(f"uncond_condition must be 'same' or 'zeros', got {self.uncond_condition!r}")

    # ------------------------------------------------------------------ derived values
    @property
    def weights_without_controller(self) -> tuple[float, float]:
        """``fixed_weights``, or ``(s/2, s/2)``."""
        if self.fixed_weights is not None:
            return self.fixed_weights
        return (self.fusion_scale / 2, self.fusion_scale / 2)

    def resolve(self, backbone: Any) -> DualRealConfig:
        """A copy with every ``auto``/``None`` default made concrete for ``backbone``.

        ``train_steps``: 1000 (paper), or :data:`TINY_TRAIN_STEPS` on the ``tiny`` preset.
        ``lr_warmup_steps``: 20 % of ``train_steps``. ``train_frames``: the backbone's default.
        ``mixed_precision``: from the backbone dtype. ``image_encoder``: ``tiny-random`` on the tiny
        preset, else ``ViT-H-14``.
        """
        tiny = getattr(backbone, "source", None) == "tiny"
        steps = self.train_steps or (TINY_TRAIN_STEPS if tiny else PAPER_TRAIN_STEPS)
        warmup = self.lr_warmup_steps
        if warmup is None:
            warmup = int(round(WARMUP_FRACTION * steps))
        frames = self.train_frames or int(backbone.defaults["num_frames"])
        mixed = self.mixed_precision
        if mixed == "auto":
            name = str(getattr(backbone, "dtype", "float32")).replace("torch.", "")
            mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(name, "no")
        encoder = self.image_encoder
        if encoder == "auto":
            encoder = "tiny-random" if tiny else "ViT-H-14"
        return dataclasses.replace(
            self,
            train_steps=steps,
            lr_warmup_steps=warmup,
            train_frames=frames,
            mixed_precision=mixed,
            image_encoder=encoder,
            resolved_for=str(getattr(backbone, "source", "unknown")),
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["fixed_weights"] is not None:
            d["fixed_weights"] = list(d["fixed_weights"])
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_overrides(cls, **overrides: Any) -> DualRealConfig:
        """Build from keyword overrides; an unknown key is a ``ValueError`` listing the valid ones."""
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown DualReal option(s) {unknown}; valid options: {', '.join(cls.field_names())}"
            )
        return cls(**overrides)

    def to_json_dict(self) -> dict[str, Any]:
        """The ``config.json`` payload: class name, package versions, then every field."""
        return versioned_config_dict(self)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> DualRealConfig:
        """Read a ``config.json`` written by :meth:`save`.

        Raises:
            ValueError: the file names another class, or holds unknown fields.
        """
        data = json.loads(Path(path).read_text())
        name = data.get("_class_name")
        if name != cls.__name__:
            raise ValueError(f"{path}: config of class {name!r}, expected {cls.__name__!r}")
        return cls.from_overrides(**{k: v for k, v in data.items() if not k.startswith("_")})


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between two config dicts (keys starting with ``_`` are metadata, ignored)."""
    keys = {k for k in (*saved, *current) if not k.startswith("_")}
    norm = lambda v: json.loads(json.dumps(v))  # noqa: E731 - tuples vs lists
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if norm(saved.get(k)) != norm(current.get(k))}
