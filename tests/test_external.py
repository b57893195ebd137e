"""Bring your own method (docs/EXTERNAL.md): the generation manifest, `dualbench score` of videos made
outside the run loop, and the round trip manifest → external generation → score = `dualbench run`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.data import list_identity_images, load_motion
from benchmark.external import Geometry, ScoreConfig, manifest_rows, score, write_manifest
from benchmark.grid import load_grid
from benchmark.media import file_sha256, frames_sha256, read_video, write_video
from benchmark.metrics import metric_columns
from benchmark.store import load_records, write_record
from benchmark.tables import aggregate, render_table
from conftest import moving_pattern

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result, result.output


# ------------------------------------------------------------------------------------------------
# the manifest
# ------------------------------------------------------------------------------------------------


def test_manifest_of_dualreal50_lists_2500_videos_for_50_cases(tmp_path, dualreal_bench):
    out = tmp_path / "todo.csv"
    result, text = _invoke("manifest", "--grid", "dualreal50", "--data-root", dualreal_bench, "--out", out)
    assert result.exit_code == 0, text
    assert "2500 videos for 50 cases (49 frames, 480×720, 8 fps)" in text
    df = pd.read_csv(out)
    assert len(df) == 2500 and df["case"].nunique() == 50 and df.groupby("case").size().eq(50).all()
    assert (df["seed"] == 42).all() and set(df["prompt_index"]) == set(range(50))
    assert (df[["num_frames", "height", "width", "fps"]] == [49, 480, 720, 8]).all().all()
    assert df["video"].tolist() == [f"{c}/p{i:03d}_s42.mp4" for c, i in zip(df["case"], df["prompt_index"])]
    # prompts as the identity's eval_prompts.txt has them (with *), and the class word
    cases = {c.name: c for c in load_grid("dualreal50", dualreal_bench)}
    first = df.iloc[0]
    case = cases[first["case"]]
    assert first["prompt"] == case.prompts[0] and "*" in first["prompt"] and first["class_word"] == case.class_word
    # lists are JSON arrays, relative to the data root, the same files scoring uses
    refs = json.loads(first["reference_images"])
    assert refs == [p.relative_to(dualreal_bench).as_posix() for p in list_identity_images(case.identity)]
    clips = json.loads(first["motion_clips"])
    assert [dualreal_bench / c for c in clips] == load_motion(case.motion).clips
    assert first["ref_image"] == case.ref_image.relative_to(dualreal_bench).as_posix()
    assert (dualreal_bench / first["identity_folder"]).is_dir() and (dualreal_bench / first["motion_folder"]).is_dir()


def test_manifest_filters_geometry_and_formats(tmp_path, dualreal_bench):
    out = tmp_path / "todo.json"
    result, text = _invoke("manifest", "--grid", "dualreal50", "--data-root", dualreal_bench, "--cases", "cat*",
                           "--max-cases", "2", "--max-prompts", "3", "--seeds", "1,7", "--frames", "25",
                           "--height", "240", "--width", "360", "--fps", "16", "--out", out)
    assert result.exit_code == 0, text
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * 3 * 2 and all(r["case"].startswith("cat") for r in rows)
    assert {(r["num_frames"], r["height"], r["width"], r["fps"]) for r in rows} == {(25, 240, 360, 16)}
    assert [r["video"].split("/")[1] for r in rows[:6]] == [f"p{i:03d}_s{s}.mp4" for i in range(3) for s in (1, 7)]
    assert isinstance(rows[0]["reference_images"], list)
    # the tiny backbone's geometry; paths outside any data root are absolute
    rows = manifest_rows(load_grid("smoke"), Geometry.for_backbone("tiny"))
    assert {(r["num_frames"], r["height"], r["width"], r["fps"]) for r in rows} == {(9, 128, 192, 8)}
    assert Path(rows[0]["identity_folder"]).is_absolute()
    with pytest.raises(ValueError, match=r"unknown manifest format \.txt; use one of \.csv, \.json"):
        write_manifest(rows, tmp_path / "todo.txt")
    with pytest.raises(ValueError, match="num_frames must be a positive integer, got 0"):
        Geometry.for_backbone("tiny", num_frames=0)
    result, text = _invoke("manifest", "--grid", "smoke", "--out", tmp_path / "todo.parquet")
    assert result.exit_code == 2 and "use one of .csv, .json" in text


# ------------------------------------------------------------------------------------------------
# score: missing, unexpected, flagged, failed, resume, names, sharding
# ------------------------------------------------------------------------------------------------


def _grid(tmp_path: Path, make_identity, make_motion, n_cases: int = 1, n_prompts: int = 3) -> Path:
    ident = make_identity("dog", n=2)
    motion = make_motion("walking", n=1)
    lines = ["cases:"]
    for c in range(n_cases):
        lines += [f"  - name: case{c}", f"    identity: {ident}", f"    motion: {motion}", "    prompts:",
                  *[f"      - dog * is walking {p}" for p in range(n_prompts)]]
    path = tmp_path / "grid.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cfg(tmp_path: Path, grid: Path, **kw) -> ScoreConfig:
    # geometry of the synthetic videos: 9 frames of 32×48 at 8 fps
    base = dict(method="mine", videos=tmp_path / "videos", grid=str(grid), out=tmp_path / "runs", backbone="tiny",
                num_frames=9, height=32, width=48, metrics=["temporal_flickering"])
    return ScoreConfig(**{**base, **kw})


def test_score_records_missing_unexpected_flagged_and_failed_videos(tmp_path, make_identity, make_motion):
    grid = _grid(tmp_path, make_identity, make_motion, n_prompts=5)
    videos = tmp_path / "videos"
    good = moving_pattern(9, 32, 48)
    write_video(videos / "case0" / "p000_s42.mp4", good, fps=8, lossless=True)
    write_video(videos / "case0" / "p001_s42.mp4", moving_pattern(5, 32, 48), fps=8, lossless=True)  # too short
    write_video(videos / "case0" / "p002_s42.mkv", good, fps=8, lossless=True)  # another container, same stem
    (videos / "case0" / "p004_s42.mp4").write_text("not a video")
    (videos / "case0" / "notes.txt").write_text("hello")
    write_video(videos / "elsewhere" / "p000_s42.mp4", good, fps=8)
    result = score(_cfg(tmp_path, grid), log=lambda m: None)
    s = result.summary
    assert (s.done, s.missing, s.failed, s.skipped) == (3, 1, 1, 0)
    assert s.missing_videos == [f"{videos / 'case0' / 'p003_s42.mp4'}: not found"]
    assert "p004_s42" in s.errors[0] and "not a readable video" in s.errors[0]
    assert result.unexpected == ["case0/notes.txt", "elsewhere/p000_s42.mp4"]
    assert result.flagged == ["case0/p001_s42.mp4: expected 9 frames, 32×48, 8 fps, got 5 frames, 32×48, 8 fps"]

    df = load_records(tmp_path / "runs").set_index("prompt_index")
    assert set(df["provenance"]) == {"external"} and set(df["method"]) == {"mine"}
    assert df.loc[0, "status"] == "ok" and df.loc[0, "frames_sha256"] == frames_sha256(good)
    assert df.loc[0, "video_sha256"] == file_sha256(videos / "case0" / "p000_s42.mp4")
    assert df.loc[0, "geometry_mismatch"] == False and df.loc[0, "geometry_note"] == ""  # noqa: E712
    assert df.loc[1, "status"] == "ok" and df.loc[1, "geometry_mismatch"] == True and df.loc[1, "num_frames"] == 5  # noqa: E712
    assert math.isfinite(df.loc[1, "temporal_flickering"])  # flagged, still scored
    assert df.loc[2, "status"] == "ok" and df.loc[2, "video"].endswith("p002_s42.mkv")
    assert df.loc[2, "frames_sha256"] == frames_sha256(good)  # the lossless mkv decodes to the same frames
    assert df.loc[3, "status"] == "missing" and df.loc[3, "expected_video"] == "case0/p003_s42.mp4"
    assert df.loc[4, "status"] == "failed"
    # counted, never averaged: table and aggregate
    agg = aggregate(load_records(tmp_path / "runs"), n_boot=0).set_index("method")
    assert (agg.loc["mine", "videos"], agg.loc["mine", "missing"], agg.loc["mine", "failed"]) == (3, 1, 1)
    mean = df.loc[[0, 1, 2], "temporal_flickering"].mean()
    assert agg.loc["mine", "temporal_flickering"] == pytest.approx(mean, abs=1e-12)
    md = render_table(load_records(tmp_path / "runs"), format="markdown", n_boot=0)
    assert "Not in the means: mine 1 missing, 1 failed (of the videos planned)." in md
    assert len(load_records(tmp_path / "runs", status="missing")) == 1
    from benchmark.report import build_report

    page = build_report(tmp_path / "runs", tmp_path / "report", posters=False).read_text()
    assert "3 videos ok, 1 failed, 1 missing" in page and "missing: not generated" in page
    with pytest.raises(ValueError, match="status must be one of ok, failed, missing"):
        load_records(tmp_path / "runs", status="done")


def test_score_resumes_by_file_content(tmp_path, make_identity, make_motion):
    grid = _grid(tmp_path, make_identity, make_motion, n_prompts=2)
    videos = tmp_path / "videos"
    write_video(videos / "case0" / "p000_s42.mp4", moving_pattern(9, 32, 48), fps=8, lossless=True)
    cfg = _cfg(tmp_path, grid)
    s = score(cfg, log=lambda m: None).summary
    assert (s.done, s.missing, s.skipped) == (1, 1, 0)
    s = score(cfg, log=lambda m: None).summary
    assert (s.done, s.missing, s.skipped) == (0, 1, 1)  # unchanged: skipped; still missing: listed again
    # a changed file is scored again; a new one is scored; a removed one becomes missing
    changed = moving_pattern(9, 32, 48).flip(0).contiguous()
    write_video(videos / "case0" / "p000_s42.mp4", changed, fps=8, lossless=True)
    write_video(videos / "case0" / "p001_s42.mp4", changed, fps=8, lossless=True)
    s = score(cfg, log=lambda m: None).summary
    assert (s.done, s.missing, s.skipped) == (2, 0, 0)
    rec = load_records(tmp_path / "runs").set_index("prompt_index")
    assert rec.loc[0, "frames_sha256"] == frames_sha256(changed) == rec.loc[1, "frames_sha256"]
    (videos / "case0" / "p001_s42.mp4").unlink()
    s = score(cfg, log=lambda m: None).summary
    assert (s.done, s.missing, s.skipped) == (0, 1, 1)
    assert load_records(tmp_path / "runs").set_index("prompt_index").loc[1, "status"] == "missing"


def test_score_refuses_names_that_run_owns(tmp_path, make_identity, make_motion):
    grid = _grid(tmp_path, make_identity, make_motion, n_prompts=1)
    (tmp_path / "videos").mkdir()
    with pytest.raises(ValueError, match=r"'cogvideox' is the name of a method `dualbench run` runs .*--method cogvideox-external"):
        score(_cfg(tmp_path, grid, method="cogvideox"))
    with pytest.raises(ValueError, match="is a folder name"):
        score(_cfg(tmp_path, grid, method="a/b"))
    with pytest.raises(ValueError, match="is a folder name"):
        score(_cfg(tmp_path, grid, method="my_pkg.mod:Cls"))
    write_record(tmp_path / "runs", {"method": "mine", "case": "case0", "prompt_index": 0, "seed": 42,
                                     "status": "ok", "provenance": "run"})
    with pytest.raises(ValueError, match="holds records made by `dualbench run`"):
        score(_cfg(tmp_path, grid))
    with pytest.raises(ValueError, match="no such folder of videos"):
        score(_cfg(tmp_path, grid, method="other", videos=tmp_path / "nowhere"))


def test_score_shards_cases_like_run(tmp_path, make_identity, make_motion, monkeypatch):
    grid = _grid(tmp_path, make_identity, make_motion, n_cases=3, n_prompts=1)
    for c in range(3):
        write_video(tmp_path / "videos" / f"case{c}" / "p000_s42.mp4", moving_pattern(9, 32, 48), fps=8, lossless=True)
    (tmp_path / "videos" / "stray.mp4").write_text("x")
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = score(_cfg(tmp_path, grid), log=lambda m: None)
        seen[rank] = result
    assert (seen[0].summary.done, seen[1].summary.done) == (2, 1)  # cases 0, 2 | case 1
    assert seen[0].unexpected == ["stray.mp4"] and seen[1].unexpected == []  # listed once, by rank 0
    assert sorted(load_records(tmp_path / "runs")["case"]) == ["case0", "case1", "case2"]


def test_score_command_lists_and_exits_1_on_missing(tmp_path, make_identity, make_motion):
    grid = _grid(tmp_path, make_identity, make_motion, n_prompts=2)
    write_video(tmp_path / "videos" / "case0" / "p000_s42.mp4", moving_pattern(9, 32, 48), fps=8, lossless=True)
    (tmp_path / "videos" / "case0" / "extra.mp4").write_text("x")
    result, text = _invoke("score", tmp_path / "videos", "--method", "mine", "--grid", grid, "--out", tmp_path / "runs",
                           "--backbone", "tiny", "--frames", "9", "--height", "32", "--width", "48",
                           "--metrics", "temporal_flickering")
    assert result.exit_code == 1, text
    assert "1 missing" in text and "p001_s42.mp4: not found" in text and "case0/extra.mp4" in text
    assert "mine: 1 scored, 0 already recorded, 1 missing, 0 failed, 0 flagged" in text
    result, text = _invoke("score", tmp_path / "videos", "--method", "lora", "--grid", grid, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and "is the name of a method `dualbench run` runs" in text


# ------------------------------------------------------------------------------------------------
# the round trip (issue 14, item 4)
# ------------------------------------------------------------------------------------------------

#: Small metrics that still cover each scoring input: the prompt (CLIP-T), the identity's
#: references (CLIP-I, DINO-I), frames alone (flickering) and the motion reference (DD, DD_ref, Δ).
ROUND_TRIP_METRICS = "clip_t,clip_i,dino_i,temporal_flickering,dynamic_degree"


def test_round_trip_manifest_external_generation_score_equals_run(tmp_path, tiny_backbone):
    from baselines.cogvideox import generate_with_pipeline, strip_identity_token
    from dualreal.engine.protocol import GenerationSettings

    runs, videos = tmp_path / "runs", tmp_path / "videos"
    grid_opts = ["--grid", "smoke", "--max-prompts", "1"]
    # 1. dualbench run --method cogvideox
    result, text = _invoke("run", "--method", "cogvideox", *grid_opts, "--steps", "2", "--metrics", ROUND_TRIP_METRICS,
                           "--out", runs)
    assert result.exit_code == 0, text
    # 2. the manifest, for the tiny backbone's geometry
    result, text = _invoke("manifest", *grid_opts, "--backbone", "tiny", "--out", tmp_path / "todo.json")
    assert result.exit_code == 0, text
    rows = json.loads((tmp_path / "todo.json").read_text())
    # 3. an "external user": the cogvideox pipeline outside the run loop, frames written losslessly
    pipe = tiny_backbone.pipeline()
    generated = {}
    for row in rows:
        settings = GenerationSettings(num_frames=row["num_frames"], height=row["height"], width=row["width"],
                                      num_inference_steps=2, guidance_scale=6.0, fps=row["fps"])
        frames = generate_with_pipeline(pipe, tiny_backbone, strip_identity_token(row["prompt"]), row["seed"], settings)
        write_video(videos / row["video"], frames, fps=row["fps"], lossless=True)
        assert torch.equal(read_video(videos / row["video"])[0], frames)
        generated[row["video"]] = frames
    # 4. dualbench score
    result, text = _invoke("score", videos, "--method", "cogvideox-external", *grid_opts, "--backbone", "tiny",
                           "--metrics", ROUND_TRIP_METRICS, "--out", runs)
    assert result.exit_code == 0, text
    assert "cogvideox-external: 1 scored, 0 already recorded, 0 missing, 0 failed, 0 flagged" in text
    df = load_records(runs)
    ours = df[df["method"] == "cogvideox"].set_index(["case", "prompt_index", "seed"]).sort_index()
    theirs = df[df["method"] == "cogvideox-external"].set_index(["case", "prompt_index", "seed"]).sort_index()
    assert len(ours) == len(theirs) == len(rows) == 1 and ours.index.equals(theirs.index)
    assert (ours["status"] == "ok").all() and (theirs["status"] == "ok").all()
    assert ours["provenance"].tolist() == ["run"] and theirs["provenance"].tolist() == ["external"]
    # the same pixels, scored against the same references with the same encoders
    assert ours["frames_sha256"].tolist() == theirs["frames_sha256"].tolist()
    assert theirs["frames_sha256"].tolist() == [frames_sha256(f) for f in generated.values()]
    assert theirs["video_sha256"].tolist() == [file_sha256(videos / v) for v in generated]
    columns = [c for c in metric_columns() if ours[c].notna().any()]
    assert set(ROUND_TRIP_METRICS.split(",")) | {"dynamic_degree_ref", "dynamic_degree_delta"} <= set(columns)
    for col in columns:
        assert theirs[col].to_numpy() == pytest.approx(ours[col].to_numpy(), abs=1e-6), col
    for col in ("prompt", "identity", "motion", "num_frames", "height", "width", "metric_weights", "random_weights"):
        assert ours[col].tolist() == theirs[col].tolist(), col
    # both rows in the table
    result, text = _invoke("table", "--runs", runs, "--format", "markdown", "--n-boot", "0")
    assert result.exit_code == 0 and "| cogvideox † |" in text and "| cogvideox-external † |" in text
