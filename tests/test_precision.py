"""Mixed precision: on a bf16 backbone every method trains float32 parameters with float32 AdamW
states (peft LoRA weights are cast after injection, as diffusers' training scripts do)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from _baselines_support import tiny_case
from benchmark.registry import create_method


@pytest.fixture(scope="module")
def bf16_backbone(tiny_backbone):
    """The tiny preset with its frozen modules in bfloat16 (copies; the session backbone stays fp32)."""
    cast = {name: copy.deepcopy(getattr(tiny_backbone, name)).to(torch.bfloat16) for name in ("transformer", "vae", "text_encoder")}
    return dataclasses.replace(tiny_backbone, **cast, dtype=torch.bfloat16)


@pytest.mark.parametrize("name", ["dualreal", "lora-joint", "dreamvideo", "motionbooth"])
def test_trainable_parameters_and_optimiser_states_are_float32_under_bf16(bf16_backbone, tmp_path, monkeypatch, name):
    import dualreal.engine.trainer as trainer
    import dualreal.method

    seen = []
    real_train = trainer.train

    def spy(transformer, groups, source, *, on_step_end=None, **kwargs):
        def record(end):
            params = [p for ps in groups.values() for p in ps]
            state = getattr(end.optimizer, "optimizer", end.optimizer).state
            seen.append((
                {p.dtype for p in params},
                # AdamW states of the parameters this step updated (the gradient mask may skip a group)
                {state[p][k].dtype for p in params if p in state for k in ("exp_avg", "exp_avg_sq")},
                end.accelerator.mixed_precision,
            ))
            if on_step_end is not None:
                on_step_end(end)

        return real_train(transformer, groups, source, on_step_end=record, **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    monkeypatch.setattr(dualreal.method, "train", spy)
    method = create_method(name, bf16_backbone, train_steps=1)
    assert method.config.mixed_precision == "bf16"
    g = torch.Generator().manual_seed(0)
    small = dataclasses.replace(  # one 32×48 image and one 5-frame clip: bf16 on a CPU is slow
        tiny_case(), identity_images=[torch.randint(0, 256, (32, 48, 3), generator=g, dtype=torch.uint8)],
        identity_prompts=["dog *"], motion_clips=[torch.randint(0, 256, (5, 32, 48, 3), generator=g, dtype=torch.uint8)],
        motion_prompts=["a person is waving"],
    )
    method.fit(small, tmp_path)
    assert seen, f"{name}: no training step observed"
    for params, states, mixed in seen:  # one entry per training run
        assert (params, states, mixed) == ({torch.float32}, {torch.float32}, "bf16"), name
    assert next(bf16_backbone.transformer.parameters()).dtype == torch.bfloat16  # the shared backbone is untouched
