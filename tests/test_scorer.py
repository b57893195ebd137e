"""The one scorer: same numbers as the formulas on the same encoders, missing inputs and short or
small videos give NaN with a reason, models load once, caches hold, shared work is done once."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

import benchmark.metrics as metrics_mod
import benchmark.scorer as scorer_mod
from benchmark.media import MediaError, read_video, write_video
from benchmark.metrics import default_metrics, output_columns, resolve_metrics
from benchmark.metrics.clip_t import clean_prompt
from benchmark.metrics.dynamic_degree import dynamic_degree_per_pair, dynamic_degree_vbench
from benchmark.metrics.motion_smoothness import motion_smoothness_score
from benchmark.metrics.temporal_flickering import temporal_flickering_score
from benchmark.scorer import Scorer, motion_reference_cache_file

ALL = [*default_metrics(), "dynamic_degree_vbench"]


@pytest.fixture(scope="module")
def scorer():
    return Scorer(ALL, random_weights=True, random_arch="small", pair_batch_size=3)


def _video(n=9, h=130, w=150, seed=0):
    """Smooth moving content (a shifted gradient plus noise), uint8 (n, h, w, 3)."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frames = [((np.stack([x * 1.3 + 4 * t, y * 1.7, (x + y) * 0.8 - 3 * t], -1) % 256) + g.normal(0, 4, (h, w, 3))) for t in range(n)]
    return torch.from_numpy(np.clip(frames, 0, 255).astype(np.uint8))


def _unit(x):
    x = x.double().numpy()
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_scores_equal_independent_computations(scorer):
    frames, refs = _video(), [_video(1, 100, 90, seed=5)[0], _video(1, 160, 120, seed=6)[0]]
    row = scorer.score(frames, 8.0, prompt="dog * playing guitar", ref_images=refs, dd_ref=2.5)
    enc = scorer._encoder
    laion = _unit(enc("clip_laion400m").encode_images(frames))
    laion_refs = _unit(enc("clip_laion400m").encode_images(refs))
    assert row["clip_i"] == pytest.approx((laion @ laion_refs.T).mean(), abs=1e-6)
    assert row["temporal_consistency"] == pytest.approx((laion[:-1] * laion[1:]).sum(1).mean(), abs=1e-6)
    dino, dino_refs = _unit(enc("dino_vits16").encode_images(frames)), _unit(enc("dino_vits16").encode_images(refs))
    assert row["dino_i"] == pytest.approx((dino @ dino_refs.T).mean(), abs=1e-6)
    text = _unit(enc("clip_openai").encode_text([clean_prompt("dog * playing guitar")]))
    assert clean_prompt("dog * playing guitar") == "dog playing guitar"
    assert row["clip_t"] == pytest.approx((_unit(enc("clip_openai").encode_images(frames)) @ text.T).mean(), abs=1e-6)
    assert row["temporal_flickering"] == temporal_flickering_score(frames)
    # Unbatched (one pair per call) gives the same values as the scorer's batches of 3.
    assert row["motion_smoothness"] == pytest.approx(motion_smoothness_score(frames, enc("amt_s"), batch_size=1), abs=1e-6)
    per_pair = dynamic_degree_per_pair(frames, 8.0, enc("raft_large"), batch_size=1)
    assert row["dynamic_degree"] == pytest.approx(float(per_pair.mean()), rel=1e-5)
    assert row["dynamic_degree_ref"] == 2.5 and row["dynamic_degree_delta"] == pytest.approx(row["dynamic_degree"] - 2.5)
    # VBench's boolean from the same flow magnitudes: 9 frames at 8 fps are all sampled.
    assert row["dynamic_degree_vbench"] == float(dynamic_degree_vbench(per_pair, num_sampled=9, height=130, width=150))
    assert (row["num_frames"], row["height"], row["width"], row["fps"], row["dd_interval"]) == (9, 130, 150, 8.0, 1)
    assert row["metric_notes"] == ""
    assert row["metric_random_weights"] is True
    assert [p.split("=")[0] for p in row["metric_weights"].split(";")] == ["clip_openai", "clip_laion400m", "dino_vits16", "raft_large", "amt_s"]
    assert all("random-small" in p for p in row["metric_weights"].split(";"))
    assert row["decoder"].startswith("pyav-")
    assert scorer.columns == output_columns(ALL) and list(row)[: len(scorer.columns)] == scorer.columns
    assert list(row)[len(scorer.columns):] == scorer.info_columns


def test_shared_work_is_done_once_per_video(scorer, monkeypatch):
    """One LAION-CLIP pass feeds CLIP-I and T-Cons; one RAFT pass feeds both dynamic-degree columns."""
    laion = scorer._encoder("clip_laion400m")
    batches = []
    original = laion.encode_images
    monkeypatch.setattr(laion, "encode_images", lambda imgs, **kw: batches.append(len(imgs)) or original(imgs, **kw))
    flows = []
    real = metrics_mod.dynamic_degree_per_pair
    monkeypatch.setattr(metrics_mod, "dynamic_degree_per_pair", lambda *a, **kw: flows.append(1) or real(*a, **kw))
    refs = [_video(1, 90, 90, seed=11)[0]]
    scorer.score(_video(5, seed=3), 8.0, ref_images=refs)
    assert batches == [5, 1] and flows == [1]  # frames once (the refs once, for CLIP-I), RAFT once


def test_missing_inputs_give_nan_with_a_reason(scorer):
    row = scorer.score(_video(), 8.0)
    for m in ("clip_t", "clip_i", "dino_i", "dynamic_degree_ref", "dynamic_degree_delta"):
        assert math.isnan(row[m]), m
    assert row["metric_notes"] == ("clip_t: no prompt; clip_i: no reference images; dino_i: no reference images; "
                                   "dynamic_degree_ref: no reference motion; dynamic_degree_delta: no reference motion")
    assert not math.isnan(row["temporal_flickering"]) and not math.isnan(row["dynamic_degree"])


def test_one_and_two_frame_videos(scorer):
    one = scorer.score(_video(1), 8.0, prompt="a cat", ref_images=[_video(1)[0]])
    for m in ("clip_t", "clip_i", "dino_i"):
        assert np.isfinite(one[m]), m
    for m in ("temporal_consistency", "temporal_flickering", "motion_smoothness", "dynamic_degree", "dynamic_degree_vbench"):
        assert math.isnan(one[m]), m
    assert "temporal_flickering: needs at least 2 frames, got 1" in one["metric_notes"]
    assert "motion_smoothness: needs at least 3 frames" in one["metric_notes"]
    two = scorer.score(_video(2), 8.0)
    for m in ("temporal_consistency", "temporal_flickering", "dynamic_degree"):
        assert np.isfinite(two[m]), m
    assert math.isnan(two["motion_smoothness"])
    # 2 frames at 25 fps: only frame 0 is sampled.
    assert "dynamic_degree: needs at least 2 sampled frames; 2 frame(s) at 25 fps (every 3) give 1" in scorer.score(_video(2), 25.0)["metric_notes"]


def test_small_and_odd_sizes(scorer):
    small = scorer.score(_video(5, 40, 50), 8.0)
    assert np.isfinite(small["temporal_flickering"]) and np.isfinite(small["temporal_consistency"])
    assert math.isnan(small["motion_smoothness"]) and math.isnan(small["dynamic_degree"])
    assert "smaller than AMT-S's minimum 128x128" in small["metric_notes"]
    assert "smaller than RAFT's minimum 128x128" in small["metric_notes"]
    odd = scorer.score(_video(5, 129, 131), 8.0)  # padded to 136x136 (RAFT) and 144x144 (AMT)
    assert np.isfinite(odd["motion_smoothness"]) and np.isfinite(odd["dynamic_degree"])


def test_grayscale_and_numpy_inputs(scorer):
    rgb = _video(4)
    gray = rgb[..., 0]
    expected = scorer.score(gray[..., None].expand(-1, -1, -1, 3).contiguous(), 8.0)
    for variant in (gray, gray[..., None], gray.numpy()):
        row = scorer.score(variant, 8.0)
        for m in ("temporal_flickering", "temporal_consistency", "motion_smoothness", "dynamic_degree"):
            assert row[m] == expected[m], m


def test_bad_frames_raise_media_error(scorer):
    with pytest.raises(MediaError, match="expected uint8"):
        scorer.score(_video(3).float(), 8.0)
    with pytest.raises(MediaError, match="empty video"):
        scorer.score(torch.zeros(0, 10, 10, 3, dtype=torch.uint8), 8.0)
    with pytest.raises(MediaError, match="fps must be a positive number"):
        scorer.score(_video(3), 0.0)


def test_only_requested_models_load_and_each_once():
    tf = Scorer(["temporal_flickering"], random_weights=True, random_arch="small")
    assert tf.provenance["metric_weights"] == "" and tf.provenance["metric_random_weights"] is False
    ms = Scorer(["motion_smoothness"], random_weights=True, random_arch="small")
    assert ms.provenance["metric_weights"].startswith("amt_s=random-small")
    again = Scorer(["motion_smoothness", "clip_i"], random_weights=True, random_arch="small")
    assert again._encoder("amt_s") is ms._encoder("amt_s")  # one load per process


def test_metric_names_are_checked():
    assert resolve_metrics("dynamic_degree, clip_t") == ["clip_t", "dynamic_degree"]  # table order
    with pytest.raises(ValueError, match=r"unknown metric 'clip_s' \(did you mean clip_t"):
        resolve_metrics(["clip_s"])
    with pytest.raises(ValueError, match="dynamic_degree_delta is computed with dynamic_degree"):
        Scorer(["dynamic_degree_delta"], random_weights=True)
    with pytest.raises(ValueError, match="mutually exclusive"):
        Scorer(["temporal_flickering"], random_weights=True, weights_dir=".")
    with pytest.raises(ValueError, match="dd_pad_multiple must be 8"):
        Scorer(["temporal_flickering"], dd_pad_multiple=4)


def test_reference_embeddings_are_cached(scorer, monkeypatch):
    enc = scorer._encoder("dino_vits16")
    calls = []
    original = enc.encode_images
    monkeypatch.setattr(enc, "encode_images", lambda imgs, **kw: calls.append(len(imgs)) or original(imgs, **kw))
    refs = [_video(1, 90, 90, seed=9)[0]]
    s = Scorer(["dino_i"], random_weights=True, random_arch="small")
    s.score(_video(3), 8.0, ref_images=refs)
    s.score(_video(4), 8.0, ref_images=[r.clone() for r in refs])  # same content, new tensors
    assert calls == [3, 1, 4]


def test_score_file_decodes_once(scorer, tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", _video(5), fps=8)
    calls = []
    monkeypatch.setattr(scorer_mod, "read_video", lambda p, **kw: calls.append(p) or read_video(p, **kw))
    row = scorer.score_file(path, prompt="a dog")
    frames, fps = read_video(path)
    expected = scorer.score(frames, fps, prompt="a dog")
    assert len(calls) == 1 and row["video"] == str(path)
    for m in ("clip_t", "temporal_flickering", "motion_smoothness", "dynamic_degree"):
        assert row[m] == expected[m]
    with pytest.raises(MediaError, match="empty file"):
        (tmp_path / "empty.mp4").touch()
        scorer.score_file(tmp_path / "empty.mp4")


def test_motion_reference_dd_is_cached_on_disk(scorer, tmp_path, monkeypatch):
    clips = [write_video(tmp_path / "walking" / f"ref{i}.mp4", _video(5, seed=i), fps=8) for i in range(2)]
    per_clip = [scorer.score_file(c)["dynamic_degree"] for c in clips]
    cached = Scorer(["dynamic_degree"], random_weights=True, cache_dir=tmp_path / "runs")
    assert cached.motion_reference_dd(clips, motion=tmp_path / "walking") == pytest.approx(np.mean(per_clip))
    # one rule for the file: <cache_dir>/motion_refs/<motion folder name>.json (the run loop's runs/ too)
    cache = motion_reference_cache_file(tmp_path / "runs", tmp_path / "walking")
    assert cache == tmp_path / "runs" / "motion_refs" / "walking.json"
    data = json.loads(cache.read_text())
    entry = data["clips"][str(clips[0].resolve())]
    assert entry["size"] == clips[0].stat().st_size and entry["settings"] == data["settings_key"]
    assert data["settings"]["pad_multiple"] == 16 and data["settings"]["raft"].startswith("random-small")  # the default

    flows = []  # RAFT passes over a reference clip
    real = metrics_mod.dynamic_degree_per_pair
    monkeypatch.setattr(metrics_mod, "dynamic_degree_per_pair", lambda *a, **kw: flows.append(1) or real(*a, **kw))
    # A fresh scorer reads the file (the motion folder defaults to the clips' common folder): no flow.
    fresh = Scorer(["dynamic_degree"], random_weights=True, cache_dir=tmp_path / "runs")
    assert fresh.motion_reference_dd(clips) == pytest.approx(np.mean(per_clip))
    assert flows == []
    # A changed file (mtime) is recomputed, alone.
    st = clips[1].stat()
    os.utime(clips[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh.motion_reference_dd(clips)
    assert len(flows) == 1
    # Other settings (VBench's padding) recompute every clip, once.
    other = Scorer(["dynamic_degree"], random_weights=True, dd_pad_multiple=8, cache_dir=tmp_path / "runs")
    other.motion_reference_dd(clips)
    assert len(flows) == 3
    other.motion_reference_dd(clips)
    assert len(flows) == 3
    assert json.loads(cache.read_text())["settings"]["pad_multiple"] == 8
    # Without a cache_dir the values are kept in memory only.
    memory = Scorer(["dynamic_degree"], random_weights=True)
    memory.motion_reference_dd(clips)
    memory.motion_reference_dd(clips)
    assert len(flows) == 5 and not (tmp_path / "motion_refs").exists()
    with pytest.raises(ValueError, match="no reference clip"):
        fresh.motion_reference_dd([])
