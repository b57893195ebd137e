"""What the trainable baselines share beyond the engine: a transformer copy that shares the frozen
weights.

Their configurations extend :class:`dualreal.engine.config.TrainingConfig` (LoRA, MotionBooth-style)
or :class:`~dualreal.engine.config.ImageConditionedConfig` (DreamVideo-style) directly; every value
that differs from the engine's defaults is re-declared in the baseline's config with its source.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

__all__ = ["shared_weights_copy"]


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
