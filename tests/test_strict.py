"""Strict checkpoints and training clips by a stated rule (issue 12, items 3 and 5).

Checkpoints: a truncated safetensors file, a missing key, an unexpected key or a mis-shaped tensor is
one :class:`~dualreal.engine.trainer.CheckpointError` naming the file and the keys — for DualReal,
every baseline and the LoRA files, on a fresh fit and on the reuse of a finished checkpoint — and a
``failed`` record of that case in ``dualbench run`` while the other cases complete.

Training clips: the first N frames at the source frame rate, a shorter clip padded with its last
frame up to N (docs/METHOD.md, §3.2); the padding is recorded per clip.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from _baselines_support import tiny_case
from benchmark.grid import SAMPLE_DIR
from benchmark.store import load_records
from dualreal.engine.trainer import CaseBatchSource, CheckpointError, conform_clip, encode_case, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
DOG = SAMPLE_DIR / "identity" / "dog"
WALKING = SAMPLE_DIR / "motion" / "walking"


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m benchmark.cli ARGS`` from this worktree; never a traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def _rewrite(path: Path, edit) -> None:
    """Rewrite a safetensors file with ``edit(tensors)`` applied (its metadata kept)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])  # the tensor data cut short, the header intact


# ------------------------------------------------------------------------------------------------
# 3. Strict checkpoints
# ------------------------------------------------------------------------------------------------


def test_read_checkpoint_names_the_file_counts_and_lists_the_keys(tmp_path):
    path = tmp_path / "adapters.safetensors"
    expected = {f"blocks.{i}.w": (2, 3) for i in range(5)} | {"head": (4,)}
    save_file({"blocks.0.w": torch.zeros(2, 3), "head": torch.zeros(5), "extra": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path, expected)
    assert str(err.value) == (
        f"{path}: missing 4 keys (blocks.1.w, blocks.2.w, blocks.3.w, … 1 more), unexpected 1 (extra), "
        "1 of another shape (head: file (5,), model (4,))"
    )
    # a partial checkpoint by design: only unexpected and mis-shaped keys count
    with pytest.raises(CheckpointError, match=r"adapters\.safetensors: unexpected 1 \(extra\), 1 of another shape"):
        read_checkpoint(path, expected, allow_missing=True)
    good = {"blocks.0.w": (2, 3), "head": (5,), "extra": (1,)}
    assert set(read_checkpoint(path, good)) == set(good)

    _truncate(path)
    with pytest.raises(CheckpointError, match=r"adapters\.safetensors: not a readable safetensors file "
                                              r"\(.*incomplete metadata, file not fully covered\)$"):
        read_checkpoint(path, expected)
    with pytest.raises(CheckpointError, match="nope.safetensors: file not found"):
        read_checkpoint(tmp_path / "nope.safetensors")


METHODS = {
    # name: (class, options, the weight file of the finished checkpoint, a key to drop)
    "dualreal": ("dualreal.method:DualRealMethod", {}, "weights.safetensors", "controller."),
    "lora-joint": ("baselines.lora:LoRAMethod", {"rank": 4, "combine": "joint"},
                   "joint/pytorch_lora_weights.safetensors", ".lora_B."),
    "lora": ("baselines.lora:LoRAMethod", {"rank": 4}, "motion/pytorch_lora_weights.safetensors", ".lora_B."),
    "dreamvideo": ("baselines.dreamvideo:DreamVideoMethod", {}, "motion/weights.safetensors", "motion"),
    "motionbooth": ("baselines.motionbooth:MotionBoothMethod", {"mask_source": "ones"}, "weights.safetensors", "attn1"),
}


def _method(name: str, backbone):
    target, options, _, _ = METHODS[name]
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)(backbone, train_steps=1, train_frames=5, **options)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_damaged_finished_checkpoint_is_refused_naming_file_and_keys(tiny_backbone, tmp_path, name):
    """Train once (1 step), then damage the finished checkpoint three ways: each refit names the
    file and the keys, and says to delete the folder; nothing loads half."""
    workdir = tmp_path / "ckpt"
    _method(name, tiny_backbone).fit(tiny_case(), workdir)
    path = workdir / METHODS[name][2]
    assert path.is_file()
    pristine = path.read_bytes()
    drop = METHODS[name][3]

    def refit_error() -> str:
        with pytest.raises(CheckpointError) as err:
            _method(name, tiny_backbone).fit(tiny_case(), workdir)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        assert msg.endswith(f"the finished checkpoint in {path.parent} cannot be reused: delete the folder to retrain"), msg
        return msg

    dropped = []
    _rewrite(path, lambda t: dropped.append(next(k for k in sorted(t) if drop in k)) or t.pop(dropped[0]))
    msg = refit_error()
    assert f"missing 1 key ({dropped[0]})" in msg, msg

    path.write_bytes(pristine)
    _rewrite(path, lambda t: t.update({"stray.weight": torch.zeros(2)}))
    assert "unexpected 1 (stray.weight)" in refit_error()

    path.write_bytes(pristine)
    key = []
    _rewrite(path, lambda t: key.append(sorted(t)[0]) or t.update({key[0]: torch.zeros(3, 3)}))
    assert f"1 of another shape ({key[0]}: file (3, 3), model (" in refit_error()

    path.write_bytes(pristine)
    _truncate(path)
    assert "not a readable safetensors file (" in refit_error()

    path.write_bytes(pristine)
    _method(name, tiny_backbone).fit(tiny_case(), workdir)  # the intact checkpoint is reused


def _motion_folder(root: Path, lengths: tuple[int, ...]) -> Path:
    """A motion folder (videos/ + videos.txt + prompts.txt) with one 8-fps clip per length."""
    from benchmark.media import write_video
    from conftest import moving_pattern

    (root / "videos").mkdir(parents=True)
    names = [f"clip_{n}f.mp4" for n in lengths]
    for name, n in zip(names, lengths):
        write_video(root / "videos" / name, moving_pattern(n, 64, 96), fps=8)
    (root / "videos.txt").write_text("".join(f"videos/{n}\n" for n in names), encoding="utf-8")
    (root / "prompts.txt").write_text("a dog is walking\n" * len(names), encoding="utf-8")
    return root


def test_run_fails_a_damaged_checkpoint_goes_on_and_records_padded_clips(tmp_path):
    """``dualbench run``: case ``a`` trained earlier, its LoRA file then loses a ``lora_B``; the next
    run over the grid records ``a`` failed with the file and key named, and trains and completes
    ``b`` — whose 5-frame clip is padded to the 9 training frames (one log line; per clip in the
    records), its 12-frame clip cut to 9, ``config.json`` saying 9."""
    short = _motion_folder(tmp_path / "short", (5, 12))
    grid = tmp_path / "grid.yaml"
    grid.write_text("cases:\n" + "".join(
        f"  - {{name: {name}, identity: '{DOG}', motion: '{motion}', prompts: ['dog * walks']}}\n"
        for name, motion in (("a", WALKING), ("b", short))), encoding="utf-8")
    out = tmp_path / "runs"
    common = ("run", "--method", "lora-joint", "--grid", str(grid), "--out", str(out), "--steps", "1",
              "--train-steps", "1", "--no-score", "--method-option", "rank=4")
    assert _cli(*common, "--cases", "a").returncode == 0
    lora = out / "lora-joint" / "a" / "checkpoint" / "joint" / "pytorch_lora_weights.safetensors"
    dropped = []
    _rewrite(lora, lambda t: dropped.append(next(k for k in sorted(t) if ".lora_B." in k)) or t.pop(dropped[0]))
    for video in (out / "lora-joint" / "a").rglob("*.json"):
        if "checkpoint" not in video.parts:
            video.unlink()  # forget a's records: the next run produces them again from the checkpoint

    proc = _cli(*common)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "1 done, 0 already recorded, 1 failed (2 case(s))" in text, text
    recs = load_records(out).set_index("case")
    err = recs.loc["a", "error"]
    assert recs.loc["a", "status"] == "failed" and "\n" not in err
    assert err.startswith(f"a: CheckpointError: {lora}: missing 1 key ({dropped[0]}); "), err
    assert err.endswith("cannot be reused: delete the folder to retrain"), err

    assert recs.loc["b", "status"] == "ok"
    notes = [line for line in text.splitlines() if "padded with their last frame" in line]
    assert len(notes) == 1 and "b: 1 of 2 training clips shorter than 9 frames, padded with their last frame: " in notes[0], text
    assert "clip_5f.mp4 (5 real)" in notes[0] and "clip_12f" not in notes[0], notes
    clips = recs.loc["b", "training_clips"]
    assert [(Path(c["clip"]).name, c["source_fps"], c["stride"], c["source_frames"], c["frames_used"], c["frames_padded"])
            for c in clips] == [("clip_5f.mp4", 8.0, 1, 5, 5, 4), ("clip_12f.mp4", 8.0, 1, 12, 9, 0)]
    saved = json.loads((out / "lora-joint" / "b" / "checkpoint" / "joint" / "config.json").read_text())
    assert saved["train_frames"] == 9


# ------------------------------------------------------------------------------------------------
# 5. Training clips by a stated rule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 9, 13])
def test_conform_clip_takes_the_first_frames_and_pads_with_the_last(n):
    frames = torch.randint(0, 256, (n, 4, 6, 3), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    clip, padded = conform_clip(frames, 9)
    # independent: frame i of the training clip is source frame min(i, n - 1)
    expected = torch.stack([frames[min(i, n - 1)] for i in range(9)])
    assert clip.shape == (9, 4, 6, 3) and padded == max(0, 9 - n)
    assert torch.equal(clip, expected)
    with pytest.raises(ValueError, match="at least 2 frames .one frame holds no motion., got 1"):
        conform_clip(frames[:1], 9)


def test_one_short_clip_trains_every_clip_at_the_configured_count(tiny_backbone):
    """A case with a 5-frame and a 13-frame clip, 9 training frames: both reach the trainer with
    9 frames (3 latent frames); the short one is the VAE encoding of the clip padded by hand."""
    g = torch.Generator().manual_seed(1)
    short, long = (torch.randint(0, 256, (n, 64, 96, 3), generator=g, dtype=torch.uint8) for n in (5, 13))
    encoded = encode_case(tiny_backbone, tiny_case(motion_clips=[short, long]), num_frames=9)
    assert encoded.num_frames == 9 and encoded.frames_padded == [4, 0]
    assert [tuple(p.shape[2:3]) for p in encoded.motion_latents] == [(3,), (3,)]
    batch = CaseBatchSource(encoded, motion_ratio=1.0, motion_batch_size=2, condition=False).next_batch(
        "motion", torch.Generator().manual_seed(0))
    assert batch.latents.shape[:2] == (2, 3)  # (B, F_lat, …): what the trainer's forward gets

    by_hand = torch.cat([short, short[4:5].repeat(4, 1, 1, 1)])  # the last frame four more times
    pixels = by_hand.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1.0
    with torch.no_grad():
        want = tiny_backbone.vae.encode(pixels).latent_dist.parameters.float()
    torch.testing.assert_close(encoded.motion_latents[0], want)
