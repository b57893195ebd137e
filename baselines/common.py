"""What the trainable baselines share: their configuration base class and a transformer copy that
shares the frozen weights.

Every baseline trains through the one trainer (:func:`dualreal.engine.trainer.train`); this module only
turns a baseline's options into a :class:`~dualreal.engine.trainer.TrainerConfig` and resolves the
backbone-dependent defaults, the way :class:`dualreal.config.DualRealConfig` does for DualReal:

* ``train_steps``: the papers' numbers on a real CogVideoX, a handful on the random-weights
  ``tiny`` preset (whose only purpose is to run every code path; a smoke run of one case × two
  prompts must fit in a minute or two on two CPU cores). ``dualbench run --train-steps N``
  overrides both.
* ``lr_warmup_steps``: a fraction of ``train_steps`` (``warmup_fraction``).
* ``motion_batch_size``: clips per motion step, the paper's 3 on a real backbone, 1 on ``tiny``.
* ``train_frames``: the backbone's default clip length (49 / 9).
* ``mixed_precision``: from the backbone's dtype.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dualreal.engine.config import PAPER_OPTIMIZER, optimizer_settings

__all__ = ["BaselineConfig", "shared_weights_copy"]

_MIXED = ("auto", "no", "bf16", "fp16")


def shared_weights_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s module tree whose parameters and buffers *are* the original tensors.

    Adapters injected into the copy (peft LoRA layers, attention processors) leave the original —
    the backbone every method shares — untouched, and no weight memory is duplicated. The copy must
    not be moved or cast (``.to()`` would rewrite the shared tensors in place); a method that
    changes base weights (MotionBooth) replaces those parameters in the copy by clones first.
    """
    memo: dict[int, Any] = {id(p): p for p in module.parameters()}
    memo.update({id(b): b for b in module.buffers()})
    return copy.deepcopy(module, memo)


@dataclass
class BaselineConfig:
    """Training options shared by the trainable baselines (subclasses change the defaults).

    Attributes:
        train_steps: optimiser steps per training run (``None``: :attr:`PAPER_STEPS` on a real
            backbone, :attr:`TINY_STEPS` on ``tiny``).
        lr_warmup_steps: ``None`` → ``warmup_fraction · train_steps``.
        learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon, max_grad_norm: AdamW and
            gradient clipping.
        lr_scheduler, lr_num_cycles: diffusers ``get_scheduler`` name and cycles.
        motion_batch_size: clips per motion step (``None``: 3, or 1 on ``tiny``).
        identity_batch_size: images per identity step.
        gradient_accumulation_steps: micro-batches per optimiser step.
        train_frames: frames per training clip (4k+1); ``None`` → the backbone's default.
        mixed_precision: ``auto`` (from the backbone dtype), ``no``, ``bf16``, ``fp16``.
        use_8bit_adam: bitsandbytes AdamW8bit.
        gradient_checkpointing: the transformer's block checkpointing while training.
        seed: seeds adapter initialisation, step kinds, batches, noise and timesteps.
    """

    #: Default steps per run on a real backbone and on the ``tiny`` preset.
    PAPER_STEPS: ClassVar[int] = 1000
    TINY_STEPS: ClassVar[int] = 3
    WARMUP_FRACTION: ClassVar[float] = 0.2
    #: Default clips per motion step on a real backbone and on ``tiny``.
    PAPER_MOTION_BATCH: ClassVar[int] = 3
    TINY_MOTION_BATCH: ClassVar[int] = 1

    train_steps: int | None = None
    lr_warmup_steps: int | None = None
    learning_rate: float = PAPER_OPTIMIZER["learning_rate"]
    adam_beta1: float = PAPER_OPTIMIZER["adam_beta1"]
    adam_beta2: float = PAPER_OPTIMIZER["adam_beta2"]
    weight_decay: float = PAPER_OPTIMIZER["weight_decay"]
    adam_epsilon: float = PAPER_OPTIMIZER["adam_epsilon"]
    max_grad_norm: float | None = PAPER_OPTIMIZER["max_grad_norm"]
    lr_scheduler: str = PAPER_OPTIMIZER["lr_scheduler"]
    lr_num_cycles: int = PAPER_OPTIMIZER["lr_num_cycles"]
    motion_batch_size: int | None = None
    identity_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    train_frames: int | None = None
    mixed_precision: str = "auto"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    #: Filled by :meth:`resolve` (for records, not for users).
    resolved_for: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # JSON gives lists where tuples are declared
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` with one precise message per bad value."""
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")
        if self.lr_warmup_steps is not None and self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if (self.motion_batch_size is not None and self.motion_batch_size < 1) or self.identity_batch_size < 1:
            raise ValueError("motion_batch_size and identity_batch_size must be >= 1")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        if self.train_frames is not None and (self.train_frames < 1 or (self.train_frames - 1) % 4):
            raise ValueError(f"train_frames must be 4k+1 (the VAE compresses time by 4), got {self.train_frames}")
        if self.mixed_precision not in _MIXED:
            raise ValueError(f"mixed_precision must be one of {_MIXED}, got {self.mixed_precision!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "resolved_for"]

    @classmethod
    def from_overrides(cls, **overrides: Any):
        """Build from keyword overrides; an unknown key is a ``ValueError`` listing the valid ones."""
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid options: {', '.join(cls.field_names())}")
        return cls(**overrides)

    def is_tiny(self, backbone: Any) -> bool:
        return getattr(backbone, "source", None) == "tiny"

    def resolve(self, backbone: Any):
        """A copy with the backbone-dependent defaults made concrete (module docstring)."""
        tiny = self.is_tiny(backbone)
        steps = self.train_steps or (self.TINY_STEPS if tiny else self.PAPER_STEPS)
        warmup = self.lr_warmup_steps
        if warmup is None:
            warmup = int(round(self.WARMUP_FRACTION * steps))
        mixed = self.mixed_precision
        if mixed == "auto":
            name = str(getattr(backbone, "dtype", "float32")).replace("torch.", "")
            mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(name, "no")
        return dataclasses.replace(
            self,
            train_steps=steps,
            lr_warmup_steps=warmup,
            motion_batch_size=self.motion_batch_size or (self.TINY_MOTION_BATCH if tiny else self.PAPER_MOTION_BATCH),
            train_frames=self.train_frames or int(backbone.defaults["num_frames"]),
            mixed_precision=mixed,
            resolved_for=str(getattr(backbone, "source", "unknown")),
        )

    # ------------------------------------------------------------------ output
    def trainer_config(self, description: str, *, train_steps: int | None = None, learning_rate: float | None = None):
        """The :class:`~dualreal.engine.trainer.TrainerConfig` for one run (call on a resolved config)."""
        from dualreal.engine.trainer import TrainerConfig

        steps = int(train_steps or self.train_steps)
        warmup = self.lr_warmup_steps if train_steps is None else int(round(self.WARMUP_FRACTION * steps))
        return TrainerConfig(
            train_steps=steps,
            **{
                **optimizer_settings(self),
                "learning_rate": float(learning_rate if learning_rate is not None else self.learning_rate),
            },
            lr_warmup_steps=int(warmup),
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            mixed_precision=self.mixed_precision,
            use_8bit_adam=self.use_8bit_adam,
            seed=self.seed,
            description=description,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json_dict(self) -> dict[str, Any]:
        """``config.json`` payload: class name, package versions, then every field."""
        from dualreal.engine.config import versioned_config_dict

        return versioned_config_dict(self)
