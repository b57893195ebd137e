"""Parity with VBench's own temporal-flickering, motion-smoothness and dynamic-degree code.

The functions come from the ``vbench`` wheel (installed ``--no-deps``). Its modules import packages
this project does not install (decord, omegaconf, imageio, easydict, scipy) at top level for code
paths these tests never reach; empty stand-ins are put in ``sys.modules`` for the duration of the
import only, and only for packages that are really missing. VBench's functions then run on the same
real UCF101 clip and with the same (random) weights as ours.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.encoders import build_random_model, load_encoder, raft_torchvision_to_original, vbench_module
from benchmark.media import read_video
from benchmark.metrics.dynamic_degree import dynamic_degree_per_pair, dynamic_degree_vbench, sample_frames, sample_interval
from benchmark.metrics.motion_smoothness import motion_smoothness_score
from benchmark.metrics.temporal_flickering import temporal_flickering_per_pair, temporal_flickering_score

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "samples" / "dualreal-official" / "motion" / "playingGuitar" / "videos"



_STANDINS = {
    "decord": {"VideoReader": None, "cpu": None},
    "omegaconf": {"OmegaConf": None},
    "imageio": {"imread": None, "imwrite": None},
    "easydict": {"EasyDict": dict},
    "scipy": {},
}


@pytest.fixture(scope="module")
def vb():
    """VBench's temporal_flickering, motion_smoothness and dynamic_degree modules."""
    with pytest.MonkeyPatch.context() as mp:
        for name, attrs in _STANDINS.items():
            if importlib.util.find_spec(name) is None:
                mod = types.ModuleType(name)
                for k, v in attrs.items():
                    setattr(mod, k, v)
                mp.setitem(sys.modules, name, mod)
                if name == "scipy":
                    sub = types.ModuleType("scipy.interpolate")
                    mod.interpolate = sub
                    mp.setitem(sys.modules, "scipy.interpolate", sub)
        mods = types.SimpleNamespace(
            tf=vbench_module("vbench.temporal_flickering"),
            ms=vbench_module("vbench.motion_smoothness"),
            dd=vbench_module("vbench.dynamic_degree"),
        )
    return mods


class _Args(dict):
    """VBench reads its RAFT options as attributes (an EasyDict)."""

    __getattr__ = dict.__getitem__


def _clip(i: int) -> Path:
    clips = sorted(CLIPS.glob("*.avi"))
    assert len(clips) == 15, f"expected the 15 playingGuitar clips in {CLIPS}"
    return clips[i]


def test_temporal_flickering_parity(vb):
    path = _clip(0)
    frames, _ = read_video(path)
    # Same frames: VBench's per-pair MAE (float32 cv2.absdiff + np.mean) vs ours (exact integers).
    theirs = vb.tf.mae_seq([f.numpy() for f in frames])
    np.testing.assert_allclose(temporal_flickering_per_pair(frames).numpy(), theirs, rtol=2e-6)
    # VBench end to end, decoding the file with OpenCV itself.
    assert temporal_flickering_score(frames) == pytest.approx(vb.tf.cal_score(str(path)), abs=1e-6)


def test_motion_smoothness_parity(vb, tmp_path):
    frames, _ = read_video(_clip(1), max_frames=5)
    frames = frames[:, 50:180, 80:245].contiguous()  # a real 130x165 crop: padded to 144x176
    amt = load_encoder("amt_s", random_weights=True)
    ours = motion_smoothness_score(frames, amt, batch_size=4)

    # VBench's MotionSmoothness with the same network object, on the same frames as PNGs
    # (lossless); its __init__ would read a YAML config and unpickle a checkpoint, so build it bare.
    for i, f in enumerate(frames):
        Image.fromarray(f.numpy()).save(tmp_path / f"{i:03d}.png")
    ms = object.__new__(vb.ms.MotionSmoothness)
    ms.device, ms.niters = "cpu", 1
    ms.initialization()
    ms.model = amt.model
    theirs = ms.motion_score(str(tmp_path))
    assert ours == pytest.approx(theirs, abs=1e-6)  # a NaN prediction would have raised MetricUndefined


def test_dynamic_degree_parity(vb, tmp_path):
    frames, fps = read_video(_clip(2), max_frames=7)
    frames = frames[:, 40:170, 60:225].contiguous()  # a real 130x165 crop: padded to 136x168
    h, w = frames.shape[1:3]
    tv = build_random_model("raft_large", "full").eval()

    # VBench's DynamicDegree loads the original-layout checkpoint with its own loader and RAFT.
    ckpt = tmp_path / "raft-things.pth"
    torch.save(raft_torchvision_to_original(tv.state_dict()), ckpt)
    args = _Args(model=str(ckpt), small=False, mixed_precision=False, alternate_corr=False)
    dd = vb.dd.DynamicDegree(args, "cpu")
    as_vbench = [f.permute(2, 0, 1).float()[None] for f in frames]
    sampled = dd.extract_frame(as_vbench, interval=max(1, round(fps / 8)))
    dd.get_frames = lambda _path: sampled  # VBench's reader would use OpenCV on an .mp4
    scores = []
    get_score = dd.get_score
    dd.get_score = lambda img, flo: scores.append(get_score(img, flo)) or scores[-1]
    moved = dd.infer("clip.mp4")

    raft = load_encoder("raft_large", random_weights=True)
    ours = dynamic_degree_per_pair(frames, fps, raft, pad_multiple=8, batch_size=2)
    assert sample_interval(fps) == 3 and len(scores) == 2 == ours.numel()
    np.testing.assert_allclose(ours.numpy(), scores, rtol=1e-4)
    n_sampled = sample_frames(frames, fps).shape[0]
    assert dynamic_degree_vbench(ours, num_sampled=n_sampled, height=h, width=w) == moved
