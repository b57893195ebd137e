"""Helpers shared by the baseline tests (test_lora, test_dreamvideo, test_motionbooth)."""

from __future__ import annotations

import torch

from dualreal.engine.protocol import CaseData


def tiny_case(seed: int = 0, motion_clips: list[torch.Tensor] | None = None) -> CaseData:
    """A case from random uint8 tensors: 2 identity images 64×96, 2 motion clips of 9 frames."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)  # noqa: E731
    return CaseData(
        name="dog__waving",
        class_word="dog",
        identity_images=[rand(64, 96, 3) for _ in range(2)],
        identity_prompts=["dog *"] * 2,
        motion_clips=motion_clips if motion_clips is not None else [rand(9, 64, 96, 3) for _ in range(2)],
        motion_prompts=["a person is waving"] * 2,
        ref_image=rand(64, 96, 3),
    )


