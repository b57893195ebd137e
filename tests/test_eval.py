"""``dualbench eval``: a folder of mixed good and bad videos, prompt files, output formats, exit codes."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.evaluate import (
    collect_videos,
    evaluate_paths,
    load_prompts,
    prompt_from_filename,
    summarize,
)
from benchmark.media import write_video
from benchmark.scorer import Scorer
from benchmark.store import export_records

SMALL = dict(random_weights=True, random_arch="small")

def _frames(n, h=130, w=150, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return torch.from_numpy(np.stack([np.roll(base, 3 * t, axis=1) for t in range(n)]))


def _gray_video(path: Path, n=5, h=130, w=150) -> Path:
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("ffv1", rate=Fraction(8))
        s.width, s.height, s.pix_fmt = w, h, "gray"
        for t in range(n):
            img = np.roll(np.tile(np.arange(w, dtype=np.uint8) * 2, (h, 1)), t, axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "a dog running-0.mp4", _frames(5), fps=8)
    write_video(d / "b.mp4", _frames(5, 129, 151, seed=1), fps=8)  # odd size, padded to even on write
    write_video(d / "one.mp4", _frames(1), fps=8)
    write_video(d / "two.mp4", _frames(2), fps=8)
    _gray_video(d / "gray.mkv")
    (d / "broken.mp4").write_bytes(b"\x00\x01not a video" * 50)
    (d / "empty.mp4").touch()
    (d / "notes.txt").write_text("ignored")
    return d


def test_collect_videos(folder, tmp_path):
    names = [p.name for p in collect_videos([folder])]
    assert names == sorted(["a dog running-0.mp4", "b.mp4", "one.mp4", "two.mp4", "gray.mkv", "broken.mp4", "empty.mp4"])
    assert collect_videos([folder / "b.mp4", folder / "b.mp4", tmp_path / "missing.mp4"]) == [folder / "b.mp4", tmp_path / "missing.mp4"]
    (tmp_path / "motion" / "videos").mkdir(parents=True)
    write_video(tmp_path / "motion" / "videos" / "c.mp4", _frames(2), fps=8)
    assert [p.name for p in collect_videos([tmp_path / "motion"])] == ["c.mp4"]


def test_evaluate_paths_scores_the_good_and_reports_the_bad(folder):
    refs = [_frames(1, 100, 80, seed=7)[0]]
    df = evaluate_paths(
        [folder], prompts={"b": "dog * in the snow", "gray.mkv": "a gradient"}, use_filename_prompts=True,
        refs=refs, metrics=None, **SMALL,
    )
    assert list(df.columns[:13]) == [
        "video", "clip_t", "clip_i", "dino_i", "temporal_flickering", "temporal_consistency", "motion_smoothness",
        "dynamic_degree", "dynamic_degree_ref", "dynamic_degree_delta", "status", "error", "prompt",
    ]
    rows = {Path(v).name: r for v, r in zip(df["video"], df.to_dict("records"))}
    assert rows["broken.mp4"]["status"] == "failed" and "broken.mp4: not a readable video" in rows["broken.mp4"]["error"]
    assert rows["empty.mp4"]["status"] == "failed" and "empty file (0 bytes)" in rows["empty.mp4"]["error"]
    assert math.isnan(rows["broken.mp4"]["temporal_flickering"])
    for name in ("a dog running-0.mp4", "b.mp4", "gray.mkv"):
        r = rows[name]
        assert r["status"] == "ok" and r["error"] == ""
        for m in ("clip_t", "clip_i", "dino_i", "temporal_consistency", "temporal_flickering", "motion_smoothness", "dynamic_degree"):
            assert np.isfinite(r[m]), (name, m)
    assert rows["a dog running-0.mp4"]["prompt"] == "a dog running"  # VBench file-name convention
    assert rows["b.mp4"]["prompt"] == "dog * in the snow"
    assert (rows["b.mp4"]["height"], rows["b.mp4"]["width"]) == (130, 152)
    assert rows["one.mp4"]["status"] == "ok" and math.isnan(rows["one.mp4"]["motion_smoothness"])
    assert rows["two.mp4"]["status"] == "ok" and np.isfinite(rows["two.mp4"]["temporal_flickering"])
    assert all(df["metric_random_weights"])
    means = summarize(df)
    ok = df[df.status == "ok"]
    assert means["temporal_flickering"] == pytest.approx(ok["temporal_flickering"].mean())
    assert math.isnan(means["dynamic_degree_delta"])


def test_motion_refs_give_a_delta(folder, tmp_path):
    """--motion-refs lists the motion folder as `run` does (videos.txt order, here a plain folder of
    clips) and caches under the same rule: <cache_dir>/motion_refs/<motion>.json."""
    refs_dir = tmp_path / "PlayingCello"
    refs_dir.mkdir()
    clips = [write_video(refs_dir / f"r{i}.mp4", _frames(3, seed=10 + i), fps=8) for i in range(2)]
    (refs_dir / "notes.txt").write_text("not a clip")
    df = evaluate_paths([folder / "b.mp4"], motion_refs=refs_dir, metrics="dynamic_degree", cache_dir=tmp_path / "cache", **SMALL)
    r = df.iloc[0]
    per_clip = Scorer(["dynamic_degree"], **SMALL)
    expected = np.mean([per_clip.score_file(c)["dynamic_degree"] for c in clips])
    assert r["dynamic_degree_ref"] == pytest.approx(expected, rel=1e-9)
    assert r["dynamic_degree_delta"] == pytest.approx(r["dynamic_degree"] - expected)
    assert [p.name for p in (tmp_path / "cache" / "motion_refs").iterdir()] == ["PlayingCello.json"]


def test_refs_folder_is_listed_as_run_lists_it(folder, tmp_path, make_identity):
    """--refs takes the identity's images with the lister of `run` (every image extension, images/)."""
    from PIL import Image

    ident = make_identity("dog", n=2)
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(ident / "images" / "02.webp")
    Image.fromarray(np.full((20, 30, 3), 30, np.uint8)).save(ident / "images" / "03.BMP")
    from benchmark.grid import reference_images

    refs = reference_images(ident)
    assert len(refs) == 4
    by_folder = evaluate_paths([folder / "b.mp4"], refs=ident, metrics="clip_i", **SMALL)
    by_tensors = evaluate_paths([folder / "b.mp4"], refs=refs, metrics="clip_i", **SMALL)
    without_new = evaluate_paths([folder / "b.mp4"], refs=refs[:2], metrics="clip_i", **SMALL)
    assert by_folder["clip_i"].iloc[0] == by_tensors["clip_i"].iloc[0] != without_new["clip_i"].iloc[0]


def test_bad_reference_images_are_all_named_before_any_encoder_loads(folder, make_identity, monkeypatch):
    """--refs with two bad images among good ones: one exit-2 error names both (with their causes),
    and no encoder is built first (it used to take a minute per try, one bad file per try)."""
    import benchmark.evaluate as evaluate

    ident = make_identity("dog", n=2)
    (ident / "images" / "a_text.jpg").write_text("not an image")
    (ident / "images" / "b_empty.png").touch()

    def no_scorer(*args, **kwargs):
        raise AssertionError("an encoder was built before the references were checked")

    monkeypatch.setattr(evaluate, "Scorer", no_scorer)
    res = CliRunner().invoke(app, ["eval", str(folder / "b.mp4"), "--refs", str(ident), "--random-weights"])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert f"{ident / 'images'}: 2 unreadable images of 4: a_text.jpg (not a readable image " in line
    assert "(UnidentifiedImageError: cannot identify image file)), b_empty.png (empty file (0 bytes))" in line


def test_prompt_files(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("# name\tprompt\nclip1.mp4\tdog * running\n\nclip2\ta cat\twith a tab\n")
    assert load_prompts(tsv) == {"clip1.mp4": "dog * running", "clip2": "a cat\twith a tab"}
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"clip1": "dog *"}))
    assert load_prompts(js) == {"clip1": "dog *"}
    (tmp_path / "bad.tsv").write_text("clip1 no tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected 'name<TAB>prompt'"):
        load_prompts(tmp_path / "bad.tsv")
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="mapping video names to prompt strings"):
        load_prompts(tmp_path / "bad.json")
    assert prompt_from_filename("x/a cat on a mat-12.mp4") == "a cat on a mat"
    assert prompt_from_filename("a-cat.mp4") == "a-cat"


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".json"])
def test_write_results_round_trip(tmp_path, ext):
    df = pd.DataFrame({"video": ["a.mp4", "b.mp4"], "clip_t": [0.3, math.nan], "status": ["ok", "failed"]})
    out = export_records(df, tmp_path / f"rows{ext}")
    back = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": lambda p: pd.DataFrame(json.loads(Path(p).read_text()))}[ext](out)
    assert list(back.columns) == ["video", "clip_t", "status"] and back["clip_t"].iloc[0] == 0.3
    with pytest.raises(ValueError, match="unknown format .xlsx"):
        export_records(df, tmp_path / "rows.xlsx")


def test_cli_exit_codes_and_output(folder, tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "TORCH_HOME", "VBENCH_CACHE_DIR"):  # no real weights anywhere
        monkeypatch.setenv(var, str(tmp_path / "no-cache"))
    runner = CliRunner()
    out = tmp_path / "rows.csv"
    res = runner.invoke(app, ["eval", str(folder), "--metrics", "temporal_flickering,motion_smoothness",
                                 "--random-weights", "--random-arch", "small", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "broken.mp4" in res.output and "failed" in res.output and "mean (5 ok of 7)" in res.output
    assert "RANDOM WEIGHTS" in res.output
    rows = pd.read_csv(out)
    assert list(rows.columns[:3]) == ["video", "temporal_flickering", "motion_smoothness"] and len(rows) == 7

    all_bad = runner.invoke(app, ["eval", str(folder / "broken.mp4"), str(folder / "empty.mp4"), "--metrics", "temporal_flickering"])
    assert all_bad.exit_code == 1, all_bad.output
    assert runner.invoke(app, ["eval", str(folder), "--out", str(tmp_path / "x.txt")]).exit_code == 2
    both = runner.invoke(app, ["eval", str(folder), "--random-weights", "--weights-dir", str(tmp_path)])
    assert both.exit_code == 2 and "mutually exclusive" in both.output
    assert runner.invoke(app, ["eval", str(folder), "--metrics", "fvd", "--random-weights"]).exit_code == 2
    missing = runner.invoke(app, ["eval", str(folder), "--metrics", "motion_smoothness", "--weights-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "amt-s.pth" in missing.output
