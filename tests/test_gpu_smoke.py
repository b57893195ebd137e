"""scripts/gpu_smoke.sh on a machine without a GPU: its syntax, the commands it would run (each a
valid `dualbench run` that reaches the backbone loader), its loud failure without a GPU, and the
phase table it prints from the records."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"
ENV = {**os.environ, "PYTHON": sys.executable}


def _bash(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_syntax_and_arguments():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    bad = _bash("--bogus")
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr


def test_dry_run_prints_the_two_paper_scale_runs_and_each_is_a_valid_command(monkeypatch):
    done = _bash("--dry-run", "--out", "/tmp/x")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("(cd ")]
    assert len(lines) == 2 and "torch.cuda.is_available()" in done.stdout
    import dualreal.engine.backbone as backbone_module

    seen = []

    def stop(source, **kwargs):
        seen.append((source, kwargs))
        raise backbone_module.BackboneError("reached the loader")

    monkeypatch.setattr(backbone_module, "load_backbone", stop)
    import benchmark.runner as runner_module

    monkeypatch.setattr(runner_module, "check_device", lambda device: None)  # this machine may have no GPU
    for line, method in zip(lines, ("dualreal", "lora")):
        args = shlex.split(line.split("&&", 1)[1].rstrip(")"))
        args = args[args.index("benchmark.cli") + 1 :]
        assert args[:3] == ["run", "--method", method]
        for flag, value in (("--backbone", "cogvideox-5b-random"), ("--device", "cuda"), ("--dtype", "bf16"),
                            ("--train-steps", "2"), ("--steps", "4"), ("--max-prompts", "1"), ("--random-arch", "full"),
                            ("--grid", "smoke"), ("--out", "/tmp/x")):
            assert args[args.index(flag) + 1] == value, flag
        assert "--frames" not in args and "--height" not in args  # the 5B preset's 49 x 480 x 720
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "reached the loader" in result.output
    assert [(s, k["device"], k["dtype"]) for s, k in seen] == [("cogvideox-5b-random", "cuda", "bf16")] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_without_a_gpu_it_fails_loudly_before_running_anything(tmp_path):
    done = _bash("--out", str(tmp_path / "runs"))
    assert done.returncode == 1
    assert "ERROR: no CUDA GPU is visible to torch" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_report_prints_each_phase_from_the_records(tmp_path):
    for method, peaks in (("dualreal", (61.2, 35.5, 21.0)), ("lora", (None, None, None))):
        folder = tmp_path / method / "dog__walking" / "records"
        folder.mkdir(parents=True)
        record = {"status": "ok", "num_frames": 49, "height": 480, "width": 720, "num_inference_steps": 4,
                  "backbone": "cogvideox-5b-random", "backbone_dtype": "bfloat16", "scheduler_timestep_spacing": "trailing"}
        for phase, seconds, peak in zip(("fit", "generate", "score"), (12.5, 40.0, 9.25), peaks):
            record.update({f"{phase}_seconds": seconds, f"{phase}_peak_memory_gb": peak})
        (folder / "p000_s42.json").write_text(json.dumps(record))
    done = _bash("--report", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [ln.split() for ln in done.stdout.splitlines()]
    assert ["dualreal", "fit", "12.5", "61.20"] in rows and ["dualreal", "generate", "40.0", "35.50"] in rows
    assert ["lora", "score", "9.2", "n/a"] in rows
    assert "peak GPU memory over all phases: 61.20 GiB" in done.stdout and "RANDOM WEIGHTS" in done.stdout
    missing = _bash("--report", str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "no records of dualreal" in missing.stderr
