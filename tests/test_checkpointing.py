"""Gradient checkpointing: on by default for every non-tiny backbone, switched on by the one trainer,
honoured by every method that trains through it, and the same loss and gradients as without it.

Tolerance of the on/off comparisons: the runs are float32 on the CPU with one thread (conftest), and
checkpointing recomputes each block's forward with the same kernels on the same inputs, so the
values agree to the last bit here. The assertions allow 1e-6 relative (and 1e-9 absolute, for
gradients that are ~0) only so that a BLAS library choosing another summation order between the
first pass and the recomputation would not fail the test; a checkpointing bug (a block recomputed
with other inputs, hooks lost in backward, a gradient not reaching a parameter) moves values by
orders of magnitude more, or leaves gradients missing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.utils.checkpoint

from _baselines_support import tiny_case
from dualreal.config import DualRealConfig
from dualreal.engine.trainer import CaseBatchSource, encode_case, train
from dualreal.method import build_dualreal_model, dualreal_mask

RTOL, ATOL = 1e-6, 1e-9


class CheckpointCalls:
    """Counts ``torch.utils.checkpoint.checkpoint`` calls (diffusers checkpoints each block through it)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = torch.utils.checkpoint.checkpoint

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)


def test_default_is_on_for_every_backbone_but_tiny():
    for name in ("cogvideox-5b-random", "cogvideox-2b-random", "THUDM/CogVideoX-5b", "/data/CogVideoX-5b"):
        bb = SimpleNamespace(source=name, dtype=torch.bfloat16, defaults={"num_frames": 49}, random_weights=False)
        cfg = DualRealConfig().resolve(bb)
        assert cfg.gradient_checkpointing is True
        assert cfg.trainer_config("x").gradient_checkpointing is True
        assert DualRealConfig(gradient_checkpointing=False).resolve(bb).gradient_checkpointing is False
    tiny = SimpleNamespace(source="tiny", dtype=torch.float32, defaults={"num_frames": 9}, random_weights=True)
    assert DualRealConfig().resolve(tiny).gradient_checkpointing is False
    assert DualRealConfig(gradient_checkpointing=True).resolve(tiny).trainer_config("x").gradient_checkpointing is True
    with pytest.raises(ValueError, match="not resolved"):
        DualRealConfig(train_steps=1, lr_warmup_steps=0, mixed_precision="no").trainer_config("x")


def test_checkpointing_on_and_off_give_the_same_loss_and_gradients(tiny_backbone, monkeypatch):
    """A DualReal motion step then an identity step through the trainer on `tiny`, with the adapters'
    up-projections made non-zero so that every trainable tensor of the active groups gets a gradient."""
    g = torch.Generator().manual_seed(0)
    encoder = SimpleNamespace(embed_dim=64, encode=lambda x: torch.randn(x.shape[0], 64, generator=g))
    encoded = encode_case(tiny_backbone, tiny_case(), num_frames=5, image_encoder=encoder)
    counter = CheckpointCalls(monkeypatch)

    def one_run(checkpointing: bool):
        cfg = DualRealConfig(train_steps=2, seed=3, gradient_checkpointing=checkpointing).resolve(tiny_backbone)
        model = build_dualreal_model(tiny_backbone, cfg, condition_dim=64)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("up.weight"):
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
        groups = model.parameter_groups()
        names = {id(p): n for n, p in model.named_parameters()}
        grads: list[dict[str, torch.Tensor]] = [{}, {}]
        step = [0]
        hooks = [p.register_post_accumulate_grad_hook(lambda p: grads[step[0]].__setitem__(names[id(p)], p.grad.clone()))
                 for ps in groups.values() for p in ps]
        before = counter.calls
        try:
            with model.attached():
                result = train(
                    tiny_backbone.transformer, groups, Scripted(["motion", "identity"], encoded),
                    noise_scheduler=tiny_backbone.scheduler, config=cfg.trainer_config("ckpt"), model=model,
                    active_groups=lambda kind: dualreal_mask(kind) & set(groups),
                    on_step_end=lambda info: step.__setitem__(0, info.step + 1),
                )
        finally:
            for h in hooks:
                h.remove()
        assert not tiny_backbone.transformer.gradient_checkpointing  # restored after the run
        return result.losses, grads, counter.calls - before

    losses_on, grads_on, calls_on = one_run(True)
    losses_off, grads_off, calls_off = one_run(False)
    assert calls_off == 0 and calls_on == 2 * tiny_backbone.num_layers  # every block, in both steps
    torch.testing.assert_close(torch.tensor(losses_on), torch.tensor(losses_off), rtol=RTOL, atol=0.0)
    for k in range(2):
        assert grads_on[k] and grads_on[k].keys() == grads_off[k].keys()
        for name in grads_off[k]:
            torch.testing.assert_close(grads_on[k][name], grads_off[k][name], rtol=RTOL, atol=ATOL, msg=name)


class Scripted(CaseBatchSource):
    """A case source whose step kinds are given."""

    def __init__(self, kinds, encoded):
        super().__init__(encoded, motion_ratio=0.5, motion_batch_size=2)
        self.kinds = kinds

    def next_kind(self, step, generator):
        super().next_kind(step, generator)
        return self.kinds[step]


METHODS = {
    "dualreal": ("dualreal.method:DualRealMethod", {}),
    "lora": ("baselines.lora:LoRAMethod", {"rank": 4}),
    "lora-joint": ("baselines.lora:LoRAMethod", {"rank": 4, "combine": "joint"}),
    "dreamvideo": ("baselines.dreamvideo:DreamVideoMethod", {}),
    "motionbooth": ("baselines.motionbooth:MotionBoothMethod", {"mask_source": "ones"}),
}


class _FirstRunDone(Exception):
    """Stops a fit after its first training run (the rest of a fit does not train)."""


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_trainable_method_honours_the_flag(name, tiny_backbone, tmp_path, monkeypatch):
    """Each method's first training run (one step) with ``gradient_checkpointing`` on checkpoints
    every block of its forward pass and gives the loss it gives with the flag off (MotionBooth's
    first step is an identity step with its attention loss, whose maps are recorded inside the
    checkpointed blocks; its steps accumulate two micro-batches, so its blocks run twice a step).
    lora-paper-merge trains lora's runs."""
    import importlib

    import dualreal.engine.trainer as trainer_pkg
    import dualreal.method as dualreal_method

    module, _, attr = METHODS[name][0].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    counter = CheckpointCalls(monkeypatch)
    real_train = trainer_pkg.train
    seen = []

    def first_run_only(*args, **kwargs):
        before = counter.calls
        result = real_train(*args, **kwargs)
        cfg = kwargs["config"]  # one forward pass per accumulated micro-batch (MotionBooth: 2 per step)
        seen.append((cfg.gradient_checkpointing, result.losses, (counter.calls - before) / cfg.gradient_accumulation_steps))
        raise _FirstRunDone

    monkeypatch.setattr(trainer_pkg, "train", first_run_only)  # the baselines import it when they train
    monkeypatch.setattr(dualreal_method, "train", first_run_only)
    for flag in (True, False):
        method = cls(tiny_backbone, train_steps=1, train_frames=5, gradient_checkpointing=flag, **METHODS[name][1])
        with pytest.raises(_FirstRunDone):
            method.fit(tiny_case(), tmp_path / f"ckpt-{flag}")
        assert not tiny_backbone.transformer.gradient_checkpointing  # restored by the trainer
    (on, losses_on, calls_on), (off, losses_off, calls_off) = seen
    assert (on, off) == (True, False)
    assert calls_on == tiny_backbone.num_layers and calls_off == 0
    torch.testing.assert_close(torch.tensor(losses_on), torch.tensor(losses_off), rtol=RTOL, atol=0.0)
