"""``DualRealConfig``: every hyperparameter and every ablation of DualReal as one value.

Each ablation of the paper's Tables 2-3 is a field value, never a code edit (docs/METHOD.md §5):

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

The training fields (optimiser, steps, batches, precision, seed), their per-backbone resolution
and ``config.json`` come from :class:`~dualreal.engine.config.TrainingConfig`; the reference-image
encoder fields from :class:`~dualreal.engine.config.ImageConditionedConfig`. The config is saved
as ``config.json`` beside every checkpoint and compared on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dualreal.engine.config import ImageConditionedConfig

__all__ = ["DualRealConfig"]


@dataclass
class DualRealConfig(ImageConditionedConfig):
    """DualReal's configuration (docs/METHOD.md). ``None`` / ``auto`` fields are resolved per
    backbone (:meth:`~dualreal.engine.config.TrainingConfig.resolve`).

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
        joint: one joint run (True) or two isolated runs blended at inference (False); in the
            isolated ablation each of the two runs takes ``train_steps``.
        motion_ratio: ``γ``, probability of a motion step (0.5).
        gradient_mask: drop the inactive adapters' gradients each step (True).

    Training (§3.6) and the reference-image encoder / inference condition (§1, §4): the fields of
    :class:`~dualreal.engine.config.ImageConditionedConfig` with the paper's defaults
    (1000 steps, 20 % warm-up, 3 clips per motion step, AdamW 1e-3, seed 42, OpenCLIP ViT-H-14,
    ``uncond_condition="same"``), except on the random-weights ``tiny`` preset (below).
    """

    # Smoke-test size on the tiny preset: 10 Bernoulli(0.5) steps see both step kinds (all one kind
    # has probability 2^-9), so the mask, the controller and checkpointing all run; 3 clips per
    # motion step as the paper's batch (docs/METHOD.md §3.6). results/regression/smoke.json holds values
    # produced with exactly these sizes.
    TINY_STEPS: ClassVar[int] = 10  # overrides the engine's 3: see the comment above
    TINY_MOTION_BATCH: ClassVar[int] = 3  # overrides the engine's 1: the paper's 3 clips (docs/METHOD.md §3.6)

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

    def __post_init__(self) -> None:
        if self.fixed_weights is not None:
            self.fixed_weights = tuple(float(w) for w in self.fixed_weights)  # JSON gives lists of any number
        super().__post_init__()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` with one precise message per bad value or combination."""
        super().validate()
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

    # ------------------------------------------------------------------ derived values
    @property
    def weights_without_controller(self) -> tuple[float, float]:
        """``fixed_weights``, or ``(s/2, s/2)``."""
        if self.fixed_weights is not None:
            return self.fixed_weights
        return (self.fusion_scale / 2, self.fusion_scale / 2)
