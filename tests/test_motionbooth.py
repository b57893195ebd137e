"""MotionBooth-style baseline: losses by hand, subject-token attention maps vs a dense computation,
box steering, masks, box paths, fit + generate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.boxes import box_path_from_clips, box_token_mask, clip_box_path, latent_box_path, resample_path
from baselines.common import shared_weights_copy
from baselines.masks import grabcut_mask, resize_mask, subject_masks
from baselines.motionbooth import (
    MotionBoothMethod,
    SubjectAttention,
    SubjectAttnProcessor,
    attention_bce_loss,
    install_subject_attention,
    masked_v_loss,
    steering_values,
    subject_token_mask,
    trainable_parameter_names,
)
from _baselines_support import tiny_case
from dualreal.engine.protocol import GenerationSettings

SMALL = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=2)


def moving_square_clip(n: int = 9, h: int = 64, w: int = 96, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Dim noise with a bright square moving left → right by 6 px per frame."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.randint(0, 30, (n, h, w, 3), generator=g, dtype=torch.uint8)
    for t in range(n):
        x = 8 + 6 * t
        clip[t, 24 : 24 + size, x : x + size] = 255
    return clip


# ------------------------------------------------------------------------------------------ losses
def test_masked_loss_sums_channels_and_divides_by_masked_pixels():
    pred = torch.arange(16, dtype=torch.float32).reshape(1, 1, 2, 2, 4)
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[[1, 0, 1, 0], [0, 0, 1, 0]]]], dtype=torch.bool)  # 3 pixels
    by_hand = sum(float(pred[0, 0, c, y, x]) ** 2 for c in range(2) for y, x in [(0, 0), (0, 2), (1, 2)]) / 3
    assert masked_v_loss(pred, target, mask).item() == pytest.approx(by_hand)
    assert masked_v_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
    ones = masked_v_loss(pred, target, torch.ones_like(mask))  # all ones: C × the plain mean
    assert ones.item() == pytest.approx(2 * F.mse_loss(pred, target).item())
    two_frames = torch.cat([pred, 2 * pred], 1)
    assert masked_v_loss(two_frames, torch.zeros_like(two_frames), mask).item() == pytest.approx(by_hand * 5 / 2)
    with pytest.raises(ValueError, match="mask must be"):
        masked_v_loss(pred, target, mask[:, :, :1])


def test_attention_bce_by_hand():
    a = torch.tensor([0.2, 0.9, 0.5, 0.01]).reshape(1, 1, 2, 2)
    m = torch.tensor([0.0, 1.0, 0.25, 1.0]).reshape(1, 1, 2, 2)
    by_hand = -sum(mi * math.log(ai) + (1 - mi) * math.log(1 - ai) for ai, mi in zip(a.flatten().tolist(), m.flatten().tolist())) / 4
    assert attention_bce_loss(a, m).item() == pytest.approx(by_hand, rel=1e-6)


def test_subject_tokens_are_the_class_and_star(tiny_backbone):
    tok = tiny_backbone.tokenizer
    mask, phrase = subject_token_mask(tok, "a dog * wearing a hat", "dog", 32)
    ids = tok("a dog * wearing a hat", padding="max_length", max_length=32, truncation=True)["input_ids"]
    assert phrase == "dog *" and tok.decode([i for i, m in zip(ids, mask) if m]).strip() == "dog *"
    assert not subject_token_mask(tok, "a cat", "dog", 32)[0].any()
    assert subject_token_mask(tok, "Dog * biking", "dog", 32)[1] == "Dog *"


# ------------------------------------------------------------------------------- attention maps
def _capture_attention_inputs(transformer, latents, text, t, rotary):
    captured = []
    handles = [
        b.attn1.register_forward_pre_hook(lambda m, a, kw: captured.append(kw), with_kwargs=True)
        for b in transformer.transformer_blocks
    ]
    try:
        with torch.no_grad():
            out = transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
    finally:
        for h in handles:
            h.remove()
    return out, captured


def _dense_logits(attn, kw):
    """The full joint attention logits (B, heads, N, N), written out from the module's weights."""
    from diffusers.models.embeddings import apply_rotary_emb

    video, text, rotary = kw["hidden_states"], kw["encoder_hidden_states"], kw["image_rotary_emb"]
    x = torch.cat([text, video], 1).double()
    b, n, _ = x.shape
    heads = attn.heads

    def proj(lin, norm):
        y = (x @ lin.weight.double().T + lin.bias.double()).view(b, n, heads, -1).transpose(1, 2)
        y = F.layer_norm(y, y.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)
        y[:, :, text.shape[1] :] = apply_rotary_emb(y[:, :, text.shape[1] :], tuple(r.double() for r in rotary))
        return y

    q, k = proj(attn.to_q, attn.norm_q), proj(attn.to_k, attn.norm_k)
    v = (x @ attn.to_v.weight.double().T + attn.to_v.bias.double()).view(b, n, heads, -1).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), v


@pytest.fixture(scope="module")
def tiny_inputs(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(2, 3, 4, 8, 12, generator=g), torch.randn(2, 32, 32, generator=g)
    rotary = tiny_backbone.pipeline()._prepare_rotary_positional_embeddings(64, 96, 3, torch.device("cpu"))
    return latents, text, torch.tensor([100, 800]), rotary


def test_processor_is_stock_and_maps_match_a_dense_computation(tiny_backbone, tiny_inputs):
    latents, text, t, rotary = tiny_inputs
    base, captured = _capture_attention_inputs(tiny_backbone.transformer, latents, text, t, rotary)
    model = shared_weights_copy(tiny_backbone.transformer)
    control = SubjectAttention()
    install_subject_attention(model, control)
    tokens = torch.zeros(2, 32)
    tokens[0, 3:6] = 1 / 3
    tokens[1, [1, 9]] = 1 / 2
    control.record, control.token_mask = True, tokens
    with torch.no_grad():
        out = model(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
    torch.testing.assert_close(out, base, rtol=0, atol=0)  # recording does not change the model
    assert len(control.maps) == 42 and control.maps[0].shape == (2, 72)
    for i in (0, 20, 41):
        logits, _ = _dense_logits(tiny_backbone.transformer.transformer_blocks[i].attn1, captured[i])
        block = logits[:, :, 32:, :32].softmax(-1)  # video queries × text keys, softmax over text keys
        dense = (block * tokens.double()[:, None, None, :]).sum(-1).mean(1)
        torch.testing.assert_close(control.maps[i].double(), dense, rtol=1e-5, atol=1e-6)


def test_box_steering_changes_attention_only_as_specified(tiny_backbone, tiny_inputs):
    latents, text, t, rotary = tiny_inputs
    _, captured = _capture_attention_inputs(tiny_backbone.transformer, latents, text, t, rotary)
    attn, kw = tiny_backbone.transformer.transformer_blocks[5].attn1, captured[5]
    control = SubjectAttention()
    proc = SubjectAttnProcessor(control, 5)
    inside = torch.zeros(3, 4, 6, dtype=torch.bool)
    inside[:, 1:3, 2:5] = True  # 6 of 24 tokens per frame
    bias = steering_values(inside, edit_scale=10.0, amplify=True, suppress=True, suppress_value=-1e4)
    assert bias.view(3, 4, 6)[0, 1, 2].item() == pytest.approx(10 * (1 - 6 / 24))
    assert bias.view(3, 4, 6)[0, 0, 0].item() == -1e4
    assert torch.equal(steering_values(inside, edit_scale=10, amplify=False, suppress=False), torch.zeros(72))
    tokens = torch.zeros(2, 32)
    tokens[1, 3:6] = 1  # conditional branch only
    control.steer, control.steer_tokens = torch.stack([bias, bias]), tokens
    with torch.no_grad():
        video, txt = proc(attn, **kw)
        control.steer = None
        plain_video, plain_txt = proc(attn, **kw)
    logits, v = _dense_logits(attn, kw)
    spec = torch.zeros_like(logits)  # the specified change: + bias[q] on (video query q, subject key)
    spec[:, :, 32:, :32] = bias.double()[None, None, :, None] * tokens.double()[:, None, None, :]
    out = (logits + spec).softmax(-1) @ v
    out = out.transpose(1, 2).reshape(2, -1, attn.heads * v.shape[-1])
    out = out @ attn.to_out[0].weight.double().T + attn.to_out[0].bias.double()
    torch.testing.assert_close(video.double(), out[:, 32:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt.double(), out[:, :32], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(video[0], plain_video[0], rtol=0, atol=1e-6)  # unconditional row: untouched
    torch.testing.assert_close(txt, plain_txt, rtol=0, atol=1e-6)  # text queries: untouched
    assert (video[1] - plain_video[1]).abs().max() > 1e-3


# ------------------------------------------------------------------------------- masks and boxes
def test_grabcut_finds_a_centred_object_and_sources_are_recorded():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 60, (64, 96, 3), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    disk = (yy - 32) ** 2 + (xx - 48) ** 2 < 16**2
    img[disk] = torch.tensor([230, 200, 40], dtype=torch.uint8)
    mask, fell_back = grabcut_mask(img)
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert not fell_back and iou > 0.7
    masks, info = subject_masks([img, img], None)
    assert info["mask_source"] == "grabcut" and len(masks) == 2
    masks, info = subject_masks([img], [disk.to(torch.uint8) * 255])
    assert info["mask_source"] == "data" and torch.equal(masks[0], disk)
    assert subject_masks([img], None, source="ones")[1]["mask_coverage"] == 1.0
    with pytest.raises(ValueError, match="ships no identity masks"):
        subject_masks([img], None, source="data")
    assert resize_mask(disk, (4, 6)).shape == (4, 6)


def test_box_path_follows_the_moving_region():
    clip = moving_square_clip()
    path = clip_box_path(clip, smooth=1)
    assert path.shape == (9, 4)
    centres = (path[:-1, 0] + path[:-1, 2]) / 2 * 96
    truth = torch.tensor([8 + 6 * t + 8 + 3 for t in range(8)], dtype=torch.float32)  # square centre, mid-step
    assert (centres - truth).abs().max() < 8
    assert ((path[:, 1] + path[:, 3]) / 2 * 64 - 32).abs().max() < 8
    lat = latent_box_path(path)
    assert lat.shape == (3, 4) and torch.allclose(lat[1], path[1:5].mean(0)) and torch.equal(lat[0], path[0])
    assert torch.allclose(resample_path(lat, 5)[2], lat[1]) and resample_path(lat, 3).equal(lat)
    assert box_path_from_clips([clip]).shape == (3, 4)
    grid = box_token_mask(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.9, 0.9, 0.91, 0.91]]), 4, 6)
    assert grid[0].sum() == 6 and grid[1].sum() == 1  # a tiny box still marks its cell


# ------------------------------------------------------------------------------------ end to end
def test_motionbooth_fits_and_generates_with_and_without_steering(tiny_backbone, tmp_path):
    case = tiny_case(motion_clips=[moving_square_clip(seed=1), moving_square_clip(seed=2)])  # boxes to follow
    assert len(trainable_parameter_names(tiny_backbone.transformer, "attn")) == 42 * 8
    before = tiny_backbone.transformer.transformer_blocks[0].attn1.to_q.weight.clone()
    method = MotionBoothMethod(tiny_backbone, train_steps=2, learning_rate=1e-3)
    method.fit(case, tmp_path)
    assert method.last_fit["resumed"] is False and method.last_fit["mask_source"] == "grabcut"
    assert torch.equal(tiny_backbone.transformer.transformer_blocks[0].attn1.to_q.weight, before)
    steered = method.generate("dog * is waving", 42, SMALL)
    assert steered.frames.dtype == torch.uint8 and steered.frames.shape == (9, 32, 48, 3)
    assert steered.extras["motion_control"] == "flow-boxes" and steered.extras["subject_phrase"] == "dog *"
    assert steered.extras["amp_steps"] == 1 and len(steered.extras["box_path"]) == 3

    off = MotionBoothMethod(tiny_backbone, train_steps=2, learning_rate=1e-3, box_source="off")
    off.fit(case, tmp_path)  # inference-only option: resumes the same checkpoint
    assert off.last_fit["resumed"] is True
    plain = off.generate("dog * is waving", 42, SMALL)
    assert plain.extras["motion_control"] == "off"
    assert not torch.equal(plain.frames, steered.frames)
    import json

    logs = json.loads((tmp_path / "train_state.json").read_text())
    assert logs["kinds"] == ["identity", "motion"] and len(logs["losses"]) == logs["steps"] == 2
    trainer = logs["trainer"]  # MotionBooth's schedule (configs/zeroscope.yaml) with the lr given here
    assert (trainer["learning_rate"], trainer["lr_scheduler"], trainer["lr_warmup_steps"], trainer["adam_beta2"]) == (1e-3, "constant", 0, 0.999)
