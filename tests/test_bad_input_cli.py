"""The bad-input corpus at the command line (issue 7): every bad item gives a one-line error that
names its file — a failed row, a failure record, or a non-zero exit — never a traceback, and the
good items beside it still complete. The corpus is generated here, not stored."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.media import write_video
from benchmark.store import load_records
from conftest import moving_pattern

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    text = result.output + (result.stderr if hasattr(result, "stderr") and result.stderr_bytes is not None else "")
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result, text


def test_eval_scores_good_videos_and_names_each_bad_one(tmp_path, bad_media):
    folder = tmp_path / "bad"
    for kind in ("zero_byte_mp4", "text_as_mp4", "truncated_mp4", "one_frame_mp4", "three_frame_mp4",
                 "symlink_loop_mp4", "gif_varying_sizes"):
        bad_media(kind)
    write_video(folder / "a (take 2) with spaces.mp4", moving_pattern(9, 40, 56))
    write_video(folder / "uhd.mp4", moving_pattern(2, 2160, 3840))  # a 4K frame
    out = tmp_path / "rows.csv"
    result, text = _invoke("eval", str(folder), "--metrics", "temporal_flickering", "--random-weights", "--out", str(out))
    assert result.exit_code == 0, text  # some videos scored → success, failed rows reported
    rows = pd.read_csv(out)
    by_name = {Path(v).name: r for v, r in zip(rows["video"], rows.to_dict("records"))}
    for good in ("a (take 2) with spaces.mp4", "uhd.mp4", "gif_varying_sizes.gif", "three_frame_mp4.mp4"):
        assert np.isfinite(by_name[good]["temporal_flickering"]), (good, by_name[good])
    for bad in ("zero_byte_mp4.mp4", "text_as_mp4.mp4", "truncated_mp4.mp4", "symlink_loop_mp4.mp4"):
        err = str(by_name[bad].get("error", ""))
        assert bad in err and "\n" not in err, (bad, err)


def test_eval_of_only_bad_videos_exits_non_zero(tmp_path, bad_media):
    path = bad_media("zero_byte_mp4")
    result, text = _invoke("eval", str(path), "--metrics", "temporal_flickering", "--random-weights")
    assert result.exit_code != 0 and "zero_byte_mp4.mp4" in text


def _identity(folder: Path, images: dict[str, Image.Image], prompt: str = "dog *") -> Path:
    (folder / "images").mkdir(parents=True)
    for name, im in images.items():
        im.save(folder / "images" / name)
    (folder / "prompts.txt").write_text(f"{prompt}\n", encoding="utf-8")
    return folder


def _motion(folder: Path, names: list[str], prompts: list[str] | None = None, frames: int = 9) -> Path:
    (folder / "videos").mkdir(parents=True)
    for n in names:
        write_video(folder / "videos" / n, moving_pattern(frames, 48, 64))
    (folder / "videos.txt").write_text("".join(f"videos/{n}\n" for n in names), encoding="utf-8")
    prompts = prompts if prompts is not None else ["a person is walking"] * len(names)
    (folder / "prompts.txt").write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    return folder


def test_validate_names_every_bad_folder_and_accepts_unusual_good_ones(tmp_path):
    rgb = np.full((40, 60, 3), 120, np.uint8)
    good_id = _identity(tmp_path / "dog (2) spaced", {
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((40, 60), 128, np.uint8)]), "RGBA"),
        "deep.png": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    })
    empty_id = tmp_path / "empty_identity"
    (empty_id / "images").mkdir(parents=True)
    good_mo = _motion(tmp_path / "walk (side)", ["clip 1 (a).mp4"])
    short_prompts = _motion(tmp_path / "short_prompts", ["a.mp4", "b.mp4"], prompts=["a person is walking"])
    latin = _motion(tmp_path / "latin1", ["a.mp4"])
    (latin / "prompts.txt").write_bytes("a person is caf\u00e9 walking\n".encode("latin-1"))
    escape = _motion(tmp_path / "escape", ["a.mp4"])
    (escape / "videos.txt").write_text("../../etc/passwd\n", encoding="utf-8")
    loop = _motion(tmp_path / "loop", ["a.mp4"])
    (loop / "videos" / "a.mp4").unlink()
    os.symlink("a.mp4", loop / "videos" / "a.mp4")
    bad_motions = {"short_prompts": short_prompts, "latin1": latin, "escape": escape, "loop": loop}
    lines = ["cases:",
             f"  - {{name: good, identity: '{good_id}', motion: '{good_mo}', prompts: ['dog * is walking']}}",
             f"  - {{name: empty, identity: '{empty_id}', motion: '{good_mo}', prompts: ['dog * is walking']}}"]
    grid = tmp_path / "grid.yaml"
    for name, folder in bad_motions.items():
        lines.append(f"  - {{name: {name}, identity: '{good_id}', motion: '{folder}', prompts: ['dog * walks']}}")
    grid.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, text = _invoke("validate", "--grid", str(grid), "--decode")
    # Either the grid loader rejects the first bad folder (one line, naming it) or validate lists
    # each bad case on its own line; in both cases the exit is non-zero and no traceback appears.
    assert result.exit_code != 0
    assert any(s in text for s in ("empty_identity", "short_prompts", "latin1", "escape", "loop"))
    assert "dog (2) spaced" not in text.replace(str(good_id), "")  # the good case is not reported


def test_run_records_a_failure_for_a_bad_case_and_completes_the_good_one(tmp_path):
    """A truncated clip inside an otherwise valid motion folder fails its case with a record;
    a 2,000-character prompt in the good case is handled (truncated by the tokenizer)."""
    rgb = np.full((40, 60, 3), 120, np.uint8)
    ident = _identity(tmp_path / "dog", {"00.png": Image.fromarray(rgb)})
    good = _motion(tmp_path / "walking", ["a.mp4"])
    broken = _motion(tmp_path / "broken", ["a.mp4"])
    data = (broken / "videos" / "a.mp4").read_bytes()
    (broken / "videos" / "a.mp4").write_bytes(data[: len(data) // 3])
    long_prompt = "dog * is walking " + "very " * 400
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "cases:\n"
        f"  - {{name: good, identity: '{ident}', motion: '{good}', prompts: ['{long_prompt[:2000]}']}}\n"
        f"  - {{name: bad, identity: '{ident}', motion: '{broken}', prompts: ['dog * is walking']}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "runs"
    result, text = _invoke("run", "--method", "cogvideox", "--grid", str(grid), "--out", str(out),
                           "--steps", "1", "--metrics", "temporal_flickering")
    assert result.exit_code == 1, text  # one case failed
    df = load_records(out).set_index("case")
    assert df.loc["good", "status"] == "ok" and np.isfinite(df.loc["good", "temporal_flickering"])
    assert df.loc["bad", "status"] == "failed" and "a.mp4" in df.loc["bad", "error"]
    assert "\n" not in df.loc["bad", "error"]
