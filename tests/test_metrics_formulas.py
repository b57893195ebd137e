"""Each metric formula against an independent numpy computation (no model weights involved).

Models enter the formulas as callables, so fakes with known outputs test the procedures (frame
selection, padding, truncation, sampling) exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.metrics import MetricUndefined
from benchmark.metrics.clip_i import clip_i_score
from benchmark.metrics.clip_t import clean_prompt, clip_t_per_frame, clip_t_score
from benchmark.metrics.dino_i import dino_i_score
from benchmark.metrics.dynamic_degree import (
    dynamic_degree_per_pair,
    dynamic_degree_score,
    dynamic_degree_vbench,
    sample_interval,
    top_fraction_magnitude,
    vbench_thresholds,
)
from benchmark.metrics.motion_smoothness import (
    motion_smoothness_from_predictions,
    motion_smoothness_score,
    predictions_to_uint8,
)
from benchmark.metrics.temporal_consistency import temporal_consistency_per_pair, temporal_consistency_score
from benchmark.metrics.temporal_flickering import temporal_flickering_per_pair, temporal_flickering_score


def _frames(n, h=21, w=30, seed=0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# -- temporal flickering -----------------------------------------------------------------------


def test_temporal_flickering_matches_numpy():
    frames = _frames(7, 13, 17)
    a = frames.numpy().astype(np.float32)
    mae = [np.mean(np.abs(a[i + 1] - a[i]), dtype=np.float64) for i in range(6)]
    np.testing.assert_allclose(temporal_flickering_per_pair(frames).numpy(), mae, rtol=1e-12)
    assert temporal_flickering_score(frames) == pytest.approx((255 - np.mean(mae)) / 255, abs=1e-12)


def test_temporal_flickering_static_video_is_one():
    frames = _frames(1).repeat(4, 1, 1, 1)
    assert temporal_flickering_score(frames) == 1.0


def test_temporal_flickering_errors():
    with pytest.raises(MetricUndefined, match="needs at least 2 frames, got 1"):
        temporal_flickering_score(_frames(1))
    with pytest.raises(ValueError, match="expected dtype uint8"):
        temporal_flickering_score(_frames(3).float())
    with pytest.raises(ValueError, match=r"expected shape \(F, H, W, 3\)"):
        temporal_flickering_score(_frames(3)[..., :1])


# -- cosine metrics ----------------------------------------------------------------------------


def test_cosine_metrics_match_numpy():
    g = np.random.default_rng(1)
    frames, refs, text = g.normal(size=(6, 16)), g.normal(size=(4, 16)), g.normal(size=(16,))
    expected_pairs = (_unit(frames) @ _unit(refs).T).mean()
    t = torch.from_numpy
    assert clip_i_score(t(frames).float(), t(refs).float()) == pytest.approx(expected_pairs, abs=1e-6)
    assert dino_i_score(t(frames), t(refs)) == pytest.approx(expected_pairs, abs=1e-12)
    per_frame = _unit(frames) @ _unit(text)
    np.testing.assert_allclose(clip_t_per_frame(t(text), t(frames)).numpy(), per_frame, atol=1e-12)
    assert clip_t_score(t(text)[None], t(frames)) == pytest.approx(per_frame.mean(), abs=1e-12)
    u = _unit(frames)
    consecutive = [float(u[i] @ u[i + 1]) for i in range(5)]
    np.testing.assert_allclose(temporal_consistency_per_pair(t(frames)).numpy(), consecutive, atol=1e-12)
    assert temporal_consistency_score(t(frames)) == pytest.approx(np.mean(consecutive), abs=1e-12)


def test_cosine_metrics_are_raw_cosine_not_scaled_or_clamped():
    a = torch.tensor([[1.0, 0.0]])
    assert clip_t_score(torch.tensor([-1.0, 0.0]), a) == -1.0  # no clamp at 0, no x100
    assert clip_i_score(a, torch.tensor([[0.0, 3.0]])) == 0.0


def test_cosine_metric_errors():
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="expected one prompt"):
        clip_t_score(torch.randn(2, 8), x)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        clip_i_score(x, torch.randn(2, 4))
    with pytest.raises(MetricUndefined, match="needs at least 2 rows, got 1"):
        temporal_consistency_score(x[:1])
    with pytest.raises(MetricUndefined, match="needs at least 1 rows, got 0"):
        dino_i_score(x, torch.randn(0, 8))
    with pytest.raises(ValueError, match="floating dtype"):
        clip_i_score(x.long(), x)


def test_clean_prompt_removes_identity_token_after_the_300_char_cut():
    assert clean_prompt("dog * wearing a cape") == "dog wearing a cape"
    assert clean_prompt("a * dog * on a * beach") == "a dog on a beach"
    # " *" straddling character 300: the cut comes first, so nothing is removed there.
    p = "a" * 299 + " *b"
    assert clean_prompt(p) == "a" * 299 + " "
    assert len(clean_prompt("x" * 1000)) == 300
    with pytest.raises(ValueError, match="expected str"):
        clean_prompt(None)


# -- motion smoothness -------------------------------------------------------------------------


def test_predictions_are_truncated_not_rounded():
    real = _frames(3, 5, 6)
    # 0.999 of a grey level above the real value: truncation gives the real value back.
    pred = ((real.double() + 0.999) / 255.0).permute(0, 3, 1, 2).float()
    pred[0, 0, 0, 0] = 1.7  # clipped to 255
    out = predictions_to_uint8(pred)
    expected = real.clone()
    expected[0, 0, 0, 0] = 255
    assert torch.equal(out, expected)


def test_motion_smoothness_from_predictions_matches_numpy():
    real, pred = _frames(4, 9, 11, seed=2), _frames(4, 9, 11, seed=3)
    mae = np.abs(real.numpy().astype(int) - pred.numpy().astype(int)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(motion_smoothness_from_predictions(pred, real).numpy(), mae, rtol=1e-12)


class _AverageInterpolator:
    """Midpoint = mean of the two frames; records every input batch."""

    def __init__(self):
        self.inputs = []

    def __call__(self, a, b):
        self.inputs.append((a.clone(), b.clone()))
        return (a + b) / 2


@pytest.mark.parametrize("n_frames, comparisons", [(7, 3), (8, 3), (16, 7), (49, 24), (3, 1)])
def test_motion_smoothness_procedure_matches_numpy(n_frames, comparisons):
    frames = _frames(n_frames, 21, 30, seed=n_frames)
    fake = _AverageInterpolator()
    score = motion_smoothness_score(frames, fake, batch_size=3)
    f = frames.numpy()
    kept = f[0::2].astype(np.float32) / 255.0
    maes = []
    for k in range(len(kept) - 1):
        pred = ((kept[k] + kept[k + 1]) / 2 * 255.0).clip(0, 255).astype(np.uint8)  # truncation
        maes.append(np.abs(pred.astype(int) - f[2 * k + 1].astype(int)).mean())
    assert len(maes) == comparisons
    assert sum(a.shape[0] for a, _ in fake.inputs) == comparisons
    assert score == pytest.approx((255 - np.mean(maes)) / 255, abs=1e-7)


def test_motion_smoothness_pads_centred_replicate_to_16():
    frames = _frames(5, 21, 30)
    fake = _AverageInterpolator()
    motion_smoothness_score(frames, fake)
    a, _ = fake.inputs[0]
    assert a.shape[-2:] == (32, 32)  # 21 -> 32 (5 top, 6 bottom), 30 -> 32 (1 left, 1 right)
    kept = frames[0::2].permute(0, 3, 1, 2).float() / 255.0
    expected = F.pad(kept[:-1], (1, 1, 5, 6), mode="replicate")
    assert torch.equal(a, expected)


def test_motion_smoothness_needs_three_frames():
    with pytest.raises(MetricUndefined, match="needs at least 3 frames"):
        motion_smoothness_score(_frames(2), _AverageInterpolator())


# -- dynamic degree ----------------------------------------------------------------------------


def test_top_fraction_magnitude_matches_numpy():
    g = np.random.default_rng(4)
    flow = g.normal(scale=3, size=(2, 2, 24, 40)).astype(np.float32)
    for b in range(2):
        rad = np.sqrt(np.square(flow[b, 0]) + np.square(flow[b, 1])).flatten()
        k = int(24 * 40 * 0.05)
        expected = np.sort(rad)[::-1][:k].astype(np.float64).mean()
        assert top_fraction_magnitude(torch.from_numpy(flow))[b].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(MetricUndefined, match="no top 5% pixels"):
        top_fraction_magnitude(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("fps, k", [(8, 1), (25, 3), (24, 3), (20, 2), (30, 4), (12, 2), (4, 1), (10, 1), (60, 8)])
def test_sample_interval_uses_python_rounding(fps, k):
    assert sample_interval(fps) == k == max(1, round(fps / 8))


@pytest.mark.parametrize("fps", [0, -1, math.nan, math.inf])
def test_sample_interval_rejects_bad_fps(fps):
    with pytest.raises(ValueError, match="fps must be a positive number"):
        sample_interval(fps)


class _IndexFlow:
    """Flow u = (mean of img2) - (mean of img1), v = 0: with frames whose value is their index,
    each pair's magnitude is the index step. Records input shapes."""

    def __init__(self):
        self.shapes = []

    def __call__(self, a, b):
        self.shapes.append(tuple(a.shape))
        u = (b - a).mean(dim=(1, 2, 3))
        return torch.stack([u[:, None, None].expand(-1, *a.shape[-2:]), torch.zeros(a.shape[0], *a.shape[-2:])], dim=1)


def _index_frames(n, h, w):
    return torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, h, w, 3).contiguous()


@pytest.mark.parametrize("pad, padded", [(8, (24, 32)), (16, (32, 32))])
def test_dynamic_degree_procedure(pad, padded):
    fake = _IndexFlow()
    frames = _index_frames(10, 21, 30)
    per_pair = dynamic_degree_per_pair(frames, 25.0, fake, pad_multiple=pad, batch_size=2)
    # 25 fps: every 3rd frame -> 0, 3, 6, 9 -> 3 pairs, each 3 grey levels apart.
    assert per_pair.tolist() == [3.0, 3.0, 3.0]
    assert [s[0] for s in fake.shapes] == [2, 1] and all(s[-2:] == padded for s in fake.shapes)
    assert dynamic_degree_score(frames, 8.0, _IndexFlow()) == 1.0  # 8 fps: all frames, step 1


def test_dynamic_degree_pad_multiple_changes_the_padded_size():
    a, b = _IndexFlow(), _IndexFlow()
    frames = _index_frames(3, 20, 20)
    dynamic_degree_per_pair(frames, 8, a, pad_multiple=8)
    dynamic_degree_per_pair(frames, 8, b, pad_multiple=16)
    assert a.shapes[0][-2:] == (24, 24) and b.shapes[0][-2:] == (32, 32)


def test_dynamic_degree_needs_two_sampled_frames():
    with pytest.raises(MetricUndefined, match="needs at least 2 sampled frames; 3 frame"):
        dynamic_degree_per_pair(_index_frames(3, 8, 8), 25.0, _IndexFlow())
    with pytest.raises(MetricUndefined, match="give 1"):
        dynamic_degree_per_pair(_index_frames(1, 8, 8), 8.0, _IndexFlow())


def test_vbench_boolean_by_hand():
    thres, count = vbench_thresholds(16, 240, 320)
    assert (thres, count) == (6 * 240 / 256, 4)
    assert dynamic_degree_vbench([6.0, 6.0, 6.0, 1.0], num_sampled=16, height=240, width=320) is False
    assert dynamic_degree_vbench([6.0, 6.0, 6.0, 6.0], num_sampled=16, height=240, width=320) is True
    assert dynamic_degree_vbench([5.625] * 4, num_sampled=16, height=240, width=320) is False  # strictly above
    # 2 sampled frames: round(0.5) == 0 pairs needed, so any pair counts; no pair -> False.
    assert vbench_thresholds(2, 240, 320)[1] == 0
    assert dynamic_degree_vbench([0.0], num_sampled=2, height=240, width=320) is True
    assert dynamic_degree_vbench([], num_sampled=1, height=240, width=320) is False
