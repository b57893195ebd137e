"""What every training configuration shares: the paper's optimiser settings (one place) and the
versioned ``config.json`` payload saved beside every checkpoint."""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_OPTIMIZER", "optimizer_settings", "versioned_config_dict"]


#: The paper's optimiser and learning-rate schedule (METHOD.md §3): AdamW, β (0.9, 0.95), weight decay
#: 1e-4, eps 1e-8, gradient clip 1.0, cosine with restarts (1 cycle). The one place these defaults
#: live: the trainer's, DualReal's and the baselines' configs all take them from here.
PAPER_OPTIMIZER: dict[str, Any] = {
    "learning_rate": 1e-3,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 1e-4,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "lr_scheduler": "cosine_with_restarts",
    "lr_num_cycles": 1,
}


def optimizer_settings(config: Any) -> dict[str, Any]:
    """The :data:`PAPER_OPTIMIZER` fields of any method config, as keyword arguments for
    :class:`dualreal.engine.trainer.TrainerConfig`."""
    return {name: getattr(config, name) for name in PAPER_OPTIMIZER}


def versioned_config_dict(config: Any) -> dict[str, Any]:
    """``config.json`` payload of any method config with ``to_dict()``: the class name and the
    package versions first (as diffusers' ``ConfigMixin`` does), then every field."""
    import diffusers
    import torch

    from dualreal import __version__

    return {
        "_class_name": type(config).__name__,
        "_dualbench_version": __version__,
        "_diffusers_version": diffusers.__version__,
        "_torch_version": torch.__version__,
        **config.to_dict(),
    }
