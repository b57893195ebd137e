"""`dualbench run` at the command line: --method-option KEY=VALUE (typed by the config field,
checked before any model is loaded, recorded and hashed, plugins too), --train-steps for a method
without training steps, --allow-large, the fast refusal of a full-size preset on the CPU, and the
per-phase peak memory of every record."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.runner import check_method_options
from benchmark.store import load_records

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SMALL = ["--frames", "9", "--height", "32", "--width", "48", "--steps", "1", "--max-prompts", "1",
         "--metrics", "temporal_flickering"]


def _invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text, text
    return result, " ".join(text.split())  # rich wraps long lines


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a backbone fails the test: options must be refused before that."""
    import dualreal.engine.backbone as backbone_module

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was loaded before the options were checked")

    monkeypatch.setattr(backbone_module, "load_backbone", refuse)


def test_bad_method_options_are_refused_before_any_model_is_loaded(no_model, tmp_path):
    out = ["--out", str(tmp_path / "runs")]
    result, text = _invoke("run", "--method", "dualreal", "--method-option", "num_group=2", *out)
    assert result.exit_code == 2 and "unknown DualRealConfig option(s) ['num_group']; valid options:" in text
    assert "num_groups" in text and "reference_resize" in text
    result, text = _invoke("run", "--method", "dualreal", "--method-option", "num_groups=two", *out)
    assert result.exit_code == 2 and "option num_groups: expected int, got 'two'" in text
    result, text = _invoke("run", "--method", "lora", "--method-option", "adapter_weights=1", *out)
    assert result.exit_code == 2 and "option adapter_weights: expected tuple[float, float]" in text
    result, text = _invoke("run", "--method", "dualreal", "--method-option", "num_groups", *out)
    assert result.exit_code == 2 and "--method-option takes KEY=VALUE, got 'num_groups'" in text
    # typed values that the config refuses together (its own check), before loading anything
    result, text = _invoke("run", "--method", "dualreal", "--method-option", "joint=false", *out)
    assert result.exit_code == 2 and "set use_controller=False as well" in text
    # a registry name's defining setting cannot be changed under that name
    result, text = _invoke("run", "--method", "dualreal-groups-2", "--method-option", "num_groups=7", *out)
    assert result.exit_code == 2 and "is defined by num_groups=2 (asked: 7)" in text and "Use dualreal" in text
    result, text = _invoke("run", "--method", "cogvideox", "--method-option", "rank=4", *out)
    assert result.exit_code == 2 and "valid options: (none)" in text
    assert not (tmp_path / "runs").exists()


PLUGIN = '''
from dataclasses import dataclass

from baselines.cogvideox import CogVideoXMethod
from dualreal.engine.config import MethodConfig


@dataclass
class ShiftConfig(MethodConfig):
    """A plugin's own options."""

    shift: int = 0
    label: str | None = None

    def validate(self):
        if not 0 <= self.shift < 256:
            raise ValueError(f"shift must be in [0, 255], got {self.shift}")


class ShiftMethod(CogVideoXMethod):
    """The backbone's video, every pixel shifted by ``shift`` grey levels (mod 256)."""

    name = "shift"
    config_class = ShiftConfig

    def generate(self, prompt, seed, settings):
        video = super().generate(prompt, seed, settings)
        video.frames = video.frames + self.config.shift  # uint8 wraps
        return video
'''


def test_plugin_options_are_typed_recorded_and_hashed_and_train_steps_is_ignored(tmp_path, monkeypatch):
    """A plugin (pkg.mod:Class) takes --method-option for its own config; the value reaches the
    method, the records and the config hash. Its config has no train_steps, as cogvideox's: then
    --train-steps is dropped with a note in the log and in each record, and the hash is unchanged."""
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "shifty.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "plug"))
    target = "shifty:ShiftMethod"
    runs = {}
    for name, extra in (("plain", []), ("shifted", ["--method-option", "shift=3", "--method-option", "label=none"]),
                        ("steps", ["--train-steps", "2"])):
        result, text = _invoke("run", "--method", target, "--out", str(tmp_path / name), *SMALL, *extra)
        assert result.exit_code == 0, text
        runs[name] = load_records(tmp_path / name).iloc[0].to_dict()
        if name == "steps":
            assert "note: --train-steps 2 ignored: shifty.ShiftMethod has no training steps" in text
    plain, shifted, steps = runs["plain"], runs["shifted"], runs["steps"]
    assert plain["method_options"] == {} and shifted["method_options"] == {"shift": 3, "label": None}
    assert plain["config_hash"] != shifted["config_hash"]
    assert plain["frames_sha256"] != shifted["frames_sha256"]  # the option reached the method
    assert steps["config_hash"] == plain["config_hash"] and steps["method_options"] == {}
    assert plain["run_notes"] == "" and "--train-steps 2 ignored" in steps["run_notes"]
    # what every run record states besides: the release's preprocessing, the sampler's spacing, and
    # the peak device memory of each phase (None on the CPU: torch measures CUDA only)
    assert (plain["motion_resize"], plain["identity_resize"], plain["scheduler_timestep_spacing"]) == ("stretch", "crop", "trailing")
    for phase in ("fit", "generate", "score"):
        assert f"{phase}_peak_memory_gb" in plain and plain[f"{phase}_peak_memory_gb"] is None
    # the same rules for a built-in method that trains nothing
    options, notes = check_method_options("cogvideox", {}, train_steps=5)
    assert options == {} and notes == ["--train-steps 5 ignored: cogvideox has no training steps (MethodConfig has no train_steps option)"]
    assert check_method_options("dualreal", {"num_groups": 2}, train_steps=5) == ({"num_groups": 2, "train_steps": 5}, [])
    with pytest.raises(ValueError, match="--train-steps 5 and --method-option train_steps=4 differ"):
        check_method_options("dualreal", {"train_steps": 4}, train_steps=5)


def test_allow_large_reaches_the_backbone_loader(monkeypatch, tmp_path):
    import dualreal.engine.backbone as backbone_module

    seen = {}

    def capture(source, **kwargs):
        seen.update(kwargs, source=source)
        raise backbone_module.BackboneError("stop here")

    monkeypatch.setattr(backbone_module, "load_backbone", capture)
    for flag, expected in (([], False), (["--allow-large"], True)):
        result, text = _invoke("run", "--method", "cogvideox", "--backbone", "cogvideox-2b-random", "--out",
                               str(tmp_path / "runs"), "--timestep-spacing", "leading", *flag)
        assert result.exit_code == 2 and "stop here" in text
        assert (seen["source"], seen["allow_large"], seen["timestep_spacing"]) == ("cogvideox-2b-random", expected, "leading")


def test_full_size_preset_on_the_cpu_is_refused_in_under_30_seconds(tmp_path):
    """The refusal comes from the memory plan on the meta device, before anything is allocated."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "run", "--method", "dualreal", "--backbone", "cogvideox-5b-random",
         "--device", "cpu", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    seconds = time.perf_counter() - t0
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, text
    assert "Traceback" not in text
    assert "refusing to build cogvideox-5b-random: a full-size random preset is not built on the CPU" in text
    assert "cogvideox-5b-random in float32 needs" in text and "GiB for its weights alone" in text and "--allow-large" in text
    assert "--allow-large" in text
    assert seconds < 30, f"refused after {seconds:.1f} s"
    assert not list((tmp_path / "runs").rglob("*.json"))  # no record: nothing was run
