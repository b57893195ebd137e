"""Nothing silently wrong (issue 12): every example of the issue, as a test.

The command-line examples run ``python -m benchmark.cli`` in a subprocess and check the exit code,
the one-line message and that the other items still complete; faults are injected (a plugin method
whose training loss turns NaN at a chosen step, whose latents turn NaN, whose frames are black)
instead of waiting for a real divergence. docs/BAD_INPUT.md lists what each bad input gives.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.data import DataError, list_identity_images, read_text
from benchmark.grid import SAMPLE_DIR
from benchmark.media import (
    BLANK_STD,
    FROZEN_MAE,
    degenerate_note,
    gif_fps,
    read_video,
    write_video,
)
from benchmark.store import load_records
from conftest import moving_pattern
from dualreal.engine.errors import NonFiniteError, cause_line, check_finite

REPO = Path(__file__).resolve().parents[1]
DOG = SAMPLE_DIR / "identity" / "dog"
WALKING = SAMPLE_DIR / "motion" / "walking"


def _cli(*args: str, pythonpath: tuple[Path, ...] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m benchmark.cli ARGS`` from this worktree; never a traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (REPO, *pythonpath))), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


# ------------------------------------------------------------------------------------------------
# 2. Non-finite numbers fail the item, never become a video; degenerate videos are flagged
# ------------------------------------------------------------------------------------------------

FAULTY_PLUGIN = '''
"""Fault injection for tests/test_honest.py: one method, a fault per case name."""
import torch

import dualreal.engine.trainer as trainer
from baselines.cogvideox import generate_with_pipeline
from baselines.lora import LoRAMethod
from dualreal.engine.protocol import GeneratedVideo


class Faulty(LoRAMethod):
    """``nanloss``: real LoRA training whose extra loss is NaN at the 2nd step; ``nanframes``: the
    transformer's output turns NaN while sampling; ``blank``: all-black frames; else the backbone."""

    def fit(self, case, workdir, *, progress=None):
        self.case = case.name
        if case.name != "nanloss":
            return
        train = trainer.train

        def nan_at_step_2(*args, **kwargs):
            kwargs["extra_losses"] = {"injected": lambda ctx: ctx.model_output.sum() * float("nan") if ctx.step == 1 else None}
            return train(*args, **kwargs)

        trainer.train = nan_at_step_2
        try:
            super().fit(case, workdir, progress=progress)
        finally:
            trainer.train = train

    def generate(self, prompt, seed, settings):
        if self.case == "blank":
            g = settings.geometry(self.backbone)
            return GeneratedVideo(frames=torch.zeros(g["num_frames"], g["height"], g["width"], 3, dtype=torch.uint8),
                                  fps=settings.fps)
        hook = None
        if self.case == "nanframes":
            hook = self.backbone.transformer.register_forward_hook(lambda m, i, o: (o[0] * float("nan"), *o[1:]))
        try:
            frames = generate_with_pipeline(self.backbone.pipeline(), self.backbone, prompt, seed, settings)
        finally:
            if hook is not None:
                hook.remove()
        return GeneratedVideo(frames=frames, fps=settings.fps, extras={"prompt_used": prompt})
'''


def test_run_fails_diverged_items_and_flags_blank_videos_the_grid_goes_on(tmp_path):
    """NaN loss at training step 2 → that case fails with a record naming the step; NaN latents →
    that video fails and no mp4 is written; black frames → ok, flagged degenerate (run rows, the
    summary, the table); the good case completes, its prompt's cut for T5 noted; every row counts
    its reference images."""
    (tmp_path / "faulty_plugin.py").write_text(FAULTY_PLUGIN, encoding="utf-8")
    long_prompt = "dog * is walking along a very long beach " * 4  # > 96 byte tokens of the tiny backbone
    grid = tmp_path / "grid.yaml"
    grid.write_text("cases:\n" + "".join(
        f"  - {{name: {name}, identity: '{DOG}', motion: '{WALKING}', prompts: ['{prompt}']}}\n"
        for name, prompt in (("good", long_prompt), ("nanloss", "dog * walks"), ("nanframes", "dog * walks"),
                             ("blank", "dog * walks"))), encoding="utf-8")
    out = tmp_path / "runs"
    proc = _cli("run", "--method", "faulty_plugin:Faulty", "--grid", str(grid), "--out", str(out), "--steps", "1",
                "--train-steps", "2", "--metrics", "temporal_flickering", pythonpath=(tmp_path,))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "faulty_plugin:Faulty: 2 done, 0 already recorded, 2 failed, 1 degenerate (4 case(s))" in text, text
    recs = load_records(out).set_index("case")
    method_dir = out / "faulty_plugin.Faulty"

    assert recs.loc["good", "status"] == "ok" and np.isfinite(recs.loc["good", "temporal_flickering"])
    assert "T5 tokens at generation" in recs.loc["good", "prompt_note"]
    assert recs.loc["good", "degenerate"] == False  # noqa: E712 - a pandas value
    assert recs.loc["good", "num_ref_images"] == len(list_identity_images(DOG))

    err = recs.loc["nanloss", "error"]
    assert recs.loc["nanloss", "status"] == "failed" and "\n" not in err
    assert "the injected loss at training step 2 of 2 (identity batch) is nan" in err, err
    assert not (method_dir / "nanloss" / "checkpoint" / "identity" / "train_state.json").exists()

    err = recs.loc["nanframes", "error"]
    assert recs.loc["nanframes", "status"] == "failed" and "latents at denoising step 1 of 1" in err, err
    assert not (method_dir / "nanframes" / "videos" / "p000_s42.mp4").exists()

    assert recs.loc["blank", "status"] == "ok" and recs.loc["blank", "degenerate"] == True  # noqa: E712
    assert recs.loc["blank", "degenerate_note"].startswith("blank:")
    assert recs.loc["blank", "temporal_flickering"] == 1.0  # why the flag matters

    from benchmark.tables import render_table

    md = render_table(load_records(out), format="markdown", n_boot=0)
    assert "Flagged degenerate videos (in the means): faulty_plugin.Faulty 1 of 2" in md
    assert f"CLIP-I / DINO-I references per video: {len(list_identity_images(DOG))} image(s)" in md


def test_degenerate_rule():
    """Blank: every frame's pixel std < BLANK_STD; frozen: every frame within FROZEN_MAE of the first."""
    moving = moving_pattern(9, 32, 48)
    assert degenerate_note(moving) == ""
    black = torch.zeros(9, 32, 48, 3, dtype=torch.uint8)
    assert degenerate_note(black).startswith("blank:")
    noisy_grey = (torch.full((9, 32, 48, 3), 128.0) + torch.randn(9, 32, 48, 3) * (BLANK_STD * 0.6)).round().clamp(0, 255)
    assert degenerate_note(noisy_grey.to(torch.uint8)).startswith("blank:")  # a flat colour plus codec-like noise
    still = moving[:1].repeat(9, 1, 1, 1)
    assert degenerate_note(still).startswith("frozen:")
    wobble = still.clone()
    wobble[1::2] = (wobble[1::2].int() + 2).clamp(0, 255).to(torch.uint8)  # 2 grey levels: not frozen by the rule
    assert FROZEN_MAE < 2 and degenerate_note(wobble) == ""
    assert degenerate_note(moving[:1]) == ""  # one textured frame: neither


def test_nan_loss_stops_training_before_the_weights_move_and_writes_no_checkpoint(tmp_path):
    from dualreal.engine.trainer import TrainerConfig, train
    from test_trainer import Scripted, small_setup

    tr, model, sched = small_setup()
    params = list(model.adapters.parameters())
    seen = {}

    def injected(ctx):
        if ctx.step == 1:
            seen["before"] = [p.detach().clone() for p in params]
            return ctx.model_output.sum() * float("inf")
        return None

    cfg = TrainerConfig(train_steps=3, lr_warmup_steps=0, learning_rate=1e-2, description="probe")
    with pytest.raises(NonFiniteError, match=r"probe: the injected loss at training step 2 of 3 \(identity batch\) is inf"):
        train(tr, {"adapters": params}, Scripted(["identity"] * 3), noise_scheduler=sched, config=cfg, model=model,
              extra_losses={"injected": injected}, workdir=tmp_path / "ckpt", checkpoint_config={"x": 1})
    assert all(torch.equal(a, p.detach()) for a, p in zip(seen["before"], params))
    assert not (tmp_path / "ckpt" / "train_state.json").exists()


def test_non_finite_frames_never_become_uint8():
    from dualreal.engine.protocol import GeneratedVideo, frames_to_uint8

    x = torch.rand(3, 3, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"the generated frames hold 1 NaN and 0 infinite values of 576"):
        frames_to_uint8(x)
    with pytest.raises(NonFiniteError):
        GeneratedVideo(frames=x.permute(0, 2, 3, 1), fps=8)  # a plugin's float frames
    with pytest.raises(ValueError, match=r"must be uint8 \(F, H, W, 3\), got torch.float32 .*frames_to_uint8"):
        GeneratedVideo(frames=torch.rand(3, 8, 8, 3), fps=8)
    check_finite(torch.zeros(2, dtype=torch.uint8), "ints")  # not floating point: nothing to check


# ------------------------------------------------------------------------------------------------
# 6, 7, 9. eval: one reference rule, text files as saved, prompt notes, per-metric counts
# ------------------------------------------------------------------------------------------------


def test_eval_bom_prompts_refs_counts_notes_and_flags(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", moving_pattern(9, 64, 64))
    write_video(videos / "blank.mp4", torch.zeros(9, 64, 64, 3, dtype=torch.uint8))
    write_video(videos / "still.mp4", moving_pattern(1, 64, 64))  # one frame: T.Flickering undefined
    long_prompt = " ".join(["a dog * walking on the beach at dawn"] * 10)  # 369 characters
    prompts = tmp_path / "prompts.tsv"
    prompts.write_bytes(("\ufeffa.mp4\tdog * walking\r\nblank.mp4\t" + long_prompt + "\r\n").encode("utf-8"))
    refs = tmp_path / "dog"
    (refs / "images").mkdir(parents=True)
    rgb = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    for ext in ("png", "webp", "bmp"):  # the formats `run` uses too
        Image.fromarray(rgb).save(refs / "images" / f"ref.{ext}")
    out = tmp_path / "rows.csv"
    proc = _cli("eval", str(videos), "--prompts", str(prompts), "--refs", str(refs), "--metrics",
                "temporal_flickering,clip_t", "--random-weights", "--out", str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "prompts matched 2 of 3 videos" in text and "the others have no CLIP-T" in text
    assert "CLIP-I / DINO-I references: 3 image(s) per video" in text
    assert "1 of 3 video(s) flagged degenerate" in text and "blank.mp4: blank:" in text
    assert "(n=2)" in text  # T.Flickering's mean covers 2 of the 3 ok videos
    rows = pd.read_csv(out).set_index(pd.read_csv(out)["video"].map(lambda v: Path(v).name))
    assert rows.loc["a.mp4", "prompt"] == "dog * walking"  # the BOM did not swallow the first name
    assert len(list_identity_images(refs)) == 3 and (rows["num_ref_images"] == 3).all()
    assert bool(rows.loc["blank.mp4", "degenerate"]) and not bool(rows.loc["a.mp4", "degenerate"])
    assert f"prompt cut to 300 of its {len(long_prompt)} characters" in rows.loc["blank.mp4", "metric_notes"]


def test_eval_names_file_and_line_of_a_bad_prompt_file(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(3, 32, 32))
    prompts = tmp_path / "prompts.tsv"
    prompts.write_bytes("a.mp4\tdog\nb.mp4\tcaf\u00e9 dog\n".encode("latin-1"))
    proc = _cli("eval", str(tmp_path / "a.mp4"), "--prompts", str(prompts), "--metrics", "temporal_flickering",
                "--random-weights")
    assert proc.returncode == 2
    line = f"{prompts}: not UTF-8 at line 2, column 10 (byte 0xe9); save it as UTF-8"
    assert line in " ".join(proc.stderr.split()), proc.stderr


def test_read_text_bom_and_encoding_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbfname\tprompt\n")
    assert read_text(f) == "name\tprompt\n"
    f.write_bytes(b"ok\nok\n\xff\n")
    with pytest.raises(DataError, match=r"p\.txt: not UTF-8 at line 3, column 1 \(byte 0xff\)"):
        read_text(f)


def test_clip_t_note_for_a_prompt_cut_to_77_tokens():
    from benchmark.scorer import Scorer

    scorer = Scorer(["clip_t"], random_weights=True)
    frames = moving_pattern(2, 32, 32)
    words = " ".join(["dog,"] * 60)  # 299 characters, 120 BPE tokens + start and end
    row = scorer.score(frames, 8, prompt=words)
    assert row["metric_notes"] == "clip_t: prompt cut to 77 of its 122 CLIP tokens" and np.isfinite(row["clip_t"])
    assert scorer.score(frames, 8, prompt="a dog")["metric_notes"] == ""


def test_table_shows_per_metric_counts_when_they_differ():
    from benchmark.tables import aggregate, build_table, render

    recs = pd.DataFrame([
        {"method": "a", "case": "c1", "status": "ok", "temporal_flickering": 0.9, "clip_t": 0.30},
        {"method": "a", "case": "c1", "status": "ok", "temporal_flickering": float("nan"), "clip_t": 0.32},
        {"method": "a", "case": "c2", "status": "ok", "temporal_flickering": 0.8, "clip_t": 0.31},
    ])
    agg = aggregate(recs, n_boot=0)
    assert agg.loc[0, "temporal_flickering_videos"] == 2 and agg.loc[0, "clip_t_videos"] == 3
    md = render(build_table(agg, n_boot=0), "markdown")
    assert "0.850 [n=2]" in md and "0.310 [n=" not in md
    assert "[n=…]: the videos a mean covers" in md


# ------------------------------------------------------------------------------------------------
# 8. Errors keep their cause; allow-listed checkpoint metadata loads weights-only
# ------------------------------------------------------------------------------------------------


def test_cause_line_keeps_the_cause_whole_without_escapes():
    torch_like = ("Weights only load failed. This file can still be loaded, to do so you have two options, "
                  "\x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch "
                  "2.6, we changed the default ...\n\tWeightsUnpickler error: Unsupported global: GLOBAL builtins.print "
                  "was not an allowed global by default. Please use `torch.serialization.add_safe_globals([print])` "
                  "to allowlist this global if you trust this class/function.\n\nCheck the documentation of torch.load")
    line = cause_line(RuntimeError(torch_like))
    assert line.startswith("RuntimeError: Unsupported global: GLOBAL builtins.print was not an allowed global")
    assert line.endswith("if you trust this class/function.") and "\x1b" not in line and "\n" not in line
    assert cause_line(ValueError("\x1b[31mred\x1b[0m  text")) == "ValueError: red text"
    intro = RuntimeError('Error(s) in loading state_dict for M:\n\tMissing key(s) in state_dict: "w".')
    assert cause_line(intro) == 'RuntimeError: Error(s) in loading state_dict for M: Missing key(s) in state_dict: "w".'
    try:
        try:
            raise KeyError("lora_B")
        except KeyError as inner:
            raise ValueError("bad file") from inner
    except ValueError as exc:
        assert cause_line(exc) == "ValueError: bad file ← KeyError: 'lora_B'"


def test_checkpoint_with_numpy_metadata_loads_and_a_refused_one_names_file_and_cause(tmp_path):
    from benchmark.encoders.base import EncoderWeightsError, read_state_dict

    good = tmp_path / "amt-s.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": np.float64(3.0), "best": np.array([1.5]),
                "dtype": np.dtype("float32")}, good)
    assert torch.equal(read_state_dict(good)["w"], torch.ones(2))
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": print}, bad)
    with pytest.raises(EncoderWeightsError) as info:
        read_state_dict(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: cannot be read as a weights-only checkpoint (UnpicklingError: Unsupported global")
    assert "print" in msg and msg.endswith("this class/function.)") and "\x1b" not in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------
# 10. The report shows what the table shows; plots start at zero or state their axis
# ------------------------------------------------------------------------------------------------


def _records(tmp_path: Path, rows: list[dict]) -> Path:
    from benchmark.store import write_record

    runs = tmp_path / "runs"
    for r in rows:
        write_record(runs, {"prompt_index": 0, "seed": 42, "status": "ok", "prompt": "dog *", **r})
    return runs


def test_report_always_has_table_1(tmp_path):
    from benchmark.report import build_report

    runs = _records(tmp_path, [{"method": "dualreal", "case": "c1", "clip_i": 0.9446}])
    page = build_report(runs, tmp_path / "report", posters=False).read_text(encoding="utf-8")
    assert page.count('<table class="results">') == 1 and "<caption>Table 1" in page


def test_metric_panels_start_at_zero_or_state_their_axis(tmp_path):
    from benchmark.metrics import METRICS
    from benchmark.plots import metric_axis, plot_metric_bars
    from benchmark.tables import aggregate

    nan = np.full(2, np.nan)
    assert metric_axis(np.array([0.30, 0.50]), nan, nan, METRICS["clip_i"]) is None  # bars from zero
    axis = metric_axis(np.array([0.9446, 0.9454]), nan, nan, METRICS["clip_i"])
    assert axis is not None and axis[0] > 0.94 and axis[1] < 0.95
    assert metric_axis(np.array([0.20, 0.9454]), nan, nan, METRICS["clip_i"]) is None
    runs = _records(tmp_path, [{"method": "a", "case": "c1", "clip_i": 0.9446}, {"method": "b", "case": "c1", "clip_i": 0.9454}])
    files = plot_metric_bars(aggregate(load_records(runs), n_boot=0), tmp_path / "plots")
    svg = next(f for f in files if f.suffix == ".svg").read_text(encoding="utf-8")
    assert f"points; axis {axis[0]:.4f}–{axis[1]:.4f}, not from 0" in svg


# ------------------------------------------------------------------------------------------------
# 11. GIF timing as browsers play it
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms, fps", [(0, 10.0), (10, 10.0), (20, 50.0), (100, 10.0)])
def test_gif_delays_under_2_cs_play_as_10_cs(tmp_path, delay_ms, fps):
    ims = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(5)]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=delay_ms, loop=0)
    path = tmp_path / "t.gif"
    path.write_bytes(buf.getvalue())
    assert read_video(path)[1] == pytest.approx(fps)


def test_gif_fps_mixed_delays():
    assert gif_fps([0.01, 0.05, None, 0.2, 0.03]) == pytest.approx(5 / 0.48)


# ------------------------------------------------------------------------------------------------
# 12. Say what was skipped: cases locked by another run
# ------------------------------------------------------------------------------------------------


def test_score_waits_for_a_locked_case_and_says_so(tmp_path):
    """Case ``held`` is locked by "another run" (this test); ``score`` does the other case first,
    names the locked one and its holder, waits, and counts what the other run recorded."""
    from benchmark.media import file_sha256

    grid = tmp_path / "grid.yaml"
    grid.write_text("cases:\n" + "".join(
        f"  - {{name: {n}, identity: '{DOG}', motion: '{WALKING}', prompts: ['dog * walks']}}\n" for n in ("held", "free")),
        encoding="utf-8")
    videos = tmp_path / "videos"
    write_video(videos / "held" / "p000_s42.mp4", moving_pattern(9, 128, 192), lossless=True)
    write_video(videos / "free" / "p000_s42.mp4", torch.zeros(9, 128, 192, 3, dtype=torch.uint8), lossless=True)
    out = tmp_path / "runs"
    case_dir = out / "mine" / "held"
    case_dir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    with open(case_dir / ".lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since now (the test)\n")
        lock.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmark.cli", "score", str(videos), "--method", "mine", "--grid", str(grid),
             "--backbone", "tiny", "--metrics", "temporal_flickering", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        seen, deadline = [], time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "locked by another run" in line:
                break
        assert any("locked by another run" in ln for ln in seen), "".join(seen)
        # "the other run" records its video, then lets go
        from benchmark.store import write_record

        write_record(out, {"method": "mine", "case": "held", "prompt_index": 0, "seed": 42, "status": "ok",
                           "provenance": "external", "video_sha256": file_sha256(videos / "held" / "p000_s42.mp4")})
        fcntl.flock(lock, fcntl.LOCK_UN)
    stdout, stderr = proc.communicate(timeout=240)
    text = "".join(seen) + stdout + stderr
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    flat = " ".join(text.split())
    assert f"held: locked by another run into {out} (pid {os.getpid()} on {socket.gethostname()}" in flat
    assert ("mine: 1 scored, 0 already recorded, 1 recorded by another run while this one waited for 1 locked "
            "case(s), 0 missing, 0 failed, 0 flagged, 1 degenerate (2 case(s)") in flat, flat
    free = json.loads((out / "mine" / "free" / "records" / "p000_s42.json").read_text())
    assert free["status"] == "ok" and free["degenerate"] is True  # score rows are flagged too
