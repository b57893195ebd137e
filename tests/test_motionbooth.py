"""MotionBooth-style baseline: losses by hand, subject-token attention maps vs a dense computation,
box steering (plain and calibrated for joint attention), masks, box paths, the original's data per
step, fit + generate (fine-tuned weights reach the pipeline; controls and fallbacks recorded)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from baselines.boxes import box_path_from_clips, box_token_mask, clip_box_path, latent_box_path, main_regions, resample_path
from baselines.common import shared_weights_copy
from baselines.masks import grabcut_mask, resize_mask, subject_masks
from baselines.motionbooth import (
    MotionBoothConfig,
    MotionBoothMethod,
    PairedBatchSource,
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
FAST = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=1, guidance_scale=1.0)


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
    # normalised as if the latent had C_ref channels: C_ref × the per-element masked mean, whatever C is
    assert masked_v_loss(pred, target, mask, reference_channels=1).item() == pytest.approx(by_hand / 2)
    g = torch.Generator().manual_seed(0)
    err4, err16 = torch.randn(1, 1, 4, 2, 4, generator=g), torch.randn(1, 1, 16, 2, 4, generator=g)
    per_element = lambda e: (e**2 * mask.unsqueeze(2)).sum() / (mask.sum() * e.shape[2])  # noqa: E731
    for err in (err4, err16):  # the original's 4-channel loss is 4 × its per-element masked mean
        got = masked_v_loss(err, torch.zeros_like(err), mask, reference_channels=4).item()
        assert got == pytest.approx(4 * per_element(err).item(), rel=1e-6)
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
    control = SubjectAttention(steer_calibration="none")
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


def test_calibrated_steering_keeps_the_text_mass_and_gives_the_originals_text_share(tiny_backbone, tiny_inputs):
    """``text-mass``: the joint attention of a steered video query equals the dense computation with
    ``b + δ`` on the subject keys and ``δ`` on the other text keys, ``δ = −log(1 + p(eᵇ − 1))``
    (written here in float64 from its definition); its text part keeps its total mass, its video
    part is untouched, and within the text part the subject's share is the original's
    cross-attention edit ``p eᵇ / (p eᵇ + 1 − p)``."""
    latents, text, t, rotary = tiny_inputs
    _, captured = _capture_attention_inputs(tiny_backbone.transformer, latents, text, t, rotary)
    attn, kw = tiny_backbone.transformer.transformer_blocks[9].attn1, captured[9]
    inside = torch.zeros(3, 4, 6, dtype=torch.bool)
    inside[:, 1:3, 1:4] = True
    bias = steering_values(inside, edit_scale=10.0, amplify=True, suppress=True, suppress_value=-1e4)
    tokens = torch.zeros(2, 32)
    tokens[1, 3:6] = 1  # conditional row only
    control = SubjectAttention()  # steer_calibration="text-mass" is the default
    control.steer, control.steer_tokens = torch.stack([torch.zeros_like(bias), bias]), tokens
    with torch.no_grad():
        video, txt = SubjectAttnProcessor(control, 9)(attn, **kw)

    logits, v = _dense_logits(attn, kw)
    n_t, tok, b = 32, tokens.double()[:, None, None, :], control.steer.double()[:, None, :, None]
    p = (logits[:, :, n_t:, :n_t].softmax(-1) * tok).sum(-1, keepdim=True)  # subject share of the text part
    delta = -torch.log(1 + p * (torch.exp(b) - 1))
    spec = torch.zeros_like(logits)
    spec[:, :, n_t:, :n_t] = (b + delta) * tok + delta * (1 - tok)
    probs = (logits + spec).softmax(-1)
    out = (probs @ v).transpose(1, 2).reshape(2, -1, attn.heads * v.shape[-1])
    out = out @ attn.to_out[0].weight.double().T + attn.to_out[0].bias.double()
    torch.testing.assert_close(video.double(), out[:, n_t:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt.double(), out[:, :n_t], rtol=1e-4, atol=1e-5)

    before = logits.softmax(-1)[1, :, n_t:]  # steered row, video queries
    after = probs[1, :, n_t:]
    torch.testing.assert_close(after[..., :n_t].sum(-1), before[..., :n_t].sum(-1), rtol=1e-6, atol=1e-9)  # text mass kept
    torch.testing.assert_close(after[..., n_t:], before[..., n_t:], rtol=1e-6, atol=1e-9)  # video part untouched
    share = (after[..., :n_t] * tok[1]).sum(-1) / after[..., :n_t].sum(-1)
    p1, e_b = p[1, ..., 0], torch.exp(control.steer[1].double())[None, :]
    torch.testing.assert_close(share, p1 * e_b / (p1 * e_b + 1 - p1), rtol=1e-6, atol=1e-9)
    boosted = inside.reshape(-1)
    assert (share[:, boosted] > p1[:, boosted]).all() and (share[:, ~boosted] < 1e-6).all()
    # the uncalibrated bias would have moved the text part's mass: the calibration is not a no-op
    plain_spec = torch.zeros_like(logits)
    plain_spec[:, :, n_t:, :n_t] = b * tok
    plain = (logits + plain_spec).softmax(-1)[1, :, n_t:]
    assert (plain[..., :n_t].sum(-1) - before[..., :n_t].sum(-1)).abs().max() > 1e-2


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
    boxes = clip_box_path(clip, smooth=1, window=1, min_side=0.0)  # one frame pair per box, no minimum
    path = boxes.path
    assert path.shape == (9, 4) and (boxes.detected_frames, boxes.frames) == (8, 9)  # the last frame has no next frame
    centres = (path[:-1, 0] + path[:-1, 2]) / 2 * 96
    truth = torch.tensor([8 + 6 * t + 8 + 3 for t in range(8)], dtype=torch.float32)  # square centre, mid-step
    assert (centres - truth).abs().max() < 8
    assert ((path[:, 1] + path[:, 3]) / 2 * 64 - 32).abs().max() < 8
    lat = latent_box_path(path)
    assert lat.shape == (3, 4) and torch.allclose(lat[1], path[1:5].mean(0)) and torch.equal(lat[0], path[0])
    assert torch.allclose(resample_path(lat, 5)[2], lat[1]) and resample_path(lat, 3).equal(lat)
    assert box_path_from_clips([clip]).path.shape == (3, 4)
    grid = box_token_mask(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.9, 0.9, 0.91, 0.91]]), 4, 6)
    assert grid[0].sum() == 6 and grid[1].sum() == 1  # a tiny box still marks its cell


def test_main_regions_drop_specks_and_small_regions():
    import numpy as np

    mask = np.zeros((40, 60), dtype=bool)
    mask[5:25, 5:25] = True  # the actor: 400 px
    mask[30:36, 40:46] = True  # a small moving region: 36 px < 20 % of 400
    mask[10:14, 40:50] = True  # a limb-sized region: 40 px... also < 80 px
    mask[2, 50] = mask[38, 2] = True  # specks
    main = main_regions(mask)
    assert main[5:25, 5:25].all() and main.sum() == 400
    assert main_regions(mask, keep=0.05).sum() == 400 + 36 + 40  # kept when large enough; specks never
    assert not main_regions(np.zeros((8, 8), dtype=bool)).any()


def test_boxes_cover_the_sweep_over_a_window_and_have_a_minimum_size():
    """The rule (baselines/boxes.py): frame j's box bounds the moving pixels of pairs j−4 … j+4, and
    is at least 0.3 of the frame per side; a clip where nothing moves gives no path (a fallback)."""
    clip = moving_square_clip(size=8)  # an 8-px square moving 6 px per frame (< 0.3 of 64 × 96)
    one = clip_box_path(clip, smooth=1, window=1, min_side=0.0).path
    boxes = clip_box_path(clip, smooth=1).path  # window 9, min side 0.3
    assert ((boxes[:, 2] - boxes[:, 0]) >= 0.3 - 1e-6).all() and ((boxes[:, 3] - boxes[:, 1]) >= 0.3 - 1e-6).all()
    assert ((boxes >= 0) & (boxes <= 1)).all()
    swept = clip_box_path(clip, smooth=1, min_side=0.0).path  # the union alone
    for j in range(9):  # frame j's box holds every single-pair box of its window
        window = one[max(0, j - 4) : min(8, j + 5)]
        assert swept[j, 0] <= window[:, 0].min() + 0.02 and swept[j, 2] >= window[:, 2].max() - 0.02
    assert swept[4, 2] - swept[4, 0] > 0.5 > one[4, 2] - one[4, 0]  # the square sweeps 8 → 64 px of 96 over the window
    still = torch.full((9, 64, 96, 3), 90, dtype=torch.uint8)
    nothing = clip_box_path(still)
    assert nothing.path is None and nothing.detected_frames == 0 and box_path_from_clips([still]).path is None


# ------------------------------------------------------------------------------------ data per step
def test_config_is_the_originals_and_equal_budget_is_dualreals():
    from types import SimpleNamespace

    real = SimpleNamespace(source="x", dtype=torch.bfloat16, defaults={"num_frames": 49})
    cfg = MotionBoothConfig().resolve(real)  # zeroscope.yaml: 300 steps, batch 10, accumulation 2
    assert (cfg.train_steps, cfg.identity_batch_size, cfg.motion_batch_size, cfg.gradient_accumulation_steps, cfg.schedule) == (
        300, 10, 1, 2, "paired")
    eq = MotionBoothConfig(budget="equal").resolve(real)
    assert (eq.train_steps, eq.identity_batch_size, eq.motion_batch_size, eq.gradient_accumulation_steps, eq.schedule) == (
        1000, 1, 3, 1, "alternate")
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 2"):
        MotionBoothConfig(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="budget='equal' sets identity_batch_size"):
        MotionBoothConfig(budget="equal", identity_batch_size=4)


def test_paired_steps_take_an_image_batch_then_a_clip():
    class Inner:
        def next_batch(self, kind, generator):
            return kind

    src = PairedBatchSource(Inner())
    g = torch.Generator()
    assert src.next_kind(0, g) == "paired" and [src.next_batch("paired", g) for _ in range(2)] == ["identity", "motion"]
    assert src.next_kind(1, g) == "paired" and src.next_batch("paired", g) == "identity"  # a new step starts over


# ------------------------------------------------------------------------------------ end to end
def _transformer_out(transformer, tiny_inputs):
    latents, text, t, rotary = tiny_inputs
    with torch.no_grad():
        return transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]


def test_motionbooth_fits_as_the_original_and_generates_with_recorded_controls(tiny_backbone, tiny_inputs, tmp_path, monkeypatch):
    import json

    from safetensors.torch import load_file

    import dualreal.engine.trainer as trainer

    g = torch.Generator().manual_seed(7)
    other = [torch.randint(0, 256, (9, 64, 96, 3), generator=g, dtype=torch.uint8) for _ in range(3)]
    masks = [torch.zeros(64, 96, dtype=torch.bool) for _ in range(2)]
    for m in masks:
        m[16:48, 24:72] = True
    case = dataclasses.replace(
        tiny_case(motion_clips=[moving_square_clip(seed=1), moving_square_clip(seed=2)]),  # boxes to follow
        identity_masks=masks, preservation_clips=other, preservation_prompts=["a person is rowing"] * 3,
        preservation_source="3 clips of other motions: Rowing/a.avi, Rowing/b.avi, Rowing/c.avi",
    )
    encoded = []
    encode = trainer.encode_case
    monkeypatch.setattr(trainer, "encode_case", lambda bb, c, **kw: (encoded.append(c), encode(bb, c, **kw))[1])
    assert len(trainable_parameter_names(tiny_backbone.transformer, "attn")) == 42 * 8
    before = tiny_backbone.transformer.transformer_blocks[0].attn1.to_q.weight.clone()
    method = MotionBoothMethod(tiny_backbone, train_steps=2, learning_rate=1e-3)
    assert method.preservation_clip_count() == 6
    method.fit(case, tmp_path)
    fit = method.last_fit
    assert fit["resumed"] is False and fit["mask_source"] == "data" and fit["preservation"] == case.preservation_source
    assert encoded[0].motion_clips is other  # the video-preservation loss trains on the other motions' clips
    assert torch.equal(tiny_backbone.transformer.transformer_blocks[0].attn1.to_q.weight, before)
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["kinds"] == ["paired", "paired"] and state["trainer"]["gradient_accumulation_steps"] == 2
    assert all(step["loss_attention"] > 0 for step in state["logs"]) and fit["loss_attention"] == [
        step["loss_attention"] for step in state["logs"]]  # logged, non-zero, at every (image) step
    trainer_cfg = state["trainer"]  # MotionBooth's schedule (configs/zeroscope.yaml) with the lr given here
    assert (trainer_cfg["learning_rate"], trainer_cfg["lr_scheduler"], trainer_cfg["lr_warmup_steps"], trainer_cfg["adam_beta2"]) == (
        1e-3, "constant", 0, 0.999)
    budget = method.training_budget()[0].to_dict()
    assert (budget["steps"], budget["image_steps"], budget["clip_steps"], budget["images_per_step"], budget["clips_per_step"]) == (
        2, 2.0, 2.0, 2, 1)  # every step: all (≤ 10) images + one clip

    # the fine-tuned weights reach the inference pipeline: output differs from the base model's and
    # equals that of the base model with the saved file loaded into it
    tuned = _transformer_out(method.pipe.transformer, tiny_inputs)
    reload = shared_weights_copy(tiny_backbone.transformer)
    for name, value in load_file(str(tmp_path / "weights.safetensors")).items():
        owner, _, attr = name.rpartition(".")
        setattr(reload.get_submodule(owner), attr, torch.nn.Parameter(value, requires_grad=False))
    assert (tuned - _transformer_out(tiny_backbone.transformer, tiny_inputs)).abs().max() > 1e-4
    torch.testing.assert_close(tuned, _transformer_out(reload, tiny_inputs), rtol=1e-6, atol=1e-6)

    steered = method.generate("dog * is waving", 42, SMALL)
    assert steered.frames.dtype == torch.uint8 and steered.frames.shape == (9, 32, 48, 3)
    x = steered.extras  # 2 denoising steps: the first 30 % (round(0.6) = 1) boosted
    assert (x["motion_control"], x["subject_phrase"], x["steer_calibration"], x["amp_steps"]) == ("flow-boxes", "dog *", "text-mass", 1)
    assert len(x["box_path"]) == 3 and x["box_frames_detected"] == "9/9" and "motion_control_fallback" not in x
    assert x["mask_source"] == "data" and x["preservation"] == case.preservation_source
    no_subject = method.generate("a cat is waving", 42, FAST).extras
    assert no_subject["motion_control"] == "off" and "no subject phrase" in no_subject["motion_control_fallback"]

    off = MotionBoothMethod(tiny_backbone, train_steps=2, learning_rate=1e-3, box_source="off")  # motionbooth-nobox
    off.fit(case, tmp_path)  # inference-only option: resumes the same checkpoint
    assert off.last_fit["resumed"] is True and off.last_fit["loss_attention"] == fit["loss_attention"]
    plain = off.generate("dog * is waving", 42, SMALL)  # the same sampler, no steering
    assert plain.extras["motion_control"] == "off" and "motion_control_fallback" not in plain.extras
    assert not torch.equal(plain.frames, steered.frames)
    still = dataclasses.replace(case, motion_clips=[torch.full((9, 64, 96, 3), 90, dtype=torch.uint8)])
    method.fit(still, tmp_path)  # same training data: resumes; no box can be derived from a still clip
    fallback = method.generate("dog * is waving", 42, FAST).extras
    assert fallback["motion_control"] == "off" and fallback["motion_control_fallback"] == "no moving region found in motion clip 0"
