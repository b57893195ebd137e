"""What the trainable baselines share beyond the engine: a transformer copy that shares the frozen
weights, the training-budget option (``budget="original" | "equal"``), and the budget records.

Their configurations extend :class:`BaselineConfig` (LoRA, MotionBooth-style) or
:class:`~dualreal.engine.config.ImageConditionedConfig` and :class:`BaselineConfig` (DreamVideo-style);
every value that differs from the engine's defaults is re-declared in the baseline's config with
its source.

**Budgets** (docs/BASELINES.md, "Training budgets"). ``budget="original"`` trains with the
baseline's own recipe (each original's steps, batch sizes and accumulation, cited in its config).
``budget="equal"`` gives it DualReal's budget instead (:meth:`BaselineConfig.equal_budget`): the
same number of optimiser steps in total (``train_steps``, default the engine's ``PAPER_STEPS`` =
1000; ``TINY_STEPS`` on ``tiny``), half of them on identity images and half on motion clips
(DualReal's γ = 0.5, docs/METHOD.md §3.1), 1 image per image step and the engine's clips per clip
step (3; 1 on ``tiny``). A method with two separate runs gets the two halves as its two runs; the
learning rate and optimiser stay the method's own. The fields ``equal`` sets must be left at their
defaults (an explicit value is refused, never silently replaced).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from dualreal.engine.config import TrainingConfig, is_tiny

__all__ = [
    "BUDGETS",
    "EQUAL_MOTION_RATIO",
    "EqualBudget",
    "BaselineConfig",
    "shared_weights_copy",
    "count_parameters",
]

#: Values of the ``budget`` option.
BUDGETS = ("original", "equal")
#: γ of the equal-budget reference: DualReal draws a clip step with probability 0.5 (docs/METHOD.md §3.1).
EQUAL_MOTION_RATIO = 0.5


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


def count_parameters(params: Iterable[torch.Tensor]) -> int:
    """Number of elements of distinct tensors (a tensor listed twice counts once)."""
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = int(p.numel())
    return sum(seen.values())


@dataclass(frozen=True)
class EqualBudget:
    """DualReal's training budget, which ``budget="equal"`` gives a baseline.

    Attributes:
        total_steps: optimiser steps in total.
        identity_steps, motion_steps: the two halves (``motion = round(γ · total)``, at least 1
            each), for methods that train identity and motion in separate runs.
        identity_batch: images per image step (1).
        motion_batch: clips per clip step (3; 1 on ``tiny``).
    """

    total_steps: int
    identity_steps: int
    motion_steps: int
    identity_batch: int
    motion_batch: int


def _engine_default(name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(TrainingConfig)}[name]


@dataclass
class BaselineConfig(TrainingConfig):
    """A baseline's training config: :class:`~dualreal.engine.config.TrainingConfig` plus the budget
    option (module docstring).

    Attributes:
        budget: ``original`` (the baseline's own recipe) or ``equal`` (DualReal's budget).
    """

    #: Fields that ``budget="equal"`` sets (a subclass lists its own); they must be left at their defaults.
    EQUAL_BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ()

    budget: str = "original"

    def validate(self) -> None:
        super().validate()
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
        if self.budget == "equal":
            defaults = {f.name: f.default for f in dataclasses.fields(type(self))}
            # resolve() writes concrete values into these fields; a resolved config re-validates itself
            if self.resolved_for is None:
                set_by_user = [n for n in self.EQUAL_BUDGET_FIELDS if getattr(self, n) != defaults[n]]
                if set_by_user:
                    raise ValueError(
                        f"budget='equal' sets {', '.join(set_by_user)} to DualReal's budget; leave "
                        f"{'it' if len(set_by_user) == 1 else 'them'} unset, or use budget='original'"
                    )

    def equal_budget(self, backbone: Any) -> EqualBudget:
        """DualReal's budget on ``backbone`` (module docstring); ``train_steps`` sets the total."""
        tiny = is_tiny(backbone)
        total = int(self.train_steps if self.train_steps is not None
                    else TrainingConfig.TINY_STEPS if tiny else TrainingConfig.PAPER_STEPS)
        motion = max(1, int(EQUAL_MOTION_RATIO * total + 0.5))
        identity = max(1, total - motion)
        return EqualBudget(
            total_steps=total,
            identity_steps=identity,
            motion_steps=motion,
            identity_batch=int(_engine_default("identity_batch_size")),
            motion_batch=TrainingConfig.TINY_MOTION_BATCH if tiny else TrainingConfig.PAPER_MOTION_BATCH,
        )
