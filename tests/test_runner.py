"""The run loop: end to end on the built-in sample, resume, crash safety, concurrency, sharding,
determinism. Subprocess tests run the real `dualbench` command line."""

from __future__ import annotations

import collections
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from benchmark.cli import PlainProgress
from benchmark.grid import SAMPLE_DIR
from benchmark.media import read_video
from benchmark.runner import RunConfig, run, shard_of
from benchmark.store import load_records

REPO = Path(__file__).resolve().parents[1]


def _grid(tmp_path: Path, n_cases: int = 3, n_prompts: int = 2) -> Path:
    """A YAML grid of n_cases copies of the sample case (distinct names)."""
    lines = ["cases:"]
    for c in range(n_cases):
        lines += [
            f"  - name: case{c}",
            f"    identity: {SAMPLE_DIR / 'identity' / 'dog'}",
            f"    motion: {SAMPLE_DIR / 'motion' / 'walking'}",
            "    prompts:",
            *[f"      - dog * is walking in place {p}" for p in range(n_prompts)],
        ]
    path = tmp_path / "grid.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(*args: str, env_extra: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", *args]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _keys(out: Path, method: str = "cogvideox") -> collections.Counter:
    df = load_records(out, status="ok")
    return collections.Counter(zip(df["case"], df["prompt_index"], df["seed"]))


def _assert_complete(out: Path, n_cases: int, n_prompts: int, frames: int = 9) -> None:
    keys = _keys(out)
    expected = {(f"case{c}", p, 42) for c in range(n_cases) for p in range(n_prompts)}
    assert set(keys) == expected and all(v == 1 for v in keys.values())
    for rec in load_records(out).to_dict("records"):
        assert rec["status"] == "ok", rec
        video, _ = read_video(out / rec["video"])
        assert video.shape[0] == frames
    assert not list(out.rglob("*.part")), "temp files left behind"


def test_shard_split_is_disjoint_and_complete():
    items = list(range(11))
    parts = [shard_of(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and sum(map(len, parts)) == 11


def _plain() -> tuple[PlainProgress, io.StringIO]:
    buf = io.StringIO()
    return PlainProgress(Console(file=buf, width=300)), buf


def test_resume_skips_finished_and_retries_failed(tmp_path):
    grid = _grid(tmp_path, n_cases=1, n_prompts=2)
    cfg = RunConfig(method="cogvideox", grid=str(grid), out=tmp_path / "runs", num_inference_steps=2, score=False)
    progress, buf = _plain()  # what `dualbench run … | cat` prints: one line per phase, as it happens
    s1 = run(cfg, progress=progress, log=lambda m: None)
    assert (s1.done, s1.skipped, s1.failed) == (2, 0, 0)
    lines = buf.getvalue().splitlines()
    assert lines[:2] == ["cogvideox: 2 videos", "cogvideox · case0: decoding"]
    assert re.fullmatch(r"cogvideox · case0 p1 seed 42: \d+\.\d s; 2/2 videos", lines[-1]), lines
    s2 = run(cfg, log=lambda m: None)
    assert (s2.done, s2.skipped) == (0, 2)
    # a failed record is retried; a corrupt record is redone, not trusted
    rec_dir = tmp_path / "runs" / "cogvideox" / "case0" / "records"
    first = rec_dir / "p000_s42.json"
    rec = json.loads(first.read_text())
    first.write_text(json.dumps({**rec, "status": "failed", "error": "boom"}))
    (rec_dir / "p001_s42.json").write_text("{not json")
    logged: list[str] = []
    s3 = run(cfg, log=logged.append)
    assert (s3.done, s3.skipped) == (2, 0)
    # the corrupt record is named before it is overwritten, and counted
    line = f"{rec_dir / 'p001_s42.json'}: unreadable record (JSONDecodeError: "
    assert [m for m in logged if "unreadable" in m] == [m for m in logged if m.startswith(line) and m.endswith(", redoing")]
    assert len(s3.unreadable) == 1 and "1 unreadable record(s) redone" in s3.text("cogvideox", tmp_path)
    _assert_complete(tmp_path / "runs", 1, 2)
    row = load_records(tmp_path / "runs").iloc[0]
    assert row["backbone"] == "tiny" and bool(row["random_weights"]) and row["config_hash"]
    assert row["training_budget"] == []  # cogvideox learns nothing


def test_plain_progress_prints_training_steps_at_most_every_step_every_seconds(monkeypatch):
    progress, buf = _plain()
    clock = iter([0.0, 1.0, 40.0, 41.0, 100.0])
    monkeypatch.setattr("benchmark.cli.time.perf_counter", lambda: next(clock))
    task = progress.add_task("dualreal-identity", total=3, unit="steps")  # t = 0
    progress.update(task, advance=1, description="dualreal-identity · loss 0.5")  # t = 1: too soon
    progress.update(task, advance=1, description="dualreal-identity · loss 0.4")  # t = 40
    progress.update(task, advance=1, description="dualreal-identity · loss 0.3")  # t = 41: too soon
    progress.remove_task(task)  # t = 100
    assert buf.getvalue().splitlines() == ["dualreal-identity: 3 steps", "dualreal-identity · loss 0.4 (2/3 steps)",
                                           "dualreal-identity: 3/3 steps in 100.0 s"]


def test_a_terminal_gets_rich_bars_and_anything_else_plain_lines(monkeypatch):
    from rich.progress import Progress

    from benchmark import cli

    monkeypatch.setattr(cli, "console", Console(file=io.StringIO()))
    assert isinstance(cli._progress(), PlainProgress)
    monkeypatch.setattr(cli, "console", Console(file=io.StringIO(), force_terminal=True))
    assert isinstance(cli._progress(), Progress)


def test_records_carry_the_training_budget_and_methods_get_the_clips_they_ask_for(tmp_path, monkeypatch):
    import benchmark.runner as runner
    from baselines.cogvideox import CogVideoXMethod
    from dualreal.engine.protocol import TrainingRun

    run_budget = TrainingRun.from_schedule("joint", steps=10, motion_ratio=0.5, images_per_step=1, clips_per_step=3,
                                           learning_rate=1e-3, trainable_parameters=123)
    monkeypatch.setattr(CogVideoXMethod, "training_budget", lambda self: [run_budget])
    monkeypatch.setattr(CogVideoXMethod, "preservation_clip_count", lambda self: 2)
    asked = []
    decode = runner.decode_case
    monkeypatch.setattr(runner, "decode_case", lambda case, **kw: (asked.append(kw["preservation"]), decode(case, **kw))[1])
    cfg = RunConfig(method="cogvideox", grid=str(_grid(tmp_path, 1, 1)), out=tmp_path / "runs", num_inference_steps=1, score=False)
    assert run(cfg, log=lambda m: None).done == 1
    assert asked == [2]
    (rec,) = load_records(tmp_path / "runs").to_dict("records")
    assert rec["training_budget"] == [run_budget.to_dict()]
    assert rec["training_budget"][0]["image_steps"] == rec["training_budget"][0]["clip_steps"] == 5.0


def test_kill_minus_9_at_random_moments_then_resume(tmp_path):
    """kill -9 the real command at seeded random moments; the rerun finishes with nothing lost,
    nothing duplicated and no half-written file accepted. Bounded: 3 kills."""
    grid = _grid(tmp_path, n_cases=2, n_prompts=3)
    out = tmp_path / "runs"
    cmd = _cli("run", "--method", "cogvideox", "--grid", str(grid), "--out", str(out), "--steps", "2", "--no-score")
    rng = random.Random(1234)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(4.0, 12.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_complete(out, 2, 3)


def test_two_runs_into_one_out_do_not_collide(tmp_path):
    """Two independent processes on the same --out: every video exactly once (event log audit)."""
    grid = _grid(tmp_path, n_cases=2, n_prompts=2)
    out = tmp_path / "runs"
    cmd = _cli("run", "--method", "cogvideox", "--grid", str(grid), "--out", str(out), "--steps", "2", "--no-score")
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    _assert_complete(out, 2, 2)
    events = [json.loads(line) for f in (out / "_events").glob("*.jsonl") for line in f.read_text().splitlines()]
    produced = collections.Counter((e["case"], e["prompt_index"], e["seed"]) for e in events if e["event"] == "ok")
    assert len(produced) == 4 and all(v == 1 for v in produced.values()), produced


def test_accelerate_launch_shards_cases_across_two_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine: accelerate starts two
    ranks through torchrun (its `--cpu` mode would need MPI); ranks share only the runs folder, so no
    process group is initialised. Each case on one rank, each video once."""
    grid = _grid(tmp_path, n_cases=3, n_prompts=1)
    out = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "benchmark.cli", "run", "--method", "cogvideox", "--grid", str(grid), "--out", str(out),
        "--steps", "2", "--no-score",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_complete(out, 3, 1)
    events = [json.loads(line) for f in (out / "_events").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(e["rank"] for e in events) == [0, 0, 1]  # cases 0, 2 → rank 0; case 1 → rank 1
    by_case = {e["case"]: e["rank"] for e in events}
    assert by_case == {"case0": 0, "case1": 1, "case2": 0}


def test_same_command_same_videos(tmp_path):
    """Determinism on CPU: the same config and seed give identical frames and identical metrics."""
    grid = _grid(tmp_path, n_cases=1, n_prompts=1)
    recs = []
    for name in ("a", "b"):
        cfg = RunConfig(method="cogvideox", grid=str(grid), out=tmp_path / name, num_inference_steps=2,
                        metrics=["clip_t", "clip_i", "temporal_flickering", "temporal_consistency"])
        run(cfg, log=lambda m: None)
        recs.append(load_records(tmp_path / name).iloc[0])
    a, b = recs
    assert a["frames_sha256"] == b["frames_sha256"]
    for m in ("clip_t", "clip_i", "temporal_flickering", "temporal_consistency"):
        assert a[m] == b[m] and a[m] == a[m], m  # equal and not NaN


def test_a_scored_case_decodes_each_identity_image_once(tmp_path, monkeypatch):
    """decode_case hands the run everything: the native identity images serve as the CLIP-I
    references (no second read of the identity folder's files)."""
    import PIL.Image

    opened = collections.Counter()
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **kw: opened.update([Path(fp).name]) or real_open(fp, *a, **kw))
    grid = _grid(tmp_path, n_cases=1, n_prompts=1)
    cfg = RunConfig(method="cogvideox", grid=str(grid), out=tmp_path / "runs", num_inference_steps=2, metrics=["clip_i"])
    assert run(cfg, log=lambda m: None).done == 1
    images = sorted(p.name for p in (SAMPLE_DIR / "identity" / "dog" / "images").iterdir())
    assert {n: c for n, c in opened.items() if n in images} == {n: 1 for n in images}
    assert load_records(tmp_path / "runs")["clip_i"].notna().all()
