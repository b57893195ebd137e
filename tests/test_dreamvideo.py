"""DreamVideo-style baseline: adapter geometry, motion-training dropout, two isolated runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from baselines.dreamvideo import DreamVideoConfig, DreamVideoMethod, DropoutBatchSource, build_dreamvideo_model
from _baselines_support import tiny_case
from dualreal.engine.protocol import GenerationSettings
from dualreal.engine.trainer import TrainBatch

SMALL = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=2)


class _FixedSource:
    def next_kind(self, step, generator):
        return "motion"

    def next_batch(self, kind, generator):
        return TrainBatch(
            kind=kind,
            latents=torch.zeros(4, 3, 4, 8, 12),
            prompt_embeds=torch.ones(4, 5, 6),
            model_kwargs={"condition": torch.ones(4, 7)},
        )


def test_dropout_replaces_prompt_and_condition_per_sample():
    empty = torch.full((1, 5, 6), -1.0)
    g = torch.Generator().manual_seed(0)
    always = DropoutBatchSource(_FixedSource(), empty_prompt_embeds=empty, text_dropout=1.0, image_dropout=1.0)
    b = always.next_batch("motion", g)
    assert torch.equal(b.prompt_embeds, empty.expand(4, 5, 6)) and torch.equal(b.model_kwargs["condition"], torch.zeros(4, 7))
    never = DropoutBatchSource(_FixedSource(), empty_prompt_embeds=empty, text_dropout=0.0, image_dropout=0.0)
    b = never.next_batch("motion", g)
    assert torch.equal(b.prompt_embeds, torch.ones(4, 5, 6)) and torch.equal(b.model_kwargs["condition"], torch.ones(4, 7))
    half = DropoutBatchSource(_FixedSource(), empty_prompt_embeds=empty, text_dropout=0.5, image_dropout=0.5)
    b = half.next_batch("motion", torch.Generator().manual_seed(3))
    dropped = b.extras["text_dropped"]
    for i in range(4):  # whole samples, never parts of one
        assert torch.equal(b.prompt_embeds[i], empty[0] if dropped[i] else torch.ones(5, 6))


def test_geometry_half_width_attention_only_identity_and_neutral_at_init(tiny_backbone):
    cfg = DreamVideoConfig().resolve(tiny_backbone)
    assert cfg.bottleneck == 16 and cfg.identity_steps == cfg.motion_steps == 3
    real = DreamVideoConfig().resolve(type("B", (), {"source": "x", "defaults": {"num_frames": 49}, "dtype": torch.float32,
                                                     "transformer": tiny_backbone.transformer})())
    # VGen: subjectLearning step2 1000 steps × 4 images; playingGuitar motionLearning 1000 steps × 2 clips, p_image_zero 0
    assert (real.identity_steps, real.identity_batch_size, real.motion_steps, real.motion_batch_size) == (1000, 4, 1000, 2)
    assert (real.text_dropout, real.image_dropout, real.uncond_condition, real.learning_rate) == (0.5, 0.0, "zeros", 1e-5)
    equal = DreamVideoConfig(budget="equal").resolve(real_backbone := type("B", (), {
        "source": "x", "defaults": {"num_frames": 49}, "dtype": torch.float32, "transformer": tiny_backbone.transformer})())
    assert (equal.identity_steps, equal.identity_batch_size, equal.motion_steps, equal.motion_batch_size) == (500, 1, 500, 3)
    assert DreamVideoConfig(budget="equal", train_steps=10).resolve(real_backbone).motion_steps == 5
    with pytest.raises(ValueError, match="budget='equal' sets motion_batch_size"):
        DreamVideoConfig(budget="equal", motion_batch_size=2)
    model = build_dreamvideo_model(tiny_backbone, cfg, condition_dim=64)
    block = model.adapters.blocks[0]
    assert block.identity_ff is None and block.identity_attn.cond is None and block.motion_ff.cond is not None
    assert block.identity_attn.bottleneck_dim == 16 and block.motion_attn.bottleneck_dim == 16
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(2, 3, 4, 8, 12, generator=g), torch.randn(2, 32, 32, generator=g)
    pipe = tiny_backbone.pipeline()
    rotary = pipe._prepare_rotary_positional_embeddings(64, 96, 3, torch.device("cpu"))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        base = tiny_backbone.transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
        out = model(latents, text, t, image_rotary_emb=rotary, condition=torch.randn(2, 64))[0]
    torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_dreamvideo_fits_two_isolated_runs_and_generates(tiny_backbone, tmp_path):
    case = tiny_case()
    opts = dict(train_steps=1, motion_batch_size=1, learning_rate=1e-2)
    method = DreamVideoMethod(tiny_backbone, **opts)
    method.fit(case, tmp_path)
    assert method.last_fit == {"identity": {"resumed": False, "steps": 1}, "motion": {"resumed": False, "steps": 1}}
    # the identity adapter takes no part in the motion run: no gradient reaches it, no update changes it
    saved = load_file(str(tmp_path / "identity" / "weights.safetensors"))  # as the identity run left it
    identity = dict(method.model.named_parameters())
    assert all(identity[k].grad is None for k in saved), "a gradient reached the identity adapter in the motion run"
    assert all(torch.equal(identity[k], saved[k]) for k in saved)
    assert saved["adapters.blocks.0.identity_attn.up.weight"].abs().sum() > 0  # trained in its own run
    assert method.identity_batch == 2  # VGen's 4 images per step, capped at the case's 2
    budget = [r.to_dict() for r in method.training_budget()]
    assert [(r["name"], r["steps"], r["images_per_step"], r["clips_per_step"]) for r in budget] == [
        ("identity", 1, 2, 0), ("motion", 1, 0, 1)]
    n_id = sum(v.numel() for k, v in saved.items())
    assert budget[0]["trainable_parameters"] == n_id and budget[0]["learning_rate"] == 1e-2
    id_keys = set(saved)
    mo_keys = set(load_file(str(tmp_path / "motion" / "weights.safetensors")))
    assert id_keys and all(".identity_attn." in k for k in id_keys)
    assert mo_keys and all(".motion_" in k for k in mo_keys) and any(".cond." in k for k in mo_keys)
    seen = []  # the condition per guidance branch: [unconditional; conditional] = [zeros; reference]
    attached = method.model.attached
    method.model.attached = lambda **kw: (seen.append(kw.get("condition")), attached(**kw))[1]
    video = method.generate("dog * is waving", 42, SMALL)
    del method.model.attached
    assert seen[0].shape == (2, 64) and not seen[0][0].any()
    torch.testing.assert_close(seen[0][1:], method.ref_embedding)
    assert video.frames.dtype == torch.uint8 and video.frames.shape == (9, 32, 48, 3)
    assert video.extras["dreamvideo"]["uncond_condition"] == "zeros"

    again = DreamVideoMethod(tiny_backbone, **opts)
    again.fit(case, tmp_path)
    assert all(r["resumed"] for r in again.last_fit.values())
    trained, resumed = method.model.adapters.state_dict(), again.model.adapters.state_dict()
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)
    assert trained["blocks.0.identity_attn.up.weight"].abs().sum() > 0  # both runs trained their adapters
    assert trained["blocks.0.motion_ff.up.weight"].abs().sum() > 0
    assert not again.model.is_attached  # hooks are scoped: the shared backbone is the stock model again
